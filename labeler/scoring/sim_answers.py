"""Reading a simulator's answer: the sparse ``index=value`` format, the token-per-line echo
("lines") and JSON, each parsed text by text, so one bad text costs that text only.

Every parser returns ``(parsed, lost)``: ``parsed[k]`` is a list of :class:`Value` (token
positions with a written value and the answer offset of its first digit) for each text ``k``
that could be read, and ``lost[k]`` the reason for each text that could not.  Nothing
readable at all raises :class:`MalformedAnswer` (the call is asked again).  The tolerance is
visible: headers without a colon, a preamble, quotes around tokens, a skipped whitespace token
and merged word pieces are accepted and counted in ``Tolerated``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from labeler.scoring import metrics
from labeler.scoring.base import MalformedAnswer

SCALE_MAX = 10


@dataclass
class Value:
    seq: int  # index of the text within the call
    pos: int  # token position within the text
    value: int  # the written integer
    char_start: int | None  # offset of its first digit in the answer (None: not from the text)


@dataclass
class Tolerated:
    """What the parser accepted that was not exactly as asked (recorded in score details)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int = 1) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + n


Parsed = tuple[dict[int, list[Value]], dict[int, str]]

_HEADER = re.compile(r"^[\W_]*(?:sequence|text)\s+(\d+)\s*:?[\W_]*$", re.I)
_FENCE = re.compile(r"^\s*```\w*\s*$")
_SPARSE_LINE = re.compile(r"^[\s*#>_-]*(?:(?:sequence|text)\s+)?(\d+)\s*\**\s*"
                          r"(?:[:.)]|\s(?=\s*(?:none|\d+\s*(?:\"[^\"]*\"|'[^']*')?\s*=)))\**\s*(.*)$", re.I)
_PAIR = re.compile(r"(\d+)\s*(?:\"(?:[^\"\\]|\\.)*\"|'[^']*')?\s*[=:]\s*(\d+)")
_NONE = re.compile(r"^[\s*_`\"'(\[]*(?:none|nothing|no active tokens?|-|—)?[\s*_`\"').\]]*$", re.I)


def _finish(parsed: dict[int, list[Value]], lost: dict[int, str], n_seqs: int) -> Parsed:
    for k in range(n_seqs):
        if k not in parsed and k not in lost:
            lost[k] = f"the answer has no line for text {k + 1}"
    if not parsed:
        raise MalformedAnswer("; ".join(f"text {k + 1}: {why}" for k, why in sorted(lost.items())))
    return parsed, lost


def parse_sparse(text: str, lengths: list[int], tol: Tolerated) -> Parsed:
    """``1: 4=7, 5=2`` / ``1: none`` lines, one per text (any order; a preamble is skipped)."""
    parsed: dict[int, list[Value]] = {}
    lost: dict[int, str] = {}
    offset = 0
    for raw in text.splitlines(keepends=True):
        start, offset = offset, offset + len(raw)
        line = raw.rstrip("\r\n")
        if not line.strip() or _FENCE.match(line):
            continue
        m = _SPARSE_LINE.match(line)
        if m is not None:
            k, rest, rest_at = int(m.group(1)) - 1, m.group(2), start + m.start(2)
        elif len(lengths) == 1 and (_PAIR.search(line) or _NONE.match(line.strip() or "x")):
            k, rest, rest_at = 0, line, start  # one text per call: its number may be left out
            tol.add("missing_text_number")
        else:
            tol.add("skipped_lines")  # a preamble or a remark
            continue
        if not 0 <= k < len(lengths):  # "2: ..." when there is one text: a remark, not an answer
            tol.add("skipped_lines")
            continue
        pairs = list(_PAIR.finditer(rest))
        if not pairs:
            if _NONE.match(rest):
                parsed[k] = []
            else:
                lost[k] = f"cannot read {rest[:60]!r}: expected 'token number=strength' pairs or 'none'"
            continue
        values: dict[int, Value] = {}
        problem = None
        for p in pairs:
            idx, v = int(p.group(1)), int(p.group(2))
            if not 1 <= idx <= lengths[k]:
                problem = f"token number {idx} is out of range (text {k + 1} has {lengths[k]} tokens)"
                break
            if v > SCALE_MAX:
                problem = f"strength {v} at token {idx} is outside 0..10"
                break
            if idx - 1 in values:
                tol.add("repeated_tokens")
            values[idx - 1] = Value(k, idx - 1, v, rest_at + p.start(2))
        if problem:
            lost[k] = problem
            parsed.pop(k, None)
        else:
            parsed[k] = [values[i] for i in sorted(values) if values[i].value > 0]
            lost.pop(k, None)
    return _finish(parsed, lost, len(lengths))


