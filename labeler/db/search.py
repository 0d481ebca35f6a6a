"""Search over explanation text: full text (PostgreSQL tsvector / SQLite FTS5) or semantic
(MiniLM sentence embeddings stored with each explanation, searched through an ANN index:
``labeler.db.vector_index``)."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.catalog import T_SAE
from labeler.db.database import Database
from labeler.db.keys import clean_text
from labeler.db.vector_index import VectorIndexes
from labeler.db.vectors import Vectors
from labeler.db.views import SearchHit

MAX_QUERY_WORDS = 32
MAX_SEMANTIC_RESULTS = 10_000
# PostgreSQL full-text search (Search._text_postgres): candidates ranked for a common query,
# newest explanations it looks at, matches up to which a rarer query is ranked exactly.  At a
# million rows the window costs ~16 ms and ranking every match ~1 ms per 250: an exact bound of
# 5,000 put queries just past it (both steps) at 30 ms and p99 at 34 ms; 2,500 gives 25 ms with
# the same share of the unbounded top 20 (0.77)
TEXT_CANDIDATES, TEXT_WINDOW, TEXT_EXACT_MAX = 1_000, 50_000, 2_500

# A hit's explanation with its SAE's and model's slugs and whether it is the feature's label:
# one query, by primary and unique keys only.
HIT_COLUMNS = ("e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, s.slug AS sae_slug, "
               "m.slug AS model_slug, coalesce(f.label_explanation_id = e.id, false) AS is_label")
HIT_JOINS = ("JOIN sae s ON s.id = e.sae_id JOIN subject_model m ON m.id = s.model_id "
             'LEFT JOIN feature f ON f.sae_id = e.sae_id AND f."index" = e.feature_index')


def _query_text(query: str) -> str:
    query = clean_text(query or "").strip()
    if not query:
        raise InputError("the search query is empty")
    return query


def _hit(r: Mapping[str, Any], score: float | None) -> SearchHit:
    return SearchHit(explanation_id=r["id"], model=r["model_slug"], sae=r["sae_slug"], index=r["feature_index"],
                     text=r["text"], explainer=r["explainer"], llm_model=r["llm_model"],
                     is_label=bool(r["is_label"]), score=score)


def _hits_for(c: sa.Connection, ranked: Sequence[tuple[int, float]]) -> list[SearchHit]:
    """Hits for (explanation id, score) pairs, in their order (ids no longer stored are left out)."""
    if not ranked:
        return []
    q = sa.text(f"SELECT {HIT_COLUMNS} FROM explanation e {HIT_JOINS} WHERE e.id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True))
    rows = {r["id"]: r for r in c.execute(q, {"ids": [int(i) for i, _ in ranked]}).mappings()}
    return [_hit(rows[i], score) for i, score in ranked if i in rows]


def _planned_rows(c: sa.Connection, sql: str, params: dict[str, Any]) -> float:
    """The planner's estimate of the rows ``sql`` returns (no rows are read)."""
    return c.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar()[0]["Plan"]["Plan Rows"]


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
        sql = ("SELECT e.id, -explanation_fts.rank AS rank FROM explanation_fts "
               "JOIN explanation e ON e.id = explanation_fts.rowid "
               "WHERE explanation_fts MATCH :q AND NOT e.failed" + sae_filter +
               " ORDER BY explanation_fts.rank, e.id DESC LIMIT :limit OFFSET :offset")
        with self.db.read_engine.connect() as c:
            return _hits_for(c, [(r.id, float(r.rank)) for r in c.execute(sa.text(sql), params)])

    def _text_postgres(self, params: dict[str, Any], sae_filter: str) -> list[SearchHit]:
        """Rank a bounded candidate set.  A common word matches hundreds of thousands of labels
        and ranking all of them read every one (326 ms at a million).  Two bounded steps:

        - *every match*, through the GIN index alone, when there are at most TEXT_EXACT_MAX:
          all are ranked, so a rarer query's results are exact;
        - *the newest matches*: the newest TEXT_CANDIDATES among the newest TEXT_WINDOW
          explanations, an ordered scan that stops as soon as it has them (a common word
          costs a few thousand rows).

        The planner's estimate of the matches only decides which step runs first: a wrong
        guess (correlated words are common) costs the other step, which is bounded too.  When
        neither is complete, the newest matches are ranked if there are enough for the page,
        else the first TEXT_EXACT_MAX matches found.  So a query of middling frequency (too
        many matches to rank all, too few in the window to fill the candidates) would run
        both steps and use only the first: when the newest matches fill the page and their
        share of the window, scaled to the whole table, is well past TEXT_EXACT_MAX, the
        second step is skipped (at a million rows this took such queries from two steps,
        about 31 ms, to one, about 18 ms)."""
        needed = params["offset"] + params["limit"]
        params["candidates"] = max(TEXT_CANDIDATES, needed)
        params["window"] = max(TEXT_WINDOW, params["candidates"])
        params["exact_max"] = max(TEXT_EXACT_MAX, params["candidates"])
        match = "e.text_fts @@ websearch_to_tsquery('english', :q) AND NOT e.failed"
        columns = "e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, e.text_fts"
        steps = {
            "every": f"SELECT {columns} FROM explanation e WHERE {match}{sae_filter} LIMIT :exact_max + 1",
            "newest": (f"SELECT * FROM (SELECT {columns}, e.failed FROM explanation e WHERE true{sae_filter} "
                       f"ORDER BY e.id DESC LIMIT :window) e WHERE {match} LIMIT :candidates"),
        }
        with self.db.read_engine.connect() as c:
            rare = _planned_rows(c, f"SELECT 1 FROM explanation e WHERE {match}{sae_filter}", params) \
                <= params["exact_max"]
            found: dict[str, tuple[list[SearchHit], int]] = {}
            for step in ("every", "newest") if rare else ("newest", "every"):
                # "every" reads the GIN index and nothing else: never a scan that hunts for matches
                off = "off" if step == "every" else "on"
                # (a disabled plan type's cost penalty would trigger JIT compilation: ~0.4 s)
                c.execute(sa.text(f"SELECT set_config('enable_seqscan', '{off}', true), "
                                  f"set_config('enable_indexscan', '{off}', true), set_config('jit', 'off', true), "
                                  "set_config('max_parallel_workers_per_gather', '0', true)"))
                found[step] = self._ranked(c, steps[step], params)
                n = found[step][1]
                if (step == "every" and n <= params["exact_max"]) or (step == "newest" and n >= params["candidates"]):
                    return found[step][0]
                if step == "newest" and n >= needed and not rare:
                    # enough for the page, and the window's share of matches says that "every"
                    # would stop incomplete too (its result would not be used): skip it.  A
                    # quarter's margin: near the bound a million rows' window holds ~125
                    # matches, whose sampling error is ~9 %, so a query that "every" would rank
                    # exactly nearly always keeps it
                    rows = _planned_rows(c, f"SELECT 1 FROM explanation e WHERE NOT e.failed{sae_filter}", params)
                    if n * rows / params["window"] > 1.25 * params["exact_max"]:
                        return found[step][0]
        return found["newest"][0] if found["newest"][1] >= needed else found["every"][0]

    @staticmethod
    def _ranked(c: sa.Connection, candidates: str, params: dict[str, Any]) -> tuple[list[SearchHit], int]:
        """The page of ``candidates`` ranked by ts_rank (equal ranks newest first), and how many candidates there were."""
        page = ("SELECT c.*, ts_rank(c.text_fts, websearch_to_tsquery('english', :q)) AS rank FROM candidate c "
                "ORDER BY rank DESC, c.id DESC LIMIT :limit OFFSET :offset")
        sql = (f"WITH candidate AS MATERIALIZED ({candidates}) "
               f"SELECT n.n, {HIT_COLUMNS}, e.rank FROM (SELECT count(*) AS n FROM candidate) n "
               f"LEFT JOIN (({page}) e {HIT_JOINS}) ON true ORDER BY e.rank DESC, e.id DESC")
        rows = c.execute(sa.text(sql), params).mappings().all()
        hits = [_hit(r, float(r["rank"])) for r in rows if r["id"] is not None]
        return hits, int(rows[0]["n"])

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
        with self.db.read_engine.connect() as c:
            return _hits_for(c, nearest[offset:offset + limit])
