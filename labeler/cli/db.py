"""CLI: ``labeler db upgrade|current|embed`` and ``labeler serve``."""

from __future__ import annotations

from typing import Optional

import typer

from labeler.cli._app import app
from labeler.core.config import get_settings

db_app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

URL_HELP = "Database URL (default: settings.database_url, else a SQLite file under data_dir)."


@db_app.command("upgrade")
def db_upgrade(
    url: Optional[str] = typer.Option(None, "--url", help=URL_HELP),
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply migrations (creates the database on first use)."""
    from labeler.db.database import Database

    db = Database(url or get_settings().resolved_database_url)
    db.upgrade(revision)
    print(f"database at revision {db.current_revision()} ({db!r})")
    db.close()


@db_app.command("current")
def db_current(url: Optional[str] = typer.Option(None, "--url", help=URL_HELP)) -> None:
    """Show the applied migration revision and the newest available one."""
    from labeler.db.database import Database
    from labeler.db.engine import head_revision

    db = Database(url or get_settings().resolved_database_url)
    current = db.current_revision()
    head = head_revision()
    state = "up to date" if current == head else "needs `labeler db upgrade`"
    print(f"current: {current or 'none (empty database)'}  head: {head}  ({state})")
    db.close()


@db_app.command("embed")
def db_embed(
    url: Optional[str] = typer.Option(None, "--url", help=URL_HELP),
    max_rows: Optional[int] = typer.Option(None, help="Embed at most this many explanations (default: all)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the search indexes from the stored embeddings."),
) -> None:
    """Embed explanations that have no embedding yet, then bring the semantic-search indexes
    (saved under the data dir, one per SAE) up to date.  Resumable: rerun after an interruption."""
    from labeler.db import Repository
    from labeler.db.embeddings import load_embedder
    from labeler.db.vector_index import VectorIndexes

    settings = get_settings()
    repo = Repository.open(url or settings.resolved_database_url)
    embedder = load_embedder()
    print(f"embedded {repo.search.embed_missing(embedder, max_rows=max_rows)} explanations")
    indexes = VectorIndexes.in_data_dir(repo.db, settings.data_dir)
    for sae in repo.catalog.list_saes(limit=100_000):
        index = (indexes.rebuild if rebuild else indexes.update)(sae.id, embedder.name)
        if index is not None:
            print(f"{sae.model}/{sae.sae}: {index.state.ntotal} vectors in a {index.state.kind} index")
    repo.close()


@app.command("serve")
def serve(
    host: Optional[str] = typer.Option(None, help="Bind address (default: settings.api_host)."),
    port: Optional[int] = typer.Option(None, help="Port (default: settings.api_port)."),
    url: Optional[str] = typer.Option(None, "--url", help=URL_HELP),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
) -> None:
    """Serve the REST API (FastAPI + uvicorn); OpenAPI docs at /docs."""
    import os

    import uvicorn

    from labeler.core.config import reset_settings

    if url:
        # --url names the database for everything this server does, its worker processes too
        os.environ["LABELER_DATABASE_URL"] = url
        reset_settings()
    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    if workers > 1:
        uvicorn.run("labeler.api.app:app_from_environment", factory=True, host=host, port=port, workers=workers)
    else:
        from labeler.api.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port)
