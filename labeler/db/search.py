"""Search over explanation text: full text (PostgreSQL tsvector / SQLite FTS5) or semantic
(MiniLM sentence embeddings, computed lazily and stored with the explanation)."""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.catalog import T_SAE, sae_select
from labeler.db.database import Database
from labeler.db.keys import clean_text
from labeler.db.models import ExplanationEmbedding, ExplanationRow, Feature
from labeler.db.views import SearchHit

T_FEATURE = Feature.__table__
T_EXP = ExplanationRow.__table__
T_EMB = ExplanationEmbedding.__table__

MAX_QUERY_WORDS = 32


def _query_text(query: str) -> str:
    query = clean_text(query or "").strip()
    if not query:
        raise InputError("the search query is empty")
    return query


class Search:
    def __init__(self, db: Database):
        self.db = db

    def text(self, query: str, *, sae_id: int | None = None, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """Full-text search over explanation text, best first."""
        query = _query_text(query)
        params: dict[str, Any] = {"q": query, "limit": limit, "offset": offset}
        sae_filter = ""
        if sae_id is not None:
            sae_filter = " AND e.sae_id = :sae_id"
            params["sae_id"] = sae_id
        if self.db.dialect == "postgresql":
            sql = ("SELECT e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, "
                   "ts_rank(e.text_fts, q) AS rank "  # stored tsvector (migration 0002)
                   "FROM explanation e, websearch_to_tsquery('english', :q) q "
                   "WHERE e.text_fts @@ q AND NOT e.failed" + sae_filter +
                   " ORDER BY rank DESC, e.id LIMIT :limit OFFSET :offset")
        else:
            words = re.findall(r"\w+", query, flags=re.UNICODE)[:MAX_QUERY_WORDS]
            if not words:
                return []
            params["q"] = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            sql = ("SELECT e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, "
                   "-explanation_fts.rank AS rank FROM explanation_fts "
                   "JOIN explanation e ON e.id = explanation_fts.rowid "
                   "WHERE explanation_fts MATCH :q AND NOT e.failed" + sae_filter +
                   " ORDER BY explanation_fts.rank, e.id LIMIT :limit OFFSET :offset")
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.text(sql), params).mappings().all()
            return self._hits(c, rows)

    def _hits(self, c: sa.Connection, rows: Sequence[Any]) -> list[SearchHit]:
        if not rows:
            return []
        saes = {r["id"]: r for r in c.execute(sae_select().where(T_SAE.c.id.in_({r["sae_id"] for r in rows})))
                .mappings()}
        label_ids = {r[0] for r in c.execute(sa.select(T_FEATURE.c.label_explanation_id)
                                             .where(T_FEATURE.c.label_explanation_id.in_([r["id"] for r in rows])))}
        return [SearchHit(explanation_id=r["id"], model=saes[r["sae_id"]]["model_slug"],
                          sae=saes[r["sae_id"]]["slug"], index=r["feature_index"], text=r["text"],
                          explainer=r["explainer"], llm_model=r["llm_model"], is_label=r["id"] in label_ids,
                          score=float(r["rank"]) if r["rank"] is not None else None) for r in rows]

    def embed_missing(self, embedder: Any, *, sae_id: int | None = None, max_rows: int = 20_000,
                      batch_size: int = 256) -> int:
        """Compute and store sentence embeddings for explanations that have none yet."""
        q = (sa.select(T_EXP.c.id, T_EXP.c.text).outerjoin(T_EMB, T_EMB.c.explanation_id == T_EXP.c.id)
             .where(T_EMB.c.explanation_id.is_(None), T_EXP.c.failed == sa.false(), T_EXP.c.text != "")
             .order_by(T_EXP.c.id).limit(max_rows))
        if sae_id is not None:
            q = q.where(T_EXP.c.sae_id == sae_id)
        with self.db.read_engine.connect() as c:
            todo = c.execute(q).all()
        done = 0
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            vectors = embedder.embed([t for _, t in chunk])
            rows = [dict(explanation_id=i, model=embedder.name, dim=int(v.shape[0]), vector=v.tobytes())
                    for (i, _), v in zip(chunk, vectors)]
            with self.db.engine.begin() as c:
                c.execute(self.db.insert(T_EMB).on_conflict_do_nothing(index_elements=["explanation_id"]), rows)
            done += len(rows)
        return done

    def semantic(self, query: str, embedder: Any, *, sae_id: int | None = None, limit: int = 20,
                 offset: int = 0) -> list[SearchHit]:
        """Cosine similarity between the query's embedding and explanation embeddings, best first."""
        query = _query_text(query)
        self.embed_missing(embedder, sae_id=sae_id)
        q = (sa.select(T_EMB.c.explanation_id, T_EMB.c.vector).join(T_EXP, T_EXP.c.id == T_EMB.c.explanation_id)
             .where(T_EMB.c.model == embedder.name))
        if sae_id is not None:
            q = q.where(T_EXP.c.sae_id == sae_id)
        with self.db.read_engine.connect() as c:
            stored = c.execute(q).all()
            if not stored:
                return []
            ids = np.array([r[0] for r in stored])
            matrix = np.frombuffer(b"".join(r[1] for r in stored), dtype=np.float32).reshape(len(stored), -1)
            sims = matrix @ embedder.embed([query])[0]
            order = np.lexsort((ids, -sims))[offset:offset + limit]
            picked = {int(ids[i]): float(sims[i]) for i in order}
            rows = c.execute(sa.select(T_EXP.c.id, T_EXP.c.sae_id, T_EXP.c.feature_index, T_EXP.c.text,
                                       T_EXP.c.explainer, T_EXP.c.llm_model)
                             .where(T_EXP.c.id.in_(list(picked)))).mappings().all()
            rows = sorted(({**r, "rank": picked[r["id"]]} for r in rows), key=lambda r: (-r["rank"], r["id"]))
            return self._hits(c, rows)
