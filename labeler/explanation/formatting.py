"""How examples are shown to an LLM: visible whitespace, cropping, marks, example sampling.

Pure functions, so prompts can be checked in tests without an LLM.  Explainers and scorers
share them, so the explainer and the judges see a text the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from labeler.records import ActivationExample, FeatureRecord

MARK_OPEN, MARK_CLOSE = "<<", ">>"
NEWLINE_SYMBOL, TAB_SYMBOL = "↵", "⇥"
SAMPLINGS = ("top", "quantiles", "mixed")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def display(text: str) -> str:
    """Text with line breaks and tabs made visible (``↵``, ``⇥``) and other control characters
    escaped, so an excerpt stays on one line and ends where it seems to end."""
    text = text.replace("\r\n", NEWLINE_SYMBOL).replace("\n", NEWLINE_SYMBOL).replace("\r", NEWLINE_SYMBOL)
    text = text.replace("\t", TAB_SYMBOL)
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


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


def crop_window(n_tokens: int, context_tokens: int | None, peak: int) -> tuple[int, int]:
    """(start, end) of at most ``context_tokens`` tokens with ``peak`` at 3/4 of the crop (more
    before than after: what precedes a token is what the model saw)."""
    if not context_tokens or n_tokens <= context_tokens:
        return 0, n_tokens
    start = max(0, min(peak - (context_tokens * 3) // 4, n_tokens - context_tokens))
    return start, start + context_tokens


def crop(example: ActivationExample, context_tokens: int | None) -> tuple[list[str], list[float]]:
    """At most ``context_tokens`` tokens around the strongest activation."""
    toks, acts = example.tokens, example.activations
    peak = max(range(len(acts)), key=lambda i: acts[i]) if acts else 0
    start, end = crop_window(len(toks), context_tokens, peak)
    return list(toks[start:end]), list(acts[start:end])


def crop_held_out(example: ActivationExample, context_tokens: int | None, rng: Any
                  ) -> tuple[list[str], list[float], int]:
    """(tokens, activations, start) of a held-out window cropped for a judge: around the peak
    for a window that fires (as the explainer crops), at a seeded offset (``rng``) for one that
    does not, so where a crop starts tells nothing."""
    toks, acts = example.tokens, example.activations
    if not context_tokens or len(toks) <= context_tokens:
        return list(toks), list(acts), 0
    if example.max_activation > 0:
        start, _ = crop_window(len(toks), context_tokens, max(range(len(acts)), key=lambda i: acts[i]))
    else:
        start = rng.randrange(len(toks) - context_tokens + 1)
    return list(toks[start:start + context_tokens]), list(acts[start:start + context_tokens]), start


def _split_ws(token: str) -> tuple[str, str, str]:
    m = re.match(r"^(\s*)(.*?)(\s*)$", token, flags=re.S)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def highlight(tokens: list[str], levels: list[int]) -> str:
    """Prompt v1: ``the <<bridge>>(8) over``: active tokens marked inline with their level,
    whitespace kept outside marks, raw text."""
    out = []
    for tok, lvl in zip(tokens, levels):
        lead, core, trail = _split_ws(tok)
        if lvl >= 1 and core:
            out.append(f"{lead}{MARK_OPEN}{core}{MARK_CLOSE}({lvl}){trail}")
        else:
            out.append(tok)
    return "".join(out).strip()


def marked_positions(activations: list[float], threshold: float) -> list[int]:
    """Tokens at or above ``threshold`` x this example's own max (delphi marks at 0.3)."""
    peak = max(activations, default=0.0)
    if peak <= 0:
        return []
    return [i for i, a in enumerate(activations) if a > 0 and a >= threshold * peak]


def mark_runs(tokens: list[str], positions: set[int]) -> str:
    """Visible text with each run of marked tokens wrapped once, whitespace outside the marks:
    ``the <<Golden Gate>> at dawn``."""
    out = []
    i = 0
    while i < len(tokens):
        if i not in positions:
            out.append(display(tokens[i]))
            i += 1
            continue
        j = i
        while j + 1 < len(tokens) and j + 1 in positions:
            j += 1
        run = display("".join(tokens[i:j + 1]))
        lead, core, trail = _split_ws(run)
        out.append(f"{lead}{MARK_OPEN}{core}{MARK_CLOSE}{trail}" if core else run)
        i = j + 1
    return "".join(out).strip()


def values_line(tokens: list[str], levels: list[int], positions: list[int]) -> str:
    """The marked tokens' levels, listed apart from the text: ``"bridge"=10, "s"=3``."""
    pairs = [f"{json.dumps(display(tokens[i]).strip(), ensure_ascii=False)}={max(1, levels[i])}"
             for i in positions if display(tokens[i]).strip()]
    return ", ".join(pairs) if pairs else "(none)"