_LINE_TAB = re.compile(r"^(.*)\t\s*(\d{1,2})\s*$")
_LINE_SPACE = re.compile(r"^(.*?)\s+(\d{1,2})\s*$")
_QUOTE_CHARS = "\"'`“”‘’"


def _written(token: str) -> str:
    """A copied token for comparison: whitespace, then quotes, then whitespace removed."""
    return token.strip().strip(_QUOTE_CHARS).strip().lower()


def _align(expected: list[str], lines: list[tuple[str, int, int]], k: int, max_mismatch: float,
           tol: Tolerated) -> list[Value] | str:
    """Match copied tokens to the text's tokens; a skipped whitespace token or word pieces
    merged into one line are accepted.  Returns the values, or why the text cannot be read."""
    want = [_written(t) for t in expected]
    out: list[Value] = []
    pos = mismatches = 0
    for written, value, at in lines:
        w = _written(written)
        if pos >= len(want):
            return f"the answer has more lines than the text's {len(want)} tokens"
        if value > SCALE_MAX:
            return f"value {value} is outside 0..10 (token {pos + 1})"
        if want[pos] == w:
            out.append(Value(k, pos, value, at))
            pos += 1
            continue
        skip = pos
        while skip < len(want) and want[skip] == "":
            skip += 1
        if skip > pos and skip < len(want) and want[skip] == w:
            tol.add("skipped_whitespace_tokens", skip - pos)
            out.append(Value(k, skip, value, at))
            pos = skip + 1
            continue
        for m in (2, 3, 4):
            if pos + m <= len(want) and "".join(t.strip().lower() for t in expected[pos:pos + m]) == w.replace(" ", ""):
                tol.add("merged_tokens")
                out.extend(Value(k, pos + j, value, at) for j in range(m))
                pos += m
                break
        else:
            mismatches += 1
            out.append(Value(k, pos, value, at))
            pos += 1
    if any(t != "" for t in want[pos:]):
        return f"the text has {len(want)} tokens but the answer gives {pos} values"
    if mismatches > max_mismatch * len(want):
        return (f"{mismatches} of {len(want)} tokens were not copied as shown; copy each token exactly as "
                f"it appears in the list")
    tol.add("mismatched_tokens", mismatches)
    return out


def parse_lines(text: str, seqs: list[list[str]], max_mismatch: float, tol: Tolerated,
                shown: Callable[[str], str]) -> Parsed:
    """``Text n:`` headers (colon optional; ``Sequence n`` too) each followed by one
    ``token<TAB>value`` line per token.  ``shown(token)`` is how the prompt displayed a token."""
    blocks: dict[int, list[tuple[str, int, int]]] = {}
    current: int | None = 0 if len(seqs) == 1 else None
    offset = 0
    lost: dict[int, str] = {}
    for raw in text.splitlines(keepends=True):
        start, offset = offset, offset + len(raw)
        line = raw.rstrip("\r\n")
        if not line.strip() or _FENCE.match(line):
            continue
        h = _HEADER.match(line)
        if h:
            k = int(h.group(1)) - 1
            current = k if 0 <= k < len(seqs) else None
            continue
        m = _LINE_TAB.match(line) or _LINE_SPACE.match(line)
        if current is None or not m:
            tol.add("skipped_lines")  # a preamble or a remark
            continue
        blocks.setdefault(current, []).append((m.group(1), int(m.group(2)), start + m.start(2)))
    parsed: dict[int, list[Value]] = {}
    for k, lines in blocks.items():
        got = _align([shown(t) for t in seqs[k]], lines, k, max_mismatch, tol)
        if isinstance(got, str):
            lost[k] = got
        else:
            parsed[k] = got
            lost.pop(k, None)
    return _finish(parsed, lost, len(seqs))


