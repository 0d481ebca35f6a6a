"""Where an SAE reads: TransformerLens hook names and module paths -> Hugging Face modules.

SAEs name their hookpoint in their own terms: SAELens with a TransformerLens (TL) hook name
(``blocks.8.hook_resid_pre``) or, for converted releases, a Hugging Face path with an
``.input`` / ``.output`` suffix (``model.layers.17.output``); sparsify with a module path
relative to the base model (``layers.10``).  ``find_hookpoint`` turns any of them into the
module of the loaded ``transformers`` model and whether its input or output is read.

The TL tables follow TransformerLens 3's block definitions (``components/transformer_block.py``,
``bert_block.py``, the bridge aliases ``hook_resid_mid = ln2.hook_in``, ``hook_post =
out.hook_in``, ``hook_z = o.hook_in``).  Values are the HF module paths of the model class
``load_model`` builds (a CausalLM for decoders, ``AutoModel`` for BERT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from labeler.core.errors import ConfigError

IO = ("input", "output")
_TL = re.compile(r"^(?:hook_embed|hook_pos_embed|hook_token_type_embed|blocks\.(\d+)\.(.+))$")
_IO_SUFFIX = re.compile(r"^(.+)\.(input|output)$")


@dataclass(frozen=True)
class SaeHook:
    """Where an SAE reads, in the terms of its own files."""

    name: str
    """a TransformerLens hook name, or a module path (optionally ending in .input / .output)"""
    transformer_lens: bool
    """``name`` is a TransformerLens hook name (else a Hugging Face module path)"""
    io: str | None = None
    """module paths: "input" | "output" (None: the suffix of ``name``, else "output")"""
    transcoder: bool = False
    """reads an MLP's (normalised) input to predict its output"""
    out: str | None = None
    """transcoders: where they write, as their files say (recorded, never read)"""


@dataclass(frozen=True)
class Hookpoint:
    """A module of the loaded model and which side of it is read."""

    module: str
    """the module path in the model ``load_model`` builds"""
    io: str
    """"input" (first argument of the forward) | "output" (first element if a tuple)"""
    tl_name: str | None = None
    """the TransformerLens name it was mapped from, if any"""


def is_tl_name(name: str) -> bool:
    return bool(_TL.match(name))


