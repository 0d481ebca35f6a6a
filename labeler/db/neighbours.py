"""Nearest features by decoder cosine similarity, precomputed and kept in the database.

A store carries them (``FeatureStore.neighbours()``: ``indices`` int32 [F, N], ``values``
float32 [F, N], best first, the feature itself excluded, computed by collect at finalize).
Registering the store imports them into ``feature_neighbours`` (one row per feature, the two
arrays as bytes), so a feature page or ``GET .../neighbours`` is one primary-key lookup and an
API server never needs the store, let alone its decoder.  Indices of -1 pad a row when the
SAE has fewer than N + 1 features.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.database import Database
from labeler.db.models import FeatureNeighbours

log = logging.getLogger(__name__)

T_NEIGHBOURS = FeatureNeighbours.__table__
NEIGHBOURS_FILE = "neighbours.safetensors"
N_NEIGHBOURS = 32
IMPORT_BATCH = 5_000


class Neighbours:
    def __init__(self, db: Database):
        self.db = db

    def import_store(self, sae_id: int, store: Any) -> int:
        """Import the store's neighbours (``store.neighbours()``); returns the rows written.  A
        store of neurons, or a very wide one collected without them, has none."""
        found = store.neighbours()
        if found is None:
            log.info("store %s has no decoder neighbours: none imported", store.path)
            return 0
        return self.import_arrays(sae_id, *found, n_features=int(store.n_features))

    def import_arrays(self, sae_id: int, indices: np.ndarray, values: np.ndarray, *, n_features: int) -> int:
        """Replace the SAE's neighbours with these arrays (one row per feature)."""
        indices, values = np.asarray(indices), np.asarray(values)
        if indices.ndim != 2 or indices.shape != values.shape:
            raise InputError(f"neighbours need indices and values of one [features, N] shape, not "
                             f"{indices.shape} and {values.shape}")
        if len(indices) != n_features:
            raise InputError(f"neighbours cover {len(indices)} features but the SAE has {n_features}")
        if indices.size and (indices.min() < -1 or indices.max() >= n_features):
            raise InputError(f"neighbour indices must lie in 0..{n_features - 1} (or -1 for none)")
        indices = indices.astype(np.int32, copy=False)
        values = values.astype(np.float32, copy=False)
        with self.db.engine.begin() as c:
            c.execute(T_NEIGHBOURS.delete().where(T_NEIGHBOURS.c.sae_id == sae_id))
        for batch in _batches(sae_id, indices, values):
            with self.db.engine.begin() as c:
                c.execute(T_NEIGHBOURS.insert(), batch)
        return len(indices)

    def of(self, sae_id: int, index: int, limit: int = N_NEIGHBOURS) -> list[tuple[int, float]]:
        """(feature index, cosine) of the feature's nearest features, best first."""
        with self.db.read_engine.connect() as c:
            row = c.execute(sa.select(T_NEIGHBOURS.c.indices, T_NEIGHBOURS.c.cosines).where(
                T_NEIGHBOURS.c.sae_id == sae_id, T_NEIGHBOURS.c.feature_index == int(index))).first()
        if row is None:
            return []
        idx = np.frombuffer(row.indices, dtype=np.int32)
        cos = np.frombuffer(row.cosines, dtype=np.float32)
        return [(int(i), float(v)) for i, v in zip(idx, cos) if i >= 0][:limit]


def _batches(sae_id: int, indices: np.ndarray, values: np.ndarray) -> Iterator[list[dict]]:
    for start in range(0, len(indices), IMPORT_BATCH):
        yield [dict(sae_id=sae_id, feature_index=start + j, indices=i.tobytes(), cosines=v.tobytes())
               for j, (i, v) in enumerate(zip(indices[start:start + IMPORT_BATCH], values[start:start + IMPORT_BATCH]))]
