"""PostgreSQL: keep each explanation's tsvector in a stored generated column.

Ranking full-text hits with ``ts_rank(to_tsvector(text), q)`` re-parsed the text of every
match (hundreds of thousands of rows for a common word in a million labels); a stored column
indexed with GIN is parsed once, at write time.  SQLite keeps its FTS5 table: nothing to do.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE explanation ADD COLUMN text_fts tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, ''))) STORED"
    )
    op.execute("CREATE INDEX ix_explanation_text_fts ON explanation USING GIN (text_fts)")
    op.execute("DROP INDEX IF EXISTS ix_explanation_fts")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_explanation_fts ON explanation USING GIN (to_tsvector('english', text))")
    op.execute("DROP INDEX IF EXISTS ix_explanation_text_fts")
    op.execute("ALTER TABLE explanation DROP COLUMN text_fts")
