"""Features whose decoder directions are most alike (cosine), for Neuronpedia's
``topkCosSimIndices`` / ``topkCosSimValues``.

Read through ``FeatureStore.neighbours()`` (``indices`` int32 [F, N], ``values`` float32 [F, N],
computed once by collect).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


Neighbours = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""``neighbours(start, end)`` -> (indices [end-start, k], cosine similarities [end-start, k])."""


def store_neighbours(store, k: int) -> Neighbours:
    """Neighbours of a store's features (empty when it has none, e.g. neurons, or k = 0)."""
    found = store.neighbours() if k > 0 else None
    if found is None:
        return lambda start, end: (np.zeros((end - start, 0), np.int64), np.zeros((end - start, 0), np.float32))
    indices, values = found
    return lambda start, end: (indices[start:end, :k], values[start:end, :k])
