"""The LLM explainers: one class per way of showing the evidence (prompts in prompts/explain_*)."""

from __future__ import annotations

from typing import Any, ClassVar

from labeler.core.errors import ConfigError
from labeler.explanation import formatting as fmt
from labeler.explanation.base import LLMExplainer, register_explainer
from labeler.records import ActivationExample, FeatureRecord


@register_explainer
class TokenActivationExplainer(LLMExplainer):
    """Plain excerpts, each followed by its active tokens as ``"token"=n`` pairs (n = 0-10)."""

    name = "token_activation"
    prompt_name = "explain_token_activation"
    defaults: ClassVar[dict[str, Any]] = {}

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        return {"examples": [{"text": v["plain"], "pairs": v["pairs"]} for v in self.views(record, shown)]}


@register_explainer
class HighlightedExplainer(LLMExplainer):
    """Excerpts with active tokens marked inline: ``the <<bridge>>(8) over``."""

    name = "highlighted"
    prompt_name = "explain_highlighted"
    defaults: ClassVar[dict[str, Any]] = {}

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        views = self.views(record, shown)
        # v1 templates take the marked strings; v2 ones each example's text and values
        return {"examples": [v["text"] for v in views], "shown": views}


@register_explainer
class ChainOfThoughtExplainer(HighlightedExplainer):
    """Highlighted excerpts; the model reasons, then writes ``EXPLANATION: ...``; reasoning is dropped."""

    name = "cot"
    prompt_name = "explain_cot"
    defaults: ClassVar[dict[str, Any]] = {"max_tokens": 400}

    def parse(self, text: str) -> tuple[str | None, str]:
        final, why = fmt.final_line(text)
        if final is None:
            return None, why
        return fmt.clean_explanation(final, int(self.options["max_chars"]))


@register_explainer
class LogitsExplainer(LLMExplainer):
    """Output side (tokens the decoder direction promotes / suppresses) plus a few top contexts."""

    name = "logits"
    prompt_name = "explain_logits"
    defaults: ClassVar[dict[str, Any]] = {"n_examples": 3, "n_logit_tokens": 10}

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        k = int(self.options["n_logit_tokens"])
        quote = lambda toks: ", ".join(f'"{t}"' for t in toks[:k])  # noqa: E731
        views = self.views(record, shown)
        return {"examples": [v["text"] for v in views], "shown": views,
                "promoted": quote(record.promoted_tokens), "suppressed": quote(record.suppressed_tokens)}


@register_explainer
class ContrastiveExplainer(LLMExplainer):
    """Activating excerpts (marked) next to non-activating ones: random non-activating windows,
    or with ``negatives="hard"`` hard negatives (windows that resemble the activating ones but
    do not fire), topped up with random ones when the store has too few."""

    name = "contrastive"
    prompt_name = "explain_contrastive"
    defaults: ClassVar[dict[str, Any]] = {"n_examples": 8, "n_negative": 4, "negatives": "random"}

    def __init__(self, llm: Any = None, **options: Any):
        super().__init__(llm, **options)
        if self.options["negatives"] not in ("random", "hard"):
            raise ConfigError(f"contrastive option negatives={self.options['negatives']!r}: use 'random' or 'hard'")

    def negatives(self, record: FeatureRecord) -> list[ActivationExample]:
        n = int(self.options["n_negative"])
        hard = record.select("train", "hard_negative")[:n] if self.options["negatives"] == "hard" else []
        taken = {e.window for e in hard}
        return hard + [e for e in record.select("train", "nonactivating") if e.window not in taken][: n - len(hard)]

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        negs = [fmt.plain(fmt.crop(e, self.options["context_tokens"])[0], self.style.visible)
                for e in self.negatives(record)]
        views = self.views(record, shown)
        return {"examples": [v["text"] for v in views], "shown": views, "negatives": negs}

    def shown_windows(self, record: FeatureRecord, shown: list[ActivationExample]) -> list[int]:
        return [e.window for e in shown] + [e.window for e in self.negatives(record)]
