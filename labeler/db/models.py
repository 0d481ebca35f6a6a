"""Database tables (SQLModel).  The schema itself is created by Alembic migrations
(``labeler/db/migrations``); these classes describe it for queries.

Idempotency: explanations and scores carry a ``key`` column, a hash of every field that
identifies "the same piece of work" (see ``labeler.db.keys``).  A unique constraint on it
makes a retried write a no-op instead of a duplicate; NULL-able fields (e.g. no LLM for the
offline baseline) are folded into the hash so NULL never defeats the constraint.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON, nullable=nullable))


class SubjectModel(SQLModel, table=True):
    """The model whose internals are labeled (e.g. a transformers checkpoint)."""

    __tablename__ = "subject_model"
    id: Optional[int] = Field(default=None, primary_key=True)
    slug: str = Field(sa_column=sa.Column(sa.String(200), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(500), nullable=False))
    path_or_id: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class Sae(SQLModel, table=True):
    """One SAE (or neuron basis) at one hookpoint of a subject model, read through one store.

    ``identity`` says which store, by content (``labeler.db.identity``); rows are found by it.
    ``name`` and ``slug`` are labels: an SAE whose name is taken by another identity gets the
    slug ``<slug>-<first 8 hex of its identity>``."""

    __tablename__ = "sae"
    __table_args__ = (sa.UniqueConstraint("model_id", "slug", name="uq_sae_model_slug"),
                      sa.UniqueConstraint("model_id", "identity", name="uq_sae_model_identity"))
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("subject_model.id", ondelete="CASCADE"), nullable=False))
    identity: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    slug: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(500), nullable=False))
    hook: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(500)))
    format: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(50)))
    n_features: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    store_path: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    manifest: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class Feature(SQLModel, table=True):
    """One feature's statistics, plus its current label (denormalised for list/filter/sort;
    recomputed by the repository whenever an explanation or score of the feature is saved)."""

    __tablename__ = "feature"
    __table_args__ = (
        sa.UniqueConstraint("sae_id", "index", name="uq_feature_sae_index"),
        sa.Index("ix_feature_sae_density", "sae_id", "density"),
        sa.Index("ix_feature_sae_label_score", "sae_id", "label_score"),
        sa.Index("ix_feature_sae_max", "sae_id", "max"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    sae_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("sae.id", ondelete="CASCADE"), nullable=False))
    index: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    count: Optional[int] = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    density: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))
    max: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))
    mean: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))
    stats: Optional[dict] = _json()  # FeatureStats.to_dict(): histogram, mean_active, tokens_seen
    label_explanation_id: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))
    label_text: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    label_method: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(50)))
    label_score: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))


class ExplanationRow(SQLModel, table=True):
    __tablename__ = "explanation"
    __table_args__ = (
        sa.UniqueConstraint("sae_id", "feature_index", "key", name="uq_explanation_key"),
        sa.Index("ix_explanation_sae_feature", "sae_id", "feature_index"),
        sa.Index("ix_explanation_job", "job_id"),
        sa.Index("ix_explanation_sae_id", "sae_id", "id"),  # newest first, for full-text candidates
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    sae_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("sae.id", ondelete="CASCADE"), nullable=False))
    feature_index: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    text: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False))
    explainer: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    llm_model: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    prompt_name: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    prompt_version: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(50)))
    prompt_hash: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(64)))
    config: Optional[dict] = _json()
    config_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    prompt_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    cost_usd: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    failed: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    error: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    raw: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    candidates: Optional[list] = _json()
    example_windows: Optional[list] = _json()
    job_id: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class ScoreRow(SQLModel, table=True):
    __tablename__ = "score"
    __table_args__ = (
        sa.UniqueConstraint("explanation_id", "key", name="uq_score_key"),
        sa.Index("ix_score_method_value", "method", "value"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    explanation_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("explanation.id", ondelete="CASCADE"), nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    method: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    value: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))
    metrics: Optional[dict] = _json()
    control: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    llm_model: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    prompt_name: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    prompt_version: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(50)))
    example_windows: Optional[list] = _json()
    details: Optional[dict] = _json()
    options: Optional[dict] = _json()  # the scorer's non-default options (in the key); NULL: defaults
    calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    prompt_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    cost_usd: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    failed: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    error: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class ExplanationEmbedding(SQLModel, table=True):
    """Sentence embedding of an explanation's text (float32 bytes, unit norm), written by
    ``labeler db embed`` (or when the explanation is saved); the semantic-search index
    (``labeler.db.vector_index``) follows this table by ``seq``."""

    __tablename__ = "explanation_embedding"
    __table_args__ = (sa.Index("ix_explanation_embedding_seq", "seq", unique=True),
                      sa.Index("ix_explanation_embedding_sae_model_seq", "sae_id", "model", "seq"))
    explanation_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("explanation.id", ondelete="CASCADE"), primary_key=True))
    sae_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # the explanation's, for per-SAE indexes
    # Increasing in commit order (writers serialise on a lock), so "everything after seq N"
    # is exactly what an index that has seen N is missing.
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    model: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    dim: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    vector: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class FeatureNeighbours(SQLModel, table=True):
    """A feature's nearest features by decoder cosine, imported from the store's
    ``neighbours.safetensors`` (``labeler.db.neighbours``): int32 indices and float32 cosines
    as bytes, best first."""

    __tablename__ = "feature_neighbours"
    sae_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("sae.id", ondelete="CASCADE"), primary_key=True))
    feature_index: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    indices: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    cosines: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (sa.Index("ix_job_status", "status"), sa.Index("ix_job_sae_spec_hash", "sae_id", "spec_hash"))
    id: Optional[int] = Field(default=None, primary_key=True)
    sae_id: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("sae.id", ondelete="SET NULL")))
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(20), nullable=False))
    spec: Optional[dict] = _json()
    # What the job computes (labeler.runs.spec.JobSpec.reuse_hash): jobs with the same hash on
    # the same SAE share finished features.
    spec_hash: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(64)))
    n_features: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    # LLM money the job may spend (None: no cap) and has spent, charged by every worker's calls.
    budget_usd: Optional[float] = Field(default=None, sa_column=sa.Column(sa.Float))
    spent_usd: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0"))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class JobFeature(SQLModel, table=True):
    """Per-feature progress of a job: the resume point and the source of its counts."""

    __tablename__ = "job_feature"
    __table_args__ = (sa.Index("ix_job_feature_status", "job_id", "status"),)
    job_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id", ondelete="CASCADE"), primary_key=True))
    feature_index: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(20), nullable=False))
    error: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    reused_from: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))  # job that computed it
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    prompt_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    cost_usd: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class JobChunk(SQLModel, table=True):
    """One queued chunk of a job and who works on it (``labeler.db.chunks``): the queue's
    messages can be lost or redelivered, this row cannot.  ``state`` is queued (a message is
    out for it), running (a worker holds the lease until ``lease_expires_at``, renewed by its
    heartbeat) or done (its run ended; the features' outcomes are in ``job_feature``)."""

    __tablename__ = "job_chunk"
    __table_args__ = (sa.UniqueConstraint("job_id", "number", name="uq_job_chunk_number"),
                      sa.Index("ix_job_chunk_state", "state", "lease_expires_at"))
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id", ondelete="CASCADE"), nullable=False))
    number: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # 0, 1, ... within the job
    features: list = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    state: str = Field(default="queued", sa_column=sa.Column(sa.String(20), nullable=False))
    lease_owner: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    lease_expires_at: Optional[datetime] = Field(default=None, sa_column=sa.Column(sa.DateTime))
    heartbeat_at: Optional[datetime] = Field(default=None, sa_column=sa.Column(sa.DateTime))
    claims: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))  # runs started
    sends: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))  # messages sent
    error: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))  # why the last run ended early
    queued_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


class LlmUsageRow(SQLModel, table=True):
    """LLM spend, one row per saved explanation or score that used an LLM (written once,
    together with the row it belongs to, so retries do not double count)."""

    __tablename__ = "llm_usage"
    __table_args__ = (sa.Index("ix_llm_usage_job", "job_id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))
    sae_id: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))
    feature_index: Optional[int] = Field(default=None, sa_column=sa.Column(sa.Integer))
    purpose: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))  # explain | score:<method>
    llm_model: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(200)))
    calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    cached_calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    prompt_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    cost_usd: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(sa.DateTime, nullable=False))


metadata = SQLModel.metadata
