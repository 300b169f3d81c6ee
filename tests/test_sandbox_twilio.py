"""The sandbox's Twilio simulator, spoken to with a plain HTTP client as Twilio would be."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateways.sandbox import Faults, SandboxAccount, SandboxServer

ACCOUNT_SID = "AC00000000000000000000000000000000"
AUTH_TOKEN = "sandbox-auth-token"
AUTH = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
FROM = "+15005550006"
TO = "+447911123456"
SERVICE_SID = "MG" + "cd" * 16
MESSAGE_KEYS = [
    "sid", "account_sid", "messaging_service_sid", "from", "to", "body", "status", "direction",
    "num_segments", "num_media", "price", "price_unit", "error_code", "error_message",
    "api_version", "date_created", "date_updated", "date_sent", "uri", "subresource_uris",
]  # fmt: skip


def messages_url(sandbox: SandboxServer, sid: str = ACCOUNT_SID) -> str:
    return f"{sandbox.url}/2010-04-01/Accounts/{sid}/Messages.json"


async def create(
    session: aiohttp.ClientSession,
    sandbox: SandboxServer,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.post(
        messages_url(sandbox), data=form, headers=AUTH if headers is None else headers
    ) as response:
        return response.status, await response.json(), dict(response.headers)


def twilio_error(code: int, status: int) -> dict[str, Any]:
    """What Twilio answers, without the free text (checked separately)."""
    return {
        "code": code,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def without_message(body: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(body.pop("message"), str)
    return body


def expected_signature(token: str, url: str, form: dict[str, str]) -> str:
    """Twilio's request-validator recipe, written out independently of the simulator."""
    data = url
    for key in sorted(form):
        data += key + form[key]
    mac = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, "wrong")},
        {"Authorization": aiohttp.encode_basic_auth("AC" + "9" * 32, AUTH_TOKEN)},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Bearer " + AUTH_TOKEN},
    ],
)
async def test_bad_credentials_get_twilios_401(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body, reply_headers = await create(
        http_session, sandbox, {"To": TO, "From": FROM, "Body": "hi"}, headers
    )
    assert status == 401
    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert reply_headers["WWW-Authenticate"].startswith("Basic")
    assert sandbox.state.messages() == []
    [counters] = sandbox.state.stats()
    assert counters["auth_failures"] == 1


async def test_api_key_auth(sandbox: SandboxServer, http_session: aiohttp.ClientSession) -> None:
    # Given an API key of the default account
    key = "SK" + "34" * 16
    sandbox.state.add_account(
        SandboxAccount(
            provider="twilio", name="key", account_id=ACCOUNT_SID, user_id=key, password="ks"
        )
    )
    form = {"To": TO, "From": FROM, "Body": "hi"}
    headers = {"Authorization": aiohttp.encode_basic_auth(key, "ks")}
    status, _, _ = await create(http_session, sandbox, form, headers)
    assert status == 201
    # But a key is not valid for another account's path
    async with http_session.post(
        messages_url(sandbox, "AC" + "55" * 16), data=form, headers=headers
    ) as response:
        assert response.status == 401


# --- create: success --------------------------------------------------------------------------


async def test_success_body_has_twilios_shape(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, body, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": "hi"})
    assert status == 201
    assert list(body) == MESSAGE_KEYS
    sid = body["sid"]
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert body["account_sid"] == ACCOUNT_SID
    assert (body["from"], body["to"], body["body"]) == (FROM, TO, "hi")
    assert (body["status"], body["direction"], body["messaging_service_sid"]) == (
        "queued",
        "outbound-api",
        None,
    )
    assert (body["num_segments"], body["num_media"]) == ("1", "0")
    assert (body["price"], body["price_unit"], body["error_code"]) == (None, "USD", None)
    assert (body["api_version"], body["date_sent"]) == ("2010-04-01", None)
    created = parsedate_to_datetime(body["date_created"])
    assert body["date_created"].endswith(" +0000")
    assert created.utcoffset() is not None
    assert body["date_updated"] == body["date_created"]
    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}"
    assert body["uri"] == f"{base}.json"
    assert body["subresource_uris"] == {"media": f"{base}/Media.json"}
    [message] = sandbox.state.messages(provider="twilio")
    assert (message.to, message.sender, message.message_ids) == (TO, FROM, [sid])


@pytest.mark.parametrize(
    ("text", "segments"),
    [("a" * 160, "1"), ("a" * 161, "2"), ("€" * 80, "1"), ("€" * 81, "2"), ("ж" * 70, "1"),
     ("ж" * 71, "2"), ("ж" * 1600, "24")],
)  # fmt: skip
async def test_num_segments_counts_like_a_carrier(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, text: str, segments: str
) -> None:
    status, body, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": text})
    assert (status, body["num_segments"], body["body"]) == (201, segments, text)
    assert sandbox.state.messages()[0].text == text


async def test_messaging_service_is_accepted_without_segments(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    form = {"To": TO, "MessagingServiceSid": SERVICE_SID, "Body": "hi"}
    status, body, _ = await create(http_session, sandbox, form)
    assert status == 201
    assert (body["status"], body["num_segments"]) == ("accepted", "0")
    assert (body["messaging_service_sid"], body["from"]) == (SERVICE_SID, None)


# --- create: refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": FROM, "Body": "hi"}, 21604),
        ({"To": TO, "Body": "hi"}, 21603),
        ({"To": TO, "From": FROM}, 21602),
        ({"To": TO, "From": FROM, "Body": "x" * 1601}, 21617),
        ({"To": "447911123456", "From": FROM, "Body": "hi"}, 21211),
        ({"To": TO, "From": "not a sender!", "Body": "hi"}, 21212),
        ({"To": TO, "MessagingServiceSid": "MG1", "Body": "hi"}, 21701),
        ({"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "ftp://x/y"}, 21609),
        ({"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "http://a_b.c/"}, 21609),
    ],
)
async def test_malformed_requests_get_twilios_400(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, form: dict[str, str], code: int
) -> None:
    status, body, _ = await create(http_session, sandbox, form)
    assert (status, without_message(body)) == (400, twilio_error(code, 400))
    assert sandbox.state.messages() == []


async def test_a_body_of_1600_characters_is_accepted(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, _, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": "x" * 1600})
    assert status == 201


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": "+15005550001", "From": FROM}, 21211),
        ({"To": "+15005550002", "From": FROM}, 21612),
        ({"To": "+15005550003", "From": FROM}, 21408),
        ({"To": "+15005550004", "From": FROM}, 21610),
        ({"To": "+15005550009", "From": FROM}, 21614),
        ({"To": TO, "From": "+15005550001"}, 21212),
        ({"To": TO, "From": "+15005550007"}, 21606),
        ({"To": TO, "From": "+15005550008"}, 21611),
    ],
)
async def test_magic_numbers(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, form: dict[str, str], code: int
) -> None:
    status, body, _ = await create(http_session, sandbox, {**form, "Body": "hi"})
    assert (status, without_message(body)) == (400, twilio_error(code, 400))


async def test_number_errors_answer_the_configured_code(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("twilio", "*", Faults(number_errors={"447911123456": "21635"}))
    status, body, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": "hi"})
    assert (status, without_message(body)) == (400, twilio_error(21635, 400))
    # And other recipients are unaffected
    other = {"To": "+447911000000", "From": FROM, "Body": "hi"}
    assert (await create(http_session, sandbox, other))[0] == 201


async def test_injected_fault_is_twilios_500(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("twilio", "*", Faults(error_next=1))
    status, body, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": "hi"})
    assert body == {
        "code": 20500,
        "message": "Internal Server Error",
        "more_info": "https://www.twilio.com/docs/errors/20500",
        "status": 500,
    }
    assert status == 500
    assert sandbox.state.messages() == []


async def test_throttle_at_the_configured_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account allowed 5 requests a second
    sid = "AC" + "66" * 16
    sandbox.state.add_account(
        SandboxAccount(provider="twilio", name="five", account_id=sid, password="t5", rate_per_s=5)
    )
    headers = {"Authorization": aiohttp.encode_basic_auth(sid, "t5")}
    form = {"To": TO, "From": FROM, "Body": "hi"}

    async def one() -> tuple[int, dict[str, Any], str | None]:
        async with http_session.post(
            messages_url(sandbox, sid), data=form, headers=headers
        ) as response:
            return response.status, await response.json(), response.headers.get("Retry-After")

    # When 20 requests arrive at once
    started = time.monotonic()
    replies = await asyncio.gather(*(one() for _ in range(20)))
    elapsed = time.monotonic() - started
    accepted = [r for r in replies if r[0] == 201]
    throttled = [r for r in replies if r[0] == 429]
    # Then the burst of 5 goes through, plus at most what refilled meanwhile, and the rest
    # get Twilio's 20429
    assert 5 <= len(accepted) <= 5 + 5 * elapsed
    assert throttled
    assert len(accepted) + len(throttled) == 20
    for _, body, retry_after in throttled:
        assert without_message(body) == twilio_error(20429, 429)
        assert retry_after is not None
        assert int(retry_after) >= 1
    assert len(sandbox.state.messages(provider="twilio")) == len(accepted)


# --- other resources --------------------------------------------------------------------------


async def test_fetch_message_follows_its_status(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    _, created, _ = await create(http_session, sandbox, {"To": TO, "From": FROM, "Body": "hé"})
    url = f"{sandbox.url}{created['uri']}"
    async with http_session.get(url, headers=AUTH) as response:
        first = await response.json()
    assert response.status == 200
    assert list(first) == MESSAGE_KEYS
    assert (first["sid"], first["body"], first["to"], first["from"]) == (
        created["sid"], "hé", TO, FROM,
    )  # fmt: skip
    assert first["status"] in ("queued", "sent")
    await asyncio.sleep(0.25)
    async with http_session.get(url, headers=AUTH) as response:
        later = await response.json()
    assert (later["status"], later["num_segments"]) == ("delivered", "1")
    assert later["date_sent"] is not None
    # And an unknown SID is Twilio's 404
    missing = url.replace(created["sid"], "SM" + "0" * 32)
    async with http_session.get(missing, headers=AUTH) as response:
        assert response.status == 404
        assert without_message(await response.json()) == twilio_error(20404, 404)


async def test_account_and_balance_resources(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    base = f"{sandbox.url}/2010-04-01/Accounts/{ACCOUNT_SID}"
    async with http_session.get(f"{base}.json", headers=AUTH) as response:
        account = await response.json()
    assert response.status == 200
    assert (account["sid"], account["status"], account["type"]) == (ACCOUNT_SID, "active", "Full")
    assert account["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}.json"
    async with http_session.get(f"{base}/Balance.json", headers=AUTH) as response:
        balance = await response.json()
    assert balance == {"account_sid": ACCOUNT_SID, "balance": "100.00", "currency": "USD"}
    async with http_session.get(f"{base}.json") as response:
        assert response.status == 401


async def test_closed_account_reports_closed_and_cannot_send(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sid = "AC" + "77" * 16
    sandbox.state.add_account(
        SandboxAccount(provider="twilio", name="closed-old", account_id=sid, password="tc")
    )
    headers = {"Authorization": aiohttp.encode_basic_auth(sid, "tc")}
    async with http_session.get(
        f"{sandbox.url}/2010-04-01/Accounts/{sid}.json", headers=headers
    ) as response:
        assert (await response.json())["status"] == "closed"
    async with http_session.post(
        messages_url(sandbox, sid), data={"To": TO, "From": FROM, "Body": "x"}, headers=headers
    ) as response:
        assert response.status == 401


# --- status callbacks -------------------------------------------------------------------------


@pytest.fixture
async def callback_sink() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[dict[str, str], str]]]]:
    """A local receiver of status callbacks: its URL and a queue of (form, signature)."""
    received: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        assert request.content_type == "application/x-www-form-urlencoded"
        await received.put((form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/twilio/status", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/twilio/status", received
    await runner.cleanup()


async def test_status_callbacks_are_signed_and_ordered(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    callback_sink: tuple[str, asyncio.Queue[tuple[dict[str, str], str]]],
) -> None:
    # Given a message created with a StatusCallback (with a query string, signed as given)
    url, received = callback_sink
    callback = f"{url}?job=42"
    form = {"To": TO, "From": FROM, "Body": "hi", "StatusCallback": callback}
    _, created, _ = await create(http_session, sandbox, form)
    # When the simulator reports progress / Then "sent" then "delivered", each signed
    statuses = []
    for _ in range(2):
        fields, signature = await asyncio.wait_for(received.get(), timeout=3)
        assert signature == expected_signature(AUTH_TOKEN, callback, fields)
        assert fields["MessageSid"] == fields["SmsSid"] == created["sid"]
        assert fields["MessageStatus"] == fields["SmsStatus"]
        assert (fields["AccountSid"], fields["From"], fields["To"]) == (ACCOUNT_SID, FROM, TO)
        assert fields["ApiVersion"] == "2010-04-01"
        statuses.append(fields["MessageStatus"])
        last = fields
    assert statuses == ["sent", "delivered"]
    assert re.fullmatch(r"\d{10}", last["RawDlrDoneDate"])


async def test_status_callbacks_fall_back_to_the_sandbox_receipt_url(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    callback_sink: tuple[str, asyncio.Queue[tuple[dict[str, str], str]]],
) -> None:
    url, received = callback_sink
    sandbox.state.dlr_url = url
    try:
        form = {"To": TO, "MessagingServiceSid": SERVICE_SID, "Body": "hi"}
        await create(http_session, sandbox, form)
        fields, signature = await asyncio.wait_for(received.get(), timeout=3)
    finally:
        sandbox.state.dlr_url = None
    assert fields["MessagingServiceSid"] == SERVICE_SID
    assert signature == expected_signature(AUTH_TOKEN, url, fields)
