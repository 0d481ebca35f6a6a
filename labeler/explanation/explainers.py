"""The LLM explainers: one class per way of showing the evidence (prompts in prompts/explain_*)."""

from __future__ import annotations

from typing import Any, ClassVar

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
        out = []
        for e in shown:
            tokens, levels = self.levels(record, shown, e)
            out.append({"text": fmt.plain(tokens), "pairs": fmt.token_pairs(tokens, levels)})
        return {"examples": out}


@register_explainer
class HighlightedExplainer(LLMExplainer):
    """Excerpts with active tokens marked inline: ``the <<bridge>>(8) over``."""

    name = "highlighted"
    prompt_name = "explain_highlighted"
    defaults: ClassVar[dict[str, Any]] = {}

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        return {"examples": self.highlighted(record, shown)}


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
        return {"examples": self.highlighted(record, shown),
                "promoted": quote(record.promoted_tokens), "suppressed": quote(record.suppressed_tokens)}


@register_explainer
class ContrastiveExplainer(LLMExplainer):
    """Activating excerpts (marked) next to non-activating ones."""

    name = "contrastive"
    prompt_name = "explain_contrastive"
    defaults: ClassVar[dict[str, Any]] = {"n_examples": 8, "n_negative": 4}

    def negatives(self, record: FeatureRecord) -> list[ActivationExample]:
        return record.select("train", "nonactivating")[: int(self.options["n_negative"])]

    def variables(self, record: FeatureRecord, shown: list[ActivationExample]) -> dict[str, Any]:
        negs = [fmt.plain(fmt.crop(e, self.options["context_tokens"])[0]) for e in self.negatives(record)]
        return {"examples": self.highlighted(record, shown), "negatives": negs}

    def shown_windows(self, record: FeatureRecord, shown: list[ActivationExample]) -> list[int]:
        return [e.window for e in shown] + [e.window for e in self.negatives(record)]
