"""The runner and its chunks, in-process, on a real tiny store, a real SQLite database and
(where an LLM is needed) the LLM test server over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from labeler.core.config import get_settings, reset_settings
from labeler.core.errors import ConfigError
from labeler.db import Repository
from labeler.runs.llms import LLMPool, build_stages
from labeler.runs.runner import Runner
from labeler.runs.spec import JobSpec, LabelSpec, make_job_spec, validate
from labeler.runs.stages import control_texts, label_chunk


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELER_CHUNK_SIZE", "3")
    reset_settings()
    repo = Repository.open(f"sqlite:///{tmp_path / 'labeler.db'}")
    yield Runner(repo, get_settings())
    repo.close()


@pytest.fixture
def with_llm(monkeypatch, llm_server):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LABELER_LLM_CACHE", "false")
    monkeypatch.setenv("LABELER_LLM_MAX_RETRIES", "0")
    reset_settings()
    return llm_server


def job(runner: Runner, store, features, label: LabelSpec, **kw) -> int:
    """A job made with the runner's current settings (tests change them)."""
    runner.settings = get_settings()
    return runner.create_job(make_job_spec(store, label, runner.settings, **kw), features)


def test_specs_hash_stably_and_roundtrip(tmp_path):
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
    with pytest.raises(ConfigError, match="bad label spec"):
        LabelSpec.from_dict({"scorers": 5})
    with pytest.raises(ConfigError, match="not run"):
        LabelSpec(scorers=["simulation"], scorer_options={"detection": {}})

    job_spec = JobSpec(store=str(tmp_path), label=a, stages=("explain",), name="demo", chunk_size=4)
    again = JobSpec.from_dict(json.loads(json.dumps(job_spec.to_dict())))
    assert again == job_spec and again.reuse_hash == job_spec.reuse_hash
    # the name and the stages are part of what is reused; the store path and chunking are not
    assert JobSpec(str(tmp_path), a, ("explain",), "other").reuse_hash != job_spec.reuse_hash
    assert JobSpec(str(tmp_path), a, ("explain", "score"), "demo").reuse_hash != job_spec.reuse_hash
    assert JobSpec("/elsewhere", a, ("explain",), "demo", 16).reuse_hash == job_spec.reuse_hash
    with pytest.raises(ConfigError, match="stages"):
        JobSpec(str(tmp_path), a, stages=("explain", "dance"))


def test_llm_options_without_an_endpoint_say_what_to_do():
    settings = get_settings()
    with pytest.raises(ConfigError, match="needs an LLM endpoint.*--explainer baseline"):
        validate(LabelSpec(explainer="highlighted"), settings)
    with pytest.raises(ConfigError, match="scorer 'detection' needs an LLM endpoint"):
        validate(LabelSpec(explainer="baseline", scorers=["simulation", "detection"]), settings)
    with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
        validate(LabelSpec(explainer="baseline", scorers=["nope"]), settings)
    validate(LabelSpec(explainer="baseline", scorers=["simulation", "embedding"]), settings)  # offline is fine
    # a job that only scores does not need the explainer's endpoint
    validate(LabelSpec(explainer="highlighted", scorers=["simulation"]), settings, ("score",))


def test_control_explanations_come_from_other_features():
    texts = {1: "dogs", 2: "cats", 3: "bridges"}
    controls = control_texts(texts, seed=0)
    assert set(controls) == {1, 2, 3}
    assert all(controls[f] != texts[f] for f in texts)
    assert control_texts(texts, seed=0) == controls  # deterministic
    assert control_texts({1: "dogs"}, seed=0) == {}


def test_offline_job_stores_everything_and_a_rerun_of_a_chunk_skips_it(tiny_store, alive_features, runner):
    features = alive_features[:4]
    job_id = job(runner, tiny_store, features, LabelSpec(explainer="baseline", scorers=["simulation"], control=True))
    info = runner.run(job_id)
    assert info.status == "done"
    assert info.counts == {"pending": 0, "done": 4, "failed": 0, "reused": 0}
    view = runner.repo.reads.feature(info.sae_id, features[0])
    (exp,) = view.explanations
    assert exp.explainer == "baseline" and exp.text and exp.job_id == job_id
    assert sorted((s.method, s.control) for s in exp.scores) == [("simulation", False), ("simulation", True)]
    assert view.label is not None and view.label.explanation_id == exp.id

    async def rerun():  # a redelivered chunk: everything is already done in this job
        pool = LLMPool(runner.settings)
        try:
            return await runner.run_chunk_async(job_id, features, pool)
        finally:
            await pool.aclose()

    runner.repo.jobs.set_status(job_id, "running")
    again = asyncio.run(rerun())
    assert sorted(again.skipped) == features and again.done == [] and again.scores == 0


def test_a_job_with_the_same_spec_reuses_finished_features(tiny_store, alive_features, runner):
    label = LabelSpec(explainer="baseline", scorers=["simulation"])
    first = job(runner, tiny_store, alive_features[:3], label)
    runner.run(first)
    second = job(runner, tiny_store, alive_features[:5], label)
    info = runner.progress(second)
    assert info.counts == {"pending": 2, "done": 3, "failed": 0, "reused": 3}
    assert runner.run(second).counts == {"pending": 0, "done": 5, "failed": 0, "reused": 3}
    # another name (an eval configuration) is other work: nothing reused
    named = job(runner, tiny_store, alive_features[:3], label, name="arm-b")
    assert runner.progress(named).counts["reused"] == 0
    # fully reused: done at once
    third = job(runner, tiny_store, alive_features[:5], label)
    assert runner.progress(third).status == "done"


