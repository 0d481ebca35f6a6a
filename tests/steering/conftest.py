"""Steering fixtures: a tiny random GPT-2 store whose output is sharp enough to steer, with one
planted feature whose decoder row is a word's embedding, and the subject built from the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

PLANTED_FEATURE = 5
PLANTED_WORD = " return"
N_FEATURES = 32


@dataclass
class SteerStore:
    path: Path
    work: Path
    planted: int
    word: str


def _sharpened_gpt2(path: Path) -> Path:
    """The tiny random GPT-2 with its final layer norm scaled up: at random init its logits are
    nearly flat, so no steering could move the next-token distribution measurably."""
    import torch
    from transformers import GPT2LMHeadModel

    from labeler.testing import make_tiny_model

    make_tiny_model("gpt2", path)
    model = GPT2LMHeadModel.from_pretrained(path)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(16.0)
    model.save_pretrained(path)
    return path


def _planted_sae(path: Path, model_dir: Path, corpus: Path, hook: str, word: str) -> Path:
    """A TopK SAE in SAELens' layout whose feature PLANTED_FEATURE writes ``word``'s embedding."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from labeler.activations.train_sae import sample_activations
    from labeler.testing import make_tiny_sae

    acts = sample_activations(str(model_dir), hook, str(corpus), 512, ctx_len=16)
    make_tiny_sae(path, d_in=int(acts.shape[1]), n_features=N_FEATURES, architecture="topk", k=4, hook=hook,
                  center=acts.mean(0).numpy(), input_std=float(acts.std(0).mean()))
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not one token of the tiny tokenizer"
    emb = GPT2LMHeadModel.from_pretrained(model_dir).transformer.wte.weight[ids[0]].detach().numpy()
    weights = load_file(str(path / "sae_weights.safetensors"))
    weights["W_dec"][PLANTED_FEATURE] = emb / np.linalg.norm(emb)
    save_file(weights, str(path / "sae_weights.safetensors"))
    return path


@pytest.fixture(scope="session")
def steer_store(tmp_path_factory) -> SteerStore:
    from labeler.testing import make_tiny_store, write_tiny_corpus

    root = tmp_path_factory.mktemp("steer")
    work = root / "inputs"
    hook = "transformer.h.0"
    model_dir = _sharpened_gpt2(work / "model-gpt2")
    corpus = write_tiny_corpus(work / "corpus.jsonl", n_docs=60)
    _planted_sae(work / f"sae-topk-{N_FEATURES}", model_dir, corpus, hook, PLANTED_WORD)
    path = make_tiny_store(root / "store", n_features=N_FEATURES, tokens=2048, workdir=work)
    return SteerStore(path=path, work=work, planted=PLANTED_FEATURE, word=PLANTED_WORD)


@pytest.fixture(scope="session")
def encoder_store(tmp_path_factory) -> Path:
    """A store of a BERT-style encoder (cannot be steered; activations still work)."""
    from labeler.testing import make_tiny_store

    return make_tiny_store(tmp_path_factory.mktemp("steer-bert") / "store", kind="bert", n_features=16, tokens=1024)


@pytest.fixture(scope="session")
def subject(steer_store):
    from labeler.core.config import Settings
    from labeler.examples.store import FeatureStore
    from labeler.runs.subjects import SubjectCache

    return SubjectCache(Settings(device="cpu")).get(FeatureStore(steer_store.path))
