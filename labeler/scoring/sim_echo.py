"""Prompt-logprob simulation (OpenAI's "all at once"): nothing is generated.

Each held-out text becomes one completion prompt in which every token is written as
``token<TAB>unknown``; the endpoint echoes the prompt with the top logprobs of every prompt
token (vLLM's completions API with ``echo``, ``logprobs`` and ``max_tokens=0``), and the
distribution at each ``unknown`` (what the model expected after the tab) gives that token's
expected value over exactly "0".."10".  Each position sees only the explanation, the few-shot
examples and the tokens before it, never a guess of its own.
"""

from __future__ import annotations

from typing import Any

from labeler.scoring import metrics
from labeler.scoring.base import MalformedAnswer

PLACEHOLDER = "unknown"
TOP_LOGPROBS = 15  # as OpenAI's simulator; vLLM allows up to --max-logprobs (20 by default)


def placeholder_offsets(prompt: str, n_tokens: int) -> list[int]:
    """Character offsets of the ``unknown`` placeholders of the target block (the last
    ``<start>`` ... ``<end>``).  Shown tokens never hold a tab (``↵``/``⇥`` display), so each
    target line is ``token<TAB>unknown``."""
    start = prompt.rindex("<start>\n") + len("<start>\n")
    out = []
    pos = start
    for _ in range(n_tokens):
        tab = prompt.index("\t" + PLACEHOLDER + "\n", pos)
        out.append(tab + 1)
        pos = tab + len(PLACEHOLDER) + 2
    return out


def echo_predictions(prompt: str, logprobs: list | None, offsets: list[int], stats: Any) -> list[float]:
    """The expected value at each placeholder from the echoed prompt's top logprobs.

    Positions are matched by character offset (the echoed tokens must spell the prompt); a
    placeholder merged with the tab before it (``"\\tunknown"``) is read the same way, its
    alternatives stripped of whitespace (counted as tolerant values)."""
    if not logprobs:
        raise MalformedAnswer("the endpoint returned no prompt logprobs")
    spans, pos = [], 0
    for t in logprobs:
        spans.append((pos, pos + len(t.token), t))
        pos += len(t.token)
    if "".join(t.token for t in logprobs) != prompt:
        raise MalformedAnswer("the echoed tokens do not spell the prompt (no echo?)")
    out: list[float] = []
    j = 0
    for off in offsets:
        while j < len(spans) and spans[j][1] <= off:
            j += 1
        if j >= len(spans):
            raise MalformedAnswer("the echo stops before the last placeholder")
        tok = spans[j][2]
        top, changed = metrics.tolerant_top_logprobs(dict(tok.top or {}))
        stats.tolerant_values += changed > 0
        probs, mass = metrics.scale_distribution(top)
        stats.scale_mass.append(mass)
        if not probs:
            stats.point_values += 1  # OpenAI's reference silently uses 0 here too; we count it
        out.append(sum(float(k) * p for k, p in probs.items()))
    return out
