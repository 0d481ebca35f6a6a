"""Features whose decoder directions are most alike (cosine), for Neuronpedia's
``topkCosSimIndices`` / ``topkCosSimValues``.

Read from the store's ``neighbours.safetensors`` (``indices`` int32 [F, N], ``values`` float32
[F, N], computed once by collect) when it is there; otherwise computed here from the store's
decoder directions (``labeler.db.neighbours.top_neighbours``: one block of rows against all of
them at a time, memory block x F floats; time grows with F squared, so a million-feature SAE
wants the stored file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from labeler.core.errors import InputError
from labeler.db.neighbours import top_neighbours

Neighbours = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""``neighbours(start, end)`` -> (indices [end-start, k], cosine similarities [end-start, k])."""


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
    k = min(k, len(directions) - 1)
    indices, values = top_neighbours(directions, k)  # the one blocked computation (labeler.db.neighbours)
    return lambda start, end: (indices[start:end], values[start:end])
