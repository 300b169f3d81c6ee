"""The producer API against a real Redis broker and state store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from config.settings import Settings, override_settings
from worker.app import create_app
from worker.crypto import Cipher
from worker.jobs import JobRecord
from worker.keys import job_key, reference_key
from worker.models import ShortMessage
from worker.producer import Producer

CODE = "739104"


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    with override_settings(
        broker_url=redis_url, result_backend_url=redis_url, state_redis_url=redis_url
    ) as value:
        yield value


@pytest.fixture
def producer(
    redis_client: redis.Redis, app: Celery, settings: Settings, cipher: Cipher
) -> Producer:
    return Producer(redis=redis_client, publisher=app, settings=settings, cipher=cipher)


def queued(redis_client: redis.Redis, lane: str) -> list[dict[str, Any]]:
    """The task messages waiting in a lane's queue (kombu keeps them in a Redis list)."""
    return [json.loads(raw) for raw in redis_client.lrange(lane, 0, -1)]


def test_enqueue_stores_the_job_and_publishes_its_id_only(
    producer: Producer, redis_client: redis.Redis, cipher: Cipher
) -> None:
    # Given a login code / When enqueued on the otp lane
    job_id = producer.enqueue(
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=["447400123456"]),
        lane="otp",
    )
    # Then the job is stored, its code encrypted
    record = JobRecord.model_validate_json(redis_client.get(job_key(job_id)))
    assert record.lane == "otp"
    assert record.short_message(cipher).render() == f"Code {CODE}"
    assert CODE not in redis_client.get(job_key(job_id))
    assert 0 < redis_client.ttl(job_key(job_id)) <= 7 * 24 * 3600
    # And one task went to the otp queue, whose arguments are the job id alone
    (message,) = queued(redis_client, "otp")
    assert message["headers"]["task"] == "sms.send"
    assert message["headers"]["id"] == job_id
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [job_id] and body[1] == {}
    assert CODE not in json.dumps(message)
    assert queued(redis_client, "default") == queued(redis_client, "bulk") == []


def test_otp_jobs_get_a_default_expiry(producer: Producer, redis_client: redis.Redis) -> None:
    job_id = producer.enqueue(ShortMessage(message="x", phone_numbers=["447400123456"]), lane="otp")
    record = JobRecord.model_validate_json(redis_client.get(job_key(job_id)))
    assert record.message["ttl_s"] == 600
    other = producer.enqueue(ShortMessage(message="x", phone_numbers=["447400123456"]))
    assert JobRecord.model_validate_json(redis_client.get(job_key(other))).message["ttl_s"] is None


def test_the_same_reference_twice_is_one_job(producer: Producer, redis_client: redis.Redis) -> None:
    # Given a producer that retries its request with the same reference
    message = ShortMessage(message="x", phone_numbers=["447400123456"], reference_id="reset-42")
    first = producer.enqueue(message)
    second = producer.enqueue(message)
    # Then the second enqueue returns the first job and publishes nothing more
    assert first == second
    assert len(queued(redis_client, "default")) == 1
    assert redis_client.get(reference_key("reset-42")) == first
    assert "reset-42" not in "".join(redis_client.keys())


def test_origin_json_is_accepted(producer: Producer, redis_client: redis.Redis) -> None:
    job_id = producer.enqueue(
        {"Message": "Your code", "AccessCode": CODE, "PhoneNumbers": ["18588123169"]}
    )
    assert redis_client.exists(job_key(job_id))


def test_bad_shape_names_the_field_without_echoing_the_code(producer: Producer) -> None:
    with pytest.raises(ValidationError) as caught:
        producer.enqueue({"Message": "x", "AccesCode": CODE})
    assert "AccesCode" in str(caught.value)
    assert CODE not in str(caught.value)


def test_unknown_lane_is_refused(producer: Producer, redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="unknown lane 'urgent'; the lanes are otp, default, bulk"):
        producer.enqueue(ShortMessage(message="x", phone_numbers=["447400123456"]), lane="urgent")
    assert redis_client.dbsize() == 0


def test_a_failed_publish_leaves_nothing_behind(
    redis_client: redis.Redis, settings: Settings, cipher: Cipher
) -> None:
    # Given a broker nobody listens on
    with override_settings(
        broker_url="redis://127.0.0.1:1/0",
        result_backend_url=settings.result_backend_url,
        state_redis_url=settings.state_redis_url,
    ) as dead:
        app = create_app(dead)
        app.conf.broker_connection_retry = False
        app.conf.broker_transport_options = {"max_retries": 0}
        producer = Producer(redis=redis_client, publisher=app, settings=dead, cipher=cipher)
        message = ShortMessage(message="x", phone_numbers=["447400123456"], reference_id="r-1")
        # When enqueue fails to publish / Then the error surfaces and no job or reference stays,
        # so the producer can try again with the same reference
        with pytest.raises(OperationalError):
            producer.enqueue(message)
        app.close()
    assert redis_client.dbsize() == 0


def test_enqueue_many_pipelines_and_deduplicates(
    producer: Producer, redis_client: redis.Redis
) -> None:
    messages = [
        ShortMessage(
            message=f"reset {n}", phone_numbers=["447400123456"], reference_id=f"c-{n % 3}"
        )
        for n in range(6)
    ]
    ids = producer.enqueue_many(messages)
    assert len(ids) == 6 and len(set(ids)) == 3
    assert ids[:3] == ids[3:]
    # On the bulk lane the three new jobs travel in one batch task
    (message,) = queued(redis_client, "bulk")
    assert message["headers"]["task"] == "sms.send_batch"
    assert json.loads(base64.b64decode(message["body"]))[0] == [ids[:3]]


def test_enqueue_many_batches_by_the_configured_size(
    redis_client: redis.Redis, app: Celery, settings: Settings, cipher: Cipher
) -> None:
    with override_settings(
        state_redis_url=settings.state_redis_url, broker_url=settings.broker_url, bulk_batch_size=4
    ) as small:
        producer = Producer(redis=redis_client, publisher=app, settings=small, cipher=cipher)
        ids = producer.enqueue_many(
            [ShortMessage(message="x", phone_numbers=["447400123456"]) for _ in range(10)]
        )
    batches = [json.loads(base64.b64decode(m["body"]))[0][0] for m in queued(redis_client, "bulk")]
    assert sorted(len(batch) for batch in batches) == [2, 4, 4]
    assert sorted(job for batch in batches for job in batch) == sorted(ids)


def test_enqueue_many_off_the_bulk_lane_sends_one_task_per_job(
    producer: Producer, redis_client: redis.Redis
) -> None:
    producer.enqueue_many(
        [ShortMessage(message="x", phone_numbers=["447400123456"]) for _ in range(3)],
        lane="default",
    )
    assert [m["headers"]["task"] for m in queued(redis_client, "default")] == ["sms.send"] * 3
