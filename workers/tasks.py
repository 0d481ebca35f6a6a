"""Thin Celery tasks: each worker process builds its own repository and runner; a task runs one
chunk through it.  Redelivered chunks are harmless: a chunk runs only under its lease, works
only on features its job still has pending, and every database write is an upsert on its
natural key.  Every worker also runs the reaper (``labeler.runs.recovery``), so work lost with
a worker or with the broker comes back with no operator.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from labeler.runs.queue import COLLECT_PART_TASK, LABEL_CHUNK_TASK
from workers.app import app

_runner: Any = None  # this worker process's Runner (built once, on first use)
_runner_lock = threading.Lock()


def runner() -> Any:
    global _runner
    with _runner_lock:
        if _runner is None:
            from labeler.core.config import get_settings
            from labeler.db import Repository
            from labeler.runs.runner import Runner

            settings = get_settings()
            _runner = Runner(Repository.open(settings.resolved_database_url), settings)
        return _runner


@app.task(name=LABEL_CHUNK_TASK)
def label_chunk(job_id: int, features: list[int], chunk_id: int | None = None) -> dict[str, Any]:
    result = runner().run_chunk(int(job_id), [int(f) for f in features],
                                chunk_id=None if chunk_id is None else int(chunk_id))
    return {"done": len(result.done), "failed": len(result.failed), "skipped": len(result.skipped),
            "not_started": len(result.not_started), "message": result.message}


@app.task(name=COLLECT_PART_TASK)
def collect_part(job_id: int, index: int) -> dict[str, Any]:
    from labeler.core.config import get_settings
    from labeler.runs.collect_jobs import run_part_of_job

    return {"status": run_part_of_job(runner().repo, get_settings(), int(job_id), int(index), log=print)}


@worker_init.connect  # the threads and solo pools
@worker_process_init.connect  # each prefork child
def _preload(**_: Any) -> None:
    """Import the pipeline's heavy modules before the first task, so the first chunk does not
    pay for them (and benchmarks measure labeling, not imports).  The runner itself is built by
    the first task, in the process that runs it (database connections do not survive a fork)."""
    import labeler.examples.store  # noqa: F401
    import labeler.explanation  # noqa: F401
    import labeler.runs.runner  # noqa: F401
    import labeler.scoring  # noqa: F401


_reaper_stop: threading.Event | None = None


@worker_ready.connect  # once per worker, in its main process (the prefork parent)
def _start_reaper(**_: Any) -> None:
    """The reaper, with its own repository and sender (the runner's belongs to the processes
    that run tasks)."""
    global _reaper_stop
    from labeler.core.config import get_settings
    from labeler.db import Repository
    from labeler.runs.queue import CelerySender
    from labeler.runs.recovery import Reaper

    settings = get_settings()
    sender = CelerySender(settings)
    reaper = Reaper(Repository.open(settings.resolved_database_url), sender, settings, waiting=sender.waiting)
    _reaper_stop = reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    if _reaper_stop is not None:
        _reaper_stop.set()
