"""Cheaper LLM scorers that judge whole contexts in batches: detection, fuzzing, rubric.

Each batch of contexts (``batch_size``, 5 by default: more per call is cheaper but lets the
judge compare) goes into one call; the LLM answers a JSON list with one integer per context.
With logprobs the per-context expected value over the answer digits (for 0/1 answers: the
probability of "1") is read too, which gives AUROC.  Contexts are cropped to
``context_tokens`` (32, the explainer's crop: activating ones around their peak at 3/4,
others at a seeded offset) and shown with visible whitespace (prompt v2).

- detection: held-out activating contexts (``n_top`` top, ``n_sample`` random activating,
  ``n_quantile`` stratified) vs ``n_nonactivating`` contexts where the feature does not fire,
  shuffled; headline balanced accuracy; also precision, recall, F1, accuracy, AUROC.
- fuzzing: the activating contexts with their active tokens marked (at >= ``mark_threshold``
  of the context's max, as the explainer marks them) vs non-activating contexts with as many
  tokens marked (never a second copy of an activating context); same metrics.
- rubric: contexts rated 0-3; headline Spearman (and Pearson) of the rating against the
  context's max activation; with logprobs the rating is the expected value over "0".."3".

``negatives="hard"`` (detection, fuzzing): the negatives are hard negatives (windows that
resemble activating ones but do not fire; in fuzzing their tokens shared with the activating
contexts are the ones marked), stored as method ``<name>:hard`` beside the random-negative
score, so a report shows both.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from labeler.core.errors import ConfigError
from labeler.explanation.formatting import crop_held_out, display, mark_runs, marked_positions
from labeler.records import ActivationExample, FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring import metrics
from labeler.scoring.base import (
    NEGATIVES, Scorer, ScorerOptions, ScoringFailed, digit_logprob_values, gather_calls, held_out_mix,
    negative_examples, parse_json_list, register_scorer,
)


@dataclass
class JudgeOptions(ScorerOptions):
    NOT_IN_KEY = ScorerOptions.NOT_IN_KEY + ("negatives",)  # <name>:hard is the method
    n_top: int = 5  # held-out top-activating contexts
    n_sample: int = 5  # held-out random activating contexts
    n_quantile: int = 0  # held-out contexts stratified across activation quantiles
    n_nonactivating: int = 10  # held-out contexts where the feature does not fire
    negatives: str = "random"  # random | hard (see the module docstring)
    batch_size: int = 5  # contexts per LLM call
    context_tokens: int | None = 32  # crop (None: whole windows, prompt v1's choice)

    def validate(self) -> None:
        super().validate()
        if min(self.n_top, self.n_sample, self.n_quantile, self.n_nonactivating or 0) < 0:
            raise ConfigError("n_top, n_sample, n_quantile and n_nonactivating must be >= 0")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {', '.join(NEGATIVES)}")
        if self.context_tokens is not None and self.context_tokens < 4:
            raise ConfigError("context_tokens must be >= 4 (or None for whole windows)")


@dataclass
class Item:
    example: ActivationExample
    tokens: list[str]  # the (cropped) tokens shown
    acts: list[float]
    target: float  # 1/0 for classification; max activation for the rubric
    marks: list[int] = field(default_factory=list)  # marked token positions (fuzzing)
    extra: dict[str, Any] = field(default_factory=dict)


class JudgeScorer(Scorer):
    Options = JudgeOptions
    scale: tuple[str, ...] = ("0", "1")
    answer_name = "0/1 answers"

    @property
    def method(self) -> str:
        return f"{self.name}:hard" if getattr(self.options, "negatives", "random") == "hard" else self.name

    def items(self, record: FeatureRecord, split: str, rng: random.Random, sets: dict[str, Any]) -> list[Item]:
        raise NotImplementedError

    def summarise(self, items: list[Item], answers: list[int], soft: list[float] | None,
                  result: ScoreResult) -> None:
        _classification_metrics(items, answers, soft, result)

    def positives(self, record: FeatureRecord, split: str, rng: random.Random, sets: dict[str, Any]) -> list[Item]:
        o = self.options
        out = []
        for e in held_out_mix(record, split, [("top", o.n_top), ("sample", o.n_sample),
                                              ("quantile", o.n_quantile)], sets):
            toks, acts, _ = crop_held_out(e, o.context_tokens, rng)
            out.append(Item(e, toks, acts, 1.0))
        return out

    def negatives(self, record: FeatureRecord, split: str, rng: random.Random, sets: dict[str, Any],
                  n: int) -> list[Item]:
        out = []
        for e in negative_examples(record, split, self.options.negatives, n, sets):
            toks, acts, _ = crop_held_out(e, self.options.context_tokens, rng)
            out.append(Item(e, toks, acts, 0.0))
        return out

    def text(self, item: Item, v1: bool) -> str:
        import json

        if v1:  # prompt v1 showed raw, JSON-quoted text
            return json.dumps(_highlight_raw(item.tokens, set(item.marks)) if item.marks else "".join(item.tokens),
                              ensure_ascii=False)
        return mark_runs(item.tokens, set(item.marks)) if item.marks else display("".join(item.tokens)).strip()

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        result.method = self.method
        rng = self.rng(record)
        sets: dict[str, Any] = {}
        items = self.items(record, split, rng, sets)
        rng.shuffle(items)
        result.details["sets"] = sets
        result.example_windows = list(dict.fromkeys(it.example.window for it in items))
        if not items:
            raise ScoringFailed(f"feature {record.feature} has no held-out examples in split {split!r}")
        tpl = self.prompt(result)
        v1 = tpl.version == "v1"
        use_lp = await self.want_logprobs()
        bs = self.options.batch_size
        batches = [items[i:i + bs] for i in range(0, len(items), bs)]
        usages = [LLMUsage() for _ in batches]
        attempts: list = []
        allowed = {int(s) for s in self.scale}

        async def run(batch: list[Item], usage: LLMUsage):
            messages = tpl.render(explanation=explanation, examples=[self.text(it, v1) for it in batch])

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
        result.details.update({
            "mode": "logprobs" if soft_all is not None else "answers", "calls_planned": len(batches),
            "negatives": getattr(self.options, "negatives", None), "context_tokens": self.options.context_tokens,
            "examples": [
                {"id": it.example.id, "window": it.example.window, "kind": it.example.kind, "target": it.target,
                 "answer": a, **({"p": round(soft_all[i], 4)} if soft_all else {}),
                 **({"highlighted": it.marks} if it.marks else {}), **it.extra}
                for i, (it, a) in enumerate(zip(items, answers))],
        })
        self.summarise(items, answers, soft_all, result)


def _highlight_raw(tokens: list[str], positions: set[int]) -> str:
    out = []
    for i, t in enumerate(tokens):
        opens = i in positions and (i - 1) not in positions
        closes = i in positions and (i + 1) not in positions
        out.append(("<<" if opens else "") + t + (">>" if closes else ""))
    return "".join(out)


def _classification_metrics(items: list[Item], answers: list[int], soft: list[float] | None,
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
class DetectionScorer(JudgeScorer):
    """Which of a shuffled mix of activating and non-activating contexts match the explanation?"""

    name = "detection"

    def items(self, record, split, rng, sets):
        return self.positives(record, split, rng, sets) + self.negatives(record, split, rng, sets,
                                                                         self.options.n_nonactivating)


@dataclass
class FuzzingOptions(JudgeOptions):
    n_nonactivating: int | None = None  # type: ignore[assignment]  # None: as many as the activating contexts
    mark_threshold: float = 0.3  # right tokens: >= this fraction of the context's max (the explainer's)

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.mark_threshold <= 1.0:
            raise ConfigError("mark_threshold must be in (0, 1]")


def wrong_marks(item: Item, n_wrong: int, shared: set[str], rng: random.Random) -> list[int]:
    """Positions to mark on a non-activating context: tokens it shares with the activating
    contexts' marked tokens first (what makes a hard negative hard), then random positions,
    always including 3/4 of the crop (where an activating context's peak sits)."""
    n = len(item.tokens)
    if n == 0 or n_wrong <= 0:
        return []
    chosen = [i for i, t in enumerate(item.tokens) if t.strip().lower() in shared][:n_wrong]
    rest = [i for i in range(n) if i not in chosen]
    anchor = min(n - 1, (3 * n) // 4)
    if len(chosen) < n_wrong and anchor in rest:
        chosen.append(anchor)
        rest.remove(anchor)
    chosen += rng.sample(rest, min(len(rest), n_wrong - len(chosen)))
    return sorted(chosen)


@register_scorer
class FuzzingScorer(JudgeScorer):
    """Correctly marked activating contexts vs non-activating contexts with as many tokens marked
    (after delphi's default fuzzing: one context never appears twice)."""

    name = "fuzzing"
    Options = FuzzingOptions

    def items(self, record, split, rng, sets):
        o = self.options
        pos = [it for it in self.positives(record, split, rng, sets) if max(it.acts, default=0) > 0]
        for it in pos:
            it.marks = marked_positions(it.acts, o.mark_threshold)
        n_neg = len(pos) if o.n_nonactivating is None else o.n_nonactivating
        neg = self.negatives(record, split, rng, sets, n_neg)
        n_wrong = math.ceil(sum(len(it.marks) for it in pos) / len(pos)) if pos else 1
        shared = {it.tokens[i].strip().lower() for it in pos for i in it.marks if it.tokens[i].strip()}
        for it in neg:
            it.marks = wrong_marks(it, n_wrong, shared if o.negatives == "hard" else set(), rng)
        return pos + neg


@dataclass
class RubricOptions(JudgeOptions):
    n_nonactivating: int = 5


@register_scorer
class RubricScorer(JudgeScorer):
    """Specificity rubric: each context rated 0-3 for relatedness, correlated with its max activation."""

    name = "rubric"
    Options = RubricOptions
    scale = ("0", "1", "2", "3")
    answer_name = "ratings 0-3"

    def items(self, record, split, rng, sets):
        its = self.positives(record, split, rng, sets) + self.negatives(record, split, rng, sets,
                                                                        self.options.n_nonactivating)
        for it in its:
            it.target = max(it.acts, default=0.0)
        return its

    def summarise(self, items, answers, soft, result):
        acts = [it.target for it in items]
        ratings = soft if soft is not None else [float(a) for a in answers]
        sp = metrics.correlation(acts, ratings, "spearman", xname="max activations", yname="ratings")
        pe = metrics.correlation(acts, ratings, "pearson", xname="max activations", yname="ratings")
        result.value = sp.value
        result.metrics = {"spearman": sp.value, "pearson": pe.value,
                          "mean_rating": sum(ratings) / len(ratings), "n_examples": len(items)}
        result.details["undefined"] = {k: s.reason for k, s in (("spearman", sp), ("pearson", pe)) if s.reason}
