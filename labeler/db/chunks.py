"""The chunk ledger: one ``job_chunk`` row per queued chunk, the truth the queue's messages
only point at.  A worker claims a chunk's lease before working on it (one atomic update, so a
redelivered copy of a chunk that is leased elsewhere or already done is skipped), renews it
while working, and marks the chunk done at the end.  ``labeler.runs.recovery`` finds the
chunks whose lease lapsed or whose message was lost and queues them again.

Every state change is one conditional UPDATE: of several workers (or reapers) racing for the
same chunk exactly one sees ``rowcount == 1``.  Times are the writers' clocks (UTC); leases
last tens of seconds, so clocks must agree to well within that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import sqlalchemy as sa

from labeler.db.database import Database
from labeler.db.keys import clean_text
from labeler.db.models import Job, JobChunk, utcnow

T_CHUNK = JobChunk.__table__
T_JOB = Job.__table__

ACTIVE_JOB = ("pending", "running")
"""Jobs whose chunks are worth recovering (a cancelled, finished or budget-stopped job's
chunks would only skip)."""


@dataclass(frozen=True)
class Chunk:
    id: int
    job_id: int
    number: int
    features: list[int]
    state: str
    lease_owner: str | None
    lease_expires_at: datetime | None
    claims: int
    sends: int
    error: str | None


def _chunk(row) -> Chunk:
    return Chunk(id=row.id, job_id=row.job_id, number=row.number, features=[int(f) for f in row.features],
                 state=row.state, lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at,
                 claims=row.claims, sends=row.sends, error=row.error)


class ChunkLedger:
    def __init__(self, db: Database):
        self.db = db

    def add(self, job_id: int, chunks: Sequence[Sequence[int]]) -> list[Chunk]:
        """New queued chunks of a job (numbered after its earlier ones), each counted as sent
        once: the caller sends their messages next."""
        now = utcnow()
        with self.db.engine.begin() as c:
            first = c.execute(sa.select(sa.func.coalesce(sa.func.max(T_CHUNK.c.number) + 1, 0))
                              .where(T_CHUNK.c.job_id == job_id)).scalar_one()
            rows = [dict(job_id=job_id, number=first + i, features=[int(f) for f in feats], state="queued",
                         claims=0, sends=1, queued_at=now, created_at=now, updated_at=now)
                    for i, feats in enumerate(chunks)]
            if rows:
                c.execute(T_CHUNK.insert(), rows)
            added = c.execute(sa.select(T_CHUNK).where(T_CHUNK.c.job_id == job_id, T_CHUNK.c.number >= first)
                              .order_by(T_CHUNK.c.number)).all()
        return [_chunk(r) for r in added]

    def get(self, chunk_id: int) -> Chunk | None:
        with self.db.read_engine.connect() as c:
            row = c.execute(sa.select(T_CHUNK).where(T_CHUNK.c.id == chunk_id)).first()
        return None if row is None else _chunk(row)

    def of_job(self, job_id: int, *, unfinished: bool = False) -> list[Chunk]:
        q = sa.select(T_CHUNK).where(T_CHUNK.c.job_id == job_id).order_by(T_CHUNK.c.number)
        if unfinished:
            q = q.where(T_CHUNK.c.state != "done")
        with self.db.read_engine.connect() as c:
            return [_chunk(r) for r in c.execute(q)]

    # --- a worker's lease ---------------------------------------------------------------------

    def claim(self, chunk_id: int, owner: str, lease_s: float) -> Chunk | None:
        """Take the chunk's lease for ``owner``: only a queued chunk, or a running one whose
        lease lapsed (its worker died).  None: done, or leased by a live worker."""
        now = utcnow()
        claimable = sa.or_(T_CHUNK.c.state == "queued",
                           sa.and_(T_CHUNK.c.state == "running", T_CHUNK.c.lease_expires_at < now))
        with self.db.engine.begin() as c:
            res = c.execute(T_CHUNK.update().where(T_CHUNK.c.id == chunk_id, claimable).values(
                state="running", lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s),
                heartbeat_at=now, claims=T_CHUNK.c.claims + 1, error=None, updated_at=now))
            if res.rowcount != 1:
                return None
            return _chunk(c.execute(sa.select(T_CHUNK).where(T_CHUNK.c.id == chunk_id)).one())

    def renew(self, chunk_id: int, owner: str, lease_s: float) -> bool:
        """The heartbeat: extend ``owner``'s lease.  False: the lease is no longer ours."""
        now = utcnow()
        with self.db.engine.begin() as c:
            res = c.execute(T_CHUNK.update().where(T_CHUNK.c.id == chunk_id, T_CHUNK.c.state == "running",
                                                   T_CHUNK.c.lease_owner == owner)
                            .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now,
                                    updated_at=now))
        return res.rowcount == 1

    def finish(self, chunk_id: int, owner: str) -> bool:
        """The run under ``owner``'s lease ended: the chunk is done (what became of each feature
        is in ``job_feature``)."""
        now = utcnow()
        with self.db.engine.begin() as c:
            res = c.execute(T_CHUNK.update().where(T_CHUNK.c.id == chunk_id, T_CHUNK.c.state == "running",
                                                   T_CHUNK.c.lease_owner == owner)
                            .values(state="done", lease_expires_at=None, updated_at=now))
        return res.rowcount == 1

    def release(self, chunk_id: int, owner: str, error: str) -> None:
        """The run crashed: let the lease lapse now (the reaper re-queues the chunk, counting
        the claim) and keep the reason for the features if it keeps crashing."""
        now = utcnow()
        with self.db.engine.begin() as c:
            c.execute(T_CHUNK.update().where(T_CHUNK.c.id == chunk_id, T_CHUNK.c.state == "running",
                                             T_CHUNK.c.lease_owner == owner)
                      .values(lease_expires_at=now, error=clean_text(error), updated_at=now))

    # --- recovery -----------------------------------------------------------------------------

    def _active(self, job_id: int | None):
        q = sa.select(T_CHUNK).join(T_JOB, T_JOB.c.id == T_CHUNK.c.job_id).where(T_JOB.c.status.in_(ACTIVE_JOB))
        return q if job_id is None else q.where(T_CHUNK.c.job_id == job_id)

    def expired(self, now: datetime, *, job_id: int | None = None) -> list[Chunk]:
        """Running chunks of active jobs whose lease lapsed before ``now``."""
        q = self._active(job_id).where(T_CHUNK.c.state == "running", T_CHUNK.c.lease_expires_at < now)
        with self.db.read_engine.connect() as c:
            return [_chunk(r) for r in c.execute(q.order_by(T_CHUNK.c.id))]

    def unclaimed(self, sent_before: datetime, *, job_id: int | None = None) -> list[Chunk]:
        """Queued chunks of active jobs last sent before ``sent_before`` and not claimed since."""
        q = self._active(job_id).where(T_CHUNK.c.state == "queued", T_CHUNK.c.queued_at < sent_before)
        with self.db.read_engine.connect() as c:
            return [_chunk(r) for r in c.execute(q.order_by(T_CHUNK.c.id))]

    def requeue(self, chunk: Chunk, *, done: bool = False) -> bool:
        """Put ``chunk`` back to queued (one more send), or close it (``done``), provided it is
        still as ``chunk`` saw it: the same state and lease owner, and for a running chunk a
        lapsed lease.  True for the one caller that changed it."""
        now = utcnow()
        same = [T_CHUNK.c.id == chunk.id, T_CHUNK.c.state == chunk.state, T_CHUNK.c.sends == chunk.sends,
                T_CHUNK.c.claims == chunk.claims]
        if chunk.state == "running":
            same.append(T_CHUNK.c.lease_expires_at < now)
        values = dict(state="done", lease_expires_at=None) if done else dict(
            state="queued", lease_owner=None, lease_expires_at=None, sends=T_CHUNK.c.sends + 1, queued_at=now)
        with self.db.engine.begin() as c:
            res = c.execute(T_CHUNK.update().where(*same).values(updated_at=now, **values))
        return res.rowcount == 1

    def covered(self, job_id: int) -> set[int]:
        """Features of the job in chunks not done yet (queued, or leased by a worker)."""
        return {f for ch in self.of_job(job_id, unfinished=True) for f in ch.features}
