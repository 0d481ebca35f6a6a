"""The semantic-search indexes: one ``AnnIndex`` per (SAE, embedding model), fed from the
embedding table and kept on disk.

    indexes = VectorIndexes.in_data_dir(repo.db, settings.data_dir)
    indexes.search([sae_id], "all-MiniLM-L6-v2", query_vector, k)   # [(explanation id, cosine)]
    indexes.update(sae_id, model)                                     # catch up, rebuild if due, save

Persistence: ``<data_dir>/vector-index/<database>/sae<id>-<model>.faiss`` plus a ``.json``
with what it holds (``IndexState``).  Opening an index loads that file and checks it against
the table (the row count up to its watermark, the id at the watermark); a missing, unreadable
or foreign file (another database at the same URL, deleted explanations) is rebuilt from the
stored vectors.  After opening, the index catches up with every row written since its
watermark; later, at most once per ``sync_interval_s``, a search adds up to ``sync_rows`` new
rows before it runs, so new embeddings become searchable within seconds, each request's extra
work stays bounded, and nothing is embedded or scanned while answering.  An index that has
outgrown its kind (``AnnIndex.needs_rebuild``) is rebuilt and saved when that is noticed;
``labeler db embed`` does this after embedding, so a server usually only loads and adds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np

from labeler.core.naming import slugify
from labeler.db.ann import AnnIndex, IndexPolicy
from labeler.db.database import Database
from labeler.db.vectors import Vectors

log = logging.getLogger(__name__)

Key = tuple[int, str]
READ_BATCH = 20_000


class VectorIndexes:
    """In-memory ANN indexes of one database's stored embeddings (thread-safe)."""

    def __init__(self, vectors: Vectors, directory: Path | None, *, policy: IndexPolicy = IndexPolicy(),
                 sync_interval_s: float = 1.0, sync_rows: int = 4096):
        self.vectors = vectors
        self.directory = directory
        self.policy = policy
        self.sync_interval_s = sync_interval_s
        self.sync_rows = sync_rows
        self._indexes: dict[Key, AnnIndex] = {}
        self._synced_at: dict[Key, float] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def in_data_dir(cls, db: Database, data_dir: Path, **options) -> "VectorIndexes":
        """Indexes saved under ``data_dir/vector-index/<hash of the database URL>``."""
        url = db.engine.url.render_as_string(hide_password=True)
        name = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(Vectors(db), Path(data_dir) / "vector-index" / name, **options)

    def path(self, key: Key) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"sae{key[0]}-{slugify(key[1])}.faiss"

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    # --- searching ----------------------------------------------------------------------------

    def search(self, sae_ids: list[int], model: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` stored explanations of these SAEs nearest to ``query`` (a unit vector):
        (explanation id, cosine), best first, equal cosines by id."""
        found: list[tuple[int, float]] = []
        for sae_id in sae_ids:
            key = (int(sae_id), model)
            with self._lock(key):
                index = self._ready(key)
                if index is None:
                    continue
                ids, sims = index.search(query, k)
            found += [(int(i), float(s)) for i, s in zip(ids, sims)]
        found.sort(key=lambda hit: (-hit[1], hit[0]))
        return found[:k]

    def _ready(self, key: Key) -> AnnIndex | None:
        now = time.monotonic()
        index = self._indexes.get(key)
        if index is None:  # not opened yet, or no vectors at the last look (finding none is cheap)
            self._synced_at[key] = now
            return self._open(key)
        if now - self._synced_at.get(key, -1e9) >= self.sync_interval_s:
            self._synced_at[key] = now
            index = self._catch_up(key, index, limit=self.sync_rows)
        return index

    # --- maintaining --------------------------------------------------------------------------

    def update(self, sae_id: int, model: str) -> AnnIndex | None:
        """Open the index, add every row written since it was saved, rebuild it if it has
        outgrown its kind, and save it (``labeler db embed``)."""
        key = (int(sae_id), model)
        with self._lock(key):
            index = self._indexes.get(key) or self._open(key)
            if index is not None:
                index = self._catch_up(key, index, limit=None)
                self._save(key, index)
            self._synced_at[key] = time.monotonic()
            return index

    def rebuild(self, sae_id: int, model: str) -> AnnIndex | None:
        """Build the index anew from the table and save it."""
        key = (int(sae_id), model)
        with self._lock(key):
            return self._build(key)

    def _open(self, key: Key) -> AnnIndex | None:
        path = self.path(key)
        index = AnnIndex.load(path) if path is not None else None
        if index is not None and not self._matches_table(key, index):
            log.info("index %s does not match the embedding table: rebuilding", path)
            index = None
        if index is None:
            return self._build(key)
        self._indexes[key] = index
        return self._catch_up(key, index, limit=None)

    def _matches_table(self, key: Key, index: AnnIndex) -> bool:
        state = index.state
        n, _ = self.vectors.extent(key[0], key[1], upto=state.watermark)
        return n == state.ntotal and (state.ntotal == 0 or self.vectors.id_at(state.watermark) == state.last_id)

    def _build(self, key: Key) -> AnnIndex | None:
        sae_id, model = key
        n, top = self.vectors.extent(sae_id, model)
        if n == 0:
            self._indexes.pop(key, None)
            return None
        started = time.perf_counter()
        first = self.vectors.rows_after(sae_id, model, 0, limit=1)
        dim = int(first.vectors.shape[1])
        if n <= self.policy.flat_max:
            index = AnnIndex.empty(dim)
        else:
            fraction = self.policy.train_per_cell * self.policy.n_cells(n) / n
            sample = self.vectors.sample(sae_id, model, fraction, top, dim)
            index = AnnIndex.trained(sample.vectors, n, self.policy)
        self._add_rows(key, index, upto=top, limit=None)
        self._indexes[key] = index
        self._save(key, index)
        log.info("built the %s index of SAE %d (%d vectors) in %.1f s", index.state.kind, sae_id, n,
                 time.perf_counter() - started)
        return index

    def _catch_up(self, key: Key, index: AnnIndex, *, limit: int | None) -> AnnIndex:
        self._add_rows(key, index, upto=None, limit=limit)
        if index.needs_rebuild(index.state.ntotal, self.policy):
            rebuilt = self._build(key)
            return rebuilt if rebuilt is not None else index
        return index

    def _add_rows(self, key: Key, index: AnnIndex, *, upto: int | None, limit: int | None) -> None:
        added = 0
        while limit is None or added < limit:
            take = READ_BATCH if limit is None else min(READ_BATCH, limit - added)
            batch = self.vectors.rows_after(key[0], key[1], index.state.watermark, limit=take, upto=upto,
                                            dim=index.state.dim)
            index.add(batch.ids, batch.vectors, batch.seqs)
            added += len(batch)
            if len(batch) < take:
                break

    def _save(self, key: Key, index: AnnIndex) -> None:
        path = self.path(key)
        if path is not None:
            index.save(path)
