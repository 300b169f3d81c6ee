"""End to end: producer -> Redis -> a real ``celery worker`` process -> the sandbox -> results.

One worker (threads pool, every lane) and one Flower serve the whole module; each test gets
a clean sandbox and state store. Only the crash test kills the worker and the expiry test
stops it. The secrets test runs last so its scan of the worker's log and Flower covers
every task of the module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis as AsyncRedis

from gateways.models import GatewayAccount
from gateways.sandbox import Faults
from gateways.sandbox.state import InboxMessage
from tests import celery_harness
from tests.celery_harness import (
    BROKER_DB,
    MAIN_ACCOUNT,
    MAIN_KEY,
    MAIN_PASSWORD,
    RESULT_DB,
    SENDER,
    SLOW_ACCOUNT,
    SLOW_PASSWORD,
    STATE_DB,
    E2EStack,
    wait_for,
)
from tests.harness import database_text
from worker.account_store import AccountStore
from worker.crypto import Cipher
from worker.models import ShortMessage

T = TypeVar("T")

# The harness's fixtures, bound here so pytest finds them for this module.
e2e_redis = celery_harness.e2e_redis
e2e_stack = celery_harness.e2e_stack
e2e = celery_harness.e2e

# A code with a character no hex id, base64 blob or Fernet token holds, so finding it
# anywhere is a leak and never a coincidence.
CODE = "Zx!4729q"
NUMBERS = [f"+4474001234{i:02d}" for i in range(1, 60)]
SENT = "sent"
UNKNOWN = "unknown"


def inbox(e2e: E2EStack, account: str = MAIN_ACCOUNT) -> list[InboxMessage]:
    """The sandbox's accepted messages for one of the e2e accounts, oldest first."""
    return [m for m in e2e.sandbox.state.messages(provider="vonage") if m.account == account]


def counters(e2e: E2EStack, account: str) -> dict[str, Any]:
    """The sandbox's request counters for one account (zeros when it saw nothing)."""
    for row in e2e.sandbox.state.stats():
        if row["provider"] == "vonage" and row["account"] == account:
            return row
    return {"requests": 0, "accepted": 0, "throttled": 0, "auth_failures": 0, "faults": 0}


