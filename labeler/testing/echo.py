"""Prompt logprobs as vLLM serves them (completions with ``echo`` + ``logprobs``), for the
LLM test server: which requests ask for them, how the server tokenizes a prompt, the default
answer (the prompt back).  Rules answer simulation prompts (``labeler.testing.oracle``)."""

from __future__ import annotations

import re
from typing import Any

_ECHO_TOKEN = re.compile(r"[A-Za-z]+|\d|\s|[^\sA-Za-z\d]")


def is_echo(req: dict[str, Any]) -> bool:
    """A completions request that scores its prompt (``echo`` with ``logprobs``)."""
    return bool(req.get("echo")) and "prompt" in req and req.get("logprobs") not in (None, False)


def echo_tokens(text: str) -> list[str]:
    """How this server tokenizes an echoed prompt: words, single digits, single whitespace
    characters and single other characters (so a tab and the word after it are two tokens)."""
    return _ECHO_TOKEN.findall(text)


def echo_pieces(prompt: str) -> list[tuple[str, float, dict[str, float]]]:
    """The default answer: the prompt back, each token its own most likely alternative."""
    return [(t, -0.01, {t: -0.01}) for t in echo_tokens(prompt)]
