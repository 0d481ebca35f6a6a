"""Initial schema: models, SAEs, features, explanations, scores, embeddings, jobs, LLM usage,
and full-text search over explanation text (PostgreSQL GIN expression index; SQLite FTS5 table
kept in sync by triggers).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False)


def _usage_columns() -> list[sa.Column]:
    return [
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "subject_model",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slug", sa.String(200), nullable=False, unique=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("path_or_id", sa.Text()),
        _created(),
    )
    op.create_table(
        "sae",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("subject_model.id", ondelete="CASCADE"), nullable=False),
        sa.Column("slug", sa.String(200), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("hook", sa.String(500)),
        sa.Column("format", sa.String(50)),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("store_path", sa.Text()),
        sa.Column("manifest", sa.JSON()),
        _created(),
        sa.UniqueConstraint("model_id", "slug", name="uq_sae_model_slug"),
    )
    op.create_table(
        "feature",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sae_id", sa.Integer(), sa.ForeignKey("sae.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger()),
        sa.Column("density", sa.Float()),
        sa.Column("max", sa.Float()),
        sa.Column("mean", sa.Float()),
        sa.Column("stats", sa.JSON()),
        sa.Column("label_explanation_id", sa.Integer()),
        sa.Column("label_text", sa.Text()),
        sa.Column("label_method", sa.String(50)),
        sa.Column("label_score", sa.Float()),
        sa.UniqueConstraint("sae_id", "index", name="uq_feature_sae_index"),
    )
    op.create_index("ix_feature_sae_density", "feature", ["sae_id", "density"])
    op.create_index("ix_feature_sae_label_score", "feature", ["sae_id", "label_score"])
    op.create_index("ix_feature_sae_max", "feature", ["sae_id", "max"])

    op.create_table(
        "explanation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sae_id", sa.Integer(), sa.ForeignKey("sae.id", ondelete="CASCADE"), nullable=False),
        sa.Column("feature_index", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("explainer", sa.String(200), nullable=False),
        sa.Column("llm_model", sa.String(200)),
        sa.Column("prompt_name", sa.String(200)),
        sa.Column("prompt_version", sa.String(50)),
        sa.Column("prompt_hash", sa.String(64)),
        sa.Column("config", sa.JSON()),
        sa.Column("config_hash", sa.String(64), nullable=False),
        *_usage_columns(),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("raw", sa.Text()),
        sa.Column("candidates", sa.JSON()),
        sa.Column("example_windows", sa.JSON()),
        sa.Column("job_id", sa.Integer()),
        _created(),
        sa.UniqueConstraint("sae_id", "feature_index", "key", name="uq_explanation_key"),
    )
    op.create_index("ix_explanation_sae_feature", "explanation", ["sae_id", "feature_index"])
    op.create_index("ix_explanation_job", "explanation", ["job_id"])

    op.create_table(
        "score",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("explanation_id", sa.Integer(), sa.ForeignKey("explanation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("method", sa.String(50), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("metrics", sa.JSON()),
        sa.Column("control", sa.Boolean(), nullable=False),
        sa.Column("llm_model", sa.String(200)),
        sa.Column("prompt_name", sa.String(200)),
        sa.Column("prompt_version", sa.String(50)),
        sa.Column("example_windows", sa.JSON()),
        sa.Column("details", sa.JSON()),
        *_usage_columns(),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        _created(),
        sa.UniqueConstraint("explanation_id", "key", name="uq_score_key"),
    )
    op.create_index("ix_score_method_value", "score", ["method", "value"])

    op.create_table(
        "explanation_embedding",
        sa.Column("explanation_id", sa.Integer(), sa.ForeignKey("explanation.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )

    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sae_id", sa.Integer(), sa.ForeignKey("sae.id", ondelete="SET NULL")),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("spec", sa.JSON()),
        sa.Column("n_features", sa.Integer(), nullable=False),
        _created(),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_job_status", "job", ["status"])
    op.create_table(
        "job_feature",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("feature_index", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        *_usage_columns(),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_job_feature_status", "job_feature", ["job_id", "status"])

    op.create_table(
        "llm_usage",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer()),
        sa.Column("sae_id", sa.Integer()),
        sa.Column("feature_index", sa.Integer()),
        sa.Column("purpose", sa.String(50), nullable=False),
        sa.Column("llm_model", sa.String(200)),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("cached_calls", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        _created(),
    )
    op.create_index("ix_llm_usage_job", "llm_usage", ["job_id"])

    # --- full-text search over explanation text ------------------------------------------
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE INDEX ix_explanation_fts ON explanation "
            "USING GIN (to_tsvector('english', text))"
        )
    elif dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE explanation_fts USING fts5("
            "text, content='explanation', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER explanation_fts_ai AFTER INSERT ON explanation BEGIN "
            "INSERT INTO explanation_fts(rowid, text) VALUES (new.id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER explanation_fts_ad AFTER DELETE ON explanation BEGIN "
            "INSERT INTO explanation_fts(explanation_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
        )
        op.execute(
            "CREATE TRIGGER explanation_fts_au AFTER UPDATE OF text ON explanation BEGIN "
            "INSERT INTO explanation_fts(explanation_fts, rowid, text) VALUES ('delete', old.id, old.text); "
            "INSERT INTO explanation_fts(rowid, text) VALUES (new.id, new.text); END"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trig in ("explanation_fts_ai", "explanation_fts_ad", "explanation_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trig}")
        op.execute("DROP TABLE IF EXISTS explanation_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_explanation_fts")
    for table in ("llm_usage", "job_feature", "job", "explanation_embedding", "score",
                  "explanation", "feature", "sae", "subject_model"):
        op.drop_table(table)
