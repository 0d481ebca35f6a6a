"""Intruder scoring (after delphi's intruder): which of these examples does not belong?

Each round shows ``n_shown`` held-out contexts (32-token crops): ``n_shown - 1`` activating
ones, taken in turn from the top, quantile and random activating sets, with their active tokens
marked (>= ``mark_threshold`` of the context's max), and one intruder, a context where the
feature does not fire (random, or a hard negative with ``negatives="hard"``) with as many tokens
marked (tokens it shares with the others' marks first), at a seeded position.  The score is the
fraction of rounds in which the intruder is found (chance: ``1 / n_shown``).

It measures whether the feature's examples hang together, not the explanation: by default the
judge does not see the explanation (delphi's design; a control score then equals the real
one), ``use_explanation=True`` shows it.  ``intruder_embedding`` is the same test with no LLM:
the intruder is guessed as the context whose MiniLM embedding is least similar to the others'.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from typing import Any

from labeler.core.errors import ConfigError
from labeler.records import FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring.base import MalformedAnswer, ScoringFailed, gather_calls, register_scorer
from labeler.scoring.judges import Item, JudgeOptions, JudgeScorer, wrong_marks
from labeler.explanation.formatting import marked_positions


@dataclass
class IntruderOptions(JudgeOptions):
    n_rounds: int = 5  # calls: one intruder each
    n_shown: int = 5  # contexts per round, the intruder included
    use_explanation: bool = False  # delphi's intruder does not show it
    mark_threshold: float = 0.3
    model_path: str | None = None  # intruder_embedding: the sentence-embedding model (None: MiniLM)

    def validate(self) -> None:
        super().validate()
        if self.n_rounds < 1 or self.n_shown < 2:
            raise ConfigError("intruder needs n_rounds >= 1 and n_shown >= 2")


_ANSWER = re.compile(r"(\d+)")


def parse_intruder(text: str, n: int) -> int:
    """The intruder's number (1-based) in the answer: the last number after a ``RESPONSE``
    or ``intruder`` marker, else the only number in range."""
    tail = re.split(r"(?i)response\W*|intruder\W*(?:is\W*)?", text or "")[-1]
    found = [int(x) for x in _ANSWER.findall(tail) if 1 <= int(x) <= n]
    if not found:
        raise MalformedAnswer(f"no example number between 1 and {n} in the answer")
    return found[0]


class _IntruderRounds(JudgeScorer):
    Options = IntruderOptions

    def rounds(self, record: FeatureRecord, split: str, sets: dict[str, Any]) -> list[tuple[list[Item], int]]:
        """(contexts in shown order, index of the intruder) per round."""
        o = self.options
        rng = self.rng(record)
        pos = [it for it in self.positives(record, split, rng, sets) if max(it.acts, default=0) > 0]
        neg = self.negatives(record, split, rng, sets, o.n_rounds)
        if len(pos) < o.n_shown - 1 or not neg:
            raise ScoringFailed(f"feature {record.feature} has too few held-out examples for intruder rounds "
                                f"({len(pos)} activating, {len(neg)} non-activating in split {split!r})")
        for it in pos:
            it.marks = marked_positions(it.acts, o.mark_threshold)
        shared = {it.tokens[i].strip().lower() for it in pos for i in it.marks if it.tokens[i].strip()}
        out = []
        for r, intruder in enumerate(neg):
            members = [pos[(r * (o.n_shown - 1) + j) % len(pos)] for j in range(o.n_shown - 1)]
            n_wrong = max(1, math.ceil(sum(len(m.marks) for m in members) / len(members)))
            intruder.marks = wrong_marks(intruder, n_wrong, shared if o.negatives == "hard" else set(), rng)
            at = rng.randrange(o.n_shown)
            out.append((members[:at] + [intruder] + members[at:], at))
        return out

    def finish(self, rounds: list[tuple[list[Item], int]], guesses: list[int], result: ScoreResult,
               extra: dict[str, Any]) -> None:
        hits = [int(g == at) for (_, at), g in zip(rounds, guesses)]
        n_shown = self.options.n_shown
        result.value = sum(hits) / len(hits)
        result.metrics = {"accuracy": result.value, "chance": 1.0 / n_shown, "n_rounds": len(hits)}
        result.example_windows = list(dict.fromkeys(it.example.window for items, _ in rounds for it in items))
        result.details.update({
            "negatives": self.options.negatives, "use_explanation": self.options.use_explanation, **extra,
            "rounds": [{"windows": [it.example.window for it in items], "intruder": at + 1, "guess": g + 1}
                       for (items, at), g in zip(rounds, guesses)],
        })


@register_scorer
class IntruderScorer(_IntruderRounds):
    name = "intruder"

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        result.method = self.method
        sets: dict[str, Any] = {}
        rounds = self.rounds(record, split, sets)
        result.details["sets"] = sets
        tpl = self.prompt(result)
        usages = [LLMUsage() for _ in rounds]
        attempts: list = []
        shown_explanation = explanation if self.options.use_explanation else ""

        async def run(items: list[Item], usage: LLMUsage) -> int:
            messages = tpl.render(explanation=shown_explanation, examples=[self.text(it, False) for it in items])
            return await self.ask(messages, lambda resp: parse_intruder(resp.text, len(items)) - 1, usage,
                                  max_tokens=16, attempts_log=attempts)

        guesses = await gather_calls([run(items, u) for (items, _), u in zip(rounds, usages)], usages, attempts,
                                     result)
        self.finish(rounds, guesses, result, {"calls_planned": len(rounds)})


@register_scorer
class EmbeddingIntruderScorer(_IntruderRounds):
    """The intruder test without an LLM: the context least similar to the others is the guess."""

    name = "intruder_embedding"
    needs_llm = False
    uses_llm = False

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        from labeler.scoring.embedding import default_model_path, embed

        result.method = self.method
        sets: dict[str, Any] = {}
        rounds = self.rounds(record, split, sets)
        result.details["sets"] = sets
        result.llm_model = result.prompt_name = None
        path = str(self.options.model_path or default_model_path())
        texts = ["".join(it.tokens) for items, _ in rounds for it in items]
        vecs = await asyncio.to_thread(embed, texts, path)
        guesses, k = [], 0
        for items, _ in rounds:
            v = vecs[k:k + len(items)]
            k += len(items)
            sims = v @ v.T
            mean_other = [(float(sims[i].sum()) - float(sims[i, i])) / (len(items) - 1) for i in range(len(items))]
            guesses.append(min(range(len(items)), key=lambda i: mean_other[i]))
        self.finish(rounds, guesses, result, {"model": "all-MiniLM-L6-v2" if not self.options.model_path
                                              else self.options.model_path})