def _layer_table(base: str, layers: str, rows: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """TL suffix -> (module template, io); ``~`` stands for the layer's own path."""
    layer = f"{base}{layers}.{{n}}"
    return {tl: (mod.replace("~", layer), io) for tl, (mod, io) in rows.items()}


_LLAMA_ROWS = {
    "hook_resid_pre": ("~", "input"), "hook_resid_post": ("~", "output"),
    "attn.hook_z": ("~.self_attn.o_proj", "input"), "hook_attn_out": ("~.self_attn", "output"),
    "hook_resid_mid": ("~.post_attention_layernorm", "input"), "hook_mlp_in": ("~.post_attention_layernorm", "input"),
    "mlp.hook_in": ("~.mlp", "input"), "mlp.hook_pre": ("~.mlp.gate_proj", "output"),
    "mlp.hook_pre_linear": ("~.mlp.up_proj", "output"),
    # act(gate) * up is the input of down_proj; act_fn's own output lacks the up product
    "mlp.hook_post": ("~.mlp.down_proj", "input"), "hook_mlp_out": ("~.mlp", "output"),
}
# Gemma 2/3: TL applies the post-attention / post-MLP norms before hook_attn_out / hook_mlp_out
_GEMMA2_ROWS = {
    **_LLAMA_ROWS,
    "hook_attn_out": ("~.post_attention_layernorm", "output"),
    "hook_resid_mid": ("~.pre_feedforward_layernorm", "input"), "hook_mlp_in": ("~.pre_feedforward_layernorm", "input"),
    "hook_mlp_out": ("~.post_feedforward_layernorm", "output"),
}
_GPT2_ROWS = {
    "hook_resid_pre": ("~", "input"), "hook_resid_post": ("~", "output"),
    "attn.hook_z": ("~.attn.c_proj", "input"), "hook_attn_out": ("~.attn", "output"),
    "hook_resid_mid": ("~.ln_2", "input"), "hook_mlp_in": ("~.ln_2", "input"), "mlp.hook_in": ("~.mlp", "input"),
    "mlp.hook_pre": ("~.mlp.c_fc", "output"), "mlp.hook_post": ("~.mlp.c_proj", "input"),
    "hook_mlp_out": ("~.mlp", "output"),
}
_NEOX_ROWS = {
    "hook_resid_pre": ("~", "input"), "hook_resid_post": ("~", "output"),
    "attn.hook_z": ("~.attention.dense", "input"), "hook_attn_out": ("~.attention", "output"),
    "hook_resid_mid": ("~.post_attention_layernorm", "input"), "hook_mlp_in": ("~.post_attention_layernorm", "input"),
    "mlp.hook_in": ("~.mlp", "input"), "mlp.hook_pre": ("~.mlp.dense_h_to_4h", "output"),
    "mlp.hook_post": ("~.mlp.dense_4h_to_h", "input"), "hook_mlp_out": ("~.mlp", "output"),
}
_BERT_ROWS = {  # post-LN blocks (TL bert_block.py)
    "hook_resid_pre": ("~", "input"), "attn.hook_z": ("~.attention.output.dense", "input"),
    "hook_attn_out": ("~.attention.output.dense", "output"),
    "hook_resid_mid": ("~.attention.output.LayerNorm", "input"),  # the pre-LN sum
    "mlp.hook_in": ("~.intermediate", "input"), "mlp.hook_pre": ("~.intermediate.dense", "output"),
    "mlp.hook_post": ("~.intermediate", "output"), "hook_mlp_out": ("~.output.dense", "output"),
    "hook_resid_post": ("~.output.LayerNorm", "input"),  # the pre-LN sum, not the layer output
    "hook_normalized_resid_post": ("~", "output"),
}


@dataclass(frozen=True)
class Family:
    """How one model family lays out its modules, in TransformerLens terms."""

    name: str
    model_types: tuple[str, ...]  # transformers ``config.model_type`` values
    globals: dict[str, tuple[str, str]]  # non-layer hooks -> (module, io)
    layers: dict[str, tuple[str, str]]  # TL suffix -> (module template with {n}, io)
    layer_norm: bool  # LayerNorm (TL's centre_writing_weights applies) rather than RMSNorm
    refused: dict[str, str]  # TL suffix -> why it cannot be read from a module here


FAMILIES: tuple[Family, ...] = (
    Family("gpt2", ("gpt2",), {"hook_embed": ("transformer.wte", "output"), "hook_pos_embed": ("transformer.wpe", "output")},
           _layer_table("transformer.", "h", _GPT2_ROWS), True, {}),
    Family("gpt_neox", ("gpt_neox",), {"hook_embed": ("gpt_neox.embed_in", "output")},
           _layer_table("gpt_neox.", "layers", _NEOX_ROWS), True, {}),
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma"), {"hook_embed": ("model.embed_tokens", "output")},
           _layer_table("model.", "layers", _LLAMA_ROWS), False, {}),
    Family("gemma2", ("gemma2", "gemma3", "gemma3_text"), {"hook_embed": ("model.embed_tokens", "output")},
           _layer_table("model.", "layers", _GEMMA2_ROWS), False, {}),
    Family("bert", ("bert",), {"hook_embed": ("embeddings.word_embeddings", "output"),
                               "hook_pos_embed": ("embeddings.position_embeddings", "output"),
                               "hook_token_type_embed": ("embeddings.token_type_embeddings", "output")},
           _layer_table("", "encoder.layer", _BERT_ROWS), False,
           {"hook_mlp_in": "TransformerLens's HookedEncoder and its bridge disagree on it (pre-LN sum or "
                           "normalised); name blocks.N.hook_resid_mid or blocks.N.mlp.hook_in instead"}),
)
_TRANSCODER_INPUTS = ("hook_mlp_in", "mlp.hook_in", "ln2.hook_normalized")


