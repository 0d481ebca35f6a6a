"""Labeling runs that resume: reuse finished work of earlier jobs with the same spec.

The eval harness and the demo name their jobs in the job spec (``eval_name`` / ``demo``), so
running the same command again finds the earlier jobs, skips their finished features and
labels only what is missing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa

from labeler.db import models as m
from labeler.report.queries import engine_of


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def matching_jobs(source: Any, sae_id: int, spec: dict[str, Any]) -> list[int]:
    J = m.Job.__table__
    want = _canonical(json.loads(_canonical(spec)))
    with engine_of(source).connect() as c:
        rows = c.execute(sa.select(J.c.id, J.c.spec).where(J.c.sae_id == sae_id).order_by(J.c.id))
        return [r.id for r in rows if r.spec is not None and _canonical(r.spec) == want]


def finished_features(source: Any, job_ids: list[int]) -> set[int]:
    if not job_ids:
        return set()
    JF = m.JobFeature.__table__
    with engine_of(source).connect() as c:
        rows = c.execute(sa.select(JF.c.feature_index).where(JF.c.job_id.in_(job_ids), JF.c.status == "done"))
        return {int(r.feature_index) for r in rows}


def balanced_chunks(items: list[int], size: int) -> list[list[int]]:
    """Chunks of at most ``size`` (one more for the last), never a lone feature at the end:
    a shuffled control needs another feature of the same chunk."""
    parts = [items[i:i + size] for i in range(0, len(items), max(1, size))]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2].extend(parts.pop())
    return parts


@dataclass
class RunOutcome:
    job_id: int | None
    reused: list[int] = field(default_factory=list)  # finished by an earlier run: not recomputed
    labeled: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def run_resumable(store: Any, repo: Any, sae_id: int, features: list[int], spec: Any, spec_d: dict[str, Any],
                  *, chunk: int = 16, on_progress: Callable[[int], None] | None = None) -> RunOutcome:
    """Label the features that no earlier job with this exact spec finished."""
    from labeler.pipeline import label_features

    done = finished_features(repo, matching_jobs(repo, sae_id, spec_d))
    todo = [f for f in features if f not in done]
    out = RunOutcome(job_id=None, reused=[f for f in features if f in done])
    if on_progress and out.reused:
        on_progress(len(out.reused))
    if not todo:
        return out
    out.job_id = repo.create_job(sae_id, spec_d, todo)
    repo.set_job_status(out.job_id, "running")
    for part in balanced_chunks(todo, chunk):
        res = asyncio.run(label_features(store, part, spec, repo, job_id=out.job_id, sae_id=sae_id))
        out.labeled += list(res.done)
        out.failed.update(res.failed)
        if on_progress:
            on_progress(len(part))
    repo.set_job_status(out.job_id, "done")
    return out
