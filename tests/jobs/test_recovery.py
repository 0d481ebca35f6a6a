"""Lost work is recovered without an operator (#16 item 3): real `labeler worker` processes,
a real redis-server of our own (restarted with and without persistence), PostgreSQL and the
LLM test server.  Every test bounds the job's completion well under the old 3,600 s wait, and
checks that recovery never duplicates a label (explanation and score rows are unique per
feature) and that every feature ends done or failed with a reason.

The workers run with the default visibility timeout (derived from the chunk's expected
duration: minutes, not the seconds an earlier test setup used), so recovery here comes from
the chunk leases and the reaper inside every worker, not from the broker's redelivery."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import sqlalchemy as sa

from labeler.core.config import get_settings
from labeler.db import Repository
from labeler.runs.queue import CelerySender
from labeler.runs.runner import Runner
from labeler.runs.spec import LabelSpec, make_job_spec

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

LABEL = LabelSpec(explainer="highlighted", scorers=["simulation"])
RECOVERY_BOUND_S = 60  # the old behaviour waited 3,600 s (the visibility timeout)
FAST_RECOVERY = {
    "LABELER_VISIBILITY_TIMEOUT_S": None,  # the derived default
    "LABELER_CHUNK_LEASE_S": "3",  # a dead worker's lease lapses within 3 s
    "LABELER_REAPER_INTERVAL_S": "0.5",
    "LABELER_CHUNK_LOST_AFTER_S": "3",
}


def make_runner() -> Runner:
    settings = get_settings()
    return Runner(Repository.open(settings.resolved_database_url), settings, send=CelerySender(settings))


def wait_until(predicate, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def assert_complete_without_duplicates(runner: Runner, job_id: int, features: list[int], url: str) -> None:
    info = runner.progress(job_id, max_errors=1000)
    assert info.status == "done" and info.counts["pending"] == 0, info.counts
    assert info.counts["done"] + info.counts["failed"] == len(features)
    assert all(e.error for e in info.errors), info.errors  # failed, always with a reason
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            exps = Counter(r[0] for r in c.execute(sa.text("SELECT feature_index FROM explanation")))
            scores = Counter(tuple(r) for r in c.execute(
                sa.text("SELECT explanation_id, method, control FROM score")))
    finally:
        eng.dispose()
    done = set(runner.repo.jobs.features(job_id, status="done"))
    assert done <= set(exps), "a done feature without its explanation"
    assert set(exps.values()) <= {1}, f"duplicate explanation rows: {exps}"
    assert set(scores.values()) <= {1}, f"duplicate score rows: {scores}"


def test_sigkilled_worker_chunk_is_finished_by_a_fresh_default_worker(tiny_store, alive_features, queue_env,
                                                                      private_redis, workers, llm_server,
                                                                      postgres_url):
    llm_server.configure(latency_s=0.5)
    env = queue_env(private_redis.url, LABELER_CHUNK_SIZE="4", **FAST_RECOVERY)
    pool = workers(env)
    pool.start("victim")
    features = alive_features[:8]
    runner = make_runner()
    job_id = runner.submit(make_job_spec(tiny_store, LABEL, runner.settings), features)
    wait_until(lambda: llm_server.stats["chat"] >= 2, what="the victim to be inside a chunk")
    pool.kill("victim")
    killed = time.monotonic()
    pool.start("fresh")  # plain `labeler worker`: nothing told about the dead one
    runner.wait(job_id, timeout_s=RECOVERY_BOUND_S)
    print(f"SIGKILL recovery: job done {time.monotonic() - killed:.1f} s after the kill")
    assert_complete_without_duplicates(runner, job_id, features, postgres_url)
    assert runner.progress(job_id).counts["done"] == len(features)


@pytest.mark.parametrize("persistent", [False, True], ids=["volatile", "persistent"])
def test_redis_restart_mid_job_finishes_on_its_own(persistent, tiny_store, alive_features, queue_env, tmp_path,
                                                   workers, llm_server, postgres_url, request):
    redis = request.getfixturevalue("private_redis" if persistent else "volatile_redis")
    llm_server.configure(latency_s=0.4)
    env = queue_env(redis.url, LABELER_CHUNK_SIZE="2", **FAST_RECOVERY)
    pool = workers(env)
    pool.start("a")
    pool.start("victim")
    features = alive_features[:16]
    runner = make_runner()
    job_id = runner.submit(make_job_spec(tiny_store, LABEL, runner.settings), features)
    # a worker dies holding a chunk: with persistence Redis keeps its message unacknowledged for
    # the whole visibility timeout; without, that message is gone with every queued one
    wait_until(lambda: "label_chunk" in pool.log("victim") and "received" in pool.log("victim"),
               what="the victim to take a chunk")
    wait_until(lambda: runner.progress(job_id).counts["done"] >= 1, what="the first chunk")
    pool.kill("victim")
    redis.restart(down_s=1.5)
    restarted = time.monotonic()
    runner.wait(job_id, timeout_s=RECOVERY_BOUND_S)
    print(f"redis restart ({'persistent' if persistent else 'volatile'}): job done "
          f"{time.monotonic() - restarted:.1f} s after the restart")
    assert_complete_without_duplicates(runner, job_id, features, postgres_url)
    assert runner.progress(job_id).counts["done"] == len(features)


def test_a_retried_failure_counts_two_attempts_even_when_the_broker_redelivers(tiny_store, alive_features,
                                                                               queue_env, redis_url, workers,
                                                                               llm_server):
    # chunks outlive a 1 s visibility timeout, so Redis hands each one to a second worker
    # thread while the first still runs it; the lease makes that copy a cheap skip
    llm_server.configure(fail_500=1.0, latency_s=2.5)
    env = queue_env(redis_url, LABELER_CHUNK_SIZE="2", LABELER_LLM_MAX_RETRIES="0",
                    LABELER_VISIBILITY_TIMEOUT_S="1", LABELER_CHUNK_LEASE_S="6")
    pool = workers(env)
    pool.start("a", concurrency=3)
    features = alive_features[:4]
    runner = make_runner()
    job_id = runner.submit(make_job_spec(tiny_store, LABEL, runner.settings), features)
    info = runner.wait(job_id, timeout_s=60)
    assert info.counts["failed"] == len(features)
    assert runner.retry_failed(job_id, queued=True) == features
    info = runner.wait(job_id, timeout_s=60)
    assert info.counts["failed"] == len(features)
    assert [e.attempts for e in info.errors] == [2] * len(features), info.errors
    assert llm_server.stats["chat"] == 2 * len(features)  # one explainer call per attempt, no more
