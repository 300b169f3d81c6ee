"""The Celery app: ``celery -A worker.app worker -Q otp`` and ``celery -A worker.app flower``.

Configuration comes from settings through :func:`config.celery.celery_config`; the tasks
live in :mod:`worker.tasks`. Signals wire the per-process runtime (:mod:`worker.runtime`),
the logging setup (:mod:`worker.logs`, in place of Celery's) and each worker's metrics
endpoint (:mod:`worker.metrics`, when ``SMSGW_METRICS_PORT`` is set).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from config.celery import celery_config
from config.settings import Settings, get_settings
from worker.task_events import SummariseResults

__all__ = ["app", "create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` (the process settings by default)."""
    # Task events and Celery's "succeeded" log line summarise the result record, which
    # holds numbers in clear (worker.task_events).
    celery = Celery("smsgw", include=["worker.tasks"], task_cls="worker.task_events:SmsgwTask")
    celery.config_from_object(celery_config(settings or get_settings()))
    logging.getLogger("celery.app.trace").addFilter(SummariseResults())
    return celery


app = create_app()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    from worker import runtime

    runtime.shutdown()


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, this replaces Celery's own setup: one handler, masked, plain or JSON.
    from worker.logs import configure_logging

    configure_logging(level=loglevel or logging.INFO, fmt=get_settings().log_format)


@celeryd_init.connect
def _early_logging(options: dict[str, Any] | None = None, **_: Any) -> None:
    # The worker warns (e.g. about running as root) before it sets logging up: route those
    # warnings through the same handler, so a JSON log has JSON lines only.
    _setup_logging(loglevel=(options or {}).get("loglevel"))


@worker_ready.connect
def _start_metrics(**_: Any) -> None:
    port = get_settings().metrics_port
    if port is None:
        return
    from worker import metrics

    try:
        metrics.start_server(port)
    except OSError as error:
        # Sending codes matters more than being scraped: say so loudly, keep working.
        log.error("metrics: cannot serve on port %s (%s)", port, error)
    else:
        log.info("metrics: serving /metrics on port %s", port)


@worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    from worker import metrics

    metrics.stop_server()
