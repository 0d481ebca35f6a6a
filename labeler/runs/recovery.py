"""Lost work comes back on its own: chunk leases with heartbeats, and a reaper in every worker.

A worker that takes a chunk's message first claims the chunk's lease in the database
(``ChunkLease``): a redelivered copy of a chunk that is done, or leased by a live worker, is
skipped at the cost of one query.  A heartbeat thread renews the lease every third of
``chunk_lease_s`` while the chunk runs.

The ``Reaper`` (a thread in every ``labeler worker``; also ``Runner.resume``) finds
- running chunks whose lease lapsed: their worker died (SIGKILL, lost machine).  They are
  queued again with a new message; after ``chunk_max_claims`` runs that never finished, the
  chunk's pending features fail with the reason instead, so a chunk that kills its workers
  cannot loop forever;
- queued chunks that nobody claimed for ``chunk_lost_after_s`` while the broker's queue is
  empty: their message is gone (a Redis restart without persistence, a sender that died
  before sending).  A chunk that is merely waiting behind others has messages ahead of it, so
  the queue is not empty; a rare false alarm (a message taken by a worker in the instant
  before its claim) sends one more message, whose run is a cheap skip.

Labels stay exactly-once whatever is re-sent: writes are idempotent, the lease lets one run
at a time work on a chunk, and a chunk works only on its job's still-pending features.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from labeler.core.config import Settings
from labeler.db import Repository
from labeler.db.chunks import Chunk, ChunkLedger
from labeler.db.models import utcnow

log = logging.getLogger(__name__)

ChunkSender = Callable[[int, int, list[int]], None]
"""Queues one chunk of a job for a worker: ``send(job_id, chunk_id, features)``."""


def lease_owner() -> str:
    """A name for one claim: the machine and process (for people reading the table) and a
    random part (so two claims never share an owner)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class ChunkLease:
    """One worker's hold on one chunk: ``claim()``, then ``finish()`` or ``release(error)``;
    renewed by a heartbeat thread in between."""

    def __init__(self, chunks: ChunkLedger, chunk_id: int, lease_s: float):
        self.chunks = chunks
        self.chunk_id = chunk_id
        self.lease_s = float(lease_s)
        self.owner = lease_owner()
        self.lost = threading.Event()  # set when another worker took the chunk over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self) -> Chunk | None:
        chunk = self.chunks.claim(self.chunk_id, self.owner, self.lease_s)
        if chunk is not None:
            self._thread = threading.Thread(target=self._beat, name=f"lease-{self.chunk_id}", daemon=True)
            self._thread.start()
        return chunk

    def why_not(self) -> str:
        """Why a claim failed, for the task's message."""
        chunk = self.chunks.get(self.chunk_id)
        if chunk is None:
            return f"chunk {self.chunk_id} is unknown"
        if chunk.state == "done":
            return f"chunk {self.chunk_id} is done"
        return f"chunk {self.chunk_id} is leased by {chunk.lease_owner}"

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.chunks.renew(self.chunk_id, self.owner, self.lease_s):
                    self.lost.set()
                    log.warning("lost the lease on chunk %s (another worker took it over)", self.chunk_id)
                    return
            except Exception as e:  # the database is away: keep trying while the lease lasts
                log.warning("lease heartbeat of chunk %s failed: %s", self.chunk_id, e)

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        self._stop_beating()
        self.chunks.finish(self.chunk_id, self.owner)

    def release(self, error: str) -> None:
        self._stop_beating()
        self.chunks.release(self.chunk_id, self.owner, error)


@dataclass
class ReapReport:
    requeued: list[int] = field(default_factory=list)  # chunks whose lease lapsed, sent again
    resent: list[int] = field(default_factory=list)  # queued chunks whose message was lost, sent again
    failed: list[int] = field(default_factory=list)  # chunks given up: pending features failed

    def __bool__(self) -> bool:
        return bool(self.requeued or self.resent or self.failed)


class Reaper:
    """Finds lost chunks and queues them again (see the module docstring).  ``waiting`` counts
    the messages waiting in the broker's queue (``CelerySender.waiting``)."""

    def __init__(self, repo: Repository, send: ChunkSender, settings: Settings, *,
                 waiting: Callable[[], int] | None = None):
        self.repo = repo
        self.send = send
        self.settings = settings
        self.waiting = waiting

    def reap(self, *, job_id: int | None = None, resend_queued: bool = False) -> ReapReport:
        """One pass.  ``resend_queued``: re-send every queued chunk (of ``job_id``) now, whatever
        the broker holds (``labeler submit --resume``: the operator says messages were lost)."""
        report = ReapReport()
        now = utcnow()
        for chunk in self.repo.chunks.expired(now, job_id=job_id):
            if chunk.claims >= self.settings.chunk_max_claims:
                if self.repo.chunks.requeue(chunk, done=True):
                    self._give_up(chunk)
                    report.failed.append(chunk.id)
            elif self.repo.chunks.requeue(chunk):
                self._send(chunk)
                report.requeued.append(chunk.id)
        if resend_queued or self._queue_is_empty():
            cutoff = now if resend_queued else now - timedelta(seconds=self.settings.chunk_lost_after_s)
            for chunk in self.repo.chunks.unclaimed(cutoff + timedelta(microseconds=1), job_id=job_id):
                if self.repo.chunks.requeue(chunk):
                    self._send(chunk)
                    report.resent.append(chunk.id)
        if report:
            log.warning("reaper: re-queued %s (lease lapsed), re-sent %s (message lost), gave up on %s",
                        report.requeued, report.resent, report.failed)
        return report

    def _queue_is_empty(self) -> bool:
        if self.waiting is None:
            return False
        try:
            return self.waiting() == 0
        except Exception as e:  # the broker is away: nothing can be told about its messages now
            log.warning("reaper: cannot read the broker's queue: %s", e)
            return False

    def _send(self, chunk: Chunk) -> None:
        try:
            self.send(chunk.job_id, chunk.id, chunk.features)
        except Exception as e:  # stays queued; re-sent once the broker is back and its queue empty
            log.warning("reaper: could not send chunk %s: %s", chunk.id, e)

    def _give_up(self, chunk: Chunk) -> None:
        reason = (f"lost: the chunk's worker stopped {chunk.claims} times before finishing it "
                  f"(last lease held by {chunk.lease_owner}"
                  + (f"; last error: {chunk.error}" if chunk.error else "")
                  + "); `labeler submit --retry-failed` tries again")
        pending = set(self.repo.jobs.features(chunk.job_id, status="pending"))
        for f in chunk.features:
            if f in pending:
                self.repo.jobs.mark_feature(chunk.job_id, f, "failed", error=reason)
        self.repo.jobs.finish_if_complete(chunk.job_id)

    def run(self, stop: threading.Event) -> None:
        """Reap every ``reaper_interval_s`` until ``stop`` is set; a failed pass is logged and
        the next one tries again."""
        while not stop.wait(self.settings.reaper_interval_s):
            try:
                self.reap()
            except Exception as e:
                log.warning("reaper pass failed: %s", e)

    def start(self) -> threading.Event:
        """Reap in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop,), name="labeler-reaper", daemon=True).start()
        return stop