def plain(tokens: list[str], visible: bool = False) -> str:
    text = "".join(tokens)
    return (display(text) if visible else text).strip()


def token_pairs(tokens: list[str], levels: list[int], visible: bool = False) -> str:
    """``"bridge"=8, "s"=1`` (JSON-quoted token text), or ``(none)``."""
    shown = [display(t) if visible else t for t in tokens]
    pairs = [f"{json.dumps(t.strip(), ensure_ascii=False)}={lvl}" for t, lvl in zip(shown, levels)
             if lvl >= 1 and t.strip()]
    return ", ".join(pairs) if pairs else "(none)"


@dataclass(frozen=True)
class Style:
    """How a prompt version shows an example (its YAML's ``format`` block).

    v1 prompts (no block): raw text, every token at >= 5 % of the feature's max marked inline
    with its level.  v2: visible whitespace, marks at >= ``mark_threshold`` x the example's own
    max, levels listed on a separate line."""

    visible: bool = False
    mark_threshold: float | None = None  # None: v1 (level >= 1 of the feature-wide scale)
    separate_values: bool = False

    @classmethod
    def from_meta(cls, meta: dict[str, Any], mark_threshold: float | None) -> "Style":
        f = meta.get("format") or {}
        threshold = mark_threshold if mark_threshold is not None else f.get("mark_threshold")
        return cls(visible=bool(f.get("visible_whitespace", False)),
                   mark_threshold=None if threshold is None else float(threshold),
                   separate_values=bool(f.get("separate_values", False)))


def show(tokens: list[str], acts: list[float], scale: float, style: Style) -> dict[str, str]:
    """One example for a prompt: ``text`` (with marks), ``levels`` (v2; empty in v1), ``plain``, ``pairs``."""
    levels = normalise(acts, scale)
    if style.mark_threshold is None:
        return {"text": highlight(tokens, levels), "levels": "", "plain": plain(tokens, style.visible),
                "pairs": token_pairs(tokens, levels, style.visible)}
    pos = marked_positions(acts, style.mark_threshold)
    return {"text": mark_runs(tokens, set(pos)), "levels": values_line(tokens, levels, pos),
            "plain": plain(tokens, style.visible),
            "pairs": values_line(tokens, levels, pos)}


# -- which train examples an explainer sees ---------------------------------------------------


def _add(out: list[ActivationExample], seen: set[int], e: ActivationExample, n: int) -> bool:
    if len(out) < n and e.max_activation > 0 and e.window not in seen:
        out.append(e)
        seen.add(e.window)
        return True
    return False


def _round_robin_strata(record: FeatureRecord, n: int, out: list[ActivationExample], seen: set[int]) -> None:
    """One example per stratum in turn, strongest stratum first, until ``n`` are shown."""
    strata: dict[int, list[ActivationExample]] = {}
    for e in record.select("train", "quantile"):
        strata.setdefault(int(e.quantile or 0), []).append(e)
    queues = [list(strata[q]) for q in sorted(strata, reverse=True)]
    while len(out) < n and any(queues):
        for q in queues:
            while q and not _add(out, seen, q.pop(0), n):
                pass


def pick_train(record: FeatureRecord, n: int, sampling: str = "top", *, mixed_top: int = 4,
               mixed_random: int = 2) -> list[ActivationExample]:
    """The train examples an explainer shows (activating only, each window once).

    - ``top``: the ``n`` strongest windows (v1's choice: with 20 stored top windows it shows
      nothing else);
    - ``quantiles``: stratified across the activation quantiles, one per stratum in turn from
      the strongest stratum down (delphi's default);
    - ``mixed``: ``mixed_top`` top windows, ``mixed_random`` random activating windows, the
      rest stratified (the Anthropic and OpenAI write-ups mix top and weaker examples).

    Whatever a strategy cannot fill (a rare feature has few windows) is filled with top, then
    quantile, then random activating windows.
    """
    if sampling not in SAMPLINGS:
        from labeler.core.errors import ConfigError

        raise ConfigError(f"unknown explainer sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    out: list[ActivationExample] = []
    seen: set[int] = set()
    if sampling == "mixed":
        for e in record.select("train", "top"):
            if len(out) >= min(n, mixed_top):
                break
            _add(out, seen, e, n)
        k = 0
        for e in record.select("train", "sample"):
            if k >= mixed_random:
                break
            k += _add(out, seen, e, n)
    if sampling in ("quantiles", "mixed"):
        _round_robin_strata(record, n, out, seen)
    for kind in ("top", "quantile", "sample"):
        for e in record.select("train", kind):  # type: ignore[arg-type]
            _add(out, seen, e, n)
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

