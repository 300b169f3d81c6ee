"""Campaign state, staging and publishing against a real Redis; the worker's side of a
campaign (pause, cancel, its own rate, outcomes) through the real dispatcher and sandbox."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from celery import Celery
from redis.asyncio import Redis

from config.settings import Settings, override_settings
from gateways.sandbox import Faults, SandboxServer
from tests.harness import database_text
from worker.accounts import SettingsAccounts
from worker.campaign_enqueue import CampaignEnqueuer
from worker.campaign_file import RowChecker, Template
from worker.campaigns import (
    CampaignError,
    CampaignGate,
    CampaignState,
    CampaignStore,
    Outcome,
    campaign_job_id,
    plan_rate,
)
from worker.crypto import Cipher, generate_key
from worker.dispatch import Dispatcher, Finished, RetryLater
from worker.jobs import JobRecord
from worker.keys import (
    campaign_invalid_key,
    campaign_jobs_key,
    campaign_key,
    campaign_name_key,
    campaign_outcomes_key,
    campaign_publish_lock_key,
    campaign_ratelimit_account,
    campaign_seen_key,
    job_key,
    parts_key,
    ratelimit_key,
)
from worker.models import DeliveryStatus
from worker.ratelimit import RateLimiter
from worker.results import job_failure

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
    redis_url: str,
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
    text = database_text(redis_url)
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
    assert all(o.held and o.reason.startswith("rate limit of its campaign") for o in held)
    assert len(sandbox.state.messages()) == len(finished)


async def test_outcomes_count_once_and_finish_the_campaign(
    async_redis: Redis, store: CampaignStore, settings: Settings
) -> None:
    # The worker's recorder, as dispatch uses it
    gate = CampaignGate(async_redis, ttl_s=settings.job_ttl_s)
    campaign, _ = store.create({"name": "count", "template": TEMPLATE})
    store.redis.hset(f"sms:campaign:{campaign.id}", mapping={"recipients": 2})
    sent = Outcome("a" * 32, number_of(1), "sent", ["id-1"], 1, "")
    store.mark_enqueued(campaign.id)

    assert await gate.record_outcome(campaign.id, sent)
    assert not await gate.record_outcome(campaign.id, sent)  # a redelivered job: counted once
    assert store.require(campaign.id).state is CampaignState.RUNNING
    assert await gate.record(campaign.id, job_failure("b" * 32, "bad"), number_of(2))

    done = store.require(campaign.id)
    assert done.state is CampaignState.FINISHED
    assert done.summary()["sent"] == 1 and done.summary()["failed"] == 1
    assert done.count("done") == 2 and done.remaining == 0
    assert done.count("segments_sent") == 1
    assert done.fields["finished_at"]
    assert not await gate.record_outcome("0" * 32, sent)  # a campaign that is gone


async def _dispatch_and_act(
    dispatcher: Dispatcher, ids: list[str], campaign_id: str, act: Any, after_s: float
) -> tuple[list[Finished | RetryLater], float]:
    """Dispatch ``ids`` as one batch; ``act()`` after ``after_s``; (outcomes, act time)."""
    batch = asyncio.create_task(dispatcher.dispatch_many(ids, campaign=campaign_id))
    await asyncio.sleep(after_s)
    await asyncio.to_thread(act)
    acted_at = time.time()
    return [o for _, o in await batch], acted_at


async def test_a_cancel_stops_jobs_waiting_on_the_rate_limit(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    # Given a batch of 8 jobs of a campaign paced at 2.5/s: each waits ~0.4 s (below the
    # 0.5 s inline wait) for the one before it
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 8))
    store.set_rate(campaign_id, 2.5)
    ids = store.job_ids(campaign_id, 0, 10)
    # When cancelled 0.6 s into the batch
    outcomes, cancelled_at = await _dispatch_and_act(
        dispatcher, ids, campaign_id, lambda: store.transition(campaign_id, "cancel"), 0.6
    )
    # Then nothing reached the provider after the cancel (a send already claimed may
    # land just after), and the others ended cancelled, unsent
    late = [m for m in sandbox.state.messages() if m.received_at > cancelled_at + 0.2]
    assert late == []
    sent = len(sandbox.state.messages())
    assert 1 <= sent <= 4
    statuses = [o.result.recipients[0].status for o in outcomes if isinstance(o, Finished)]
    assert len(statuses) == 8
    assert statuses.count(DeliveryStatus.CANCELLED) == 8 - sent
    assert store.require(campaign_id).summary()["cancelled"] == 8 - sent


async def test_a_pause_holds_jobs_waiting_on_the_rate_limit(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 8))
    store.set_rate(campaign_id, 2.5)
    ids = store.job_ids(campaign_id, 0, 10)
    # When paused 0.6 s into the batch
    outcomes, paused_at = await _dispatch_and_act(
        dispatcher, ids, campaign_id, lambda: store.transition(campaign_id, "pause"), 0.6
    )
    # Then no send started after the pause; the rest are held, not counted
    assert [m for m in sandbox.state.messages() if m.received_at > paused_at + 0.2] == []
    sent = len(sandbox.state.messages())
    held = [o for o in outcomes if isinstance(o, RetryLater)]
    assert 1 <= sent <= 4 and len(held) == 8 - sent
    assert all(o.held and o.reason == "campaign paused" for o in held)
    assert store.require(campaign_id).count("done") == sent


async def test_a_paused_campaign_batch_is_held_without_reading_its_jobs(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 5))
    ids = store.job_ids(campaign_id, 0, 10)
    store.transition(campaign_id, "pause")
    # The jobs' records are not even read: with them gone, the batch is still just held
    redis_client.delete(*[job_key(i) for i in ids])
    outcomes = [o for _, o in await dispatcher.dispatch_many(ids, campaign=campaign_id)]
    assert all(isinstance(o, RetryLater) and o.held for o in outcomes)
    assert store.require(campaign_id).count("done") == 0


async def test_campaign_tokens_are_not_taken_when_the_account_refuses(
    dispatcher: Dispatcher,
    async_redis: Redis,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    # Given a campaign with its own rate, and its account throttled for a while
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 3))
    store.set_rate(campaign_id, 1.0)
    ids = store.job_ids(campaign_id, 0, 10)
    await RateLimiter(async_redis).pause("main", 5.0)
    # When its jobs are tried
    outcomes = [o for _, o in await dispatcher.dispatch_many(ids, campaign=campaign_id)]
    # Then they are held, nothing sent, and the campaign's own rate was not charged
    assert all(isinstance(o, RetryLater) and o.held for o in outcomes)
    assert sandbox.state.messages() == []
    assert redis_client.get(ratelimit_key(campaign_ratelimit_account(campaign_id))) is None


def _ttls(redis_client: redis.Redis, campaign_id: str, name: str, ids: list[str]) -> list[int]:
    keys = [
        campaign_key(campaign_id),
        campaign_outcomes_key(campaign_id),
        campaign_jobs_key(campaign_id),
        campaign_seen_key(campaign_id),
        campaign_invalid_key(campaign_id),
        campaign_name_key(name),
    ]
    ttls = [int(redis_client.ttl(key)) for key in keys + [job_key(i) for i in ids]]
    return [ttl for ttl in ttls if ttl != -2]  # -2: no such key (no outcome yet)


async def test_every_key_of_a_campaign_lives_as_long_as_the_others(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    rows = [[number_of(i), f"U{i}", "https://x", code_of(i)] for i in range(4)]
    path = write_csv(tmp_path / "ttl.csv", [*rows, ["12", "Bad", "https://x", "1"]])
    campaign_id = start(store, enqueuer, settings, path, name="ttl")
    ids = store.job_ids(campaign_id, 0, 10)
    store.transition(campaign_id, "pause")
    # Given every key near its end (time has passed since the start)
    for key in redis_client.scan_iter("sms:campaign*"):
        redis_client.expire(key, 5)
    for job_id in ids:
        redis_client.expire(job_key(job_id), 5)
    # When a change comes (a resume), then an outcome
    store.transition(campaign_id, "resume")
    assert min(_ttls(redis_client, campaign_id, "ttl", ids)) > settings.job_ttl_s - 60
    for key in redis_client.scan_iter("sms:campaign*"):
        redis_client.expire(key, 5)
    await dispatcher.dispatch_many(ids[:1], campaign=campaign_id)
    # Then every key of the campaign has its full lifetime again, together
    assert min(_ttls(redis_client, campaign_id, "ttl", [])) > settings.job_ttl_s - 60


async def test_a_campaign_job_found_gone_still_gets_its_outcome(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 3))
    ids = store.job_ids(campaign_id, 0, 10)
    # Given a job whose record expired (a campaign paused longer than jobs are kept)
    redis_client.delete(job_key(ids[0]))
    # When its batch runs
    await dispatcher.dispatch_many(ids, campaign=campaign_id)
    # Then it is counted expired, and the campaign finishes
    campaign = store.require(campaign_id)
    assert campaign.state is CampaignState.FINISHED
    assert campaign.summary()["expired"] == 1 and campaign.summary()["sent"] == 2
    outcome = dict(store.outcomes(campaign_id))[ids[0]]
    assert outcome is not None and "SMSGW_JOB_TTL_S" in outcome.reason
    assert redis_client.exists(parts_key(ids[0])) == 0


def test_cancelling_an_unfinished_start_ends_its_unpublished_recipients(
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    with override_settings(**{**settings.model_dump(), "bulk_batch_size": 5}) as small:
        campaign, _ = store.create({"name": "half", "template": TEMPLATE})
        enqueuer = CampaignEnqueuer(store, enqueuer._publisher, small, Cipher([generate_key()]))
        enqueuer.stage(campaign, row_checker(small), recipients_file(tmp_path, 120))

        def stop_after_first(position: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            enqueuer.publish(campaign.id, on_batch=stop_after_first)
    assert store.require(campaign.id).count("published") == 50
    # When cancelled instead of started again
    store.transition(campaign.id, "cancel")
    # Then the 70 never published end cancelled, with their numbers; the campaign is
    # enqueued (nothing more will come) and ends when the 50 published have outcomes
    cancelled = store.require(campaign.id)
    assert cancelled.enqueued and cancelled.summary()["cancelled"] == 70
    assert cancelled.remaining == 50 and not cancelled.fields.get("finished_at")
    outcomes = list(store.outcomes(campaign.id))
    assert [o.e164 for _, o in outcomes[50:] if o] == [number_of(i) for i in range(50, 120)]
    assert all(o is None for _, o in outcomes[:50])
    # And a second cancel changes nothing
    with pytest.raises(CampaignError, match="it is cancelled"):
        store.transition(campaign.id, "cancel")
    assert store.cancel_unpublished(campaign.id) == 0


def test_only_one_process_publishes_a_campaign(
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    campaign, _ = store.create({"name": "once", "template": TEMPLATE})
    enqueuer.stage(campaign, row_checker(settings), recipients_file(tmp_path, 12))
    # Given another process publishing it
    redis_client.set(campaign_publish_lock_key(campaign.id), "other", ex=60)
    # Then this one is refused, having published nothing
    with pytest.raises(CampaignError, match="being published by another process"):
        enqueuer.publish(campaign.id)
    assert queued(redis_client, "bulk") == []
    # And once that lock is gone, it publishes everyone, each batch with its campaign
    redis_client.delete(campaign_publish_lock_key(campaign.id))
    assert enqueuer.publish(campaign.id) == 12
    assert len([j for b in queued(redis_client, "bulk") for j in b]) == 12
    assert redis_client.exists(campaign_publish_lock_key(campaign.id)) == 0


async def test_a_job_retried_very_often_gives_up_cleanly(
    dispatcher: Dispatcher,
    store: CampaignStore,
    enqueuer: CampaignEnqueuer,
    settings: Settings,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    # A transient failure on a job's 2,000th try: it gives up, no arithmetic overflow
    campaign_id = start(store, enqueuer, settings, recipients_file(tmp_path, 1))
    [job_id] = store.job_ids(campaign_id, 0, 10)
    sandbox.state.set_faults("vonage", "*", Faults(error_next=1))
    outcome = await dispatcher.dispatch(job_id, attempt=2_000)
    assert isinstance(outcome, Finished)
    assert outcome.result.recipients[0].status is DeliveryStatus.FAILED_EXHAUSTED
