"""Labeling jobs: submit (queued through the app's runner), follow, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query

from labeler.api.deps import PageDep, RepoDep, RunnerDep, SettingsDep, require_read, require_write
from labeler.api.routes.common import sae_or_404
from labeler.api.schemas import JobOut, JobPage, JobRequest
from labeler.core.errors import ConfigError
from labeler.core.naming import parse_feature_range
from labeler.db.jobs import JOB_STATUSES
from labeler.db.views import JobView
from labeler.runs.spec import LabelSpec, make_job_spec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_JOB_ID = 2**31 - 1


def _job_or_404(repo: RepoDep, job_id: int) -> JobView:
    info = repo.jobs.info(job_id)
    if info is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return info


@router.post("", response_model=JobOut, status_code=202, dependencies=[Depends(require_write)])
def submit(repo: RepoDep, runner: RunnerDep, settings: SettingsDep, body: JobRequest = Body(...)):
    """Queue a labeling job (needs Redis and `labeler worker` processes); returns its progress."""
    store_path = body.store_path
    if store_path is None:
        if not (body.model and body.sae):
            raise HTTPException(status_code=422, detail="give store_path, or model and sae of a registered SAE")
        store_path = repo.catalog.sae(sae_or_404(repo, body.model, body.sae)).store_path
        if not store_path:
            raise HTTPException(status_code=422, detail=f"{body.model}/{body.sae} has no registered store; "
                                                        f"give store_path")
    # The store's size bounds the range before anything is built from it (a range is lazy).
    try:
        n_features = runner.stores.get(store_path).n_features
    except (OSError, ValueError) as e:  # a path with a NUL byte, one not allowed to read, ...
        raise HTTPException(status_code=422, detail=f"store_path is not a readable collect store: {e}") from None
    if isinstance(body.features, str):
        features = parse_feature_range(body.features, n_features)
    else:
        features = body.features
        bad = next((f for f in features if not 0 <= f < n_features), None)
        if bad is not None:
            raise ConfigError(f"feature {bad} is out of range: the store has {n_features} features")
    if len(features) > settings.api_max_job_features:
        raise HTTPException(status_code=413, detail=f"the job names {len(features)} features; one request may name "
                                                    f"at most {settings.api_max_job_features} "
                                                    f"(LABELER_API_MAX_JOB_FEATURES): split it into several jobs")
    spec = make_job_spec(store_path, LabelSpec.from_dict(body.spec), settings)
    return _job_or_404(repo, runner.submit(spec, features))


@router.get("", response_model=JobPage, dependencies=[Depends(require_read)])
def list_jobs(page: PageDep, repo: RepoDep,
              status: str | None = Query(None, pattern="^(" + "|".join(JOB_STATUSES) + ")$")):
    return page.wrap(repo.jobs.list(status=status, limit=page.limit, offset=page.offset))


@router.get("/{job_id}", response_model=JobOut, dependencies=[Depends(require_read)])
def get_job(repo: RepoDep, job_id: int = Path(..., ge=1, le=MAX_JOB_ID)):
    """Progress: status, done/failed/pending counts, tokens, cost and the first errors."""
    return _job_or_404(repo, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require_write)])
def cancel(repo: RepoDep, runner: RunnerDep, job_id: int = Path(..., ge=1, le=MAX_JOB_ID)):
    """Stop a job: queued chunks are skipped, running chunks start no new feature."""
    _job_or_404(repo, job_id)
    return runner.cancel(job_id)
