"""Repository: registration, idempotent writes, the label rule, failures, jobs, listing, search."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.records import Explanation, LLMUsage, ScoreResult


def exp(feature=1, text="rivers and bridges", explainer="highlighted", **kw) -> Explanation:
    return Explanation(feature=feature, text=text, explainer=explainer, llm_model=kw.pop("llm_model", "gpt-x"),
                       prompt_name="explain_highlighted", prompt_version=kw.pop("prompt_version", "v1"),
                       prompt_hash="abc", **kw)


def count(repo, table: str) -> int:
    with repo.db.engine.connect() as c:
        return c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_register_store_is_idempotent(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    assert repo.catalog.register_store(duck_store) == sae_id
    assert count(repo, "feature") == duck_store.n_features
    assert count(repo, "sae") == 1 and count(repo, "subject_model") == 1
    assert repo.catalog.sae_id_for("org--tiny-model", "res-0") == sae_id
    assert repo.catalog.sae_id_for("org--tiny-model", "nope") is None
    view = repo.reads.feature(sae_id, 3)
    assert view.stats["count"] == 30
    assert view.stats["max"] == pytest.approx(4.0)
    assert view.stats["hist_counts"] == [3, 1]  # full statistics from the records
    assert view.label is None and view.explanations == []
    assert repo.reads.feature(sae_id, 99) is None
    info = repo.catalog.sae(sae_id)
    assert info.hook == "h.0" and info.format == "saelens" and info.n_features == 8
    assert info.store_path == duck_store.path


def test_register_store_rejects_mismatched_stats(repo, duck_store):
    arrays = duck_store.all_stats()
    duck_store.n_features = 9  # the statistics still have 8 entries
    duck_store.all_stats = lambda: arrays
    with pytest.raises(InputError, match="8 entries"):
        repo.catalog.register_store(duck_store, full_stats=False)


def test_explanation_writes_are_idempotent_and_side_by_side(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    e = exp(usage=LLMUsage(calls=1, prompt_tokens=100, completion_tokens=10, cost_usd=0.01))
    first = repo.results.save_explanation(sae_id, e)
    for _ in range(3):  # retries
        assert repo.results.save_explanation(sae_id, e) == first
    assert repo.results.stored_explanation(sae_id, e) == (first, "rivers and bridges", [])
    # usage is recorded once, with the row it belongs to
    assert repo.results.usage_totals()["prompt_tokens"] == 100
    # a different configuration lives side by side
    other = exp(config={"n_examples": 20})
    second = repo.results.save_explanation(sae_id, other)
    third = repo.results.save_explanation(sae_id, exp(prompt_version="v2"))
    fourth = repo.results.save_explanation(sae_id, exp(llm_model=None, explainer="baseline"))
    assert len({first, second, third, fourth}) == 4
    assert repo.results.save_explanation(sae_id, exp(llm_model=None, explainer="baseline")) == fourth  # NULL model too
    assert count(repo, "explanation") == 4
    # config key order does not matter
    assert repo.results.stored_explanation(sae_id, exp(config={"n_examples": 20}))[0] == second


def test_score_writes_are_idempotent(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    eid = repo.results.save_explanation(sae_id, exp())
    s = ScoreResult(feature=1, method="simulation", value=0.4, metrics={"corr": 0.4, "nan": float("nan")},
                    llm_model="sim", prompt_version="v1", usage=LLMUsage(calls=2, prompt_tokens=50))
    sid = repo.results.save_score(eid, s)
    assert repo.results.save_score(eid, s) == sid
    ctrl = repo.results.save_score(eid, ScoreResult(feature=1, method="simulation", value=0.01, control=True,
                                            llm_model="sim", prompt_version="v1"))
    assert ctrl != sid
    assert count(repo, "score") == 2
    assert repo.results.find_score(eid, "simulation", llm_model="sim", prompt_version="v1") == sid
    view = repo.reads.feature(sae_id, 1)
    scores = view.explanations[0].scores
    assert {x.control for x in scores} == {True, False}
    assert scores[0].metrics["nan"] is None  # NaN stored as null, not an error
    with pytest.raises(InputError, match="does not exist"):
        repo.results.save_score(123456, s)


def test_scores_with_other_scorer_options_are_other_work(repo, duck_store):
    """A re-run with another seed or example count used to share the key of the first run: its
    result (paid for) was dropped and the first one kept.  Now each has its own row, and a
    default-option score keeps the key scores always had (rows stored earlier keep theirs)."""
    from labeler.db.keys import sha

    sae_id = repo.catalog.register_store(duck_store)
    eid = repo.results.save_explanation(sae_id, exp())
    base = dict(feature=1, method="detection", llm_model="m", prompt_version="v2")
    default = repo.results.save_score(eid, ScoreResult(**base, value=0.5))
    more = repo.results.save_score(eid, ScoreResult(**base, value=0.7, options={"n_top": 20}))
    assert more != default and count(repo, "score") == 2
    assert repo.results.save_score(eid, ScoreResult(**base, value=0.9, options={"n_top": 20})) == more
    assert count(repo, "score") == 2
    assert repo.results.find_score(eid, "detection", llm_model="m", prompt_version="v2", options={"n_top": 20}) == more
    with repo.db.engine.connect() as c:
        keys = dict(c.execute(sa.text("SELECT id, key FROM score")).all())
    assert keys[default] == sha(["score", "detection", False, "m", "v2"])
    views = {s.value: s for s in repo.reads.feature(sae_id, 1).explanations[0].scores}
    assert set(views) == {0.5, 0.7} and views[0.7].options == {"n_top": 20} and views[0.5].options == {}
    # reports keep the two measurements apart
    assert {r.method for r in repo.reads.results(sae_id).scores} == {"detection", "detection[n_top=20]"}


def test_failures_are_stored_but_never_labels_and_are_replaced_on_success(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    bad = exp(text="", failed=True, error="LLM timeout", raw="<garbage>")
    fid = repo.results.save_explanation(sae_id, bad)
    assert repo.results.stored_explanation(sae_id, bad) is None  # a failure is not finished work
    view = repo.reads.feature(sae_id, 1)
    assert view.label is None
    assert view.explanations[0].failed and view.explanations[0].error == "LLM timeout"
    good = exp()
    assert repo.results.save_explanation(sae_id, good) == fid  # same key: the retry replaces the failure
    view = repo.reads.feature(sae_id, 1)
    assert not view.explanations[0].failed
    assert view.label.text == "rivers and bridges"
    # a success is never overwritten by a later failure
    repo.results.save_explanation(sae_id, bad)
    assert repo.reads.feature(sae_id, 1).explanations[0].text == "rivers and bridges"


def test_label_rule(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    save, score = repo.results.save_explanation, repo.results.save_score

    def label():
        return repo.reads.feature(sae_id, 1).label

    a = save(sae_id, exp(text="alpha"))
    b = save(sae_id, exp(text="beta", explainer="cot"))
    c = save(sae_id, exp(text="gamma", explainer="logits"))
    # no scores: the most recent explanation
    assert label().explanation_id == c
    score(a, ScoreResult(feature=1, method="detection", value=0.9))
    lab = label()
    assert (lab.explanation_id, lab.method, lab.score) == (a, "detection", 0.9)
    # simulation outranks every other method; controls never count
    score(b, ScoreResult(feature=1, method="simulation", value=0.3))
    score(c, ScoreResult(feature=1, method="simulation", value=0.99, control=True))
    lab = label()
    assert (lab.explanation_id, lab.method, lab.score) == (b, "simulation", 0.3)
    score(c, ScoreResult(feature=1, method="simulation", value=0.5))
    assert label().explanation_id == c
    # failed scores never count
    score(a, ScoreResult(feature=1, method="simulation", value=None, failed=True, error="x", llm_model="m2"))
    assert label().explanation_id == c


def test_list_features_filters_and_sorts(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    for i, v in [(1, 0.2), (2, 0.8), (5, 0.5)]:
        eid = repo.results.save_explanation(sae_id, exp(feature=i, text=f"feature {i}"))
        repo.results.save_score(eid, ScoreResult(feature=i, method="simulation", value=v))
    eid = repo.results.save_explanation(sae_id, exp(feature=6, text="six"))
    repo.results.save_score(eid, ScoreResult(feature=6, method="detection", value=0.95))

    ls = repo.reads.list_features
    idx = lambda items: [x.index for x in items]  # noqa: E731
    assert idx(ls(sae_id)) == list(range(8))
    assert idx(ls(sae_id, has_label=True, sort="-score")) == [6, 2, 5, 1]
    assert idx(ls(sae_id, has_label=False)) == [0, 3, 4, 7]
    assert idx(ls(sae_id, min_score=0.4, max_score=0.9, sort="score")) == [5, 2]
    assert idx(ls(sae_id, method="simulation", min_score=0.4)) == [2, 5]
    assert idx(ls(sae_id, method="detection")) == [6]
    assert idx(ls(sae_id, min_density=0.35, max_density=0.55)) == [4, 5]
    assert idx(ls(sae_id, sort="-max", limit=2)) == [7, 6]
    assert idx(ls(sae_id, sort="index", limit=3, offset=6)) == [6, 7]
    with pytest.raises(InputError, match="cannot sort"):
        ls(sae_id, sort="color")
    batch = repo.reads.features(sae_id, [5, 2, 99, 5])
    assert [v.index for v in batch] == [5, 2]


def test_text_search(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    repo.results.save_explanation(sae_id, exp(feature=1, text="mentions of the Golden Gate Bridge"))
    repo.results.save_explanation(sae_id, exp(feature=2, text="Python function definitions"))
    repo.results.save_explanation(sae_id, exp(feature=3, text="", failed=True, error="bridges failed"))
    hits = repo.search.text("bridges", sae_id=sae_id)  # stemming: bridges ~ bridge
    assert [h.index for h in hits] == [1]
    assert hits[0].is_label and hits[0].model == "org--tiny-model"
    assert [h.index for h in repo.search.text("function")] == [2]
    assert repo.search.text('"unbalanced AND OR (') == []  # syntax never errors
    with pytest.raises(InputError):
        repo.search.text("   ")


def test_iter_labels(repo, duck_store):
    sae_id = repo.catalog.register_store(duck_store)
    eid = repo.results.save_explanation(sae_id, exp(feature=4, text="four"))
    repo.results.save_score(eid, ScoreResult(feature=4, method="simulation", value=0.7))
    rows = list(repo.reads.iter_labels(sae_id, batch_size=3))  # several keyset pages
    assert [r.index for r in rows] == list(range(8))
    r4 = rows[4]
    assert (r4.label, r4.label_score, r4.explainer, r4.llm_model) == ("four", 0.7, "highlighted", "gpt-x")


def test_jobs(repo, duck_store):
    from labeler.db.views import JobError

    jobs = repo.jobs
    sae_id = repo.catalog.register_store(duck_store)
    job = jobs.create(sae_id, {"explainer": "baseline"}, [3, 1, 2, 3])
    info = jobs.info(job)
    assert info.status == "pending" and info.n_features == 3
    assert info.counts == {"pending": 3, "done": 0, "failed": 0, "reused": 0}
    u = LLMUsage(calls=2, prompt_tokens=100, completion_tokens=20, cost_usd=0.5)
    jobs.mark_feature(job, 1, "done", usage=u)
    jobs.mark_feature(job, 1, "done", usage=u)  # duplicate delivery: counted once
    jobs.mark_feature(job, 2, "failed", error="LLM said no")
    jobs.mark_feature(job, 1, "failed", error="late duplicate")  # done stays done
    jobs.set_status(job, "running")
    info = jobs.info(job)
    assert info.status == "running" and jobs.status(job) == "running"
    assert info.counts == {"pending": 1, "done": 1, "failed": 1, "reused": 0}
    assert info.tokens == {"calls": 2, "prompt": 100, "completion": 20}
    assert info.cost_usd == pytest.approx(0.5)
    assert info.errors == [JobError(feature=2, error="LLM said no", attempts=1)]
    assert jobs.features(job) == [1, 2, 3]
    assert jobs.features(job, "pending") == [3]
    assert jobs.features(job, "failed") == [2]
    assert [j.id for j in jobs.list()] == [job]
    assert jobs.info(job + 100) is None
    with pytest.raises(InputError, match="unknown job status"):
        jobs.set_status(job, "exploded")
    with pytest.raises(InputError, match="does not exist"):
        jobs.set_status(job + 100, "done")
    with pytest.raises(InputError, match="unknown feature status"):
        jobs.mark_feature(job, 1, "weird")
