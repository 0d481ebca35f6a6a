"""One chunk of a job: explain -> save -> score -> save -> mark, for many features at once.

Inside a chunk many features are in flight together (bounded by a semaphore), so one process
keeps many LLM calls waiting in parallel.  Every feature is explained first, then scored: the
control score of a feature uses another feature's explanation from the same chunk (a seeded
pairing), which needs all of the chunk's explanations.  A job that only scores scores every
finished explanation already stored for its features.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from labeler.core.errors import BudgetExceeded
from labeler.db import Repository
from labeler.records import Explanation, FeatureRecord, LLMUsage
from labeler.runs.llms import Stages


@dataclass
class ChunkResult:
    """What one chunk did."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # feature -> reason
    skipped: list[int] = field(default_factory=list)  # not pending in this job (done, or failed awaiting a retry)
    not_started: list[int] = field(default_factory=list)  # cancelled or budget reached first; stay pending
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


class _Stop(Exception):
    """Stop starting new work (cancelled or budget reached)."""


@dataclass
class _Feature:
    index: int
    record: FeatureRecord | None = None
    explanations: list[tuple[int, str]] = field(default_factory=list)  # (id, text) to score
    usage: LLMUsage = field(default_factory=LLMUsage)
    error: str | None = None
    completed: bool = False  # went through every stage of the job


def reason_of(exc: BaseException) -> str:
    """An exception as a failure reason: its kind (LLM errors) or type, and its text."""
    kind = getattr(exc, "kind", None)
    text = str(exc) or type(exc).__name__
    return f"{kind}: {text}" if kind else f"{type(exc).__name__}: {text}"


def control_texts(texts_by_feature: dict[int, str], seed: int) -> dict[int, str]:
    """Each feature's control explanation: another feature's, from the same chunk.  Depends only
    on the chunk's explanations and the seed, so every run of the chunk picks the same ones."""
    from labeler.scoring import pick_control_explanation

    out = {}
    for f in texts_by_feature:
        text = pick_control_explanation(f, texts_by_feature, seed=seed)
        if text is not None:
            out[f] = text
    return out


def _stored(repo: Repository, sae_id: int, explainer: Any, index: int) -> tuple[int, str] | None:
    """The finished explanation this explainer would write for the feature, if stored.  Only an
    LLM explainer with one prompt can name its key before running (the key holds the prompt
    hash); the others (offline baseline, best-of-N) are re-run and the idempotent save keeps
    the first row."""
    prompt = getattr(explainer, "prompt", None)
    if prompt is None or not explainer.needs_llm:
        return None
    probe = Explanation(feature=index, text="", explainer=explainer.name, llm_model=explainer.llm.model,
                        prompt_name=prompt.name, prompt_version=prompt.version, prompt_hash=prompt.hash,
                        config=explainer.config)
    found = repo.results.stored_explanation(sae_id, probe)
    return (found[0], found[1]) if found else None


