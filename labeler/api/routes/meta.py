"""Health, version, models and SAEs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

import labeler
from labeler.api.deps import PageDep, RepoDep, require_read
from labeler.api.schemas import Health, ModelPage, SaePage, VersionInfo
from labeler.core.naming import slugify

router = APIRouter()


@router.get("/health", response_model=Health, tags=["meta"])
def health(repo: RepoDep):
    """Liveness plus a database round trip."""
    try:
        repo.db.ping()
        rev = repo.db.current_revision()
    except Exception as e:  # report, do not crash: this is what monitors poll
        return JSONResponse(status_code=503, content={"status": "error", "database": repo.db.dialect,
                                                      "detail": str(e).splitlines()[0][:300]})
    if rev is None:
        return JSONResponse(status_code=503, content={"status": "error", "database": repo.db.dialect,
                                                      "detail": "no schema: run `labeler db upgrade`"})
    return Health(status="ok", database=repo.db.dialect, revision=rev)


@router.get("/version", response_model=VersionInfo, tags=["meta"])
def version(repo: RepoDep):
    try:
        rev = repo.db.current_revision()
    except Exception:  # the version answers even when the database does not
        rev = None
    return VersionInfo(version=labeler.__version__, schema_revision=rev)


@router.get("/v1/models", response_model=ModelPage, tags=["catalog"], dependencies=[Depends(require_read)])
def list_models(page: PageDep, repo: RepoDep):
    return page.wrap(repo.catalog.list_models(limit=page.limit, offset=page.offset))


@router.get("/v1/saes", response_model=SaePage, tags=["catalog"], dependencies=[Depends(require_read)])
def list_saes(page: PageDep, repo: RepoDep,
              model: str | None = Query(None, max_length=200, description="only this model's SAEs")):
    return page.wrap(repo.catalog.list_saes(slugify(model) if model else None, limit=page.limit, offset=page.offset))


@router.get("/v1/models/{model}/saes", response_model=SaePage, tags=["catalog"],
            dependencies=[Depends(require_read)])
def list_model_saes(model: str, page: PageDep, repo: RepoDep):
    if not repo.catalog.model_exists(slugify(model)):
        raise HTTPException(status_code=404, detail=f"no model {model}: see GET /v1/models")
    return page.wrap(repo.catalog.list_saes(slugify(model), limit=page.limit, offset=page.offset))
