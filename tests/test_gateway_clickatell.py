"""The Clickatell Platform adapter (``clickatell``) against the sandbox and a few local servers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateways.clickatell import ClickatellGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
)
from gateways.http import Timeouts
from gateways.models import GatewayAccount, OutboundSms
from gateways.sandbox import Faults, SandboxAccount, SandboxServer

KEY = "sandbox-api-key"
TO = "+447700900123"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _gateway(
    url: str,
    session: aiohttp.ClientSession,
    *,
    timeouts: Timeouts | None = None,
    **fields: Any,
) -> ClickatellGateway:
    values: dict[str, Any] = {
        "name": "t",
        "gateway": "clickatell",
        "url": url,
        "password": KEY,
        "sender": "SMSGW",
    }
    values.update(fields)
    return ClickatellGateway(GatewayAccount(**values), session, timeouts=timeouts)


@asynccontextmanager
async def _local_server(handler: Handler) -> AsyncIterator[str]:
    """A throw-away HTTP server answering every path with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- sending ------------------------------------------------------------------------------


async def test_gsm7_send_is_accepted_and_lands_in_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox's default Platform account
    gateway = _gateway(sandbox.url, http_session)
    # When a GSM-7 text is sent
    receipt = await gateway.send(OutboundSms(to=TO, text="Your code is 123456"))
    # Then the provider's apiMessageId comes back and the inbox holds the message as sent
    assert len(receipt.provider_message_ids) == 1
    assert len(receipt.provider_message_ids[0]) == 32
    (message,) = sandbox.state.messages(provider="clickatell")
    assert message.to == "447700900123"
    assert message.text == "Your code is 123456"
    assert message.sender == "SMSGW"
    assert (message.encoding, message.segments) == ("GSM-7", 1)
    assert message.message_ids == list(receipt.provider_message_ids)


async def test_ucs2_text_arrives_intact(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a text with Cyrillic and an emoji (outside the BMP)
    text = "Код: 4821 😀"
    # When it is sent (the Platform takes UTF-8 content and encodes itself)
    await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text=text))
    # Then the inbox holds the exact text, counted as UCS-2
    (message,) = sandbox.state.messages(provider="clickatell")
    assert message.text == text
    assert (message.encoding, message.segments) == ("UCS-2", 1)


async def test_long_text_goes_in_one_request_and_the_provider_splits_it(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a GSM-7 text of 400 characters (3 concatenated segments)
    text = ("0123456789" * 40)[:400]
    # When it is sent as one piece
    receipt = await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text=text))
    # Then one message id comes back and the inbox counts three segments
    assert len(receipt.provider_message_ids) == 1
    (message,) = sandbox.state.messages(provider="clickatell")
    assert (message.text, message.segments) == (text, 3)


