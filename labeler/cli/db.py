"""CLI: ``labeler db upgrade|current|embed`` and ``labeler serve``."""

from __future__ import annotations

from typing import Optional

import typer

from labeler.cli._app import app

db_app = typer.Typer(help="Database schema and maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

URL_HELP = "Database URL (default: settings.database_url, else a SQLite file under data_dir)."


@db_app.command("upgrade")
def db_upgrade(
    url: Optional[str] = typer.Option(None, "--url", help=URL_HELP),
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply migrations (creates the database on first use)."""
    from labeler.db import Repository

    repo = Repository(url)
    repo.upgrade(revision)
    print(f"database at revision {repo.current_revision()} ({repo!r})")
    repo.close()


@db_app.command("current")
def db_current(url: Optional[str] = typer.Option(None, "--url", help=URL_HELP)) -> None:
    """Show the applied migration revision and the newest available one."""
    from labeler.db import Repository
    from labeler.db.engine import head_revision

    repo = Repository(url)
    current = repo.current_revision()
    head = head_revision()
    state = "up to date" if current == head else "needs `labeler db upgrade`"
    print(f"current: {current or 'none (empty database)'}  head: {head}  ({state})")
    repo.close()


@db_app.command("embed")
def db_embed(
    url: Optional[str] = typer.Option(None, "--url", help=URL_HELP),
    max_rows: int = typer.Option(1_000_000, help="At most this many explanations."),
) -> None:
    """Precompute explanation embeddings for semantic search (otherwise done lazily)."""
    from labeler.db import Repository

    repo = Repository(url)
    print(f"embedded {repo.embed_missing(max_rows=max_rows)} explanations")
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

    from labeler.core.config import get_settings

    settings = get_settings()
    if url:
        os.environ["LABELER_DATABASE_URL"] = url  # also seen by worker processes
    host = host or settings.api_host
    port = port or settings.api_port
    if workers > 1:
        uvicorn.run("labeler.api.app:create_app", factory=True, host=host, port=port, workers=workers)
    else:
        from labeler.api.app import create_app

        uvicorn.run(create_app(database_url=url), host=host, port=port)
