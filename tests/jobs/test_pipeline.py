"""The pipeline and in-process jobs on a real tiny store, a real SQLite database and (where an
LLM is needed) the LLM test server over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from labeler import jobs
from labeler.core.config import reset_settings
from labeler.core.errors import ConfigError
from labeler.pipeline import LabelSpec, control_texts, label_features, sae_id_for_store, score_features, validate_spec


@pytest.fixture
def local_db(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELER_DATABASE_URL", f"sqlite:///{tmp_path / 'labeler.db'}")
    monkeypatch.setenv("LABELER_CHUNK_SIZE", "3")
    reset_settings()
    return jobs.get_repository()


@pytest.fixture
def with_llm(monkeypatch, llm_server):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LABELER_LLM_CACHE", "false")
    monkeypatch.setenv("LABELER_LLM_MAX_RETRIES", "0")
    reset_settings()
    return llm_server


def test_label_spec_hash_is_stable_and_roundtrips():
    a = LabelSpec(explainer="highlighted", explainer_options={"n_examples": 5, "context_tokens": 8},
                  scorers=["simulation", "detection"], scorer_options={"detection": {"n_examples": 4}})
    b = LabelSpec.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b == a and b.config_hash == a.config_hash
    reordered = LabelSpec(explainer="highlighted", explainer_options={"context_tokens": 8, "n_examples": 5},
                          scorers=["simulation", "detection"], scorer_options={"detection": {"n_examples": 4}})
    assert reordered.config_hash == a.config_hash
    assert LabelSpec(explainer="highlighted", seed=1).config_hash != LabelSpec(explainer="highlighted").config_hash
    with pytest.raises(ConfigError, match="unknown label spec fields"):
        LabelSpec.from_dict({"explainer": "baseline", "bogus": 1})
    with pytest.raises(ConfigError, match="not run"):
        LabelSpec(scorers=["simulation"], scorer_options={"detection": {}})


def test_llm_options_without_an_endpoint_say_what_to_do():
    with pytest.raises(ConfigError, match="needs an LLM endpoint.*--explainer baseline"):
        validate_spec(LabelSpec(explainer="highlighted"))
    with pytest.raises(ConfigError, match="scorer 'detection' needs an LLM endpoint"):
        validate_spec(LabelSpec(explainer="baseline", scorers=["simulation", "detection"]))
    with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
        validate_spec(LabelSpec(explainer="baseline", scorers=["nope"]))
    validate_spec(LabelSpec(explainer="baseline", scorers=["simulation", "embedding"]))  # offline is fine


def test_control_explanations_come_from_other_features():
    texts = {1: "dogs", 2: "cats", 3: "bridges"}
    controls = control_texts(texts, seed=0)
    assert set(controls) == {1, 2, 3}
    assert all(controls[f] != texts[f] for f in texts)
    assert control_texts(texts, seed=0) == controls  # deterministic
    assert control_texts({1: "dogs"}, seed=0) == {}


def test_offline_label_features_stores_and_skips_finished_work(tiny_store, alive_features, local_db):
    from labeler.examples.store import FeatureStore

    store = FeatureStore(tiny_store)
    spec = LabelSpec(explainer="baseline", scorers=["simulation"], control=True)
    features = alive_features[:4]
    job_id = jobs.create_job(tiny_store, features, spec)
    res = asyncio.run(label_features(store, features, spec, local_db, job_id=job_id))
    assert sorted(res.done) == features and not res.failed
    assert res.explanations == 4 and res.scores == 8  # real + control per feature
    info = jobs.job_progress(job_id)
    assert info["counts"] == {"pending": 0, "done": 4, "failed": 0}
    view = local_db.feature_view(info["sae_id"], features[0])
    (exp,) = view["explanations"]
    assert exp["explainer"] == "baseline" and exp["text"]
    assert sorted((s["method"], s["control"]) for s in exp["scores"]) == [("simulation", False), ("simulation", True)]

    again = asyncio.run(label_features(store, features, spec, local_db, job_id=job_id))
    assert sorted(again.skipped) == features and again.done == [] and again.scores == 0


def test_cancel_leaves_unstarted_features_pending(tiny_store, alive_features, local_db):
    from labeler.examples.store import FeatureStore

    spec = LabelSpec(explainer="baseline", scorers=["simulation"])
    features = alive_features[:5]
    job_id = jobs.create_job(tiny_store, features, spec)
    res = asyncio.run(label_features(FeatureStore(tiny_store), features, spec, local_db, job_id=job_id,
                                     should_cancel=lambda: True))
    assert res.cancelled and "cancelled" in res.message
    assert sorted(res.not_started) == features and res.done == []
    assert jobs.job_progress(job_id)["counts"]["pending"] == 5


def test_budget_exceeded_stops_cleanly_and_says_so(tiny_store, alive_features, local_db, with_llm, monkeypatch):
    from labeler.examples.store import FeatureStore
    from labeler.llm import reset_process_state

    monkeypatch.setenv("LABELER_LLM_BUDGET_USD", "0.0000001")
    reset_settings()
    reset_process_state()
    spec = LabelSpec(explainer="highlighted", scorers=["simulation"])
    features = alive_features[:6]
    job_id = jobs.create_job(tiny_store, features, spec)
    try:
        res = asyncio.run(label_features(FeatureStore(tiny_store), features, spec, local_db, job_id=job_id,
                                         max_in_flight=1))
    finally:
        reset_process_state()
    assert res.budget_exceeded and "budget" in res.message
    assert res.not_started, "the budget should stop new work"
    info = jobs.job_progress(job_id)
    assert info["counts"]["pending"] == len(res.not_started)


def test_llm_failures_are_recorded_with_reasons_and_retry_fixes_them(tiny_store, alive_features, local_db,
                                                                      with_llm):
    with_llm.configure(fail_500=1.0)
    spec = LabelSpec(explainer="highlighted", scorers=["simulation", "detection"])
    features = alive_features[:4]
    job_id = jobs.run_job_inprocess(tiny_store, features, spec)
    info = jobs.job_progress(job_id)
    assert info["status"] == "done"
    assert info["counts"] == {"pending": 0, "done": 0, "failed": 4}
    assert all("http_500" in e["error"] or "500" in e["error"] for e in info["errors"]), info["errors"]

    with_llm.configure(fail_500=0.0)
    assert jobs.retry_failed(job_id, inprocess=True) == features
    info = jobs.job_progress(job_id)
    assert info["counts"] == {"pending": 0, "done": 4, "failed": 0}, info["errors"]
    assert info["status"] == "done"


def test_explain_then_score_stage_functions(tiny_store, alive_features, local_db, with_llm):
    from labeler.examples.store import FeatureStore
    from labeler.pipeline import explain_features

    store = FeatureStore(tiny_store)
    features = alive_features[:3]
    res = asyncio.run(explain_features(store, features, LabelSpec(explainer="highlighted", scorers=[]), local_db))
    assert sorted(res.done) == features and res.usage.calls >= 3
    sae_id = sae_id_for_store(local_db, store)
    assert all(v["explanations"] and not v["explanations"][0]["scores"]
               for v in local_db.features_view(sae_id, features))
    # explained again with the same explainer: found in the database, no LLM call
    calls = with_llm.stats["chat"]
    again = asyncio.run(explain_features(store, features, LabelSpec(explainer="highlighted", scorers=[]), local_db))
    assert sorted(again.done) == features and with_llm.stats["chat"] == calls

    scored = asyncio.run(score_features(store, features, LabelSpec(scorers=["simulation", "embedding"]), local_db))
    assert sorted(scored.done) == features and scored.scores == 6
    for v in local_db.features_view(sae_id, features):
        assert sorted(s["method"] for s in v["explanations"][0]["scores"]) == ["embedding", "simulation"]
