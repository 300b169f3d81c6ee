"""What workers tell the outside world about a task: summaries, never a result record.

A task's return value is its job's ``SendSmsMessageResult``, whose recipients hold phone
numbers in clear (the result backend keeps it; ``smsgw status`` reads it). Celery repeats
that value in two places that reach people and other tools:

* its ``Task ... succeeded in 0.08s: {...}`` log line (``celery.app.trace``);
* the ``task-succeeded`` event (``result=saferepr(value)``), which every event listener
  receives: Flower's task pages and ``/api/tasks``, ``celery events``, monitoring tools.

Both get ``<result success=True>`` instead. :class:`SmsgwTask` is the app's task class: its
``Request`` summarises the event's result and masks the text of ``exception`` /
``traceback`` fields (``task-failed``, ``task-retried``) as the logs are masked.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.worker.request import Request

from worker.logs import redact

__all__ = ["RedactingRequest", "SmsgwTask", "SummariseResults", "summarise_result"]

_MASKED_FIELDS = ("exception", "traceback")


def summarise_result(text: str) -> str | None:
    """``<result success=...>`` for the repr (or JSON) of a result record, else None."""
    if "'recipients'" not in text and '"recipients"' not in text:
        return None
    success = "'success': True" in text or '"success": true' in text
    return f"<result success={success}>"


class SummariseResults(logging.Filter):
    """Celery's "Task ... succeeded: VALUE" log line, with a summary for a result record."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = record.args
        if isinstance(data, dict) and isinstance(data.get("return_value"), str):
            summary = summarise_result(data["return_value"])
            if summary is not None:
                record.args = {**data, "return_value": summary}
        return True


class RedactingRequest(Request):
    """A task request whose events carry no number: Flower and event listeners see them."""

    def send_event(self, type: str, **fields: Any) -> None:
        result = fields.get("result")
        if isinstance(result, str):
            fields["result"] = summarise_result(result) or redact(result)
        for name in _MASKED_FIELDS:
            value = fields.get(name)
            if isinstance(value, str):
                fields[name] = redact(value)
        super().send_event(type, **fields)


class SmsgwTask(Task):  # type: ignore[type-arg]
    """The app's task class: requests are :class:`RedactingRequest`."""

    Request = "worker.task_events:RedactingRequest"