def parse_json(text: str, lengths: list[int], tol: Tolerated) -> Parsed:
    """``{"predictions": [[v, ...], ...]}``; a list of the wrong length loses that text only."""
    try:
        start, end = text.index("{"), text.rindex("}") + 1
        data = json.loads(text[start:end])
    except ValueError as e:  # also JSONDecodeError
        raise MalformedAnswer(f"the answer is not a JSON object ({e})") from None
    preds = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(preds, list):
        raise MalformedAnswer(f"'predictions' must be a list of {len(lengths)} lists")
    parsed: dict[int, list[Value]] = {}
    lost: dict[int, str] = {}
    for k, n in enumerate(lengths):
        row = preds[k] if k < len(preds) else None
        if not isinstance(row, list) or len(row) != n:
            got = len(row) if isinstance(row, list) else "no"
            lost[k] = f"text {k + 1} has {n} tokens but its prediction list has {got} entries"
            continue
        bad = next((i for i, v in enumerate(row) if isinstance(v, bool) or not isinstance(v, (int, float))
                    or not 0 <= v <= SCALE_MAX), None)
        if bad is not None:
            lost[k] = f"token {bad + 1}: value {row[bad]!r} is not a number in 0..10"
            continue
        parsed[k] = [Value(k, i, int(round(v)), None) for i, v in enumerate(row) if v]
    return _finish(parsed, lost, len(lengths))


# -- expected values from the answer's logprobs ----------------------------------------------


@dataclass
class EVStats:
    point_values: int = 0  # written integers used (no logprobs, unaligned, or no scale mass)
    tolerant_values: int = 0  # positions where whitespace variants of a digit were merged
    split_tens: int = 0  # "10" written as "1" + "0" (digit-split tokenizers)
    scale_mass: list[float] = field(default_factory=list)


def _spans(text: str, logprobs: list | None) -> list[tuple[int, int, Any]]:
    if not logprobs or "".join(t.token for t in logprobs) != text:
        return []
    out, pos = [], 0
    for t in logprobs:
        out.append((pos, pos + len(t.token), t))
        pos += len(t.token)
    return out


def _dist(tok: Any, st: EVStats) -> tuple[dict[str, float], float]:
    top, changed = metrics.tolerant_top_logprobs({**(tok.top or {}), tok.token: tok.logprob})
    st.tolerant_values += changed > 0
    return metrics.scale_distribution(top)


def expected_values(text: str, logprobs: list | None, values: list[Value], min_scale_mass: float,
                    st: EVStats) -> list[float]:
    """The expected value at each written value, from the answer's top logprobs; the written
    integer where they cannot be used (counted in ``st.point_values``)."""
    spans = _spans(text, logprobs)
    out: list[float] = []
    j = 0
    for v in values:
        ev = None
        if spans and v.char_start is not None:
            while j < len(spans) and spans[j][1] <= v.char_start:
                j += 1
            if j < len(spans):
                start, end, tok = spans[j]
                digits = str(v.value)
                core = tok.token.strip()
                if start <= v.char_start < end and core == digits:
                    probs, mass = _dist(tok, st)
                    st.scale_mass.append(mass)
                    if probs and mass >= min_scale_mass:
                        ev = sum(float(k) * p for k, p in probs.items())
                elif start <= v.char_start < end and digits == "10" and core == "1" and j + 1 < len(spans):
                    ev = _split_ten(tok, spans[j + 1][2], min_scale_mass, st)
        if ev is None:
            st.point_values += 1
            ev = float(v.value)
        out.append(ev)
    return out


def _split_ten(first: Any, second: Any, min_scale_mass: float, st: EVStats) -> float | None:
    """EV when a tokenizer writes 10 as "1" then "0": P("1") at the first digit mixes 1 and 10,
    split by P("0" | "1") at the second, renormalised against what else may follow a digit."""
    probs, mass = _dist(first, st)
    st.scale_mass.append(mass)
    if not probs or mass < min_scale_mass:
        return None
    nxt = {t: math.exp(lp) for t, lp in {**(second.top or {}), second.token: second.logprob}.items()
           if lp is not None and math.isfinite(lp)}
    p_zero = sum(p for t, p in nxt.items() if t.strip() == "0")
    p_end = sum(p for t, p in nxt.items() if not t.strip()[:1].isdigit())
    r = p_zero / (p_zero + p_end) if p_zero + p_end > 0 else 1.0
    st.split_tens += 1
    q1 = probs.get("1", 0.0)
    return sum(float(k) * p for k, p in probs.items() if k != "1") + q1 * (10.0 * r + (1.0 - r))
