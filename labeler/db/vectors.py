"""Stored sentence embeddings of explanation text (``explanation_embedding``).

Written by ``labeler db embed`` (every finished explanation without one) or for given
features right after their explanations are saved (``embed_features``); never while answering
a search.  Each row gets a sequence number ``seq``, increasing in commit order: writers take
one lock (PostgreSQL: an advisory transaction lock; SQLite serialises writers anyway), read the
largest ``seq`` and number their rows after it.  So an index that has added everything up to
``seq`` N catches up exactly with ``rows_after(N)``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import sqlalchemy as sa

from labeler.db.database import Database
from labeler.db.models import ExplanationEmbedding, ExplanationRow

T_EXP = ExplanationRow.__table__
T_EMB = ExplanationEmbedding.__table__
WRITE_LOCK_KEY = 0x6C61_6265_6C76  # pg_advisory_xact_lock key of embedding writers ("labelv")
EMBED_BATCH = 256


class VectorBatch:
    """Rows of the embedding table in ``seq`` order: ids, sequence numbers and a [n, dim] matrix."""

    def __init__(self, ids: np.ndarray, seqs: np.ndarray, vectors: np.ndarray):
        self.ids, self.seqs, self.vectors = ids, seqs, vectors

    def __len__(self) -> int:
        return len(self.ids)


def _batch(rows: Sequence[Any], dim: int) -> VectorBatch:
    if not rows:
        return VectorBatch(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    seqs = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return VectorBatch(ids, seqs, matrix)


class Vectors:
    def __init__(self, db: Database):
        self.db = db

    # --- writing ------------------------------------------------------------------------------

    def embed_missing(self, embedder: Any, *, sae_id: int | None = None, max_rows: int | None = None,
                      batch_size: int = EMBED_BATCH) -> int:
        """Embed and store every finished explanation that has no embedding yet (oldest first,
        in batches: an interrupted run keeps what it wrote and the next one goes on)."""
        done, last = 0, 0
        while max_rows is None or done < max_rows:
            take = batch_size if max_rows is None else min(batch_size, max_rows - done)
            q = (sa.select(T_EXP.c.id, T_EXP.c.sae_id, T_EXP.c.text)
                 .where(T_EXP.c.id > last, T_EXP.c.failed == sa.false(), T_EXP.c.text != "",
                        ~sa.exists().where(T_EMB.c.explanation_id == T_EXP.c.id))
                 .order_by(T_EXP.c.id).limit(take))
            if sae_id is not None:
                q = q.where(T_EXP.c.sae_id == sae_id)
            with self.db.read_engine.connect() as c:
                todo = c.execute(q).all()
            if not todo:
                break
            done += self._embed(embedder, todo)
            last = todo[-1].id
        return done

    def embed_features(self, embedder: Any, sae_id: int, features: Iterable[int]) -> int:
        """Embed the finished explanations of these features that have none yet (after a chunk of a job)."""
        features = sorted({int(f) for f in features})
        if not features:
            return 0
        with self.db.read_engine.connect() as c:
            todo = c.execute(sa.select(T_EXP.c.id, T_EXP.c.sae_id, T_EXP.c.text).where(
                T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index.in_(features), T_EXP.c.failed == sa.false(),
                T_EXP.c.text != "", ~sa.exists().where(T_EMB.c.explanation_id == T_EXP.c.id))
                .order_by(T_EXP.c.id)).all()
        return sum(self._embed(embedder, todo[i:i + EMBED_BATCH]) for i in range(0, len(todo), EMBED_BATCH))

    def _embed(self, embedder: Any, rows: Sequence[Any]) -> int:
        vectors = embedder.embed([r.text for r in rows])
        return self.write(embedder.name, [(r.id, r.sae_id, v) for r, v in zip(rows, vectors)])

    def write(self, model: str, rows: Sequence[tuple[int, int, np.ndarray]]) -> int:
        """Store (explanation id, SAE id, unit vector) rows; an explanation that already has an
        embedding keeps it.  Returns the rows offered."""
        if not rows:
            return 0
        with self.db.engine.begin() as c:
            if self.db.dialect == "postgresql":
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})
            base = c.execute(sa.select(sa.func.coalesce(sa.func.max(T_EMB.c.seq), 0))).scalar_one()
            values = [dict(explanation_id=int(i), sae_id=int(s), seq=base + n + 1, model=model,
                           dim=int(v.shape[0]), vector=np.asarray(v, dtype=np.float32).tobytes())
                      for n, (i, s, v) in enumerate(rows)]
            c.execute(self.db.insert(T_EMB).on_conflict_do_nothing(index_elements=["explanation_id"]), values)
        return len(rows)

    # --- reading (for the index) ---------------------------------------------------------------

    def extent(self, sae_id: int, model: str, upto: int | None = None) -> tuple[int, int]:
        """(rows, largest seq) of one SAE's embeddings by ``model`` (up to seq ``upto``)."""
        q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(T_EMB.c.seq), 0)).where(
            T_EMB.c.sae_id == sae_id, T_EMB.c.model == model)
        if upto is not None:
            q = q.where(T_EMB.c.seq <= upto)
        with self.db.read_engine.connect() as c:
            n, top = c.execute(q).one()
        return int(n), int(top)

    def id_at(self, seq: int) -> int | None:
        with self.db.read_engine.connect() as c:
            return c.execute(sa.select(T_EMB.c.explanation_id).where(T_EMB.c.seq == seq)).scalar_one_or_none()

    def rows_after(self, sae_id: int, model: str, after: int, *, limit: int, upto: int | None = None,
                   dim: int = 0) -> VectorBatch:
        """Up to ``limit`` rows with ``after < seq (<= upto)``, in seq order."""
        q = (sa.select(T_EMB.c.explanation_id, T_EMB.c.seq, T_EMB.c.vector)
             .where(T_EMB.c.sae_id == sae_id, T_EMB.c.model == model, T_EMB.c.seq > after)
             .order_by(T_EMB.c.seq).limit(limit))
        if upto is not None:
            q = q.where(T_EMB.c.seq <= upto)
        with self.db.read_engine.connect() as c:
            return _batch(c.execute(q).all(), dim)

    def sample(self, sae_id: int, model: str, fraction: float, upto: int, dim: int) -> VectorBatch:
        """About ``fraction`` of the rows up to seq ``upto``, spread over the whole range (a
        training sample for the index's cells): seq times an odd constant, modulo 2**16, below
        a cut.  Odd multipliers permute the residues, so an SAE whose rows interleave with
        another's is still sampled evenly."""
        cut = max(1, int(round(min(fraction, 1.0) * 65_536)))
        q = (sa.select(T_EMB.c.explanation_id, T_EMB.c.seq, T_EMB.c.vector)
             .where(T_EMB.c.sae_id == sae_id, T_EMB.c.model == model, T_EMB.c.seq <= upto,
                    ((T_EMB.c.seq * 40_503) % 65_536) < cut))
        with self.db.read_engine.connect() as c:
            return _batch(c.execute(q).all(), dim)
