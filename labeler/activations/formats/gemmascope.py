"""Gemma Scope (Gemma 2) layout: ``params.npz`` (JumpReLU), given as the file or its folder.

Repos ``google/gemma-scope-{2b,9b,27b}-{pt,it}-{res,mlp,att}`` and ``-2b-pt-transcoders``,
folders ``layer_L/width_W/average_l0_N`` (and ``embedding/...``).  Tensors ``W_enc [d, F]``,
``W_dec [F, d]``, ``b_enc``, ``b_dec``, ``threshold``; encode: relu(x @ W_enc + b_enc) where it
exceeds the threshold, with no b_dec subtraction (delphi ``custom/gemmascope.py``, SAELens
``gemma_2`` loader).  The site comes from the repo name, the layer from the folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from labeler.activations.formats.base import Encoder, SaeFormat, check_shape, need, register_format
from labeler.activations.hookpoints import SaeHook
from labeler.core.errors import InputError

if TYPE_CHECKING:
    from labeler.activations.sources import SaeSource

_SITE = re.compile(r"gemma-scope-[\w.-]+?-(res|mlp|att|transcoders)(?:$|[/-])")
# site -> TransformerLens hook of layer L (SAELens gemma_2 / gemma_2_transcoder loaders)
SITES = {"res": "blocks.{L}.hook_resid_post", "mlp": "blocks.{L}.hook_mlp_out", "att": "blocks.{L}.attn.hook_z",
         "transcoders": "blocks.{L}.ln2.hook_normalized"}


def _site(path: Path, source: "SaeSource") -> str | None:
    """res | mlp | att | transcoders, from the repo id (or a hub-cache path naming it)."""
    for text in (source.repo_id or "", *(p.replace("--", "/") for p in path.parts)):
        m = _SITE.search(text.lower())
        if m:
            return m.group(1)
    return None


def hook(path: Path, source: "SaeSource") -> SaeHook | None:
    folder = path.parent if path.is_file() else path
    site = _site(folder, source)
    rel = str(source.subfolder or folder)
    if site is None:
        return None
    if "embedding" in rel.split("/"):
        return SaeHook("hook_embed", transformer_lens=True)
    layer = re.search(r"layer_(\d+)", rel)
    if layer is None:
        return None
    name = SITES[site].format(L=layer.group(1))
    if site == "transcoders":
        return SaeHook(name, transformer_lens=True, transcoder=True, out=f"blocks.{layer.group(1)}.hook_mlp_out")
    return SaeHook(name, transformer_lens=True)


def load(path: Path, source: "SaeSource") -> Encoder:
    try:
        with np.load(path, allow_pickle=False) as z:
            w = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in z.files}
    except Exception as e:
        raise InputError(f"SAE weights {path}: unreadable or corrupt npz file ({e})") from None
    w = {(f"W_{k[2:]}" if k.startswith("w_") else k): v for k, v in w.items()}  # some files say w_enc
    need(w, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], path)
    d_in, F = w["W_enc"].shape
    check_shape(w["W_dec"], (F, w["W_dec"].shape[1]), "W_dec", path)
    for name in ("b_enc", "threshold"):
        check_shape(w[name], (F,), name, path)
    sae_hook = hook(path, source)
    transcoder = bool(sae_hook and sae_hook.transcoder)
    scale = None
    if sae_hook is not None and sae_hook.name == "hook_embed":
        scale = _embedding_scale(d_in, path)
    return Encoder(
        name=source.neuronpedia_id or source.default_name(), format="gemmascope", path=str(path), d_in=d_in,
        n_features=F, architecture="jumprelu_transcoder" if transcoder else "jumprelu", activation="jumprelu",
        W_enc=w["W_enc"].contiguous(), b_enc=w["b_enc"], W_dec=w["W_dec"], b_dec=w["b_dec"], threshold=w["threshold"],
        input_scale=scale, hook=sae_hook,
    )


def _embedding_scale(d_in: int, path: Path) -> float:
    """Embedding SAEs were trained on the unscaled lookup, while Gemma's embed_tokens output
    is multiplied by sqrt(d_model) (transformers >= 5: Gemma2TextScaledWordEmbedding)."""
    from transformers.models.gemma2 import modeling_gemma2

    if not hasattr(modeling_gemma2, "Gemma2TextScaledWordEmbedding"):
        raise InputError(f"SAE {path}: a Gemma Scope embedding SAE needs transformers >= 5 (where embed_tokens "
                         f"applies Gemma's sqrt(d_model) scale); this transformers scales elsewhere")
    return 1.0 / d_in ** 0.5


def detect(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".npz":
        return path
    if path.is_dir() and (path / "params.npz").exists():
        return path / "params.npz"
    return None


register_format(SaeFormat("gemmascope", "params.npz (Gemma Scope)", detect, load, hook, files=("params.npz",)))
