"""TransformerLens hook names -> Hugging Face modules, checked numerically on tiny random models
of every mapped family against TransformerLens's own definitions of the hooks
(resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out, mlp_out = W_out(post), ...)."""

from __future__ import annotations

import pytest
import torch

from labeler.activations.hookpoints import SaeHook, find_hookpoint
from labeler.activations.model import HookedModel, _model_class, module_names, resolve_hook
from labeler.core.errors import ConfigError

V, D, L = 96, 32, 3


def tiny(kind: str, **extra):
    import transformers as T

    common = dict(vocab_size=V, num_hidden_layers=L, num_attention_heads=4, intermediate_size=64)
    configs = {
        "gpt2": lambda: T.GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0),
        "neox": lambda: T.GPTNeoXConfig(hidden_size=D, max_position_embeddings=64, **common, **extra),
        "llama": lambda: T.LlamaConfig(hidden_size=D, num_key_value_heads=2, **common),
        "mistral": lambda: T.MistralConfig(hidden_size=D, num_key_value_heads=2, **common),
        "qwen2": lambda: T.Qwen2Config(hidden_size=D, num_key_value_heads=2, **common),
        "gemma": lambda: T.GemmaConfig(hidden_size=D, num_key_value_heads=2, head_dim=8, **common),
        "gemma2": lambda: T.Gemma2Config(hidden_size=D, num_key_value_heads=2, head_dim=8, **common),
        "gemma3": lambda: T.Gemma3TextConfig(hidden_size=D, num_key_value_heads=2, head_dim=8, **common),
        "bert": lambda: T.BertConfig(hidden_size=D, max_position_embeddings=64, **common),
    }
    config = configs[kind]()
    if kind != "bert":
        config.architectures = [{"gpt2": "GPT2LMHeadModel"}.get(kind, "XForCausalLM")]
    torch.manual_seed(0)
    model = _model_class(config).from_config(config).eval()
    for p in model.parameters():  # norms away from identity, so a wrong side of a norm shows
        if p.ndim == 1:
            p.data.add_(0.3 * torch.randn_like(p))
    return config, model


class Reader:
    """Read TL hooks through the mapping, as collect does."""

    def __init__(self, config, model):
        self.config, self.model = config, model
        self.names = [n for n, _ in model.named_modules()]
        self.base = model.base_model_prefix
        self.ids = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(1))

    def point(self, tl: str, transcoder: bool = False):
        return find_hookpoint(SaeHook(tl, True, transcoder=transcoder), self.config, self.names, base_prefix=self.base)

    def __call__(self, tl: str, transcoder: bool = False) -> torch.Tensor:
        p = self.point(tl, transcoder)
        return HookedModel(self.model, p.module, p.io).activations(self.ids).detach()

    def module(self, path: str):
        return dict(self.model.named_modules())[path]


DECODERS = ["gpt2", "neox_seq", "llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3"]


def build(kind):
    return tiny("neox", use_parallel_residual=False) if kind == "neox_seq" else tiny(kind)


@pytest.mark.parametrize("kind", DECODERS)
@torch.inference_mode()
def test_decoder_hooks_satisfy_transformer_lens_definitions(kind):
    config, model = build(kind)
    r = Reader(config, model)
    hidden = model(input_ids=r.ids, output_hidden_states=True, use_cache=False).hidden_states
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # noqa: E731
    for n in range(L):
        pre, mid, post = r(f"blocks.{n}.hook_resid_pre"), r(f"blocks.{n}.hook_resid_mid"), r(f"blocks.{n}.hook_resid_post")
        attn, mlp_out = r(f"blocks.{n}.hook_attn_out"), r(f"blocks.{n}.hook_mlp_out")
        close(pre, hidden[n])
        if n < L - 1:  # the last hidden state has the final norm applied
            close(post, hidden[n + 1])
        close(mid, pre + attn)
        close(post, mid + mlp_out)
        close(r(f"blocks.{n}.hook_mlp_in"), mid)
        # the MLP's hidden activation (neurons) feeds its output projection
        p = r.point(f"blocks.{n}.mlp.hook_post")
        out_proj = r.module(p.module if p.io == "input" else p.module.rsplit(".", 1)[0] + ".c_proj")
        mlp_post = r(f"blocks.{n}.mlp.hook_post")
        post_norm = r.module(f"model.layers.{n}.post_feedforward_layernorm") if kind in ("gemma2", "gemma3") else None
        y = out_proj(mlp_post)
        close(post_norm(y) if post_norm is not None else y, mlp_out)
        # the transcoder input (the MLP module's input) gives the MLP output
        mlp_mod = r.module(r.point(f"blocks.{n}.mlp.hook_in").module)
        y = mlp_mod(r(f"blocks.{n}.ln2.hook_normalized" if kind != "gpt2" and "neox" not in kind
                      else f"blocks.{n}.mlp.hook_in", transcoder=True))
        close(post_norm(y) if post_norm is not None else y, mlp_out)
        # z (heads flattened) feeds the attention's output projection
        zp = r.point(f"blocks.{n}.attn.hook_z")
        y = r.module(zp.module)(r(f"blocks.{n}.attn.hook_z"))
        attn_norm = r.module(f"model.layers.{n}.post_attention_layernorm") if kind in ("gemma2", "gemma3") else None
        close(attn_norm(y) if attn_norm is not None else y, attn)
    emb = r("hook_embed")
    if kind == "gpt2":
        close(emb + r("hook_pos_embed"), hidden[0])
    else:
        close(emb, hidden[0])


