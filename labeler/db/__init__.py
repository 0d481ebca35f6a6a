"""Storage: SQLModel tables, Alembic migrations and the ``Repository`` (see ARCHITECTURE.md)."""

from labeler.db.repository import LABEL_METHOD_ORDER, Repository

__all__ = ["Repository", "LABEL_METHOD_ORDER"]