def by_number(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The result's recipients by phone number."""
    return {r["phone_number"]: r for r in result["recipients"]}


def retried(e2e: E2EStack, job_id: str) -> bool:
    """Whether the worker's log shows the job's task being retried."""
    return f"sms.send[{job_id}] retry" in e2e.worker.log_text()


def test_code_delivered_end_to_end(e2e: E2EStack) -> None:
    to = NUMBERS[0]
    job_id = e2e.producer.enqueue(
        ShortMessage(message="Your sign-in code is {code}", access_code=CODE, phone_numbers=[to]),
        lane="otp",
    )

    result = e2e.result(job_id)

    assert result["job_id"] == job_id
    assert result["success"] is True
    assert result["exception_message"] is None
    assert (result["lane"], result["gateway"], result["account"]) == ("otp", "vonage", "main")
    assert result["message"]["access_code"] == "**********"
    [recipient] = result["recipients"]
    [message] = inbox(e2e)
    assert message.to == to.lstrip("+")
    assert message.text == f"Your sign-in code is {CODE}"
    assert message.sender == SENDER
    assert recipient["phone_number"] == to
    assert recipient["status"] == SENT
    assert recipient["provider_message_ids"] == message.message_ids
    assert (recipient["pieces"], recipient["segments"], recipient["attempts"]) == (1, 1, 1)
    assert e2e.task_state(job_id) == "SUCCESS"


def test_long_ucs2_message_split_and_recorded_per_piece(e2e: E2EStack) -> None:
    text = "Код: {code}. " + "Здравствуйте! Ваш запрос на сброс пароля принят. " * 4  # noqa: RUF001
    recipients = NUMBERS[1:3]
    job_id = e2e.producer.enqueue(
        ShortMessage(message=text, access_code=CODE, phone_numbers=recipients, max_length=70),
        lane="default",
    )

    result = e2e.result(job_id)

    assert result["success"] is True, result["exception_message"]
    rendered = text.replace("{code}", CODE)
    for to, recipient in by_number(result).items():
        received = [m for m in inbox(e2e) if m.to == to.lstrip("+")]
        assert len(received) >= 3
        assert " ".join(m.text for m in received) == rendered.strip()
        assert all(m.encoding == "UCS-2" and len(m.text) <= 70 for m in received)
        assert recipient["status"] == SENT
        assert recipient["pieces"] == len(received)
        assert recipient["segments"] == sum(m.segments for m in received) == len(received)
        assert recipient["provider_message_ids"] == [i for m in received for i in m.message_ids]
    parts = [p for p in e2e.part_statuses() if p[0] == job_id]
    pieces = result["recipients"][0]["pieces"]
    expected = [(job_id, piece, SENT) for piece in range(pieces)] * len(recipients)
    assert sorted(parts) == sorted(expected)


def test_invalid_recipients_fail_with_reasons_and_valid_ones_go(e2e: E2EStack) -> None:
    good, barred, also_good = NUMBERS[3], NUMBERS[4], NUMBERS[5]
    landline = "+44 20 7946 0000"
    e2e.sandbox.state.set_faults(
        "vonage", MAIN_ACCOUNT, Faults(number_errors={barred.lstrip("+"): "7"})
    )
    job_id = e2e.producer.enqueue(
        ShortMessage(
            message="Your reset code: {code}",
            access_code=CODE,
            phone_numbers=[good, "12", landline, barred, also_good],
        ),
        lane="default",
    )

    result = e2e.result(job_id)

    assert result["success"] is False
    assert "3 of 5 recipient(s) not sent" in result["exception_message"]
    recipients = by_number(result)
    assert recipients[good]["status"] == recipients[also_good]["status"] == SENT
    assert recipients[barred]["status"] == "failed_permanent"
    assert recipients[barred]["error_class"] == "RecipientRejected"
    assert "barred" in recipients[barred]["reason"]
    refused = [r for r in result["recipients"] if r["error_class"] == "InvalidRecipient"]
    assert len(refused) == 2
    assert all(r["status"] == "failed_permanent" for r in refused)
    reasons = " | ".join(r["reason"] for r in refused)
    assert "too short" in reasons
    assert "fixed-line" in reasons
    assert all("20 7946 0000" not in r["phone_number"] for r in refused)  # masked
    assert sorted(m.to for m in inbox(e2e)) == sorted(n.lstrip("+") for n in (good, also_good))
    assert counters(e2e, MAIN_ACCOUNT)["requests"] == 3  # the barred number tried once
    assert not retried(e2e, job_id)


def test_transient_faults_then_one_message_per_part(e2e: E2EStack) -> None:
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(error_next=3))
    recipients = NUMBERS[6:8]
    text = "Your password was reset. If this was not you, call the helpdesk. Code {code}"
    job_id = e2e.producer.enqueue(
        ShortMessage(message=text, access_code=CODE, phone_numbers=recipients, max_length=50),
        lane="default",
    )

    result = e2e.result(job_id)

    assert result["success"] is True, result["exception_message"]
    received = inbox(e2e)
    pieces = result["recipients"][0]["pieces"]
    assert pieces == 2
    assert len(received) == len(recipients) * pieces
    assert set(Counter((m.to, m.text) for m in received).values()) == {1}
    assert {m.to for m in received} == {n.lstrip("+") for n in recipients}
    # Every provider call is one attempt: 4 parts sent, 3 refused with a 5xx on the way.
    assert sum(r["attempts"] for r in result["recipients"]) == 4 + 3
    assert counters(e2e, MAIN_ACCOUNT)["faults"] == 3
    assert retried(e2e, job_id)


