"""Price table (USD per 1M tokens) and cost of one call.

The builtin table (``prices.json`` next to this file) covers common OpenAI models; users add or
override models with ``settings.llm_prices_file`` (JSON or YAML, same shape:
``{"model": {"input": 0.15, "output": 0.6, "cached_input": 0.075}}``).  Optional prices default
the way OpenAI bills: cached prompt tokens at the input price when no discount is listed, the
Batch API at half the sync price.  An unknown model costs 0 and is warned about once.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from labeler.core.errors import ConfigError

log = logging.getLogger(__name__)
_BUILTIN = Path(__file__).with_name("prices.json")
_warned: set[str] = set()
BATCH_DISCOUNT = 0.5  # the Batch API bills half the sync price (every model in the builtin table)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens of one model."""

    input: float
    """Prompt tokens (sync)."""
    output: float
    """Completion tokens, reasoning tokens included (sync)."""
    cached_input: float
    """Prompt tokens the provider served from its prompt cache (sync)."""
    batch_input: float
    """Prompt tokens through the Batch API."""
    batch_output: float
    """Completion tokens through the Batch API."""
    batch_cached_input: float
    """Cached prompt tokens through the Batch API."""


Prices = dict[str, Price]


def _price(entry: dict) -> Price:
    inp, out = float(entry["input"]), float(entry["output"])
    cached = float(entry.get("cached_input", inp))
    return Price(input=inp, output=out, cached_input=cached,
                 batch_input=float(entry.get("batch_input", inp * BATCH_DISCOUNT)),
                 batch_output=float(entry.get("batch_output", out * BATCH_DISCOUNT)),
                 batch_cached_input=float(entry.get("batch_cached_input", cached * BATCH_DISCOUNT)))


def _parse(data: object, source: str) -> Prices:
    if not isinstance(data, dict):
        raise ConfigError(f"price table {source} must be a mapping of model -> {{input, output}}")
    out: Prices = {}
    for model, entry in data.items():
        if str(model).startswith("_"):
            continue  # comments
        try:
            out[str(model)] = _price(entry)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ConfigError(
                f"price table {source}: entry for {model!r} needs numeric 'input' and 'output' "
                f"(USD per 1M tokens; optional cached_input, batch_input, batch_output, batch_cached_input), "
                f"got {entry!r}"
            ) from None
    return out


@lru_cache(maxsize=16)
def load_prices(extra_file: str | None = None) -> Prices:
    prices = _parse(json.loads(_BUILTIN.read_text()), str(_BUILTIN))
    if extra_file:
        p = Path(extra_file)
        if not p.is_file():
            raise ConfigError(f"llm_prices_file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise ConfigError(f"llm_prices_file {p} is not valid JSON/YAML: {e}") from None
        prices.update(_parse(data, str(p)))
    return prices


def lookup(model: str, prices: Prices) -> Price | None:
    if model in prices:
        return prices[model]
    bare = model.rsplit("/", 1)[-1]
    if bare in prices:
        return prices[bare]
    # dated snapshots, e.g. gpt-4o-mini-2024-07-18 -> gpt-4o-mini (longest prefix wins)
    best = max((k for k in prices if bare.startswith(k + "-")), key=len, default=None)
    return prices[best] if best else None


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, prices: Prices, *,
             cached_tokens: int = 0, batch: bool = False) -> float:
    """USD of one call.  ``prompt_tokens`` includes ``cached_tokens`` (as OpenAI reports them)."""
    entry = lookup(model, prices)
    if entry is None:
        if model not in _warned:
            _warned.add(model)
            msg = f"no price known for LLM model {model!r}: its cost is counted as 0 (add it to llm_prices_file)"
            log.warning(msg)
            warnings.warn(msg, stacklevel=3)
        return 0.0
    cached = max(0, min(int(cached_tokens), int(prompt_tokens)))
    if batch:
        rates = (entry.batch_input, entry.batch_cached_input, entry.batch_output)
    else:
        rates = (entry.input, entry.cached_input, entry.output)
    return ((prompt_tokens - cached) * rates[0] + cached * rates[1] + completion_tokens * rates[2]) / 1_000_000
