"""Thin Celery tasks: decode JSON arguments, call labeler.jobs, return a small summary.

They are idempotent: a redelivered chunk skips features its job already marked done, and every
database write is an upsert on its natural key.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_process_init

from workers.app import app


@app.task(name="labeler.label_chunk", bind=True)
def label_chunk(self: Any, job_id: int, store_path: str, features: list[int], spec: dict[str, Any]) -> dict[str, Any]:
    from labeler.jobs import run_chunk
    from labeler.pipeline import LabelSpec

    result = run_chunk(int(job_id), store_path, [int(f) for f in features], LabelSpec.from_dict(spec))
    return {"done": len(result.done), "failed": len(result.failed), "skipped": len(result.skipped),
            "not_started": len(result.not_started), "message": result.message}


@worker_init.connect
@worker_process_init.connect
def _preload(**_: Any) -> None:
    """Import the pipeline's heavy modules before the first task, so the first chunk does not
    pay for them (and benchmarks measure labeling, not imports)."""
    import labeler.examples.store  # noqa: F401
    import labeler.explanation  # noqa: F401
    import labeler.jobs  # noqa: F401
    import labeler.llm  # noqa: F401
    import labeler.scoring  # noqa: F401