def test_provider_throttling_is_honoured(e2e: E2EStack) -> None:
    jobs = 6
    recipients = NUMBERS[8 : 8 + jobs]
    job_ids = e2e.producer.enqueue_many(
        [
            ShortMessage(message=f"Campaign notice {i}", phone_numbers=[n])
            for i, n in enumerate(recipients)
        ],
        lane="default",
        account=SLOW_ACCOUNT,
    )

    results = e2e.results(job_ids, timeout_s=60)

    assert len(set(job_ids)) == jobs
    assert all(r["success"] for r in results), [r["exception_message"] for r in results]
    assert all(r["account"] == SLOW_ACCOUNT for r in results)
    received = inbox(e2e, SLOW_ACCOUNT)
    assert sorted(m.text for m in received) == sorted(f"Campaign notice {i}" for i in range(jobs))
    stats = counters(e2e, SLOW_ACCOUNT)
    assert stats["accepted"] == jobs
    assert stats["requests"] == stats["accepted"] + stats["throttled"]
    # The sandbox allows 2/s against a worker limit of 30/s: it must have said "slow down".
    # Each reply pauses the whole account until the provider's hint (when it has a token
    # again); at worst one waiting job gets through per pause: 5 + 4 + ... + 1 replies.
    # A worker retrying on its own backoff, blind to the hint, would hammer it far more.
    assert 1 <= stats["throttled"] <= jobs * (jobs - 1) // 2
    assert any(r["recipients"][0]["attempts"] > 1 for r in results)
    assert any(retried(e2e, job_id) for job_id in job_ids)
    assert "throttled" in e2e.worker.log_text()


def test_expired_job_is_never_sent(e2e: E2EStack) -> None:
    to = NUMBERS[14]
    e2e.worker.stop()
    try:
        job_id = e2e.producer.enqueue(
            ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[to]),
            lane="otp",
            ttl_s=1,
        )
        time.sleep(1.5)  # past the ttl before any worker sees the job
    finally:
        e2e.worker.start()

    result = e2e.result(job_id)

    assert result["success"] is False
    [recipient] = result["recipients"]
    assert recipient["status"] == "expired"
    assert recipient["attempts"] == 0
    assert "expired" in recipient["reason"]
    assert inbox(e2e) == []
    assert counters(e2e, MAIN_ACCOUNT)["requests"] == 0


def test_same_reference_twice_is_one_job_and_one_message(e2e: E2EStack) -> None:
    to = NUMBERS[15]
    message = ShortMessage(
        message="Code {code}", access_code=CODE, phone_numbers=[to], reference_id="login-4711"
    )
    first = e2e.producer.enqueue(message, lane="otp")
    second = e2e.producer.enqueue(message, lane="otp")
    assert second == first

    result = e2e.result(first)
    third = e2e.producer.enqueue(message, lane="otp")
    # A later job on the same lane: once it is done, anything published before it was seen.
    marker = e2e.producer.enqueue(
        ShortMessage(message="marker", phone_numbers=[NUMBERS[16]]), lane="otp"
    )
    e2e.result(marker)

    assert third == first
    assert result["success"] is True
    assert [m.to for m in inbox(e2e)].count(to.lstrip("+")) == 1


def _kill_test_jobs(e2e: E2EStack) -> list[str]:
    text = "Your password reset code is {code}. It expires in ten minutes."
    jobs = []
    for index in range(9):  # more jobs than worker threads: some wait in the queue
        numbers = NUMBERS[17 + index * 3 : 17 + index * 3 + 3]
        jobs.append(
            e2e.producer.enqueue(
                ShortMessage(message=text, access_code=CODE, phone_numbers=numbers, max_length=40),
                lane="default",
            )
        )
    return jobs


