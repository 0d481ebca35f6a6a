"""Orchestration of one chunk of features: explain -> save -> score -> save -> mark.

The same coroutine runs inside a Celery task (``workers.tasks``) and in-process
(``labeler label``), so queued and embedded jobs give identical results.  Inside a chunk many
features are in flight at once (bounded by a semaphore), so one worker process keeps many LLM
calls waiting in parallel instead of idling on one request.

Work is split in two phases per chunk: every feature is explained first, then scored.  The
control score of a feature uses another feature's explanation from the same chunk (a seeded
derangement), which needs all explanations of the chunk to be known.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from labeler.core.config import Settings, get_settings
from labeler.core.errors import BudgetExceeded, ConfigError, LLMError
from labeler.records import Explanation, FeatureRecord, LLMUsage

OFFLINE_EXPLAINERS = frozenset({"baseline"})
DEFAULT_SCORERS = ("simulation",)


@dataclass
class LabelSpec:
    """Everything that decides what a labeling run produces (part of the job record)."""

    explainer: str = "baseline"
    explainer_options: dict[str, Any] = field(default_factory=dict)
    scorers: list[str] = field(default_factory=lambda: list(DEFAULT_SCORERS))
    scorer_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer name -> options
    explainer_model: str | None = None  # None: the role's configured model
    simulator_model: str | None = None
    scorer_model: str | None = None
    control: bool = False  # also score another feature's explanation (the chance line)
    seed: int = 0

    def __post_init__(self) -> None:
        self.scorers = [s.strip() for s in self.scorers if s and s.strip()]
        if len(set(self.scorers)) != len(self.scorers):
            raise ConfigError(f"scorer listed twice in {self.scorers}")
        unknown = set(self.scorer_options) - set(self.scorers)
        if unknown:
            raise ConfigError(f"options given for scorers that are not run: {sorted(unknown)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSpec":
        names = set(cls.__dataclass_fields__)
        extra = set(d) - names
        if extra:
            raise ConfigError(f"unknown label spec fields: {sorted(extra)}")
        return cls(**d)

    @property
    def config_hash(self) -> str:
        """Stable across processes and runs (key order does not matter)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ChunkResult:
    """What one call of ``label_features`` did."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # feature -> reason
    skipped: list[int] = field(default_factory=list)  # already done in this job
    not_started: list[int] = field(default_factory=list)  # cancelled or budget reached first
    usage: LLMUsage = field(default_factory=LLMUsage)
    explanations: int = 0  # rows written (or found) this run
    scores: int = 0
    budget_exceeded: bool = False
    cancelled: bool = False
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed"] = {str(k): v for k, v in self.failed.items()}
        return d


# --------------------------------------------------------------------------- LLM resolution


def llm_endpoint_configured(role: str, settings: Settings | None = None) -> bool:
    return (settings or get_settings()).llm_role(role).configured


def validate_spec(spec: LabelSpec, settings: Settings | None = None) -> None:
    """Fail early, with a message that says what to do, when an option needs an LLM endpoint
    that is not configured."""
    settings = settings or get_settings()
    from labeler.explanation import EXPLAINERS

    base_name = spec.explainer.split(":", 1)[0]
    if base_name not in EXPLAINERS:
        raise ConfigError(f"unknown explainer {spec.explainer!r}; choose one of: {', '.join(EXPLAINERS)}")
    if EXPLAINERS[base_name].needs_llm and not llm_endpoint_configured("explainer", settings):
        raise ConfigError(
            f"explainer {spec.explainer!r} needs an LLM endpoint and none is configured: set "
            "OPENAI_BASE_URL / OPENAI_API_KEY (or LABELER_EXPLAINER_BASE_URL), or use --explainer baseline"
        )
    from labeler.scoring import SCORERS

    for name in spec.scorers:
        if name not in SCORERS:
            raise ConfigError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
        cls = SCORERS[name]
        if cls.needs_llm and not llm_endpoint_configured(cls.llm_role, settings):
            offline = sorted(n for n, c in SCORERS.items() if not c.needs_llm)
            raise ConfigError(
                f"scorer {name!r} needs an LLM endpoint and none is configured: set OPENAI_BASE_URL / "
                f"OPENAI_API_KEY (or LABELER_{cls.llm_role.upper()}_BASE_URL), or use only {', '.join(offline)}"
            )


def default_explainer(settings: Settings | None = None) -> str:
    """``highlighted`` when an explainer endpoint is configured, else the offline ``baseline``."""
    return "highlighted" if llm_endpoint_configured("explainer", settings) else "baseline"


@dataclass
class _Stages:
    explainer: Any
    scorers: dict[str, Any]


# LLM clients are shared by every chunk an event loop runs (a worker thread keeps one loop), so
# HTTP connections to the endpoint are reused from chunk to chunk instead of reopened.  They are
# per loop because a client's asyncio primitives belong to the loop that created them.
_SHARED_LLMS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, tuple[Any, Settings]]]" = (
    weakref.WeakKeyDictionary())
_SHARED_LLMS_LOCK = threading.Lock()


def shared_llm(role: str, settings: Settings, model: str | None = None) -> Any:
    """This loop's client for (role, model, settings); None when no endpoint is configured."""
    from labeler.llm import get_llm

    loop = asyncio.get_running_loop()
    key = (role, model, id(settings))
    with _SHARED_LLMS_LOCK:
        per_loop = _SHARED_LLMS.setdefault(loop, {})
        hit = per_loop.get(key)
        if hit is None:
            hit = per_loop[key] = (get_llm(role, settings, model=model), settings)  # keep settings alive
        return hit[0]


