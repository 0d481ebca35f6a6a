"""The FastAPI application.  ``create_app(settings, repo)`` binds one app to one database:
every route reads and writes ``app.state.repo``, and jobs go through ``app.state.runner``
(same repository), so what the API creates is what it returns.  ``labeler serve`` runs it
under uvicorn."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import labeler
from labeler.api.limits import BodySizeLimit
from labeler.core.config import Settings, get_settings
from labeler.core.errors import LabelerError
from labeler.db import Repository
from labeler.db.embeddings import EmbeddingUnavailable
from labeler.db.vector_index import VectorIndexes
from labeler.runs.queue import sender_for
from labeler.runs.runner import Runner
from labeler.runs.subjects import SubjectCache


def create_app(settings: Settings, repo: Repository | None = None, subjects: SubjectCache | None = None) -> FastAPI:
    """An app bound to ``repo`` (default: the database ``settings`` name) and to ``subjects``, the
    subject models that steering and activations run (default: a new cache, one model)."""
    from labeler.api.deps import LazyEmbedder
    from labeler.api.routes import export, features, jobs, login, meta, pages, search, steer

    repo = repo or Repository.open(settings.resolved_database_url)
    app = FastAPI(
        title="labeler",
        version=labeler.__version__,
        description="Automated labels for sparse-autoencoder features: statistics, explanations, "
                    "scores, search, export and labeling jobs.  Writes need the X-API-Key header.",
    )
    app.state.settings = settings
    app.state.repo = repo
    app.state.subjects = subjects or SubjectCache(settings)
    app.state.runner = Runner(repo, settings, send=sender_for(settings), subjects=app.state.subjects)
    app.state.embedder = LazyEmbedder()
    app.state.vector_indexes = VectorIndexes.in_data_dir(repo.db, settings.data_dir)

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

    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    for module in (meta, features, export, search, jobs, steer, pages):
        app.include_router(module.router)
    app.include_router(steer.pages)
    login.install(app)
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory for ``labeler serve --workers N``: settings from the environment."""
    return create_app(get_settings())