def test_worker_killed_mid_job_never_double_sends(e2e: E2EStack) -> None:
    # Provider calls take 1-1.8 s, so a kill lands while sends are in flight; the first
    # three calls fail (5xx), so some parts wait to be retried when the worker dies.
    faults = Faults(latency_ms=1000, latency_jitter_ms=800, error_next=3)
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, faults)
    job_ids = _kill_test_jobs(e2e)

    def second_pieces_in_flight() -> bool:
        parts = e2e.part_statuses()
        return sum(1 for _, piece, status in parts if piece == 1 and status == "sending") >= 4

    wait_for(second_pieces_in_flight, timeout_s=30, what="second pieces to be in flight")
    e2e.worker.kill()
    # Mid-flight: queued and unacked messages (bodies decoded), jobs, open parts.
    assert_no_secrets_in_redis(e2e, must_find=f'[["{job_ids[-1]}"]')
    e2e.sandbox.state.clear_faults()
    # Stand-in for waiting out the visibility timeout: age what the dead worker held.
    assert e2e.age_unacked(e2e.settings.visibility_timeout_s + 5) >= 1
    e2e.worker.start()

    results = e2e.results(job_ids, timeout_s=60)

    recipients = [r for result in results for r in result["recipients"]]
    assert {r["status"] for r in recipients} <= {SENT, UNKNOWN}
    assert all(e2e.task_state(job_id) == "SUCCESS" for job_id in job_ids)
    unknown = [r for r in recipients if r["status"] == UNKNOWN]
    assert all(r["error_class"] == "LostOutcome" for r in unknown)
    # A piece sent before the crash was kept (its id is recorded), the next one not re-sent ...
    assert any(r["provider_message_ids"] for r in unknown)
    # ... and a part that failed before the crash was sent after it.
    assert any(r["status"] == SENT and r["attempts"] > r["pieces"] for r in recipients)

    def sandbox_idle() -> bool:  # the calls in flight at the kill have landed
        stats = counters(e2e, MAIN_ACCOUNT)
        return bool(stats["requests"] == stats["accepted"] + stats["faults"])

    wait_for(sandbox_idle, timeout_s=10, what="the sandbox to answer every call")
    received = Counter((m.to, m.text) for m in inbox(e2e))
    assert {k: n for k, n in received.items() if n > 1} == {}
    for recipient in recipients:
        to = recipient["phone_number"].lstrip("+")
        landed = sum(n for (number, _), n in received.items() if number == to)
        if recipient["status"] == SENT:
            assert landed == recipient["pieces"] == 2
        else:  # lost outcomes may or may not have reached the provider, at most once each
            assert landed <= 2


def test_a_send_lost_in_a_crash_stays_unknown_after_the_job_expires(e2e: E2EStack) -> None:
    # The call is in flight when the worker dies and the job's ttl runs out before the
    # redelivery: the provider may well have taken it, so "expired, never sent" is wrong.
    to = NUMBERS[47]
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(latency_ms=2500))
    enqueued = time.monotonic()
    job_id = e2e.producer.enqueue(
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[to]),
        lane="otp",
        ttl_s=2,
    )
    wait_for(
        lambda: any(status == "sending" for _, _, status in e2e.part_statuses()),
        timeout_s=10,
        what="the send to be in flight",
    )
    e2e.worker.kill()
    e2e.sandbox.state.clear_faults()
    time.sleep(max(0.0, enqueued + 2.5 - time.monotonic()))  # past the ttl
    assert e2e.age_unacked(e2e.settings.visibility_timeout_s + 5) == 1
    e2e.worker.start()

    result = e2e.result(job_id)

    wait_for(lambda: len(inbox(e2e)) == 1, timeout_s=10, what="the lost call to land")
    [recipient] = result["recipients"]
    assert recipient["status"] == UNKNOWN, recipient
    assert recipient["error_class"] == "LostOutcome"


def test_malformed_payloads_fail_with_a_reason_and_are_not_retried(e2e: E2EStack) -> None:
    garbage = e2e.app.send_task("sms.send", args=[{"x": 1}, 2], queue="default")
    unknown_id = uuid.uuid4().hex
    unknown = e2e.app.send_task("sms.send", args=[unknown_id], task_id=unknown_id, queue="otp")

    garbage_result = garbage.get(timeout=30)
    unknown_result = unknown.get(timeout=30)

    assert garbage_result["success"] is False
    assert "malformed task payload" in garbage_result["exception_message"]
    assert "dict" in garbage_result["exception_message"]
    assert garbage_result["recipients"] == []
    assert unknown_result["success"] is False
    assert unknown_result["job_id"] == unknown_id
    assert "job not found" in unknown_result["exception_message"]
    assert garbage.state == unknown.state == "SUCCESS"
    assert not retried(e2e, garbage.id)
    assert not retried(e2e, unknown_id)
    assert counters(e2e, MAIN_ACCOUNT)["requests"] == 0


