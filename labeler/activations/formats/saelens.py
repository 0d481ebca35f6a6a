"""SAELens layout: a folder with ``cfg.json`` + ``sae_weights.safetensors``."""

from __future__ import annotations

from pathlib import Path

import torch

from labeler.activations.formats.base import (
    Encoder, SaeFormat, check_shape, need, read_cfg, read_safetensors, register_format,
)
from labeler.core.errors import InputError


def load(path: Path) -> Encoder:
    cfg = read_cfg(path)
    w = read_safetensors(path / "sae_weights.safetensors")
    need(w, ["W_enc", "W_dec", "b_dec"], path)
    d_in, F = w["W_enc"].shape
    check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    for key, want in (("d_in", d_in), ("d_sae", F)):
        if key in cfg and int(cfg[key]) != want:
            raise InputError(f"SAE {path}: cfg.json says {key}={cfg[key]} but the weights have {want}")
    arch = str(cfg.get("architecture", "standard")).lower()
    act_fn = str(cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))).lower()
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch in ("standard", "relu") and act_fn == "topk":
        arch = "topk"
    if arch == "relu":
        arch = "standard"
    if arch not in ("standard", "topk", "jumprelu"):
        raise InputError(f"SAE {path}: architecture {arch!r} is not supported (standard, topk, jumprelu)")
    if arch == "topk" and not k:
        raise InputError(f"SAE {path}: topk architecture but cfg.json gives no k")
    threshold = None
    if arch == "jumprelu":
        need(w, ["threshold"], path)
        threshold = w["threshold"]
    norm = str(cfg.get("normalize_activations", "none") or "none")
    scale = None
    if norm == "expected_average_only_in":
        # The factor is folded into the weights by SAELens before saving, unless declared here.
        factor = cfg.get("norm_scaling_factor", cfg.get("scaling_factor"))
        scale = float(factor) if factor is not None else None
        norm = "none"
    elif norm not in ("none", "constant_norm_rescale", "layer_norm"):
        raise InputError(f"SAE {path}: normalize_activations={norm!r} is not supported")
    b_enc = w.get("b_enc", torch.zeros(F))
    return Encoder(
        name=cfg.get("neuronpedia_id") or path.name, format="saelens", path=str(path), d_in=d_in,
        n_features=F, architecture=arch, W_enc=w["W_enc"].contiguous(), b_enc=b_enc, W_dec=w["W_dec"],
        b_dec=w["b_dec"], threshold=threshold, k=int(k) if k else None,
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)), normalize=norm, input_scale=scale,
        options={"hook_name": cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")},
    )


def detect(path: Path) -> Path | None:
    return path if path.is_dir() and (path / "sae_weights.safetensors").exists() else None


register_format(SaeFormat("saelens", "cfg.json + sae_weights.safetensors (SAELens)", detect, load))
