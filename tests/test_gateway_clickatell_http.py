"""The Clickatell legacy HTTP adapter (``clickatell-http``) against the sandbox."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateways.clickatell_http import ClickatellHttpGateway, climsgid_for, ucs2_hex
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
from gateways.sandbox import DEFAULT_ACCOUNTS, Faults, SandboxAccount, SandboxServer

TO = "+447700900123"
CREDENTIALS = {"account_id": "3500001", "user_id": "sandbox", "password": "sandbox-password"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _gateway(
    url: str,
    session: aiohttp.ClientSession,
    *,
    timeouts: Timeouts | None = None,
    **fields: Any,
) -> ClickatellHttpGateway:
    values: dict[str, Any] = {"name": "t", "gateway": "clickatell-http", "url": url}
    values.update(CREDENTIALS)
    values.update(fields)
    return ClickatellHttpGateway(GatewayAccount(**values), session, timeouts=timeouts)


@asynccontextmanager
async def _local_server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


# --- encoding helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Hi", "00480069"), ("€", "20AC"), ("😀", "D83DDE00"), ("Я😀", "042FD83DDE00")],
)
def test_ucs2_hex_is_utf16be_with_surrogate_pairs(text: str, expected: str) -> None:
    # Given a text / When it is encoded for unicode=1 / Then it is UTF-16BE hex
    assert ucs2_hex(text) == expected


def test_climsgid_is_alphanumeric_and_at_most_32() -> None:
    # Given references that fit and ones that do not
    # When they become climsgid values
    kept = climsgid_for("job42part1")
    hashed = climsgid_for("job-42:1")
    other = climsgid_for("job-4:21")
    long_one = climsgid_for("x" * 40)
    # Then a fitting one is kept, others become distinct 32-hex digests, none is invalid
    assert kept == "job42part1"
    assert hashed is not None and other is not None and long_one is not None
    assert len(hashed) == len(other) == len(long_one) == 32
    assert hashed != other
    assert all(value.isalnum() for value in (hashed, other, long_one))
    assert climsgid_for(None) is None
    assert climsgid_for("") is None


# --- sending ------------------------------------------------------------------------------


async def test_gsm7_send_is_accepted_and_lands_in_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox's default legacy account and a sender
    gateway = _gateway(sandbox.url, http_session, sender="27999000000")
    # When a GSM-7 text is sent
    receipt = await gateway.send(OutboundSms(to=TO, text="Your code: 123456 @ £5"))
    # Then the apimsgid comes back and the inbox holds the text as sent
    (message_id,) = receipt.provider_message_ids
    assert len(message_id) == 32
    (message,) = sandbox.state.messages(provider="clickatell-http")
    assert message.to == "447700900123"
    assert message.text == "Your code: 123456 @ £5"
    assert message.sender == "27999000000"
    assert (message.encoding, message.segments) == ("GSM-7", 1)
    assert message.message_ids == [message_id]


async def test_ucs2_text_travels_as_hex_and_arrives_intact(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a text with Greek, Cyrillic and an emoji
    text = "Κωδικός / Код 4821 😀"
    # When it is sent (the text makes it UCS-2)
    await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text=text))
    # Then the sandbox decoded the hex back to the exact text
    (message,) = sandbox.state.messages(provider="clickatell-http")
    assert message.text == text
    assert (message.encoding, message.segments) == ("UCS-2", 1)


async def test_long_text_is_sent_with_concat(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a UCS-2 text of 150 characters: 3 segments
    text = "Ж" * 150
    # When it is sent as one piece
    receipt = await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text=text))
    # Then the gateway accepted it (concat=3) and counts three segments
    assert len(receipt.provider_message_ids) == 1
    (message,) = sandbox.state.messages(provider="clickatell-http")
    assert (message.text, message.segments) == (text, 3)


async def test_a_text_beyond_the_three_part_concat_limit_is_refused(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a 600-character text: 4 segments, one more than concat allows
    sms = OutboundSms(to=TO, text="a" * 600)
    assert sms.segments == 4
    # When it is sent (the worker never plans this; the gateway is the last line)
    # Then the gateway refuses it with error 113, a permanent error, and nothing is sent
    with pytest.raises(PermanentGatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(sms)
    assert type(caught.value) is PermanentGatewayError
    assert caught.value.provider_code == "113"
    assert sandbox.state.messages(provider="clickatell-http") == []


async def test_request_has_the_documented_wire_format(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a local server that records the form it receives
    seen: dict[str, Any] = {}

    async def record(request: web.Request) -> web.Response:
        form = await request.post()
        seen.update(
            method=request.method, path=request.path, query=dict(request.query), form=dict(form)
        )
        return web.Response(text="ID: " + "b" * 32)

    async with _local_server(record) as url:
        # When a two-segment UCS-2 piece (81 characters) with sender and reference is sent
        await _gateway(url, http_session, options={"callback": 3}).send(
            OutboundSms(
                to=TO, text="Hi" * 40 + "Ж", sender="Acme", client_ref="job-7:1",
            )
        )  # fmt: skip
    # Then it is a form POST to /http/sendmsg, credentials in the body, never the URL
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/http/sendmsg", {})
    assert seen["form"] == {
        "user": "sandbox",
        "password": "sandbox-password",
        "api_id": "3500001",
        "to": "447700900123",
        "text": "00480069" * 40 + "0416",
        "unicode": "1",
        "concat": "2",
        "from": "Acme",
        "climsgid": climsgid_for("job-7:1"),
        "callback": "3",
    }


# --- errors -------------------------------------------------------------------------------


async def test_wrong_password_is_account_rejected_without_leaking_it(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an adapter with a wrong password
    gateway = _gateway(sandbox.url, http_session, password="not-it-7c1e")
    # When it sends
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="Hello"))
    # Then it is ERR 001 and no secret is shown anywhere
    assert caught.value.provider_code == "001"
    assert str(caught.value) == "clickatell-http: ERR 001 (Authentication failed)"
    for shown in (str(caught.value), repr(caught.value), repr(gateway), repr(gateway.account)):
        assert "not-it-7c1e" not in shown


async def test_wrong_api_id_is_account_rejected(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the right user and password on another API ID
    gateway = _gateway(sandbox.url, http_session, account_id="3599999")
    # When it sends / Then it is ERR 108
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="Hello"))
    assert caught.value.provider_code == "108"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("105", RecipientRejected),
        ("121", RecipientRejected),
        ("122", RecipientRejected),
        ("128", RecipientRejected),
        ("004", AccountRejected),
        ("007", AccountRejected),
        ("301", AccountRejected),
        ("302", AccountRejected),
        # We never use sessions: a session error means the account is not what we think.
        ("003", AccountRejected),
        ("005", AccountRejected),
        ("114", TransientGatewayError),
        ("901", TransientGatewayError),
        ("130", RateLimited),
        ("106", PermanentGatewayError),
        ("123", PermanentGatewayError),
        ("999", PermanentGatewayError),
    ],
)
async def test_err_codes_map_to_the_error_tree(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    code: str,
    expected: type[GatewayError],
) -> None:
    # Given the sandbox answers this recipient with an ERR code
    sandbox.state.set_faults("clickatell-http", "*", Faults(number_errors={"447700900123": code}))
    # When the adapter sends to it
    with pytest.raises(GatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))
    # Then the class is exactly the table's, with the code, and never the number
    assert type(caught.value) is expected
    assert caught.value.provider_code == code
    assert "447700900123" not in str(caught.value)
    if code == "999":
        assert "unknown code 999" in str(caught.value)
    if code == "130":
        # the sandbox names a cap lifting 60 s from now
        assert isinstance(caught.value, RateLimited)
        assert 55 <= caught.value.retry_after_s <= 61


async def test_throttled_account_is_rate_limited_until_the_named_time(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account the gateway allows one request per second
    slow = SandboxAccount(
        provider="clickatell-http",
        name="slow",
        account_id="3500002",
        user_id="slow",
        password="slow-password",
        rate_per_s=1,
    )
    sandbox.state.add_account(slow)
    gateway = _gateway(
        sandbox.url, http_session, account_id="3500002", user_id="slow", password="slow-password"
    )
    await gateway.send(OutboundSms(to=TO, text="first"))
    # When a second send follows at once
    with pytest.raises(RateLimited) as caught:
        await gateway.send(OutboundSms(to=TO, text="second"))
    # Then it is ERR 130, waiting until the UNIX time the gateway named (at least 1 s)
    assert caught.value.provider_code == "130"
    assert 1.0 <= caught.value.retry_after_s <= 2.5


async def test_provider_fault_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request fails inside the gateway
    sandbox.state.set_faults("clickatell-http", "*", Faults(error_next=1))
    # When the adapter sends / Then it is ERR 901 at HTTP 500, transient
    with pytest.raises(TransientGatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))
    assert type(caught.value) is TransientGatewayError
    assert (caught.value.http_status, caught.value.provider_code) == (500, "901")


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the gateway hangs for 2 s and the adapter waits 0.5 s
    sandbox.state.set_faults("clickatell-http", "*", Faults(hang_next=1, hang_s=2))
    gateway = _gateway(sandbox.url, http_session, timeouts=Timeouts(total_s=0.5))
    started = time.monotonic()
    # When it sends / Then it gives up in time, the outcome unknown
    with pytest.raises(OutcomeUnknown):
        await gateway.send(OutboundSms(to=TO, text="Hello"))
    assert time.monotonic() - started < 1.5


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the gateway cuts the next connection
    sandbox.state.set_faults("clickatell-http", "*", Faults(drop_next=1))
    # When the adapter sends / Then the outcome is unknown (it may have been sent)
    with pytest.raises(OutcomeUnknown):
        await _gateway(sandbox.url, http_session).send(OutboundSms(to=TO, text="Hello"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "ERR: 121, Destination mobile number blocked To: 447700900123", RecipientRejected),
        (502, "<html>Bad gateway</html>", TransientGatewayError),
        # A 2xx without an ID line: the message may have been accepted.
        (200, "Something else", OutcomeUnknown),
        (200, "", OutcomeUnknown),
        (202, "OK", OutcomeUnknown),
        (404, "Not found", PermanentGatewayError),
    ],
)
async def test_replies_the_sandbox_does_not_give_are_classified(
    http_session: aiohttp.ClientSession, status: int, body: str, expected: type[GatewayError]
) -> None:
    # Given a gateway answering this reply
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    async with _local_server(answer) as url:
        # When the adapter sends / Then the reply maps to the expected class
        with pytest.raises(GatewayError) as caught:
            await _gateway(url, http_session).send(OutboundSms(to=TO, text="Hi"))
    assert type(caught.value) is expected
    assert "447700900123" not in str(caught.value)


async def test_err_description_echoing_the_request_is_made_safe(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a gateway whose unknown error quotes the password and the message text
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ERR: 999, Odd request password=sandbox-password text=pin 4417")

    async with _local_server(answer) as url:
        # When the adapter sends
        with pytest.raises(PermanentGatewayError) as caught:
            await _gateway(url, http_session).send(OutboundSms(to=TO, text="pin 4417"))
    # Then the description is kept without either
    assert str(caught.value) == (
        "clickatell-http: unknown code 999 (Odd request password=*** text=***)"
    )


# --- checks -------------------------------------------------------------------------------


async def test_connection_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the running sandbox and a port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    dead = _gateway(dead_url, http_session, timeouts=Timeouts(connect_s=0.5, connect_attempts=1))
    # When both are checked / Then only the live one answers
    assert await _gateway(sandbox.url, http_session).test_connection()
    assert not await dead.test_connection()


async def test_credentials_check_reads_the_balance(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox account holds 123.5 credits
    default = next(a for a in DEFAULT_ACCOUNTS if a.provider == "clickatell-http")
    sandbox.state.add_account(default.model_copy(update={"balance": 123.5}))
    # When the credentials are checked
    result = await _gateway(sandbox.url, http_session).test_credentials()
    # Then getbalance answered
    assert result
    assert result.reason == "balance endpoint answered: 123.5 credits"


async def test_credentials_check_fails_on_a_wrong_password(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong password
    gateway = _gateway(sandbox.url, http_session, password="wrong-pw-31")
    # When the credentials are checked
    result = await gateway.test_credentials()
    # Then the check fails with the gateway's reason, never the password
    assert not result
    assert "Authentication failed" in result.reason
    assert "wrong-pw-31" not in result.reason


# --- configuration ------------------------------------------------------------------------


def test_missing_fields_are_all_named(http_session: aiohttp.ClientSession) -> None:
    # Given an account with none of the three credentials
    account = GatewayAccount(name="t", gateway="clickatell-http")
    # When the adapter is built / Then every missing field is named with Clickatell's name
    with pytest.raises(ConfigurationError) as caught:
        ClickatellHttpGateway(account, http_session)
    message = str(caught.value)
    assert "account_id (API ID)" in message
    assert "user_id (user)" in message
    assert "password" in message


@pytest.mark.parametrize("options", [{"callback": 9}, {"callbak": 2}])
def test_bad_options_are_refused(
    http_session: aiohttp.ClientSession, options: dict[str, Any]
) -> None:
    # Given an out-of-range callback level or a misspelt option
    account = GatewayAccount(name="t", gateway="clickatell-http", options=options, **CREDENTIALS)
    # When the adapter is built / Then the options are refused
    with pytest.raises(ConfigurationError, match="options"):
        ClickatellHttpGateway(account, http_session)


def test_metadata_matches_the_entry_point() -> None:
    # Given / When the metadata is read / Then it is the legacy API, at most 3 parts
    meta = ClickatellHttpGateway.metadata
    assert meta.name == "clickatell-http"
    assert meta.url == "https://api.clickatell.com"
    assert meta.required_fields() == ("account_id", "user_id", "password")
    assert meta.capabilities.max_segments == 3
