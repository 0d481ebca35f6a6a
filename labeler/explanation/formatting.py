"""How examples are shown to an explainer: normalised activations, cropping, inline markers.

Pure functions, so prompts can be checked in tests without an LLM.
"""

from __future__ import annotations

import json
import re

from labeler.records import ActivationExample, FeatureRecord

MARK_OPEN, MARK_CLOSE = "<<", ">>"


def activation_scale(record: FeatureRecord, examples: list[ActivationExample]) -> float:
    """The feature's max activation (from collect's stats), or the shown examples' max if unknown."""
    if record.stats.max and record.stats.max > 0:
        return float(record.stats.max)
    return max((e.max_activation for e in examples), default=0.0) or 1.0


def normalise(activations: list[float], scale: float) -> list[int]:
    """Integers 0-10 relative to ``scale``; any positive activation that rounds to 0 stays 0."""
    if scale <= 0:
        return [0] * len(activations)
    return [max(0, min(10, round(10.0 * a / scale))) for a in activations]


def crop(example: ActivationExample, context_tokens: int | None) -> tuple[list[str], list[float]]:
    """At most ``context_tokens`` tokens around the strongest activation (more before than after:
    what precedes a token is what the model saw)."""
    toks, acts = example.tokens, example.activations
    if not context_tokens or len(toks) <= context_tokens:
        return list(toks), list(acts)
    peak = max(range(len(acts)), key=lambda i: acts[i]) if acts else 0
    start = max(0, min(peak - (context_tokens * 3) // 4, len(toks) - context_tokens))
    return list(toks[start:start + context_tokens]), list(acts[start:start + context_tokens])


def _split_ws(token: str) -> tuple[str, str, str]:
    m = re.match(r"^(\s*)(.*?)(\s*)$", token, flags=re.S)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def highlight(tokens: list[str], levels: list[int]) -> str:
    """``the <<bridge>>(8) over``: active tokens marked inline, whitespace kept outside marks."""
    out = []
    for tok, lvl in zip(tokens, levels):
        lead, core, trail = _split_ws(tok)
        if lvl >= 1 and core:
            out.append(f"{lead}{MARK_OPEN}{core}{MARK_CLOSE}({lvl}){trail}")
        else:
            out.append(tok)
    return "".join(out).strip()


def plain(tokens: list[str]) -> str:
    return "".join(tokens).strip()


def token_pairs(tokens: list[str], levels: list[int]) -> str:
    """``"bridge"=8, "s"=1`` (JSON-quoted token text), or ``(none)``."""
    pairs = [f"{json.dumps(t.strip(), ensure_ascii=False)}={lvl}" for t, lvl in zip(tokens, levels)
             if lvl >= 1 and t.strip()]
    return ", ".join(pairs) if pairs else "(none)"


def pick_train(record: FeatureRecord, n: int, kinds: tuple[str, ...] = ("top", "quantile", "sample")) -> list[ActivationExample]:
    """The first ``n`` train examples, taking kinds in order (top first), activating ones only."""
    out: list[ActivationExample] = []
    for kind in kinds:
        for e in record.select("train", kind):  # type: ignore[arg-type]
            if len(out) >= n:
                return out
            if e.max_activation > 0 and e not in out:
                out.append(e)
    return out


_PREFIX = re.compile(r"^(?:final\s+)?(?:explanation|answer|label|feature|description|summary)\s*[:\-–]\s*", re.I)
_QUOTES = "\"'`“”‘’*_"


def clean_explanation(text: str, max_chars: int = 200) -> tuple[str | None, str]:
    """(explanation, "") or (None, why it is unusable).  Keeps the first non-empty line, drops
    list bullets, "Explanation:"-style prefixes and wrapping quotes, caps the length."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None, "empty answer"
    s = lines[0].lstrip("-*•>#0123456789. \t") if re.match(r"^\s*([-*•>#]|\d+[.)])\s", lines[0]) else lines[0]
    for _ in range(3):
        s = _PREFIX.sub("", s).strip()
        s = s.strip().rstrip(".").strip()
        while len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:  # only quotes that wrap it all
            s = s[1:-1].strip()
    letters = sum(c.isalpha() for c in s)
    visible = sum(not c.isspace() for c in s)
    if letters < 2 or letters < 0.5 * visible:
        return None, f"not a phrase: {s[:60]!r}"
    if len(s) > max_chars:
        cut = s[:max_chars]
        s = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:-")
    return s, ""


_FINAL = re.compile(r"^[\W_]*(?:final\s+)?explanation[*_\s]*:[*_\s]*(.+)$", re.I)


def final_line(text: str) -> tuple[str | None, str]:
    """The phrase after the last ``EXPLANATION:`` line of a chain-of-thought answer."""
    for line in reversed((text or "").splitlines()):
        m = _FINAL.match(line.strip())
        if m:
            return m.group(1), ""
    return None, "no final line starting with 'EXPLANATION:'"