def test_garbage_on_a_queue_is_recorded_and_the_worker_keeps_running(e2e: E2EStack) -> None:
    assert e2e.worker.process is not None
    pid = e2e.worker.process.pid
    broker = e2e.db(BROKER_DB)
    not_a_task = {
        "body": base64.b64encode(b'{"x": 1}').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "bulk", "routing_key": "bulk"},
            "delivery_tag": uuid.uuid4().hex,
            "priority": 0,
        },
    }
    garbage: list[bytes | str] = [
        b"not json at all",
        json.dumps({"garbage": True}),
        json.dumps(not_a_task),
    ]
    for item in garbage:  # someone writes to a lane's list by hand
        broker.lpush("bulk", item)
    # Behind the garbage on the same queue: consumed only if the worker got past it.
    job_id = e2e.producer.enqueue(
        ShortMessage(message="after the garbage", phone_numbers=[NUMBERS[45]]), lane="bulk"
    )

    def settled() -> bool:
        return not e2e.worker.running or e2e.task_state(job_id) == "SUCCESS"

    try:
        wait_for(settled, timeout_s=30, what="the job behind the garbage")
        assert e2e.worker.running, f"the worker died:\n{e2e.worker.recent_log()[-1500:]}"
    finally:
        if not e2e.worker.running:
            broker.delete("bulk")  # leave no garbage for the next test's worker
    assert e2e.worker.process.pid == pid
    assert e2e.result(job_id)["success"] is True
    rejected = e2e.state.lrange("sms:rejected", 0, -1)
    assert len(rejected) == len(garbage), rejected


# --- accounts from the account store ------------------------------------------------------


def change_accounts(e2e: E2EStack, work: Callable[[AccountStore], Awaitable[T]]) -> T:
    """Run ``work`` against the account store the worker reads (as ``smsgw accounts`` does)."""
    assert e2e.settings.secret_key is not None
    cipher = Cipher([e2e.settings.secret_key.get_secret_value()])

    async def main() -> T:
        client = AsyncRedis.from_url(e2e.redis_server.url(STATE_DB), decode_responses=True)
        try:
            return await work(AccountStore(client, e2e.settings, cipher))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_modified_account_is_used_without_a_restart(e2e: E2EStack) -> None:
    # Given a stored account linked to an identity store, and a running worker
    assert e2e.worker.process is not None
    pid = e2e.worker.process.pid
    stored = GatewayAccount(
        name="stored", gateway="vonage", url=e2e.sandbox.url, user_id=MAIN_KEY,
        password=MAIN_PASSWORD, sender="first",
    )  # fmt: skip

    async def create(store: AccountStore) -> None:
        await store.create(stored)
        await store.create_store("tenant", account="stored")

    change_accounts(e2e, create)
    message = ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[NUMBERS[52]])
    first = e2e.result(e2e.producer.enqueue(message, lane="otp", identity_store="tenant"))
    assert (first["success"], first["account"]) == (True, "stored"), first

    # When the account's sender is modified
    async def modify(store: AccountStore) -> None:
        await store.modify("stored", {"sender": "second"})

    change_accounts(e2e, modify)
    time.sleep(1.2)  # the worker re-checks the store's version at most every second
    second = e2e.result(e2e.producer.enqueue(message, lane="otp", identity_store="tenant"))

    # Then the same worker process sent through the modified account
    assert second["success"] is True, second
    assert [m.sender for m in inbox(e2e)] == ["first", "second"]
    assert e2e.worker.running and e2e.worker.process.pid == pid
    # And the stored password is nowhere in Redis in clear
    assert_no_secrets_in_redis(e2e, must_find="stored")


# --- secrets -------------------------------------------------------------------------------


def redis_dump(e2e: E2EStack) -> str:
    """Every key and value of the three databases, with kombu message bodies decoded."""
    return "\n".join(
        database_text(e2e.redis_server.url(n)) for n in (BROKER_DB, RESULT_DB, STATE_DB)
    )


