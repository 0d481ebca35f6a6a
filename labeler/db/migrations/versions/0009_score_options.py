"""Scores keep the scorer's non-default options, which are part of their key: a score with
another seed or example count is another score, reported apart.  Rows stored before have
NULL, which reads as the defaults (their keys are unchanged).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("score") as batch:
        batch.add_column(sa.Column("options", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score") as batch:
        batch.drop_column("options")
