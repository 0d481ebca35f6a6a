"""Intervention scoring: does the explanation say what the feature *does* to the output?

Output-centric scoring after Paulo et al. (2024, "intervention scoring") and Gur-Arieh et al.
(2025, "output-centric feature descriptions"): the feature is amplified on neutral prompts
("I think that", "The", ...), and an LLM judge sees, for each prompt, the steered and the
unsteered continuation in a seeded random order and says which one matches the explanation
better.  The score is the fraction of prompts where it picks the steered one (chance: 0.5).

The strength is not a fixed number: features differ in scale, so the ``add`` strength is the
one whose next-token distribution moves by ``kl_target`` nats (mean KL(unsteered || steered)
over the prompts), found by doubling then bisecting, and recorded with the KL it reached.
Prompts whose steered and unsteered continuations are identical count 0.5 and are not sent.

It needs the store's subject model (a decoder): the runner passes one to every scorer class
that sets ``needs_subject_model`` (``subject=``); outside a job, pass
``subject=SubjectCache().get(store)``.  The torch work runs in a thread, so other features'
LLM calls go on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from labeler.core.errors import ConfigError
from labeler.records import FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring.base import (
    Scorer, ScorerOptions, ScoringFailed, digit_logprob_values, gather_calls, parse_json_list, register_scorer,
)

NEUTRAL_PROMPTS = (
    "I think that", "The", "Here is what happened:", "In my opinion,", "Yesterday I", "One thing to know is",
    "It was", "We can see that", "My favourite", "The next step is", "Once upon a time", "This is",
)
"""Prompts that favour no topic; the first ``n_prompts`` are used."""


@dataclass
class InterventionOptions(ScorerOptions):
    n_prompts: int = 8  # neutral prompts steered (the first n of NEUTRAL_PROMPTS)
    max_new_tokens: int = 16  # tokens generated per continuation
    kl_target: float = 1.0  # nats of next-token KL the strength is chosen to reach
    temperature: float = 0.0  # 0: greedy, so the continuations differ by the steering alone
    max_strength: float = 10000.0  # the strength search stops here

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.n_prompts <= len(NEUTRAL_PROMPTS):
            raise ConfigError(f"n_prompts must be between 1 and {len(NEUTRAL_PROMPTS)}")
        if not 1 <= self.max_new_tokens <= 256:
            raise ConfigError("max_new_tokens must be between 1 and 256")
        if not self.kl_target > 0:
            raise ConfigError("kl_target must be > 0 (nats)")
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0")
        if not self.max_strength > 0:
            raise ConfigError("max_strength must be > 0")


@dataclass
class _Plan:
    """The steering of one feature, shared by its real and its control score."""

    search: Any  # labeler.activations.steering.StrengthSearch
    prompts: list[str]
    steered: list[str]
    unsteered: list[str]


@register_scorer
class InterventionScorer(Scorer):
    """Steered vs unsteered continuations on neutral prompts, judged against the explanation."""

    name = "intervention"
    needs_subject_model: ClassVar[bool] = True  # the runner passes subject= (the store's model)
    Options = InterventionOptions

    def __init__(self, llm: Any = None, subject: Any = None, **options: Any):
        super().__init__(llm, **options)
        if subject is None:
            raise ConfigError("scorer 'intervention' needs the store's subject model: run it in a job "
                              "(the runner loads the model), or pass subject=SubjectCache().get(store)")
        subject.require_decoder()
        self.subject = subject
        self._plans: dict[int, asyncio.Future] = {}

    def _steer(self, record: FeatureRecord) -> _Plan:
        from labeler.activations.steering import Intervention, strength_for_kl

        o = self.options
        prompts = list(NEUTRAL_PROMPTS[:o.n_prompts])
        start = record.stats.max if record.stats.max > 0 else 1.0
        search = strength_for_kl(self.subject, prompts, record.feature, o.kl_target, start=start,
                                 max_strength=o.max_strength)
        iv = Intervention(record.feature, "add", search.strength)
        kw = {"max_new_tokens": o.max_new_tokens, "temperature": o.temperature, "seed": o.seed}
        return _Plan(search, prompts, self.subject.generate(prompts, iv, **kw),
                     self.subject.generate(prompts, None, **kw))

    async def plan(self, record: FeatureRecord) -> _Plan:
        """The feature's steering, computed once per scorer (the control score reuses it)."""
        if record.feature not in self._plans:
            self._plans[record.feature] = asyncio.ensure_future(asyncio.to_thread(self._steer, record))
        return await self._plans[record.feature]

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        try:
            plan = await self.plan(record)
        except ConfigError as e:
            raise ScoringFailed(f"steering failed: {e}") from None
        rng = self.rng(record)  # the same order for the real and the control explanation
        pairs = []
        for prompt, steered, unsteered in zip(plan.prompts, plan.steered, plan.unsteered):
            steered_first = rng.random() < 0.5
            pairs.append({"prompt": prompt, "steered": steered, "unsteered": unsteered,
                          "steered_position": 1 if steered_first else 2, "identical": steered == unsteered})
        asked = [p for p in pairs if not p["identical"]]
        s = plan.search
        result.details.update({"strength": s.strength, "kl": s.kl, "kl_target": s.target, "kl_reached": s.reached,
                               "strength_trace": [list(t) for t in s.trace], "temperature": self.options.temperature,
                               "max_new_tokens": self.options.max_new_tokens, "pairs": pairs})
        soft: list[float] | None = None
        if asked:
            hard, soft = await self._judge(explanation, asked, result)
            for p, choice in zip(asked, hard):
                p["answer"] = choice
            if soft is not None:
                for p, ev in zip(asked, soft):
                    p["p_second"] = round(ev - 1.0, 4)  # expected value over "1"/"2", minus 1
        wins = [0.5 if p["identical"] else float(p["answer"] == p["steered_position"]) for p in pairs]
        result.value = sum(wins) / len(wins)
        soft_wins = None
        if soft is not None:
            by_pair = {id(p): (p["p_second"] if p["steered_position"] == 2 else 1 - p["p_second"]) for p in asked}
            soft_wins = sum(by_pair.get(id(p), 0.5) for p in pairs) / len(pairs)
        result.metrics = {"steered_win_rate": result.value, "steered_win_rate_soft": soft_wins,
                          "n_prompts": len(pairs), "n_judged": len(asked), "strength": s.strength, "kl": s.kl}
        result.details["mode"] = "logprobs" if soft is not None else "answers"
        result.details["prompt_texts"] = plan.prompts

    async def _judge(self, explanation: str, asked: list[dict], result: ScoreResult):
        tpl = self.prompt(result)
        use_lp = await self.want_logprobs()
        shown = []
        for p in asked:
            first, second = (p["steered"], p["unsteered"]) if p["steered_position"] == 1 else (p["unsteered"], p["steered"])
            shown.append({"prompt": json.dumps(p["prompt"], ensure_ascii=False),
                          "first": json.dumps(first, ensure_ascii=False),
                          "second": json.dumps(second, ensure_ascii=False)})
        messages = tpl.render(explanation=explanation, pairs=shown)
        usage, attempts = LLMUsage(), []

        def parse(resp):
            hard = parse_json_list(resp.text, len(asked), {1, 2}, "choices (1 or 2)")
            soft = digit_logprob_values(resp.logprobs, len(asked), ("1", "2")) if use_lp else None
            return hard, soft

        call = self.ask(messages, parse, usage, max_tokens=4 * len(asked) + 16, logprobs=use_lp,
                        attempts_log=attempts)
        (out,) = await gather_calls([call], [usage], attempts, result)
        return out
