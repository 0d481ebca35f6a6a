"""The FastAPI application: ``create_app()`` (``labeler serve`` runs it under uvicorn)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import labeler
from labeler.core.errors import LabelerError
from labeler.db.embeddings import EmbeddingUnavailable
from labeler.db.repository import Repository


def create_app(repo: Repository | None = None, settings: Any = None, database_url: str | None = None) -> FastAPI:
    """An app bound to one repository (default: the configured database)."""
    from labeler.core.config import get_settings

    settings = settings or get_settings()
    repo = repo or Repository(database_url or settings.resolved_database_url)
    app = FastAPI(
        title="labeler",
        version=labeler.__version__,
        description="Automated labels for sparse-autoencoder features: statistics, explanations, "
                    "scores, search, export and labeling jobs.  Writes need the X-API-Key header.",
    )
    app.state.repo = repo
    app.state.settings = settings
    app.state.database_url = repo.url

    @app.exception_handler(EmbeddingUnavailable)
    async def _no_embedder(_req: Request, exc: EmbeddingUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(LabelerError)
    async def _user_error(_req: Request, exc: LabelerError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        # Same shape as FastAPI's default, plus one readable message.
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(status_code=422, content={
            "detail": [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors],
            "message": f"{where}: {first.get('msg', 'invalid request')}",
        })

    from labeler.api.routes import features, jobs, meta, search

    app.include_router(meta.router)
    app.include_router(features.router)
    app.include_router(search.router)
    app.include_router(jobs.router)
    try:
        from labeler.api.routes import pages
    except ImportError:
        pages = None
    if pages is not None:
        app.include_router(pages.router)

    return app
