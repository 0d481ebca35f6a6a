"""Labeling jobs: submit (queued through labeler.jobs), follow, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from labeler.api.deps import Page, PageDep, get_repo, require_read, require_write
from labeler.api.schemas import JobOut, JobPage, JobRequest
from labeler.core.errors import ConfigError
from labeler.core.naming import parse_feature_range
from labeler.db.repository import JOB_STATUSES, Repository

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_JOB_ID = 2**31 - 1


def _job_or_404(repo: Repository, job_id: int) -> dict:
    info = repo.job_info(job_id)
    if info is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return info


@router.post("", response_model=JobOut, status_code=202, dependencies=[Depends(require_write)])
def submit(request: Request, body: JobRequest = Body(...), repo: Repository = Depends(get_repo)):
    """Queue a labeling job (needs Redis and `labeler worker` processes); returns its progress."""
    store_path = body.store_path
    n_features = None
    if store_path is None:
        if not (body.model and body.sae):
            raise HTTPException(status_code=422, detail="give store_path, or model and sae of a registered SAE")
        from labeler.api.routes.common import sae_or_404

        info = repo.sae_info(sae_or_404(repo, body.model, body.sae)) or {}
        store_path = info.get("store_path")
        n_features = info.get("n_features")
        if not store_path:
            raise HTTPException(status_code=422, detail=f"{body.model}/{body.sae} has no registered store; "
                                                        f"give store_path")
    if isinstance(body.features, str):
        features = parse_feature_range(body.features, n_features)
    else:
        if any(f < 0 for f in body.features):
            raise ConfigError("feature indices must be >= 0")
        features = list(body.features)
    try:
        from labeler import jobs
        from labeler.pipeline import LabelSpec
    except ImportError as e:  # pragma: no cover - the jobs package is part of labeler
        raise HTTPException(status_code=503, detail=f"jobs are not available: {e}") from None
    try:
        spec = LabelSpec.from_dict(body.spec)
    except TypeError as e:
        raise ConfigError(f"bad label spec: {e}") from None
    job_id = jobs.submit_job(store_path, features, spec, request.app.state.settings)
    return _job_or_404(repo, int(job_id))


@router.get("", response_model=JobPage, dependencies=[Depends(require_read)])
def list_jobs(status: str | None = Query(None, pattern="^(" + "|".join(JOB_STATUSES) + ")$"),
              page: Page = PageDep, repo: Repository = Depends(get_repo)):
    return page.wrap(repo.list_jobs(status=status, limit=page.limit, offset=page.offset))


@router.get("/{job_id}", response_model=JobOut, dependencies=[Depends(require_read)])
def get_job(job_id: int = Path(..., ge=1, le=MAX_JOB_ID), repo: Repository = Depends(get_repo)):
    """Progress: status, done/failed/pending counts, tokens, cost and the first errors."""
    return _job_or_404(repo, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require_write)])
def cancel(request: Request, job_id: int = Path(..., ge=1, le=MAX_JOB_ID), repo: Repository = Depends(get_repo)):
    """Stop a job: queued chunks are skipped, running chunks start no new feature."""
    _job_or_404(repo, job_id)
    try:
        from labeler import jobs

        jobs.cancel_job(job_id, request.app.state.settings)
    except ImportError:  # pragma: no cover
        info = repo.job_info(job_id) or {}
        if info.get("status") != "done":
            repo.set_job_status(job_id, "cancelled")
    return _job_or_404(repo, job_id)
