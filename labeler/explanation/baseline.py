"""The offline baseline explainer: no LLM, token statistics of top versus background contexts.

Peak tokens (activation >= ``peak_fraction`` of the example's maximum) in the top train
examples are compared with all tokens of the train background examples (random activating and
non-activating contexts): the tokens most over-represented at peaks name the feature, the tokens
most over-represented just before peaks give its context.  Deterministic and fully offline.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, ClassVar

from labeler.explanation.base import Explainer, register_explainer
from labeler.explanation.formatting import pick_train
from labeler.records import Explanation, FeatureRecord, LLMUsage

ALGORITHM_VERSION = "v1"


def _display(token: str) -> str:
    core = token.strip()
    return core if core else json.dumps(token)[1:-1]  # "\n" rather than an invisible token


def _over_represented(hits: Counter[str], background: Counter[str], k: int, min_count: int) -> list[str]:
    """Keys of ``hits`` ranked by smoothed log-ratio of their rate at peaks vs in the background."""
    n_hit, n_bg = sum(hits.values()), sum(background.values())
    vocab = len(set(hits) | set(background)) or 1
    def score(t: str) -> float:
        return (math.log((hits[t] + 0.5) / (n_hit + 0.5 * vocab))
                - math.log((background[t] + 0.5) / (n_bg + 0.5 * vocab)))
    ranked = sorted((t for t in hits if hits[t] >= min_count and score(t) > 0),
                    key=lambda t: (-score(t), -hits[t], t))
    return ranked[:k]


@register_explainer
class BaselineExplainer(Explainer):
    name = "baseline"
    needs_llm = False
    # sampling "top": its token statistics compare the strongest peaks with the background
    defaults: ClassVar[dict[str, Any]] = {"n_examples": 20, "n_tokens": 3, "n_context": 2, "peak_fraction": 0.5,
                                          "sampling": "top"}

    async def explain(self, record: FeatureRecord, *, cache_salt: str | None = None) -> Explanation:
        return self.explain_sync(record)

    def explain_sync(self, record: FeatureRecord) -> Explanation:
        o = self.options
        top = pick_train(record, int(o["n_examples"]), str(o["sampling"]))
        background = record.select("train", "sample", "nonactivating")
        desc = f"baseline token statistics {ALGORITHM_VERSION}: {json.dumps(self.config, sort_keys=True)}"
        exp = Explanation(feature=record.feature, text="", explainer=self.name, llm_model=None,
                          prompt_name="baseline", prompt_version=ALGORITHM_VERSION,
                          prompt_hash=hashlib.sha256(desc.encode()).hexdigest()[:16], usage=LLMUsage(),
                          example_windows=[e.window for e in top + background], config=self.config)
        if not top:
            exp.failed, exp.error = True, "no activating train examples"
            return exp
        peaks: Counter[str] = Counter()
        before: Counter[str] = Counter()
        for e in top:
            cut = float(o["peak_fraction"]) * e.max_activation
            for i, a in enumerate(e.activations):
                if a > 0 and a >= cut:
                    peaks[_display(e.tokens[i])] += 1
                    if i > 0:
                        before[_display(e.tokens[i - 1])] += 1
        bg: Counter[str] = Counter(_display(t) for e in background for t in e.tokens)
        if not bg:  # no background examples: compare with the non-peak tokens of the top examples
            bg = Counter(_display(t) for e in top for t, a in zip(e.tokens, e.activations)
                         if a < float(o["peak_fraction"]) * e.max_activation)
        min_count = 2 if len(top) >= 4 else 1
        words = _over_represented(peaks, bg, 4 * int(o["n_tokens"]), min_count) or [peaks.most_common(1)[0][0]]
        # fold case variants together ("bridge", "Bridge"), keeping the best-ranked first
        groups: dict[str, list[str]] = {}
        for w in words:
            groups.setdefault(w.lower(), []).append(w)
        shown = [f for forms in list(groups.values())[: int(o["n_tokens"])] for f in forms[:2]]
        text = ", ".join(json.dumps(w, ensure_ascii=False) for w in shown) + " (tokens)"
        context = [w for w in _over_represented(before, bg, 3 * int(o["n_context"]), min_count)
                   if w.lower() not in groups][: int(o["n_context"])]
        if context:
            text += "; context: " + ", ".join(json.dumps(w, ensure_ascii=False) for w in context)
        exp.text = text
        return exp
