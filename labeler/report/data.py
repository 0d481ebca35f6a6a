"""What a report is computed from: one SAE's rows (``labeler.db.views``) plus a title.

Everything after loading (statistics, plots, rendering) is pure and testable without a
database.  Rows are grouped into arms by their ``configuration`` (the eval harness renames
them after its configurations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labeler.db.views import ExplanationRow, FeatureRow, SaeResults, ScoreRow


@dataclass
class ReportData:
    title: str
    model: str
    sae: str
    features: dict[int, FeatureRow] = field(default_factory=dict)
    explanations: list[ExplanationRow] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)
    store_path: str | None = None  # collect store, for highlighted contexts when present

    @classmethod
    def from_results(cls, results: SaeResults, *, title: str | None = None) -> "ReportData":
        sae = results.sae
        return cls(title=title or f"{sae.model_name} / {sae.name}", model=sae.model, sae=sae.sae,
                   features=results.features, explanations=results.explanations, scores=results.scores,
                   store_path=sae.store_path)

    @property
    def labels(self) -> list[str]:
        """The arms: every configuration that explained something."""
        return sorted({e.configuration for e in self.explanations})

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