def assert_no_secrets_in_redis(e2e: E2EStack, must_find: str | None = None) -> None:
    """No access code and no account password in any key or value.

    Args:
        e2e: The stack.
        must_find: Text the dump must hold, proving the scan sees what it should.
    """
    dump = redis_dump(e2e)
    assert dump, "nothing to scan"
    if must_find is not None:
        assert must_find in dump
    for secret in (CODE, MAIN_PASSWORD, SLOW_PASSWORD):
        assert secret not in dump, "a secret is stored in Redis"


def test_secrets_absent_from_redis_logs_and_flower(e2e: E2EStack) -> None:
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(error_next=1))
    ok = e2e.producer.enqueue(
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[NUMBERS[50]]),
        lane="otp",
    )
    mixed = e2e.producer.enqueue(
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[NUMBERS[51], "12"]),
        lane="default",
    )
    e2e.results([ok, mixed])
    assert retried(e2e, ok) or retried(e2e, mixed)  # a retry's events went to Flower too

    assert_no_secrets_in_redis(e2e, must_find=f"celery-task-meta-{mixed}")

    log = e2e.worker.log_text()
    assert "succeeded" in log
    for secret in (CODE, MAIN_PASSWORD, SLOW_PASSWORD):
        assert secret not in log, "a secret is in the worker's log"
    for number in NUMBERS:
        digits = number.lstrip("+")
        assert not re.search(rf"(?<!\d){digits}(?!\d)", log), f"{number} in clear in the log"
    assert "7946 0000" not in log  # a refused landline, as typed
    flower_log = e2e.flower.log_text()
    for secret in (CODE, MAIN_PASSWORD, SLOW_PASSWORD):
        assert secret not in flower_log, "a secret is in Flower's log"

    def flower_saw_both() -> bool:
        status, body = e2e.flower.get("/api/tasks")
        tasks = json.loads(body) if status == 200 else {}
        return all(tasks.get(j, {}).get("state") == "SUCCESS" for j in (ok, mixed))

    wait_for(flower_saw_both, timeout_s=30, interval_s=0.3, what="Flower to see the tasks")
    status, body = e2e.flower.get("/api/tasks")
    assert status == 200
    tasks = json.loads(body)
    text = body.decode()
    # Nor a number: task-succeeded events carry a summary, not the result record
    assert tasks[ok]["result"] == "<result success=True>"
    for number in NUMBERS:
        assert number.lstrip("+")[-10:] not in text, f"{number} in clear in Flower's API"
    assert len(tasks) >= 10  # every task of the module, retries included
    for secret in (CODE, MAIN_PASSWORD, SLOW_PASSWORD):
        assert secret not in text, "a secret is in Flower's API"
    assert e2e.flower.get("/api/tasks", auth=False)[0] == 401


def test_bulk_batches_give_every_job_its_own_result(e2e: E2EStack) -> None:
    # Given a bulk campaign of 12 jobs (one batch task) where the provider's first
    # answer is a 5xx
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(error_next=1))
    numbers = NUMBERS[46:58]
    job_ids = e2e.producer.enqueue_many(
        [
            ShortMessage(message=f"Reset link {n}", phone_numbers=[to])
            for n, to in enumerate(numbers)
        ],
        lane="bulk",
    )
    # When the worker drains it
    results = e2e.results(job_ids)
    # Then every job has its own final result under its own id, all sent, each once
    assert [r["job_id"] for r in results] == job_ids
    assert all(r["success"] for r in results), [r["exception_message"] for r in results]
    assert sorted(m.to for m in inbox(e2e)) == sorted(n.lstrip("+") for n in numbers)
    assert all(e2e.task_state(job_id) == "SUCCESS" for job_id in job_ids)
    # And the job that met the 5xx went on alone, as its own task under its own id
    assert sum(r["recipients"][0]["attempts"] for r in results) == len(numbers) + 1
    log = e2e.worker.log_text()
    assert sum(f"sms.send[{job_id}]" in log for job_id in job_ids) == 1
    assert "sms.send_batch[" in e2e.worker.log_text()
