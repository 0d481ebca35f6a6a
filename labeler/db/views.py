"""What the database answers: one typed family per entity, shared by every reader.

The REST API returns these models as they are (``labeler.api.schemas`` builds on them), the
HTML pages render them, the CLI prints them and the runner reads job state from them, so the
JSON and the page of one feature always come from the same query.  The flat ``*Row``
dataclasses at the end are the bulk rows reports are computed from (many thousands at once,
so plain dataclasses rather than validated models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field


class ModelView(BaseModel):
    """A subject model (the network whose internals are labeled)."""

    model: str = Field(description="URL slug, e.g. eleutherai--pythia-70m")
    name: str = Field(description="human name as the store records it")
    path_or_id: str | None = Field(None, description="hub id or path it was loaded from")
    n_saes: int = Field(0, description="SAEs registered for this model")


class SaeView(BaseModel):
    """One SAE (or neuron basis) at one hookpoint of a subject model."""

    id: int
    model: str = Field(description="the subject model's slug")
    model_name: str
    sae: str = Field(description="the SAE's slug, unique within its model")
    name: str
    hook: str | None = Field(None, description="hookpoint the features read")
    format: str | None = Field(None, description="weights layout: saelens, sparsify, gemmascope, neurons")
    n_features: int
    store_path: str | None = Field(None, description="collect store the features came from")
    created_at: str | None = None
    n_labeled: int | None = Field(None, description="features that have a label (in lists of SAEs)")


class UsageView(BaseModel):
    """LLM spend of one explanation or score."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class ScoreView(BaseModel):
    """One scorer's verdict on one explanation."""

    id: int
    method: str = Field(description="scorer name: simulation, detection, fuzzing, embedding, rubric")
    value: float | None = Field(description="headline number; null when undefined or failed")
    metrics: dict[str, Any] = Field(default_factory=dict, description="sub-metrics")
    control: bool = Field(description="true: another feature's explanation on these examples (chance line)")
    llm_model: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    example_windows: list[int] = Field(default_factory=list, description="held-out windows scored")
    failed: bool = False
    error: str | None = None
    usage: UsageView = Field(default_factory=UsageView)
    created_at: str | None = None
    details: dict[str, Any] | None = Field(None, description="per-example details (only when asked for)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the scorer's options that differ from their defaults (empty: defaults)")


class ExplanationView(BaseModel):
    """One explanation of one feature (or a recorded failure), with its scores."""

    id: int
    feature: int
    text: str
    explainer: str
    llm_model: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="options that shaped it")
    config_hash: str | None = None
    failed: bool = False
    error: str | None = None
    usage: UsageView = Field(default_factory=UsageView)
    example_windows: list[int] = Field(default_factory=list, description="train windows the explainer saw")
    candidates: list[dict[str, Any]] = Field(default_factory=list, description="best-of-N candidates")
    job_id: int | None = None
    created_at: str | None = None
    scores: list[ScoreView] = Field(default_factory=list)

    @property
    def configuration(self) -> str:
        """Human name of the configuration that made it, e.g. ``highlighted/gpt-4o-mini@v1``."""
        return configuration_name(self.explainer, self.llm_model, self.prompt_version)


class LabelView(BaseModel):
    """The explanation chosen as the feature's label (rule: docs/labels.md)."""

    explanation_id: int
    text: str | None
    method: str | None = Field(None, description="scoring method that decided the label (null: no scores yet)")
    score: float | None


class FeatureSummary(BaseModel):
    """A feature's statistics and label, as lists and searches show it."""

    index: int
    stats: dict[str, Any] = Field(description="count, density, max, mean, histogram, ...")
    label: LabelView | None


class FeatureView(FeatureSummary):
    """Everything stored about one feature."""

    model: str
    sae: str
    explanations: list[ExplanationView] = Field(description="oldest first")


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


class JobError(BaseModel):
    feature: int
    error: str | None
    attempts: int


class JobView(BaseModel):
    """A labeling job's state and spend."""

    id: int
    sae_id: int | None
    model: str | None
    sae: str | None
    status: str = Field(description="pending | running | cancelled | done | failed | budget_reached "
                                    "(stopped by its LLM budget: `labeler submit --resume JOB` goes on)")
    spec: dict[str, Any] = Field(description="the job spec (labeler.runs.spec.JobSpec)")
    n_features: int
    counts: dict[str, int] = Field(description="features done / failed / pending; reused: done by an earlier job")
    tokens: dict[str, int] = Field(description="LLM calls, prompt and completion tokens")
    cost_usd: float
    errors: list[JobError] = Field(default_factory=list, description="first failures with their reasons")
    budget_usd: float | None = Field(None, description="LLM budget of the whole job (null: no cap)")
    spent_usd: float = Field(0.0, description="LLM money spent by every worker of the job, retries included")
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def finished(self) -> bool:
        """Nothing more happens without someone acting (a budget_reached job waits for --resume)."""
        return self.status in ("done", "cancelled", "budget_reached")


class LabelRow(BaseModel):
    """One feature's label with provenance, as the JSONL export writes it."""

    model: str
    sae: str
    hook: str | None
    index: int
    label: str | None
    label_method: str | None
    label_score: float | None
    explanation_id: int | None
    explainer: str | None
    llm_model: str | None
    prompt_name: str | None
    prompt_version: str | None
    prompt_hash: str | None
    density: float | None
    max: float | None
    count: int | None
    created_at: str | None


def scored_method(method: str, options: dict[str, Any] | None) -> str:
    """A method as reports group it: ``detection``, or ``detection[n_top=20]`` with other options."""
    if not options:
        return method
    return f"{method}[{','.join(f'{k}={options[k]}' for k in sorted(options))}]"


def configuration_name(explainer: str, llm_model: str | None, prompt_version: str | None = None,
                       variant: str | None = None) -> str:
    """``explainer/model@version``; ``variant`` separates configurations that differ only in options."""
    name = explainer
    if llm_model:
        name += f"/{llm_model}"
    if prompt_version:
        name += f"@{prompt_version}"
    if variant:
        name += f" [{variant}]"
    return name


# --- bulk rows for reports ----------------------------------------------------------------------

@dataclass
class FeatureRow:
    index: int
    density: float | None = None
    max_activation: float | None = None
    count: int | None = None


@dataclass
class ExplanationRow:
    id: int
    feature: int
    configuration: str  # configuration_name, with an options-hash variant where names collide
    explainer: str
    text: str
    llm_model: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    config_hash: str | None = None
    job_id: int | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: bool = False


@dataclass
class ScoreRow:
    explanation_id: int
    feature: int
    configuration: str  # of the explanation that was scored
    method: str
    value: float | None
    control: bool = False
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: bool = False


@dataclass
class SaeResults:
    """Every feature, explanation and score of one SAE (or of some of its features)."""

    sae: SaeView
    features: dict[int, FeatureRow]
    explanations: list[ExplanationRow]
    scores: list[ScoreRow]
