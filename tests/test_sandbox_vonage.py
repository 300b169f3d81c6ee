"""Contract tests of the simulated Vonage SMS API, with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateways.sandbox import Faults, SandboxAccount, SandboxServer
from gateways.sandbox.vonage import signature_matches, signing_string

KEY = "sandbox1"
SECRET = "sandbox-secret"
TO = "447700900123"


def basic(key: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": aiohttp.encode_basic_auth(key, secret)}


BASIC = basic(KEY, SECRET)
MESSAGE_ID = re.compile(r"^[0-9A-F]{16}$")
THROTTLE_TEXT = re.compile(r"^Throughput Rate Exceeded - please wait \[ (\d+) \] and retry$")


def _form(**extra: str) -> dict[str, str]:
    return {"from": "AcmeShop", "to": TO, "text": "Hello from the sandbox", **extra}


async def _post(
    session: aiohttp.ClientSession,
    sandbox: SandboxServer,
    data: dict[str, str],
    auth: dict[str, str] | None = BASIC,
) -> tuple[int, Any]:
    async with session.post(f"{sandbox.url}/sms/json", data=data, headers=auth) as response:
        return response.status, await response.json()


def _sign_hmac(params: dict[str, str], secret: str, digest: str) -> str:
    return hmac.new(secret.encode(), signing_string(params).encode(), digest).hexdigest()


async def test_success_body_has_vonage_shape_with_string_values(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a valid request with a client-ref
    # When it is posted with Basic auth
    status, body = await _post(http_session, sandbox, _form(**{"client-ref": "order-42"}))
    # Then the body is exactly the documented success shape, every value a string
    assert status == 200
    assert body["message-count"] == "1"
    [entry] = body["messages"]
    assert list(entry) == [
        "to",
        "message-id",
        "status",
        "remaining-balance",
        "message-price",
        "network",
        "client-ref",
    ]
    assert all(isinstance(value, str) for value in entry.values())
    assert entry["to"] == TO
    assert entry["status"] == "0"
    assert entry["client-ref"] == "order-42"
    assert MESSAGE_ID.match(entry["message-id"])
    assert re.fullmatch(r"\d+\.\d{8}", entry["remaining-balance"])
    # And one inbox message holds it
    [message] = sandbox.state.messages(provider="vonage")
    assert (message.to, message.sender, message.text) == (TO, "AcmeShop", "Hello from the sandbox")
    assert message.message_ids == [entry["message-id"]]


async def test_without_client_ref_the_entry_has_no_client_ref(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a request without client-ref, When posted
    _, body = await _post(http_session, sandbox, _form())
    # Then the entry does not invent one
    assert "client-ref" not in body["messages"][0]


async def test_long_text_is_answered_per_part_and_recorded_once(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a GSM-7 text of three parts (153 + 153 + 94 septets)
    text = "x" * 400
    # When it is posted
    _, body = await _post(http_session, sandbox, _form(text=text))
    # Then there is one entry per part, each with its own id
    assert body["message-count"] == "3"
    ids = [entry["message-id"] for entry in body["messages"]]
    assert len(set(ids)) == 3
    assert all(entry["status"] == "0" for entry in body["messages"])
    # And the balance counts down part by part
    balances = [float(entry["remaining-balance"]) for entry in body["messages"]]
    assert balances == sorted(balances, reverse=True)
    # And the inbox has one message with the whole text and three segments
    [message] = sandbox.state.messages(provider="vonage")
    assert (message.text, message.segments, message.message_ids) == (text, 3, ids)


async def test_unicode_text_is_decoded_and_recorded_as_ucs2(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a Cyrillic text with an emoji sent as type=unicode
    text = "Привет, мир 👋"
    # When it is posted
    _, body = await _post(http_session, sandbox, _form(text=text, type="unicode"))
    # Then it is accepted and recorded as UCS-2 with the text intact
    assert body["messages"][0]["status"] == "0"
    [message] = sandbox.state.messages(provider="vonage")
    assert (message.text, message.encoding) == (text, "UCS-2")


async def test_form_credentials_are_accepted(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given api_key and api_secret as form fields, no header
    data = _form(api_key=KEY, api_secret=SECRET)
    # When posted
    _, body = await _post(http_session, sandbox, data, auth=None)
    # Then the message is accepted
    assert body["messages"][0]["status"] == "0"


async def test_get_with_query_fields_is_accepted(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given every field in the query string
    params = _form(api_key=KEY, api_secret=SECRET)
    # When sent as GET
    async with http_session.get(f"{sandbox.url}/sms/json", params=params) as response:
        body = await response.json()
    # Then the message is accepted
    assert body["messages"][0]["status"] == "0"
    assert len(sandbox.state.messages(provider="vonage")) == 1


@pytest.mark.parametrize("auth", ["form", "basic"])
async def test_wrong_credentials_get_status_4_bad_credentials(
    auth: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong secret, in the form or in the Basic header
    if auth == "form":
        data, header = _form(api_key=KEY, api_secret="wrong-secret"), None
    else:
        data, header = _form(), basic(KEY, "wrong-secret")
    # When posted
    status, body = await _post(http_session, sandbox, data, auth=header)
    # Then Vonage's exact auth error comes back under HTTP 200, and nothing is recorded
    assert status == 200
    assert body == {
        "message-count": "1",
        "messages": [{"status": "4", "error-text": "Bad Credentials"}],
    }
    assert sandbox.state.messages(provider="vonage") == []
    stats = {s["account"]: s for s in sandbox.state.stats() if s["provider"] == "vonage"}
    assert stats["sandbox"]["auth_failures"] == 1


async def test_unknown_key_counts_an_anonymous_auth_failure(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an API key no account has, When posted
    _, body = await _post(http_session, sandbox, _form(), auth=basic("nobody", "x"))
    # Then status 4, counted against "?"
    assert body["messages"][0]["status"] == "4"
    stats = {s["account"]: s for s in sandbox.state.stats() if s["provider"] == "vonage"}
    assert stats["?"]["auth_failures"] == 1


@pytest.mark.parametrize(
    ("missing", "status", "text"),
    [
        ("api_key", "2", "Missing api_key"),
        ("api_secret", "2", "Missing api_secret"),
        ("from", "2", "Missing from param"),
        ("to", "2", "Missing to param"),
        ("text", "2", "Missing text param"),
    ],
)
async def test_missing_fields_get_status_2_naming_the_field(
    missing: str,
    status: str,
    text: str,
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
) -> None:
    # Given form credentials and one field left out
    data = _form(api_key=KEY, api_secret=SECRET)
    del data[missing]
    # When posted
    _, body = await _post(http_session, sandbox, data, auth=None)
    # Then status 2 names the missing field
    assert body == {"message-count": "1", "messages": [{"status": status, "error-text": text}]}


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("to", "12ab", "3"),
        ("type", "binary", "3"),
        ("text", "y" * 3201, "12"),
        ("client-ref", "r" * 41, "3"),
        ("callback", "ftp://example.com/dlr", "23"),
    ],
)
async def test_invalid_fields_get_vonage_status(
    field: str,
    value: str,
    status: str,
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
) -> None:
    # Given one field with a value Vonage refuses, When posted
    _, body = await _post(http_session, sandbox, _form(**{field: value}))
    # Then the matching status comes back and nothing is recorded
    assert body["messages"][0]["status"] == status
    assert sandbox.state.messages(provider="vonage") == []


def _signed(params: dict[str, str], sig: str) -> dict[str, str]:
    return {**params, "sig": sig}


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
async def test_signed_requests_are_verified_for_every_method(
    method: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a request signed with the account's secret by one of Vonage's methods
    params = _form(api_key=KEY, timestamp=str(int(time.time())), text="a&b=c")
    if method == "md5hash":
        sig = hashlib.md5((signing_string(params) + SECRET).encode()).hexdigest()
    else:
        sig = _sign_hmac(params, SECRET, method)
    # When posted without secret or header
    _, body = await _post(http_session, sandbox, _signed(params, sig), auth=None)
    # Then it is accepted
    assert body["messages"][0]["status"] == "0"


async def test_wrong_or_stale_signature_gets_status_14(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a request signed with the wrong secret, and one signed correctly an hour ago
    now = _form(api_key=KEY, timestamp=str(int(time.time())))
    old = _form(api_key=KEY, timestamp=str(int(time.time()) - 3600))
    wrong = _signed(now, _sign_hmac(now, "not-the-secret", "sha256"))
    stale = _signed(old, _sign_hmac(old, SECRET, "sha256"))
    # When both are posted
    _, wrong_body = await _post(http_session, sandbox, wrong, auth=None)
    _, stale_body = await _post(http_session, sandbox, stale, auth=None)
    # Then both get status 14 Invalid Signature
    for body in (wrong_body, stale_body):
        assert body["messages"][0] == {"status": "14", "error-text": "Invalid Signature"}


async def test_signature_and_secret_together_get_status_32(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a signed request that also carries the secret
    params = _form(api_key=KEY, timestamp=str(int(time.time())))
    data = {**_signed(params, _sign_hmac(params, SECRET, "md5")), "api_secret": SECRET}
    # When posted
    _, body = await _post(http_session, sandbox, data, auth=None)
    # Then status 32
    assert body["messages"][0]["status"] == "32"


def test_signing_string_sorts_and_cleans_values() -> None:
    # Given params with & and = in a value, and a sig
    params = {"to": "1", "text": "a&b=c", "api_key": "k", "sig": "zzz"}
    # Then the string is sorted, sig-less, with & and = in values replaced
    assert signing_string(params) == "&api_key=k&text=a_b_c&to=1"
    assert not signature_matches(params, "s", "not-hex-of-a-known-length")


async def test_throttling_answers_status_1_with_a_wait_in_ms(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account allowed 5 requests per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="vonage", name="slow", user_id="slow0001", password="slow-secret", rate_per_s=5
        )
    )
    auth = basic("slow0001", "slow-secret")
    # When 20 requests arrive at once
    started = time.monotonic()
    replies = await asyncio.gather(
        *(_post(http_session, sandbox, _form(), auth=auth) for _ in range(20))
    )
    elapsed = time.monotonic() - started
    statuses = [body["messages"][0]["status"] for _, body in replies]
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile, and the rest
    # throttled with a millisecond hint
    assert 5 <= statuses.count("0") <= 5 + 5 * elapsed
    throttled = [body["messages"][0] for _, body in replies if body["messages"][0]["status"] == "1"]
    assert throttled
    assert len(throttled) == 20 - statuses.count("0")
    for entry in throttled:
        found = THROTTLE_TEXT.match(entry["error-text"])
        assert found is not None
        assert 1 <= int(found.group(1)) <= 1000
    assert all(status == 200 for status, _ in replies)


async def test_error_fault_is_an_http_500(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request is to fail with a 5xx
    sandbox.state.set_faults("vonage", "*", Faults(error_next=1))
    # When two requests are posted
    async with http_session.post(f"{sandbox.url}/sms/json", data=_form(), headers=BASIC) as first:
        first_status = first.status
    second_status, second = await _post(http_session, sandbox, _form())
    # Then the first is an HTTP 500 and the second goes through
    assert first_status == 500
    assert (second_status, second["messages"][0]["status"]) == (200, "0")


@pytest.mark.parametrize(
    ("code", "text"),
    [("7", "Number Barred"), ("5", "Internal Error"), ("29", "Non White-listed Destination")],
)
async def test_number_errors_answer_with_that_status(
    code: str, text: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a recipient configured to fail with a Vonage status
    sandbox.state.set_faults("vonage", "*", Faults(number_errors={TO: code}))
    # When a message to it is posted (with the + Vonage tolerates)
    _, body = await _post(http_session, sandbox, _form(to=f"+{TO}"))
    # Then that status and a fitting text come back
    [entry] = body["messages"]
    assert entry["status"] == code
    assert entry["error-text"].startswith(text)


async def test_empty_balance_gets_status_9(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account without credit
    sandbox.state.add_account(
        SandboxAccount(
            provider="vonage", name="broke", user_id="broke001", password="broke-secret", balance=0
        )
    )
    # When it sends
    auth = basic("broke001", "broke-secret")
    _, body = await _post(http_session, sandbox, _form(), auth=auth)
    # Then status 9
    assert body["messages"][0] == {"status": "9", "error-text": "Partner Quota Exceeded"}


@pytest.fixture
async def dlr_sink(sandbox: SandboxServer) -> AsyncIterator[list[dict[str, Any]]]:
    """A local webhook that collects POST-JSON receipts; the sandbox pushes to it."""
    received: list[dict[str, Any]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/dlr", collect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sandbox.state.dlr_url = f"http://127.0.0.1:{port}/dlr"
    try:
        yield received
    finally:
        sandbox.state.dlr_url = None
        await runner.cleanup()


async def _wait_for(received: list[dict[str, Any]], count: int) -> None:
    deadline = time.monotonic() + 3
    while len(received) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_delivery_receipts_are_pushed_per_part(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, dlr_sink: list[dict[str, Any]]
) -> None:
    # Given a receipt URL, When a two-part message with a client-ref is sent
    data = _form(text="z" * 200, **{"client-ref": "job-7:1"})
    _, body = await _post(http_session, sandbox, data)
    ids = {entry["message-id"] for entry in body["messages"]}
    await _wait_for(dlr_sink, 2)
    # Then one delivered receipt per part arrives, in Vonage's POST-JSON fields
    assert {receipt["messageId"] for receipt in dlr_sink} == ids
    for receipt in dlr_sink:
        assert receipt["msisdn"] == TO
        assert receipt["to"] == "AcmeShop"
        assert receipt["status"] == "delivered"
        assert receipt["err-code"] == "0"
        assert receipt["client-ref"] == "job-7:1"
        assert receipt["api-key"] == KEY
        assert re.fullmatch(r"\d{10}", receipt["scts"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", receipt["message-timestamp"])


async def test_no_receipt_when_the_request_declines_one(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, dlr_sink: list[dict[str, Any]]
) -> None:
    # Given status-report-req=0, When a message is sent, and then one with receipts
    await _post(http_session, sandbox, _form(**{"status-report-req": "0"}))
    _, body = await _post(http_session, sandbox, _form())
    await _wait_for(dlr_sink, 1)
    await asyncio.sleep(0.3)  # room for a wrongly pushed second receipt to arrive
    # Then only the second message's receipt arrived
    assert [r["messageId"] for r in dlr_sink] == [body["messages"][0]["message-id"]]


async def test_balance_answers_with_basic_or_query_credentials(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the balance endpoint, When asked with Basic auth and with query credentials
    url = f"{sandbox.url}/account/get-balance"
    async with http_session.get(url, headers=BASIC) as response:
        basic_status, basic_body = response.status, await response.json()
    query = {"api_key": KEY, "api_secret": SECRET}
    async with http_session.get(url, params=query) as response:
        query_body = await response.json()
    # Then both get the balance as a JSON number
    assert basic_status == 200
    assert basic_body == query_body == {"value": 100.0, "autoReload": False}


async def test_balance_with_wrong_credentials_is_401(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong secret, When the balance is asked for
    url = f"{sandbox.url}/account/get-balance"
    async with http_session.get(url, headers=basic(KEY, "nope")) as response:
        status, body = response.status, await response.json()
    # Then Vonage's 401 body comes back
    assert status == 401
    assert body == {"error-code": "401", "error-code-label": "authentication failed"}
