"""Metrics: statuses, label safety, the scrape-time gauges from Redis, the alert rules.

The counters' values after a real worker run are checked end to end in
``test_operations.py``; here the exposition is produced in this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis as AsyncRedis

from config.settings import Settings, override_settings
from gateways.errors import RateLimited, TransientGatewayError
from worker import metrics
from worker.account_status import AccountStatusRecorder
from worker.app import create_app
from worker.cli import main
from worker.crypto import Cipher, generate_key
from worker.delivery import PartRef, PartState
from worker.keys import accounts_key, job_key
from worker.models import DeliveryStatus, RecipientResult, SendSmsMessageResult, ShortMessage
from worker.producer import Producer

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "examples" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "examples" / "prometheus" / "prometheus.yml"
NUMBER = "+447700900123"
OTHER = "+447700900456"


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis) -> Iterator[Settings]:
    with override_settings(
        broker_url=redis_url,
        result_backend_url=redis_url,
        state_redis_url=redis_url,
        secret_key=generate_key(),
        health_timeout_s=0.3,
    ) as value:
        yield value


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by Prometheus's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def result(*statuses: DeliveryStatus, success: bool | None = None) -> SendSmsMessageResult:
    recipients = [
        RecipientResult(phone_number=f"+4477009001{n:02d}", status=status)
        for n, status in enumerate(statuses)
    ]
    sent = all(status == DeliveryStatus.SENT for status in statuses)
    return SendSmsMessageResult(
        job_id="c" * 32,
        success=sent and bool(statuses) if success is None else success,
        message=ShortMessage(),
        recipients=recipients,
        lane="otp",
        gateway="vonage",
        account="main",
    )


@pytest.mark.parametrize(
    ("job", "status"),
    [
        (result(DeliveryStatus.SENT), "sent"),
        (result(DeliveryStatus.SENT, DeliveryStatus.FAILED_PERMANENT), "partial"),
        (result(DeliveryStatus.EXPIRED, DeliveryStatus.EXPIRED), "expired"),
        (result(DeliveryStatus.FAILED_EXHAUSTED), "failed_exhausted"),
        (result(success=False), "failed"),
    ],
)
def test_a_jobs_final_status(job: SendSmsMessageResult, status: str) -> None:
    assert metrics.job_status(job) == status


def test_parts_never_tried_take_their_recipients_status() -> None:
    # Given a recipient whose first of three pieces was refused (the others never tried)
    # and one whose pieces were all sent
    states = {
        PartRef(NUMBER, 0).name: PartState(DeliveryStatus.FAILED_PERMANENT),
        **{PartRef(OTHER, n).name: PartState(DeliveryStatus.SENT) for n in range(3)},
    }
    recipients = [
        RecipientResult(phone_number=NUMBER, status=DeliveryStatus.FAILED_PERMANENT),
        RecipientResult(phone_number=OTHER, status=DeliveryStatus.SENT),
    ]
    assert (
        metrics.part_statuses(states, recipients, 3)
        == [DeliveryStatus.FAILED_PERMANENT] * 3 + [DeliveryStatus.SENT] * 3
    )


def test_label_values_never_hold_a_number_or_a_secret(settings: Settings) -> None:
    # Given an account an operator named after a phone number, with a secret-looking name
    job = result(DeliveryStatus.SENT).model_copy(
        update={"account": "+447911123456", "gateway": "token=s3cret-v4lue"}
    )
    metrics.record_job(job)
    metrics.rate_limit_wait("+447911123456", "otp", 0.5)
    text = metrics.exposition(settings).decode()
    # Then the exposition shows them masked
    assert "7911123456" not in text and "s3cret-v4lue" not in text
    found = samples(text)
    masked = {"lane": "otp", "gateway": "token=***", "account": "+44******3456"}
    assert value(found, "smsgw_jobs_total", **masked, status="sent") >= 1


def test_queue_gauges_and_health_are_read_from_redis_at_scrape_time(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given an otp code queued 50 s ago and no worker
    app = create_app(settings)
    assert settings.secret_key is not None
    producer = Producer(
        redis=redis_client,
        publisher=app,
        settings=settings,
        cipher=Cipher([settings.secret_key.get_secret_value()]),
    )
    job_id = producer.enqueue(
        ShortMessage(message="Code {code}", access_code="123456", phone_numbers=[NUMBER]),
        lane="otp",
    )
    record = json.loads(redis_client.get(job_key(job_id)) or "{}")
    record["enqueued_at"] = (datetime.now(UTC) - timedelta(seconds=50)).isoformat()
    redis_client.set(job_key(job_id), json.dumps(record), keepttl=True)
    app.close()
    # When `smsgw metrics` prints the exposition
    output = CliRunner().invoke(main, ["metrics"])
    assert output.exit_code == 0, output.output
    found = samples(output.output)
    # Then the gauges show the lane's depth and age, no consumer, and the red checks
    assert value(found, "smsgw_queue_depth", lane="otp") == 1
    assert value(found, "smsgw_queue_depth", lane="bulk") == 0
    assert 49 <= value(found, "smsgw_queue_oldest_age_seconds", lane="otp") <= 55
    assert value(found, "smsgw_lane_consumers", lane="otp") == 0
    assert value(found, "smsgw_health_check_ok", check="queue_age", subject="otp") == 0
    assert value(found, "smsgw_health_check_ok", check="consumers", subject="otp") == 0
    assert value(found, "smsgw_health_check_ok", check="queue_age", subject="bulk") == 1
    assert ("smsgw_healthy", frozenset()) in found and found[("smsgw_healthy", frozenset())] == 0
    assert "7700900123" not in output.output


def test_the_scrape_gauges_are_cached_briefly() -> None:
    calls: list[Settings] = []

    def check(settings: Settings) -> Any:
        from worker.health import HealthReport

        calls.append(settings)
        return HealthReport()

    collector = metrics.OperationsCollector(Settings(), check=check, cache_s=60)
    list(collector.collect())
    list(collector.collect())
    assert len(calls) == 1


def _every_metric_once() -> None:
    metrics.record_job(result(DeliveryStatus.SENT))
    metrics.record_parts("otp", "vonage", "main", [DeliveryStatus.SENT])
    with metrics.provider_call("otp", "vonage"):
        pass
    metrics.observe_accepted("otp", datetime.now(UTC))
    metrics.rate_limit_wait("main", "otp", 0.1)
    metrics.throttled("main", "vonage")
    metrics.retry("otp", RateLimited("slow down", gateway="vonage", retry_after_s=1.0))
    metrics.retry("otp", TransientGatewayError("5xx", gateway="vonage"))


async def test_the_alert_rules_load_and_use_only_metrics_that_exist(
    settings: Settings, async_redis: AsyncRedis
) -> None:
    # Given the example rules
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert len(rules) >= 8
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
    # When every metric has at least one sample
    _every_metric_once()
    await async_redis.hset(accounts_key(), "main", "{}")  # a stored account (health reads names)
    await AccountStatusRecorder(async_redis).ok("main")
    exposed = {name for name, _ in samples(metrics.exposition(settings).decode())}
    # Then every smsgw metric a rule names is exposed
    named = {m for rule in rules for m in re.findall(r"\bsmsgw_[a-z_]+", rule["expr"])}
    assert named, "no rule uses an smsgw metric"
    assert named <= exposed, named - exposed
    assert {
        "smsgw_health_check_ok",
        "smsgw_queue_oldest_age_seconds",
        "smsgw_account_failing",
    } <= named
    # A bulk backlog is a ticket, never a page: the paging health rule leaves its age out
    [unhealthy] = [rule for rule in rules if rule["alert"] == "SmsgwUnhealthy"]
    assert "smsgw_healthy" not in unhealthy["expr"]
    assert (
        'unless on (check, subject) smsgw_health_check_ok{check="queue_age", subject="bulk"}'
        in (" ".join(unhealthy["expr"].split()))
    )


def test_the_example_scrape_config_targets_the_compose_workers_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == [ALERTS.name]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "smsgw"  # the job the alert rules' up{job="smsgw"} names
    assert 'job="smsgw"' in ALERTS.read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [
        f"{name}:{compose[name]['environment']['SMSGW_METRICS_PORT']}"
        for name in ("worker-otp", "worker-bulk")
    ]


_RECORD = """
import sys
from worker import metrics
from worker.models import SendSmsMessageResult, ShortMessage
result = SendSmsMessageResult(
    job_id="d" * 32, success=True, message=ShortMessage(), lane="bulk", gateway="vonage",
    account="main",
)
for _ in range(int(sys.argv[1])):
    metrics.record_job(result)
"""


def test_several_processes_add_up_in_multiprocess_mode(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    # Given two worker processes that counted 2 and 3 jobs into one PROMETHEUS_MULTIPROC_DIR
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "SMSGW_BROKER_URL": redis_url,
        "SMSGW_RESULT_BACKEND_URL": redis_url,
        "SMSGW_STATE_REDIS_URL": redis_url,
        "SMSGW_HEALTH_TIMEOUT_S": "0.3",
        "PYTHONPATH": str(ROOT),
    }
    for count in ("2", "3"):
        subprocess.run([sys.executable, "-c", _RECORD, count], env=env, check=True, timeout=60)
    # When a third process prints the exposition
    printed = subprocess.run(
        [sys.executable, "-m", "worker.cli", "metrics"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    # Then it shows their sum, beside the gauges read from Redis
    found = samples(printed)
    labels = {"lane": "bulk", "gateway": "vonage", "account": "main", "status": "sent"}
    assert value(found, "smsgw_jobs_total", **labels) == 5
    assert value(found, "smsgw_queue_depth", lane="otp") == 0
