"""The Celery app: ``celery -A worker.app worker -Q otp`` and ``celery -A worker.app flower``.

Configuration comes from settings through :func:`config.celery.celery_config`; the tasks
live in :mod:`worker.tasks`. Signals wire the per-process runtime (:mod:`worker.runtime`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

from config.celery import celery_config
from config.settings import Settings, get_settings

__all__ = ["app", "create_app"]


class _SummariseResults(logging.Filter):
    """Celery logs a task's return value; ours is a result record with phone numbers.

    Replace it with a summary so worker logs never carry a number in clear.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        data = record.args
        if isinstance(data, dict) and isinstance(data.get("return_value"), str):
            value = data["return_value"]
            if "'recipients'" in value or '"recipients"' in value:
                success = "'success': True" in value or '"success": true' in value
                record.args = {**data, "return_value": f"<result success={success}>"}
        return True


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (the process settings by default)."""
    celery = Celery("smsgw", include=["worker.tasks"])
    celery.config_from_object(celery_config(settings or get_settings()))
    logging.getLogger("celery.app.trace").addFilter(_SummariseResults())
    return celery


app = create_app()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    from worker import runtime

    runtime.shutdown()