async def close_shared_llms() -> None:
    """Close this loop's shared clients (end of an in-process run, before its loop ends)."""
    with _SHARED_LLMS_LOCK:
        per_loop = _SHARED_LLMS.pop(asyncio.get_running_loop(), {})
    await _close_llms([c for c, _ in per_loop.values() if c is not None])


def _build_stages(spec: LabelSpec, settings: Settings, *, explain: bool = True, score: bool = True) -> _Stages:
    def llm_for(role: str, model: str | None) -> Any:
        return shared_llm(role, settings, model)

    explainer = None
    if explain:
        from labeler.explanation import get_explainer

        from labeler.explanation import EXPLAINERS

        needs_llm = EXPLAINERS[spec.explainer.split(":", 1)[0]].needs_llm
        llm = llm_for("explainer", spec.explainer_model) if needs_llm else None
        explainer = get_explainer(spec.explainer, llm=llm, **spec.explainer_options)
    scorers: dict[str, Any] = {}
    if score:
        from labeler.scoring import SCORERS, get_scorer

        for name in spec.scorers:
            cls = SCORERS[name]
            model = spec.simulator_model if cls.llm_role == "simulator" else spec.scorer_model
            llm = llm_for(cls.llm_role, model) if name != "embedding" else None
            scorers[name] = get_scorer(name, llm=llm, **spec.scorer_options.get(name, {}))
    return _Stages(explainer, scorers)


# --------------------------------------------------------------------------- helpers


def sae_id_for_store(repo: Any, store: Any) -> int:
    """The store's SAE id in the database, registering it on first use (idempotent)."""
    from labeler.core.naming import slugify

    sae_id = repo.sae_id_for(slugify(store.model_name), slugify(store.sae_name))
    return sae_id if sae_id is not None else repo.register_store(store)


def control_texts(texts_by_feature: dict[int, str], seed: int) -> dict[int, str]:
    """Each feature's control explanation: another feature's, from the same chunk.

    Depends only on the chunk's explanations and the seed, so every run of the same chunk
    (queued or in-process) picks the same controls."""
    from labeler.scoring import pick_control_explanation

    out = {}
    for f in texts_by_feature:
        text = pick_control_explanation(f, texts_by_feature, seed=seed)
        if text is not None:
            out[f] = text
    return out


