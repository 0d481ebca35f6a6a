"""Features whose decoder directions are most alike (cosine), for Neuronpedia's
``topkCosSimIndices`` / ``topkCosSimValues``.

Read from the store's ``neighbours.safetensors`` (``indices`` int32 [F, N], ``values`` float32
[F, N], computed once by collect) when it is there; otherwise computed here from the store's
decoder directions, one block of rows against all of them at a time (memory: block x F floats;
time grows with F squared, so a million-feature SAE wants the stored file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from labeler.core.errors import InputError

Neighbours = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""``neighbours(start, end)`` -> (indices [end-start, k], cosine similarities [end-start, k])."""


def top_k_cosine(unit: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row index, the ``k`` most similar other rows of ``unit`` (unit-norm), best first."""
    sims = unit[rows] @ unit.T
    sims[np.arange(len(rows)), rows] = -np.inf  # a feature is not its own neighbour
    k = min(k, unit.shape[0] - 1)
    if k <= 0:
        return np.zeros((len(rows), 0), np.int64), np.zeros((len(rows), 0), np.float32)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(sims, idx, axis=1)


def store_neighbours(store, k: int) -> Neighbours:
    """Neighbours of a store's features (empty when it has no decoder, e.g. neurons, or k = 0)."""
    stored = Path(store.path) / "neighbours.safetensors"
    if k > 0 and stored.exists():
        from safetensors import safe_open

        try:
            handle = safe_open(str(stored), framework="numpy")
            indices, values = handle.get_slice("indices"), handle.get_slice("values")
        except Exception as e:
            raise InputError(f"store {store.path}: neighbours.safetensors is corrupt ({e})") from None

        def read(start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
            return indices[start:end][:, :k], values[start:end][:, :k]

        return read
    directions = store.decoder_directions() if k > 0 else None
    if directions is None:
        return lambda start, end: (np.zeros((end - start, 0), np.int64), np.zeros((end - start, 0), np.float32))
    dec = np.asarray(directions, dtype=np.float32)
    unit = dec / np.maximum(np.linalg.norm(dec, axis=1, keepdims=True), 1e-12)
    return lambda start, end: top_k_cosine(unit, np.arange(start, end), k)
