"""Explainers: turn a feature's train examples into a short natural-language explanation.

    explainer = get_explainer("highlighted", llm)          # or get_explainer("baseline")
    exp = await explainer.explain(record)                  # Explanation; failed=True + error, never LLMError

Names: token_activation, highlighted, cot, logits, contrastive, best_of_n (also
"best_of_n:<base>"), baseline (offline).  Prompts live in prompts/explain_<name>/v<N>.yaml.
"""

from __future__ import annotations

from typing import Any

from labeler.core.errors import ConfigError
from labeler.explanation.base import Explainer, LLMExplainer
from labeler.explanation.baseline import BaselineExplainer
from labeler.explanation.best_of_n import BestOfNExplainer
from labeler.explanation.explainers import (
    ChainOfThoughtExplainer,
    ContrastiveExplainer,
    HighlightedExplainer,
    LogitsExplainer,
    TokenActivationExplainer,
)

EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (TokenActivationExplainer, HighlightedExplainer, ChainOfThoughtExplainer, LogitsExplainer,
                ContrastiveExplainer, BestOfNExplainer, BaselineExplainer)
}


def get_explainer(name: str, llm: Any = None, **options: Any) -> Explainer:
    """An explainer by name.  LLM explainers without ``llm`` use ``get_llm("explainer")`` and
    raise ConfigError when no endpoint is configured (use ``baseline`` to run offline)."""
    if name.startswith("best_of_n:"):
        options.setdefault("base", name.split(":", 1)[1])
        name = "best_of_n"
    cls = EXPLAINERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown explainer {name!r}; choose one of: {', '.join(EXPLAINERS)}")
    if cls.needs_llm and llm is None:
        from labeler.llm import get_llm

        llm = get_llm("explainer")
        if llm is None:
            raise ConfigError(
                f"explainer {name!r} needs an LLM endpoint: set OPENAI_API_KEY / OPENAI_BASE_URL "
                "(or LABELER_EXPLAINER_BASE_URL / LABELER_EXPLAINER_API_KEY), or use --explainer baseline"
            )
    return cls(llm, **options)


__all__ = ["get_explainer", "EXPLAINERS", "Explainer", "LLMExplainer"]
