"""Records returned by the LLM client (plain dataclasses, JSON-safe through ``to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labeler.records import LLMUsage


@dataclass
class TokenLogprob:
    """One generated token, its log-probability and the endpoint's top alternatives."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class LLMResponse:
    text: str
    logprobs: list[TokenLogprob] | None
    usage: LLMUsage  # this call only; cached answers keep their tokens but cost 0
    cached: bool = False
    model: str = ""
    finish_reason: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LLMResponse":
        lps = d.get("logprobs")
        return cls(
            text=d.get("text", ""),
            logprobs=[TokenLogprob(**t) for t in lps] if lps is not None else None,
            usage=LLMUsage.from_dict(d.get("usage")),
            cached=bool(d.get("cached", False)),
            model=d.get("model", ""),
            finish_reason=d.get("finish_reason"),
        )


class RejectedAnswer(Exception):
    """The endpoint answered, but the caller's ``validate`` rejected the answer (it was not cached).

    ``response`` is the answer (its usage was spent), ``error`` what ``validate`` raised."""

    def __init__(self, response: LLMResponse, error: Exception):
        super().__init__(str(error))
        self.response = response
        self.error = error
