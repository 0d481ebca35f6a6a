"""An approximate nearest-neighbour index over unit vectors (FAISS), keyed by explanation id.

Small collections are searched exactly (a flat inner-product index).  Past
``IndexPolicy.flat_max`` vectors the index becomes an inverted file with 8-bit scalar
quantisation (IVF-SQ8): k-means cells (about sqrt(n) of them) trained on a sample, each
vector stored in 1 byte per dimension (a million MiniLM vectors: ~400 MB instead of 1.5 GB),
and a search visits ``nprobe`` cells instead of every vector.  Both kinds take new vectors
at any time (``add``), so the index follows the table incrementally; ``needs_rebuild`` says
when the collection has outgrown what the cells were trained on.

Scores are inner products of unit vectors, i.e. cosine similarities (the IVF-SQ8 ones within
about 0.01 of the exact value).  Pure: no database here (``labeler.db.vector_index`` feeds it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from labeler.core.errors import InputError


@dataclass(frozen=True)
class IndexPolicy:
    """When to switch from exact to approximate search, and how to build the approximate index."""

    flat_max: int = 50_000
    """Collections up to this size are searched exactly (a flat scan of 50k vectors takes a few ms)."""
    train_per_cell: int = 64
    """Training sample size per k-means cell (FAISS warns below 39)."""
    probe_fraction: float = 1 / 32
    """Share of the cells a search visits (recall against speed)."""
    min_probe: int = 16
    """Cells visited at least."""
    regrow: float = 4.0
    """Retrain once the collection is this many times the size the cells were trained on."""
    seed: int = 0
    """Seed of the training sample and of k-means."""

    def n_cells(self, n: int) -> int:
        return int(min(65_536, max(64, 2 ** round(math.log2(max(math.sqrt(n), 1))))))

    def n_probe(self, n_cells: int) -> int:
        return int(min(n_cells, max(self.min_probe, round(n_cells * self.probe_fraction))))


@dataclass
class IndexState:
    """What the index holds, saved next to it: enough to tell whether it still matches the table."""

    dim: int
    """Vector dimension."""
    kind: str
    """``flat`` (exact) or ``ivf`` (IVF-SQ8)."""
    ntotal: int = 0
    """Vectors added."""
    trained_on: int = 0
    """Collection size when the IVF cells were trained (0 for flat)."""
    watermark: int = 0
    """Highest table sequence number (``explanation_embedding.seq``) added."""
    last_id: int = -1
    """Explanation id of the vector with that sequence number (a check against another database)."""


class AnnIndex:
    """A FAISS index of unit vectors with int64 ids, plus its ``IndexState``."""

    def __init__(self, index: faiss.Index, state: IndexState):
        self.index = index
        self.state = state

    @classmethod
    def empty(cls, dim: int) -> "AnnIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), IndexState(dim=dim, kind="flat"))

    @classmethod
    def trained(cls, sample: np.ndarray, n_expected: int, policy: IndexPolicy) -> "AnnIndex":
        """An empty IVF-SQ8 index whose cells are trained on ``sample`` (rows of the collection)."""
        dim = int(sample.shape[1])
        n_cells = min(policy.n_cells(n_expected), max(1, len(sample) // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, n_cells, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = policy.seed
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.nprobe = policy.n_probe(n_cells)
        return cls(index, IndexState(dim=dim, kind="ivf", trained_on=int(n_expected)))

    def add(self, ids: np.ndarray, vectors: np.ndarray, seqs: np.ndarray) -> None:
        """Add vectors (rows, unit norm) under their explanation ids; ``seqs`` their table sequence numbers."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.state.dim:
            raise InputError(f"vectors of dimension {vectors.shape[-1]} do not fit an index of dimension "
                             f"{self.state.dim}")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self.state.ntotal = int(self.index.ntotal)
        top = int(np.argmax(seqs))
        if int(seqs[top]) > self.state.watermark:
            self.state.watermark, self.state.last_id = int(seqs[top]), int(ids[top])

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of up to ``k`` nearest vectors, best first."""
        k = min(int(k), int(self.index.ntotal))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # One query on this thread only (an OpenMP setting of the calling thread): on a busy
        # machine two threads made a 50k flat scan 8x slower.  Builds elsewhere keep theirs.
        faiss.omp_set_num_threads(1)
        sims, ids = self.index.search(np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), k)
        keep = ids[0] >= 0
        return ids[0][keep], sims[0][keep]

    def needs_rebuild(self, n: int, policy: IndexPolicy) -> bool:
        """True when a collection of ``n`` vectors wants a different index than this one."""
        if self.state.kind == "flat":
            return n > policy.flat_max
        return n > policy.regrow * max(self.state.trained_on, 1)

    def save(self, path: Path) -> None:
        """``path`` (the FAISS index) and ``path.json`` (its state), each replaced atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        faiss.write_index(self.index, str(tmp))
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, path)
        os.replace(meta_tmp, path.with_name(path.name + ".json"))

    @classmethod
    def load(cls, path: Path) -> "AnnIndex | None":
        """The index saved at ``path``, or None when there is none or it cannot be read."""
        meta = path.with_name(path.name + ".json")
        if not path.exists() or not meta.exists():
            return None
        try:
            state = IndexState(**json.loads(meta.read_text()))
            index = faiss.read_index(str(path))
        except Exception:  # a half-written or foreign file: the caller rebuilds from the table
            return None
        if int(index.ntotal) != state.ntotal or int(index.d) != state.dim:
            return None
        return cls(index, state)
