"""The Celery app of ``labeler worker`` processes, configured by ``labeler.runs.queue``."""

from __future__ import annotations

from celery import Celery

from labeler.core.config import get_settings
from labeler.runs.queue import celery_config

app = Celery("labeler", include=["workers.tasks"])
app.conf.update(celery_config(get_settings()))
