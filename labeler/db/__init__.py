"""Storage: SQLModel tables, Alembic migrations and the ``Repository`` (see its docstring)."""

from labeler.db.labels import LABEL_METHOD_ORDER
from labeler.db.repository import Repository

__all__ = ["Repository", "LABEL_METHOD_ORDER"]
