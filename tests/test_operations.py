"""Operations end to end: a real worker with JSON logs and its metrics port, real health.

One worker started as in production (``smsgw worker``: threads pool, here every lane, with
``SMSGW_LOG_FORMAT=json`` and ``SMSGW_METRICS_PORT``) serves the module; ``smsgw health``
runs as its own process, as a compose healthcheck does. The log test runs last so it reads
every line of the module.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from gateways.sandbox import Faults, SandboxAccount, SandboxServer
from tests.celery_harness import (
    MAIN_ACCOUNT,
    MAIN_KEY,
    MAIN_PASSWORD,
    SLOW_ACCOUNT,
    SLOW_PASSWORD,
    STATE_DB,
    WorkerProcess,
    e2e_redis,
    env_for,
    flush_stack_databases,
    sandbox_accounts,
    stack_values,
    wait_for,
)
from worker.app import create_app
from worker.cli_output import EXIT_OK, EXIT_UNAVAILABLE, EXIT_UNHEALTHY
from worker.crypto import Cipher, generate_key
from worker.delivery import PartRef
from worker.keys import campaign_key, job_key, parts_key
from worker.models import ShortMessage
from worker.producer import SEND_BATCH_TASK, SEND_TASK, Producer
from worker.redis_server import RedisServer, free_port

__all__ = ["e2e_redis"]  # the harness's session fixture, bound here for pytest

CODE = "Qv!8315k"
NUMBERS = [f"+4474009876{i:02d}" for i in range(1, 40)]
SECRETS = (CODE, MAIN_PASSWORD, SLOW_PASSWORD)
_CELERY_NOTICE = re.compile(r"worker: (Warm|Cold) shutdown \(MainProcess\)")


@dataclass
class Ops:
    """The module's stack."""

    settings: Settings
    env: dict[str, str]
    app: Celery
    producer: Producer
    state: redis.Redis
    worker: WorkerProcess
    metrics_port: int
    sandbox: SandboxServer

    def results(self, job_ids: list[str], timeout_s: float = 45.0) -> list[dict[str, Any]]:
        found = []
        for job_id in job_ids:
            value = AsyncResult(job_id, app=self.app).get(timeout=timeout_s, interval=0.05)
            assert isinstance(value, dict)
            found.append(value)
        return found

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert not any(secret in text for secret in SECRETS)
        assert not any(n.lstrip("+")[-10:] in text for n in NUMBERS)
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def health(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """``smsgw health --json ARGS`` in its own process: exit code and report."""
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "health", "--json", *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def ops_stack(
    e2e_redis: RedisServer, sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ops]:
    workdir = tmp_path_factory.mktemp("ops")
    key = generate_key()
    port = free_port()
    values = stack_values(e2e_redis, sandbox_server.url, key)
    values.update(log_format="json", metrics_port=port, health_timeout_s=0.5)
    env = env_for(values)
    settings = Settings(**values)
    worker = WorkerProcess(env=env, cwd=workdir, log_path=workdir / "worker.log")
    # The product's command (`smsgw worker`), which leaves Celery's banner out in JSON mode.
    worker.args = [
        sys.executable, "-m", "worker.cli", "worker", "--lanes", "otp,default,bulk",
        "--concurrency", "8", "--name", worker.node,
    ]  # fmt: skip
    app = create_app(settings)
    state = redis.Redis.from_url(e2e_redis.url(STATE_DB))
    ops = Ops(
        settings=settings,
        env=env,
        app=app,
        producer=Producer(redis=state, publisher=app, settings=settings, cipher=Cipher([key])),
        state=state,
        worker=worker,
        metrics_port=port,
        sandbox=sandbox_server,
    )
    try:
        worker.start()
        yield ops
    finally:
        worker.stop()
        state.close()
        with contextlib.suppress(Exception):
            app.close()
        flush_stack_databases(e2e_redis)


@pytest.fixture
def ops(ops_stack: Ops, sandbox: SandboxServer) -> Iterator[Ops]:
    if not ops_stack.worker.running:
        ops_stack.worker.start()
    sandbox.state.set_accounts(sandbox_accounts())
    ops_stack.state.flushdb()
    yield ops_stack
    ops_stack.state.flushdb()


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: dict[Any, float], name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbl), v in found.items() if n == name and wanted <= lbl)


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def stats(sandbox: SandboxServer, account: str) -> dict[str, Any]:
    for row in sandbox.state.stats():
        if row["provider"] == "vonage" and row["account"] == account:
            return row
    return {"requests": 0, "accepted": 0, "throttled": 0}