def family_of(config) -> Family | None:
    model_type = getattr(config, "model_type", None)
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def match_module(name: str, names: Iterable[str], base_prefix: str = "") -> str | None:
    """The module path ``name`` means in a model with these module ``names``: itself, with or
    without the base model's prefix (sparsify and delphi name modules relative to the base
    model), or the one module whose path ends in ``.name`` (e.g. Gemma 3's language_model)."""
    names = [n for n in names if n]
    have = set(names)
    cands = [name]
    if base_prefix:
        cands += [f"{base_prefix}.{name}", name.removeprefix(f"{base_prefix}.")]
    for c in cands:
        if c in have:
            return c
    tail = name.removeprefix(f"{base_prefix}.") if base_prefix else name
    ends = [n for n in names if n.endswith(f".{tail}")]
    return ends[0] if len(ends) == 1 else None


def _tl_target(tl: str, config, family: Family | None, *, transcoder: bool) -> tuple[str, str]:
    """(module template resolved, io) of a TL name in this family, or ConfigError."""
    m = _TL.match(tl)
    arch = type(config).__name__.removesuffix("Config") or getattr(config, "model_type", "?")
    if family is None:
        known = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise ConfigError(f"TransformerLens hook {tl!r}: no TransformerLens mapping for model type "
                          f"{getattr(config, 'model_type', None)!r} (mapped: {known}); name the module "
                          f"instead, with --hook MODULE and --hook-io input|output")
    if m.group(1) is None:
        if tl not in family.globals:
            raise ConfigError(f"TransformerLens hook {tl!r} has no module in {arch} models "
                              f"(these do: {', '.join(family.globals)})")
        return family.globals[tl]
    n, rest = m.group(1), m.group(2)
    if transcoder and rest in _TRANSCODER_INPUTS:
        if rest == "ln2.hook_normalized" and family.layer_norm:
            raise ConfigError(f"TransformerLens hook {tl!r}: TL's pre-gain LayerNorm output is no module's "
                              f"output in {arch} models; name the MLP module with --hook-io input if the "
                              f"transcoder was trained on the normalised MLP input")
        # the MLP module's input: the pre-MLP norm's output, gain included, as Gemma Scope's and
        # the other transcoder producers' own configs (hf_hook_point_in) say they read
        rest = "mlp.hook_in"
    if rest in family.refused:
        raise ConfigError(f"TransformerLens hook {tl!r}: {family.refused[rest]}")
    parallel = family.name == "gpt_neox" and getattr(config, "use_parallel_residual", True)
    if parallel and rest == "hook_resid_mid":
        raise ConfigError(f"TransformerLens hook {tl!r} does not exist in a parallel-residual GPT-NeoX "
                          f"model (attention and MLP both read hook_resid_pre)")
    if parallel and rest == "hook_mlp_in":
        rest = "hook_resid_pre"
    if rest not in family.layers:
        raise ConfigError(f"TransformerLens hook {tl!r} has no module equivalent in {arch} models "
                          f"(mapped: {', '.join('blocks.N.' + r for r in family.layers)})")
    template, io = family.layers[rest]
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if layers is not None and int(n) >= int(layers):
        raise ConfigError(f"TransformerLens hook {tl!r}: the model has {layers} layers (0..{int(layers) - 1})")
    return template.format(n=n), io


