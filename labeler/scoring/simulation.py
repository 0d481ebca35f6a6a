"""Simulation scoring (after Bills et al. 2023): predict activations from the explanation alone.

The simulator sees only the explanation and held-out token sequences (by default the split's 5
top-activating plus 5 random activating examples) and predicts every token's activation on a
0..10 scale.  The score is the Pearson correlation of predictions with the real (raw)
activations over all sequences flattened (``labeler.scoring.metrics.score_simulation``).

Three ways to get predictions:

- ``logprobs``: the model writes one line per token (``token<TAB>value``); each value is the
  expected value over "0".."10" at that position, renormalised over those tokens only.
  Where a value token cannot be matched to the logprob stream, its written integer is used
  (counted in ``details["point_values"]``).
- ``json``: endpoints without logprobs answer ``{"predictions": [[v, ...], ...]}``: one list per
  sequence, one integer per token, checked token by token; malformed answers are retried.
- ``baseline`` (``llm=None``): no LLM.  Predicts 10 on tokens whose normalised text
  (stripped, lower-cased, without surrounding punctuation) equals a quoted string of the
  explanation or one of its words (common function words only count when quoted; a trailing
  plural "s" is ignored), and 0 elsewhere.  A floor for explanations that name their tokens.

All sequences of a feature go into one simulator call by default (``max_sequences_per_call``
caps that); calls and tokens are recorded in ``ScoreResult.usage``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from labeler.core.errors import ConfigError
from labeler.records import ActivationExample, FeatureRecord, LLMUsage, ScoreResult
from labeler.scoring import metrics
from labeler.scoring.base import (
    register_scorer,
    MalformedAnswer, Scorer, ScorerOptions, ScoringFailed, gather_calls, held_out,
)

SCALE_MAX = 10
BASELINE_VERSION = "v1"  # bump when the offline baseline's rules change (part of the score's identity)


@dataclass
class SimulationOptions(ScorerOptions):
    n_top: int = 5
    n_random: int = 5
    max_sequences_per_call: int | None = None  # None: every sequence of a feature in one call
    max_token_mismatch: float = 0.1  # fraction of echoed tokens allowed to differ (logprob mode)

    def validate(self) -> None:
        super().validate()
        if self.n_top < 0 or self.n_random < 0 or self.n_top + self.n_random == 0:
            raise ConfigError("simulation needs n_top + n_random > 0 (both >= 0)")
        if self.max_sequences_per_call is not None and self.max_sequences_per_call < 1:
            raise ConfigError("max_sequences_per_call must be >= 1 (or None for all in one call)")
        if not 0.0 <= self.max_token_mismatch <= 1.0:
            raise ConfigError("max_token_mismatch must be between 0 and 1")


# -- offline baseline ------------------------------------------------------------------------

_STOPWORDS = frozenset(
    "a an the of and or to in on at by for from with as is are was were be been it its this that "
    "these those which who what when where how not no token tokens word words text feature "
    "fires activates activation on about related mention mentions".split()
)
_QUOTED = re.compile(r"[\"'`\u201c\u2018]([^\"'`\u201d\u2019]{1,40})[\"'`\u201d\u2019]")
_WORD = re.compile(r"\w+", re.UNICODE)


def _norm_token(tok: str) -> str:
    return tok.strip().strip(".,;:!?()[]{}\"'`").lower()


def baseline_vocabulary(explanation: str) -> set[str]:
    """Normalised strings the offline baseline treats as 'named by the explanation'."""
    vocab = {_norm_token(q) for q in _QUOTED.findall(explanation)}
    vocab |= {w.lower() for w in _WORD.findall(explanation) if w.lower() not in _STOPWORDS}
    vocab |= {w[:-1] for w in vocab if len(w) > 3 and w.endswith("s")}
    vocab.discard("")
    return vocab


def baseline_predictions(explanation: str, sequences: list[list[str]]) -> list[list[float]]:
    vocab = baseline_vocabulary(explanation)
    out = []
    for tokens in sequences:
        row = []
        for tok in tokens:
            t = _norm_token(tok)
            hit = bool(t) and (t in vocab or (len(t) > 3 and t.endswith("s") and t[:-1] in vocab))
            row.append(float(SCALE_MAX) if hit else 0.0)
        out.append(row)
    return out


# -- answer parsing --------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(?:#+\s*)?\**\s*sequence\s+(\d+)\s*:\s*\**\s*$", re.I)
_FENCE = re.compile(r"^\s*```\w*\s*$")  # markdown code fences some models add
_LINE_TAB = re.compile(r"^(.*)\t\s*(\d{1,2})\s*$")
_LINE_SPACE = re.compile(r"^(.*?)\s+(\d{1,2})\s*$")


def _echo_form(tok: str) -> str:
    """How a token appears in the prompt's JSON list (without quotes)."""
    return json.dumps(tok, ensure_ascii=False)[1:-1]


