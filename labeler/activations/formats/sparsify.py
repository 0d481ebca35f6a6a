"""EleutherAI sparsify layout: a folder with ``cfg.json`` + ``sae.safetensors``.

A repo (or local folder) holds one such folder per hookpoint, named after the module path
relative to the base model (``layers.10``, ``layers.5.mlp``, ``embed_tokens``), plus an
optional run-level ``config.json``.  Encode math: sparsify ``SparseCoder.encode`` /
``fused_encoder``: subtract b_dec unless ``transcode``; relu(x @ encoder.weight.T + bias);
then top-k (``activation: topk``) or the max of each of k groups (``groupmax``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from labeler.activations.formats.base import (
    Encoder, SaeFormat, check_shape, need, read_cfg, read_safetensors, refuse_unknown_keys, register_format,
)
from labeler.activations.hookpoints import SaeHook
from labeler.core.errors import InputError

if TYPE_CHECKING:
    from labeler.activations.sources import SaeSource

# every key SparseCoderConfig (and its SaeConfig ancestors) has had, and what labeler does with it
KEYS = {
    "activation": "topk or groupmax",
    "k": "latents kept per token (groupmax: the number of groups)",
    "num_latents": "checked against encoder.weight (0: d_in * expansion_factor)",
    "expansion_factor": "checked against encoder.weight when num_latents is 0 or absent",
    "d_in": "checked against encoder.weight",
    "d_sae": "an early name of num_latents: checked",
    "transcode": "a transcoder: no b_dec subtraction, reads the module input",
    "skip_connection": "W_skip adds to the output only; marks a transcoder (reads the module input)",
    "signed": "top-k by |pre| with the sign kept (mid-2024): encoded as two features per latent",
    "normalize_decoder": "training only (unit decoder rows)",
    "multi_topk": "training only (an extra loss)",
    "naive_decoder": "decode implementation only",
}


def _run_config(path: Path) -> dict:
    """The run-level config.json one folder up, if any (Nov 2024 - Feb 2025 runs kept
    ``transcode`` there only)."""
    p = path.parent / "config.json"
    try:
        data = json.loads(p.read_text()) if p.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_transcoder(cfg: dict, path: Path) -> tuple[bool, bool]:
    """(transcoder: reads the module input, subtracts b_dec)."""
    run = _run_config(path)
    transcode = bool(cfg.get("transcode", run.get("transcode", False)))
    # delphi's rule: a skip connection means a transcoder; b_dec is still subtracted unless
    # cfg.transcode, which matches how the early skip transcoders were trained
    return transcode or bool(cfg.get("skip_connection")), not transcode


def hook(path: Path, source: "SaeSource") -> SaeHook | None:
    cfg = read_cfg(path)
    refuse_unknown_keys(cfg, KEYS, f"SAE {path}: cfg.json")
    transcoder, _ = _is_transcoder(cfg, path)
    return SaeHook(path.name, transformer_lens=False, io="input" if transcoder else "output", transcoder=transcoder)


def load(path: Path, source: "SaeSource") -> Encoder:
    cfg = read_cfg(path)
    where = f"SAE {path}"
    refuse_unknown_keys(cfg, KEYS, f"{where}: cfg.json")
    w = read_safetensors(path / "sae.safetensors")
    need(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], path)
    F, d_in = w["encoder.weight"].shape
    if "d_in" in cfg and int(cfg["d_in"]) != d_in:
        raise InputError(f"{where}: cfg.json says d_in={cfg['d_in']} but encoder.weight has {d_in}")
    latents = cfg.get("num_latents") or cfg.get("d_sae") or (d_in * int(cfg["expansion_factor"])
                                                             if cfg.get("expansion_factor") else F)
    if int(latents) != F:
        raise InputError(f"{where}: cfg.json says {int(latents)} latents but encoder.weight has {F}")
    check_shape(w["W_dec"], (F, w["W_dec"].shape[1]), "W_dec", path)
    if not cfg.get("k"):
        raise InputError(f"{where}: cfg.json gives no k (sparsify SAEs keep k latents per token)")
    activation = str(cfg.get("activation") or "topk")
    if activation not in ("topk", "groupmax"):
        raise InputError(f"{where}: activation {activation!r} is not supported (topk, groupmax)")
    signed = bool(cfg.get("signed"))
    if signed and activation != "topk":
        raise InputError(f"{where}: signed {activation} is not a sparsify architecture")
    transcoder, subtract = _is_transcoder(cfg, path)
    if subtract:
        check_shape(w["b_dec"], (d_in,), "b_dec", path)
    arch = "abstopk" if signed else activation
    return Encoder(
        name=source.default_name(), format="sparsify", path=str(path), d_in=d_in,
        n_features=F * (2 if signed else 1), architecture=("signed " if signed else "") + activation
        + (" transcoder" if transcoder else ""), activation=arch,
        W_enc=w["encoder.weight"].T.contiguous(), b_enc=w["encoder.bias"], W_dec=w["W_dec"], b_dec=w["b_dec"],
        k=int(cfg["k"]), subtract_b_dec=subtract, signs=("pos", "neg") if signed else None,
        hook=SaeHook(path.name, transformer_lens=False, io="input" if transcoder else "output", transcoder=transcoder),
    )


def detect(path: Path) -> Path | None:
    return path if path.is_dir() and (path / "sae.safetensors").exists() else None


register_format(SaeFormat("sparsify", "cfg.json + sae.safetensors (sparsify)", detect, load, hook,
                          files=("cfg.json", "sae.safetensors")))
