"""Queued jobs with a real Redis, real PostgreSQL, real `labeler worker` subprocesses and the
LLM test server over HTTP."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from labeler.core.config import get_settings
from labeler.db import Repository
from labeler.runs.queue import CelerySender
from labeler.runs.runner import Runner, chunked
from labeler.runs.spec import LabelSpec, make_job_spec

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

LABEL = LabelSpec(explainer="highlighted", scorers=["simulation", "detection"], control=True)


def make_runner(queued: bool = True) -> Runner:
    """This test process's runner, on the settings queue_env just set (the workers' too)."""
    settings = get_settings()
    return Runner(Repository.open(settings.resolved_database_url), settings,
                  send=CelerySender(settings) if queued else None)


def submit(runner: Runner, store, features) -> int:
    return runner.submit(make_job_spec(store, LABEL, runner.settings), features)


def wait_until(predicate, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def labels(runner: Runner, job_id: int) -> dict[int, list]:
    """Every stored explanation and score of the job's features, by feature (row ids left out)."""
    repo = runner.repo
    info = runner.progress(job_id)
    out = {}
    for view in repo.reads.features(info.sae_id, repo.jobs.features(job_id)):
        out[view.index] = sorted(
            (e.text, e.failed, sorted((s.method, s.control, s.value) for s in e.scores)) for e in view.explanations)
    return out


def row_counts(url: str) -> tuple[Counter, Counter]:
    """Explanation rows per feature and score rows per (explanation, method, control)."""
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            exps = Counter(r[0] for r in c.execute(sa.text("SELECT feature_index FROM explanation")))
            scores = Counter((r[0], r[1], r[2]) for r in c.execute(
                sa.text("SELECT explanation_id, method, control FROM score")))
    finally:
        eng.dispose()
    return exps, scores


def test_job_end_to_end_then_inprocess_gives_identical_labels(tiny_store, alive_features, queue_env, redis_url,
                                                               workers, llm_server, postgres_url, tmp_path,
                                                               monkeypatch):
    env = queue_env(redis_url)
    pool = workers(env)
    pool.start("a", concurrency=2)
    features = alive_features[:7]
    runner = make_runner()
    job_id = submit(runner, tiny_store, features)
    assert len(runner.progress(job_id).spec["label"]["scorers"]) == 2
    info = runner.wait(job_id, timeout_s=90)

    assert info.status == "done"
    assert info.counts == {"pending": 0, "done": 7, "failed": 0, "reused": 0}, info.errors
    # per feature: 1 explanation + 2 scorers x (real + control) = 5 LLM calls at least
    assert info.tokens["calls"] >= 5 * len(features) and info.cost_usd > 0
    queued = labels(runner, job_id)
    assert sorted(queued) == features
    for f in features:
        (text, failed, scores), = queued[f]
        assert text and not failed
        # simulation + detection, each on the real and on a control explanation
        assert [(m, c) for m, c, _ in scores] == [("detection", False), ("detection", True),
                                                  ("simulation", False), ("simulation", True)]

    # The embedded default: same options, fresh SQLite database, no Redis -> the same labels.
    monkeypatch.setenv("LABELER_DATABASE_URL", f"sqlite:///{tmp_path / 'inprocess.db'}")
    monkeypatch.delenv("LABELER_REDIS_URL")
    from labeler.core.config import reset_settings

    reset_settings()
    local = make_runner(queued=False)
    local_id = local.create_job(make_job_spec(tiny_store, LABEL, local.settings), features)
    assert local.run(local_id).counts == info.counts
    assert labels(local, local_id) == queued


def test_sigkill_of_a_worker_mid_job_loses_and_duplicates_nothing(tiny_store, alive_features, queue_env,
                                                                  redis_url, workers, llm_server, postgres_url):
    llm_server.configure(latency_s=0.4)
    env = queue_env(redis_url, LABELER_CHUNK_SIZE="2")
    pool = workers(env)
    pool.start("victim")
    pool.start("survivor")
    features = alive_features[:10]
    runner = make_runner()
    job_id = submit(runner, tiny_store, features)
    # kill the victim once it is inside a chunk (it has asked the LLM something)
    wait_until(lambda: "label_chunk" in pool.log("victim") and "received" in pool.log("victim"),
               what="the victim to take a chunk")
    time.sleep(0.5)
    pool.kill("victim")
    info = runner.wait(job_id, timeout_s=120)

    assert info.status == "done"
    assert info.counts["pending"] == 0
    assert info.counts["done"] == len(features) and info.counts["failed"] == 0, info.errors
    exps, scores = row_counts(postgres_url)
    assert sorted(exps) == features
    assert set(exps.values()) == {1}, f"duplicate explanation rows: {exps}"
    assert set(scores.values()) == {1}, "duplicate score rows"
    assert len(scores) == 4 * len(features)
    # the chunk the victim held was redelivered to the survivor and finished there
    received = set(re.findall(r"label_chunk\[([0-9a-f-]+)\] received", pool.log("victim")))
    finished = set(re.findall(r"label_chunk\[([0-9a-f-]+)\] succeeded", pool.log("victim")))
    lost = received - finished
    assert lost, "the victim should have died holding a chunk"
    survivor_done = set(re.findall(r"label_chunk\[([0-9a-f-]+)\] succeeded", pool.log("survivor")))
    assert lost <= survivor_done


