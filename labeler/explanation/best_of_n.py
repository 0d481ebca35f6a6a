"""Best-of-N: N candidates from a base explainer at temperature > 0, each scored on the
``valid`` split (disjoint from the explainer's ``train`` examples and the final ``test``
split); the best is kept and every candidate is recorded with its score."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from labeler.core.errors import BudgetExceeded, ConfigError
from labeler.explanation.base import Explainer, register_explainer
from labeler.records import Explanation, FeatureRecord, LLMUsage


@register_explainer
class BestOfNExplainer(Explainer):
    name = "best_of_n"
    llm_options: ClassVar[dict[str, str]] = {"scorer_llm": "simulator"}
    defaults: ClassVar[dict[str, Any]] = {
        "base": "highlighted", "n": 4, "temperature": 0.7, "scorer": "simulation",
        "scorer_llm": None, "base_options": {},
    }

    def __init__(self, llm: Any = None, **options: Any):
        super().__init__(llm, **options)
        from labeler.explanation import get_explainer

        if self.options["base"] == "best_of_n":
            raise ConfigError("best_of_n needs a different base explainer")
        self.base = get_explainer(self.options["base"], llm, temperature=float(self.options["temperature"]),
                                  **dict(self.options["base_options"]))
        self._scorer = None if isinstance(self.options["scorer"], str) else self.options["scorer"]
        self.name = f"best_of_n:{self.base.name}"

    @property
    def config(self) -> dict[str, Any]:
        c = {k: v for k, v in self.options.items() if k != "scorer_llm" or v in (None, "offline")}
        if not isinstance(c["scorer"], str):
            c["scorer"] = getattr(c["scorer"], "name", type(c["scorer"]).__name__)
        return dict(sorted(c.items()))

    def scorer(self) -> Any:
        if self._scorer is None:
            from labeler.scoring import get_scorer  # here, not at the top: scoring builds on explanation

            scorer_llm = self.options["scorer_llm"]
            if scorer_llm is None:  # no simulator endpoint given: rank with the explainer's own LLM
                scorer_llm = self.llm
            elif scorer_llm == "offline":
                scorer_llm = None  # the scorer's offline fallback (simulation: baseline simulator)
            self._scorer = get_scorer(self.options["scorer"], scorer_llm)
        return self._scorer

    async def explain(self, record: FeatureRecord, *, cache_salt: str | None = None) -> Explanation:
        n = int(self.options["n"])
        results = await asyncio.gather(
            *(self.base.explain(record, cache_salt=f"{cache_salt or ''}|candidate{i}") for i in range(n)),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BudgetExceeded):
                raise r
            if isinstance(r, BaseException):
                raise r
        cands: list[Explanation] = list(results)  # type: ignore[arg-type]
        usage = LLMUsage()
        for c in cands:
            usage.add(c.usage)
        scores: dict[str, tuple[float | None, str | None]] = {}
        scorer = self.scorer()
        for text in dict.fromkeys(c.text for c in cands if not c.failed):  # distinct texts, in order
            res = await scorer.score(record, text, split="valid")
            usage.add(res.usage)
            scores[text] = (None if res.failed else res.value, res.error if res.failed else None)
        first = cands[0]
        exp = Explanation(
            feature=record.feature, text="", explainer=self.name, llm_model=first.llm_model,
            prompt_name=first.prompt_name, prompt_version=first.prompt_version, prompt_hash=first.prompt_hash,
            usage=usage, example_windows=sorted({w for c in cands for w in c.example_windows}), config=self.config,
            candidates=[{"text": c.text, "score": scores.get(c.text, (None, None))[0], "failed": c.failed,
                         "error": c.error or scores.get(c.text, (None, None))[1], "raw": c.raw,
                         "usage": c.usage.to_dict()} for c in cands],
        )
        ok = [c for c in exp.candidates if not c["failed"]]
        if not ok:
            exp.failed = True
            exp.error = f"all {n} candidates failed; first: {cands[0].error}"
            exp.raw = cands[0].raw
            return exp
        scored = [c for c in ok if c["score"] is not None]
        best = max(scored, key=lambda c: c["score"]) if scored else ok[0]  # max keeps the first of ties
        exp.text = best["text"]
        exp.raw = best["raw"]
        return exp
