"""Health checks against a real Redis: queue depth and age, dead Redis, failing accounts.

No worker runs here, so every lane has no consumer (found by a real broadcast that nobody
answers); the end-to-end module checks the same with real workers started and stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from celery import Celery
from click.testing import CliRunner
from redis.asyncio import Redis as AsyncRedis

from config.settings import Settings, override_settings
from gateways.errors import AccountRejected
from worker.account_status import AccountStatusRecorder
from worker.cli import main
from worker.cli_output import EXIT_OK, EXIT_UNAVAILABLE, EXIT_UNHEALTHY
from worker.crypto import Cipher, generate_key
from worker.health import check_health, read_lane
from worker.keys import account_statuses_key, accounts_key, job_key
from worker.models import ShortMessage
from worker.producer import SEND_TASK, Producer
from worker.redis_server import free_port

NUMBER = "+447700900123"


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis) -> Iterator[Settings]:
    """Broker, result backend and state store all on the (emptied) test database."""
    with override_settings(
        broker_url=redis_url,
        result_backend_url=redis_url,
        state_redis_url=redis_url,
        secret_key=generate_key(),
        health_timeout_s=0.3,
    ) as value:
        yield value


@pytest.fixture
def producer(settings: Settings, app: Celery, redis_url: str) -> Iterator[Producer]:
    client = redis.Redis.from_url(redis_url)
    assert settings.secret_key is not None
    cipher = Cipher([settings.secret_key.get_secret_value()])
    yield Producer(redis=client, publisher=app, settings=settings, cipher=cipher)
    client.close()


def backdate(client: redis.Redis, job_id: str, seconds: float) -> None:
    """Make a stored job look enqueued ``seconds`` ago."""
    record = json.loads(client.get(job_key(job_id)) or "{}")
    enqueued = datetime.now(UTC) - timedelta(seconds=seconds)
    record["enqueued_at"] = enqueued.isoformat()
    client.set(job_key(job_id), json.dumps(record), keepttl=True)


def message(text: str = "Your code is {code}") -> ShortMessage:
    return ShortMessage(message=text, access_code="482913", phone_numbers=[NUMBER])


def test_depth_and_age_come_from_the_queue_and_the_oldest_job(
    producer: Producer, redis_client: redis.Redis
) -> None:
    # Given two queued codes, the first enqueued 90 s ago, and garbage at the queue's tail
    first = producer.enqueue(message(), lane="otp")
    producer.enqueue(message(), lane="otp")
    backdate(redis_client, first, 90)
    redis_client.rpush("otp", "not a kombu message")
    now = datetime.now(UTC).timestamp()
    # When the lane is read / Then it counts all three and ages the oldest job
    depth, age = read_lane(redis_client, redis_client, "otp", now_s=now)
    assert depth == 3
    assert age is not None and 89 <= age <= 95
    assert read_lane(redis_client, redis_client, "default", now_s=now) == (0, None)


def test_a_bulk_batch_is_aged_by_its_first_job(
    producer: Producer, redis_client: redis.Redis
) -> None:
    jobs = producer.enqueue_many([message("Reset {code}") for _ in range(3)], lane="bulk")
    backdate(redis_client, jobs[0], 600)
    depth, age = read_lane(redis_client, redis_client, "bulk", now_s=datetime.now(UTC).timestamp())
    assert depth == 1  # one sms.send_batch message carries the three jobs
    assert age is not None and 599 <= age <= 605


def test_a_retried_message_waits_from_its_eta(
    producer: Producer, app: Celery, redis_client: redis.Redis
) -> None:
    # Given a job enqueued 300 s ago whose retry became due 20 s ago, still queued
    job_id = producer.enqueue(message(), lane="default")
    redis_client.delete("default")
    backdate(redis_client, job_id, 300)
    eta = datetime.now(UTC) - timedelta(seconds=20)
    app.send_task(SEND_TASK, args=[job_id], task_id=job_id, queue="default", eta=eta)
    # When the lane is read / Then it has waited since the eta, not since the enqueue
    _, age = read_lane(redis_client, redis_client, "default", now_s=datetime.now(UTC).timestamp())
    assert age is not None and 19 <= age <= 25


def test_red_for_an_old_job_and_for_jobs_nobody_consumes(
    settings: Settings, producer: Producer, redis_client: redis.Redis
) -> None:
    job_id = producer.enqueue(message(), lane="otp")
    backdate(redis_client, job_id, 45)  # above otp's 30 s
    report = check_health(settings)
    assert not report.ok
    failing = {(check.name, check.subject) for check in report.checks if not check.ok}
    assert failing == {("consumers", "otp"), ("queue_age", "otp")}
    assert any("waited 4" in reason and "more than 30s" in reason for reason in report.reasons)
    assert "lane otp: 1 queued message(s) and no worker consumes it" in report.reasons
    # And a lane threshold of its own turns the age check green again
    with override_settings(**{**_values(settings), "stall_after_s": {"otp": 120}}) as relaxed:
        report = check_health(relaxed)
    assert [check.name for check in report.checks if not check.ok] == ["consumers"]


def _values(settings: Settings) -> dict[str, object]:
    return {
        "broker_url": settings.broker_url.get_secret_value(),
        "result_backend_url": settings.result_backend_url.get_secret_value(),
        "state_redis_url": settings.state_redis_url.get_secret_value(),
        "health_timeout_s": settings.health_timeout_s,
    }


def test_green_when_nothing_is_queued(settings: Settings) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["health", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    payload = json.loads(result.output)
    assert payload["healthy"] is True and payload["reasons"] == []
    assert [lane["lane"] for lane in payload["lanes"]] == ["otp", "default", "bulk"]
    assert all(lane["consumers"] == [] for lane in payload["lanes"])


def test_red_with_exit_6_when_redis_does_not_answer(settings: Settings) -> None:
    # Given a broker URL where nothing listens (with a password that must not show)
    dead = f"redis://:dead-pw-81@127.0.0.1:{free_port()}/0"
    with override_settings(**{**_values(settings), "broker_url": dead}):
        result = CliRunner().invoke(main, ["health"])
        json_result = CliRunner().invoke(main, ["health", "--json"])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "Redis (broker) does not answer" in result.output
    assert "dead-pw-81" not in result.output + json_result.output
    payload = json.loads(json_result.output)
    assert payload["healthy"] is False
    assert [c["subject"] for c in payload["checks"] if not c["ok"]] == ["broker"]


async def test_an_account_refused_by_its_provider_is_red_until_a_send_goes_through(
    settings: Settings, redis_url: str
) -> None:
    client: AsyncRedis = AsyncRedis.from_url(redis_url, decode_responses=True)
    now = [time.time()]
    recorder = AccountStatusRecorder(client, clock=lambda: now[0])
    provisioned = [{"name": name, "gateway": "vonage"} for name in ("corp", "other")]
    overrides = override_settings(**{**_values(settings), "accounts": provisioned})
    settings = overrides.__enter__()
    try:
        # Given a provider that refused the account's credentials
        error = AccountRejected("vonage: bad credentials (Bad Credentials)", gateway="vonage")
        await recorder.failing("corp", error)
        await recorder.ok("other")
        report = check_health(settings, lanes=["otp"])
        # Then health is red for that account only, naming why
        assert [c.subject for c in report.checks if not c.ok] == ["corp"]
        [reason] = report.reasons
        assert "account corp is failing permanently" in reason
        assert "AccountRejected: vonage: bad credentials" in reason
        assert [(a.account, a.status) for a in report.accounts] == [
            ("corp", "failing"),
            ("other", "ok"),
        ]
        # And the next send that goes through turns it green at once
        await recorder.ok("corp")
        assert check_health(settings, lanes=["otp"]).ok
        # And further successes within the refresh period cost no write
        stamp = await client.hget(account_statuses_key(), "corp")
        now[0] += 5
        await recorder.ok("corp")
        assert await client.hget(account_statuses_key(), "corp") == stamp
        # And --skip-accounts leaves accounts out
        await recorder.failing("corp", error)
        assert not check_health(settings, lanes=["otp"]).ok
        assert check_health(settings, lanes=["otp"], accounts=False).ok
        result = CliRunner().invoke(main, ["health", "--lanes", "otp"])
        assert result.exit_code == EXIT_UNHEALTHY
        assert "account corp is failing permanently" in result.output
    finally:
        overrides.__exit__(None, None, None)
        await client.aclose()


async def test_verdicts_of_deleted_or_long_unused_accounts_are_ignored(
    settings: Settings, redis_url: str
) -> None:
    client: AsyncRedis = AsyncRedis.from_url(redis_url, decode_responses=True)
    week_s = 7 * 24 * 3600
    then = [time.time() - week_s - 60]
    recorder = AccountStatusRecorder(client, clock=lambda: then[0])
    error = AccountRejected("vonage: bad credentials (Bad Credentials)", gateway="vonage")
    try:
        # Given a stored account refused a week and a minute ago, and a refusal recorded
        # (just now) for an account that no longer exists
        await client.hset(accounts_key(), "old", "{}")
        await recorder.failing("old", error)
        then[0] = time.time()
        await recorder.failing("gone", error)
        # Then neither makes health red
        report = check_health(settings, lanes=["otp"])
        assert report.ok, report.reasons
        assert report.accounts == []
        # But a fresh refusal of the existing account does
        await recorder.failing("old", error)
        assert [c.subject for c in check_health(settings, lanes=["otp"]).checks if not c.ok] == [
            "old"
        ]
    finally:
        await client.aclose()


def test_a_bulk_backlog_can_be_left_out_of_health(
    settings: Settings, producer: Producer, redis_client: redis.Redis
) -> None:
    # Given a campaign whose oldest batch has waited two hours, with a worker on the lane
    [first, *_] = producer.enqueue_many([message("Reset {code}") for _ in range(3)], lane="bulk")
    backdate(redis_client, first, 7200)
    consumers = {"bulk": ["bulk@host"]}
    assert not check_health(settings, lanes=["bulk"], consumers=lambda _: consumers).ok
    # When queue age is skipped (the bulk worker's compose healthcheck)
    report = check_health(settings, lanes=["bulk"], queue_age=False, consumers=lambda _: consumers)
    # Then it is green, and the lane's age is still reported
    assert report.ok, report.reasons
    assert report.lanes[0].oldest_age_s is not None and report.lanes[0].oldest_age_s >= 7200
    # And `smsgw health --skip-queue-age` with no worker is red for the consumer only
    result = CliRunner().invoke(main, ["health", "--lanes", "bulk", "--skip-queue-age", "--json"])
    assert result.exit_code == EXIT_UNHEALTHY
    assert json.loads(result.output)["reasons"] == [
        "lane bulk: 1 queued message(s) and no worker consumes it"
    ]


def test_a_named_worker_that_does_not_answer_is_red(settings: Settings) -> None:
    report = check_health(settings, lanes=["bulk"], worker="bulk@nowhere", accounts=False)
    assert report.reasons == ["worker bulk@nowhere does not answer"]
    result = CliRunner().invoke(main, ["health", "--lanes", "nope"])
    assert result.exit_code == 2 and "unknown lane(s) nope" in result.output