def find_hookpoint(hook: SaeHook | str, config, module_names: list[str], *, base_prefix: str = "",
                   io: str | None = None) -> Hookpoint:
    """The module (and input/output) of the model that ``hook`` names.

    ``hook`` is an :class:`SaeHook` or a string as a user types it (``--hook``): a TL name, a
    module path, or a module path with ``.input`` / ``.output``.  ``io`` (``--hook-io``) must
    agree with what the name implies.  Unmappable names raise ConfigError listing module names
    that would work."""
    if isinstance(hook, str):
        hook = SaeHook(hook, transformer_lens=is_tl_name(hook))
    if io is not None and io not in IO:
        raise ConfigError(f"--hook-io must be 'output' or 'input', not {io!r}")
    family = family_of(config)
    if hook.transformer_lens:
        try:
            path, implied = _tl_target(hook.name, config, family, transcoder=hook.transcoder)
        except ConfigError as e:
            raise ConfigError(f"{e}; or name a module with --hook-io input|output{_block_modules(hook.name, family, module_names, base_prefix)}") from None
        if io is not None and io != implied:
            raise ConfigError(f"TransformerLens hook {hook.name!r} is the {implied} of {path}; "
                              f"--hook-io {io} contradicts it")
        found = match_module(path, module_names, base_prefix)
        if found is None:
            raise ConfigError(f"TransformerLens hook {hook.name!r} maps to module {path!r}, which this model "
                              f"does not have{_nearby(path, module_names)}")
        return Hookpoint(found, implied, hook.name)
    path, implied = hook.name, hook.io
    m = _IO_SUFFIX.match(path)
    if m and match_module(path, module_names, base_prefix) is None:
        path, implied = m.group(1), implied or m.group(2)
    if io is not None and implied is not None and io != implied:
        raise ConfigError(f"hookpoint {hook.name!r} reads the module's {implied}; --hook-io {io} contradicts it")
    found = match_module(path, module_names, base_prefix)
    if found is None:
        raise ConfigError(f"unknown hookpoint {hook.name!r}{_nearby(path, module_names)}")
    return Hookpoint(found, io or implied or "output", None)


def _block_modules(tl: str, family: Family | None, names: list[str], base_prefix: str) -> str:
    """The module names of the block a TL name points into (for error messages)."""
    m = _TL.match(tl)
    if family is None or m is None or m.group(1) is None:
        return _nearby("", names) if family is None else ""
    block = match_module(family.layers["hook_resid_pre"][0].format(n=m.group(1)), names, base_prefix)
    return _nearby(block, names) if block else ""


def _nearby(path: str, names: list[str]) -> str:
    """Module names that would work: those of the same block, else the closest spellings."""
    import difflib

    names = [n for n in names if n]
    layer = re.match(r"^(.*?\b(?:h|layers|layer)\.\d+)", path)
    same = [n for n in names if layer and (n == layer.group(1) or n.startswith(layer.group(1) + "."))]
    if not same and layer:  # the prefix may differ (base model vs CausalLM)
        tail = re.search(r"((?:h|layers|layer)\.\d+)$", layer.group(1)).group(1)
        same = [n for n in names if re.search(rf"(^|\.){re.escape(tail)}(\.|$)", n)]
    near = same[:24] or difflib.get_close_matches(path, names, n=8, cutoff=0.4)
    return f"; module names that would work: {', '.join(near)}" if near else ""


# TransformerLens normalisation by official model name, for centre_writing_weights (which TL
# applies only to LayerNorm models).  Only consulted when an SAE says it was trained with it.
_LN_MODELS = re.compile(r"^(?:[\w.-]+/)?(?:gpt2|distilgpt2|stanford-gpt2|pythia|gpt-neo|gpt-j|opt-|bloom|santacoder|"
                        r"phi-1|phi-2|solu-|gelu-|attn-only-|tiny-stories|tinystories|othello|redwood)", re.I)
_RMS_MODELS = re.compile(r"^(?:[\w.-]+/)?(?:llama|meta-llama|codellama|mistral|mixtral|gemma|qwen|phi-3|yi-|olmo|"
                         r"deepseek|gpt-oss)", re.I)


def uses_layer_norm(tl_model_name: str | None) -> bool | None:
    """True for TL models with LayerNorm, False for RMSNorm ones, None if the name is unknown."""
    if not tl_model_name:
        return None
    if _LN_MODELS.match(tl_model_name):
        return True
    if _RMS_MODELS.match(tl_model_name):
        return False
    return None


RESIDUAL_WRITES = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                   "hook_attn_out", "hook_mlp_out", "hook_mlp_in")
"""TL hooks on the residual stream: centred per token when TL centres the writing weights."""


def reads_residual_stream(tl_name: str) -> bool:
    m = _TL.match(tl_name)
    if not m:
        return False
    return (m.group(2) or tl_name) in RESIDUAL_WRITES
