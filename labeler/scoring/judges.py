"""Cheaper LLM scorers that judge whole contexts in batches: detection, fuzzing, rubric.

Each batch of contexts goes into one call; the LLM answers a JSON list with one integer per
context.  When the endpoint returns logprobs, the per-context expected value over the answer
digits (for 0/1 answers: the probability of "1") is also read, which gives AUROC.

- detection: held-out activating (top + random) vs non-activating contexts, shuffled; headline
  balanced accuracy; also precision, recall, F1, accuracy, AUROC (logprobs only).
- fuzzing: each activating context twice, once with its active tokens marked, once with as many
  randomly chosen non-activating tokens marked; same metrics as detection.
- rubric: contexts rated 0-3; headline Spearman (and Pearson) of the rating against the
  context's max activation; with logprobs the rating is the expected value over "0".."3".
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from labeler.core.errors import ConfigError
from labeler.records import ActivationExample, FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring import metrics
from labeler.scoring.base import (
    register_scorer,
    Scorer, ScorerOptions, ScoringFailed, context_text, digit_logprob_values, gather_calls, held_out,
    parse_json_list,
)


@dataclass
class JudgeOptions(ScorerOptions):
    n_top: int = 5  # held-out top-activating contexts
    n_random: int = 5  # held-out random activating contexts
    n_nonactivating: int = 10  # held-out contexts where the feature never fires
    batch_size: int = 10  # contexts per LLM call

    def validate(self) -> None:
        super().validate()
        if min(self.n_top, self.n_random, self.n_nonactivating) < 0:
            raise ConfigError("n_top, n_random and n_nonactivating must be >= 0")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")


@dataclass
class _Item:
    example: ActivationExample
    text: str  # what the LLM sees
    target: float  # 1/0 for classification; max activation for the rubric
    extra: dict[str, Any] = field(default_factory=dict)


class _JudgeScorer(Scorer):
    Options = JudgeOptions
    scale: tuple[str, ...] = ("0", "1")
    answer_name = "0/1 answers"

    def items(self, record: FeatureRecord, split: str, rng: random.Random) -> list[_Item]:
        raise NotImplementedError

    def summarise(self, items: list[_Item], answers: list[int], soft: list[float] | None,
                  result: ScoreResult) -> None:
        raise NotImplementedError

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        rng = self.rng(record)
        items = self.items(record, split, rng)
        rng.shuffle(items)
        result.example_windows = list(dict.fromkeys(it.example.window for it in items))
        if not items:
            raise ScoringFailed(f"feature {record.feature} has no held-out examples in split {split!r}")
        tpl = self.prompt(result)
        use_lp = await self.want_logprobs()
        bs = self.options.batch_size
        batches = [items[i:i + bs] for i in range(0, len(items), bs)]
        usages = [LLMUsage() for _ in batches]
        attempts: list = []
        allowed = {int(s) for s in self.scale}

        async def run(batch: list[_Item], usage: LLMUsage):
            messages = tpl.render(explanation=explanation, examples=[it.text for it in batch])

            def parse(resp):
                hard = parse_json_list(resp.text, len(batch), allowed, self.answer_name)
                soft = digit_logprob_values(resp.logprobs, len(batch), self.scale) if use_lp else None
                return hard, soft
            return await self.ask(messages, parse, usage, max_tokens=4 * len(batch) + 16,
                                  logprobs=use_lp, attempts_log=attempts)

        outs = await gather_calls([run(b, u) for b, u in zip(batches, usages)], usages, attempts, result)
        answers: list[int] = []
        soft_all: list[float] | None = [] if use_lp else None
        for hard, soft in outs:  # type: ignore[misc]
            answers.extend(hard)
            if soft_all is not None:
                soft_all = soft_all + soft if soft is not None else None
        result.details["mode"] = "logprobs" if soft_all is not None else "answers"
        result.details["calls_planned"] = len(batches)
        result.details["examples"] = [
            {"id": it.example.id, "window": it.example.window, "kind": it.example.kind,
             "target": it.target, "answer": a, **({"p": round(soft_all[i], 4)} if soft_all else {}), **it.extra}
            for i, (it, a) in enumerate(zip(items, answers))
        ]
        self.summarise(items, answers, soft_all, result)


def _classification_metrics(items: list[_Item], answers: list[int], soft: list[float] | None,
                            result: ScoreResult) -> None:
    labels = [int(it.target) for it in items]
    prf = metrics.precision_recall_f1(labels, answers)
    ba = metrics.balanced_accuracy(labels, answers)
    undefined: dict[str, str] = {}
    if soft is not None:
        st = metrics.auroc_stat(labels, soft)
        auc = st.value
        if st.reason:
            undefined["auroc"] = st.reason
    else:
        auc = None
        undefined["auroc"] = "needs logprobs (the endpoint returned none)"
    if ba is None:
        undefined["balanced_accuracy"] = "needs both matching and non-matching examples"
    for k, v in prf.items():
        if v is None:
            undefined[k] = "no positive labels or predictions"
    result.value = ba
    result.metrics = {
        "balanced_accuracy": ba, **prf, "auroc": auc,
        "accuracy": sum(int(a == y) for a, y in zip(answers, labels)) / len(labels),
        "n_examples": len(labels), "n_positive": sum(labels),
    }
    result.details["undefined"] = undefined


@register_scorer
class DetectionScorer(_JudgeScorer):
    """Which of a shuffled mix of activating and non-activating contexts match the explanation?"""

    name = "detection"

    def items(self, record: FeatureRecord, split: str, rng: random.Random) -> list[_Item]:
        o = self.options
        pos = held_out(record, split, "top", o.n_top) + held_out(record, split, "sample", o.n_random)
        neg = held_out(record, split, "nonactivating", o.n_nonactivating)
        return ([_Item(e, json.dumps(context_text(e), ensure_ascii=False), 1.0) for e in pos]
                + [_Item(e, json.dumps(context_text(e), ensure_ascii=False), 0.0) for e in neg])

    def summarise(self, items, answers, soft, result):
        _classification_metrics(items, answers, soft, result)


@dataclass
class FuzzingOptions(JudgeOptions):
    n_nonactivating: int = 0  # unused: fuzzing only needs activating contexts
    highlight_fraction: float = 0.2  # right tokens: activation > this fraction of the context's max

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.highlight_fraction < 1.0:
            raise ConfigError("highlight_fraction must be in [0, 1)")


def highlight(tokens: list[str], positions: set[int]) -> str:
    """Text with each highlighted token wrapped in << >> (runs of tokens merged)."""
    out = []
    for i, t in enumerate(tokens):
        opens = i in positions and (i - 1) not in positions
        closes = i in positions and (i + 1) not in positions
        out.append(("<<" if opens else "") + t + (">>" if closes else ""))
    return "".join(out)


def fuzzing_items(examples: list[ActivationExample], highlight_fraction: float,
                  rng: random.Random) -> list[_Item]:
    """For each activating context: the right tokens marked (target 1), and as many tokens
    drawn at random from its non-activating positions marked (target 0; skipped when the
    context has no non-activating position)."""
    items: list[_Item] = []
    for e in examples:
        peak = max(e.activations, default=0.0)
        if peak <= 0:
            continue
        right = [i for i, a in enumerate(e.activations) if a > highlight_fraction * peak]
        quiet = [i for i, a in enumerate(e.activations) if a <= 0]
        items.append(_Item(e, json.dumps(highlight(e.tokens, set(right)), ensure_ascii=False), 1.0,
                           {"highlighted": right}))
        if quiet:
            wrong = sorted(rng.sample(quiet, min(len(right), len(quiet))))
            items.append(_Item(e, json.dumps(highlight(e.tokens, set(wrong)), ensure_ascii=False), 0.0,
                               {"highlighted": wrong}))
    return items


@register_scorer
class FuzzingScorer(_JudgeScorer):
    """Correctly highlighted activating contexts vs the same contexts with wrong tokens marked."""

    name = "fuzzing"
    Options = FuzzingOptions

    def items(self, record: FeatureRecord, split: str, rng: random.Random) -> list[_Item]:
        o = self.options
        examples = held_out(record, split, "top", o.n_top) + held_out(record, split, "sample", o.n_random)
        return fuzzing_items(examples, o.highlight_fraction, rng)

    def summarise(self, items, answers, soft, result):
        _classification_metrics(items, answers, soft, result)


@dataclass
class RubricOptions(JudgeOptions):
    n_nonactivating: int = 5


@register_scorer
class RubricScorer(_JudgeScorer):
    """Specificity rubric: each context rated 0-3 for relatedness, correlated with its max activation."""

    name = "rubric"
    Options = RubricOptions
    scale = ("0", "1", "2", "3")
    answer_name = "ratings 0-3"

    def items(self, record: FeatureRecord, split: str, rng: random.Random) -> list[_Item]:
        o = self.options
        examples = (held_out(record, split, "top", o.n_top) + held_out(record, split, "sample", o.n_random)
                    + held_out(record, split, "nonactivating", o.n_nonactivating))
        return [_Item(e, json.dumps(context_text(e), ensure_ascii=False), e.max_activation) for e in examples]

    def summarise(self, items, answers, soft, result):
        acts = [it.target for it in items]
        ratings = soft if soft is not None else [float(a) for a in answers]
        sp = metrics.correlation(acts, ratings, "spearman", xname="max activations", yname="ratings")
        pe = metrics.correlation(acts, ratings, "pearson", xname="max activations", yname="ratings")
        result.value = sp.value
        result.metrics = {"spearman": sp.value, "pearson": pe.value,
                          "mean_rating": sum(ratings) / len(ratings), "n_examples": len(items)}
        result.details["undefined"] = {k: s.reason for k, s in (("spearman", sp), ("pearson", pe)) if s.reason}