def test_redis_restart_mid_job_still_finishes(tiny_store, alive_features, queue_env, private_redis, workers,
                                              llm_server, postgres_url):
    llm_server.configure(latency_s=0.3)
    env = queue_env(private_redis.url, LABELER_CHUNK_SIZE="2")
    pool = workers(env)
    pool.start("a")
    features = alive_features[:6]
    runner = make_runner()
    job_id = submit(runner, tiny_store, features)
    wait_until(lambda: runner.progress(job_id).counts["done"] >= 1, what="the first feature")
    private_redis.restart(down_s=1.5)
    info = runner.wait(job_id, timeout_s=120)

    assert info.status == "done"
    assert info.counts == {"pending": 0, "done": len(features), "failed": 0, "reused": 0}
    exps, scores = row_counts(postgres_url)
    assert set(exps.values()) == {1} and set(scores.values()) == {1}
    assert len(scores) == 4 * len(features)


def test_cancel_stops_new_chunks(tiny_store, alive_features, queue_env, redis_url, workers, llm_server):
    llm_server.configure(latency_s=0.3)
    env = queue_env(redis_url, LABELER_CHUNK_SIZE="2")
    pool = workers(env)
    pool.start("a")
    features = alive_features[:10]
    runner = make_runner()
    job_id = submit(runner, tiny_store, features)
    wait_until(lambda: runner.progress(job_id).counts["done"] >= 1, what="the first feature")
    info = runner.cancel(job_id)
    assert info.status == "cancelled"
    # the queue drains: every remaining chunk sees the status and skips
    n_chunks = len(chunked(features, 2))
    wait_until(lambda: pool.log("a").count("succeeded") >= n_chunks, timeout_s=60, what="the queue to drain")
    info = runner.progress(job_id)
    assert info.status == "cancelled"
    # at most the chunk in flight and one started just before the status was read (chunks of 2)
    assert info.counts["pending"] >= len(features) - 4
    assert info.counts["done"] >= 1


def test_chaos_on_the_llm_then_retry_failed(tiny_store, alive_features, queue_env, redis_url, workers,
                                            llm_server):
    # every explainer call fails: features are marked failed with the reason, the job completes
    llm_server.configure(fail_500=1.0)
    env = queue_env(redis_url, LABELER_CHUNK_SIZE="3", LABELER_LLM_MAX_RETRIES="0")
    pool = workers(env)
    pool.start("a", concurrency=2)
    features = alive_features[:6]
    runner = make_runner()
    job_id = submit(runner, tiny_store, features)
    info = runner.wait(job_id, timeout_s=90)
    assert info.status == "done"
    assert info.counts == {"pending": 0, "done": 0, "failed": len(features), "reused": 0}
    assert all("500" in e.error for e in info.errors), info.errors

    # mixed chaos: 25% of calls fail in several ways; each feature ends done or failed with a reason
    llm_server.configure(fail_500=0.1, fail_429=0.05, malformed=0.05, truncated=0.05, retry_after_s=0.1)
    assert runner.retry_failed(job_id, queued=True) == features
    info = runner.wait(job_id, timeout_s=90)
    assert info.status == "done" and info.counts["pending"] == 0
    assert all(e.error for e in info.errors)

    # a healthy server: retrying the failures finishes the job
    llm_server.configure(fail_500=0.0, fail_429=0.0, malformed=0.0, truncated=0.0)
    failed_before = info.counts["failed"]
    retried = runner.retry_failed(job_id, queued=True)
    assert len(retried) == failed_before
    info = runner.wait(job_id, timeout_s=90)
    assert info.counts == {"pending": 0, "done": len(features), "failed": 0, "reused": 0}