async def test_request_has_the_documented_wire_format(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a local server that records what it receives
    seen: dict[str, Any] = {}

    async def record(request: web.Request) -> web.Response:
        seen.update(
            method=request.method,
            path=request.path,
            auth=request.headers.get("Authorization"),
            content_type=request.content_type,
            body=json.loads(await request.read()),
        )
        entry = {"apiMessageId": "a" * 32, "accepted": True, "to": "447700900123"}
        return web.json_response({"messages": [entry], "error": None}, status=202)

    async with _local_server(record) as url:
        # When a piece with a sender override and a client reference is sent
        await _gateway(url, http_session).send(
            OutboundSms(to=TO, text="Hi", sender="Acme", client_ref="job-7:1")
        )
    # Then it is a JSON POST to /messages with the raw key and the documented fields
    assert (seen["method"], seen["path"]) == ("POST", "/messages")
    assert seen["auth"] == KEY
    assert seen["content_type"] == "application/json"
    assert seen["body"] == {
        "content": "Hi",
        "to": ["447700900123"],
        "from": "Acme",
        "clientMessageId": "job-7:1",
        "charset": "UTF-8",
    }


# --- errors -------------------------------------------------------------------------------


async def test_wrong_key_is_account_rejected_without_leaking_it(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an adapter with a wrong integration API key
    gateway = _gateway(sandbox.url, http_session, password="not-the-key-9f3a")
    # When it sends
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="Hello"))
    # Then the error is the provider's error 1 at HTTP 401 and names no secret
    error = caught.value
    assert (error.http_status, error.provider_code, error.gateway) == (401, "1", "clickatell")
    assert str(error).startswith("clickatell: error 1 ")
    for shown in (str(error), repr(error), repr(gateway), repr(gateway.account)):
        assert "not-the-key-9f3a" not in shown
    assert sandbox.state.messages() == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("25", RecipientRejected),
        ("26", RecipientRejected),
        ("27", RecipientRejected),
        ("28", RecipientRejected),
        ("20", AccountRejected),
        ("2", AccountRejected),
        ("3", AccountRejected),
        ("7", AccountRejected),
        ("18", TransientGatewayError),
        ("19", TransientGatewayError),
        ("43", RateLimited),
        ("21", PermanentGatewayError),
        ("22", PermanentGatewayError),
        ("24", PermanentGatewayError),
        ("40", PermanentGatewayError),
        ("44", PermanentGatewayError),
        ("45", PermanentGatewayError),
        ("46", PermanentGatewayError),
        ("100", PermanentGatewayError),
        ("999", PermanentGatewayError),
    ],
)
async def test_provider_error_codes_map_to_the_error_tree(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    code: str,
    expected: type[GatewayError],
) -> None:
    # Given the sandbox answers this recipient with a provider error code
    sandbox.state.set_faults("clickatell", "*", Faults(number_errors={"447700900123": code}))
    # When the adapter sends to it
    with pytest.raises(GatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))
    # Then the error has exactly the class the table gives, with the provider's code
    assert type(caught.value) is expected
    assert caught.value.provider_code == code
    if code == "999":
        assert "unknown code 999" in str(caught.value)
    # ... and the number is never in the message
    assert "447700900123" not in str(caught.value)


