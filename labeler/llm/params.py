"""The request body sent for one chat call, shaped for what the model accepts.

Reasoning models (OpenAI's o1/o3/o4 and gpt-5 families) refuse ``max_tokens`` (they take
``max_completion_tokens``, which also pays for the hidden reasoning) and any temperature but
the default.  Which models those are is known two ways: by family name (as litellm tells
them apart), and from the endpoint itself, whose 400 names the refused parameter
(``Unsupported parameter: 'max_tokens' ...``); what a 400 taught is remembered per endpoint
and model for the rest of the process, so only the first call pays the extra round trip.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Any

_O_SERIES = re.compile(r"^o\d")


def is_reasoning_model(model: str) -> bool:
    """o1, o1-mini, o3, o3-mini, o4-mini, gpt-5, gpt-5-mini, gpt-5.1 ... (dated snapshots too);
    not gpt-5-chat, which is a chat model."""
    name = model.rsplit("/", 1)[-1].lower()
    return bool(_O_SERIES.match(name)) or ("gpt-5" in name and "gpt-5-chat" not in name)


@dataclass(frozen=True)
class Quirks:
    """What one model refuses."""

    completion_tokens_param: bool = False
    """Send ``max_completion_tokens`` (plus reasoning headroom) instead of ``max_tokens``."""
    no_temperature: bool = False
    """Leave ``temperature`` out (only the default is accepted)."""
    reasoning_effort: bool = False
    """Send ``reasoning_effort`` (reasoning models; dropped when the endpoint refuses it)."""


def family_quirks(model: str) -> Quirks:
    if is_reasoning_model(model):
        return Quirks(completion_tokens_param=True, no_temperature=True, reasoning_effort=True)
    return Quirks()


def learn(quirks: Quirks, message: str, param: str | None) -> Quirks | None:
    """The quirks after a 400 from the endpoint, or None when the 400 is about something else
    (then asking again cannot help).  Handles OpenAI's wordings: ``Unsupported parameter:
    'max_tokens' ...``, ``Unsupported value: 'temperature' does not support 0 ...`` and
    ``Unsupported parameter: 'temperature' ...``."""
    text = (message or "").lower()
    named = (param or "").lower()

    def about(name: str) -> bool:
        return named == name or f"'{name}'" in text or f'"{name}"' in text

    if not ("unsupported" in text or "not supported" in text):
        return None
    if about("max_tokens") and not quirks.completion_tokens_param:
        return replace(quirks, completion_tokens_param=True)
    if about("temperature") and not quirks.no_temperature:
        return replace(quirks, no_temperature=True)
    if about("reasoning_effort") and quirks.reasoning_effort:
        return replace(quirks, reasoning_effort=False)
    return None


def shape(params: dict[str, Any], quirks: Quirks, *, reasoning_effort: str | None,
          headroom_tokens: int) -> dict[str, Any]:
    """The body to send: ``params`` is the logical request (``max_tokens``, ``temperature``)."""
    out = dict(params)
    if quirks.completion_tokens_param and "max_tokens" in out:
        out["max_completion_tokens"] = int(out.pop("max_tokens")) + headroom_tokens
    if quirks.no_temperature:
        out.pop("temperature", None)
        out.pop("top_p", None)
    if quirks.reasoning_effort and reasoning_effort:
        out["reasoning_effort"] = reasoning_effort
    return out


class QuirkBook:
    """Quirks learned per (endpoint, model) in this process, shared by every client."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], Quirks] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str | None, model: str) -> Quirks:
        with self._lock:
            return self._known.get((str(base_url), model)) or family_quirks(model)

    def set(self, base_url: str | None, model: str, quirks: Quirks) -> None:
        with self._lock:
            self._known[(str(base_url), model)] = quirks

    def clear(self) -> None:
        with self._lock:
            self._known.clear()


QUIRKS = QuirkBook()
