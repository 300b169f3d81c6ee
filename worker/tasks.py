"""Thin Celery tasks: parse the payload, run the pipeline, map its answer onto Celery.

``sms.send`` takes one argument, the job id. Its return value is the job's final
``SendSmsMessageResult`` (JSON), kept in the result backend under the job id, which is
also the task id. A payload that is not one job id is recorded as a failed job with the
reason, never crashed on and never retried.

``sms.send_batch`` carries many bulk jobs (Celery's per-task cost, not the provider, is
what limits one-message tasks). It stores each job's result under the job's id itself,
and hands a job that must be retried to ``sms.send`` with the countdown, as its own task
under its own id, so every job still ends with one result under its id.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from celery import Celery, Task, states
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore
from celery.signals import task_rejected, task_unknown
from redis.exceptions import RedisError

from config.settings import get_settings
from worker import metrics, runtime
from worker.app import app
from worker.dispatch import Finished, RetryLater
from worker.producer import SEND_BATCH_TASK, SEND_TASK
from worker.rejections import record_rejected
from worker.results import job_failure

__all__ = ["SEND_BATCH_TASK", "SEND_TASK", "send", "send_batch", "store_results"]

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
        failure = job_failure(task_id, reason)
        metrics.record_job(failure)
        return failure.model_dump(mode="json")
    try:
        outcome = runtime.run(
            runtime.current().dispatcher.dispatch(job_id, attempt=self.request.retries)
        )
    except (RedisError, ConnectionError) as error:
        # The state store is unreachable: nothing was decided, try the whole job again.
        countdown = _STATE_STORE_RETRY_S * random.uniform(1.0, 2.0)
        log.warning("job %s: state store unavailable (%s); retrying", job_id, type(error).__name__)
        metrics.retry(_lane(self), error)
        raise self.retry(countdown=countdown, exc=error) from None
    if isinstance(outcome, RetryLater) and outcome.held:
        # Held by its campaign (paused, or a rate limit): not a try of the job, so it goes
        # back as a batch of one (which never counts held turns) rather than a retry.
        log.info("job %s: held %.1fs (%s)", job_id, outcome.countdown_s, outcome.reason)
        queue = _lane(self) or get_settings().lanes.bulk
        send_batch.apply_async(args=([job_id],), queue=queue, countdown=outcome.countdown_s)
        raise Ignore()
    if isinstance(outcome, RetryLater):
        log.info("job %s: retry in %.1fs (%s)", job_id, outcome.countdown_s, outcome.reason)
        raise self.retry(countdown=outcome.countdown_s)
    if not _recorded(self, job_id):  # a finished job delivered again is counted once
        metrics.record_job(outcome.result, outcome.parts)
    return outcome.result.model_dump(mode="json")


def _recorded(task: Task[Any, Any], job_id: str) -> bool:
    """Whether the backend already holds a final result for the job."""
    try:
        meta = task.backend.get_task_meta(job_id, cache=False)
    except (RedisError, ConnectionError):
        return False
    return bool(meta.get("status") == states.SUCCESS)


def _lane(task: Task[Any, Any]) -> str | None:
    """The lane (queue) the task came from."""
    lane = (task.request.delivery_info or {}).get("routing_key")
    return str(lane) if lane else None


def _job_ids_from(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str] | None:
    if len(args) != 1 or set(kwargs) - {"campaign"} or not isinstance(args[0], list):
        return None
    campaign = kwargs.get("campaign")
    if campaign is not None and not (isinstance(campaign, str) and _JOB_ID.match(campaign)):
        return None
    ids = args[0]
    if ids and all(isinstance(item, str) and _JOB_ID.match(item) for item in ids):
        return list(ids)
    return None


@app.task(name=SEND_BATCH_TASK, bind=True, max_retries=None, ignore_result=True)
def send_batch(self: Task[Any, Any], *args: Any, **kwargs: Any) -> None:
    """Dispatch a batch of stored bulk jobs; each job's result is stored under its own id.

    ``campaign`` (keyword, optional): the campaign every job of the batch belongs to; while
    it is paused the batch is held after one read.
    """
    job_ids = _job_ids_from(args, kwargs)
    if job_ids is None:
        record_rejected(
            f"malformed {SEND_BATCH_TASK} payload (task {self.request.id}): expected a list "
            f"of job ids, got {_describe_payload(args, kwargs)}"
        )
        return
    try:
        campaign = kwargs.get("campaign")
        outcomes = runtime.run(
            runtime.current().dispatcher.dispatch_many(job_ids, campaign=campaign)
        )
    except (RedisError, ConnectionError) as error:
        countdown = _STATE_STORE_RETRY_S * random.uniform(1.0, 2.0)
        log.warning(
            "batch %s: state store unavailable (%s); retrying",
            self.request.id,
            type(error).__name__,
        )
        metrics.retry(_lane(self), error)
        raise self.retry(countdown=countdown, exc=error) from None
    queue = _lane(self) or get_settings().lanes.bulk
    finished = {job_id: o for job_id, o in outcomes if isinstance(o, Finished)}
    stored = store_results(
        [(job_id, outcome.result.model_dump(mode="json")) for job_id, outcome in finished.items()]
    )
    for job_id in stored:  # not the jobs a retried or redelivered batch had finished already
        metrics.record_job(finished[job_id].result, finished[job_id].parts)
    held = [(job_id, o) for job_id, o in outcomes if isinstance(o, RetryLater) and o.held]
    if held:
        # Held back by their campaign (paused, or its own rate): they come back together,
        # as one batch, rather than as thousands of single tasks waiting in a worker.
        countdown = min(outcome.countdown_s for _, outcome in held)
        self.apply_async(
            args=([job_id for job_id, _ in held],), kwargs=kwargs, queue=queue, countdown=countdown
        )
    for job_id, outcome in outcomes:
        if isinstance(outcome, RetryLater) and not outcome.held:
            # The job goes on alone: its own task, its own id, retried like any job.
            send.apply_async(
                args=(job_id,), task_id=job_id, queue=queue, countdown=outcome.countdown_s
            )


def store_results(
    results: list[tuple[str, dict[str, Any]]], celery: Celery | None = None
) -> list[str]:
    """Store each job's final result under its own id, as ``store_result(id, result,
    SUCCESS)`` would, but in two Redis round trips for the whole batch instead of two a job.

    The record is the one Celery's Redis backend writes (same meta, same encoding, same key,
    same expiry, same publish for waiting clients), and, as Celery does, a result already
    recorded as ``SUCCESS`` is never overwritten. Other backends store one result at a time.

    Args:
        results: (job id, result JSON) pairs.
        celery: The app whose result backend keeps them (this worker's by default).

    Returns:
        The ids of the jobs whose result was written now (not those already recorded).
    """
    if not results:
        return []
    celery = celery or app
    backend = celery.backend
    if not isinstance(backend, RedisBackend):
        for job_id, result in results:
            backend.store_result(job_id, result, states.SUCCESS)
        return [job_id for job_id, _ in results]
    keys = [backend.get_key_for_task(job_id) for job_id, _ in results]
    current = backend.ensure(backend.mget, (keys,))
    date_done = celery.now().isoformat()
    records: list[tuple[Any, Any]] = []
    written: list[str] = []
    for (job_id, result), key, stored in zip(results, keys, current, strict=True):
        if stored and backend.decode_result(stored).get("status") == states.SUCCESS:
            continue
        written.append(job_id)
        meta: dict[str, Any] = {
            "status": states.SUCCESS,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": date_done,
            "task_id": job_id,
        }
        records.append((key, backend.encode(meta)))
    if records:
        backend.ensure(_write_results, (backend, records))
    return written


def _write_results(backend: RedisBackend, records: list[tuple[Any, Any]]) -> None:
    # What RedisBackend.set does per key (SETEX, then PUBLISH for clients waiting on it);
    # SET with EX is the same write without redis-py's deprecated setex.
    expires = getattr(backend, "expires", None)
    with backend.client.pipeline() as pipe:
        for key, value in records:
            pipe.set(key, value, ex=expires or None)
            pipe.publish(key, value)
        pipe.execute()


@task_unknown.connect
def _unknown_task(name: str | None = None, id: str | None = None, **_: Any) -> None:
    record_rejected(f"unknown task {name!r} (id {id}) on an smsgw queue; message discarded")


@task_rejected.connect
def _rejected_message(message: Any = None, **_: Any) -> None:
    record_rejected("a message on an smsgw queue was not a task message; discarded")
