"""Labeling jobs: a job is a list of features split into chunks; each chunk is one unit of work.

Queued (``submit_job``: one Celery task per chunk, Redis broker) and embedded
(``run_job_inprocess``: same chunks, same pipeline, no Redis) give identical results because
both end in ``run_chunk``.  Delivery is at-least-once (late acks, redelivery when a worker
dies); labels are exactly-once because every write is idempotent and a chunk skips features
the job already marked done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from labeler.core.config import Settings, get_settings
from labeler.core.errors import ConfigError, InputError
from labeler.pipeline import (ChunkResult, LabelSpec, close_shared_llms, label_features, sae_id_for_store,
                              validate_spec)

JOB_STATUSES = ("pending", "running", "cancelled", "done")


# --------------------------------------------------------------------------- shared handles


@lru_cache(maxsize=8)
def _repository(url: str) -> Any:
    from labeler.db.repository import Repository

    repo = Repository(url)
    if repo.current_revision() is None:  # a fresh database (the embedded SQLite default)
        repo.upgrade()
    return repo


def get_repository(settings: Settings | None = None) -> Any:
    """One Repository per database URL per process (its engine pools connections)."""
    return _repository((settings or get_settings()).resolved_database_url)


@lru_cache(maxsize=16)
def _open_store(path: str) -> Any:
    from labeler.examples.store import FeatureStore

    return FeatureStore(path)


def open_store(path: str | Path) -> Any:
    return _open_store(str(Path(path).resolve()))


def chunked(features: list[int], size: int) -> list[list[int]]:
    """Chunks of ``size``; a lone last feature joins the previous chunk, because control scores
    take another feature's explanation from the same chunk."""
    if size < 1:
        raise ConfigError(f"chunk size must be >= 1 (got {size})")
    chunks = [features[i:i + size] for i in range(0, len(features), size)]
    if size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2].extend(chunks.pop())
    return chunks


# --------------------------------------------------------------------------- job lifecycle


def create_job(store_path: str | Path, features: Iterable[int], spec: LabelSpec,
               settings: Settings | None = None) -> int:
    """Record the job (pending, every feature pending) and return its id."""
    settings = settings or get_settings()
    validate_spec(spec, settings)
    store = open_store(store_path)
    features = list(dict.fromkeys(int(f) for f in features))
    if not features:
        raise ConfigError("the job has no features: give a non-empty --features range")
    bad = [f for f in features if f < 0 or f >= store.n_features]
    if bad:
        raise ConfigError(f"feature {bad[0]} is out of range: the store has {store.n_features} features")
    repo = get_repository(settings)
    sae_id = sae_id_for_store(repo, store)
    job_spec = {"store": str(Path(store_path).resolve()), "label": spec.to_dict(),
                "config_hash": spec.config_hash, "chunk_size": settings.chunk_size}
    return int(repo.create_job(sae_id, job_spec, features))


def job_spec(job_id: int, settings: Settings | None = None) -> tuple[str, LabelSpec, int]:
    """(store path, label spec, chunk size) recorded for a job."""
    info = job_progress(job_id, settings)
    spec = info.get("spec") or {}
    if "store" not in spec or "label" not in spec:
        raise InputError(f"job {job_id} was not created by labeler.jobs (no store/spec recorded)")
    return spec["store"], LabelSpec.from_dict(spec["label"]), int(spec.get("chunk_size") or 16)


def _require_broker(settings: Settings) -> str:
    url = settings.resolved_broker_url
    if not url:
        raise ConfigError(
            "no Redis configured for the queue: set LABELER_REDIS_URL (e.g. redis://localhost:6379/0), "
            "or run the job in-process with `labeler label`"
        )
    return url


def enqueue_chunks(job_id: int, store_path: str, features: list[int], spec: LabelSpec,
                   settings: Settings, chunk_size: int | None = None) -> int:
    """One Celery task per chunk; returns the number of tasks sent."""
    _require_broker(settings)
    from workers.app import make_app

    app = make_app(settings)
    chunks = chunked(features, chunk_size or settings.chunk_size)
    for chunk in chunks:
        app.send_task("labeler.label_chunk", args=[job_id, store_path, chunk, spec.to_dict()])
    return len(chunks)


def submit_job(store_path: str | Path, features: Iterable[int], spec: LabelSpec,
               settings: Settings | None = None) -> int:
    """Create the job and queue its chunks for ``labeler worker`` processes (needs Redis)."""
    settings = settings or get_settings()
    _require_broker(settings)
    job_id = create_job(store_path, features, spec, settings)
    store, spec, chunk_size = job_spec(job_id, settings)
    features = get_repository(settings).job_features(job_id)
    enqueue_chunks(job_id, store, sorted(features), spec, settings, chunk_size)
    return job_id


