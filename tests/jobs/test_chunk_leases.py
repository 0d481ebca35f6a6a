"""The chunk ledger and the reaper on SQLite and PostgreSQL, without a broker: leases are taken
once, lapse when their heartbeat stops, and lost chunks are queued again, a bounded number of
times.  (tests/jobs/test_recovery.py runs the same machinery with real workers and Redis.)"""

from __future__ import annotations

import time

import pytest

from labeler.core.config import Settings
from labeler.db import Repository
from labeler.runs.queue import visibility_timeout
from labeler.runs.recovery import ChunkLease, Reaper

LEASE_S = 0.2


@pytest.fixture
def repo(database_url):
    r = Repository.open(database_url)
    yield r
    r.close()


class Outbox(list):
    """The messages a reaper sent, as ``(job_id, chunk_id, features)``."""

    def __call__(self, job_id: int, chunk_id: int, features: list[int]) -> None:
        self.append((job_id, chunk_id, list(features)))


def settings(**kw) -> Settings:
    return Settings(chunk_lease_s=LEASE_S, chunk_lost_after_s=0, chunk_max_claims=2, **kw)


def job_with_chunks(repo: Repository, chunks: list[list[int]], spec: dict | None = None):
    job_id = repo.jobs.create(None, spec or {}, [f for c in chunks for f in c])
    repo.jobs.set_status(job_id, "running")
    return job_id, repo.chunks.add(job_id, chunks)


def test_a_lease_is_held_once_and_renewed_while_the_chunk_runs(repo):
    job_id, (chunk,) = job_with_chunks(repo, [[1, 2]])
    first = ChunkLease(repo.chunks, chunk.id, LEASE_S)
    assert first.claim() is not None
    copy = ChunkLease(repo.chunks, chunk.id, LEASE_S)
    assert copy.claim() is None and "leased by" in copy.why_not()  # a redelivered copy skips
    time.sleep(4 * LEASE_S)  # the heartbeat keeps the lease alive past its length
    assert ChunkLease(repo.chunks, chunk.id, LEASE_S).claim() is None
    assert Reaper(repo, Outbox(), settings()).reap().requeued == []
    first.finish()
    assert repo.chunks.get(chunk.id).state == "done"
    late = ChunkLease(repo.chunks, chunk.id, LEASE_S)
    assert late.claim() is None and late.why_not() == f"chunk {chunk.id} is done"


def test_a_lapsed_lease_is_requeued_then_given_up_with_a_reason(repo):
    job_id, (chunk,) = job_with_chunks(repo, [[1, 2, 3]])
    repo.jobs.mark_feature(job_id, 3, "done")
    outbox = Outbox()
    reaper = Reaper(repo, outbox, settings())
    for run in range(2):  # chunk_max_claims = 2: two runs that die, each re-queued or given up
        assert repo.chunks.claim(chunk.id, f"dead-{run}", LEASE_S) is not None  # no heartbeat: dies
        time.sleep(1.5 * LEASE_S)
        report = reaper.reap()
        assert report.requeued == ([chunk.id] if run == 0 else []), report
    assert outbox == [(job_id, chunk.id, [1, 2, 3])]
    assert report.failed == [chunk.id]
    info = repo.jobs.info(job_id)
    assert info.status == "done" and info.counts["failed"] == 2 and info.counts["done"] == 1
    assert all("stopped 2 times" in e.error and "dead-1" in e.error for e in info.errors), info.errors
    assert not reaper.reap()  # given up once, for good


def test_a_queued_chunk_is_resent_only_while_the_broker_queue_is_empty(repo):
    job_id, chunks = job_with_chunks(repo, [[1, 2], [3, 4]])
    repo.chunks.claim(chunks[0].id, "live", 60)
    waiting = [1]
    outbox = Outbox()
    reaper = Reaper(repo, outbox, settings(), waiting=lambda: waiting[0])
    assert not reaper.reap()  # a message is waiting: the chunk may be behind it
    waiting[0] = 0
    assert reaper.reap().resent == [chunks[1].id]  # nothing waits, nobody claimed it: lost
    assert outbox == [(job_id, chunks[1].id, [3, 4])]
    assert repo.chunks.get(chunks[1].id).sends == 2


def test_resume_resends_queued_chunks_and_leaves_a_live_lease_alone(repo, tiny_store):
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, make_job_spec

    spec = make_job_spec(tiny_store, LabelSpec(explainer="baseline", scorers=["embedding"]), settings())
    job_id, chunks = job_with_chunks(repo, [[1, 2], [3, 4], [5, 6]], spec.to_dict())
    repo.chunks.claim(chunks[0].id, "live", 60)
    lease = ChunkLease(repo.chunks, chunks[1].id, 60)
    lease.claim()
    lease.finish()  # its run ended with its features still pending (e.g. a budget stop)
    outbox = Outbox()
    runner = Runner(repo, settings(chunk_size=2), send=outbox)
    assert runner.resume(job_id, queued=True) == [1, 2, 3, 4, 5, 6]
    sent = {tuple(f) for _, _, f in outbox}
    assert sent == {(5, 6), (3, 4)}  # the lost queued chunk again; a new chunk for the finished one


def test_visibility_timeout_follows_the_chunk_not_a_fixed_hour():
    assert visibility_timeout(Settings(chunk_size=16, feature_estimate_s=20)) == 960
    assert visibility_timeout(Settings(chunk_size=2, feature_estimate_s=1, chunk_lease_s=60)) == 120
    assert visibility_timeout(Settings(visibility_timeout_s=4)) == 4
