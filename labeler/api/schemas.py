"""Request and response bodies.  Responses are the database's view models (``labeler.db.views``),
extended where the API adds something (contexts from the store, pagination)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, field_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from labeler.db.views import FeatureSummary, FeatureView, JobError, JobView, ModelView, SaeView, SearchHit

MAX_BATCH = 1000
MAX_INDEX = 2**31 - 1  # feature indices fit a 32-bit column; larger ones would overflow the database's integer
T = TypeVar("T")
FeatureIndexValue = Annotated[int, Field(ge=0, le=MAX_INDEX)]


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
    promoted_tokens: list[str] | None = Field(None, description="tokens the decoder direction promotes most "
                                                                "(through the unembedding), from the store")
    suppressed_tokens: list[str] | None = Field(None, description="tokens it suppresses most")


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class FeaturePage(Page[FeatureSummary]):
    pass


class ModelPage(Page[ModelView]):
    pass


class SaeOut(SaeView):
    """An SAE as API readers see it: without the server's path to its collect store (the
    server's filesystem is its operator's business)."""

    store_path: SkipJsonSchema[str | None] = Field(None, exclude=True)


class SaePage(Page[SaeOut]):
    pass


class SearchPage(Page[SearchHit]):
    mode: str


class Neighbour(BaseModel):
    """A nearby feature: its decoder direction's cosine similarity with the asked feature's."""

    index: int
    cosine: float
    label: str | None = Field(None, description="its label, if it has one")


class NeighbourList(BaseModel):
    items: list[Neighbour] = Field(description="nearest first; empty for a neuron basis")


class JobOut(JobView):
    """A job as API readers see it: its spec without the server's store path (``labeler jobs
    --json`` on the server shows it)."""

    @field_serializer("spec")
    def _spec_without_store(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in spec.items() if k != "store"}

    @field_serializer("errors")
    def _errors_without_store(self, errors: list[JobError]) -> list[dict[str, Any]]:
        # a failure's reason often names the store ("store /srv/...: shard ... is corrupt")
        store = str(self.spec.get("store") or "")
        return [{**e.model_dump(), "error": e.error.replace(store, "<store>") if store and e.error else e.error}
                for e in errors]


class JobPage(Page[JobOut]):
    pass


class BatchRequest(BaseModel):
    indices: list[FeatureIndexValue] = Field(..., min_length=1, max_length=MAX_BATCH)


class BatchOut(BaseModel):
    items: list[FeatureOut]
    missing: list[int]


class JobRequest(BaseModel):
    model: str | None = Field(None, description="model slug (with sae): use the SAE's registered store")
    sae: str | None = None
    store_path: str | None = Field(None, description="collect store to label (overrides model/sae)")
    features: Annotated[str, Field(max_length=10_000)] | list[FeatureIndexValue] = Field(
        ..., description='indices, or a range like "0:100" / "1,5,9" / "all"')
    spec: dict[str, Any] = Field(default_factory=dict, description="labeler.runs.spec.LabelSpec fields")


# -- steering and activations on your text (labeler.activations.steering) -------------------

MAX_STEER_NEW_TOKENS = 64
MAX_STEER_STRENGTH = 1000.0
MAX_STEER_SAMPLES = 4
MAX_TEXT_CHARS = 2000


class _FeatureTarget(BaseModel):
    model: str = Field(..., min_length=1, max_length=200, description="model slug (GET /v1/saes)")
    sae: str = Field(..., min_length=1, max_length=200, description="SAE slug")
    feature: int = Field(..., ge=0, le=MAX_INDEX, description="feature index")


class SteerRequest(_FeatureTarget):
    """Continue ``prompt`` with one feature steered and without it (same seed).  Give exactly one
    of ``strength`` (add that many units of the feature's decoder row) or ``clamp`` (hold the
    feature's activation at that value)."""

    prompt: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)
    strength: float | None = Field(None, ge=-MAX_STEER_STRENGTH, le=MAX_STEER_STRENGTH)
    clamp: float | None = Field(None, ge=-MAX_STEER_STRENGTH, le=MAX_STEER_STRENGTH)
    max_new_tokens: int = Field(24, ge=1, le=MAX_STEER_NEW_TOKENS)
    samples: int = Field(1, ge=1, le=MAX_STEER_SAMPLES, description="continuations of each kind")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="0: greedy")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_intervention(self) -> "SteerRequest":
        if (self.strength is None) == (self.clamp is None):
            raise ValueError("give exactly one of strength (add the decoder row) or clamp (hold the activation)")
        return self


class SteerOut(BaseModel):
    model: str
    sae: str
    feature: int
    prompt: str
    mode: Literal["add", "clamp"]
    value: float
    steered: list[str] = Field(description="continuations with the feature steered")
    unsteered: list[str] = Field(description="the same samples without it")
    max_new_tokens: int
    temperature: float
    seed: int


class ActivationsRequest(_FeatureTarget):
    """Run the model to the hookpoint on ``text`` and return the feature's per-token activations."""

    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class ActivationsOut(BaseModel):
    model: str
    sae: str
    feature: int
    tokens: list[str]
    activations: list[float]
    max_activation: float
