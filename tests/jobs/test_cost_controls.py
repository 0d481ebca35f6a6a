"""Cost controls of a job: one budget for every worker of the job (real workers, PostgreSQL,
Redis), the visible budget_reached state and `labeler submit --resume`; Batch API mode end to
end at half the price for the same scores."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from labeler.core.config import get_settings, reset_settings
from labeler.core.errors import ConfigError
from labeler.db import Repository
from labeler.runs.queue import CelerySender
from labeler.runs.runner import Runner
from labeler.runs.spec import LabelSpec, make_job_spec

# every held-out text in one simulation call: the budget test counts calls in flight per feature
# (one text per call, the default, starts ten at once, all admitted before the cap is crossed)
LABEL = LabelSpec(explainer="highlighted", scorers=["simulation", "detection"],
                  scorer_options={"simulation": {"sequences_per_call": None}})


def explanation_rows(url: str) -> Counter:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            return Counter(r[0] for r in c.execute(sa.text("SELECT feature_index FROM explanation")))
    finally:
        eng.dispose()


def settled(runner: Runner, job_id: int, quiet_s: float = 1.5, timeout_s: float = 60.0):
    """The job's state once its counts stop changing for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last = runner.progress(job_id)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = runner.progress(job_id)
        if now.counts == last.counts:
            return now
        last = now
    raise AssertionError(f"job {job_id} kept changing: {last.counts}")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_one_budget_for_every_worker_then_resume(tiny_store, alive_features, queue_env, redis_url, workers,
                                                 postgres_url, tmp_path, capsys):
    """Calls cost ~$0.1-0.4 each at this price; a $4 budget allows a few features.  Two workers that
    each kept their own $4 would spend up to $8; sharing the job's account, and holding each call's
    worst case while it runs, they never spend more than the budget together."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input": 200.0, "output": 200.0}}))
    env = queue_env(redis_url, LABELER_LLM_PRICES_FILE=str(prices), LABELER_LLM_BUDGET_USD="4.0")
    pool = workers(env)
    pool.start("a")
    pool.start("b")
    settings = get_settings()
    runner = Runner(Repository.open(settings.resolved_database_url), settings, send=CelerySender(settings))
    features = alive_features[:16]
    job_id = runner.submit(make_job_spec(tiny_store, LABEL, settings), features)
    info = runner.wait(job_id, timeout_s=120)
    assert info.status == "budget_reached", info
    # the other worker's chunk may still be finishing its feature in flight: it stops at its next
    # LLM call, so the counts settle within a few seconds
    info = settled(runner, job_id)
    assert info.budget_usd == 4.0 and 3.0 <= info.spent_usd <= 4.0, info.spent_usd
    assert info.spent_usd >= info.cost_usd - 1e-9  # spent counts partial work too
    assert 0 < info.counts["pending"] < len(features)

    with pytest.raises(ConfigError, match="spent"):
        runner.resume(job_id, queued=True)  # the same budget: nothing to go on with
    from labeler.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["submit", "--resume", str(job_id), "--budget-usd", "1000", "--wait"])
    assert exit_info.value.code in (0, None)
    assert f"re-queued {info.counts['pending']} pending feature(s) of job {job_id}" in capsys.readouterr().out
    done = runner.progress(job_id)
    assert done.status == "done" and done.counts["done"] + done.counts["failed"] == len(features), done
    assert done.budget_usd == 1000 and done.spent_usd > info.spent_usd
    assert set(explanation_rows(postgres_url).values()) == {1}  # nothing explained twice


def test_batch_mode_job_costs_half_for_the_same_scores(tiny_store, alive_features, llm_server, monkeypatch,
                                                        tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LABELER_LLM_CACHE", "false")
    monkeypatch.setenv("LABELER_LLM_BATCH_COLLECT_S", "0.2")
    monkeypatch.setenv("LABELER_LLM_BATCH_POLL_S", "0.05")
    monkeypatch.setenv("LABELER_CHUNK_SIZE", "3")
    reset_settings()
    settings = get_settings()
    features = alive_features[:6]
    results = {}
    for mode in ("sync", "batch"):
        repo = Repository.open(f"sqlite:///{tmp_path / f'{mode}.db'}")
        runner = Runner(repo, settings)
        llm_server.reset_stats()
        job_id = runner.create_job(make_job_spec(tiny_store, LABEL, settings, llm_mode=mode), features)
        info = runner.run(job_id)
        assert info.status == "done" and info.counts["done"] == len(features), info.errors
        views = repo.reads.features(info.sae_id, features)
        results[mode] = (info, {v.index: sorted((s.method, s.value) for e in v.explanations for s in e.scores)
                                for v in views}, dict(llm_server.stats))
        repo.close()
    (sync, sync_scores, _), (batch, batch_scores, stats) = results["sync"], results["batch"]
    assert batch_scores == sync_scores
    assert batch.spent_usd == pytest.approx(sync.spent_usd / 2, rel=0.02)
    assert stats.get("chat", 0) <= 2  # only logprob probes go direct (this one was made by the sync run)
    assert 2 <= stats["batches"] <= 4  # one round of explanations, one of scores (features of all chunks)