_THREAD = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread, kept between chunks, so the shared LLM clients keep
    their connections open from one chunk to the next."""
    loop = getattr(_THREAD, "loop", None)
    if loop is None or loop.is_closed():
        loop = _THREAD.loop = asyncio.new_event_loop()
    return loop


def run_chunk(job_id: int, store_path: str, features: list[int], spec: LabelSpec,
              settings: Settings | None = None) -> ChunkResult:
    """The unit of work of a Celery task (queued jobs) and of retries run here."""
    loop = _thread_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(run_chunk_async(job_id, store_path, features, spec, settings))


async def run_chunk_async(job_id: int, store_path: str, features: list[int], spec: LabelSpec,
                          settings: Settings | None = None, max_in_flight: int | None = None) -> ChunkResult:
    settings = settings or get_settings()
    repo = get_repository(settings)
    status = _status(repo, job_id)
    if status in ("cancelled", "done"):
        return ChunkResult(not_started=list(features), cancelled=status == "cancelled",
                           message=f"job {job_id} is {status}")
    if status == "pending":
        repo.set_job_status(job_id, "running")
    result = await label_features(open_store(store_path), features, spec, repo, job_id=job_id,
                                  should_cancel=_cancel_probe(repo, job_id), settings=settings,
                                  max_in_flight=max_in_flight)
    finish_if_complete(job_id, settings)
    return result


def _status(repo: Any, job_id: int) -> str:
    info = repo.job_info(job_id, max_errors=0)
    if info is None:
        raise InputError(f"no job {job_id} in {repo!r}")
    return str(info["status"])


def _cancel_probe(repo: Any, job_id: int, every_s: float = 1.0) -> Callable[[], bool]:
    """``should_cancel`` for the pipeline: reads the job status at most once a second."""
    last = [0.0, False]

    def probe() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= every_s:
            last[0] = now
            last[1] = _status(repo, job_id) == "cancelled"
        return bool(last[1])

    return probe


def _counts(info: dict[str, Any]) -> dict[str, int]:
    counts = info.get("counts") or {}
    return {k: int(counts.get(k, 0) or 0) for k in ("done", "failed", "pending")}


def finish_if_complete(job_id: int, settings: Settings | None = None) -> bool:
    """Mark the job done when no feature is pending (failures count as finished)."""
    info = job_progress(job_id, settings)
    repo = get_repository(settings)
    if info["status"] in ("cancelled", "done"):
        return info["status"] == "done"
    if _counts(info)["pending"] == 0:
        repo.set_job_status(job_id, "done")
        return True
    return False


def run_job_inprocess(store_path: str | Path, features: Iterable[int], spec: LabelSpec,
                      settings: Settings | None = None, *, job_id: int | None = None,
                      on_chunk: Callable[[ChunkResult], None] | None = None) -> int:
    """The embedded default (``labeler label``): the same chunks and pipeline, no Redis.

    Several chunks run at once so the LLM concurrency is used as fully as in a worker."""
    settings = settings or get_settings()
    if job_id is None:
        job_id = create_job(store_path, features, spec, settings)
    store, spec, chunk_size = job_spec(job_id, settings)
    repo = get_repository(settings)
    todo = sorted(repo.job_features(job_id, status="pending") + repo.job_features(job_id, status="failed"))
    chunks = chunked(todo, chunk_size) if todo else []
    parallel = max(1, settings.llm_concurrency // max(chunk_size, 1))

    async def main() -> None:
        sem = asyncio.Semaphore(parallel)

        async def one(chunk: list[int]) -> None:
            async with sem:
                res = await run_chunk_async(job_id, store, chunk, spec, settings)
                if on_chunk is not None:
                    on_chunk(res)

        try:
            await asyncio.gather(*(one(c) for c in chunks))
        finally:
            await close_shared_llms()  # this loop ends here: close its connections first

    if chunks:
        asyncio.run(main())
    finish_if_complete(job_id, settings)
    return job_id


def cancel_job(job_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Stop the job: queued chunks skip on start, running chunks start no new feature."""
    repo = get_repository(settings)
    info = job_progress(job_id, settings)
    if info["status"] != "done":
        repo.set_job_status(job_id, "cancelled")
    return job_progress(job_id, settings)


def retry_failed(job_id: int, settings: Settings | None = None, *, inprocess: bool | None = None) -> list[int]:
    """A new attempt of just the job's failed features (same job id); returns them.

    Queued when a broker is configured (unless ``inprocess``), else run here."""
    settings = settings or get_settings()
    repo = get_repository(settings)
    failed = sorted(repo.job_features(job_id, status="failed"))
    if not failed:
        return []
    store, spec, chunk_size = job_spec(job_id, settings)
    validate_spec(spec, settings)
    # Back to pending first, so the job is not counted finished while the retries run.
    for f in failed:
        repo.mark_feature(job_id, f, "pending")
    repo.set_job_status(job_id, "running")
    use_queue = bool(settings.resolved_broker_url) if inprocess is None else not inprocess
    if use_queue:
        enqueue_chunks(job_id, store, failed, spec, settings, chunk_size)
    else:
        for chunk in chunked(failed, chunk_size):
            run_chunk(job_id, store, chunk, spec, settings)
        finish_if_complete(job_id, settings)
    return failed


def job_progress(job_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """Status, counts (done / failed / pending), tokens, cost and failure reasons."""
    repo = get_repository(settings)
    info = repo.job_info(job_id)
    if info is None:
        raise InputError(f"no job {job_id} in {repo!r}: see `labeler jobs` for the list")
    return dict(info)


def wait_for_job(job_id: int, settings: Settings | None = None, timeout_s: float = 120.0,
                 poll_s: float = 0.25) -> dict[str, Any]:
    """Poll until the job is done or cancelled (tests, ``labeler submit --wait``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = job_progress(job_id, settings)
        if info["status"] in ("done", "cancelled"):
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout_s}s: {info}")
        time.sleep(poll_s)
