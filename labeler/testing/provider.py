"""What the test server does like OpenAI's own endpoint, beyond answering: reasoning models'
refusals of ``max_tokens`` and ``temperature`` (OpenAI's exact 400 bodies), and automatic
prompt caching (``usage.prompt_tokens_details.cached_tokens``).

Prompt caching follows OpenAI's published rules, with the test server's tokens (words and
punctuation marks): a prompt of at least 1024 tokens is cached in 128-token steps, and a later
prompt that starts with a cached prefix has that prefix's tokens reported as cached.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from starlette.responses import JSONResponse

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128


def openai_error(status: int, message: str, *, param: str | None, code: str | None,
                 kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


def reasoning_refusal(req: dict[str, Any], reasoning_models: list[str] | None) -> JSONResponse | None:
    """The 400 (or 403) OpenAI answers a reasoning model's request with, or None if it accepts it."""
    if not reasoning_models or req.get("model") not in reasoning_models:
        return None
    if "max_tokens" in req:
        return openai_error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                 "Use 'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
    temperature = req.get("temperature")
    if temperature is not None and float(temperature) != 1.0:
        return openai_error(400, f"Unsupported value: 'temperature' does not support {temperature} with this model. "
                                 "Only the default (1) value is supported.", param="temperature", code="unsupported_value")
    if req.get("logprobs"):
        return openai_error(403, "You are not allowed to request logprobs from this model", param=None, code=None)
    return None


class PromptCache:
    """Prefixes seen so far, in 128-token steps from 1024 tokens on (one per server)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def cached_tokens(self, tokens: list[str]) -> int:
        """Tokens of the longest cached prefix of ``tokens``; the prompt's prefixes are cached."""
        h = hashlib.sha1()
        boundaries: list[tuple[int, bytes]] = []
        for n, tok in enumerate(tokens, 1):
            h.update(tok.encode("utf-8", "surrogatepass") + b"\x00")
            if n >= CACHE_MIN_TOKENS and (n - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS == 0:
                boundaries.append((n, h.copy().digest()))
        with self._lock:
            hit = max((n for n, d in boundaries if d in self._seen), default=0)
            self._seen.update(d for _, d in boundaries)
        return hit
