"""Nearest features by decoder cosine similarity, precomputed and kept in the database.

A store carries ``neighbours.safetensors`` (``indices`` int32 [F, N], ``values`` float32
[F, N], best first, the feature itself excluded), written when collect finalizes the store.
Registering the store imports it into ``feature_neighbours`` (one row per feature, the two
arrays as bytes), so a feature page or ``GET .../neighbours`` is one primary-key lookup and an
API server never needs the store, let alone its decoder.  Indices of -1 pad a row when the
SAE has fewer than N + 1 features.
"""

from __future__ import annotations

import logging
from pathlib import Path
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
COMPUTE_MAX_FEATURES = 32_768  # a store without the file: computed at registration only up to this many features
IMPORT_BATCH = 5_000


def top_neighbours(directions: np.ndarray, n: int = N_NEIGHBOURS, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n`` most cosine-similar other rows: (indices int32 [F, n], values float32
    [F, n]), best first (equal cosines by lower index), -1 / NaN padding when F - 1 < n.  A blocked
    matmul: memory is [block, F], never [F, F]."""
    dirs = np.asarray(directions, dtype=np.float32)
    if dirs.ndim != 2:
        raise InputError(f"decoder directions must be [features, d_in], not shape {dirs.shape}")
    n_features = len(dirs)
    unit = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    k = min(n, n_features - 1)
    indices = np.full((n_features, n), -1, dtype=np.int32)
    values = np.full((n_features, n), np.nan, dtype=np.float32)
    if k <= 0:
        return indices, values
    for start in range(0, n_features, block):
        sims = unit[start:start + block] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # never a feature's own neighbour
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -part_sims), axis=1)
        indices[start:start + len(sims), :k] = np.take_along_axis(part, order, axis=1)
        values[start:start + len(sims), :k] = np.take_along_axis(part_sims, order, axis=1)
    return indices, values


def read_neighbours_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
        return arrays["indices"], arrays["values"]
    except Exception as e:
        raise InputError(f"{path} is not a readable neighbours file ({e})") from None


class Neighbours:
    def __init__(self, db: Database):
        self.db = db

    def import_store(self, sae_id: int, store: Any) -> int:
        """Import the store's precomputed neighbours (computed from its decoder for a store
        written before they existed, up to COMPUTE_MAX_FEATURES); returns the rows written.
        A store of neurons (no decoder) has none."""
        path = Path(str(store.path)) / NEIGHBOURS_FILE
        if path.exists():
            indices, values = read_neighbours_file(path)
        else:
            directions = store.decoder_directions()
            if directions is None:
                return 0
            if len(directions) > COMPUTE_MAX_FEATURES:
                log.warning("store %s has no %s and %d features: not computing neighbours here",
                            store.path, NEIGHBOURS_FILE, len(directions))
                return 0
            indices, values = top_neighbours(directions)
        return self.import_arrays(sae_id, indices, values, n_features=int(store.n_features))

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