def backdate(state: redis.Redis, job_id: str, seconds: float) -> None:
    record = json.loads(state.get(job_key(job_id)) or "{}")
    record["enqueued_at"] = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
    state.set(job_key(job_id), json.dumps(record), keepttl=True)


def code(to: str) -> ShortMessage:
    return ShortMessage(message="Your code is {code}", access_code=CODE, phone_numbers=[to])


def test_metrics_after_a_small_run_match_the_results(ops: Ops) -> None:
    before = ops.scrape()
    # Given codes (one meets a provider 5xx first), a job with a refused recipient, jobs on
    # an account the provider throttles, and a bulk batch
    ops.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(error_next=1))
    otp = [ops.producer.enqueue(code(to), lane="otp") for to in NUMBERS[0:3]]
    mixed = ops.producer.enqueue(
        ShortMessage(message="Reset: {code}", access_code=CODE, phone_numbers=[NUMBERS[3], "12"]),
        lane="default",
    )
    slow = [
        ops.producer.enqueue(code(to), lane="default", account=SLOW_ACCOUNT) for to in NUMBERS[4:10]
    ]
    campaign = [ShortMessage(message=f"Campaign {n}", phone_numbers=[to]) for n, to in
                enumerate(NUMBERS[10:13])]  # fmt: skip
    bulk = ops.producer.enqueue_many(campaign, lane="bulk")
    results = ops.results([*otp, mixed, *slow, *bulk])
    # When the worker's endpoint is scraped
    after = ops.scrape()
    # Then jobs are counted by lane, gateway, account and final status
    assert all(r["success"] for r in results if r["job_id"] != mixed)
    common = {"gateway": "vonage"}
    assert delta(before, after, "smsgw_jobs_total", lane="otp", account="main", status="sent") == 3
    assert delta(before, after, "smsgw_jobs_total", lane="default", status="partial") == 1
    assert delta(before, after, "smsgw_jobs_total", account="slow", status="sent", **common) == 6
    assert delta(before, after, "smsgw_jobs_total", lane="bulk", status="sent") == 3
    assert delta(before, after, "smsgw_jobs_total") == len(results)
    # And parts: every accepted piece, nothing else (the refused number never became one)
    recipients = [r for result in results for r in result["recipients"]]
    sent_parts = sum(r["pieces"] for r in recipients if r["status"] == "sent")
    assert delta(before, after, "smsgw_parts_total", status="sent") == sent_parts
    assert delta(before, after, "smsgw_parts_total") == sent_parts
    # And one provider latency per provider call, one end-to-end latency per accepted part
    main, throttled = stats(ops.sandbox, MAIN_ACCOUNT), stats(ops.sandbox, SLOW_ACCOUNT)
    calls = main["requests"] + throttled["requests"]
    assert delta(before, after, "smsgw_provider_latency_seconds_count") == calls
    assert delta(before, after, "smsgw_end_to_end_latency_seconds_count") == sent_parts
    assert delta(before, after, "smsgw_end_to_end_latency_seconds_count", lane="bulk") == 3
    # And the cluster-wide limiter held the slow account's six codes back (2/s, by account)
    waits = delta(before, after, "smsgw_ratelimit_waits_total", account="slow", lane="default")
    assert waits >= 1
    assert delta(before, after, "smsgw_ratelimit_wait_seconds_total", account="slow") > 0
    # And provider throttles per account, and retries by error class
    assert throttled["throttled"] > 0, "the slow account was never throttled"
    assert (
        delta(before, after, "smsgw_provider_throttles_total", account="slow")
        == (throttled["throttled"])
    )
    assert (
        delta(before, after, "smsgw_retries_total", error_class="RateLimited")
        == (throttled["throttled"])
    )
    retried = sum(r["attempts"] - r["pieces"] for r in recipients if r["status"] == "sent")
    assert delta(before, after, "smsgw_retries_total") == retried
    assert retried == throttled["throttled"] + 1  # the throttles, and the one 5xx
    # And the scrape-time gauges: this worker consumes every lane
    for lane in ("otp", "default", "bulk"):
        assert value(after, "smsgw_lane_consumers", lane=lane) == 1