async def label_chunk(store: Any, features: list[int], stages: Stages, repo: Repository, sae_id: int, *,
                      job_id: int, control: bool, seed: int, max_in_flight: int,
                      should_cancel: Callable[[], bool] | None = None) -> ChunkResult:
    """Run the job's stages on ``features`` of ``store``, saving everything in ``repo``.

    A feature that fails (LLM failure after retries, unparseable answer, a scorer error) is
    marked failed with its reason and the rest go on.  ``BudgetExceeded`` or ``should_cancel``
    stop new work: features not reached stay pending and the result says why."""
    result = ChunkResult()
    # Only pending features: a done one is finished, and a failed one waits for a retry (which
    # makes it pending first), so a redelivered chunk never counts or pays for an extra attempt.
    pending = set(repo.jobs.features(job_id, status="pending"))
    result.skipped = [f for f in features if f not in pending]
    todo = {f: _Feature(f) for f in features if f in pending}
    if not todo:
        return result
    sem = asyncio.Semaphore(max_in_flight)
    stopped: list[str] = []  # the reason, once new work must not start
    explain, score = stages.explainer is not None, bool(stages.scorers)

    def check_stop() -> None:
        if not stopped and should_cancel is not None and should_cancel():
            stopped.append("cancelled")
        if stopped:
            raise _Stop(stopped[0])

    async def guarded(st: _Feature, step: Callable[[_Feature], Any]) -> None:
        if st.error is not None:
            return
        async with sem:
            try:
                check_stop()
                await step(st)
            except _Stop:
                pass
            except BudgetExceeded as e:
                if not stopped:
                    stopped.append(f"budget: {e}")
            except Exception as e:  # a feature's failure never fails the chunk
                st.error = reason_of(e)

    async def record(st: _Feature) -> FeatureRecord:
        if st.record is None:
            st.record = await asyncio.to_thread(store.feature, st.index)
        return st.record

    async def explain_one(st: _Feature) -> None:
        found = _stored(repo, sae_id, stages.explainer, st.index)
        if found is not None:  # finished before (another job, a redelivered chunk): no LLM call
            st.explanations = [found]
        else:
            exp: Explanation = await stages.explainer.explain(await record(st))
            st.usage.add(exp.usage)
            result.usage.add(exp.usage)
            if exp.failed or not exp.text.strip():
                st.error = f"explain: {exp.error or 'empty explanation'}"
                if exp.failed:  # kept for audit (raw answer); never used as a label
                    repo.results.save_explanation(sae_id, exp, job_id=job_id)
                return
            st.explanations = [(repo.results.save_explanation(sae_id, exp, job_id=job_id), exp.text)]
        result.explanations += 1
        st.completed = not score

    async def score_one(st: _Feature, control_text: str | None) -> None:
        rec = await record(st)
        runs = [(name, scorer, exp_id, ctl, text) for exp_id, own in st.explanations
                for ctl, text in ((False, own), (True, control_text)) if text is not None
                for name, scorer in stages.scorers.items()]
        check_stop()
        # every scorer call of the feature in flight at once; results handled in a fixed order
        outcomes = await asyncio.gather(*(scorer.score(rec, text, split="test", control=ctl)
                                          for _, scorer, _, ctl, text in runs), return_exceptions=True)
        for out in outcomes:
            if isinstance(out, BaseException):
                raise out
        for (name, _, exp_id, ctl, _), res in zip(runs, outcomes):
            st.usage.add(res.usage)
            result.usage.add(res.usage)
            if res.failed:
                st.error = st.error or f"score {name}{' (control)' if ctl else ''}: {res.error or 'failed'}"
                continue
            repo.results.save_score(exp_id, res)
            result.scores += 1
        st.completed = st.error is None

    if explain:
        await asyncio.gather(*(guarded(st, explain_one) for st in todo.values()))
    elif score:
        stored = repo.results.usable_explanations(sae_id, list(todo))
        for f, st in todo.items():
            st.explanations = stored[f]
            if not st.explanations:
                st.error = "score: the feature has no finished explanation to score"
    if score:
        scored = [st for st in todo.values() if st.explanations and st.error is None]
        texts = {st.index: st.explanations[0][1] for st in scored}
        controls = control_texts(texts, seed) if control else {}
        await asyncio.gather(*(guarded(st, lambda s: score_one(s, controls.get(s.index))) for st in scored))

    for f, st in todo.items():
        if st.error is not None:
            result.failed[f] = st.error
            repo.jobs.mark_feature(job_id, f, "failed", error=st.error, usage=st.usage)
        elif st.completed:
            result.done.append(f)
            repo.jobs.mark_feature(job_id, f, "done", usage=st.usage)
        else:  # interrupted half-way: left pending, the next attempt redoes it (idempotent writes)
            result.not_started.append(f)
    if stopped:
        result.cancelled = stopped[0] == "cancelled"
        result.budget_exceeded = stopped[0].startswith("budget")
        result.message = f"stopped: {stopped[0]}; {len(result.not_started)} feature(s) left pending"
    return result
