"""How the test server chooses an answer: ``Reply``, rules (``add_rule``), the default rule that
reads labeler's explanation prompts, and the test server's token count (words and punctuation
marks).  ``labeler.testing.llm_server`` re-exports all of them."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

Predicate = Callable[[dict[str, Any]], bool]


@dataclass
class Reply:
    text: str
    logprobs: list[tuple[str, float, dict[str, float]]] | None = None
    finish_reason: str | None = None


Responder = Callable[[dict[str, Any]], "str | Reply"]
_GLOBAL_RULES: list[tuple[Predicate, Responder]] = []
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def add_rule(predicate: Predicate, responder: Responder) -> None:
    """Register a rule for every test server in this process (newest rules are tried first)."""
    _GLOBAL_RULES.insert(0, (predicate, responder))


def remove_rule(responder: Responder) -> None:
    _GLOBAL_RULES[:] = [r for r in _GLOBAL_RULES if r[1] is not responder]


def prompt_text(req: dict[str, Any]) -> str:
    """All text of a chat or completions request, joined."""
    if "messages" in req:
        parts = []
        for m in req.get("messages") or []:
            c = m.get("content")
            if isinstance(c, list):  # content parts
                c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            parts.append(str(c or ""))
        return "\n".join(parts)
    p = req.get("prompt", "")
    return "\n".join(p) if isinstance(p, list) else str(p)


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def default_responder(req: dict[str, Any]) -> str:
    text = prompt_text(req)
    if "messages" in req:  # look at the last user message: that is where the examples are
        users = [m for m in req["messages"] if m.get("role") == "user"]
        focus = str(users[-1].get("content", "")) if users else text
    else:
        focus = text
    marked = [t.strip() for t in re.findall(r"<<(.+?)>>", focus, flags=re.S)]
    if not marked:  # token/value pairs such as "bridge"=8
        pairs = [(json.loads(f'"{t}"').strip(), int(v)) for t, v in re.findall(r'"((?:[^"\\]|\\.)*)"=(\d+)', focus)]
        best = max((v for _, v in pairs), default=0)
        marked = [t for t, v in pairs if v == best and v > 0]
    marked = [t for t in marked if t]
    if marked:
        top = Counter(marked).most_common(1)[0][0]
        phrase = f'the token "{top}"'
    else:
        phrase = "common English words"
    if "EXPLANATION:" in text:
        return f"The marked tokens share one thing: {phrase}.\nEXPLANATION: {phrase}"
    return phrase


def _default_logprobs(text: str, n_top: int) -> list[tuple[str, float, dict[str, float]]]:
    out = []
    tokens = re.findall(r"\s*\S+", text) or [text]
    for tok in tokens:
        top = {tok: -0.05}
        for d in "0123456789":
            if len(top) >= max(n_top, 1):
                break
            if d != tok.strip():
                top[d] = -3.0 - len(top)
        out.append((tok, -0.05, top))
    return out
