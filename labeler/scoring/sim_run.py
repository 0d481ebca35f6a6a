"""The simulation scorer's machinery: options, held-out set, answer formats, aggregation
(the scorer class and its offline baseline are in :mod:`labeler.scoring.simulation`)."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

from labeler.core.errors import BudgetExceeded, ConfigError, LLMError
from labeler.core.prompts import PromptTemplate, load_prompt
from labeler.explanation.formatting import crop_held_out, display
from labeler.llm.types import RejectedAnswer
from labeler.records import ActivationExample, FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring import metrics
from labeler.scoring.base import Scorer, ScorerOptions, ScoringFailed, held_out_mix, random_kind
from labeler.scoring.limits import cap_max_tokens
from labeler.scoring.sim_answers import EVStats, Tolerated, expected_values, parse_json, parse_lines, parse_sparse
from labeler.scoring.sim_echo import TOP_LOGPROBS, echo_predictions, placeholder_offsets

ANSWER_FORMATS = ("auto", "prompt_logprobs", "sparse", "lines", "json")
RANDOM_SETS = ("auto", "random", "sample")


@dataclass
class SimulationOptions(ScorerOptions):
    n_top: int = 5  # held-out top windows
    n_random: int = 5  # held-out random windows (see random_set)
    n_quantile: int = 0  # held-out windows stratified across activation quantiles
    random_set: str = "auto"  # auto: the store's random windows when it has them, else "sample"
    sequences_per_call: int | None = 1  # None: every text of a feature in one call (prompt v1)
    answer_format: str = "auto"  # auto | prompt_logprobs | sparse | lines | json
    shuffle: bool = True  # seeded order: prompt position must not tell top from random
    context_tokens: int | None = None  # crop texts to this many tokens (None: whole windows)
    max_token_mismatch: float = 0.1  # lines format: fraction of copied tokens allowed to differ
    min_scale_mass: float = 0.0  # below this probability on "0".."10" the written integer is used

    def validate(self) -> None:
        super().validate()
        if min(self.n_top, self.n_random, self.n_quantile) < 0 or self.n_top + self.n_random + self.n_quantile == 0:
            raise ConfigError("simulation needs n_top + n_random + n_quantile > 0 (each >= 0)")
        if self.sequences_per_call is not None and self.sequences_per_call < 1:
            raise ConfigError("sequences_per_call must be >= 1 (or None for all in one call)")
        if self.answer_format not in ANSWER_FORMATS:
            raise ConfigError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}")
        if self.random_set not in RANDOM_SETS:
            raise ConfigError(f"random_set must be one of {', '.join(RANDOM_SETS)}")
        if not 0.0 <= self.max_token_mismatch <= 1.0:
            raise ConfigError("max_token_mismatch must be between 0 and 1")
        if not 0.0 <= self.min_scale_mass <= 1.0:
            raise ConfigError("min_scale_mass must be between 0 and 1")
        if self.context_tokens is not None and self.context_tokens < 4:
            raise ConfigError("context_tokens must be >= 4 (or None for whole windows)")


def _echo_form(tok: str) -> str:
    """How prompt v1 shows a token (inside its JSON list, without the quotes)."""
    return json.dumps(tok, ensure_ascii=False)[1:-1]


class SimulationRun(Scorer):
    """Held-out set, calls and aggregation; subclasses give the offline ``baseline``."""

    def baseline(self, explanation: str, sequences: list[list[str]], result: ScoreResult) -> list[list[float]]:
        raise NotImplementedError

    def select(self, record: FeatureRecord, split: str, sets: dict[str, Any]) -> list[ActivationExample]:
        o = self.options
        kind = random_kind(record, split, o.random_set)
        out = held_out_mix(record, split, [("top", o.n_top), (kind, o.n_random), ("quantile", o.n_quantile)], sets)
        if kind != "random" and o.n_random:
            sets[kind]["as_random"] = True  # the store has no random windows: random activating ones
        return [e for e in out if e.tokens]

    async def simulate_and_score(self, record: FeatureRecord, explanation: str, split: str,
                                 result: ScoreResult) -> None:
        sets: dict[str, Any] = {}
        examples = self.select(record, split, sets)
        result.details["sets"] = sets
        result.example_windows = [e.window for e in examples]
        if not examples:
            raise ScoringFailed(f"feature {record.feature} has no top/random examples in split {split!r}")
        rng = self.rng(record)
        cropped = [crop_held_out(e, self.options.context_tokens, rng)[:2] for e in examples]
        tokens = [t for t, _ in cropped]
        order = list(range(len(examples)))
        if self.options.shuffle:
            rng.shuffle(order)
        if self.llm is None:
            mode, predictions, lost = "baseline", dict(enumerate(self.baseline(explanation, tokens, result))), {}
        else:
            mode, predictions, lost = await self._simulate(explanation, tokens, order, result)
        kept = [i for i in range(len(examples)) if i in predictions]
        if not kept:
            first = next(iter(lost.values()), "no answer")
            raise ScoringFailed(f"no held-out text could be simulated ({len(lost)} lost; first: {first})",
                                {"lost": self._lost(examples, lost)})
        out = metrics.score_simulation([cropped[i][1] for i in kept], [predictions[i] for i in kept],
                                       [examples[i].kind for i in kept])
        result.value = out["pearson"]
        result.metrics = {k: v for k, v in out.items() if k != "undefined"}
        result.metrics["n_lost"] = len(lost)
        result.details.update({
            "mode": mode, "undefined": out["undefined"], "order": [examples[i].window for i in order],
            "lost": self._lost(examples, lost),
            "sequences": [{"id": examples[i].id, "window": examples[i].window, "kind": examples[i].kind,
                           "predictions": [round(p, 3) for p in predictions[i]]} for i in kept],
        })

    @staticmethod
    def _lost(examples: list[ActivationExample], lost: dict[int, str]) -> list[dict[str, Any]]:
        return [{"window": examples[i].window, "kind": examples[i].kind, "error": why} for i, why in sorted(lost.items())]

    async def choose_format(self, tpl: PromptTemplate) -> tuple[str, bool]:
        """(answer format, use logprobs) for this endpoint and prompt version."""
        allowed = list(tpl.meta.get("answer_formats") or ["lines", "json"])  # v1 predates the list
        want = self.options.answer_format
        logprobs = await self.want_logprobs()
        if want == "prompt_logprobs" or (want == "auto" and "sparse" in allowed):
            echo = await self.llm.supports_prompt_logprobs()
            if echo:
                return "prompt_logprobs", False
            if want == "prompt_logprobs":
                raise ConfigError(f"answer_format=prompt_logprobs but the endpoint ({self.llm.model}) returns no "
                                  f"prompt logprobs (completions with echo + logprobs, as vLLM serves them)")
        if want == "auto":
            return ("sparse" if "sparse" in allowed else "lines" if logprobs else "json"), logprobs
        if want not in allowed:
            raise ConfigError(f"prompt score_simulation {tpl.version} has no answer format {want!r} "
                              f"(it has: {', '.join(allowed)})")
        return want, logprobs and want != "json"

    async def _simulate(self, explanation: str, tokens: list[list[str]], order: list[int], result: ScoreResult
                        ) -> tuple[str, dict[int, list[float]], dict[int, str]]:
        tpl = self.prompt(result)
        fmt, logprobs = await self.choose_format(tpl)
        per_call = self.options.sequences_per_call or len(order)
        chunks = [order[i:i + per_call] for i in range(0, len(order), per_call)] if fmt != "prompt_logprobs" \
            else [[i] for i in order]
        usages = [LLMUsage() for _ in chunks]
        attempts: list = []
        tol, st = Tolerated(), EVStats()
        if fmt == "prompt_logprobs":
            echo_tpl = load_prompt("score_simulation_echo")
            result.prompt_name, result.prompt_version = echo_tpl.name, echo_tpl.version
            result.details["prompt_hash"] = echo_tpl.hash
            calls = [self._echo_call(echo_tpl, explanation, tokens[c[0]], u, st) for c, u in zip(chunks, usages)]
        else:
            calls = [self._chat_call(tpl, fmt, logprobs, explanation, [tokens[i] for i in c], u, attempts, tol, st)
                     for c, u in zip(chunks, usages)]
        try:
            outs = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            for u in usages:
                result.usage.add(u)
        predictions: dict[int, list[float]] = {}
        lost: dict[int, str] = {}
        for chunk, out in zip(chunks, outs):
            if isinstance(out, ScoringFailed):  # this call's texts are lost, the others count
                lost.update({i: str(out) for i in chunk})
                continue
            if isinstance(out, BaseException):
                raise out
            rows, why = out
            for k, i in enumerate(chunk):
                if k in rows:
                    predictions[i] = rows[k]
                else:
                    lost[i] = why.get(k, "not answered")
        if attempts:
            result.details["malformed_attempts"] = attempts
        result.details.update({
            "answer_format": fmt, "logprobs": logprobs or fmt == "prompt_logprobs", "calls_planned": len(chunks),
            "sequences_per_call": 1 if fmt == "prompt_logprobs" else per_call, "point_values": st.point_values,
            "tolerant_values": st.tolerant_values, "split_tens": st.split_tens, "tolerated": tol.counts,
            "scale_mass_mean": round(sum(st.scale_mass) / len(st.scale_mass), 4) if st.scale_mass else None,
        })
        return fmt, predictions, lost

    async def _chat_call(self, tpl: PromptTemplate, fmt: str, logprobs: bool, explanation: str,
                         seqs: list[list[str]], usage: LLMUsage, attempts: list, tol: Tolerated, st: EVStats):
        v1 = "answer_formats" not in tpl.meta
        shown = _echo_form if v1 else display
        if v1:
            messages = tpl.render(explanation=explanation, answer_format="json" if fmt == "json" else "logprobs",
                                  sequences=[json.dumps(s, ensure_ascii=False) for s in seqs])
        else:
            messages = tpl.render(explanation=explanation, answer_format=fmt, sequences=[
                {"text": display("".join(s)).strip(), "tokens": [display(t) for t in s]} for s in seqs])
        lengths = [len(s) for s in seqs]
        if fmt == "sparse":
            want = 8 * len(seqs) + sum(6 * max(8, math.ceil(0.25 * n)) for n in lengths) + 32
        elif fmt == "lines":
            want = sum(3 + math.ceil(len(shown(t)) / 3) for s in seqs for t in s) + 8 * len(seqs) + 32
        else:
            want = 3 * sum(lengths) + 16 * len(seqs) + 64

        def parse(resp):
            local_tol, local_st = Tolerated(), EVStats()
            if fmt == "sparse":
                parsed, lost = parse_sparse(resp.text, lengths, local_tol)
            elif fmt == "lines":
                parsed, lost = parse_lines(resp.text, seqs, self.options.max_token_mismatch, local_tol, shown)
            else:
                parsed, lost = parse_json(resp.text, lengths, local_tol)
            rows: dict[int, list[float]] = {}
            for k, values in parsed.items():
                evs = expected_values(resp.text, resp.logprobs if logprobs else None, values,
                                      self.options.min_scale_mass, local_st)
                rows[k] = [0.0] * lengths[k]
                for v, ev in zip(values, evs):
                    rows[k][v.pos] = ev
            return rows, lost, local_tol, local_st

        rows, lost, local_tol, local_st = await self.ask(
            messages, parse, usage, max_tokens=want, logprobs=logprobs,
            response_format={"type": "json_object"} if fmt == "json" else None, attempts_log=attempts)
        for k, n in local_tol.counts.items():
            tol.add(k, n)
        st.point_values += local_st.point_values
        st.tolerant_values += local_st.tolerant_values
        st.split_tens += local_st.split_tens
        st.scale_mass.extend(local_st.scale_mass)
        return rows, lost

    async def _echo_call(self, tpl: PromptTemplate, explanation: str, tokens: list[str], usage: LLMUsage,
                         st: EVStats):
        prompt = tpl.render(explanation=explanation, tokens=[display(t) for t in tokens])[-1]["content"]
        offsets = placeholder_offsets(prompt, len(tokens))
        cap_max_tokens(1, prompt, self.llm.model, self.options.context_window)  # the prompt must fit
        local = EVStats()
        try:
            resp = await self.llm.complete_echo(prompt, TOP_LOGPROBS,
                                                validate=lambda r: echo_predictions(prompt, r.logprobs, offsets, EVStats()))
        except BudgetExceeded:
            raise
        except LLMError as e:
            raise ScoringFailed(f"LLM call failed ({e.kind}): {e}") from None
        except RejectedAnswer as rejected:
            usage.add(rejected.response.usage)
            raise ScoringFailed(f"unusable prompt logprobs: {rejected.error}") from None
        usage.add(resp.usage)
        values = echo_predictions(prompt, resp.logprobs, offsets, local)
        st.point_values += local.point_values
        st.tolerant_values += local.tolerant_values
        st.scale_mass.extend(local.scale_mass)
        return {0: values}, {}