def _same_token(expected: str, written: str) -> bool:
    a = _echo_form(expected).strip().lower()
    b = written.strip().strip("\"").lower()
    return a == b or expected.strip().lower() == b


@dataclass
class _LineValue:
    seq: int  # index within the call
    pos: int
    value: int
    char_start: int  # offset of the value's first digit in the answer text


def parse_lines(text: str, sequences: list[list[str]], max_mismatch: float) -> tuple[list[_LineValue], int]:
    """Parse the ``Sequence n:`` / ``token<TAB>value`` answer; returns values and token mismatches."""
    values: list[_LineValue] = []
    counts = [0] * len(sequences)
    current: int | None = None
    mismatches = 0
    offset = 0
    for raw_line in text.splitlines(keepends=True):
        line = raw_line.rstrip("\r\n")
        start = offset
        offset += len(raw_line)
        if not line.strip() or _FENCE.match(line):
            continue
        h = _HEADER.match(line)
        if h:
            k = int(h.group(1)) - 1
            if not 0 <= k < len(sequences):
                raise MalformedAnswer(f"there is no sequence {k + 1} (there are {len(sequences)})")
            current = k
            continue
        m = _LINE_TAB.match(line) or _LINE_SPACE.match(line)
        if current is None or not m:
            raise MalformedAnswer(f"cannot read the line {line[:60]!r}: expected 'Sequence <n>:' or "
                                  f"'<token><TAB><0-10>'")
        pos = counts[current]
        if pos >= len(sequences[current]):
            raise MalformedAnswer(f"sequence {current + 1} has {len(sequences[current])} tokens, "
                                  f"but the answer has more lines")
        value = int(m.group(2))
        if value > SCALE_MAX:
            raise MalformedAnswer(f"value {value} is outside 0..10 (sequence {current + 1}, token {pos + 1})")
        if not _same_token(sequences[current][pos], m.group(1)):
            mismatches += 1
        values.append(_LineValue(current, pos, value, start + m.start(2)))
        counts[current] += 1
    for k, (c, seq) in enumerate(zip(counts, sequences)):
        if c != len(seq):
            raise MalformedAnswer(f"sequence {k + 1} has {len(seq)} tokens but the answer gives {c} values")
    total = sum(len(s) for s in sequences)
    if total and mismatches > max_mismatch * total:
        raise MalformedAnswer(f"{mismatches} of {total} tokens were not copied as given; copy each token "
                              f"exactly as it appears in the list")
    return values, mismatches


def parse_json_predictions(text: str, sequences: list[list[str]]) -> list[list[float]]:
    """``{"predictions": [[v, ...], ...]}`` checked sequence by sequence, token by token."""
    try:
        start, end = text.index("{"), text.rindex("}") + 1
        data = json.loads(text[start:end])
    except ValueError as e:  # also JSONDecodeError
        raise MalformedAnswer(f"the answer is not a JSON object ({e})") from None
    preds = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(preds, list) or len(preds) != len(sequences):
        got = len(preds) if isinstance(preds, list) else "no"
        raise MalformedAnswer(f"'predictions' must be a list of {len(sequences)} lists (got {got})")
    out: list[list[float]] = []
    for k, (row, seq) in enumerate(zip(preds, sequences), 1):
        if not isinstance(row, list) or len(row) != len(seq):
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise MalformedAnswer(f"sequence {k} has {len(seq)} tokens but its prediction list has {got} entries")
        vals = []
        for i, v in enumerate(row, 1):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= SCALE_MAX:
                raise MalformedAnswer(f"sequence {k}, token {i} ({seq[i - 1]!r}): value {v!r} is not a number in 0..10")
            vals.append(float(v))
        out.append(vals)
    return out


def _values_from_logprobs(text: str, logprobs: list | None, parsed: list[_LineValue]) -> tuple[list[float], int]:
    """Expected values at each parsed value position; falls back to the written integer."""
    offsets: list[tuple[int, int, Any]] = []
    if logprobs and "".join(t.token for t in logprobs) == text:
        pos = 0
        for t in logprobs:
            offsets.append((pos, pos + len(t.token), t))
            pos += len(t.token)
    out: list[float] = []
    point = 0
    j = 0
    for lv in parsed:
        while j < len(offsets) and offsets[j][1] <= lv.char_start:
            j += 1
        ev = None
        if j < len(offsets):
            start, end, tok = offsets[j]
            digits = text[lv.char_start:lv.char_start + len(str(lv.value))]
            # the value must be this token's only non-blank content (" 7", "\t10", "7")
            if start <= lv.char_start < end and tok.token.strip() == digits:
                top = dict(tok.top or {})
                top.setdefault(tok.token, tok.logprob)
                ev = metrics.expected_value(top)
        if ev is None:
            point += 1
            ev = float(lv.value)
        out.append(ev)
    return out, point


