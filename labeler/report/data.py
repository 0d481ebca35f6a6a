"""The flat, database-independent rows a report is computed from.

Loading (``labeler.report.queries``) turns database rows into these records; everything
after that (statistics, plots, rendering) is pure and testable without a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def config_label(explainer: str, llm_model: str | None, prompt_version: str | None = None,
                 variant: str | None = None) -> str:
    """Human name of one explainer configuration, e.g. ``highlighted/gpt-4o-mini@v1``.

    Two explanations of the same feature with the same label are treated as the same arm
    of a comparison; ``variant`` separates configurations that differ only in options.
    """
    label = explainer
    if llm_model:
        label += f"/{llm_model}"
    if prompt_version:
        label += f"@{prompt_version}"
    if variant:
        label += f" [{variant}]"
    return label


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
    label: str  # configuration label, see config_label
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
    label: str  # configuration label of the explanation that was scored
    method: str
    value: float | None
    control: bool = False
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: bool = False


@dataclass
class ReportData:
    title: str
    model: str
    sae: str
    features: dict[int, FeatureRow] = field(default_factory=dict)
    explanations: list[ExplanationRow] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)
    store_path: str | None = None  # collect store, for highlighted contexts when present

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.explanations})

    @property
    def methods(self) -> list[str]:
        return sorted({s.method for s in self.scores})

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title, "model": self.model, "sae": self.sae, "store_path": self.store_path,
            "features": [asdict(f) for f in self.features.values()],
            "explanations": [asdict(e) for e in self.explanations],
            "scores": [asdict(s) for s in self.scores],
        }
