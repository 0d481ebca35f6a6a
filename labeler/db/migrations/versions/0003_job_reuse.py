"""Jobs record what they compute (``spec_hash``) and which earlier job a reused feature came from.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("spec_hash", sa.String(64), nullable=True))
    op.create_index("ix_job_sae_spec_hash", "job", ["sae_id", "spec_hash"])
    with op.batch_alter_table("job_feature") as batch:
        batch.add_column(sa.Column("reused_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_feature") as batch:
        batch.drop_column("reused_from")
    op.drop_index("ix_job_sae_spec_hash", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("spec_hash")