# -- the scorer --------------------------------------------------------------------------------


@register_scorer
class SimulationScorer(Scorer):
    name = "simulation"
    needs_llm = False  # llm=None -> the offline baseline simulator
    llm_role = "simulator"
    Options = SimulationOptions

    def select(self, record: FeatureRecord, split: str) -> list[ActivationExample]:
        o = self.options
        return held_out(record, split, "top", o.n_top) + held_out(record, split, "sample", o.n_random)

    async def _score(self, record: FeatureRecord, explanation: str, split: str, result: ScoreResult) -> None:
        examples = [e for e in self.select(record, split) if e.tokens]
        result.example_windows = [e.window for e in examples]
        if not examples:
            raise ScoringFailed(f"feature {record.feature} has no top/random examples in split {split!r}")
        sequences = [list(e.tokens) for e in examples]
        if self.llm is None:
            mode = "baseline"
            result.prompt_name, result.prompt_version = "simulation_baseline", BASELINE_VERSION
            predictions = baseline_predictions(explanation, sequences)
            result.details["baseline_vocabulary"] = sorted(baseline_vocabulary(explanation))
        else:
            mode = "logprobs" if await self.want_logprobs() else "json"
            predictions = await self._simulate(explanation, sequences, mode, result)
        # the metric's groups are the literature's: top sequences vs the rest of the held-out set
        roles = ["top" if e.kind == "top" else "random" for e in examples]
        out = metrics.score_simulation([e.activations for e in examples], predictions, roles)
        result.value = out["pearson"]
        result.metrics = {k: v for k, v in out.items() if k != "undefined"}
        result.details.update({
            "mode": mode,
            "undefined": out["undefined"],
            "sequences": [{"id": e.id, "window": e.window, "kind": e.kind,
                           "predictions": [round(p, 3) for p in pred]}
                          for e, pred in zip(examples, predictions)],
        })

    async def _simulate(self, explanation: str, sequences: list[list[str]], mode: str,
                        result: ScoreResult) -> list[list[float]]:
        tpl = self.prompt(result)
        cap = self.options.max_sequences_per_call or len(sequences)
        chunks = [list(range(i, min(i + cap, len(sequences)))) for i in range(0, len(sequences), cap)]
        usage_per_call = [LLMUsage() for _ in chunks]
        attempts: list = []

        async def run(idx: list[int], usage: LLMUsage) -> tuple[list[list[float]], int]:
            seqs = [sequences[i] for i in idx]
            messages = tpl.render(explanation=explanation, answer_format=mode,
                                  sequences=[json.dumps(s, ensure_ascii=False) for s in seqs])
            n_tok = sum(len(s) for s in seqs)
            if mode == "json":
                def parse(resp):
                    return parse_json_predictions(resp.text, seqs), 0
                return await self.ask(messages, parse, usage, max_tokens=3 * n_tok + 8 * len(seqs) + 64,
                                      response_format={"type": "json_object"}, attempts_log=attempts)

            def parse(resp):
                parsed, _ = parse_lines(resp.text, seqs, self.options.max_token_mismatch)
                values, point = _values_from_logprobs(resp.text, resp.logprobs, parsed)
                rows = [[0.0] * len(s) for s in seqs]
                for lv, v in zip(parsed, values):
                    rows[lv.seq][lv.pos] = v
                return rows, point
            longest = max((len(t) for s in seqs for t in s), default=1)
            per_line = 3 + max(1, longest // 2)
            return await self.ask(messages, parse, usage, max_tokens=per_line * n_tok + 8 * len(seqs) + 64,
                                  logprobs=True, attempts_log=attempts)

        answers = await gather_calls([run(idx, u) for idx, u in zip(chunks, usage_per_call)], usage_per_call,
                                     attempts, result)
        predictions: list[list[float]] = []
        point = 0
        for rows, p in answers:  # type: ignore[misc]
            predictions.extend(rows)
            point += p
        result.details["calls_planned"] = len(chunks)
        if mode == "logprobs":
            result.details["point_values"] = point
        return predictions
