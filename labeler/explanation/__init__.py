"""Explainers: turn a feature's train examples into a short natural-language explanation.

    explainer = get_explainer("highlighted", llm)          # or get_explainer("baseline")
    exp = await explainer.explain(record)                  # Explanation; failed=True + error, never LLMError

Names: token_activation, highlighted, cot, logits, contrastive, best_of_n (also
"best_of_n:<base>"), baseline (offline).  Prompts live in prompts/explain_<name>/v<N>.yaml.
"""

from __future__ import annotations

from typing import Any

from labeler.core.errors import ConfigError
# Importing the modules registers their explainers (``@register_explainer``).
from labeler.explanation import explainers, best_of_n, baseline  # noqa: F401,I001
from labeler.explanation.base import EXPLAINERS, Explainer, LLMExplainer


def get_explainer(name: str, llm: Any = None, **options: Any) -> Explainer:
    """An explainer by name.  LLM explainers need ``llm`` (ConfigError without one: use
    ``baseline`` to run offline)."""
    if name.startswith("best_of_n:"):
        options.setdefault("base", name.split(":", 1)[1])
        name = "best_of_n"
    cls = EXPLAINERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown explainer {name!r}; choose one of: {', '.join(EXPLAINERS)}")
    if cls.needs_llm and llm is None:
        raise ConfigError(
            f"explainer {name!r} needs an LLM endpoint: set OPENAI_API_KEY / OPENAI_BASE_URL "
            "(or LABELER_EXPLAINER_BASE_URL / LABELER_EXPLAINER_API_KEY), or use --explainer baseline"
        )
    return cls(llm, **options)


__all__ = ["get_explainer", "EXPLAINERS", "Explainer", "LLMExplainer"]
