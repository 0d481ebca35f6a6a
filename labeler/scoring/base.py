"""What every scorer shares: options, held-out example selection, LLM calls with answer checks."""

from __future__ import annotations

import asyncio

import json
import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from labeler.core.errors import BudgetExceeded, ConfigError, LLMError
from labeler.core.prompts import PromptTemplate, load_prompt
from labeler.llm.types import RejectedAnswer
from labeler.records import ActivationExample, FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring.limits import cap_max_tokens

T = TypeVar("T")

HELD_OUT_SPLITS = ("valid", "test")


class MalformedAnswer(ValueError):
    """The LLM answered, but not in the requested shape; the message tells it what was wrong."""


class ScoringFailed(Exception):
    """Internal: ends one scoring run; turned into ``ScoreResult(failed=True)``."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details or {}


@dataclass
class ScorerOptions:
    """Options every scorer accepts."""

    # options that do not make another piece of work (how hard to retry, or already in the
    # method name): left out of a score's idempotency key; every other non-default one is in it
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ("max_parse_retries",)

    seed: int = 0  # shuffles and random choices derive from (method, seed, feature)
    max_parse_retries: int = 2  # extra attempts after a malformed answer
    use_logprobs: bool | None = None  # None: use them when the endpoint supports them
    prompt_version: str | None = None  # None: newest prompts/score_<method>/v<N>.yaml
    context_window: int | None = None  # the model's context in tokens; None: limits.KNOWN_CONTEXT

    def validate(self) -> None:
        if self.max_parse_retries < 0:
            raise ConfigError("max_parse_retries must be >= 0")
        if self.context_window is not None and self.context_window < 256:
            raise ConfigError("context_window must be >= 256 tokens")


class Scorer(ABC):
    """Base class: ``await scorer.score(record, explanation, split="test", control=False)``.

    Scorers read only held-out examples (``record.select(split, ...)`` with split valid/test)
    and never raise on LLM failure: they return ``ScoreResult(failed=True, error=...)``.
    ``BudgetExceeded`` propagates so the caller stops starting new work.
    """

    name: ClassVar[str]
    needs_llm: ClassVar[bool] = True  # refuses to run without an LLM client
    uses_llm: ClassVar[bool] = True  # takes the role's client when one is configured
    llm_role: ClassVar[str] = "scorer"  # which LLM role a caller should pass (see get_llm)
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions

    def __init__(self, llm: Any = None, **options: Any):
        known = {f.name for f in fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for scorer {self.name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        hints = {f.name: str(f.type) for f in fields(self.Options)}
        for key, value in options.items():
            _check_option_type(self.name, key, value, hints[key])
        self.options = self.Options(**options)
        self.options.validate()
        defaults = self.Options()
        self.key_options = {f.name: getattr(self.options, f.name) for f in fields(self.Options)
                            if f.name not in self.Options.NOT_IN_KEY
                            and getattr(self.options, f.name) != getattr(defaults, f.name)}
        if self.needs_llm and llm is None:
            raise ConfigError(
                f"scorer {self.name!r} needs an LLM endpoint: set LABELER_LLM_BASE_URL / "
                f"LABELER_{self.llm_role.upper()}_BASE_URL (or OPENAI_BASE_URL / OPENAI_API_KEY)"
            )
        self.llm = llm

    # -- public ---------------------------------------------------------------------------

    async def score(self, record: FeatureRecord, explanation: str, *, split: str = "test",
                    control: bool = False) -> ScoreResult:
        if split not in HELD_OUT_SPLITS:
            raise ConfigError(f"scoring uses held-out examples only: split must be one of "
                              f"{HELD_OUT_SPLITS}, not {split!r} (the explainer saw 'train')")
        result = ScoreResult(feature=record.feature, method=self.name, value=None,
                             explanation=explanation, control=control,
                             llm_model=getattr(self.llm, "model", None), options=dict(self.key_options))
        result.details["split"] = split
        if not explanation or not explanation.strip():
            result.failed, result.error = True, "empty explanation: nothing to score"
            return result
        try:
            await self._score(record, explanation, split, result)
        except ScoringFailed as e:
            result.failed, result.error = True, str(e)
            result.value = None
            result.details.update(e.details)
        return result

    # -- for subclasses -------------------------------------------------------------------

    @abstractmethod
    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        """Fill ``result`` (value, metrics, example_windows, details); raise ScoringFailed."""

    def rng(self, record: FeatureRecord) -> random.Random:
        """Deterministic per (method, seed, feature): a control run sees the same examples."""
        return random.Random(f"{self.name}:{self.options.seed}:{record.feature}")

    def prompt(self, result: ScoreResult) -> PromptTemplate:
        tpl = load_prompt(f"score_{self.name}", self.options.prompt_version)
        result.prompt_name, result.prompt_version = tpl.name, tpl.version
        result.details["prompt_hash"] = tpl.hash
        return tpl

    async def want_logprobs(self) -> bool:
        if self.llm is None or self.options.use_logprobs is False:
            return False
        try:
            supported = bool(await self.llm.supports_logprobs())
        except BudgetExceeded:
            raise
        except LLMError:
            supported = False
        if self.options.use_logprobs and not supported:
            raise ConfigError(f"use_logprobs=True but the endpoint ({self.llm.model}) returns no logprobs")
        return supported

    async def _chat(self, messages: list[dict[str, str]], max_tokens: int, logprobs: bool,
                    response_format: dict | None, validate: Callable[[Any], Any]):
        """One call; an endpoint that rejects ``response_format`` is asked again without it (and
        never again with it): the answer is validated by our parser either way."""
        if response_format is not None and getattr(self, "_no_response_format", False):
            response_format = None
        try:
            return await self.llm.chat(messages, max_tokens=max_tokens, temperature=0.0, logprobs=logprobs,
                                       top_logprobs=20 if logprobs else None, response_format=response_format,
                                       validate=validate)
        except LLMError as e:
            if response_format is None or e.kind not in ("http_400", "http_422"):
                raise
            self._no_response_format = True
            return await self.llm.chat(messages, max_tokens=max_tokens, temperature=0.0, logprobs=logprobs,
                                       top_logprobs=20 if logprobs else None, validate=validate)

    async def ask(self, messages: list[dict[str, str]], parse: Callable[[Any], T], usage: LLMUsage, *,
                  max_tokens: int, logprobs: bool = False, response_format: dict | None = None,
                  attempts_log: list | None = None) -> T:
        """One LLM request whose answer must pass ``parse(response)``.

        The client caches only answers that parse.  A malformed answer is retried up to
        ``max_parse_retries`` times, each time with the original request plus one message saying
        what was wrong (never the whole bad answer: resending a long answer costs as much as the
        answer).  ``max_tokens`` is capped by the model's context window.  LLMError after the
        client's own retries -> ScoringFailed.
        """
        max_tokens = cap_max_tokens(max_tokens, messages, self.llm.model, self.options.context_window)
        convo = list(messages)
        last_error = ""
        parsed: list[T] = []

        def validate(resp: Any) -> None:
            if getattr(resp, "finish_reason", None) == "length":  # a cut answer may parse, but is partial
                raise MalformedAnswer("the answer is incomplete")
            parsed[:] = [parse(resp)]

        for attempt in range(self.options.max_parse_retries + 1):
            try:
                resp = await self._chat(convo, max_tokens, logprobs, response_format, validate)
            except BudgetExceeded:
                raise
            except LLMError as e:
                raise ScoringFailed(f"LLM call failed ({e.kind}): {e}") from None
            except RejectedAnswer as rejected:
                if not isinstance(rejected.error, MalformedAnswer):
                    raise rejected.error from None
                resp = rejected.response
                usage.add(resp.usage)
                last_error = str(rejected.error)
                if getattr(resp, "finish_reason", None) == "length":
                    last_error += " (the answer was cut off at the token limit)"
                    # asking again with the same limit would cut it off again
                    max_tokens = cap_max_tokens(2 * max_tokens, messages, self.llm.model,
                                                self.options.context_window)
                if attempts_log is not None:
                    attempts_log.append({"attempt": attempt + 1, "error": last_error, "raw": resp.text[:2000]})
                convo = list(messages) + [
                    {"role": "user", "content": f"Your previous answer could not be used: {last_error}. "
                                                f"Answer again, exactly in the requested format."},
                ]
                continue
            usage.add(resp.usage)
            return parsed[0] if parsed else parse(resp)
        raise ScoringFailed(
            f"malformed LLM answer after {self.options.max_parse_retries + 1} attempt(s): {last_error}",
            {"malformed_attempts": attempts_log or []},
        )


S = TypeVar("S", bound=type[Scorer])

SCORERS: dict[str, type[Scorer]] = {}
"""Every scorer by name; a class joins with ``@register_scorer``."""


def register_scorer(cls: S) -> S:
    if not getattr(cls, "name", "") or cls.name in SCORERS:
        raise ValueError(f"scorer name {getattr(cls, 'name', '')!r} is empty or taken")
    SCORERS[cls.name] = cls
    return cls


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
                                       "None": (type(None),)}


async def gather_calls(calls: list[Any], usages: list[LLMUsage], attempts: list, result: ScoreResult) -> list[Any]:
    """Run one scorer's LLM calls together; every call's usage and malformed attempts land in
    ``result`` even when a call fails, then the first failure is raised."""
    try:
        outs = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for u in usages:
            result.usage.add(u)
    if attempts:
        result.details["malformed_attempts"] = attempts
    for o in outs:
        if isinstance(o, BaseException):
            raise o
    return list(outs)


def _check_option_type(scorer: str, key: str, value: Any, annotation: str) -> None:
    """Options arrive from CLI/JSON: say clearly when one has the wrong type."""
    names = [t.strip() for t in annotation.split("|")]
    allowed = tuple(t for n in names for t in _TYPES.get(n, (object,)))
    if isinstance(value, bool) and "bool" not in names:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        raise ConfigError(f"option {key!r} of scorer {scorer!r} must be {annotation}, not {value!r}")


# -- held-out examples ---------------------------------------------------------------------


def held_out(record: FeatureRecord, split: str, kind: str, n: int) -> list[ActivationExample]:
    """The first ``n`` stored examples of one kind in a held-out split (top: highest first)."""
    if split not in HELD_OUT_SPLITS:  # defence in depth: never hand train windows to a scorer
        raise ConfigError(f"split {split!r} is not held out")
    return record.select(split, kind)[:n]  # type: ignore[arg-type]


def held_out_mix(record: FeatureRecord, split: str, wanted: list[tuple[str, int]], sets: dict[str, Any],
                 seen: set[int] | None = None) -> list[ActivationExample]:
    """``n`` examples of each kind in turn, each window at most once (a window stored as both
    top and random is used once, with the first kind asked for); ``sets`` records, per kind,
    how many were wanted and how many the split had (the scorer's ``details["sets"]``).
    Quantile examples are taken one per stratum in turn, strongest stratum first.  ``seen``
    (windows already used, updated in place) carries the exclusion across calls."""
    out: list[ActivationExample] = []
    seen = set() if seen is None else seen
    for kind, n in wanted:
        if n <= 0:
            continue
        pool = held_out(record, split, kind, 10 ** 9)
        if kind == "quantile":
            strata: dict[int, list[ActivationExample]] = {}
            for e in pool:
                strata.setdefault(int(e.quantile or 0), []).append(e)
            pool = _interleave([strata[q] for q in sorted(strata, reverse=True)])
        got = 0
        for e in pool:
            if got >= n:
                break
            if e.window not in seen:
                seen.add(e.window)
                out.append(e)
                got += 1
        sets[kind] = {"wanted": n, "got": got}
    return out


def _interleave(queues: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def random_kind(record: FeatureRecord, split: str, choice: str) -> str:
    """The kind that serves as the "random" held-out set: ``random`` (random windows, zeros
    included) when asked or when ``choice == "auto"`` and the store has them; ``sample``
    (random *activating* windows: what stores before the random set kept) otherwise."""
    if choice == "auto":
        return "random" if record.select(split, "random") else "sample"  # type: ignore[arg-type]
    if choice == "random" and not record.select(split, "random"):  # type: ignore[arg-type]
        raise ScoringFailed(f"feature {record.feature} has no random windows in split {split!r} (a store "
                            f"collected before they existed): collect again, or use random_set=sample")
    return choice


NEGATIVES = ("random", "hard")


def negative_examples(record: FeatureRecord, split: str, negatives: str, n: int, sets: dict[str, Any]
                      ) -> list[ActivationExample]:
    """``n`` held-out windows where the feature does not fire: random non-activating ones, or
    with ``negatives="hard"`` hard negatives (resembling the activating windows), topped up
    with random ones when the store has too few; ``sets`` records what was used."""
    if negatives == "hard":
        seen: set[int] = set()  # one exclusion: a window both hard and non-activating is used once
        hard = held_out_mix(record, split, [("hard_negative", n)], sets, seen)
        rest = held_out_mix(record, split, [("nonactivating", n - len(hard))], sets, seen) if len(hard) < n else []
        return hard + rest
    return held_out_mix(record, split, [("nonactivating", n)], sets)


def context_text(example: ActivationExample) -> str:
    return "".join(example.tokens)


# -- answer parsing ------------------------------------------------------------------------

_JSON_LIST = re.compile(r"\[.*\]", re.S)


def parse_json_list(text: str, n: int, allowed: set[int], what: str) -> list[int]:
    """A JSON list of exactly ``n`` integers from ``allowed``, found anywhere in ``text``."""
    m = _JSON_LIST.search(text or "")
    if not m:
        raise MalformedAnswer(f"no JSON list found; expected a list of {n} {what}")
    try:
        data = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise MalformedAnswer(f"the list is not valid JSON ({e.msg})") from None
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise MalformedAnswer(f"expected a list of {n} {what}, got {got} items")
    out: list[int] = []
    for i, v in enumerate(data, 1):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or int(v) not in allowed:
            raise MalformedAnswer(f"item {i} is {v!r}; allowed values are {sorted(allowed)}")
        out.append(int(v))
    return out


def digit_logprob_values(logprobs: list | None, n: int, scale: tuple[str, ...]) -> list[float] | None:
    """Expected value over ``scale`` at each of the first ``n`` answer tokens holding a scale digit.

    Used for list answers like ``[1, 0, 1]``: the k-th token with a scale digit in the
    completion is the k-th answer.  Merged tokens such as ``"[1"`` or ``"1,"`` count (brackets,
    commas and whitespace are stripped before matching, alternatives likewise).  None when the
    logprobs do not line up (then callers use the hard answers only).
    """
    from labeler.scoring.metrics import expected_value

    if not logprobs:
        return None
    allowed = set(scale)
    values: list[float] = []
    for tok in logprobs:
        if _digit_core(tok.token) in allowed:
            top: dict[str, float] = {}
            for alt, lp in {**(tok.top or {}), tok.token: tok.logprob}.items():
                core = _digit_core(alt)
                if core in allowed and lp is not None and math.isfinite(lp):
                    top[core] = math.log(math.exp(top[core]) + math.exp(lp)) if core in top else lp
            values.append(expected_value(top, scale))
    if len(values) != n:
        return None
    return values


def _digit_core(token: str) -> str:
    return token.strip().strip("[],").strip()
