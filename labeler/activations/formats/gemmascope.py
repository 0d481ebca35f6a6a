"""Gemma Scope layout: ``params.npz`` (JumpReLU), given as the file or its folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labeler.activations.formats.base import Encoder, SaeFormat, check_shape, need, register_format
from labeler.core.errors import InputError


def load(path: Path) -> Encoder:
    try:
        with np.load(path) as z:
            w = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in z.files}
    except Exception as e:
        raise InputError(f"SAE weights {path}: unreadable or corrupt npz file ({e})") from None
    need(w, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], path)
    d_in, F = w["W_enc"].shape
    check_shape(w["W_dec"], (F, d_in), "W_dec", path)
    return Encoder(
        name=path.parent.name or path.stem, format="gemmascope", path=str(path), d_in=d_in, n_features=F,
        architecture="jumprelu", W_enc=w["W_enc"].contiguous(), b_enc=w["b_enc"], W_dec=w["W_dec"],
        b_dec=w["b_dec"], threshold=w["threshold"],
    )


def detect(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".npz":
        return path
    if path.is_dir() and (path / "params.npz").exists():
        return path / "params.npz"
    return None


register_format(SaeFormat("gemmascope", "params.npz (Gemma Scope)", detect, load))
