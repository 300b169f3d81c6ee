"""The dispatch pipeline in-process: real Redis, real HTTP to the sandbox, no Celery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import redis
from redis.asyncio import Redis

from config.settings import Settings, override_settings
from gateways.models import GatewayAccount
from gateways.sandbox import Faults, SandboxAccount, SandboxServer
from worker.account_cache import CachedAccounts
from worker.account_store import AccountStore
from worker.accounts import SettingsAccounts
from worker.crypto import Cipher, generate_key
from worker.delivery import DeliveryState, PartRef
from worker.dispatch import Dispatcher, Finished, RetryLater
from worker.jobs import JobRecord
from worker.keys import job_key
from worker.models import DeliveryStatus, SendSmsMessageResult, ShortMessage

CODE = "482913"
ALICE = "+447400123456"
BOB = "+447400123457"


def vonage_account(sandbox: SandboxServer, **changes: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "gateway": "vonage",
        "url": sandbox.url,
        "user_id": "sandbox1",
        "password": "sandbox-secret",
        "sender": "smsgw",
        **changes,
    }


@pytest.fixture
def dispatch_settings(sandbox: SandboxServer) -> Iterator[Settings]:
    with override_settings(
        accounts=[vonage_account(sandbox)],
        default_account="main",
        retry_base_s=0.5,
        max_inline_wait_s=0.5,
    ) as settings:
        yield settings


def make_dispatcher(
    redis: Redis, session: aiohttp.ClientSession, settings: Settings, cipher: Cipher
) -> Dispatcher:
    return Dispatcher(
        redis=redis,
        session=session,
        settings=settings,
        accounts=SettingsAccounts(settings),
        cipher=cipher,
    )


@pytest.fixture
async def dispatcher(
    async_redis: Redis,
    http_session: aiohttp.ClientSession,
    dispatch_settings: Settings,
    cipher: Cipher,
) -> AsyncIterator[Dispatcher]:
    instance = make_dispatcher(async_redis, http_session, dispatch_settings, cipher)
    yield instance
    await instance.aclose()


async def store(
    async_redis: Redis, cipher: Cipher, message: ShortMessage, **fields: Any
) -> JobRecord:
    record = JobRecord.create(message, cipher, lane=fields.pop("lane", "otp"), **fields)
    await async_redis.set(job_key(record.id), record.model_dump_json())
    return record


async def finish(dispatcher: Dispatcher, job_id: str, attempt: int = 0) -> SendSmsMessageResult:
    outcome = await dispatcher.dispatch(job_id, attempt=attempt)
    assert isinstance(outcome, Finished), outcome
    return outcome.result


async def test_a_code_is_delivered_once(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given a login code for one recipient
    record = await store(
        async_redis,
        cipher,
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[ALICE]),
    )
    # When dispatched
    result = await finish(dispatcher, record.id)
    # Then it is sent once, with the code in the text, and recorded with the provider id
    inbox = sandbox.state.messages(provider="vonage")
    assert [(m.to, m.text) for m in inbox] == [(ALICE.lstrip("+"), f"Code {CODE}")], result
    assert result.success and result.exception_message is None
    (recipient,) = result.recipients
    assert recipient.status == DeliveryStatus.SENT
    assert recipient.provider_message_ids == inbox[0].message_ids
    assert (recipient.pieces, recipient.segments, recipient.attempts) == (1, 1, 1)
    assert (result.gateway, result.account, result.lane) == ("vonage", "main", "otp")
    # And the result holds no code
    assert CODE not in result.model_dump_json()


async def test_dispatching_again_never_resends(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
    first = await finish(dispatcher, record.id)
    # When the same job is delivered again (acks-late redelivery)
    second = await finish(dispatcher, record.id)
    # Then nothing more reaches the provider and the result is the same
    assert len(sandbox.state.messages()) == 1
    assert second.recipients == first.recipients


async def test_long_ucs2_text_is_split_into_pieces_and_recorded_per_piece(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given a Cyrillic text of 150 characters and max_length 70
    text = " ".join(["Привет"] * 21) + " {code}"
    record = await store(
        async_redis,
        cipher,
        ShortMessage(message=text, access_code=CODE, phone_numbers=[ALICE], max_length=70),
    )
    # When dispatched
    result = await finish(dispatcher, record.id)
    # Then each piece went out as its own UCS-2 message of at most 70 units, the code whole
    inbox = sandbox.state.messages(provider="vonage")
    assert len(inbox) == 3
    assert all(m.encoding == "UCS-2" and len(m.text) <= 70 for m in inbox)
    assert sum(CODE in m.text for m in inbox) == 1
    (recipient,) = result.recipients
    assert (recipient.pieces, recipient.segments) == (3, 3)
    assert len(recipient.provider_message_ids) == 3


async def test_invalid_recipients_fail_with_their_reason_and_valid_ones_go(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    record = await store(
        async_redis,
        cipher,
        ShortMessage(message="hi", phone_numbers=[ALICE, "+44 909 879 0000", "not a number"]),
    )
    result = await finish(dispatcher, record.id)
    assert [m.to for m in sandbox.state.messages()] == [ALICE.lstrip("+")]
    statuses = [(r.status, r.reason) for r in result.recipients]
    assert statuses[0] == (DeliveryStatus.SENT, None)
    assert statuses[1] == (
        DeliveryStatus.FAILED_PERMANENT,
        "phone_numbers[1]: premium-rate numbers are not allowed",
    )
    assert statuses[2][0] == DeliveryStatus.FAILED_PERMANENT
    assert not result.success
    assert "2 of 3 recipient(s) not sent" in (result.exception_message or "")
    assert "8790000" not in result.model_dump_json()  # refused numbers stay masked


async def test_transient_fault_then_success_sends_exactly_once(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given the provider answers the next request with a 5xx
    sandbox.state.set_faults("vonage", "*", Faults(error_next=1))
    record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
    # When dispatched: a retry is asked for
    first = await dispatcher.dispatch(record.id)
    assert isinstance(first, RetryLater)
    assert 0.25 <= first.countdown_s <= 0.5
    # And the retry sends it
    result = await finish(dispatcher, record.id, attempt=1)
    assert len(sandbox.state.messages()) == 1
    assert result.recipients[0].status == DeliveryStatus.SENT
    assert result.recipients[0].attempts == 2


async def test_provider_throttle_pauses_the_account_and_retries_after_its_hint(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given the provider allows 1 request per second on this account
    sandbox.state.add_account(
        SandboxAccount(
            provider="vonage", name="sandbox", user_id="sandbox1", password="sandbox-secret",
            rate_per_s=1,
        )
    )  # fmt: skip
    record = await store(
        async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE, BOB])
    )
    # When two recipients go at once
    outcome = await dispatcher.dispatch(record.id)
    # Then one is throttled by the provider and the job asks to retry after its hint
    assert isinstance(outcome, RetryLater)
    assert outcome.countdown_s >= 0.5
    assert "status 1" in outcome.reason or "Throughput" in outcome.reason
    assert len(sandbox.state.messages()) == 1


async def test_an_expired_job_is_never_sent(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    record = await store(
        async_redis,
        cipher,
        ShortMessage(message="hi", access_code=CODE, phone_numbers=[ALICE], ttl_s=30),
        enqueued_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    result = await finish(dispatcher, record.id)
    assert sandbox.state.messages() == []
    assert result.recipients[0].status == DeliveryStatus.EXPIRED
    assert not result.success


async def test_a_part_lost_in_a_crash_is_unknown_and_not_resent(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given a worker claimed the part and died before recording the provider's answer
    record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
    delivery = DeliveryState(async_redis, record.id, ttl_s=60)
    assert (await delivery.claim(PartRef(ALICE, 0), resend_uncertain=False)).claimed
    # When the job is delivered again
    result = await finish(dispatcher, record.id)
    # Then the part is recorded unknown and nothing is sent
    assert sandbox.state.messages() == []
    assert result.recipients[0].status == DeliveryStatus.UNKNOWN
    assert "outcome of this send was lost" in (result.recipients[0].reason or "")


async def test_a_timeout_is_uncertain_and_not_resent(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given the provider hangs past the client's timeout
    sandbox.state.set_faults("vonage", "*", Faults(hang_next=1, hang_s=0.3))
    with override_settings(
        accounts=[vonage_account(sandbox)], default_account="main", provider_timeout_s=0.1
    ) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
        # When dispatched
        result = await finish(dispatcher, record.id)
    # Then the provider may have it: the part is unknown and not sent again
    assert result.recipients[0].status == DeliveryStatus.UNKNOWN
    assert "not re-sent, to avoid a duplicate" in (result.recipients[0].reason or "")


async def test_a_lane_that_resends_uncertain_parts_tries_again(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    sandbox.state.set_faults("vonage", "*", Faults(hang_next=1, hang_s=0.3))
    with override_settings(
        accounts=[vonage_account(sandbox)],
        default_account="main",
        provider_timeout_s=0.1,
        resend_uncertain_lanes=["otp"],
        retry_base_s=0.1,
    ) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
        assert isinstance(await dispatcher.dispatch(record.id), RetryLater)
        result = await finish(dispatcher, record.id, attempt=1)
    assert result.recipients[0].status == DeliveryStatus.SENT
    assert len(sandbox.state.messages()) == 1


async def test_permanent_provider_refusal_is_recorded_once(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    sandbox.state.set_faults("vonage", "*", Faults(number_errors={ALICE.lstrip("+"): "7"}))
    record = await store(
        async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE, BOB])
    )
    result = await finish(dispatcher, record.id)
    alice, bob = result.recipients
    assert (alice.status, alice.error_class) == (
        DeliveryStatus.FAILED_PERMANENT,
        "RecipientRejected",
    )
    assert bob.status == DeliveryStatus.SENT
    stats = {s["account"]: s for s in sandbox.state.stats()}
    assert stats["sandbox"]["requests"] == 2  # no retry of the refusal


async def test_bad_credentials_fail_the_job_without_retry(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    with override_settings(
        accounts=[vonage_account(sandbox, password="wrong-secret")], default_account="main"
    ) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
        result = await finish(dispatcher, record.id)
    (recipient,) = result.recipients
    assert (recipient.status, recipient.error_class) == (
        DeliveryStatus.FAILED_PERMANENT,
        "AccountRejected",
    )
    assert "wrong-secret" not in result.model_dump_json()


async def test_no_account_is_a_clear_permanent_failure(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    with override_settings(accounts=[vonage_account(sandbox)], default_account=None) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        record = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE]))
        result = await finish(dispatcher, record.id)
    assert result.recipients[0].error_class == "NoAccount"
    assert "no default is set" in (result.recipients[0].reason or "")
    assert sandbox.state.messages() == []


async def test_missing_and_malformed_jobs_get_a_failed_result(
    dispatcher: Dispatcher, async_redis: Redis
) -> None:
    missing = await finish(dispatcher, "0" * 32)
    assert not missing.success
    assert "job not found" in (missing.exception_message or "")
    await async_redis.set(job_key("1" * 32), '{"id": 42}')
    malformed = await finish(dispatcher, "1" * 32)
    assert "malformed job record" in (malformed.exception_message or "")


async def test_a_job_encrypted_with_another_key_fails_clearly(
    dispatcher: Dispatcher, async_redis: Redis, sandbox: SandboxServer
) -> None:
    other = Cipher([generate_key()])
    record = await store(
        async_redis, other, ShortMessage(message="hi", access_code=CODE, phone_numbers=[ALICE])
    )
    result = await finish(dispatcher, record.id)
    assert "cannot be decrypted" in (result.exception_message or "")
    assert sandbox.state.messages() == []


async def test_no_code_in_clear_anywhere_in_redis(
    dispatcher: Dispatcher,
    async_redis: Redis,
    redis_client: redis.Redis,
    cipher: Cipher,
    sandbox: SandboxServer,
) -> None:
    record = await store(
        async_redis,
        cipher,
        ShortMessage(message="Code {code}", access_code=CODE, phone_numbers=[ALICE]),
    )
    await finish(dispatcher, record.id)
    for key in redis_client.scan_iter():
        assert CODE not in key
        kind = redis_client.type(key)
        dumped = str(
            redis_client.get(key) if kind == "string" else redis_client.hgetall(key)
            if kind == "hash" else redis_client.dump(key)
        )  # fmt: skip
        assert CODE not in dumped, key


async def test_a_message_problem_fails_every_recipient_with_its_reason(
    dispatcher: Dispatcher, async_redis: Redis, cipher: Cipher, sandbox: SandboxServer
) -> None:
    record = await store(
        async_redis, cipher, ShortMessage(message="Code {code}", phone_numbers=[ALICE, "12"])
    )
    result = await finish(dispatcher, record.id)
    alice, refused = result.recipients
    assert (alice.status, alice.error_class) == (DeliveryStatus.FAILED_PERMANENT, "InvalidMessage")
    assert "placeholder but no code" in (alice.reason or "")
    assert refused.error_class == "InvalidRecipient"
    assert sandbox.state.messages() == []


async def test_a_failed_job_names_the_gateway_type_as_a_sent_one_does(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    # Given an account whose type is given by its alias (nexmo is vonage)
    with override_settings(
        accounts=[vonage_account(sandbox, gateway="nexmo")], default_account="main"
    ) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        bad = await store(
            async_redis, cipher, ShortMessage(message="Code {code}", phone_numbers=[ALICE])
        )
        good = await store(async_redis, cipher, ShortMessage(message="hi", phone_numbers=[BOB]))
        # When one job fails before any send and another is sent
        failed, sent = await finish(dispatcher, bad.id), await finish(dispatcher, good.id)
        await dispatcher.aclose()
    # Then both name the type the same way (results and metric labels agree)
    assert failed.recipients[0].error_class == "InvalidMessage"
    assert (failed.gateway, failed.account) == (sent.gateway, sent.account) == ("vonage", "main")


async def test_without_an_account_refused_recipients_are_still_reported(
    async_redis: Redis, http_session: aiohttp.ClientSession, cipher: Cipher, sandbox: SandboxServer
) -> None:
    with override_settings(accounts=[vonage_account(sandbox)], default_account=None) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        record = await store(
            async_redis, cipher, ShortMessage(message="hi", phone_numbers=[ALICE, "12"])
        )
        result = await finish(dispatcher, record.id)
    assert [r.error_class for r in result.recipients] == ["NoAccount", "InvalidRecipient"]


# --- accounts from the account store ---------------------------------------------------------


async def test_a_stored_accounts_countries_and_bulk_share_apply(
    async_redis: Redis, http_session: aiohttp.ClientSession, sandbox: SandboxServer, cipher: Cipher
) -> None:
    # Given a stored default account that may send to Great Britain only, bulk at 10 %
    # (toll-free numbers allowed, so a number of no country reaches the allow-list)
    allowed = frozenset({"MOBILE", "TOLL_FREE"})
    with override_settings(
        retry_base_s=0.5, max_inline_wait_s=0.5, allowed_number_types=allowed
    ) as settings:
        accounts = AccountStore(async_redis, settings, cipher)
        fields = vonage_account(sandbox, name="gb-only", countries=["GB"], bulk_share=0.1)
        await accounts.create(GatewayAccount.model_validate(fields))
        await accounts.set_default("gb-only")
        dispatcher = Dispatcher(
            redis=async_redis,
            session=http_session,
            settings=settings,
            accounts=CachedAccounts(accounts),
            cipher=cipher,
        )
        # When a job goes to a British, a German and an international freephone number
        german, freephone = "+4915123456789", "+80012345678"
        record = await store(
            async_redis,
            cipher,
            ShortMessage(message="hello", phone_numbers=[ALICE, german, freephone]),
        )
        result = await finish(dispatcher, record.id)
    # Then only the British number was sent; the German one is refused with the reason
    assert [m.to for m in sandbox.state.messages(provider="vonage")] == [ALICE.lstrip("+")]
    by_number = {r.phone_number: r for r in result.recipients}
    assert by_number[ALICE].status == DeliveryStatus.SENT
    refused = by_number[german]
    assert refused.status == DeliveryStatus.FAILED_PERMANENT
    assert refused.error_class == "CountryNotAllowed"
    assert refused.reason == "a number of DE; account 'gb-only' sends only to GB"
    assert by_number[freephone].reason == (
        "a number of no known country; account 'gb-only' sends only to GB"
    )
    assert result.account == "gb-only"
    # And the bulk lane's share of the account's rate is the account's own, not the setting
    account = (await accounts.view()).account("gb-only")
    job = SimpleNamespace(account=account, gateway=dispatcher._gateway(account))
    assert dispatcher._rate(job).lane_share == 0.1  # type: ignore[arg-type]
    assert settings.bulk_share != 0.1
    await dispatcher.aclose()


async def test_a_modified_accounts_old_adapter_is_closed_once_its_sends_are_over(
    async_redis: Redis, http_session: aiohttp.ClientSession, sandbox: SandboxServer, cipher: Cipher
) -> None:
    # Given a dispatcher whose sends may last at most 0.3 s, and the account's adapter
    with override_settings(provider_timeout_s=0.2, provider_connect_timeout_s=0.1) as settings:
        dispatcher = make_dispatcher(async_redis, http_session, settings, cipher)
        first = GatewayAccount.model_validate(vonage_account(sandbox))
        old = dispatcher._gateway(first)
        closed: list[float] = []
        close_adapter = old.aclose

        async def recording_aclose() -> None:
            closed.append(asyncio.get_running_loop().time())
            await close_adapter()

        old.aclose = recording_aclose  # type: ignore[method-assign]
        # When the account is modified (a new sender) and a job meets the new version
        started = asyncio.get_running_loop().time()
        new = dispatcher._gateway(first.model_copy(update={"sender": "other"}))
        # Then the job gets a new adapter; the old one stays open while sends may use it
        assert new is not old
        assert dispatcher._gateway(first.model_copy(update={"sender": "other"})) is new
        await asyncio.sleep(0.1)
        assert closed == []
        # And it is closed once any send under way must have ended
        await asyncio.sleep(0.4)
        assert len(closed) == 1
        assert closed[0] - started >= 0.3
        # And a dispatcher closed early closes the adapters it was still waiting on
        newer = dispatcher._gateway(first.model_copy(update={"sender": "third"}))
        assert newer is not new
        new_closed: list[bool] = []
        close_new = new.aclose

        async def recording_new_aclose() -> None:
            new_closed.append(True)
            await close_new()

        new.aclose = recording_new_aclose  # type: ignore[method-assign]
        await dispatcher.aclose()
        assert new_closed == [True]
