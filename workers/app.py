"""The one Celery app, configured from labeler settings (broker and result back end: Redis).

Delivery guarantees: tasks are acknowledged only after they finish (``task_acks_late``), put
back on the queue when the worker process running them dies (``task_reject_on_worker_lost``),
and a worker reserves one task at a time (``worker_prefetch_multiplier=1``) so a killed worker
holds back at most the chunk it was working on.  A message reserved by a worker that vanished
(SIGKILL, lost machine) is redelivered after ``visibility_timeout`` seconds.  Writes are
idempotent, so redelivery never duplicates a label.
"""

from __future__ import annotations


from celery import Celery

from labeler.core.config import Settings, get_settings



def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    broker = settings.resolved_broker_url or "redis://127.0.0.1:6379/0"
    backend = settings.resolved_result_backend or broker
    app = Celery("labeler", broker=broker, backend=backend, include=["workers.tasks"])
    vt = settings.visibility_timeout_s
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
    app.conf.update(
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
        task_default_queue="labeler",
    )
    return app


app = make_app()
