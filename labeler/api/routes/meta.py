"""Health, version, models and SAEs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

import labeler
from labeler.api.deps import Page, PageDep, get_repo, require_read
from labeler.api.schemas import Health, ModelPage, SaePage, VersionInfo
from labeler.core.naming import slugify
from labeler.db.repository import Repository

router = APIRouter()


@router.get("/health", response_model=Health, tags=["meta"])
def health(repo: Repository = Depends(get_repo)):
    """Liveness plus a database round trip."""
    try:
        repo.ping()
        rev = repo.current_revision()
    except Exception as e:  # report, do not crash: this is what monitors poll
        return JSONResponse(status_code=503, content={"status": "error", "database": repo.dialect,
                                                      "detail": str(e).splitlines()[0][:300]})
    if rev is None:
        return JSONResponse(status_code=503, content={"status": "error", "database": repo.dialect,
                                                      "detail": "no schema: run `labeler db upgrade`"})
    return Health(status="ok", database=repo.dialect, revision=rev)


@router.get("/version", response_model=VersionInfo, tags=["meta"])
def version(repo: Repository = Depends(get_repo)):
    try:
        rev = repo.current_revision()
    except Exception:
        rev = None
    return VersionInfo(version=labeler.__version__, schema_revision=rev)


@router.get("/v1/models", response_model=ModelPage, tags=["catalog"], dependencies=[Depends(require_read)])
def list_models(page: Page = PageDep, repo: Repository = Depends(get_repo)):
    return page.wrap(repo.list_models(limit=page.limit, offset=page.offset))


@router.get("/v1/saes", response_model=SaePage, tags=["catalog"], dependencies=[Depends(require_read)])
def list_saes(model: str | None = Query(None, max_length=200, description="only this model's SAEs"),
              page: Page = PageDep, repo: Repository = Depends(get_repo)):
    return page.wrap(repo.list_saes(slugify(model) if model else None, limit=page.limit, offset=page.offset))


@router.get("/v1/models/{model}/saes", response_model=SaePage, tags=["catalog"],
            dependencies=[Depends(require_read)])
def list_model_saes(model: str, page: Page = PageDep, repo: Repository = Depends(get_repo)):
    if not repo.model_exists(slugify(model)):
        raise HTTPException(status_code=404, detail=f"no model {model}: see GET /v1/models")
    return page.wrap(repo.list_saes(slugify(model), limit=page.limit, offset=page.offset))
