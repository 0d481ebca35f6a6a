"""Scoring explanations on held-out examples.

```python
from labeler.scoring import get_scorer, pick_control_explanation
scorer = get_scorer("simulation", llm=get_llm("simulator"))   # llm=None: offline baseline simulator
res = await scorer.score(record, explanation_text)            # split="test", control=False
ctrl = await scorer.score(record, pick_control_explanation(record.feature, texts_by_feature), control=True)
```

Scorers: simulation (headline), detection, fuzzing, embedding (offline), rubric, intruder,
intruder_embedding (offline).  ``get_scorer("detection:hard")`` is detection with
``negatives="hard"`` (likewise fuzzing, embedding, intruder, intruder_embedding).  The math is in
:mod:`labeler.scoring.metrics` (pure functions).  Scorers never raise on LLM failure; they return
``ScoreResult(failed=True, error=...)``; ``BudgetExceeded`` propagates.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from labeler.core.errors import ConfigError
from labeler.scoring import metrics
from labeler.scoring.base import SCORERS, Scorer, ScorerOptions
# Importing the modules registers their scorers (``@register_scorer``), in this order.
from labeler.scoring.simulation import SimulationScorer
from labeler.scoring.judges import DetectionScorer, FuzzingScorer, RubricScorer
from labeler.scoring.embedding import EmbeddingScorer
from labeler.scoring.intruder import EmbeddingIntruderScorer, IntruderScorer
from labeler.scoring.intervention import InterventionScorer  # noqa: F401


def get_scorer(name: str, llm: Any = None, **options: Any) -> Scorer:
    """A scorer by name.  ``llm`` is an LLMClient (role: ``SCORERS[name].llm_role``) or None.

    simulation without an LLM uses the offline baseline simulator; embedding never uses one;
    detection, fuzzing and rubric need one (ConfigError otherwise).  Unknown names or options
    raise ConfigError naming them.
    """
    cls = scorer_class(name)
    if name.endswith(HARD_SUFFIX):
        options.setdefault("negatives", "hard")
    return cls(llm=llm, **options)


HARD_SUFFIX = ":hard"


def scorer_class(name: str) -> type[Scorer]:
    """The class of a scorer name; ``<name>:hard`` is ``<name>`` with hard negatives."""
    base = name[: -len(HARD_SUFFIX)] if name.endswith(HARD_SUFFIX) else name
    cls = SCORERS.get(base)
    if cls is None or (base != name and "negatives" not in {f.name for f in fields(cls.Options)}):
        raise ConfigError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)} (with hard negatives: "
                          f"{', '.join(n + HARD_SUFFIX for n in with_negatives())})")
    return cls


def with_negatives() -> list[str]:
    """Scorers that take ``negatives`` (random or hard)."""
    return [n for n, c in SCORERS.items() if "negatives" in {f.name for f in fields(c.Options)}]


def pick_control_explanation(feature: int, explanations_by_feature: Mapping[int, str], seed: int = 0) -> str | None:
    """Another feature's explanation, chosen deterministically from (feature, seed).

    Scoring it on ``feature``'s examples (``control=True``) gives the chance line.  None when no
    other feature has a non-empty explanation.
    """
    others = sorted(f for f, t in explanations_by_feature.items() if f != feature and t and t.strip())
    if not others:
        return None
    return explanations_by_feature[random.Random(f"control:{seed}:{feature}").choice(others)]


__all__ = ["SCORERS", "get_scorer", "scorer_class", "with_negatives", "IntruderScorer", "EmbeddingIntruderScorer", "pick_control_explanation", "metrics", "Scorer", "ScorerOptions",
           "HARD_SUFFIX", "SimulationScorer", "DetectionScorer", "FuzzingScorer", "EmbeddingScorer", "RubricScorer"]
