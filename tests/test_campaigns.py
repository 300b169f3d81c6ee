"""Campaign state, staging and publishing against a real Redis; the worker's side of a
campaign (pause, cancel, its own rate, outcomes) through the real dispatcher and sandbox."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from celery import Celery
from redis.asyncio import Redis

from config.settings import Settings, override_settings
from gateways.sandbox import SandboxServer
from worker.accounts import SettingsAccounts
from worker.app import create_app
from worker.campaign_enqueue import CampaignEnqueuer
from worker.campaign_file import RowChecker, Template
from worker.campaigns import (
    CampaignError,
    CampaignState,
    CampaignStore,
    Outcome,
    campaign_job_id,
    plan_rate,
)
from worker.crypto import Cipher, generate_key
from worker.dispatch import Dispatcher, Finished, RetryLater
from worker.jobs import JobRecord
from worker.keys import campaign_outcomes_key, job_key
from worker.models import DeliveryStatus

TEMPLATE = "Hi {name}, reset your password: {link} (code {code})"


def code_of(index: int) -> str:
    return f"Kq!{index:05d}z"  # distinctive: found anywhere it must not be, it is a leak


def number_of(index: int) -> str:
    return f"+4474009{index:05d}"


@pytest.fixture
def settings(redis_url: str, sandbox: SandboxServer) -> Iterator[Settings]:
    with override_settings(
        broker_url=redis_url,
        result_backend_url=redis_url,
        state_redis_url=redis_url,
        default_region=None,
        accounts=[
            {
                "name": "main",
                "gateway": "vonage",
                "url": sandbox.url,
                "user_id": "sandbox1",
                "password": "sandbox-secret",
                "sender": "smsgw",
                "rate_per_s": 100_000,
            }
        ],
        default_account="main",
        max_inline_wait_s=0.5,
        campaign_pause_poll_s=1.0,
    ) as value:
        yield value


@pytest.fixture
def cipher() -> Cipher:
    return Cipher([generate_key()])


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    celery = create_app(settings)
    yield celery
    celery.close()


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> CampaignStore:
    return CampaignStore(redis_client, ttl_s=settings.job_ttl_s)


@pytest.fixture
def enqueuer(
    store: CampaignStore, app: Celery, settings: Settings, cipher: Cipher
) -> CampaignEnqueuer:
    # Checked here, not in checker processes: the test process runs the sandbox's thread.
    return CampaignEnqueuer(store, app, settings, cipher, chunk_rows=10, checkers=0)


def row_checker(settings: Settings, template: str = TEMPLATE) -> RowChecker:
    return RowChecker(
        Template(template),
        max_length=160,
        max_parts=settings.max_parts,
        default_region=None,
        allowed_types=settings.allowed_number_types,
    )


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "link", "code"])
        writer.writerows(rows)
    return path


def recipients_file(tmp_path: Path, count: int) -> Path:
    return write_csv(
        tmp_path / "users.csv",
        [[number_of(i), f"User{i}", f"https://id.example/r/{i}", code_of(i)] for i in range(count)],
    )


def queued(redis_client: redis.Redis, lane: str) -> list[list[str]]:
    """The job-id lists of the batch tasks waiting in a lane's queue."""
    batches = []
    for raw in redis_client.lrange(lane, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "sms.send_batch"
        batches.append(json.loads(base64.b64decode(message["body"]))[0][0])
    return batches


def dump(redis_client: redis.Redis) -> str:
    """Every key and value of the database (kombu bodies decoded) as one text."""
    chunks: list[str] = []
    for key in redis_client.scan_iter(count=1000):
        chunks.append(key)
        kind = redis_client.type(key)
        values: list[str] = []
        if kind == "string":
            values = [redis_client.get(key) or ""]
        elif kind == "hash":
            values = [v for pair in redis_client.hgetall(key).items() for v in pair]
        elif kind == "list":
            values = redis_client.lrange(key, 0, -1)
        elif kind in ("set", "zset"):
            values = list(redis_client.zrange(key, 0, -1) if kind == "zset" else [])
            values += list(redis_client.smembers(key)) if kind == "set" else []
        for value in values:
            chunks.append(value)
            try:
                body = json.loads(value).get("body")
                chunks.append(base64.b64decode(body).decode())
            except (ValueError, AttributeError, TypeError):
                pass
    return "\n".join(chunks)


def start(
    store: CampaignStore, enqueuer: CampaignEnqueuer, settings: Settings, path: Path, **fields: str
) -> str:
    campaign, created = store.create(
        {"name": fields.pop("name", path.stem), "template": TEMPLATE, **fields}
    )
    assert created
    enqueuer.stage(campaign, row_checker(settings), path)
    enqueuer.publish(campaign.id)
    return campaign.id


# --- staging and publishing ----------------------------------------------------------------


def test_stage_and_publish_store_one_job_per_distinct_recipient(
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    cipher: Cipher,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # Given 25 rows: 21 distinct numbers (one repeated in another chunk, one twice in a
    # chunk, one as national digits of the same number), and 2 invalid rows
    rows = [[number_of(i), f"User{i}", f"https://id.example/r/{i}", code_of(i)] for i in range(21)]
    rows.insert(3, [number_of(0), "Again", "https://id.example/r/x", code_of(99)])
    rows.insert(15, [number_of(20).lstrip("+"), "Digits", "https://id.example/r/y", "1"])
    rows.insert(16, [number_of(20), "Twice", "https://id.example/r/z", "2"])
    rows.insert(7, ["12", "Bad", "https://id.example/r/b", "3"])
    rows.insert(9, [number_of(40), "", "https://id.example/r/c", "4"])
    path = write_csv(tmp_path / "c.csv", rows)
    # When staged and published
    campaign_id = start(store, enqueuer, settings, path)
    # Then each distinct recipient has one job, its code encrypted, in file order
    campaign = store.require(campaign_id)
    assert campaign.count("rows") == 26
    assert campaign.count("invalid") == 2
    assert campaign.count("duplicates") == 3
    assert campaign.count("recipients") == 21
    assert campaign.count("segments") == 21
    assert campaign.staged and campaign.enqueued
    ids = store.job_ids(campaign_id, 0, 100)
    order = dict.fromkeys("+" + r[0].lstrip("+") for r in rows if r[1] and len(r[0]) > 2)
    assert ids == [campaign_job_id(campaign_id, number) for number in order]
    first = JobRecord.model_validate_json(redis_client.get(job_key(ids[0])))
    assert first.campaign == campaign_id and first.lane == "bulk"
    message = first.short_message(cipher)
    assert message.phone_numbers == [number_of(0)]
    assert (
        message.render()
        == f"Hi User0, reset your password: https://id.example/r/0 (code {code_of(0)})"
    )
    # And the bulk queue holds them in batches of bulk_batch_size (ids only)
    batches = queued(redis_client, "bulk")
    assert [job for batch in batches for job in batch] == ids
    # And the refused rows are kept with their line and reason, the number masked
    invalid = list(store.invalid_rows(campaign_id))
    assert [(row["line"], row["reason"]) for row in invalid] == [
        (9, "phone number: too short"),
        (11, "{name}: the column 'name' is empty"),
    ]
    # And no code and no number in clear appears in any key, nor a code in any value
    text = dump(redis_client)
    assert all(code_of(i) not in text for i in range(100))
    assert all(number_of(i) not in "".join(redis_client.keys()) for i in range(41))


def test_an_interrupted_staging_resumes_without_loss_or_double_count(
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    path = recipients_file(tmp_path, 45)  # chunks of 10: five chunks
    campaign, _ = store.create({"name": "resume", "template": TEMPLATE})

    # Given a staging that dies right after storing (not committing) the third chunk
    def die_in_third_chunk(campaign_id: str, chunks: int, *args: Any, **kwargs: Any) -> bool:
        if chunks == 3:
            raise ConnectionError("the producer died")
        return original(campaign_id, chunks, *args, **kwargs)

    original = store.commit_chunk
    store.commit_chunk = die_in_third_chunk  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        enqueuer.stage(campaign, row_checker(settings), path)
    store.commit_chunk = original  # type: ignore[method-assign]
    assert store.require(campaign.id).count("chunks") == 2
    assert len(store.job_ids(campaign.id, 0, 100)) == 30  # the third chunk's jobs are stored
    # When start runs again
    progress = enqueuer.stage(store.require(campaign.id), row_checker(settings), path)
    enqueuer.publish(campaign.id)
    # Then the first two chunks were skipped, and every recipient is there exactly once
    assert (progress.skipped_chunks, progress.chunks) == (2, 3)
    resumed = store.require(campaign.id)
    assert resumed.count("recipients") == 45
    assert resumed.count("duplicates") == 0
    ids = store.job_ids(campaign.id, 0, 100)
    assert ids == [campaign_job_id(campaign.id, number_of(i)) for i in range(45)]
    assert sorted(j for batch in queued(redis_client, "bulk") for j in batch) == sorted(ids)


def test_an_interrupted_publish_resumes_at_its_cursor(
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    with override_settings(**{**settings.model_dump(), "bulk_batch_size": 5}) as small:
        path = recipients_file(tmp_path, 120)
        campaign, _ = store.create({"name": "publish", "template": TEMPLATE})
        enqueuer = CampaignEnqueuer(store, enqueuer._publisher, small, Cipher([generate_key()]))
        enqueuer.stage(campaign, row_checker(small), path)
        published: list[int] = []

        def stop_after_first(position: int) -> None:
            published.append(position)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            enqueuer.publish(campaign.id, on_batch=stop_after_first)
        assert store.require(campaign.id).count("published") == 50
        assert not store.require(campaign.id).enqueued

        assert enqueuer.publish(campaign.id) == 70

    assert store.require(campaign.id).enqueued
    jobs = [j for batch in queued(redis_client, "bulk") for j in batch]
    assert len(jobs) == len(set(jobs)) == 120


def test_state_machine(store: CampaignStore) -> None:
    campaign, _ = store.create({"name": "states", "template": TEMPLATE})

    assert store.transition(campaign.id, "pause") is CampaignState.PAUSED
    with pytest.raises(CampaignError, match=r"cannot pause .* it is paused"):
        store.transition(campaign.id, "pause")
    assert store.transition(campaign.id, "resume") is CampaignState.RUNNING
    with pytest.raises(CampaignError, match="cannot resume"):
        store.transition(campaign.id, "resume")
    assert store.transition(campaign.id, "cancel") is CampaignState.CANCELLED
    with pytest.raises(CampaignError, match="it is cancelled"):
        store.transition(campaign.id, "resume")
    with pytest.raises(CampaignError, match="no campaign"):
        store.transition("0" * 32, "pause")


def test_the_same_name_is_the_same_campaign(store: CampaignStore) -> None:
    first, created = store.create({"name": "weekly", "template": TEMPLATE})
    again, created_again = store.create({"name": "weekly", "template": "other"})

    assert created and not created_again
    assert again.id == first.id
    assert [c.id for c in store.all()] == [first.id]


def test_outcomes_count_once_and_finish_the_campaign(store: CampaignStore) -> None:
    campaign, _ = store.create({"name": "count", "template": TEMPLATE})
    store.redis.hset(f"sms:campaign:{campaign.id}", mapping={"recipients": 2})
    sent = Outcome("a" * 32, number_of(1), "sent", ["id-1"], 1, "")
    failed = Outcome("b" * 32, number_of(2), "failed_permanent", [], 0, "invalid number")
    store.mark_enqueued(campaign.id)

    assert store.record(campaign.id, sent)
    assert not store.record(campaign.id, sent)  # a redelivered job: counted once
    assert store.require(campaign.id).state is CampaignState.RUNNING
    assert store.record(campaign.id, failed)

    done = store.require(campaign.id)
    assert done.state is CampaignState.FINISHED
    assert done.summary()["sent"] == 1 and done.summary()["failed"] == 1
    assert done.count("done") == 2 and done.remaining == 0
    assert done.count("segments_sent") == 1
    assert done.fields["finished_at"]


def test_plan_rate() -> None:
    # No deadline: the account's bulk share, or --rate below it
    assert plan_rate(1000, bulk_rate_per_s=40).rate_per_s is None
    assert plan_rate(1000, bulk_rate_per_s=40, requested_per_s=10).rate_per_s == 10
    assert plan_rate(1000, bulk_rate_per_s=40, requested_per_s=100).rate_per_s is None
    # A deadline with time to spare paces the campaign to finish at ~80% of the window
    easy = plan_rate(1000, bulk_rate_per_s=40, seconds_left=1000)
    assert easy.reachable and easy.needed_per_s == 1
    assert easy.rate_per_s == pytest.approx(1.25)
    assert easy.duration_s == pytest.approx(800)
    # A deadline beyond the account's share is unreachable: the share is the pace
    hard = plan_rate(10_000, bulk_rate_per_s=40, seconds_left=100)
    assert hard.reachable is False and hard.rate_per_s is None
    assert hard.duration_s == pytest.approx(250)
    # ... and beyond --rate too
    assert (
        plan_rate(1000, bulk_rate_per_s=40, requested_per_s=5, seconds_left=100).reachable is False
    )


# --- the worker's side -----------------------------------------------------------------------


@pytest.fixture
async def dispatcher(
    async_redis: Redis,
    http_session: aiohttp.ClientSession,
    settings: Settings,
    cipher: Cipher,
) -> AsyncIterator[Dispatcher]:
    instance = Dispatcher(
        redis=async_redis,
        session=http_session,
        settings=settings,
        accounts=SettingsAccounts(settings),
        cipher=cipher,
    )
    yield instance
    await instance.aclose()


async def test_worker_holds_a_paused_campaign_and_cancels_a_cancelled_one(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 6))
    ids = store.job_ids(campaign_id, 0, 10)
    # Given a paused campaign: its jobs are held, nothing is sent, nothing is counted
    store.transition(campaign_id, "pause")
    held = await dispatcher.dispatch_many(ids[:3])
    assert all(isinstance(o, RetryLater) and o.held for _, o in held)
    assert sandbox.state.messages() == []
    assert store.require(campaign_id).count("done") == 0
    # When resumed, they go, each once, the code in the text
    store.transition(campaign_id, "resume")
    sent = await dispatcher.dispatch_many(ids[:3])
    assert all(isinstance(o, Finished) and o.result.success for _, o in sent)
    texts = sorted(m.text for m in sandbox.state.messages())
    assert texts == sorted(
        f"Hi User{i}, reset your password: https://id.example/r/{i} (code {code_of(i)})"
        for i in range(3)
    )
    # And when cancelled, the rest end cancelled, unsent
    store.transition(campaign_id, "cancel")
    cancelled = await dispatcher.dispatch_many(ids[3:])
    for _, outcome in cancelled:
        assert isinstance(outcome, Finished)
        [recipient] = outcome.result.recipients
        assert recipient.status is DeliveryStatus.CANCELLED
    assert len(sandbox.state.messages()) == 3
    # And a redelivered job counts once; the campaign finishes, still cancelled
    await dispatcher.dispatch_many(ids[:1])
    final = store.require(campaign_id)
    assert final.summary()["sent"] == 3 and final.summary()["cancelled"] == 3
    assert final.count("done") == 6
    assert final.state is CampaignState.CANCELLED and final.fields.get("finished_at")
    outcomes = dict(store.outcomes(campaign_id))
    assert outcomes[ids[0]] is not None and outcomes[ids[0]].provider_ids
    assert all(
        code_of(i) not in json.dumps(store.redis.hgetall(campaign_outcomes_key(campaign_id)))
        for i in range(6)
    )


async def test_a_campaign_rate_holds_jobs_beyond_it(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    # Given a campaign limited to 1 segment/s (a burst of 1), and 10 of its jobs at once
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 10))
    store.set_rate(campaign_id, 1.0)
    ids = store.job_ids(campaign_id, 0, 10)
    # When dispatched together
    outcomes = [o for _, o in await dispatcher.dispatch_many(ids)]
    # Then the ones beyond the rate (and beyond the 0.5 s inline wait) are held, unsent
    finished = [o for o in outcomes if isinstance(o, Finished)]
    held = [o for o in outcomes if isinstance(o, RetryLater)]
    assert 1 <= len(finished) <= 2
    assert all(o.held and o.reason == "campaign rate" for o in held)
    assert len(sandbox.state.messages()) == len(finished)
