"""Engines for SQLite (default) and PostgreSQL, and programmatic Alembic migrations."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from labeler.core.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 60_000


def normalize_url(url: str) -> str:
    """Accept the common spellings of a PostgreSQL URL and pick the psycopg 3 driver."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engines(url: str) -> tuple[sa.Engine, sa.Engine]:
    """(write engine, read engine).  For SQLite the write engine opens every transaction with
    ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout instead of failing
    with "database is locked" when a deferred read transaction tries to upgrade to a write;
    readers use plain deferred transactions and never block writers (WAL mode).
    For PostgreSQL both are the same pooled engine."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"cannot parse database URL {url!r}: {e}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        return engine, engine
    if backend != "sqlite":
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:///path or postgresql+psycopg://...")
    database = parsed.database
    memory = not database or database == ":memory:"
    if not memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
        writer = sa.create_engine(url, **kwargs)
        _sqlite_events(writer, immediate=True)
        return writer, writer
    writer = sa.create_engine(url, **kwargs)
    reader = sa.create_engine(url, **kwargs)
    _sqlite_events(writer, immediate=True)
    _sqlite_events(reader, immediate=False)
    return writer, reader


def _sqlite_events(engine: sa.Engine, *, immediate: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
