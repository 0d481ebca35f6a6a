"""Search over explanation text: full text (PostgreSQL tsvector / SQLite FTS5) or semantic
(MiniLM sentence embeddings stored with each explanation, searched through an ANN index:
``labeler.db.vector_index``)."""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.catalog import T_MODEL, T_SAE
from labeler.db.database import Database
from labeler.db.keys import clean_text
from labeler.db.models import ExplanationRow, Feature
from labeler.db.vector_index import VectorIndexes
from labeler.db.vectors import Vectors
from labeler.db.views import SearchHit

T_FEATURE = Feature.__table__
T_EXP = ExplanationRow.__table__

MAX_QUERY_WORDS = 32
MAX_SEMANTIC_RESULTS = 10_000
# PostgreSQL full-text search (Search._text_postgres): candidates ranked, newest rows looked at,
# matches of a rarer query ranked
TEXT_CANDIDATES, TEXT_WINDOW, TEXT_RARE_CAP = 1_000, 50_000, 10_000


def _query_text(query: str) -> str:
    query = clean_text(query or "").strip()
    if not query:
        raise InputError("the search query is empty")
    return query


class Search:
    def __init__(self, db: Database):
        self.db = db
        self.vectors = Vectors(db)

    def text(self, query: str, *, sae_id: int | None = None, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """Full-text search over explanation text, best first (equal ranks newest first)."""
        query = _query_text(query)
        params: dict[str, Any] = {"q": query, "limit": limit, "offset": offset}
        sae_filter = ""
        if sae_id is not None:
            sae_filter = " AND e.sae_id = :sae_id"
            params["sae_id"] = sae_id
        if self.db.dialect == "postgresql":
            return self._text_postgres(params, sae_filter)
        words = re.findall(r"\w+", query, flags=re.UNICODE)[:MAX_QUERY_WORDS]
        if not words:
            return []
        params["q"] = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        sql = ("SELECT e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, "
               "-explanation_fts.rank AS rank FROM explanation_fts "
               "JOIN explanation e ON e.id = explanation_fts.rowid "
               "WHERE explanation_fts MATCH :q AND NOT e.failed" + sae_filter +
               " ORDER BY explanation_fts.rank, e.id DESC LIMIT :limit OFFSET :offset")
        with self.db.read_engine.connect() as c:
            return self._hits(c, c.execute(sa.text(sql), params).mappings().all())

    def _text_postgres(self, params: dict[str, Any], sae_filter: str) -> list[SearchHit]:
        """Rank a bounded candidate set.  A common word matches hundreds of thousands of labels
        and ranking all of them read every one (326 ms at a million), so:

        1. the newest TEXT_CANDIDATES matches among the newest TEXT_WINDOW explanations (an
           ordered index scan that stops as soon as it has them: a common word costs a few
           thousand rows);
        2. if there are fewer (a rarer query), every match through the GIN index, up to
           TEXT_RARE_CAP: a rare query's results are exact.

        Both steps touch a bounded number of rows whatever the query, and neither depends on
        the planner's guess of how many rows match (which is far off for correlated words)."""
        params["candidates"] = max(TEXT_CANDIDATES, params["offset"] + params["limit"])
        params["window"] = max(TEXT_WINDOW, params["candidates"])
        params["cap"] = max(TEXT_RARE_CAP, params["candidates"])
        columns = "e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, e.text_fts"
        newest = ("SELECT * FROM (SELECT " + columns + ", e.failed FROM explanation e WHERE true" + sae_filter +
                  " ORDER BY e.id DESC LIMIT :window) e "
                  "WHERE e.text_fts @@ websearch_to_tsquery('english', :q) AND NOT e.failed LIMIT :candidates")
        every = ("SELECT " + columns + " FROM explanation e WHERE e.text_fts @@ websearch_to_tsquery('english', :q) "
                 "AND NOT e.failed" + sae_filter + " LIMIT :cap")
        ranked = (") SELECT c.id, c.sae_id, c.feature_index, c.text, c.explainer, c.llm_model, "
                  "ts_rank(c.text_fts, websearch_to_tsquery('english', :q)) AS rank, "
                  "(SELECT count(*) FROM candidate) AS n_candidates "
                  "FROM candidate c ORDER BY rank DESC, c.id DESC LIMIT :limit OFFSET :offset")
        with self.db.read_engine.connect() as c:
            c.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))  # only start-up cost here
            rows = c.execute(sa.text("WITH candidate AS MATERIALIZED (" + newest + ranked), params).mappings().all()
            if not rows or rows[0]["n_candidates"] < params["candidates"]:
                # the GIN index alone: a plan that reads every match, never a scan that hunts for them
                c.execute(sa.text("SELECT set_config('enable_seqscan', 'off', true), "
                                  "set_config('enable_indexscan', 'off', true)"))
                rows = c.execute(sa.text("WITH candidate AS MATERIALIZED (" + every + ranked), params).mappings().all()
        with self.db.read_engine.connect() as c:  # a fresh transaction: the settings above were for one query
            return self._hits(c, rows)

    def _hits(self, c: sa.Connection, rows: Sequence[Any]) -> list[SearchHit]:
        if not rows:
            return []
        slugs = {r.id: r for r in c.execute(
            sa.select(T_SAE.c.id, T_SAE.c.slug, T_MODEL.c.slug.label("model_slug"))
            .join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id).where(T_SAE.c.id.in_({r["sae_id"] for r in rows})))}
        features = {(r["sae_id"], r["feature_index"]) for r in rows}  # by the (sae_id, index) key: indexed
        label_ids = set(c.execute(sa.select(T_FEATURE.c.label_explanation_id).where(
            sa.tuple_(T_FEATURE.c.sae_id, T_FEATURE.c.index).in_(list(features)))).scalars())
        return [SearchHit(explanation_id=r["id"], model=slugs[r["sae_id"]].model_slug, sae=slugs[r["sae_id"]].slug,
                          index=r["feature_index"], text=r["text"], explainer=r["explainer"],
                          llm_model=r["llm_model"], is_label=r["id"] in label_ids,
                          score=float(r["rank"]) if r["rank"] is not None else None) for r in rows]

    # --- semantic ---------------------------------------------------------------------------

    def embed_missing(self, embedder: Any, *, sae_id: int | None = None, max_rows: int | None = None) -> int:
        """Embed every finished explanation that has no embedding yet (``labeler db embed``)."""
        return self.vectors.embed_missing(embedder, sae_id=sae_id, max_rows=max_rows)

    def embed_features(self, embedder: Any, sae_id: int, features: Iterable[int]) -> int:
        """Embed these features' new explanations (right after they are saved)."""
        return self.vectors.embed_features(embedder, sae_id, features)

    def semantic(self, query: str, embedder: Any, indexes: VectorIndexes, *, sae_id: int | None = None,
                 limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """Explanations nearest to the query's embedding (cosine similarity), best first, from
        the ANN ``indexes`` of the stored embeddings.  Explanations not embedded yet (see
        ``embed_missing``) are not found; nothing is embedded here but the query."""
        query = _query_text(query)
        if offset + limit > MAX_SEMANTIC_RESULTS:
            raise InputError(f"semantic search returns the {MAX_SEMANTIC_RESULTS} nearest explanations at most "
                             f"(offset + limit = {offset + limit})")
        with self.db.read_engine.connect() as c:
            sae_ids = [sae_id] if sae_id is not None else list(c.execute(sa.select(T_SAE.c.id)).scalars())
        nearest = indexes.search(sae_ids, embedder.name, embedder.embed([query])[0], offset + limit)
        picked = dict(nearest[offset:offset + limit])
        if not picked:
            return []
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.select(T_EXP.c.id, T_EXP.c.sae_id, T_EXP.c.feature_index, T_EXP.c.text,
                                       T_EXP.c.explainer, T_EXP.c.llm_model)
                             .where(T_EXP.c.id.in_(list(picked)))).mappings().all()
            rows = sorted(({**r, "rank": picked[r["id"]]} for r in rows), key=lambda r: (-r["rank"], r["id"]))
            return self._hits(c, rows)
