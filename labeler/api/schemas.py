"""Request and response bodies (they shape the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 1000


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: str
    revision: str | None = None
    detail: str | None = None


class VersionInfo(BaseModel):
    version: str
    api: str = "v1"
    schema_revision: str | None = None


class Label(BaseModel):
    explanation_id: int
    text: str | None
    method: str | None = Field(None, description="scoring method that decided the label (null: no scores yet)")
    score: float | None


class FeatureSummary(BaseModel):
    index: int
    stats: dict[str, Any]
    label: Label | None


class ScoreOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    method: str
    value: float | None
    control: bool
    failed: bool


class ExplanationOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    text: str
    explainer: str
    llm_model: str | None
    failed: bool
    scores: list[ScoreOut]


class FeatureOut(FeatureSummary):
    model: str
    sae: str
    explanations: list[ExplanationOut]
    contexts: list[dict[str, Any]] | None = Field(None, description="top-activating contexts from the store")
    contexts_error: str | None = None


class FeaturePage(BaseModel):
    items: list[FeatureSummary]
    limit: int
    offset: int
    next_offset: int | None


class BatchRequest(BaseModel):
    indices: list[int] = Field(..., min_length=1, max_length=MAX_BATCH)


class BatchOut(BaseModel):
    items: list[FeatureOut]
    missing: list[int]


class ModelOut(BaseModel):
    model: str
    name: str
    path_or_id: str | None
    n_saes: int


class ModelPage(BaseModel):
    items: list[ModelOut]
    limit: int
    offset: int
    next_offset: int | None


class SaeOut(BaseModel):
    id: int
    model: str
    model_name: str
    sae: str
    name: str
    hook: str | None
    format: str | None
    n_features: int
    store_path: str | None
    created_at: str | None


class SaePage(BaseModel):
    items: list[SaeOut]
    limit: int
    offset: int
    next_offset: int | None


class SearchHit(BaseModel):
    explanation_id: int
    model: str
    sae: str
    index: int
    text: str
    explainer: str
    llm_model: str | None
    is_label: bool
    score: float | None = Field(None, description="text: rank (higher is better); semantic: cosine similarity")


class SearchPage(BaseModel):
    items: list[SearchHit]
    limit: int
    offset: int
    next_offset: int | None
    mode: str


class JobRequest(BaseModel):
    model: str | None = Field(None, description="model slug (with sae): use the SAE's registered store")
    sae: str | None = None
    store_path: str | None = Field(None, description="collect store to label (overrides model/sae)")
    features: str | list[int] = Field(..., description='indices, or a range like "0:100" / "1,5,9" / "all"')
    spec: dict[str, Any] = Field(default_factory=dict, description="labeler.pipeline.LabelSpec fields")


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    status: str
    n_features: int
    counts: dict[str, int]
    tokens: dict[str, int]
    cost_usd: float
    errors: list[dict[str, Any]]


class JobPage(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None
