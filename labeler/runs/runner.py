"""The one way jobs run: create (reusing finished work), run chunks in-process or queue them,
retry failures, cancel, follow.  The CLI, the API, Celery workers, the demo and the eval
harness all go through a ``Runner``.

Delivery is at-least-once (a queued chunk can be redelivered); labels are exactly-once because
every write is idempotent, a queued chunk runs only under its lease (``labeler.runs.recovery``)
and a chunk works only on features still pending in its job.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable, Iterable

from labeler.core.config import Settings
from labeler.core.errors import BudgetExceeded, ConfigError, InputError
from labeler.db import Repository
from labeler.db.views import JobView
from labeler.examples.store import StoreCache
from labeler.runs.budget import JobBudget
from labeler.runs.llms import LLMPool, build_stages
from labeler.runs.recovery import ChunkLease, ChunkSender, Reaper
from labeler.runs.spec import JobSpec, validate
from labeler.runs.subjects import SubjectCache
from labeler.runs.stages import ChunkResult, label_chunk, reason_of

CANCEL_POLL_S = 1.0
BATCH_FEATURES_IN_FLIGHT = 1024
"""Batch mode, in-process: features explained (then scored) together, so that one batch holds
many requests (each waits for its batch anyway; more in flight costs memory, not time)."""


def chunked(features: list[int], size: int) -> list[list[int]]:
    """Chunks of ``size``; a lone last feature joins the previous chunk, because control scores
    take another feature's explanation from the same chunk."""
    if size < 1:
        raise ConfigError(f"chunk size must be >= 1 (got {size})")
    chunks = [features[i:i + size] for i in range(0, len(features), size)]
    if size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2].extend(chunks.pop())
    return chunks


