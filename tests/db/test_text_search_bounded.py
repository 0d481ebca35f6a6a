"""PostgreSQL full-text search ranks a bounded candidate set: the newest matches when a query
is common, every match (exactly ranked) when it is rare.  The bounds are shrunk here so a few
dozen rows exercise both paths."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from labeler.db import search as search_module
from labeler.records import Explanation


def exp(feature: int, text: str) -> Explanation:
    return Explanation(feature=feature, text=text, explainer="highlighted", llm_model="gpt-x",
                       prompt_name="explain_highlighted", prompt_version="v1", prompt_hash="abc")


@pytest.fixture
def pg(postgres_url, monkeypatch):
    from labeler.db import Repository

    monkeypatch.setattr(search_module, "TEXT_CANDIDATES", 5)
    monkeypatch.setattr(search_module, "TEXT_WINDOW", 20)
    monkeypatch.setattr(search_module, "TEXT_EXACT_MAX", 12)
    repo = Repository.open(postgres_url)
    yield repo
    repo.close()


def full_ranking(repo, query: str, sae_id: int) -> list[int]:
    """Every match ranked: what the bounded search must equal for a rare query."""
    with repo.db.engine.connect() as c:
        return c.execute(sa.text(
            "SELECT id FROM explanation e, websearch_to_tsquery('english', :q) q WHERE e.text_fts @@ q "
            "AND NOT e.failed AND e.sae_id = :s ORDER BY ts_rank(e.text_fts, q) DESC, e.id DESC"),
            {"q": query, "s": sae_id}).scalars().all()


def test_common_query_ranks_the_newest_matches(pg):
    sae_id = pg.catalog.ensure_sae("m", "s", n_features=100)
    other = pg.catalog.ensure_sae("m", "other", n_features=100)
    oldest = pg.results.save_explanation(sae_id, exp(0, "bridges, bridges and more bridges"))  # best rank, oldest
    ids = [pg.results.save_explanation(sae_id, exp(i, f"bridges over water {i}")) for i in range(1, 31)]
    for i in range(40):  # newer rows of another SAE never crowd one SAE's window
        pg.results.save_explanation(other, exp(i, f"bridges elsewhere {i}"))

    hits = pg.search.text("bridges", sae_id=sae_id, limit=3)
    assert [h.explanation_id for h in hits] == ids[::-1][:3]  # equal ranks: newest first
    assert oldest not in [h.explanation_id for h in pg.search.text("bridges", sae_id=sae_id, limit=5)]
    assert full_ranking(pg, "bridges", sae_id)[0] == oldest  # what an unbounded ranking would put first

    # a page past the candidate bound widens the candidates: pages stay consistent
    first = [h.explanation_id for h in pg.search.text("bridges", sae_id=sae_id, limit=4)]
    second = [h.explanation_id for h in pg.search.text("bridges", sae_id=sae_id, limit=4, offset=4)]
    assert len(set(first + second)) == 8 and first + second == ids[::-1][:8]


def test_rare_query_ranks_every_match_exactly(pg):
    sae_id = pg.catalog.ensure_sae("m", "s", n_features=100)
    pg.results.save_explanation(sae_id, exp(0, "zebra crossings"))
    pg.results.save_explanation(sae_id, exp(1, "zebra zebra stripes"))
    for i in range(2, 60):  # pushes the zebras out of the newest window
        pg.results.save_explanation(sae_id, exp(i, f"ordinary text {i}"))
    pg.results.save_explanation(sae_id, exp(60, "a zebra"))
    got = [h.explanation_id for h in pg.search.text("zebra", sae_id=sae_id)]
    assert got == full_ranking(pg, "zebra", sae_id) and len(got) == 3
    assert [h.index for h in pg.search.text("zebra")][:1] == [1]  # across SAEs too; tf 2 ranks first


def test_uncommon_query_with_many_old_matches_is_capped(pg):
    sae_id = pg.catalog.ensure_sae("m", "s", n_features=100)
    ids = [pg.results.save_explanation(sae_id, exp(i, f"river delta {i}")) for i in range(30)]
    for i in range(30, 60):
        pg.results.save_explanation(sae_id, exp(i, f"ordinary text {i}"))
    hits = pg.search.text("river", sae_id=sae_id, limit=10)
    # none in the newest 20 rows, and more than TEXT_EXACT_MAX (12) matches: the first 13 the
    # GIN index yields (in table order) are ranked, not all 30
    assert [h.explanation_id for h in hits] == ids[:13][::-1][:10]


def test_middling_query_ranks_the_newest_matches_in_one_step(pg):
    """Too many matches to rank them all, too few in the window to fill the candidates: the
    newest matches are the answer either way, so the step over every match is not run."""
    sae_id = pg.catalog.ensure_sae("m", "s", n_features=200)
    ids = []
    for i in range(120):  # every 5th row a river: 24 matches (> TEXT_EXACT_MAX), 4 in the newest 20
        text = f"river delta {i}" if i % 5 == 0 else f"ordinary text {i}"
        ids.append((pg.results.save_explanation(sae_id, exp(i, text)), text))
    with pg.db.engine.begin() as c:
        c.execute(sa.text("ANALYZE explanation"))
    statements: list[str] = []
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    sa.event.listen(pg.db.read_engine, "before_cursor_execute", listen)
    try:
        hits = pg.search.text("river", sae_id=sae_id, limit=3)
    finally:
        sa.event.remove(pg.db.read_engine, "before_cursor_execute", listen)
    rivers = [i for i, text in ids if text.startswith("river")]
    assert [h.explanation_id for h in hits] == rivers[::-1][:3]  # the newest matches (equal ranks)
    ranked = [s for s in statements if "ts_rank" in s]
    assert len(ranked) == 1 and "ORDER BY e.id DESC LIMIT" in ranked[0]  # the newest step alone
