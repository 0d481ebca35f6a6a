"""Thin Celery tasks: each worker process builds its own repository and runner; a task runs one
chunk through it.  Redelivered chunks are harmless: a chunk skips features its job already
marked done, and every database write is an upsert on its natural key.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import worker_init, worker_process_init

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
def label_chunk(job_id: int, features: list[int]) -> dict[str, Any]:
    result = runner().run_chunk(int(job_id), [int(f) for f in features])
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
