"""The batch task's result writes: one round trip for many jobs, read back as Celery's own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from config.settings import Settings
from worker.app import create_app
from worker.tasks import store_results

JOB_A, JOB_B, JOB_C = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture
def app(redis_url: str, redis_client: redis.Redis) -> Iterator[Celery]:
    """A Celery app whose result backend is the (emptied) test database."""
    celery = create_app(Settings(result_backend_url=redis_url, broker_url=redis_url))
    yield celery
    celery.close()


def _stored(client: redis.Redis, job_id: str) -> dict[str, object]:
    raw = client.get(f"celery-task-meta-{job_id}")
    assert raw is not None
    meta: dict[str, object] = json.loads(raw)
    return meta


# Celery's own store_result calls redis-py's deprecated setex.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_batched_results_are_what_store_result_writes(
    app: Celery, redis_client: redis.Redis
) -> None:
    result = {"job_id": JOB_A, "success": True, "recipients": [{"status": "sent"}]}
    # Given one result stored by Celery itself and one by the batch writer
    app.backend.store_result(JOB_B, result, "SUCCESS")
    store_results([(JOB_A, result)], app)
    # Then both records are the same but for the time and the id, and expire alike
    ours, celerys = _stored(redis_client, JOB_A), _stored(redis_client, JOB_B)
    assert ours.pop("task_id") == JOB_A and celerys.pop("task_id") == JOB_B
    assert ours.pop("date_done") and celerys.pop("date_done")
    assert ours == {**celerys, "children": []}
    ttls = [redis_client.ttl(f"celery-task-meta-{job}") for job in (JOB_A, JOB_B)]
    assert ttls[0] > 0 and abs(ttls[0] - ttls[1]) <= 2
    # And a client reads it as any finished task
    read = AsyncResult(JOB_A, app=app)
    assert read.state == "SUCCESS"
    assert read.get(timeout=10) == result


def test_a_success_already_recorded_is_never_overwritten(
    app: Celery, redis_client: redis.Redis
) -> None:
    first = {"job_id": JOB_A, "success": True}
    store_results([(JOB_A, first)], app)
    # When a redelivered batch stores the job again, with another job beside it
    store_results([(JOB_A, {"job_id": JOB_A, "success": False}), (JOB_C, first)], app)
    # Then the first success stays, and the other job is stored
    assert AsyncResult(JOB_A, app=app).get(timeout=10) == first
    assert AsyncResult(JOB_C, app=app).state == "SUCCESS"


def test_nothing_to_store_touches_nothing(app: Celery, redis_client: redis.Redis) -> None:
    store_results([], app)
    assert redis_client.dbsize() == 0