async def test_throttled_account_gets_rate_limited(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account the provider allows one request per second
    sandbox.state.add_account(
        SandboxAccount(provider="clickatell", name="slow", password="slow-key", rate_per_s=1)
    )
    gateway = _gateway(sandbox.url, http_session, password="slow-key")
    await gateway.send(OutboundSms(to=TO, text="first"))
    # When a second send follows at once
    with pytest.raises(RateLimited) as caught:
        await gateway.send(OutboundSms(to=TO, text="second"))
    # Then it is error 43, with the default wait (the Platform sends no retry hint)
    assert (caught.value.provider_code, caught.value.http_status) == ("43", 400)
    assert caught.value.retry_after_s == pytest.approx(1.0)


async def test_throttle_reply_honours_a_retry_after_header(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a provider that throttles with HTTP 429 and a Retry-After header, no body
    async def throttle(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "7"})

    async with _local_server(throttle) as url:
        # When the adapter sends
        with pytest.raises(RateLimited) as caught:
            await _gateway(url, http_session).send(OutboundSms(to=TO, text="Hi"))
    # Then the wait is the header's
    assert caught.value.retry_after_s == pytest.approx(7.0)


async def test_provider_fault_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request fails inside the provider
    sandbox.state.set_faults("clickatell", "*", Faults(error_next=1))
    # When the adapter sends
    with pytest.raises(TransientGatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))
    # Then it is error 19 at HTTP 503, to retry later
    assert type(caught.value) is TransientGatewayError
    assert (caught.value.http_status, caught.value.provider_code) == (503, "19")


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the provider hangs for 2 s and the adapter waits 0.5 s
    sandbox.state.set_faults("clickatell", "*", Faults(hang_next=1, hang_s=2))
    gateway = _gateway(sandbox.url, http_session, timeouts=Timeouts(total_s=0.5))
    started = time.monotonic()
    # When it sends
    with pytest.raises(OutcomeUnknown) as caught:
        await gateway.send(OutboundSms(to=TO, text="Hello"))
    # Then it gives up in time, knowing the message may have been accepted
    assert time.monotonic() - started < 1.5
    assert caught.value.request_sent


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the provider cuts the next connection
    sandbox.state.set_faults("clickatell", "*", Faults(drop_next=1))
    # When the adapter sends / Then the outcome is unknown (it may have been sent)
    with pytest.raises(OutcomeUnknown):
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # The 2017 /messages generation: an error text, no code.
        (
            202,
            {
                "messages": [
                    {
                        "apiMessageId": None,
                        "accepted": False,
                        "to": "447700900123",
                        "error": "Invalid destination address.",
                    }
                ],
                "error": None,
            },
            RecipientRejected,
        ),
        (401, {"error": "Authentication failed"}, AccountRejected),
        (400, {"error": "Something unexpected"}, PermanentGatewayError),
        (502, "<html>Bad gateway</html>", TransientGatewayError),
        # A 2xx without a usable answer: the message may have been accepted.
        (202, "not json", OutcomeUnknown),
        (202, {"messages": [{"accepted": True, "to": "447700900123"}]}, OutcomeUnknown),
        (202, {"messages": [{"accepted": True, "apiMessageId": ""}]}, OutcomeUnknown),
        (200, {"messages": []}, OutcomeUnknown),
        (202, {"messages": [], "errorCode": 20, "error": "No balance"}, AccountRejected),
    ],
)
async def test_replies_the_sandbox_does_not_give_are_classified(
    http_session: aiohttp.ClientSession,
    status: int,
    body: Any,
    expected: type[GatewayError],
) -> None:
    # Given a provider answering this reply
    async def answer(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    async with _local_server(answer) as url:
        # When the adapter sends / Then the reply maps to the expected class
        with pytest.raises(GatewayError) as caught:
            await _gateway(url, http_session).send(OutboundSms(to=TO, text="Hi"))
    assert type(caught.value) is expected


async def test_provider_text_echoing_the_request_is_made_safe(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a provider whose error text quotes the key, the message text and the number
    key = "echoed-key-5b2c"

    async def answer(request: web.Request) -> web.Response:
        error = f"Refused key {key} sending 'code 771234' to 447700900123"
        return web.json_response({"error": {"code": 23, "description": error}}, status=400)

    async with _local_server(answer) as url:
        # When the adapter sends
        with pytest.raises(PermanentGatewayError) as caught:
            await _gateway(url, http_session, password=key).send(
                OutboundSms(to=TO, text="code 771234")
            )
    # Then the provider's words are kept, without the key, the code or the whole number
    text = str(caught.value)
    assert key not in text and "771234" not in text and "447700900123" not in text
    assert text == "clickatell: error 23 (Refused key *** sending '***' to 447*****0123)"


# --- checks -------------------------------------------------------------------------------


async def test_connection_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the running sandbox and a port where nothing listens
    live = _gateway(sandbox.url, http_session)
    dead = _gateway(
        _closed_port_url(), http_session, timeouts=Timeouts(connect_s=0.5, connect_attempts=1)
    )
    # When both are checked / Then only the live one answers
    assert await live.test_connection()
    result = await dead.test_connection()
    assert not result
    assert "cannot connect" in result.reason


async def test_credentials_check_reads_the_balance(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox account with a balance of 100
    # When the credentials are checked
    result = await _gateway(sandbox.url, http_session).test_credentials()
    # Then the balance endpoint answered, and the reason says which endpoint proved the key
    assert result
    assert result.reason.startswith("balance endpoint answered: 100.00 USD")
    assert "/v1/balance" in result.reason


async def test_credentials_check_fails_on_a_wrong_key(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong key
    gateway = _gateway(sandbox.url, http_session, password="wrong-key-55")
    # When the credentials are checked
    result = await gateway.test_credentials()
    # Then the check fails, says the key was refused and never shows it
    assert not result
    assert "refused the integration API key" in result.reason
    assert "wrong-key-55" not in result.reason


async def test_credentials_check_is_honest_when_the_endpoint_is_missing(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a provider without /v1/balance
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async with _local_server(missing) as url:
        # When the credentials are checked
        result = await _gateway(url, http_session).test_credentials()
    # Then the check does not claim anything about the key
    assert not result
    assert "could not be checked" in result.reason


# --- configuration ------------------------------------------------------------------------


def test_missing_key_is_named(http_session: aiohttp.ClientSession) -> None:
    # Given an account without its API key
    account = GatewayAccount(name="t", gateway="clickatell")
    # When the adapter is built / Then the error names the field and the provider's name
    with pytest.raises(ConfigurationError, match=r"password \(integration API key\)"):
        ClickatellGateway(account, http_session)


def test_metadata_matches_the_entry_point() -> None:
    # Given / When the metadata is read / Then it is the Platform, which splits itself
    meta = ClickatellGateway.metadata
    assert meta.name == "clickatell"
    assert meta.url == "https://platform.clickatell.com"
    assert meta.required_fields() == ("password",)
    assert meta.capabilities.concatenates
    assert meta.capabilities.unicode
