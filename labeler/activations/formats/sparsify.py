"""EleutherAI sparsify layout: a folder with ``cfg.json`` + ``sae.safetensors`` (TopK)."""

from __future__ import annotations

from pathlib import Path

from labeler.activations.formats.base import (
    Encoder, SaeFormat, check_shape, need, read_cfg, read_safetensors, register_format,
)
from labeler.core.errors import InputError


def load(path: Path) -> Encoder:
    cfg = read_cfg(path)
    w = read_safetensors(path / "sae.safetensors")
    need(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], path)
    F, d_in = w["encoder.weight"].shape
    if "d_in" in cfg and int(cfg["d_in"]) != d_in:
        raise InputError(f"SAE {path}: cfg.json says d_in={cfg['d_in']} but encoder.weight has {d_in}")
    if cfg.get("num_latents") and int(cfg["num_latents"]) != F:
        raise InputError(f"SAE {path}: cfg.json says num_latents={cfg['num_latents']} but encoder.weight has {F}")
    check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    if not cfg.get("k"):
        raise InputError(f"SAE {path}: cfg.json gives no k (sparsify SAEs are TopK)")
    return Encoder(
        name=path.name, format="sparsify", path=str(path), d_in=d_in, n_features=F, architecture="topk",
        W_enc=w["encoder.weight"].T.contiguous(), b_enc=w["encoder.bias"], W_dec=w["W_dec"], b_dec=w["b_dec"],
        k=int(cfg["k"]), subtract_b_dec=not cfg.get("transcode", False),
    )


def detect(path: Path) -> Path | None:
    return path if path.is_dir() and (path / "sae.safetensors").exists() else None


register_format(SaeFormat("sparsify", "cfg.json + sae.safetensors (sparsify)", detect, load))
