"""The job ledger: a job row plus one row per feature (its status is the resume point).

A job's ``spec_hash`` names what it computes (``labeler.runs.spec.JobSpec.reuse_hash``): a
new job with the same hash on the same SAE takes the features an earlier one finished as
done (``reused_from`` says by which job) instead of computing them again.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.catalog import T_SAE, sae_select
from labeler.db.database import Database
from labeler.db.keys import clean_text, iso, json_safe
from labeler.db.models import Job, JobFeature, utcnow
from labeler.db.views import JobError, JobView
from labeler.records import LLMUsage

T_JOB = Job.__table__
T_JOBF = JobFeature.__table__

JOB_STATUSES = ("pending", "running", "cancelled", "done", "failed", "budget_reached")
FEATURE_STATUSES = ("pending", "done", "failed")
INSERT_BATCH = 10_000


def _check_feature_status(status: str) -> None:
    if status not in FEATURE_STATUSES:
        raise InputError(f"unknown feature status {status!r}: use one of {', '.join(FEATURE_STATUSES)}")


class JobLedger:
    def __init__(self, db: Database):
        self.db = db

    def create(self, sae_id: int | None, spec: dict, features: Sequence[int], *, spec_hash: str | None = None,
               reused: dict[int, int] | None = None, budget_usd: float | None = None) -> int:
        """A job row plus one row per feature: pending, or done when ``reused`` names the
        earlier job that finished it.  ``budget_usd`` caps its LLM spend.  Returns the job id."""
        reused = reused or {}
        feats = list(dict.fromkeys(int(f) for f in features))
        now = utcnow()
        with self.db.engine.begin() as c:
            job_id = c.execute(T_JOB.insert().values(sae_id=sae_id, status="pending", spec=json_safe(spec),
                                                     spec_hash=spec_hash, n_features=len(feats), budget_usd=budget_usd,
                                                     spent_usd=0.0, created_at=now,
                                                     updated_at=now).returning(T_JOB.c.id)).scalar_one()
            for start in range(0, len(feats), INSERT_BATCH):
                c.execute(T_JOBF.insert(), [
                    dict(job_id=job_id, feature_index=f, status="done" if f in reused else "pending",
                         reused_from=reused.get(f), attempts=0, calls=0, prompt_tokens=0, completion_tokens=0,
                         cost_usd=0.0, updated_at=now)
                    for f in feats[start:start + INSERT_BATCH]])
        return job_id

    def finished_elsewhere(self, sae_id: int, spec_hash: str) -> dict[int, int]:
        """Features that earlier jobs with this spec hash finished: feature -> the job that
        computed it."""
        q = (sa.select(T_JOBF.c.feature_index, sa.func.min(sa.func.coalesce(T_JOBF.c.reused_from, T_JOBF.c.job_id)))
             .join(T_JOB, T_JOB.c.id == T_JOBF.c.job_id)
             .where(T_JOB.c.sae_id == sae_id, T_JOB.c.spec_hash == spec_hash, T_JOBF.c.status == "done")
             .group_by(T_JOBF.c.feature_index))
        with self.db.read_engine.connect() as c:
            return {int(f): int(j) for f, j in c.execute(q)}

    def mark_feature(self, job_id: int, feature: int, status: str, error: str | None = None,
                     usage: LLMUsage | None = None) -> None:
        """Record a feature's outcome in a job.  Idempotent: the usage is set (not added), and a
        feature that is ``done`` stays done when a late duplicate reports a failure."""
        _check_feature_status(status)
        u = usage or LLMUsage()
        now = utcnow()
        outcome = int(status != "pending")  # going back to pending (a retry) is not an attempt
        values = dict(job_id=job_id, feature_index=int(feature), status=status, error=clean_text(error), attempts=outcome,
                      calls=u.calls, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                      cost_usd=float(u.cost_usd), updated_at=now)
        stmt = self.db.insert(T_JOBF).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "feature_index"],
            set_={"status": stmt.excluded.status, "error": stmt.excluded.error,
                  "attempts": T_JOBF.c.attempts + outcome, "calls": stmt.excluded.calls,
                  "prompt_tokens": stmt.excluded.prompt_tokens, "completion_tokens": stmt.excluded.completion_tokens,
                  "cost_usd": stmt.excluded.cost_usd, "updated_at": stmt.excluded.updated_at},
            where=sa.or_(T_JOBF.c.status != "done", stmt.excluded.status == "done"),
        )
        with self.db.engine.begin() as c:
            if c.execute(sa.select(T_JOB.c.id).where(T_JOB.c.id == job_id)).first() is None:
                raise InputError(f"job {job_id} does not exist")
            c.execute(stmt)
            c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(updated_at=now))

    def set_status(self, job_id: int, status: str) -> None:
        if status not in JOB_STATUSES:
            raise InputError(f"unknown job status {status!r}: use one of {', '.join(JOB_STATUSES)}")
        with self.db.engine.begin() as c:
            res = c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(status=status, updated_at=utcnow()))
            if res.rowcount == 0:
                raise InputError(f"job {job_id} does not exist")

    def finish_if_complete(self, job_id: int) -> bool:
        """Mark a pending or running job done when none of its features is pending (failures
        count as finished); True when the job is done."""
        with self.db.engine.begin() as c:
            status = c.execute(sa.select(T_JOB.c.status).where(T_JOB.c.id == job_id)).scalar_one_or_none()
            if status in ("done", "cancelled", None):
                return status == "done"
            pending = c.execute(sa.select(sa.func.count()).where(
                T_JOBF.c.job_id == job_id, T_JOBF.c.status == "pending")).scalar_one()
            if pending:
                return False
            c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(status="done", updated_at=utcnow()))
            return True

    def charge(self, job_id: int, usd: float) -> float:
        """Add ``usd`` (negative: give back a reservation's unspent part) to the job's spend, in
        one atomic update whichever worker calls; returns the new total."""
        with self.db.engine.begin() as c:
            spent = c.execute(T_JOB.update().where(T_JOB.c.id == job_id)
                              .values(spent_usd=T_JOB.c.spent_usd + float(usd))
                              .returning(T_JOB.c.spent_usd)).scalar_one_or_none()
        if spent is None:
            raise InputError(f"job {job_id} does not exist")
        return float(spent)

    def reserve(self, job_id: int, usd: float) -> float | None:
        """Add ``usd`` to the job's spend only if it stays within the job's budget (one atomic
        update); returns the new total, or None when it does not fit."""
        fits = sa.or_(T_JOB.c.budget_usd.is_(None), T_JOB.c.spent_usd + float(usd) <= T_JOB.c.budget_usd)
        with self.db.engine.begin() as c:
            spent = c.execute(T_JOB.update().where(T_JOB.c.id == job_id, fits)
                              .values(spent_usd=T_JOB.c.spent_usd + float(usd))
                              .returning(T_JOB.c.spent_usd)).scalar_one_or_none()
            if spent is None and c.execute(sa.select(T_JOB.c.id).where(T_JOB.c.id == job_id)).first() is None:
                raise InputError(f"job {job_id} does not exist")
        return None if spent is None else float(spent)

    def budget(self, job_id: int) -> tuple[float | None, float]:
        """(budget, spent) of a job, in USD."""
        with self.db.read_engine.connect() as c:
            row = c.execute(sa.select(T_JOB.c.budget_usd, T_JOB.c.spent_usd).where(T_JOB.c.id == job_id)).first()
        if row is None:
            raise InputError(f"job {job_id} does not exist")
        return row.budget_usd, float(row.spent_usd or 0.0)

    def set_budget(self, job_id: int, budget_usd: float | None) -> None:
        with self.db.engine.begin() as c:
            c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(budget_usd=budget_usd, updated_at=utcnow()))

    def status(self, job_id: int) -> str:
        with self.db.read_engine.connect() as c:
            status = c.execute(sa.select(T_JOB.c.status).where(T_JOB.c.id == job_id)).scalar_one_or_none()
        if status is None:
            raise InputError(f"no job {job_id} in {self.db!r}: see `labeler jobs` for the list")
        return str(status)

    def features(self, job_id: int, status: str | None = None) -> list[int]:
        q = sa.select(T_JOBF.c.feature_index).where(T_JOBF.c.job_id == job_id).order_by(T_JOBF.c.feature_index)
        if status is not None:
            _check_feature_status(status)
            q = q.where(T_JOBF.c.status == status)
        with self.db.read_engine.connect() as c:
            return [r[0] for r in c.execute(q)]

    def info(self, job_id: int, *, max_errors: int = 20) -> JobView | None:
        """Status, per-status counts, tokens, cost and the first errors of a job; None if unknown."""
        with self.db.read_engine.connect() as c:
            job = c.execute(sa.select(T_JOB).where(T_JOB.c.id == job_id)).mappings().first()
            if job is None:
                return None
            counts = {s: 0 for s in FEATURE_STATUSES}
            for status, n in c.execute(sa.select(T_JOBF.c.status, sa.func.count()).where(T_JOBF.c.job_id == job_id)
                                       .group_by(T_JOBF.c.status)):
                counts[status] = n
            counts["reused"] = c.execute(sa.select(sa.func.count()).where(
                T_JOBF.c.job_id == job_id, T_JOBF.c.reused_from.is_not(None))).scalar_one()
            tot = c.execute(sa.select(sa.func.coalesce(sa.func.sum(T_JOBF.c.calls), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.prompt_tokens), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.completion_tokens), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.cost_usd), 0.0))
                            .where(T_JOBF.c.job_id == job_id)).one()
            errors = c.execute(sa.select(T_JOBF.c.feature_index, T_JOBF.c.error, T_JOBF.c.attempts)
                               .where(T_JOBF.c.job_id == job_id, T_JOBF.c.status == "failed")
                               .order_by(T_JOBF.c.feature_index).limit(max_errors)).all()
            sae = None
            if job["sae_id"] is not None:
                sae = c.execute(sae_select().where(T_SAE.c.id == job["sae_id"])).mappings().first()
        return JobView(
            id=job["id"], sae_id=job["sae_id"], model=sae["model_slug"] if sae else None,
            sae=sae["slug"] if sae else None, status=job["status"], spec=job["spec"] or {},
            n_features=job["n_features"], counts=counts,
            tokens={"calls": int(tot[0]), "prompt": int(tot[1]), "completion": int(tot[2])}, cost_usd=float(tot[3]),
            errors=[JobError(feature=e.feature_index, error=e.error, attempts=e.attempts) for e in errors],
            budget_usd=job["budget_usd"], spent_usd=float(job["spent_usd"] or 0.0),
            created_at=iso(job["created_at"]), updated_at=iso(job["updated_at"]),
        )

    def list(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[JobView]:
        q = sa.select(T_JOB.c.id).order_by(T_JOB.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            q = q.where(T_JOB.c.status == status)
        with self.db.read_engine.connect() as c:
            ids = [r[0] for r in c.execute(q)]
        return [info for i in ids if (info := self.info(i, max_errors=0)) is not None]

    def names(self, job_ids: Sequence[int]) -> dict[int, str]:
        """The ``name`` in each named job's spec (the demo, eval configurations)."""
        if not job_ids:
            return {}
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.select(T_JOB.c.id, T_JOB.c.spec).where(T_JOB.c.id.in_(list(job_ids))))
            return {r.id: r.spec["name"] for r in rows if (r.spec or {}).get("name")}
