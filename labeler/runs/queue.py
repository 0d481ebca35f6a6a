"""The queue: Celery over Redis.  ``celery_config`` is shared by the sender here and the worker
app in ``workers/``; the library only ever sends tasks by name and never imports ``workers``.

Delivery guarantees: tasks are acknowledged only after they finish (``task_acks_late``), put
back on the queue when the worker process running them dies (``task_reject_on_worker_lost``),
and a worker reserves one task at a time (``worker_prefetch_multiplier=1``) so a killed worker
holds back at most the chunk it was working on.  Lost work is recovered by the chunk leases and
the reaper of ``labeler.runs.recovery`` (within about a lease); the broker's own redelivery of a
message reserved by a worker that vanished, after ``visibility_timeout`` seconds, is a backstop
(its copy is skipped when the chunk is done or leased).  Writes are idempotent, so neither ever
duplicates a label.
"""

from __future__ import annotations

from typing import Any

from labeler.core.config import Settings
from labeler.core.errors import ConfigError

QUEUE = "labeler"
LABEL_CHUNK_TASK = "labeler.label_chunk"
"""The task a worker runs for one chunk: arguments ``(job_id, features)``."""
COLLECT_PART_TASK = "labeler.collect_part"
"""The task a worker runs for one part of a sharded collect: arguments ``(job_id, part_index)``."""


def broker_url(settings: Settings) -> str:
    url = settings.resolved_broker_url
    if not url:
        raise ConfigError("no Redis configured for the queue: set LABELER_REDIS_URL (e.g. "
                          "redis://localhost:6379/0), or run the job in-process with `labeler label`")
    return url


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands an unacknowledged chunk to another worker: the setting, else a
    chunk's expected duration (chunk_size x feature_estimate_s) three times over, and at least
    two leases.  Too short costs a skipped copy of a chunk still running (batch-mode chunks
    wait for their batch), too long only delays the backstop: the leases recover lost work."""
    if settings.visibility_timeout_s is not None:
        return int(settings.visibility_timeout_s)
    expected = settings.chunk_size * settings.feature_estimate_s
    return int(max(3 * expected, 2 * settings.chunk_lease_s, 1))


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for both ends of the queue."""
    broker = broker_url(settings)
    vt = visibility_timeout(settings)
    transport = {
        "visibility_timeout": vt,
        # sweep for messages abandoned by dead workers a few times per visibility timeout
        "unacked_restore_interval": max(1, min(10, vt // 4)),
        "unacked_restore_throttle": 1 if vt < 120 else 10,
        # notice a restarted or vanished Redis instead of waiting on a dead socket
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 10,
        "retry_on_timeout": True,
    }
    return dict(
        broker_url=broker,
        result_backend=settings.resolved_result_backend or broker,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_ignore_result=True,  # progress lives in the database, not in task results
        result_expires=24 * 3600,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # keep trying while Redis restarts
        broker_channel_error_retry=True,
        result_backend_always_retry=True,
        redis_backend_health_check_interval=10,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        task_default_queue=QUEUE,
    )


PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
"""kombu's Redis transport keeps one list per priority step: ``labeler``, ``labeler\x06\x163``..."""


class CelerySender:
    """Queues chunks by task name: ``sender(job_id, chunk_id, features)``; ``waiting()`` counts
    the messages waiting in the queue (for the reaper)."""

    def __init__(self, settings: Settings):
        from celery import Celery

        self.app = Celery("labeler-sender")
        self.app.conf.update(celery_config(settings))
        self._broker_url = broker_url(settings)
        self._redis: Any = None

    def __call__(self, job_id: int, chunk_id: int, features: list[int]) -> None:
        # the chunk id goes last: a worker also runs messages queued before chunks had ids
        self.app.send_task(LABEL_CHUNK_TASK, args=[int(job_id), [int(f) for f in features], int(chunk_id)],
                           queue=QUEUE)

    def waiting(self) -> int:
        """Messages in the queue not yet taken by a worker (reserved ones are not counted)."""
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self._broker_url, socket_timeout=5, socket_connect_timeout=5)
        names = [QUEUE if p == 0 else f"{QUEUE}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS]
        return int(sum(self._redis.llen(n) for n in names))

    def collect_part(self, job_id: int, index: int) -> None:
        self.app.send_task(COLLECT_PART_TASK, args=[int(job_id), int(index)], queue=QUEUE)


def sender_for(settings: Settings) -> CelerySender | None:
    """A sender when a broker is configured, else None (jobs run in-process only)."""
    return CelerySender(settings) if settings.resolved_broker_url else None