def test_cancel_leaves_unstarted_features_pending(tiny_store, alive_features, runner):
    features = alive_features[:5]
    job_id = job(runner, tiny_store, features, LabelSpec(explainer="baseline", scorers=["simulation"]))
    spec = runner.spec_of(job_id)
    store = runner.stores.get(spec.store)
    sae_id = runner.progress(job_id).sae_id

    async def chunk():
        pool = LLMPool(runner.settings)
        stages = build_stages(spec.label, pool, explain=True, score=True)
        return await label_chunk(store, features, stages, runner.repo, sae_id, job_id=job_id, control=False,
                                 seed=0, max_in_flight=4, should_cancel=lambda: True)

    res = asyncio.run(chunk())
    assert res.cancelled and "cancelled" in res.message
    assert sorted(res.not_started) == features and res.done == []
    assert runner.progress(job_id).counts["pending"] == 5
    # a cancelled job starts nothing, and stays cancelled
    info = runner.cancel(job_id)
    assert info.status == "cancelled"
    assert runner.run(job_id).counts["pending"] == 5


def test_budget_exceeded_stops_cleanly_and_says_so(tiny_store, alive_features, runner, with_llm, monkeypatch):
    from labeler.llm import reset_process_state

    monkeypatch.setenv("LABELER_LLM_BUDGET_USD", "0.0000001")
    monkeypatch.setenv("LABELER_LLM_CONCURRENCY", "1")
    reset_settings()
    reset_process_state()
    features = alive_features[:6]
    job_id = job(runner, tiny_store, features, LabelSpec(explainer="highlighted", scorers=["simulation"]))
    results = []
    try:
        info = runner.run(job_id, on_chunk=results.append)
    finally:
        reset_process_state()
    stopped = [r for r in results if r.budget_exceeded]
    assert stopped and "budget" in stopped[0].message
    assert info.counts["pending"] == sum(len(r.not_started) for r in results) > 0, "the budget stops new work"
    assert info.status == "budget_reached"  # visible; the pending features wait for more budget (--resume)
    # no call's worst case fits in $0.0000001: none is sent, nothing is spent past the budget
    assert info.budget_usd == pytest.approx(1e-7) and info.spent_usd == 0 and with_llm.stats["chat"] == 0


def test_llm_failures_are_recorded_with_reasons_and_retry_fixes_them(tiny_store, alive_features, runner,
                                                                      with_llm):
    with_llm.configure(fail_500=1.0)
    features = alive_features[:4]
    job_id = job(runner, tiny_store, features, LabelSpec(explainer="highlighted", scorers=["simulation", "detection"]))
    info = runner.run(job_id)
    assert info.status == "done"
    assert info.counts == {"pending": 0, "done": 0, "failed": 4, "reused": 0}
    assert all("500" in e.error for e in info.errors), info.errors

    with_llm.configure(fail_500=0.0)
    assert runner.retry_failed(job_id, queued=False) == features
    info = runner.progress(job_id)
    assert info.counts == {"pending": 0, "done": 4, "failed": 0, "reused": 0}, info.errors
    assert info.status == "done"


def test_explain_then_score_as_single_stage_jobs(tiny_store, alive_features, runner, with_llm):
    features = alive_features[:3]
    explain = LabelSpec(explainer="highlighted", scorers=[])
    info = runner.run(job(runner, tiny_store, features, explain, stages=("explain",)))
    assert info.counts["done"] == 3 and info.tokens["calls"] >= 3
    views = runner.repo.reads.features(info.sae_id, features)
    assert all(v.explanations and not v.explanations[0].scores for v in views)
    # explained again by a new job of another name: found in the database, no LLM call
    calls = with_llm.stats["chat"]
    again = runner.run(job(runner, tiny_store, features, explain, stages=("explain",), name="again"))
    assert again.counts["done"] == 3 and with_llm.stats["chat"] == calls

    score = LabelSpec(scorers=["simulation", "embedding"])
    scored = runner.run(job(runner, tiny_store, features, score, stages=("score",)))
    assert scored.counts == {"pending": 0, "done": 3, "failed": 0, "reused": 0}
    for v in runner.repo.reads.features(info.sae_id, features):
        assert sorted(s.method for s in v.explanations[0].scores) == ["embedding", "simulation"]
    # scoring is never reused: new explanations may have arrived since
    rescored = job(runner, tiny_store, features, score, stages=("score",))
    assert runner.progress(rescored).counts["reused"] == 0


def test_scoring_a_feature_without_explanations_fails_with_a_reason(tiny_store, alive_features, runner):
    info = runner.run(job(runner, tiny_store, alive_features[:2], LabelSpec(scorers=["embedding"]),
                          stages=("score",)))
    assert info.counts["failed"] == 2
    assert all("no finished explanation" in e.error for e in info.errors)


def test_named_jobs_retry_and_cancel_like_any_other(tiny_store, alive_features, runner, with_llm):
    """The demo's and eval's jobs are ordinary jobs: --retry-failed and --cancel work on them."""
    features = alive_features[:4]
    label = LabelSpec(explainer="highlighted", scorers=["simulation"])
    with_llm.configure(fail_500=1.0)
    demo = job(runner, tiny_store, features, label, name="demo")
    assert runner.run(demo).counts["failed"] == 4
    with_llm.configure(fail_500=0.0)
    assert runner.retry_failed(demo, queued=False) == features
    assert runner.progress(demo).counts == {"pending": 0, "done": 4, "failed": 0, "reused": 0}

    arm = job(runner, tiny_store, alive_features[4:8], label, name="eval-arm")
    assert runner.cancel(arm).status == "cancelled"
    assert runner.run(arm).counts["pending"] == 4  # a cancelled job starts nothing
