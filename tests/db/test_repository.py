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
    with repo.engine.connect() as c:
        return c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_register_store_is_idempotent(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    assert repo.register_store(duck_store) == sae_id
    assert count(repo, "feature") == duck_store.n_features
    assert count(repo, "sae") == 1 and count(repo, "subject_model") == 1
    assert repo.sae_id_for("org--tiny-model", "res-0") == sae_id
    assert repo.sae_id_for("org--tiny-model", "nope") is None
    view = repo.feature_view(sae_id, 3)
    assert view["stats"]["count"] == 30
    assert view["stats"]["max"] == pytest.approx(4.0)
    assert view["stats"]["hist_counts"] == [3, 1]  # full statistics from the records
    assert view["label"] is None and view["explanations"] == []
    assert repo.feature_view(sae_id, 99) is None
    info = repo.sae_info(sae_id)
    assert info["hook"] == "h.0" and info["format"] == "saelens" and info["n_features"] == 8


def test_register_store_rejects_mismatched_stats(repo, duck_store):
    arrays = duck_store.all_stats()
    duck_store.n_features = 9  # the statistics still have 8 entries
    duck_store.all_stats = lambda: arrays
    with pytest.raises(InputError, match="8 entries"):
        repo.register_store(duck_store, full_stats=False)


def test_explanation_writes_are_idempotent_and_side_by_side(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    e = exp(usage=LLMUsage(calls=1, prompt_tokens=100, completion_tokens=10, cost_usd=0.01))
    first = repo.save_explanation(sae_id, e)
    for _ in range(3):  # retries
        assert repo.save_explanation(sae_id, e) == first
    assert repo.find_explanation(sae_id, e) == first
    # usage is recorded once, with the row it belongs to
    assert repo.usage_totals()["prompt_tokens"] == 100
    # a different configuration lives side by side
    other = exp(config={"n_examples": 20})
    second = repo.save_explanation(sae_id, other)
    third = repo.save_explanation(sae_id, exp(prompt_version="v2"))
    fourth = repo.save_explanation(sae_id, exp(llm_model=None, explainer="baseline"))
    assert len({first, second, third, fourth}) == 4
    assert repo.save_explanation(sae_id, exp(llm_model=None, explainer="baseline")) == fourth  # NULL model too
    assert count(repo, "explanation") == 4
    # config key order does not matter
    assert repo.find_explanation(sae_id, exp(config={"n_examples": 20})) == second


def test_score_writes_are_idempotent(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    eid = repo.save_explanation(sae_id, exp())
    s = ScoreResult(feature=1, method="simulation", value=0.4, metrics={"corr": 0.4, "nan": float("nan")},
                    llm_model="sim", prompt_version="v1", usage=LLMUsage(calls=2, prompt_tokens=50))
    sid = repo.save_score(eid, s)
    assert repo.save_score(eid, s) == sid
    ctrl = repo.save_score(eid, ScoreResult(feature=1, method="simulation", value=0.01, control=True,
                                            llm_model="sim", prompt_version="v1"))
    assert ctrl != sid
    assert count(repo, "score") == 2
    assert repo.find_score(eid, "simulation", llm_model="sim", prompt_version="v1") == sid
    view = repo.feature_view(sae_id, 1)
    scores = view["explanations"][0]["scores"]
    assert {x["control"] for x in scores} == {True, False}
    assert scores[0]["metrics"]["nan"] is None  # NaN stored as null, not an error
    with pytest.raises(InputError, match="does not exist"):
        repo.save_score(123456, s)


def test_failures_are_stored_but_never_labels_and_are_replaced_on_success(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    bad = exp(text="", failed=True, error="LLM timeout", raw="<garbage>")
    fid = repo.save_explanation(sae_id, bad)
    assert repo.find_explanation(sae_id, bad) is None  # a failure is not finished work
    view = repo.feature_view(sae_id, 1)
    assert view["label"] is None
    assert view["explanations"][0]["failed"] and view["explanations"][0]["error"] == "LLM timeout"
    good = exp()
    assert repo.save_explanation(sae_id, good) == fid  # same key: the retry replaces the failure
    view = repo.feature_view(sae_id, 1)
    assert not view["explanations"][0]["failed"]
    assert view["label"]["text"] == "rivers and bridges"
    # a success is never overwritten by a later failure
    repo.save_explanation(sae_id, bad)
    assert repo.feature_view(sae_id, 1)["explanations"][0]["text"] == "rivers and bridges"


def test_label_rule(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    a = repo.save_explanation(sae_id, exp(text="alpha"))
    b = repo.save_explanation(sae_id, exp(text="beta", explainer="cot"))
    c = repo.save_explanation(sae_id, exp(text="gamma", explainer="logits"))
    # no scores: the most recent explanation
    assert repo.feature_view(sae_id, 1)["label"]["explanation_id"] == c
    repo.save_score(a, ScoreResult(feature=1, method="detection", value=0.9))
    label = repo.feature_view(sae_id, 1)["label"]
    assert (label["explanation_id"], label["method"], label["score"]) == (a, "detection", 0.9)
    # simulation outranks every other method; controls never count
    repo.save_score(b, ScoreResult(feature=1, method="simulation", value=0.3))
    repo.save_score(c, ScoreResult(feature=1, method="simulation", value=0.99, control=True))
    label = repo.feature_view(sae_id, 1)["label"]
    assert (label["explanation_id"], label["method"], label["score"]) == (b, "simulation", 0.3)
    repo.save_score(c, ScoreResult(feature=1, method="simulation", value=0.5))
    assert repo.feature_view(sae_id, 1)["label"]["explanation_id"] == c
    # failed scores never count
    repo.save_score(a, ScoreResult(feature=1, method="simulation", value=None, failed=True, error="x", llm_model="m2"))
    assert repo.feature_view(sae_id, 1)["label"]["explanation_id"] == c


def test_list_features_filters_and_sorts(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    for i, v in [(1, 0.2), (2, 0.8), (5, 0.5)]:
        eid = repo.save_explanation(sae_id, exp(feature=i, text=f"feature {i}"))
        repo.save_score(eid, ScoreResult(feature=i, method="simulation", value=v))
    eid = repo.save_explanation(sae_id, exp(feature=6, text="six"))
    repo.save_score(eid, ScoreResult(feature=6, method="detection", value=0.95))

    idx = lambda items: [x["index"] for x in items]  # noqa: E731
    assert idx(repo.list_features(sae_id)) == list(range(8))
    assert idx(repo.list_features(sae_id, has_label=True, sort="-score")) == [6, 2, 5, 1]
    assert idx(repo.list_features(sae_id, has_label=False)) == [0, 3, 4, 7]
    assert idx(repo.list_features(sae_id, min_score=0.4, max_score=0.9, sort="score")) == [5, 2]
    assert idx(repo.list_features(sae_id, method="simulation", min_score=0.4)) == [2, 5]
    assert idx(repo.list_features(sae_id, method="detection")) == [6]
    assert idx(repo.list_features(sae_id, min_density=0.35, max_density=0.55)) == [4, 5]
    assert idx(repo.list_features(sae_id, sort="-max", limit=2)) == [7, 6]
    assert idx(repo.list_features(sae_id, sort="index", limit=3, offset=6)) == [6, 7]
    with pytest.raises(InputError, match="cannot sort"):
        repo.list_features(sae_id, sort="color")
    batch = repo.features_view(sae_id, [5, 2, 99, 5])
    assert [v["index"] for v in batch] == [5, 2]


def test_text_search(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    repo.save_explanation(sae_id, exp(feature=1, text="mentions of the Golden Gate Bridge"))
    repo.save_explanation(sae_id, exp(feature=2, text="Python function definitions"))
    repo.save_explanation(sae_id, exp(feature=3, text="", failed=True, error="bridges failed"))
    hits = repo.search_text("bridges", sae_id=sae_id)  # stemming: bridges ~ bridge
    assert [h["index"] for h in hits] == [1]
    assert hits[0]["is_label"] and hits[0]["model"] == "org--tiny-model"
    assert [h["index"] for h in repo.search_text("function")] == [2]
    assert repo.search_text('"unbalanced AND OR (') == []  # syntax never errors
    with pytest.raises(InputError):
        repo.search_text("   ")


def test_iter_labels(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    eid = repo.save_explanation(sae_id, exp(feature=4, text="four"))
    repo.save_score(eid, ScoreResult(feature=4, method="simulation", value=0.7))
    rows = list(repo.iter_labels(sae_id, batch_size=3))  # several keyset pages
    assert [r["index"] for r in rows] == list(range(8))
    r4 = rows[4]
    assert (r4["label_text"], r4["label_score"], r4["explainer"], r4["llm_model"]) == ("four", 0.7, "highlighted", "gpt-x")


def test_jobs(repo, duck_store):
    sae_id = repo.register_store(duck_store)
    job = repo.create_job(sae_id, {"explainer": "baseline"}, [3, 1, 2, 3])
    info = repo.job_info(job)
    assert info["status"] == "pending" and info["n_features"] == 3
    assert info["counts"] == {"pending": 3, "done": 0, "failed": 0}
    u = LLMUsage(calls=2, prompt_tokens=100, completion_tokens=20, cost_usd=0.5)
    repo.mark_feature(job, 1, "done", usage=u)
    repo.mark_feature(job, 1, "done", usage=u)  # duplicate delivery: counted once
    repo.mark_feature(job, 2, "failed", error="LLM said no")
    repo.mark_feature(job, 1, "failed", error="late duplicate")  # done stays done
    repo.set_job_status(job, "running")
    info = repo.job_info(job)
    assert info["status"] == "running"
    assert info["counts"] == {"pending": 1, "done": 1, "failed": 1}
    assert info["tokens"] == {"calls": 2, "prompt": 100, "completion": 20}
    assert info["cost_usd"] == pytest.approx(0.5)
    assert info["errors"] == [{"feature": 2, "error": "LLM said no", "attempts": 1}]
    assert repo.job_features(job) == [1, 2, 3]
    assert repo.job_features(job, "pending") == [3]
    assert repo.job_features(job, "failed") == [2]
    assert [j["id"] for j in repo.list_jobs()] == [job]
    assert repo.job_info(job + 100) is None
    with pytest.raises(InputError, match="unknown job status"):
        repo.set_job_status(job, "exploded")
    with pytest.raises(InputError, match="does not exist"):
        repo.set_job_status(job + 100, "done")
    with pytest.raises(InputError, match="unknown feature status"):
        repo.mark_feature(job, 1, "weird")


def test_semantic_search(tmp_path):
    from labeler.db import Repository

    repo = Repository(f"sqlite:///{tmp_path / 's.db'}")
    repo.upgrade()
    sae_id = repo.ensure_sae("m", "s", n_features=3)
    repo.save_explanation(sae_id, exp(feature=0, text="famous suspension bridges in San Francisco"))
    repo.save_explanation(sae_id, exp(feature=1, text="Python programming syntax and code"))
    repo.save_explanation(sae_id, exp(feature=2, text="cats, dogs and other pets"))
    hits = repo.search_semantic("the golden gate", sae_id=sae_id, limit=3)
    assert hits[0]["index"] == 0
    assert hits[0]["score"] > hits[1]["score"]
    assert [h["index"] for h in repo.search_semantic("kittens and puppies")][:1] == [2]
    assert repo.embed_missing() == 0  # embeddings were stored on first use
    repo.close()
