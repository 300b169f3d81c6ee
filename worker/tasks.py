"""Thin Celery tasks: parse the payload, run the pipeline, map its answer onto Celery.

``sms.send`` takes one argument, the job id. Its return value is the job's final
``SendSmsMessageResult`` (JSON), kept in the result backend under the job id, which is
also the task id. A payload that is not one job id is recorded as a failed job with the
reason, never crashed on and never retried.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from celery import Task
from celery.signals import task_rejected, task_unknown
from redis.exceptions import RedisError

from worker import runtime
from worker.app import app
from worker.dispatch import RetryLater
from worker.producer import SEND_TASK
from worker.rejections import record_rejected
from worker.results import job_failure

__all__ = ["SEND_TASK", "send"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_STATE_STORE_RETRY_S = 5.0

log = logging.getLogger(__name__)


def _job_id_from(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    if len(args) == 1 and not kwargs and isinstance(args[0], str) and _JOB_ID.match(args[0]):
        return args[0]
    return None


def _describe_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    # Types and counts only: a bad payload may hold anything, secrets included.
    kinds = ", ".join(type(arg).__name__ for arg in args) or "none"
    return f"{len(args)} positional argument(s) ({kinds}) and {len(kwargs)} keyword argument(s)"


@app.task(name=SEND_TASK, bind=True, max_retries=None)
def send(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Dispatch one stored job; retry later when the pipeline asks to."""
    job_id = _job_id_from(args, kwargs)
    task_id = str(self.request.id or "")
    if job_id is None:
        reason = (
            f"malformed task payload: expected one job id, got {_describe_payload(args, kwargs)}"
        )
        log.warning("task %s rejected: %s", task_id, reason)
        return job_failure(task_id, reason).model_dump(mode="json")
    try:
        outcome = runtime.run(
            runtime.current().dispatcher.dispatch(job_id, attempt=self.request.retries)
        )
    except (RedisError, ConnectionError) as error:
        # The state store is unreachable: nothing was decided, try the whole job again.
        countdown = _STATE_STORE_RETRY_S * random.uniform(1.0, 2.0)
        log.warning("job %s: state store unavailable (%s); retrying", job_id, type(error).__name__)
        raise self.retry(countdown=countdown, exc=error) from None
    if isinstance(outcome, RetryLater):
        log.info("job %s: retry in %.1fs (%s)", job_id, outcome.countdown_s, outcome.reason)
        raise self.retry(countdown=outcome.countdown_s)
    return outcome.result.model_dump(mode="json")


@task_unknown.connect
def _unknown_task(name: str | None = None, id: str | None = None, **_: Any) -> None:
    record_rejected(f"unknown task {name!r} (id {id}) on an smsgw queue; message discarded")


@task_rejected.connect
def _rejected_message(message: Any = None, **_: Any) -> None:
    record_rejected("a message on an smsgw queue was not a task message; discarded")