def _reason(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    text = str(exc) or type(exc).__name__
    return f"{kind}: {text}" if kind else f"{type(exc).__name__}: {text}"


def _find_stored_explanation(repo: Any, sae_id: int, explainer: Any, feature: int) -> tuple[int, Explanation] | None:
    """The stored, finished explanation this explainer would write for ``feature``, if any.

    Only LLM explainers with one prompt can name their key before running (the key holds the
    prompt hash); others (baseline: cheap, best-of-N) are simply re-run, and the idempotent
    ``save_explanation`` keeps the first row."""
    prompt = getattr(explainer, "prompt", None)
    if prompt is None or not getattr(explainer, "needs_llm", False):
        return None
    probe = Explanation(feature=feature, text="", explainer=explainer.name,
                        llm_model=getattr(explainer.llm, "model", None), prompt_name=prompt.name,
                        prompt_version=prompt.version, prompt_hash=prompt.hash, config=explainer.config)
    exp_id = repo.find_explanation(sae_id, probe)
    if exp_id is None:
        return None
    view = repo.feature_view(sae_id, feature) or {}
    for row in view.get("explanations", []):
        if row["id"] == exp_id and row.get("text"):
            probe.text = row["text"]
            probe.example_windows = list(row.get("example_windows") or [])
            return exp_id, probe
    return None


class _Stop(Exception):
    """Internal: stop starting new work (cancelled or budget reached)."""


@dataclass
class _FeatureState:
    feature: int
    record: FeatureRecord | None = None
    explanation: Explanation | None = None
    exp_id: int | None = None
    usage: LLMUsage = field(default_factory=LLMUsage)
    error: str | None = None
    completed: bool = False  # went through every requested phase


# --------------------------------------------------------------------------- main entry


def features_in_flight(settings) -> int:
    """Features worked on at once: twice the LLM slots, so while some features render prompts
    or parse answers (CPU) the others keep every LLM slot busy."""
    return 2 * settings.llm_concurrency


async def label_features(
    store: Any,
    features: Iterable[int],
    spec: LabelSpec,
    repo: Any,
    job_id: int | None = None,
    should_cancel: Callable[[], bool] | None = None,
    *,
    settings: Settings | None = None,
    max_in_flight: int | None = None,
    sae_id: int | None = None,
    explain: bool = True,
    score: bool = True,
) -> ChunkResult:
    """Explain and score ``features`` of ``store``, saving everything in ``repo``.

    A feature that fails (LLM failure after retries, unparseable answer, a scorer error) is
    marked failed with its reason and the rest go on.  ``BudgetExceeded`` or ``should_cancel``
    stop new work: features not reached stay pending and the result says why.
    """
    settings = settings or get_settings()
    validate_spec(spec, settings)
    features = list(dict.fromkeys(int(f) for f in features))
    result = ChunkResult()
    if sae_id is None:
        sae_id = sae_id_for_store(repo, store)
    if job_id is not None:
        finished = set(repo.job_features(job_id, status="done"))
        result.skipped = [f for f in features if f in finished]
        features = [f for f in features if f not in finished]
    if not features:
        return result

    stages = _build_stages(spec, settings, explain=explain, score=score)
    sem = asyncio.Semaphore(max_in_flight or features_in_flight(settings))
    states = {f: _FeatureState(f) for f in features}
    stopped: list[str] = []  # reason, once new work must not start

    def check_stop() -> None:
        if stopped:
            raise _Stop(stopped[0])
        if should_cancel is not None and should_cancel():
            stopped.append("cancelled")
            raise _Stop("cancelled")

    async def guarded(st: _FeatureState, step: Callable[[_FeatureState], Any]) -> None:
        if st.error is not None:
            return
        async with sem:
            try:
                check_stop()
                await step(st)
            except _Stop:
                raise
            except BudgetExceeded as e:
                if not stopped:
                    stopped.append(f"budget: {e}")
                raise _Stop(stopped[0]) from None
            except (LLMError, Exception) as e:  # a feature failure never fails the chunk
                st.error = _reason(e)

    async def explain_one(st: _FeatureState) -> None:
        found = _find_stored_explanation(repo, sae_id, stages.explainer, st.feature)
        if found is not None:  # finished before (another job, or a redelivered chunk): no LLM call
            st.exp_id, st.explanation = found
            result.explanations += 1
            st.completed = not score
            return
        st.record = await asyncio.to_thread(store.feature, st.feature)
        exp: Explanation = await stages.explainer.explain(st.record)
        st.usage.add(exp.usage)
        result.usage.add(exp.usage)
        if exp.failed or not exp.text.strip():
            st.error = f"explain: {exp.error or 'empty explanation'}"
            if exp.failed:  # kept for audit (raw answer); never used as a label
                repo.save_explanation(sae_id, exp, job_id=job_id)
            return
        st.explanation = exp
        st.exp_id = repo.save_explanation(sae_id, exp, job_id=job_id)
        result.explanations += 1
        st.completed = not score

    async def score_one(st: _FeatureState, control_text: str | None) -> None:
        if st.record is None:
            st.record = await asyncio.to_thread(store.feature, st.feature)
        assert st.explanation is not None
        runs = [(name, scorer, False, st.explanation.text) for name, scorer in stages.scorers.items()]
        if control_text:
            runs += [(name, scorer, True, control_text) for name, scorer in stages.scorers.items()]
        check_stop()
        # every scorer call of the feature in flight at once; results handled in a fixed order
        outcomes = await asyncio.gather(
            *(scorer.score(st.record, text, split="test", control=control) for _, scorer, control, text in runs),
            return_exceptions=True)
        for out in outcomes:
            if isinstance(out, BaseException):
                raise out
        for (name, _, control, _), res in zip(runs, outcomes):
            st.usage.add(res.usage)
            result.usage.add(res.usage)
            if res.failed:
                st.error = st.error or f"score {name}{' (control)' if control else ''}: {res.error or 'failed'}"
                continue
            repo.save_score(st.exp_id, res)
            result.scores += 1
        st.completed = st.error is None

    async def run_phase(coros: list[Any]) -> None:
        outcomes = await asyncio.gather(*coros, return_exceptions=True)
        for o in outcomes:
            if isinstance(o, BaseException) and not isinstance(o, _Stop):
                raise o

    if explain:
        await run_phase([guarded(st, explain_one) for st in states.values()])
    if score:
        if not explain:  # scoring stored explanations (``labeler score``) is score_features' job
            raise ConfigError("label_features(score only) is not supported; use score_features")
        texts = {f: st.explanation.text for f, st in states.items() if st.explanation is not None}
        controls = control_texts(texts, spec.seed) if spec.control else {}
        await run_phase([guarded(st, lambda s: score_one(s, controls.get(s.feature)))
                         for st in states.values() if st.explanation is not None])

    for f, st in states.items():
        if st.error is not None:
            result.failed[f] = st.error
        elif st.completed:
            result.done.append(f)
        else:
            result.not_started.append(f)
    # A feature interrupted half-way is left pending: the next attempt redoes it (idempotent writes).
    for f in result.done:
        if job_id is not None:
            repo.mark_feature(job_id, f, "done", usage=states[f].usage)
    for f, reason in result.failed.items():
        if job_id is not None:
            repo.mark_feature(job_id, f, "failed", error=reason, usage=states[f].usage)
    if stopped:
        reason = stopped[0]
        result.cancelled = reason == "cancelled"
        result.budget_exceeded = reason.startswith("budget")
        result.message = (
            f"stopped: {reason}; {len(result.not_started)} feature(s) left pending"
        )
    return result


async def _close_llms(llms: list[Any]) -> None:
    for llm in llms:
        close = getattr(llm, "aclose", None) or getattr(llm, "close", None)
        if close is None:
            continue
        try:
            out = close()
            if asyncio.iscoroutine(out):
                await out
        except Exception:  # closing is best effort
            pass


# --------------------------------------------------------------------------- stage commands


async def explain_features(
    store: Any, features: Iterable[int], spec: LabelSpec, repo: Any, *, settings: Settings | None = None,
    max_in_flight: int | None = None,
) -> ChunkResult:
    """``labeler explain``: explanations only, saved in the database."""
    return await label_features(store, features, spec, repo, settings=settings, max_in_flight=max_in_flight,
                                explain=True, score=False)


async def score_features(
    store: Any, features: Iterable[int], spec: LabelSpec, repo: Any, *, settings: Settings | None = None,
    max_in_flight: int | None = None,
) -> ChunkResult:
    """``labeler score``: score every stored (non-failed) explanation of ``features`` with the
    spec's scorers (and controls when enabled)."""
    settings = settings or get_settings()
    probe = LabelSpec(explainer="baseline", scorers=spec.scorers, scorer_options=spec.scorer_options,
                      simulator_model=spec.simulator_model, scorer_model=spec.scorer_model,
                      control=spec.control, seed=spec.seed)
    validate_spec(probe, settings)
    features = list(dict.fromkeys(int(f) for f in features))
    sae_id = sae_id_for_store(repo, store)
    stages = _build_stages(probe, settings, explain=False, score=True)
    sem = asyncio.Semaphore(max_in_flight or features_in_flight(settings))
    result = ChunkResult()
    stored: dict[int, list[dict[str, Any]]] = {f: [] for f in features}
    for view in repo.features_view(sae_id, features):
        stored[view["index"]] = [e for e in view.get("explanations", []) if e.get("text") and not e.get("failed")]
    with_exp = [f for f in features if stored[f]]
    result.not_started = [f for f in features if not stored[f]]
    controls = control_texts({f: stored[f][0]["text"] for f in with_exp}, spec.seed) if spec.control else {}
    stop: list[str] = []

    async def one(f: int) -> None:
        async with sem:
            if stop:
                return
            try:
                record = await asyncio.to_thread(store.feature, f)
                for exp in stored[f]:
                    runs = [(False, exp["text"])]
                    if f in controls:
                        runs.append((True, controls[f]))
                    for name, scorer in stages.scorers.items():
                        for control, text in runs:
                            res = await scorer.score(record, text, split="test", control=control)
                            result.usage.add(res.usage)
                            if res.failed:
                                result.failed[f] = f"score {name}: {res.error or 'failed'}"
                                continue
                            repo.save_score(exp["id"], res)
                            result.scores += 1
                if f not in result.failed:
                    result.done.append(f)
            except BudgetExceeded as e:
                stop.append(f"budget: {e}")
            except Exception as e:
                result.failed[f] = _reason(e)

    await asyncio.gather(*(one(f) for f in with_exp))
    if stop:
        result.budget_exceeded = True
        result.message = f"stopped: {stop[0]}"
    result.done.sort()
    return result
