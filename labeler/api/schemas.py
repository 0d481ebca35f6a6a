"""Request and response bodies.  Responses are the database's view models (``labeler.db.views``),
extended where the API adds something (contexts from the store, pagination)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from labeler.db.views import FeatureSummary, FeatureView, JobView, ModelView, SaeView, SearchHit

MAX_BATCH = 1000
T = TypeVar("T")


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: str
    revision: str | None = None
    detail: str | None = None


class VersionInfo(BaseModel):
    version: str
    api: str = "v1"
    schema_revision: str | None = None


class Context(BaseModel):
    """One top-activating context from the collect store."""

    window: int
    split: str
    tokens: list[str]
    activations: list[float]
    max_activation: float


class FeatureOut(FeatureView):
    contexts: list[Context] | None = Field(None, description="top-activating contexts from the store")
    contexts_error: str | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class FeaturePage(Page[FeatureSummary]):
    pass


class ModelPage(Page[ModelView]):
    pass


class SaePage(Page[SaeView]):
    pass


class SearchPage(Page[SearchHit]):
    mode: str


class JobPage(Page[JobView]):
    pass


class BatchRequest(BaseModel):
    indices: list[int] = Field(..., min_length=1, max_length=MAX_BATCH)


class BatchOut(BaseModel):
    items: list[FeatureOut]
    missing: list[int]


class JobRequest(BaseModel):
    model: str | None = Field(None, description="model slug (with sae): use the SAE's registered store")
    sae: str | None = None
    store_path: str | None = Field(None, description="collect store to label (overrides model/sae)")
    features: str | list[int] = Field(..., description='indices, or a range like "0:100" / "1,5,9" / "all"')
    spec: dict[str, Any] = Field(default_factory=dict, description="labeler.runs.spec.LabelSpec fields")
