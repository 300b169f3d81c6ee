"""Settings -> Celery configuration. The only module that spells Celery's setting names.

Choices, with the measurements behind them in the project's Celery notes:

* JSON only, both ways: a worker never unpickles anything.
* ``acks_late`` with ``reject_on_worker_lost``: a task whose worker dies is redelivered;
  the per-part delivery state (not Celery) makes that redelivery safe.
* Prefetch 1: a worker never holds codes it is not working on.
* A Redis visibility timeout far longer than any retry countdown plus runtime, because an
  unacked message older than it is redelivered even if its worker is alive.
* Task events on, so Flower shows every task; task arguments are ids only, so events carry
  no number and no code. ``result_extended`` stays off for the same reason.
* Celery's per-worker ``rate_limit`` is not used: limits are cluster-wide, in Redis.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from config.settings import Settings

__all__ = ["celery_config", "check_timeouts"]


def check_timeouts(settings: Settings) -> None:
    """Refuse a visibility timeout that a retry countdown plus a task could outlast.

    Raises:
        ValueError: ``visibility_timeout_s`` is not at least twice the longest countdown
            plus the task time limit.
    """
    needed_s = 2 * (settings.max_retry_countdown_s + settings.task_time_limit_s)
    if settings.visibility_timeout_s < needed_s:
        raise ValueError(
            f"visibility_timeout_s {settings.visibility_timeout_s} is too short: it must be at "
            f"least {needed_s} (twice max_retry_countdown_s {settings.max_retry_countdown_s} "
            f"plus task_time_limit_s {settings.task_time_limit_s}), or tasks are delivered twice"
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (``app.config_from_object`` input)."""
    check_timeouts(settings)
    lanes = settings.lanes
    return {
        "broker_url": settings.broker_url.get_secret_value(),
        # kombu's Redis transport that records garbage on a queue instead of dying on it.
        "broker_transport": "worker.transport:Transport",
        "result_backend": settings.result_backend_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.result_ttl_s,
        "result_extended": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": settings.task_time_limit_s,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": lanes.default,
        # One direct exchange per lane, bound by the lane's own key: a message published to
        # a lane lands in that lane's queue only.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in lanes.names()
        ],
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
    }