@torch.inference_mode()
def test_parallel_neox_and_its_missing_resid_mid():
    config, model = tiny("neox", use_parallel_residual=True)
    r = Reader(config, model)
    torch.testing.assert_close(r("blocks.1.hook_resid_post"),
                               r("blocks.1.hook_resid_pre") + r("blocks.1.hook_attn_out") + r("blocks.1.hook_mlp_out"),
                               rtol=1e-4, atol=1e-5)
    assert r.point("blocks.1.hook_mlp_in") == r.point("blocks.1.hook_resid_pre").__class__(
        "gpt_neox.layers.1", "input", "blocks.1.hook_mlp_in")
    with pytest.raises(ConfigError, match="parallel-residual"):
        r.point("blocks.1.hook_resid_mid")


@torch.inference_mode()
def test_bert_post_ln_blocks():
    config, model = tiny("bert")
    r = Reader(config, model)
    hidden = model(input_ids=r.ids, output_hidden_states=True).hidden_states
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # noqa: E731
    for n in range(L):
        close(r(f"blocks.{n}.hook_resid_pre"), hidden[n])
        close(r(f"blocks.{n}.hook_normalized_resid_post"), hidden[n + 1])
        close(r(f"blocks.{n}.hook_resid_mid"), r(f"blocks.{n}.hook_resid_pre") + r(f"blocks.{n}.hook_attn_out"))
        close(r(f"blocks.{n}.hook_resid_post"), r(f"blocks.{n}.mlp.hook_in") + r(f"blocks.{n}.hook_mlp_out"))
        close(r.module(f"encoder.layer.{n}.output.dense")(r(f"blocks.{n}.mlp.hook_post")), r(f"blocks.{n}.hook_mlp_out"))
    with pytest.raises(ConfigError, match="disagree"):
        r.point("blocks.0.hook_mlp_in")


def test_unmappable_names_list_module_names_that_would_work():
    config, model = tiny("gpt2")
    r = Reader(config, model)
    with pytest.raises(ConfigError) as e:
        r.point("blocks.1.hook_q")
    msg = str(e.value)
    assert "blocks.1.hook_q" in msg and "blocks.N.hook_resid_pre" in msg
    with pytest.raises(ConfigError, match="3 layers"):
        r.point("blocks.7.hook_resid_pre")
    with pytest.raises(ConfigError, match="pre-gain LayerNorm"):
        r.point("blocks.1.ln2.hook_normalized", transcoder=True)
    with pytest.raises(ConfigError) as e:
        find_hookpoint("transformer.h.1.mlpp", config, r.names, base_prefix=r.base)
    assert "transformer.h.1.mlp" in str(e.value) and "transformer.h.1.attn" in str(e.value)
    with pytest.raises(ConfigError, match="contradicts"):
        find_hookpoint("blocks.1.hook_resid_pre", config, r.names, base_prefix=r.base, io="output")
    # resolve_hook (what HookedModel uses) says what a TL name means instead of guessing
    with pytest.raises(ConfigError, match="input of module 'transformer.h.1'"):
        resolve_hook(model, "blocks.1.hook_resid_pre")
    import transformers as T

    opt = T.OPTConfig(hidden_size=D, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4, vocab_size=V)
    with pytest.raises(ConfigError, match="no TransformerLens mapping for model type 'opt'"):
        find_hookpoint("blocks.1.hook_resid_pre", opt, [], base_prefix="model")


def test_module_paths_in_every_spelling():
    config, model = tiny("llama")
    r = Reader(config, model)
    find = lambda name, **kw: find_hookpoint(name, config, r.names, base_prefix=r.base, **kw)  # noqa: E731
    assert find("layers.1").module == "model.layers.1"  # sparsify / delphi: relative to the base model
    assert find("model.layers.1.output") == find("layers.1")
    assert find("model.layers.1.mlp.input").io == "input"  # Gemma Scope 2 style suffix
    assert find("model.layers.1.mlp", io="input").io == "input"
    assert find(SaeHook("layers.1.mlp", False, io="input")).io == "input"
    names, base = module_names(config)  # the meta-device model has the real model's names
    assert names == r.names and base == "model"
    assert resolve_hook(model, "layers.1") is model.model.layers[1]
