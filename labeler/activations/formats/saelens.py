"""SAELens layout: a folder with ``cfg.json`` + ``sae_weights.safetensors``, any SAELens version.

``read_config`` brings a cfg of any version (<= v3 runner dumps, 5.x flat, 6.x with
``metadata``; plus a release's ``config_overrides``) to one flat dict in SAELens 6 terms, as
SAELens's ``handle_config_defaulting`` does, after checking every key against
``saelens_keys``.  The architecture names map onto ``architectures.py`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from labeler.activations.formats.base import (
    Encoder, SaeFormat, check_shape, need, read_cfg, read_safetensors, refuse_unknown_keys, register_format,
)
from labeler.activations.formats.saelens_keys import KNOWN, REFUSED, TL_KWARGS_HONOURED, TL_KWARGS_INERT
from labeler.activations.hookpoints import SaeHook, is_tl_name, reads_residual_stream, uses_layer_norm
from labeler.core.errors import InputError

if TYPE_CHECKING:
    from labeler.activations.sources import SaeSource

# SAELens architecture -> (labeler activation, is a transcoder)
ARCHITECTURE_MAP = {
    "standard": ("relu", False), "relu": ("relu", False), "topk": ("topk", False), "abstopk": ("abstopk", False),
    "jumprelu": ("jumprelu", False), "gated": ("gated", False),
    # trained with a batch-level top-k, encoded at inference as JumpReLU with the learnt threshold
    "batchtopk": ("jumprelu", False), "matryoshka_batchtopk": ("jumprelu", False),
    "transcoder": ("relu", True), "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", True), "jumprelu_skip_transcoder": ("jumprelu", True),
}
UNENCODABLE = {"temporal": "its activations depend on earlier tokens through attention",
               "matching_pursuit": "its encoder is an iterative pursuit, not one formula per token"}
RESCALABLE = ("topk", "abstopk", "batchtopk", "matryoshka_batchtopk")
DTYPES = ("float32", "float64", "float16", "bfloat16")
MODEL_CLASSES = ("HookedTransformer", "HookedSAETransformer", "HookedEncoder", "AutoModelForCausalLM")


def _version(v) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
        if not p.isdigit():
            break
    return tuple(parts)


def read_config(path: Path, source: SaeSource) -> dict:
    raw = read_cfg(path)
    where = f"SAE {path}: cfg.json"
    meta = raw.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InputError(f"{where}: metadata is not an object")
    overrides = dict(source.config_overrides)
    refuse_unknown_keys(raw, KNOWN, where)
    refuse_unknown_keys(meta, KNOWN, f"{where} metadata")
    refuse_unknown_keys(overrides, KNOWN, f"release {source.release!r} config_overrides")
    cfg = {**meta, **{k: v for k, v in raw.items() if k != "metadata"}, **overrides}
    for key in sorted(set(cfg) & set(REFUSED)):
        raise InputError(f"{where}: option {key!r} is {REFUSED[key]}")
    version = cfg.get("sae_lens_version")
    if not version or _version(version) < (6,):
        # SAELens handle_pre_6_0_config: old names and the defaults of the time
        for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"),
                         ("activation_fn_str", "activation_fn")):
            if old in cfg:
                cfg.setdefault(new, cfg.pop(old))
        cfg.setdefault("architecture", "standard")
        if isinstance(cfg.get("normalize_activations"), bool):
            cfg["normalize_activations"] = "expected_average_only_in" if cfg["normalize_activations"] else "none"
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
            cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
    cfg.setdefault("apply_b_dec_to_input", True)
    cfg["normalize_activations"] = cfg.get("normalize_activations") or "none"
    return cfg


def _architecture(cfg: dict, where: str) -> tuple[str, str, bool]:
    """(SAELens name, labeler activation, transcoder)."""
    arch = str(cfg.get("architecture") or "standard").lower()
    if arch in UNENCODABLE:
        raise InputError(f"{where}: architecture {arch!r} cannot be encoded token by token ({UNENCODABLE[arch]})")
    if arch not in ARCHITECTURE_MAP:
        raise InputError(f"{where}: architecture {arch!r} is not supported (known: {', '.join(ARCHITECTURE_MAP)})")
    activation, transcoder = ARCHITECTURE_MAP[arch]
    fn = str(cfg.get("activation_fn") or "relu").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, dict) or set(kwargs) - {"k"}:
        raise InputError(f"{where}: activation_fn_kwargs {kwargs!r} has arguments other than k")
    if fn == "tanh-relu" and arch == "standard":
        activation = "tanh_relu"
    elif fn not in ("relu", "topk") or (fn == "topk" and arch not in ("topk", "standard")):
        raise InputError(f"{where}: activation_fn {fn!r} with architecture {arch!r} is not supported")
    if cfg.get("rescale_acts_by_decoder_norm") and arch not in RESCALABLE:
        raise InputError(f"{where}: rescale_acts_by_decoder_norm is set, but no SAELens {arch} SAE applies it; "
                         f"labeler cannot tell what was meant")
    return arch, activation, transcoder


def hook(path: Path, source: SaeSource) -> SaeHook | None:
    cfg = read_config(path, source)
    return _hook(cfg, f"SAE {path}")


def _hook(cfg: dict, where: str) -> SaeHook | None:
    _, _, transcoder = _architecture(cfg, where)
    out = cfg.get("hf_hook_name_out") or cfg.get("hook_name_out")
    cls = cfg.get("model_class_name") or "HookedTransformer"
    if cls not in MODEL_CLASSES:
        raise InputError(f"{where}: model_class_name {cls!r} is not supported (known: {', '.join(MODEL_CLASSES)})")
    if cfg.get("hook_head_index") is not None:
        raise InputError(f"{where}: the SAE reads one attention head (hook_head_index="
                         f"{cfg['hook_head_index']}), which labeler does not slice out")
    if cfg.get("hf_hook_name"):
        return SaeHook(str(cfg["hf_hook_name"]), transformer_lens=False, transcoder=transcoder, out=out)
    name = cfg.get("hook_name")
    if not name:
        return None
    name = str(name)
    if cls == "AutoModelForCausalLM" or not is_tl_name(name):
        # SAELens's HookedProxyLM hooks the module's output; labeler train-sae writes hook_io
        return SaeHook(name, transformer_lens=False, io=cfg.get("hook_io"), transcoder=transcoder, out=out)
    return SaeHook(name, transformer_lens=True, transcoder=transcoder, out=out)


def _center_input(cfg: dict, sae_hook: SaeHook | None, where: str) -> bool:
    """Whether the SAE saw TransformerLens's centred residual stream (``center_writing_weights``
    on a LayerNorm model): then every residual value is the HF one minus its per-token mean."""
    kwargs = cfg.get("model_from_pretrained_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: model_from_pretrained_kwargs is not an object")
    unknown = sorted(set(kwargs) - set(TL_KWARGS_HONOURED) - set(TL_KWARGS_INERT))
    if unknown:
        raise InputError(f"{where}: model_from_pretrained_kwargs has unknown TransformerLens option(s) {unknown}; "
                         f"labeler cannot tell whether they change the activations")
    if sae_hook is None or not sae_hook.transformer_lens:
        return False
    if "hook_z" in sae_hook.name and (kwargs.get("fold_value_biases") or kwargs.get("refactor_factored_attn_matrices")):
        raise InputError(f"{where}: a hook_z SAE trained with TransformerLens's fold_value_biases / "
                         f"refactor_factored_attn_matrices, whose z differs from any module's input")
    if not kwargs.get("center_writing_weights") or sae_hook.transcoder or not reads_residual_stream(sae_hook.name):
        return False
    layer_norm = uses_layer_norm(cfg.get("model_name"))
    if layer_norm is None:
        raise InputError(f"{where}: trained with center_writing_weights on TransformerLens model "
                         f"{cfg.get('model_name')!r}, whose normalisation labeler does not know (TL centres "
                         f"LayerNorm models only), so it cannot tell whether to centre the inputs")
    return layer_norm


def load(path: Path, source: SaeSource) -> Encoder:
    cfg = read_config(path, source)
    where = f"SAE {path}"
    arch, activation, transcoder = _architecture(cfg, where)
    sae_hook = _hook(cfg, where)
    dtype = str(cfg.get("dtype") or "float32").removeprefix("torch.")
    if dtype not in DTYPES:
        raise InputError(f"{where}: dtype {cfg.get('dtype')!r} is not a float type SAELens knows ({', '.join(DTYPES)})")
    w = read_safetensors(path / "sae_weights.safetensors")
    need(w, ["W_enc", "W_dec", "b_dec"], path)
    d_in, F = w["W_enc"].shape
    d_out = w["W_dec"].shape[1] if w["W_dec"].ndim == 2 else None
    check_shape(w["W_dec"], (F, d_out if transcoder else d_in), "W_dec", path)
    check_shape(w["b_dec"], (d_out if transcoder else d_in,), "b_dec", path)
    expect = {"d_in": d_in, "d_sae": F, **({"d_out": d_out} if transcoder else {})}
    if "d_sae" not in cfg and cfg.get("expansion_factor"):
        cfg["d_sae"] = int(cfg["expansion_factor"]) * int(cfg.get("d_in", d_in))
    for key, want in expect.items():
        if key in cfg and cfg[key] is not None and int(cfg[key]) != want:
            raise InputError(f"{where}: cfg.json says {key}={cfg[key]} but the weights have {want}")
    subtract = bool(cfg.get("apply_b_dec_to_input"))
    if transcoder and subtract:
        raise InputError(f"{where}: a {arch} cannot apply_b_dec_to_input (its b_dec lives in the output space)")
    threshold = None
    if activation == "jumprelu":
        threshold = _threshold(w, F, where, path)
    norm = str(cfg["normalize_activations"])
    norm_scale = None
    if norm == "expected_average_only_in":
        factor = source.norm_scaling_factor if source.norm_scaling_factor is not None else cfg.get("norm_scaling_factor")
        norm_scale = float(factor) if factor is not None else None  # none: SAELens encodes raw x too
        norm = "none"
    elif norm == "covariance_whitening":
        raise InputError(f"{where}: normalize_activations='covariance_whitening' needs whitening statistics "
                         f"that SAELens does not ship; it cannot be reproduced")
    elif norm not in ("none", "constant_norm_rescale", "layer_norm"):
        raise InputError(f"{where}: normalize_activations={norm!r} is not supported")
    reshape = str(cfg.get("reshape_activations") or "none")
    if reshape not in ("none", "hook_z"):
        raise InputError(f"{where}: reshape_activations={reshape!r} is not supported")
    k = cfg.get("k") if activation in ("topk", "abstopk") else None
    if activation in ("topk", "abstopk") and not k:
        raise InputError(f"{where}: {arch} architecture but cfg.json gives no k")
    params = {n: w[n] for n in ("b_gate", "b_mag", "r_mag") if n in w} if activation == "gated" else {}
    if activation == "gated":
        need(w, ["b_gate", "b_mag", "r_mag"], path)
    b_enc = w.get("b_enc")
    if b_enc is None and activation != "gated":
        raise InputError(f"{where}: {arch} SAE without b_enc")
    name = source.neuronpedia_id or cfg.get("neuronpedia_id") or source.default_name()
    return Encoder(
        name=str(name), format="saelens", path=str(path), d_in=d_in, n_features=F * (2 if activation == "abstopk" else 1),
        architecture=arch, activation=activation, W_enc=w["W_enc"].contiguous(), b_enc=b_enc, W_dec=w["W_dec"],
        b_dec=w["b_dec"], threshold=threshold, k=int(k) if k else None, params=params,
        subtract_b_dec=subtract, normalize=norm, norm_scale=norm_scale,
        center_input=_center_input(cfg, sae_hook, where),
        rescale_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm")),
        signs=("pos", "neg") if activation == "abstopk" else None, hook=sae_hook,
        options={"dtype": dtype, "model_name": cfg.get("model_name"), "neuronpedia_id": name if (
            source.neuronpedia_id or cfg.get("neuronpedia_id")) else None,
            "sae_lens_version": cfg.get("sae_lens_version"),
            "normalize_note": "expected_average_only_in without a factor: raw inputs, as SAELens"
            if cfg["normalize_activations"] == "expected_average_only_in" and norm_scale is None else None},
    )


def _threshold(w: dict, F: int, where: str, path: Path) -> torch.Tensor:
    """JumpReLU's threshold: ``threshold``, or exp(``log_threshold``) of old training checkpoints,
    or BatchTopK's learnt scalar ``topk_threshold`` (its inference form: the same for all)."""
    if "threshold" in w:
        t = w["threshold"]
    elif "log_threshold" in w:
        t = torch.exp(w["log_threshold"])
    elif "topk_threshold" in w:
        t = torch.ones(F) * w["topk_threshold"].reshape(())
    else:
        raise InputError(f"SAE weights {path}: a JumpReLU-style SAE needs threshold, log_threshold or "
                         f"topk_threshold (found {sorted(w)})")
    check_shape(t, (F,), "threshold", path)
    return t


def detect(path: Path) -> Path | None:
    return path if path.is_dir() and (path / "sae_weights.safetensors").exists() else None


register_format(SaeFormat("saelens", "cfg.json + sae_weights.safetensors (SAELens)", detect, load, hook,
                          files=("cfg.json", "sae_weights.safetensors")))
