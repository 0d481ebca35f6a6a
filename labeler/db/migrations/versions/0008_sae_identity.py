"""SAE rows carry a content identity (which store they hold), unique per model; rows are found
by it, and names become labels (``labeler.db.identity``).

Existing rows are backfilled from their stored manifest: the store's written identity, else one
derived from its settings hash and path; rows made without a store get their names' identity.
Two old rows that would derive the same identity (the same store registered under two names)
keep apart by their row id.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from labeler.db.identity import derived_identity, identity_of, name_identity

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SAE = sa.table("sae", sa.column("id", sa.Integer), sa.column("model_id", sa.Integer), sa.column("name", sa.String),
               sa.column("store_path", sa.Text), sa.column("manifest", sa.JSON), sa.column("identity", sa.String))
MODEL = sa.table("subject_model", sa.column("id", sa.Integer), sa.column("name", sa.String))


def backfill(c: sa.Connection) -> None:
    rows = c.execute(sa.select(SAE.c.id, SAE.c.model_id, SAE.c.name, SAE.c.store_path, SAE.c.manifest,
                               MODEL.c.name.label("model_name"))
                     .join(MODEL, MODEL.c.id == SAE.c.model_id).order_by(SAE.c.id)).mappings().all()
    taken: set[tuple[int, str]] = set()
    for r in rows:
        if r["manifest"]:
            value = identity_of(r["manifest"], r["store_path"]).value
        else:
            value = name_identity(r["model_name"], r["name"])
        if (r["model_id"], value) in taken:
            value = derived_identity((r["manifest"] or {}).get("config_hash"), f"{r['store_path']}#sae{r['id']}")
        taken.add((r["model_id"], value))
        c.execute(SAE.update().where(SAE.c.id == r["id"]).values(identity=value))


def upgrade() -> None:
    with op.batch_alter_table("sae") as batch:
        batch.add_column(sa.Column("identity", sa.String(64), nullable=True))
    backfill(op.get_bind())
    with op.batch_alter_table("sae") as batch:
        batch.alter_column("identity", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_sae_model_identity", ["model_id", "identity"])


def downgrade() -> None:
    with op.batch_alter_table("sae") as batch:
        batch.drop_constraint("uq_sae_model_identity", type_="unique")
        batch.drop_column("identity")
