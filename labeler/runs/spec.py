"""What a labeling job computes: ``LabelSpec`` (explainer, scorers, models, options) inside a
``JobSpec`` (which store, which stages, under which name).  One shape for every job, whether the
CLI, the API, the demo or the eval harness made it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from labeler.core.config import Settings
from labeler.core.errors import ConfigError

DEFAULT_SCORERS = ("simulation",)
STAGES = ("explain", "score")
LLM_MODES = ("sync", "batch")


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class LabelSpec:
    """Everything that decides what labeling produces for a feature."""

    explainer: str = "baseline"
    """Explainer name (``labeler.explanation.EXPLAINERS``), or ``best_of_n:<base>``."""
    explainer_options: dict[str, Any] = field(default_factory=dict)
    """Options of the explainer, checked by it."""
    scorers: list[str] = field(default_factory=lambda: list(DEFAULT_SCORERS))
    """Scorer names (``labeler.scoring.SCORERS``), run on every explanation."""
    scorer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Scorer name -> its options."""
    explainer_model: str | None = None
    """LLM of the explainer role; None: the role's configured model (filled in when the job is made)."""
    simulator_model: str | None = None
    """LLM of the simulator role (simulation, and best-of-N's ranking)."""
    scorer_model: str | None = None
    """LLM of the scorer role (detection, fuzzing, rubric)."""
    control: bool = False
    """Also score another feature's explanation on the same examples: the chance line."""
    seed: int = 0
    """Seeds the control pairing (and is passed to nothing else)."""

    def __post_init__(self) -> None:
        self.scorers = [s.strip() for s in self.scorers if s and s.strip()]
        if len(set(self.scorers)) != len(self.scorers):
            raise ConfigError(f"scorer listed twice in {self.scorers}")
        unknown = set(self.scorer_options) - set(self.scorers)
        if unknown:
            raise ConfigError(f"options given for scorers that are not run: {sorted(unknown)}")

    @property
    def explainer_base(self) -> str:
        return self.explainer.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"a label spec is a mapping of fields, not {type(d).__name__}")
        extra = set(d) - set(cls.__dataclass_fields__)
        if extra:
            raise ConfigError(f"unknown label spec fields: {sorted(extra)} (known: {sorted(cls.__dataclass_fields__)})")
        try:
            return cls(**d)
        except (TypeError, AttributeError) as e:  # a field of the wrong type
            raise ConfigError(f"bad label spec: {e}") from None

    @property
    def config_hash(self) -> str:
        """Stable across processes and runs (key order does not matter)."""
        return _hash(self.to_dict())


@dataclass
class JobSpec:
    """A labeling job: which store, what to compute, in which chunks."""

    store: str
    """Collect store path (absolute, as the workers will open it)."""
    label: LabelSpec
    """What to compute for each feature."""
    stages: tuple[str, ...] = STAGES
    """``explain`` and/or ``score``; score alone scores the explanations already stored."""
    name: str | None = None
    """A name for the job's results (the demo, an eval configuration); part of what is reused."""
    chunk_size: int = 16
    """Features per unit of work (one Celery task)."""
    llm_mode: str = "sync"
    """``sync`` (one HTTP request per LLM call) or ``batch`` (OpenAI Batch API: half price,
    answers within 24 h).  How calls are made, not what they compute: not part of reuse."""

    def __post_init__(self) -> None:
        self.stages = tuple(self.stages)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ConfigError(f"job stages must be some of {STAGES}, got {list(self.stages)}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk size must be >= 1 (got {self.chunk_size})")
        if self.llm_mode not in LLM_MODES:
            raise ConfigError(f"LLM mode must be one of {', '.join(LLM_MODES)}, got {self.llm_mode!r}")

    @property
    def reuse_hash(self) -> str:
        """What the job computes: jobs on the same SAE with the same hash share finished features."""
        return _hash({"label": self.label.to_dict(), "stages": list(self.stages), "name": self.name})

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "label": self.label.to_dict(), "stages": list(self.stages),
                "name": self.name, "chunk_size": self.chunk_size, "llm_mode": self.llm_mode}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        if not isinstance(d, dict) or "store" not in d or "label" not in d:
            raise ConfigError("a job spec needs at least 'store' and 'label'")
        extra = set(d) - {"store", "label", "stages", "name", "chunk_size", "llm_mode"}
        if extra:
            raise ConfigError(f"unknown job spec fields: {sorted(extra)}")
        return cls(store=str(d["store"]), label=LabelSpec.from_dict(d["label"]),
                   stages=tuple(d.get("stages") or STAGES), name=d.get("name"),
                   chunk_size=int(d.get("chunk_size") or 16), llm_mode=str(d.get("llm_mode") or "sync"))


def make_job_spec(store: str | Path, label: LabelSpec, settings: Settings, *, stages: tuple[str, ...] = STAGES,
                  name: str | None = None, llm_mode: str | None = None) -> JobSpec:
    """A job spec with the store path resolved and the roles' models filled in from settings,
    so the job records exactly which LLMs made its results."""
    return JobSpec(store=str(Path(store).expanduser().resolve()), label=resolve_models(label, settings),
                   stages=stages, name=name, chunk_size=settings.chunk_size,
                   llm_mode=llm_mode or settings.llm_mode)


def resolve_models(label: LabelSpec, settings: Settings) -> LabelSpec:
    """Fill in each role's model where the spec leaves it to settings and the role has an endpoint."""
    def model(role: str, given: str | None) -> str | None:
        role_settings = settings.llm_role(role)
        return given or (role_settings.model if role_settings.configured else None)

    return replace(label, explainer_model=model("explainer", label.explainer_model),
                   simulator_model=model("simulator", label.simulator_model),
                   scorer_model=model("scorer", label.scorer_model))


def validate(label: LabelSpec, settings: Settings, stages: tuple[str, ...] = STAGES) -> None:
    """Fail early, saying what to do, when a name is unknown or a stage needs an LLM endpoint
    that is not configured."""
    from labeler.explanation import EXPLAINERS
    from labeler.scoring import SCORERS, scorer_class

    if "explain" in stages:
        cls = EXPLAINERS.get(label.explainer_base)
        if cls is None:
            raise ConfigError(f"unknown explainer {label.explainer!r}; choose one of: {', '.join(EXPLAINERS)}")
        if cls.needs_llm and not settings.llm_role("explainer").configured:
            raise ConfigError(
                f"explainer {label.explainer!r} needs an LLM endpoint and none is configured: set "
                "OPENAI_BASE_URL / OPENAI_API_KEY (or LABELER_EXPLAINER_BASE_URL), or use --explainer baseline")
    if "score" in stages:
        for name in label.scorers:
            scorer = scorer_class(name)  # ConfigError naming the choices for an unknown name
            if scorer.needs_llm and not settings.llm_role(scorer.llm_role).configured:
                offline = sorted(n for n, c in SCORERS.items() if not c.needs_llm)
                raise ConfigError(
                    f"scorer {name!r} needs an LLM endpoint and none is configured: set OPENAI_BASE_URL / "
                    f"OPENAI_API_KEY (or LABELER_{scorer.llm_role.upper()}_BASE_URL), or use only {', '.join(offline)}")


def default_explainer(settings: Settings) -> str:
    """``highlighted`` when an explainer endpoint is configured, else the offline ``baseline``."""
    return "highlighted" if settings.llm_role("explainer").configured else "baseline"
