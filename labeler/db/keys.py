"""Idempotency keys and the value conversions every write shares.

An explanation's key hashes every field that makes it "the same piece of work" (explainer,
LLM model, prompt name/version/hash, config hash); a score's key does the same for (method,
control, LLM model, prompt version, the scorer's non-default options).  NULL-able fields are
folded into the hash, so NULL never defeats the unique constraints.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any


def sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def config_hash(config: dict | None) -> str:
    return sha(config or {})


def explanation_key(explainer: str, llm_model: str | None, prompt_name: str | None,
                    prompt_version: str | None, prompt_hash: str | None, cfg_hash: str) -> str:
    return sha(["exp", explainer, llm_model, prompt_name, prompt_version, prompt_hash, cfg_hash])


def score_key(method: str, control: bool, llm_model: str | None, prompt_version: str | None,
              options: dict[str, Any] | None = None) -> str:
    """``options``: the scorer's non-default options (ScoreResult.options).  With none, the key
    is the one scores always had, so stored default-option scores keep theirs."""
    parts: list[Any] = ["score", method, bool(control), llm_model, prompt_version]
    if options:
        parts.append(json_safe(options))
    return sha(parts)


def json_safe(obj: Any) -> Any:
    """JSON columns: dataclasses, numpy scalars and NaN (-> None) made storable everywhere."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return obj.tolist() if hasattr(obj, "tolist") else str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def clean_text(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters."""
    return s.replace("\x00", "") if isinstance(s, str) else s


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() + "Z" if dt is not None else None
