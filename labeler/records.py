"""Small typed records passed between pipeline stages.

They are plain dataclasses (no torch, no database) so that scoring functions stay pure and
tests can build them by hand.  ``to_dict`` / ``from_dict`` give a JSON-safe form for the
database, the API and Celery messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Split = Literal["train", "valid", "test"]
"""Every context window of a corpus belongs to exactly one split, decided by a seeded hash of
its window id.  Explainers only ever see ``train``; best-of-N reranking uses ``valid``;
scores are computed on ``test``.  So held-out and explainer examples never share a window."""

ExampleKind = Literal["top", "quantile", "sample", "random", "nonactivating", "hard_negative"]
"""What an example is, for the feature it belongs to:

- ``top``: the exact top-K windows by max activation (descending).
- ``quantile``: activating windows stratified across activation quantiles (``quantile`` = stratum).
- ``sample``: a uniform random sample of the windows where the feature fires.
- ``random``: random windows of the corpus, whether the feature fires or not (zeros included),
  the same windows for every feature: the literature's "random" held-out set.
- ``nonactivating``: random windows where the feature never fires.
- ``hard_negative``: windows that resemble activating ones (share their tokens, or activate a
  neighbouring feature) but where this feature does not fire.
"""


@dataclass
class ActivationExample:
    """One context window and the feature's activation on each of its tokens."""

    window: int  # window id in the collect store: the identity used for disjointness
    tokens: list[str]  # token strings, as the subject model's tokenizer splits the text
    activations: list[float]  # raw activations, same length as tokens
    split: Split = "train"
    kind: ExampleKind = "top"  # see ExampleKind
    quantile: int | None = None  # for kind == "quantile": 0 = lowest activation stratum
    token_ids: list[int] | None = None

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0

    @property
    def id(self) -> str:
        """Stable example id used in score provenance."""
        return f"w{self.window}"

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActivationExample":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FeatureStats:
    """Statistics of one feature over every token collect saw (all splits)."""

    count: int = 0  # tokens with activation > threshold
    tokens_seen: int = 0
    max: float = 0.0
    mean: float = 0.0  # over all tokens seen
    mean_active: float = 0.0  # over firing tokens only
    hist_edges: list[float] = field(default_factory=list)  # len(hist_counts) + 1
    hist_counts: list[int] = field(default_factory=list)

    @property
    def density(self) -> float:
        return self.count / self.tokens_seen if self.tokens_seen else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["density"] = self.density
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FeatureRecord:
    """Everything collect kept for one feature."""

    feature: int
    stats: FeatureStats
    examples: list[ActivationExample] = field(default_factory=list)
    # Output-side evidence (decoder direction through the unembedding); empty when unknown.
    promoted_tokens: list[str] = field(default_factory=list)
    suppressed_tokens: list[str] = field(default_factory=list)

    def select(self, split: Split, *kinds: ExampleKind) -> list[ActivationExample]:
        """Examples of one split, optionally restricted to some kinds, in stored order
        (top: descending max activation; quantile: by stratum; others: sampling order)."""
        return [e for e in self.examples if e.split == split and (not kinds or e.kind in kinds)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "stats": self.stats.to_dict(),
            "examples": [e.to_dict() for e in self.examples],
            "promoted_tokens": self.promoted_tokens,
            "suppressed_tokens": self.suppressed_tokens,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureRecord":
        return cls(
            feature=d["feature"],
            stats=FeatureStats.from_dict(d["stats"]),
            examples=[ActivationExample.from_dict(e) for e in d.get("examples", [])],
            promoted_tokens=list(d.get("promoted_tokens", [])),
            suppressed_tokens=list(d.get("suppressed_tokens", [])),
        )


@dataclass
class LLMUsage:
    calls: int = 0
    prompt_tokens: int = 0  # includes cached_prompt_tokens
    completion_tokens: int = 0  # includes reasoning tokens
    cost_usd: float = 0.0
    cached_calls: int = 0  # answered from labeler's response cache (cost 0)
    cached_prompt_tokens: int = 0  # prompt tokens the provider served from its prompt cache (billed at a discount)

    def add(self, other: "LLMUsage") -> "LLMUsage":
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.cached_calls += other.cached_calls
        self.cached_prompt_tokens += other.cached_prompt_tokens
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "LLMUsage":
        return cls(**(d or {}))


@dataclass
class Explanation:
    """One explanation of one feature (or a recorded failure to get one)."""

    feature: int
    text: str  # empty when failed
    explainer: str  # e.g. "highlighted", "token_activation", "baseline", "best_of_n:highlighted"
    llm_model: str | None = None  # None for the offline baseline
    prompt_name: str | None = None
    prompt_version: str | None = None
    prompt_hash: str | None = None  # sha256 of the rendered template, see labeler.explanation.prompts
    usage: LLMUsage = field(default_factory=LLMUsage)
    example_windows: list[int] = field(default_factory=list)  # windows shown to the explainer
    failed: bool = False
    error: str | None = None  # reason when failed
    raw: str | None = None  # raw LLM answer (kept for failures and audit)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # best-of-N: every candidate + its score
    config: dict[str, Any] = field(default_factory=dict)  # options that shaped it (part of the idempotency key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Explanation":
        d = dict(d)
        d["usage"] = LLMUsage.from_dict(d.get("usage"))
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class ScoreResult:
    """One scorer's verdict on one explanation of one feature."""

    feature: int
    method: str  # simulation | detection | fuzzing | embedding | rubric
    value: float | None  # headline number; None when undefined (see metrics docs) or failed
    metrics: dict[str, float | None] = field(default_factory=dict)  # sub-metrics
    explanation: str = ""  # the text that was scored
    control: bool = False  # True: a shuffled (other feature's) explanation: the chance line
    example_windows: list[int] = field(default_factory=list)  # held-out windows used
    llm_model: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    usage: LLMUsage = field(default_factory=LLMUsage)
    details: dict[str, Any] = field(default_factory=dict)  # per-token predictions, per-example answers
    failed: bool = False
    error: str | None = None
    # the scorer's options that differ from their defaults and change the measurement (see
    # ScorerOptions.NOT_IN_KEY): part of what makes two scores the same piece of work
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoreResult":
        d = dict(d)
        d["usage"] = LLMUsage.from_dict(d.get("usage"))
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
