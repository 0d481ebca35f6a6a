"""How many tokens a scorer may ask for: the model's context window minus the prompt.

A request whose prompt plus ``max_tokens`` exceeds the model's context is refused by the
endpoint (or silently cut), so every scorer call caps ``max_tokens`` here.  The context window
comes from the scorer option ``context_window`` when given, else from :data:`KNOWN_CONTEXT`
(longest matching name prefix, provider prefixes such as ``openai/`` ignored), else
:data:`UNKNOWN_CONTEXT`, small on purpose: a self-hosted model of unknown size is more often
8k than 128k.
"""

from __future__ import annotations

from typing import Any

KNOWN_CONTEXT: dict[str, int] = {
    "gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4-turbo": 128_000, "gpt-4": 8_192,
    "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576, "gpt-4.1-nano": 1_047_576,
    "gpt-3.5-turbo": 16_385, "gpt-5": 400_000, "o1": 200_000, "o3": 200_000, "o3-mini": 200_000,
    "o4-mini": 200_000, "meta-llama/llama-3.1": 131_072, "meta-llama/llama-3.2": 131_072,
    "meta-llama/meta-llama-3": 8_192, "meta-llama/llama-3": 8_192, "llama3.1": 131_072, "llama3": 8_192,
    "mistralai/mistral-7b": 32_768, "qwen/qwen2.5": 32_768, "qwen2.5": 32_768, "google/gemma-2": 8_192,
    "gemma2": 8_192, "test-model": 32_768,
}
UNKNOWN_CONTEXT = 8_192
CHARS_PER_TOKEN = 3.0  # conservative: real BPE tokenizers average ~4 characters per token in English
MARGIN_TOKENS = 32  # chat-template overhead per request


def context_window(model: str | None, override: int | None = None) -> int:
    if override:
        return int(override)
    name = (model or "").lower()
    for prefix in ("openai/", "azure/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    best = max((k for k in KNOWN_CONTEXT if name.startswith(k)), key=len, default=None)
    return KNOWN_CONTEXT[best] if best else UNKNOWN_CONTEXT


def prompt_tokens_estimate(messages: Any) -> int:
    """An upper-side estimate of a chat request's (or a completion prompt's) tokens."""
    if isinstance(messages, str):
        chars = len(messages)
    else:
        chars = sum(len(str(m.get("content", ""))) for m in messages)
    return int(chars / CHARS_PER_TOKEN) + MARGIN_TOKENS


def cap_max_tokens(wanted: int, messages: Any, model: str | None, override: int | None = None) -> int:
    """``wanted``, or what is left of the model's context after the prompt when that is less.

    Raises ScoringFailed when the prompt alone leaves fewer than 16 tokens: the request could
    not succeed, and saying so beats an endpoint error."""
    from labeler.scoring.base import ScoringFailed

    window = context_window(model, override)
    room = window - prompt_tokens_estimate(messages)
    if room < 16:
        raise ScoringFailed(f"the prompt (~{prompt_tokens_estimate(messages)} tokens) does not fit the context "
                            f"window of {model} ({window} tokens; set the scorer option context_window if "
                            f"the model's is larger)")
    return max(1, min(int(wanted), room))
