"""One database: its engines, its dialect, and the dialect-aware insert every upsert uses."""

from __future__ import annotations

import sqlalchemy as sa

from labeler.db import engine as engines


class Database:
    """The write and read engines of one database URL (SQLite file, in memory, or PostgreSQL)."""

    def __init__(self, url: str):
        self.url = engines.normalize_url(url)
        self.engine, self.read_engine = engines.make_engines(self.url)
        self.dialect = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def insert(self, table: sa.Table):
        """An INSERT that supports ``on_conflict_do_*`` in this dialect."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations (``labeler db upgrade``)."""
        engines.upgrade(self.engine, revision)

    def current_revision(self) -> str | None:
        return engines.current_revision(self.read_engine)

    def ping(self) -> bool:
        with self.read_engine.connect() as c:
            return c.execute(sa.text("SELECT 1")).scalar_one() == 1

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
