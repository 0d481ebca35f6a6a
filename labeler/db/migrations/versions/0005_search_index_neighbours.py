"""Serving a million features: embeddings numbered for the semantic-search index, precomputed
nearest features, and a full-text index that returns its candidates newest first.

- ``explanation_embedding`` gains ``sae_id`` (one index per SAE) and ``seq``, a number that
  grows in commit order, so an index catches up with "every row after seq N"
  (``labeler.db.vectors``).  Existing rows are numbered by explanation id.
- ``feature_neighbours``: each feature's nearest features by decoder cosine, imported from the
  store's ``neighbours.safetensors`` (``labeler.db.neighbours``).
- ``ix_explanation_sae_id`` on (sae_id, id), so PostgreSQL's full-text search can take its
  bounded candidate set, the newest matches of one SAE, without visiting every match.

Revision ID: 0005
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("explanation_embedding") as batch:
        batch.add_column(sa.Column("sae_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE explanation_embedding SET seq = explanation_id, "
               "sae_id = (SELECT e.sae_id FROM explanation e WHERE e.id = explanation_embedding.explanation_id)")
    with op.batch_alter_table("explanation_embedding") as batch:
        batch.alter_column("sae_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
    op.create_index("ix_explanation_embedding_seq", "explanation_embedding", ["seq"], unique=True)
    op.create_index("ix_explanation_embedding_sae_model_seq", "explanation_embedding", ["sae_id", "model", "seq"])

    op.create_table(
        "feature_neighbours",
        sa.Column("sae_id", sa.Integer(), sa.ForeignKey("sae.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("feature_index", sa.Integer(), primary_key=True),
        sa.Column("indices", sa.LargeBinary(), nullable=False),
        sa.Column("cosines", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_explanation_sae_id", "explanation", ["sae_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_explanation_sae_id", table_name="explanation")
    op.drop_table("feature_neighbours")
    op.drop_index("ix_explanation_embedding_sae_model_seq", table_name="explanation_embedding")
    op.drop_index("ix_explanation_embedding_seq", table_name="explanation_embedding")
    with op.batch_alter_table("explanation_embedding") as batch:
        batch.drop_column("seq")
        batch.drop_column("sae_id")