class Runner:
    """Jobs of one database.  ``send`` queues chunks (``labeler.runs.queue.CelerySender``);
    without it jobs run only in this process."""

    def __init__(self, repo: Repository, settings: Settings, *, send: ChunkSender | None = None,
                 stores: StoreCache | None = None, subjects: SubjectCache | None = None):
        self.repo = repo
        self.settings = settings
        self.send = send
        self.stores = stores or StoreCache()
        self.subjects = subjects or SubjectCache(settings)
        self._thread = threading.local()  # a worker thread's event loop and LLM pool

    # --- creating ---------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, features: Iterable[int], *, reuse: bool = True,
                   budget_usd: float | None = None) -> int:
        """Record a job; every feature pending, or done when an earlier job with the same spec
        on the same SAE finished it (``reuse``).  Its LLM budget is ``budget_usd`` (default:
        ``LABELER_LLM_BUDGET_USD``), for the whole job whichever workers run it.  Returns the job id.

        A job that only scores is never reused: its input, the explanations stored for its
        features, can have grown since (its writes are idempotent, so rerunning costs little)."""
        validate(spec.label, self.settings, spec.stages)
        store = self.stores.get(spec.store)
        features = list(dict.fromkeys(int(f) for f in features))
        if not features:
            raise ConfigError("the job has no features: give a non-empty --features range")
        bad = [f for f in features if f < 0 or f >= store.n_features]
        if bad:
            raise ConfigError(f"feature {bad[0]} is out of range: the store has {store.n_features} features")
        sae_id = self.repo.catalog.sae_id_for_store(store)
        reused: dict[int, int] = {}
        if reuse and "explain" in spec.stages:
            earlier = self.repo.jobs.finished_elsewhere(sae_id, spec.reuse_hash)
            reused = {f: earlier[f] for f in features if f in earlier}
        budget = budget_usd if budget_usd is not None else self.settings.llm_budget_usd
        job_id = self.repo.jobs.create(sae_id, spec.to_dict(), features, spec_hash=spec.reuse_hash, reused=reused,
                                       budget_usd=budget)
        if len(reused) == len(features):
            self.repo.jobs.set_status(job_id, "done")
        return job_id

    def submit(self, spec: JobSpec, features: Iterable[int], *, budget_usd: float | None = None) -> int:
        """Create the job and queue its pending chunks for ``labeler worker`` processes."""
        self._require_queue()
        job_id = self.create_job(spec, features, budget_usd=budget_usd)
        self._queue(job_id, self.repo.jobs.features(job_id, status="pending"), spec.chunk_size)
        return job_id

    def spec_of(self, job_id: int) -> JobSpec:
        info = self.progress(job_id)
        try:
            return JobSpec.from_dict(info.spec)
        except (ConfigError, TypeError) as e:
            raise InputError(f"job {job_id} has no usable job spec ({e})") from None

    def _require_queue(self) -> ChunkSender:
        if self.send is None:
            raise ConfigError("no Redis configured for the queue: set LABELER_REDIS_URL (e.g. "
                              "redis://localhost:6379/0), or run the job in-process with `labeler label`")
        return self.send

    def _queue(self, job_id: int, features: list[int], chunk_size: int) -> int:
        """Record the chunks (the ledger the reaper recovers from), then send their messages."""
        send = self._require_queue()
        chunks = self.repo.chunks.add(job_id, chunked(sorted(features), chunk_size) if features else [])
        for chunk in chunks:
            send(job_id, chunk.id, chunk.features)
        return len(chunks)

    # --- running ----------------------------------------------------------------------------

    async def run_chunk_async(self, job_id: int, features: list[int], pool: LLMPool, *,
                              max_in_flight: int | None = None) -> ChunkResult:
        """One unit of work.  A cancelled, finished or budget-stopped job starts nothing; the
        job's LLM calls charge the job's budget, and reaching it marks the job budget_reached."""
        info = self.progress(job_id)
        if info.status in ("cancelled", "done", "budget_reached"):
            return ChunkResult(not_started=list(features), cancelled=info.status == "cancelled",
                               budget_exceeded=info.status == "budget_reached", message=f"job {job_id} is {info.status}")
        budget = JobBudget(self.repo.jobs, job_id)
        try:
            budget.check()
        except BudgetExceeded as e:
            self._stop_for_budget(job_id)
            return ChunkResult(not_started=list(features), budget_exceeded=True, message=f"stopped: budget: {e}")
        if info.status == "pending":
            self.repo.jobs.set_status(job_id, "running")
        spec = self.spec_of(job_id)
        stages = build_stages(spec.label, pool, explain="explain" in spec.stages, score="score" in spec.stages,
                              mode=spec.llm_mode, budget=budget,
                              subject=lambda: self.subjects.get(self.stores.get(spec.store)))
        if max_in_flight is None:  # batch mode: every feature of the chunk joins the same batches
            max_in_flight = len(features) if spec.llm_mode == "batch" else 2 * self.settings.llm_concurrency
        result = await label_chunk(
            self.stores.get(spec.store), [int(f) for f in features], stages, self.repo, int(info.sae_id),
            job_id=job_id, control=spec.label.control, seed=spec.label.seed, max_in_flight=max(1, max_in_flight),
            should_cancel=self._cancel_probe(job_id))
        if result.budget_exceeded:
            self._stop_for_budget(job_id)
        self.repo.jobs.finish_if_complete(job_id)
        return result

    def _stop_for_budget(self, job_id: int) -> None:
        if self.repo.jobs.status(job_id) in ("pending", "running"):
            self.repo.jobs.set_status(job_id, "budget_reached")

    def run_chunk(self, job_id: int, features: list[int], chunk_id: int | None = None) -> ChunkResult:
        """``run_chunk_async`` on this thread's own event loop and LLM pool, kept between chunks so
        connections to the endpoints stay open (a Celery worker thread calls this).  A queued
        chunk (``chunk_id``) runs under its lease: a copy whose chunk is done or leased by a live
        worker is skipped."""
        lease = None
        if chunk_id is not None:
            lease = ChunkLease(self.repo.chunks, chunk_id, self.settings.chunk_lease_s)
            chunk = lease.claim()
            if chunk is None:
                return ChunkResult(skipped=list(features), message=f"{lease.why_not()}: skipped")
            features = chunk.features
        loop = getattr(self._thread, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._thread.loop = asyncio.new_event_loop()
            self._thread.pool = LLMPool(self.settings)
        asyncio.set_event_loop(loop)
        try:
            result = loop.run_until_complete(self.run_chunk_async(job_id, features, self._thread.pool))
        except BaseException as e:
            if lease is not None:
                lease.release(reason_of(e))
            raise
        if lease is not None:
            lease.finish()
        return result

    def run(self, job_id: int, *, on_chunk: Callable[[ChunkResult], None] | None = None) -> JobView:
        """Run the job's pending features here, several chunks at once so the LLM concurrency
        is used as fully as in a worker; returns the job's state afterwards."""
        spec = self.spec_of(job_id)
        chunks = chunked(self.repo.jobs.features(job_id, status="pending"), spec.chunk_size)
        in_flight = BATCH_FEATURES_IN_FLIGHT if spec.llm_mode == "batch" else self.settings.llm_concurrency
        parallel = max(1, in_flight // spec.chunk_size)

        async def main() -> None:
            pool = LLMPool(self.settings)
            sem = asyncio.Semaphore(parallel)

            async def one(chunk: list[int]) -> None:
                async with sem:
                    res = await self.run_chunk_async(job_id, chunk, pool)
                if on_chunk is not None:
                    on_chunk(res)

            try:
                await asyncio.gather(*(one(c) for c in chunks))
            finally:
                await pool.aclose()  # this loop ends here: close its connections first

        if chunks:
            asyncio.run(main())
        self.repo.jobs.finish_if_complete(job_id)
        return self.progress(job_id)

    def _cancel_probe(self, job_id: int) -> Callable[[], bool]:
        """Reads the job status at most once a second."""
        last = [0.0, False]

        def probe() -> bool:
            now = time.monotonic()
            if not last[1] and now - last[0] >= CANCEL_POLL_S:
                last[0] = now
                last[1] = self.repo.jobs.status(job_id) == "cancelled"
            return bool(last[1])

        return probe

    # --- control ----------------------------------------------------------------------------

    def retry_failed(self, job_id: int, *, queued: bool) -> list[int]:
        """A new attempt at the job's failed features (same job id), queued or run here."""
        failed = self.repo.jobs.features(job_id, status="failed")
        if not failed:
            return []
        spec = self.spec_of(job_id)
        validate(spec.label, self.settings, spec.stages)
        if queued:
            self._require_queue()
        # Back to pending first, so the job does not count as finished while the retries run.
        for f in failed:
            self.repo.jobs.mark_feature(job_id, f, "pending")
        self.repo.jobs.set_status(job_id, "running")
        if queued:
            self._queue(job_id, failed, spec.chunk_size)
        else:
            self.run(job_id)
        return failed

    def resume(self, job_id: int, *, queued: bool, budget_usd: float | None = None) -> list[int]:
        """Go on with a job's pending features (a budget_reached job, or one whose queued
        chunks were lost), queued or run here.  ``budget_usd`` (default: LABELER_LLM_BUDGET_USD
        when set) becomes the job's budget; it must be above what the job already spent.
        Queued: the job's queued chunks are sent again, chunks whose worker died are re-queued
        (``Reaper.reap``), and pending features in no unfinished chunk get new chunks; a chunk a
        live worker holds is left to it."""
        info = self.progress(job_id)
        if info.status in ("done", "cancelled"):
            raise InputError(f"job {job_id} is {info.status}: nothing to resume")
        spec = self.spec_of(job_id)
        validate(spec.label, self.settings, spec.stages)
        if queued:
            self._require_queue()
        budget = budget_usd if budget_usd is not None else self.settings.llm_budget_usd
        old_cap, spent = self.repo.jobs.budget(job_id)
        # A job stopped by its budget stopped because its next call did not fit: the same
        # budget would stop it again at once, so only a higher one goes on.
        same = info.status == "budget_reached" and old_cap is not None and (budget is None or budget <= old_cap)
        if same or (budget is not None and spent >= budget):
            cap = old_cap if budget is None else budget
            raise ConfigError(f"job {job_id} has spent ${spent:.4f} of its ${cap:.4f} LLM budget and was stopped "
                              "by it: give a higher budget (--budget-usd or LABELER_LLM_BUDGET_USD) to resume it")
        if budget is not None:
            self.repo.jobs.set_budget(job_id, budget)
        pending = self.repo.jobs.features(job_id, status="pending")
        self.repo.jobs.set_status(job_id, "running")
        if queued:
            Reaper(self.repo, self._require_queue(), self.settings).reap(job_id=job_id, resend_queued=True)
            covered = self.repo.chunks.covered(job_id)
            self._queue(job_id, [f for f in pending if f not in covered], spec.chunk_size)
        else:
            self.run(job_id)
        self.repo.jobs.finish_if_complete(job_id)
        return pending

    def cancel(self, job_id: int) -> JobView:
        """Stop the job: queued chunks skip on start, running chunks start no new feature."""
        if self.progress(job_id).status != "done":
            self.repo.jobs.set_status(job_id, "cancelled")
        return self.progress(job_id)

    def progress(self, job_id: int, *, max_errors: int = 20) -> JobView:
        """Status, counts (done / failed / pending / reused), tokens, cost and failure reasons."""
        info = self.repo.jobs.info(job_id, max_errors=max_errors)
        if info is None:
            raise InputError(f"no job {job_id} in {self.repo!r}: see `labeler jobs` for the list")
        return info

    def wait(self, job_id: int, *, timeout_s: float = 120.0, poll_s: float = 0.25) -> JobView:
        """Poll until the job is done, cancelled or budget_reached (tests, ``labeler submit --wait``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.progress(job_id)
            if info.finished:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout_s}s: {info.counts}")
            time.sleep(poll_s)