class _Held:
    """A publisher that keeps the tasks a producer would publish, to publish them later."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, Any, dict[str, Any]]] = []

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        self.tasks.append((name, args, options))


def test_a_retried_batch_and_a_job_delivered_again_are_counted_once(ops: Ops) -> None:
    before = ops.scrape()
    # Given a bulk batch of four jobs, one of which meets a Redis error (its campaign's
    # record has the wrong type) after the three others were sent: the batch is retried
    held = _Held()
    producer = Producer(
        redis=ops.state, publisher=held, settings=ops.settings,
        cipher=Cipher([ops.settings.secret_key.get_secret_value()]),  # type: ignore[union-attr]
    )  # fmt: skip
    numbers = NUMBERS[30:34]
    jobs = producer.enqueue_many(
        [ShortMessage(message=f"Reset {n}", phone_numbers=[to]) for n, to in enumerate(numbers)],
        lane="bulk",
    )
    [(name, args, options)] = held.tasks
    assert name == SEND_BATCH_TASK
    broken = json.loads(ops.state.get(job_key(jobs[0])) or "{}")
    ops.state.set(job_key(jobs[0]), json.dumps({**broken, "campaign": "c" * 32}), keepttl=True)
    ops.state.set(campaign_key("c" * 32), "not a hash")
    ops.app.send_task(name, args=args, **options)

    def sent(job_id: str, to: str) -> bool:
        return ops.state.hget(parts_key(job_id), f"{PartRef(to, 0).name}:s") == b"sent"

    wait_for(lambda: all(sent(j, to) for j, to in zip(jobs[1:], numbers[1:], strict=True)),
             timeout_s=30, what="the three good jobs sent")  # fmt: skip
    ops.state.set(job_key(jobs[0]), json.dumps(broken), keepttl=True)  # the retry succeeds
    results = ops.results(jobs)
    assert all(r["success"] for r in results)
    # And an otp job whose task is delivered a second time after it finished
    [otp] = [ops.producer.enqueue(code(NUMBERS[34]), lane="otp")]
    ops.results([otp])
    ops.app.send_task(SEND_TASK, args=[otp], task_id=otp, queue="otp")
    wait_for(lambda: ops.worker.log_text().count(f"sms.send[{otp}] succeeded") == 2,
             timeout_s=30, what="the second delivery to finish")  # fmt: skip
    # Then each job and each part is counted once
    after = ops.scrape()
    assert delta(before, after, "smsgw_retries_total", lane="bulk", error_class="ResponseError")
    assert delta(before, after, "smsgw_jobs_total", lane="bulk", status="sent") == 4
    assert delta(before, after, "smsgw_parts_total", lane="bulk", status="sent") == 4
    assert delta(before, after, "smsgw_jobs_total", lane="otp") == 1
    assert delta(before, after, "smsgw_parts_total", lane="otp") == 1


def test_jobs_refused_before_any_send_count_their_parts(ops: Ops) -> None:
    before = ops.scrape()
    # Given a job for an account that does not exist, and one too long for any gateway
    unknown = ops.producer.enqueue(code(NUMBERS[35]), lane="default", account="nobody")
    too_long = ops.producer.enqueue(
        ShortMessage(message="word " * 400 + "{code}", access_code=CODE, max_length=2000,
                     phone_numbers=[NUMBERS[36], NUMBERS[37]]),
        lane="default",
    )  # fmt: skip
    results = ops.results([unknown, too_long])
    assert [r["recipients"][0]["error_class"] for r in results] == ["NoAccount", "InvalidMessage"]
    # Then their recipients count as failed parts: under no account, and under the account
    after = ops.scrape()
    failed = {"lane": "default", "status": "failed_permanent", "gateway": "vonage"}
    assert delta(before, after, "smsgw_parts_total", account="none", status="failed_permanent") == 1
    assert delta(before, after, "smsgw_parts_total", account="main", **failed) == 2
    assert delta(before, after, "smsgw_jobs_total", account="main", **failed) == 1


def test_health_follows_the_lane_worker_and_the_age_of_queued_jobs(ops: Ops) -> None:
    # Given a running worker and nothing queued: green
    status, report = ops.health()
    assert status == EXIT_OK, report["reasons"]
    assert all(lane["consumers"] == [ops.worker.node] for lane in report["lanes"])
    status, report = ops.health("--lanes", "otp,default", "--worker", ops.worker.node)
    assert status == EXIT_OK, report["reasons"]
    # When the worker stops and a code is queued: red, no consumer
    ops.worker.stop()
    job_id = ops.producer.enqueue(code(NUMBERS[20]), lane="otp")
    status, report = ops.health()
    assert status == EXIT_UNHEALTHY
    assert report["reasons"] == ["lane otp: 1 queued message(s) and no worker consumes it"]
    status, report = ops.health("--lanes", "otp", "--worker", ops.worker.node)
    assert f"worker {ops.worker.node} does not answer" in report["reasons"]
    # And when that code has waited past the otp threshold: red for its age too
    backdate(ops.state, job_id, 45)
    status, report = ops.health()
    assert status == EXIT_UNHEALTHY
    assert any(re.match(r"lane otp: the oldest queued job has waited 4\d+s, more than 30s", r)
               for r in report["reasons"]), report["reasons"]  # fmt: skip
    [otp] = [lane for lane in report["lanes"] if lane["lane"] == "otp"]
    assert otp["depth"] == 1 and otp["oldest_age_s"] >= 45
    # When the worker is back, the code goes out and health is green again
    ops.worker.start()
    [result] = ops.results([job_id])
    assert result["success"] is True
    wait_for(lambda: ops.health()[0] == EXIT_OK, timeout_s=20, interval_s=0.5, what="green")


def test_health_red_for_a_message_held_by_a_killed_worker(ops: Ops) -> None:
    broker = redis.Redis.from_url(ops.settings.broker_url.get_secret_value())
    try:
        # Given a code whose retry is due in a minute, taken by the worker (it holds the
        # message until then), and the worker SIGKILLed: the message stays with the broker's
        # unacknowledged ones, the queue is empty
        held = _Held()
        cipher = Cipher([ops.settings.secret_key.get_secret_value()])  # type: ignore[union-attr]
        producer = Producer(redis=ops.state, publisher=held, settings=ops.settings, cipher=cipher)
        job_id = producer.enqueue(code(NUMBERS[38]), lane="otp")
        ops.app.send_task(SEND_TASK, args=[job_id], task_id=job_id, queue="otp", countdown=60)
        wait_for(lambda: broker.zcard("unacked_index") == 1 and broker.llen("otp") == 0,
                 timeout_s=20, what="the worker to take the message")  # fmt: skip
        ops.worker.kill()
        # When health runs with a grace of 3 s (retry countdown 1 s, task time limit 1 s,
        # otp threshold 1 s) instead of the default 1050 s
        short = {"SMSGW_MAX_RETRY_COUNTDOWN_S": "1", "SMSGW_TASK_TIME_LIMIT_S": "1",
                 "SMSGW_STALL_AFTER_S__OTP": "1"}  # fmt: skip
        env = {**ops.env, **short}
        wait_for(lambda: ops.health("--lanes", "otp", env=env)[0] != EXIT_OK,
                 timeout_s=20, interval_s=0.5, what="health to see the held message")  # fmt: skip
        # Then it is red for that lane, though nothing is queued
        status, report = ops.health("--lanes", "otp", env=env)
        assert status == EXIT_UNHEALTHY
        [reason] = report["reasons"]
        assert reason.startswith("lane otp: 1 message(s) taken by a worker"), reason
        [otp] = report["lanes"]
        assert otp["depth"] == 0 and otp["held_stalled"] == 1 and otp["held_oldest_s"] >= 3
    finally:
        broker.delete("unacked", "unacked_index")  # the lost message would come back in 6 h
        broker.close()


def test_a_send_is_recorded_when_metrics_cannot_be_written(
    ops: Ops, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given a worker whose metric files cannot be written (its PROMETHEUS_MULTIPROC_DIR
    # is gone, as a full or missing disk would make it)
    workdir = tmp_path_factory.mktemp("no-metrics")
    env = {k: v for k, v in ops.env.items() if k != "SMSGW_METRICS_PORT"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "gone")
    ops.worker.stop()
    worker = WorkerProcess(env=env, cwd=workdir, log_path=workdir / "worker.log")
    worker.args = [*ops.worker.args[:-1], worker.node.replace("e2e-", "e2e-nometrics-")]
    worker.node = worker.args[-1]
    try:
        worker.start()
        # When a code goes out
        before = stats(ops.sandbox, MAIN_ACCOUNT)["accepted"]
        [result] = ops.results([ops.producer.enqueue(code(NUMBERS[28]), lane="otp")])
        # Then it is recorded as sent, once, and the worker said why it counts nothing
        assert result["success"] is True, result
        assert result["recipients"][0]["status"] == "sent"
        assert stats(ops.sandbox, MAIN_ACCOUNT)["accepted"] == before + 1
        assert "metrics: cannot record (FileNotFoundError" in worker.log_text()
    finally:
        worker.stop()


def test_health_red_when_redis_does_not_answer(ops: Ops) -> None:
    env = {**ops.env, "SMSGW_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    status, report = ops.health(env=env)
    assert status == EXIT_UNAVAILABLE
    assert [c["subject"] for c in report["checks"] if not c["ok"]] == ["broker"]
    assert report["reasons"][0].startswith("Redis (broker) does not answer")


def test_an_account_the_provider_refuses_is_red_until_it_sends_again(ops: Ops) -> None:
    # Given the provider no longer accepts the main account's secret
    refused = SandboxAccount(
        provider="vonage", name=MAIN_ACCOUNT, user_id=MAIN_KEY, password="rotated-elsewhere"
    )
    ops.sandbox.state.set_accounts([refused, *sandbox_accounts()[1:]])
    [failed] = ops.results([ops.producer.enqueue(code(NUMBERS[25]), lane="otp")])
    assert failed["recipients"][0]["error_class"] == "AccountRejected"
    # Then health is red, naming the account and why
    status, report = ops.health()
    assert status == EXIT_UNHEALTHY
    [reason] = report["reasons"]
    assert reason.startswith("account main is failing permanently") and "AccountRejected" in reason
    assert not any(secret in json.dumps(report) for secret in SECRETS)
    failing = ops.scrape()
    assert value(failing, "smsgw_account_failing", account="main") == 1
    # When the secret is right again and a code goes through: green
    ops.sandbox.state.set_accounts(sandbox_accounts())
    [sent] = ops.results([ops.producer.enqueue(code(NUMBERS[26]), lane="otp")])
    assert sent["success"] is True
    status, report = ops.health()
    assert status == EXIT_OK, report["reasons"]


def test_worker_log_lines_are_json_with_job_and_lane_and_nothing_in_clear(ops: Ops) -> None:
    # Runs last: the log holds every line the worker wrote in this module.
    lines = [line for line in ops.worker.log_text().splitlines() if line.strip()]
    # Celery writes its shutdown notice straight to the process's stdout, not through logging
    # (our log lines go to stderr); the worker stopped and started again in this module.
    notices = [line for line in lines if _CELERY_NOTICE.fullmatch(line)]
    assert notices
    entries = [json.loads(line) for line in lines if line not in notices]  # every line parses
    assert len(entries) > 20
    assert {"time", "level", "logger", "message", "job_id", "lane"} <= set(entries[0])
    about_jobs = [e for e in entries if e["job_id"]]
    assert any(e["lane"] == "otp" for e in about_jobs)
    assert any("succeeded" in e["message"] for e in about_jobs)
    assert any(
        e["level"] == "INFO" and f"{ops.worker.node} ready." in e["message"] for e in entries
    )
    text = "\n".join(lines)
    for secret in SECRETS:
        assert secret not in text, "a secret is in the worker's log"
    for number in NUMBERS:
        digits = number.lstrip("+")
        assert not re.search(rf"(?<!\d){digits}(?!\d)", text), f"{number} in clear in the log"
