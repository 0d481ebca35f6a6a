"""Gemma Scope 2 (Gemma 3) layout: ``params.safetensors`` + ``config.json`` in one folder.

Repos ``google/gemma-scope-2-{270m,1b,4b,12b,27b}-{pt,it}``, folders like
``resid_post/layer_17_width_16k_l0_big``.  Tensors ``w_enc [d, F]``, ``w_dec [F, d_out]``,
``b_enc``, ``b_dec``, ``threshold`` (+ ``affine_skip_connection`` for affine transcoders, an
output-side term); JumpReLU without b_dec subtraction.  ``config.json`` names the Hugging Face
hookpoint itself (``hf_hook_point_in``: ``model.layers.17.output``); without it the site is
inferred from the folder name, as SAELens's ``gemma_3`` loader does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from labeler.activations.formats.base import (
    Encoder, SaeFormat, check_shape, need, read_json, read_safetensors, refuse_unknown_keys, register_format,
)
from labeler.activations.hookpoints import SaeHook
from labeler.core.errors import InputError

if TYPE_CHECKING:
    from labeler.activations.sources import SaeSource

KEYS = {
    "architecture": "must be jump_relu",
    "hf_hook_point_in": "where it reads (a Hugging Face path with .input / .output)",
    "hf_hook_point_out": "transcoders: where they write (recorded)",
    "width": "checked against w_enc",
    "affine_connection": "affine transcoders: an output-side skip term (recorded)",
    "type": "sae | transcoder (recorded)",
    "model_name": "recorded",
    "l0": "recorded",
}
# folder site -> (HF hook in, is a transcoder), as SAELens _infer_gemma_3_raw_cfg_dict
_SITES = (("transcoder", "model.layers.{L}.pre_feedforward_layernorm.output", True),
          ("resid_post", "model.layers.{L}.output", False),
          ("attn_out", "model.layers.{L}.self_attn.o_proj.input", False),
          ("mlp_out", "model.layers.{L}.post_feedforward_layernorm.output", False))


def _config(path: Path) -> dict:
    if not (path / "config.json").exists():
        return {}
    cfg = read_json(path / "config.json")
    refuse_unknown_keys(cfg, KEYS, f"SAE {path}: config.json")
    if cfg.get("architecture", "jump_relu") != "jump_relu":
        raise InputError(f"SAE {path}: config.json architecture {cfg['architecture']!r} (only jump_relu is known)")
    return cfg


def hook(path: Path, source: "SaeSource") -> SaeHook | None:
    cfg = _config(path)
    rel = str(source.subfolder or "/".join(path.parts[-2:]))  # site folder / SAE folder
    transcoder = "transcoder" in rel or cfg.get("type") == "transcoder"
    name = cfg.get("hf_hook_point_in")
    if name is None:
        layer = re.search(r"layer_(\d+)", rel)
        site = next(((h, t) for key, h, t in _SITES if key in rel), None)
        if layer is None or site is None:
            return None
        name, transcoder = site[0].format(L=layer.group(1)), site[1]
    return SaeHook(str(name), transformer_lens=False, transcoder=transcoder, out=cfg.get("hf_hook_point_out"))


def load(path: Path, source: "SaeSource") -> Encoder:
    cfg = _config(path)
    w = read_safetensors(path / "params.safetensors")
    need(w, ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"], path)
    d_in, F = w["w_enc"].shape
    check_shape(w["w_dec"], (F, w["w_dec"].shape[1]), "w_dec", path)
    for name in ("b_enc", "threshold"):
        check_shape(w[name], (F,), name, path)
    if cfg.get("width") is not None and int(cfg["width"]) != F:
        raise InputError(f"SAE {path}: config.json says width={cfg['width']} but w_enc has {F}")
    sae_hook = hook(path, source)
    transcoder = bool(sae_hook and sae_hook.transcoder)
    arch = ("jumprelu_skip_transcoder" if "affine_skip_connection" in w else "jumprelu_transcoder") \
        if transcoder else "jumprelu"
    return Encoder(
        name=source.neuronpedia_id or source.default_name(), format="gemmascope2", path=str(path), d_in=d_in,
        n_features=F, architecture=arch, activation="jumprelu", W_enc=w["w_enc"].contiguous(), b_enc=w["b_enc"],
        W_dec=w["w_dec"], b_dec=w["b_dec"], threshold=w["threshold"], hook=sae_hook,
        options={"model_name": cfg.get("model_name"), "l0": cfg.get("l0")},
    )


def detect(path: Path) -> Path | None:
    return path if path.is_dir() and (path / "params.safetensors").exists() else None


register_format(SaeFormat("gemmascope2", "params.safetensors + config.json (Gemma Scope 2)", detect, load, hook,
                          files=("params.safetensors", "config.json")))
