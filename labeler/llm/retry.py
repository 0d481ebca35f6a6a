"""Which failures of one LLM request are worth asking again, and how long the endpoint asks us to wait."""

from __future__ import annotations

import email.utils
import json
from datetime import datetime, timezone
from typing import Any

import openai

NEVER_RETRY = {400, 401, 403, 404, 422}  # these will not succeed by asking again


class _BadResponse(Exception):
    """The endpoint answered 200 but with something that is not a usable completion."""


def _parse_retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def classify(exc: BaseException) -> tuple[str, bool]:
    """(kind, retryable) for an exception raised by one attempt."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return f"http_{status}", status not in NEVER_RETRY and (status in (408, 409, 429) or status >= 500)
    if isinstance(exc, (_BadResponse, openai.APIResponseValidationError, json.JSONDecodeError)):
        return "bad_response", True
    return type(exc).__name__, False


def _retryable(exc: BaseException) -> bool:
    return classify(exc)[1]
