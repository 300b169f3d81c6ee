"""The Vonage adapter against the running sandbox, plus its error table against canned replies."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PartiallySent,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
)
from gateways.http import Timeouts, basic_auth_header
from gateways.models import GatewayAccount, OutboundSms
from gateways.registry import load_gateway
from gateways.sandbox import Faults, SandboxAccount, SandboxServer
from gateways.vonage import STATUS_TABLE, VonageGateway, throttle_retry_after

SECRET = "sandbox-secret"
TO = "+447700900123"
FAKE_BASE = "https://vonage.example"


def _account(url: str, **changes: Any) -> GatewayAccount:
    fields: dict[str, Any] = {
        "name": "t",
        "gateway": "vonage",
        "url": url,
        "user_id": "sandbox1",
        "password": SECRET,
        "sender": "AcmeShop",
        **changes,
    }
    return GatewayAccount.model_validate(fields)


def _gateway(
    url: str, session: aiohttp.ClientSession, timeouts: Timeouts | None = None, **changes: Any
) -> VonageGateway:
    return VonageGateway(_account(url, **changes), session, timeouts=timeouts)


def _sms(text: str = "Your code is 123456", to: str = TO, **extra: Any) -> OutboundSms:
    return OutboundSms(to=to, text=text, **extra)


def _assert_no_secret(error: BaseException) -> None:
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


# --- metadata and configuration ---------------------------------------------------------


def test_registered_as_vonage_and_nexmo() -> None:
    # Given the entry points, When both names are loaded, Then both give this adapter
    assert load_gateway("vonage") is VonageGateway
    assert load_gateway("nexmo") is VonageGateway
    meta = VonageGateway.metadata
    assert meta.required_fields() == ("user_id", "password", "sender")
    assert meta.url == "https://rest.nexmo.com"
    assert meta.capabilities.default_rate_per_s == 30
    assert meta.capabilities.concatenates


def test_missing_credentials_are_named(http_session: aiohttp.ClientSession) -> None:
    # Given an account without API key and secret
    account = GatewayAccount(name="t", gateway="vonage")
    # When an adapter is built, Then both fields are named, with Vonage's names
    with pytest.raises(ConfigurationError) as caught:
        VonageGateway(account, http_session)
    assert "user_id (API key)" in str(caught.value)
    assert "password (API secret)" in str(caught.value)


def test_nexmo_alias_account_is_accepted(http_session: aiohttp.ClientSession) -> None:
    # Given an account typed with the old name, When built, Then it works and hides the secret
    gateway = _gateway(FAKE_BASE, http_session, gateway="nexmo")
    assert gateway.base_url == FAKE_BASE
    assert SECRET not in repr(gateway)


def test_account_without_sender_is_refused(http_session: aiohttp.ClientSession) -> None:
    # Given an account without sender (Vonage needs `from` on every request)
    account = _account(FAKE_BASE, sender=None)
    # When an adapter is built, Then the sender is named with Vonage's name for it
    with pytest.raises(ConfigurationError, match=r"sender \(from\)"):
        VonageGateway(account, http_session)


def test_api_key_with_a_colon_is_refused(http_session: aiohttp.ClientSession) -> None:
    # Given an API key that cannot travel in a Basic header, When built, Then it is refused
    with pytest.raises(ConfigurationError, match=r"user_id \(API key\)"):
        VonageGateway(_account(FAKE_BASE, user_id="key:part"), http_session)


# --- sending through the sandbox --------------------------------------------------------


async def test_gsm7_send_reaches_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox account, When a GSM-7 message is sent
    receipt = await _gateway(sandbox.url, http_session).send(_sms("Hello €5 {ok}"))
    # Then one id comes back and the inbox holds exactly what was sent
    [message] = sandbox.state.messages(provider="vonage")
    assert receipt.provider_message_ids == tuple(message.message_ids)
    assert len(receipt.provider_message_ids) == 1
    assert receipt.segments == 1
    assert (message.to, message.text, message.sender) == (
        "447700900123",
        "Hello €5 {ok}",
        "AcmeShop",
    )
    assert (message.encoding, message.segments) == ("GSM-7", 1)


async def test_ucs2_send_keeps_the_text(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a text only UCS-2 can carry, and a message-level sender
    text = "Код: 4711 — ça marche 👍"
    # When it is sent
    await _gateway(sandbox.url, http_session).send(_sms(text, sender="15550001111"))
    # Then the inbox has it intact, as UCS-2, from the message's sender
    [message] = sandbox.state.messages(provider="vonage")
    assert (message.text, message.encoding, message.sender) == (text, "UCS-2", "15550001111")


async def test_long_message_returns_every_part_id(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a text of three GSM-7 segments
    text = "The quick brown fox jumps over the lazy dog. " * 9
    sms = _sms(text)
    assert sms.segments == 3
    # When it is sent
    receipt = await _gateway(sandbox.url, http_session).send(sms)
    # Then one id per part comes back and one inbox message holds the whole text
    [message] = sandbox.state.messages(provider="vonage")
    assert len(receipt.provider_message_ids) == 3
    assert receipt.segments == 3
    assert list(receipt.provider_message_ids) == message.message_ids
    assert (message.text, message.segments) == (text, 3)


async def test_long_client_ref_is_cut_to_its_last_40_characters(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a client ref longer than Vonage's 40 characters (the sandbox refuses those)
    ref = "job-" + "0123456789abcdef" * 3 + ":17"
    # When it is sent, Then Vonage accepts it
    receipt = await _gateway(sandbox.url, http_session).send(_sms(client_ref=ref))
    assert receipt.provider_message_ids


async def test_wrong_secret_is_account_rejected_without_leaking_it(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong API secret
    gateway = _gateway(sandbox.url, http_session, password="not-" + SECRET)
    # When sending, Then the account is rejected with Vonage's status 4
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(_sms())
    assert caught.value.provider_code == "4"
    assert str(caught.value).startswith("vonage: status 4 (Bad Credentials)")
    assert "not-" + SECRET not in str(caught.value)
    _assert_no_secret(caught.value)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("6", RecipientRejected),
        ("7", RecipientRejected),
        ("29", RecipientRejected),
        ("33", RecipientRejected),
        ("9", AccountRejected),
        ("15", PermanentGatewayError),
        ("5", TransientGatewayError),
        ("10", TransientGatewayError),
    ],
)
async def test_recipient_errors_map_by_status(
    code: str,
    expected: type[GatewayError],
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
) -> None:
    # Given the sandbox answers this recipient with a Vonage status
    sandbox.state.set_faults("vonage", "*", Faults(number_errors={TO.lstrip("+"): code}))
    # When sending to it
    with pytest.raises(GatewayError) as caught:
        await _gateway(sandbox.url, http_session).send(_sms())
    # Then the error class is exactly the mapped one, with the code and no secret
    assert type(caught.value) is expected
    assert caught.value.provider_code == code
    assert str(caught.value).startswith(f"vonage: status {code} (")
    _assert_no_secret(caught.value)


async def test_throttle_is_rate_limited_with_the_providers_wait(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account the sandbox allows 2 requests per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="vonage", name="slow", user_id="slow0001", password="slow-secret", rate_per_s=2
        )
    )
    gateway = _gateway(sandbox.url, http_session, user_id="slow0001", password="slow-secret")
    # When three messages go at once
    await gateway.send(_sms())
    await gateway.send(_sms())
    with pytest.raises(RateLimited) as caught:
        await gateway.send(_sms())
    # Then the third is throttled, told to wait about half a second (one token at 2/s)
    assert caught.value.provider_code == "1"
    assert 0.3 <= caught.value.retry_after_s <= 0.51


async def test_5xx_is_transient_and_the_next_send_works(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request fails with HTTP 500
    sandbox.state.set_faults("vonage", "*", Faults(error_next=1))
    gateway = _gateway(sandbox.url, http_session)
    # When sending twice
    with pytest.raises(TransientGatewayError) as caught:
        await gateway.send(_sms())
    receipt = await gateway.send(_sms())
    # Then the first is transient (HTTP 500) and the retry goes through
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.http_status == 500
    assert receipt.provider_message_ids


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request hangs past the adapter's 0.5 s timeout
    sandbox.state.set_faults("vonage", "*", Faults(hang_next=1, hang_s=2))
    gateway = _gateway(sandbox.url, http_session, timeouts=Timeouts(total_s=0.5))
    # When sending, Then the error says the message may have been accepted
    with pytest.raises(OutcomeUnknown, match="did not answer in time") as caught:
        await gateway.send(_sms())
    assert caught.value.request_sent
    _assert_no_secret(caught.value)


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next connection is cut without an answer
    sandbox.state.set_faults("vonage", "*", Faults(drop_next=1))
    # When sending, Then the outcome is unknown (here nothing was recorded)
    with pytest.raises(OutcomeUnknown):
        await _gateway(sandbox.url, http_session).send(_sms())
    assert sandbox.state.messages(provider="vonage") == []


@pytest.mark.parametrize(
    ("code", "failed_class"),
    [("7", RecipientRejected), ("1", RateLimited), ("5", TransientGatewayError)],
    ids=["barred", "throttled", "internal-error"],
)
async def test_a_part_failing_after_others_were_accepted_is_partially_sent(
    code: str,
    failed_class: type[GatewayError],
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
) -> None:
    # Given Vonage will refuse only part 2 of a three-part text, with this status
    sandbox.state.set_faults("vonage", "*", Faults(number_errors={TO.lstrip("+"): f"{code}@2"}))
    text = "The quick brown fox jumps over the lazy dog. " * 9
    # When it is sent
    with pytest.raises(PartiallySent) as caught:
        await _gateway(sandbox.url, http_session).send(_sms(text))
    # Then, whatever the part's status (even a throttle, otherwise retryable), the error is
    # final and carries the ids of the two parts that went out
    error = caught.value
    assert STATUS_TABLE[code][0] is failed_class
    assert isinstance(error, PermanentGatewayError)
    assert not isinstance(error, TransientGatewayError)
    [message] = sandbox.state.messages(provider="vonage")
    assert list(error.accepted_ids) == message.message_ids
    assert len(error.accepted_ids) == 2
    assert (error.provider_code, error.http_status) == (code, 200)
    assert str(error).startswith(f"vonage: status {code} (")
    assert "part 2 of 3; 2 of 3 parts were accepted" in str(error)
    _assert_no_secret(error)


async def test_accepted_but_connection_dropped_is_outcome_unknown_with_the_message_sent(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given Vonage takes the next message, then cuts the connection before answering
    sandbox.state.set_faults("vonage", "*", Faults(accept_then_drop_next=1))
    # When it is sent
    with pytest.raises(OutcomeUnknown):
        await _gateway(sandbox.url, http_session).send(_sms())
    # Then the message is on its way although the adapter could not know
    [message] = sandbox.state.messages(provider="vonage")
    assert message.text == "Your code is 123456"


# --- checks ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox and a port nobody listens on
    up = _gateway(sandbox.url, http_session)
    down = _gateway(
        f"http://127.0.0.1:{_closed_port()}",
        http_session,
        timeouts=Timeouts(connect_attempts=1, total_s=1),
    )
    # When both are checked, Then only the sandbox answers
    assert await up.test_connection()
    result = await down.test_connection()
    assert not result
    assert "cannot connect" in result.reason


async def test_credentials_check_reads_the_balance(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given good credentials, When checked, Then the balance endpoint's answer is reported
    result = await _gateway(sandbox.url, http_session).test_credentials()
    assert result.ok
    assert result.reason == "balance endpoint answered: 100.00 EUR"
    assert result.details["auto_reload"] == "false"
    assert sandbox.state.messages(provider="vonage") == []


async def test_credentials_check_fails_on_a_wrong_secret(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong secret, When checked
    result = await _gateway(sandbox.url, http_session, password="wrong-one").test_credentials()
    # Then it fails with Vonage's 401 and its label, never the secret
    assert not result.ok
    assert "HTTP 401" in result.reason
    assert "authentication failed" in result.reason
    assert "wrong-one" not in result.reason


async def test_credentials_check_fails_on_an_unreachable_host(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given nothing listening, When checked, Then it fails with the network reason
    gateway = _gateway(
        f"http://127.0.0.1:{_closed_port()}",
        http_session,
        timeouts=Timeouts(connect_attempts=1, total_s=1),
    )
    result = await gateway.test_credentials()
    assert not result.ok
    assert "cannot connect" in result.reason


# --- the error table, exhaustively, against canned replies -----------------------------


@dataclass
class Canned:
    """A stand-in Vonage on a loopback port: answers what it is told, keeps every request."""

    url: str = ""
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    forms: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)

    def answer(
        self,
        payload: Any = None,
        *,
        status: int = 200,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = json.dumps(payload) if body is None else body
        self.headers = headers or {}


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    """A :class:`Canned` server for the duration of one test."""
    state = Canned()

    async def handle(request: web.Request) -> web.Response:
        state.forms.append({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        state.auth_headers.append(request.headers.get("Authorization"))
        return web.Response(status=state.status, text=state.body, headers=state.headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


def _reply(*parts: dict[str, str]) -> dict[str, Any]:
    return {"message-count": str(len(parts)), "messages": list(parts)}


def _ok(message_id: str) -> dict[str, str]:
    return {"to": "447700900123", "message-id": message_id, "status": "0"}


def _failed(code: str, text: str = "") -> dict[str, str]:
    return {"status": code, "error-text": text} if text else {"status": code}


@pytest.mark.parametrize(("code", "entry"), sorted(STATUS_TABLE.items()))
async def test_every_status_in_the_table_raises_its_class(
    code: str,
    entry: tuple[type[GatewayError], str],
    http_session: aiohttp.ClientSession,
    canned: Canned,
) -> None:
    # Given Vonage answers one part with this status
    canned.answer(_reply(_failed(code, "Some text")))
    # When sending
    with pytest.raises(GatewayError) as caught:
        await _gateway(canned.url, http_session).send(_sms())
    # Then the class is exactly the table's, and the message quotes Vonage and explains
    assert type(caught.value) is entry[0]
    assert str(caught.value) == f"vonage: status {code} (Some text): {entry[1]}"
    assert (caught.value.provider_code, caught.value.http_status) == (code, 200)


@pytest.mark.parametrize("code", ["13", "16", "99"])
async def test_legacy_and_unknown_codes(
    code: str, http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given a code outside the current docs
    canned.answer(_reply(_failed(code)))
    with pytest.raises(GatewayError) as caught:
        await _gateway(canned.url, http_session).send(_sms())
    # Then 13 (comms failure) is transient and anything else permanent, "unknown code N"
    if code == "13":
        assert type(caught.value) is TransientGatewayError
    else:
        assert type(caught.value) is PermanentGatewayError
        assert f"unknown code {code}" in str(caught.value)


async def test_request_carries_vonage_fields_and_no_secret_in_the_body(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given a UCS-2 message with a long client ref
    ref = "x" * 10 + "job-0123456789abcdef0123456789abcdef:3"
    canned.answer(_reply(_ok("ID1")))
    # When it is sent
    await _gateway(canned.url, http_session).send(_sms("Привет", client_ref=ref))
    # Then the form has Vonage's fields, type=unicode, the last 40 ref characters
    [form] = canned.forms
    assert form == {
        "from": "AcmeShop",
        "to": "447700900123",
        "text": "Привет",
        "type": "unicode",
        "client-ref": ref[-40:],
    }
    assert len(form["client-ref"]) == 40
    # And the credentials travel only in the Basic header
    assert canned.auth_headers == [basic_auth_header("sandbox1", SECRET)]
    assert canned.auth_headers == [aiohttp.encode_basic_auth("sandbox1", SECRET, "utf-8")]
    assert SECRET not in json.dumps(form)


async def test_a_single_non_gsm_character_makes_the_piece_unicode(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given a mostly Latin text whose "ï" and curly quotes are outside GSM-7
    sms = OutboundSms(to=TO, text="naïve “quotes”")
    assert sms.encoding == "UCS-2"
    canned.answer(_reply(_ok("ID1")))
    await _gateway(canned.url, http_session).send(sms)
    # Then type=unicode is sent, so Vonage does not garble it
    assert canned.forms[0]["type"] == "unicode"


async def test_partial_failure_says_which_parts_were_accepted(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given Vonage accepted part 1 and barred part 2
    canned.answer(_reply(_ok("AAA111"), _failed("7", "Number Barred")))
    with pytest.raises(PartiallySent) as caught:
        await _gateway(canned.url, http_session).send(_sms("y" * 200))
    # Then the error names the failed part and the accepted one with its id
    message = str(caught.value)
    assert message.startswith("vonage: status 7 (Number Barred)")
    assert "part 2 of 2" in message
    assert "1 of 2 parts were accepted and will be delivered (message ids AAA111)" in message
    assert caught.value.accepted_ids == ("AAA111",)


async def test_a_throttled_part_next_to_an_accepted_one_is_not_retried(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given Vonage accepted part 1 and throttled part 2
    throttled = _failed("1", "Throughput Rate Exceeded - please wait [ 250 ] and retry")
    canned.answer(_reply(_ok("AAA111"), throttled))
    # When sending / Then it is PartiallySent, not RateLimited: a retry would send part 1 twice
    with pytest.raises(PartiallySent) as caught:
        await _gateway(canned.url, http_session).send(_sms("y" * 200))
    assert not isinstance(caught.value, RateLimited)
    assert (caught.value.provider_code, caught.value.accepted_ids) == ("1", ("AAA111",))


async def test_several_failed_parts_raise_the_worst(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given one part throttled and one refused for lack of credit, none accepted
    parts = (_failed("1", "Throughput Rate Exceeded - please wait [ 250 ] and retry"),
             _failed("9", "Partner Quota Exceeded"))  # fmt: skip
    canned.answer(_reply(*parts))
    with pytest.raises(GatewayError) as caught:
        await _gateway(canned.url, http_session).send(_sms("y" * 200))
    # Then the account-level error wins over the throttle
    assert type(caught.value) is AccountRejected
    assert caught.value.provider_code == "9"
    assert "2 of 2 parts failed, the worst being part 2; no part was accepted" in str(caught.value)


async def test_error_text_echoing_the_request_is_made_safe(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given an error text that quotes the secret, the message text and the number
    said = f"Refused {SECRET} for 'pin 6612' to 447700900123"
    canned.answer(_reply(_failed("3", said)))
    with pytest.raises(PermanentGatewayError) as caught:
        await _gateway(canned.url, http_session).send(_sms("pin 6612"))
    # Then Vonage's words stay, without any of them
    assert str(caught.value) == (
        "vonage: status 3 (Refused *** for '***' to 447*****0123): a parameter is invalid"
    )


async def test_throttled_parts_wait_for_the_longest_hint(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given two parts throttled with different hints
    text = "Throughput Rate Exceeded - please wait [ {} ] and retry"
    parts = (_failed("1", text.format(250)), _failed("1", text.format(1500)))
    canned.answer(_reply(*parts))
    with pytest.raises(RateLimited) as caught:
        await _gateway(canned.url, http_session).send(_sms("y" * 200))
    # Then the wait is the longer one, and the message says nothing went out
    assert caught.value.retry_after_s == 1.5
    assert "no part was accepted" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Throughput Rate Exceeded - please wait [ 250 ] and retry", 0.25),
        ("please wait [2000]", 2.0),
        ("please wait [ 0 ] and retry", 0.1),
        ("Throttled", 1.0),
    ],
)
def test_throttle_hint_is_milliseconds(text: str, seconds: float) -> None:
    # Given a throttle error text, Then its bracketed number is read as milliseconds
    assert throttle_retry_after(text) == seconds


async def test_http_429_is_rate_limited_with_retry_after(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given Vonage answers HTTP 429 with Retry-After
    canned.answer(status=429, body="Too Many Requests", headers={"Retry-After": "3"})
    with pytest.raises(RateLimited) as caught:
        await _gateway(canned.url, http_session).send(_sms())
    # Then the wait is Vonage's
    assert (caught.value.retry_after_s, caught.value.http_status) == (3.0, 429)


@pytest.mark.parametrize("status", [200, 401])
async def test_top_level_401_error_body_is_account_rejected(
    status: int, http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given a request-level auth error body (under HTTP 401, or 200)
    body = {"error-code": "401", "error-code-label": "authentication failed"}
    canned.answer(body, status=status)
    with pytest.raises(AccountRejected) as caught:
        await _gateway(canned.url, http_session).send(_sms())
    # Then the account is rejected, quoting Vonage's label
    assert caught.value.provider_code == "401"
    assert "authentication failed" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, "Bad Gateway", TransientGatewayError),
        (400, "Bad Request", PermanentGatewayError),
        (200, "<html>maintenance</html>", OutcomeUnknown),
        (200, json.dumps({"message-count": "1", "messages": []}), OutcomeUnknown),
        (
            200,
            json.dumps({"message-count": "1", "messages": [{"status": "0"}]}),
            OutcomeUnknown,
        ),
    ],
)
async def test_other_http_replies(
    status: int,
    body: str,
    expected: type[GatewayError],
    http_session: aiohttp.ClientSession,
    canned: Canned,
) -> None:
    # Given an HTTP error, or a 200 we cannot read (no JSON, no message id)
    canned.answer(status=status, body=body)
    with pytest.raises(GatewayError) as caught:
        await _gateway(canned.url, http_session).send(_sms())
    # Then the class follows the HTTP status; unreadable 200s leave the outcome unknown
    assert type(caught.value) is expected
    assert caught.value.http_status == status


async def test_balance_reply_without_value_fails_the_check(
    http_session: aiohttp.ClientSession, canned: Canned
) -> None:
    # Given a URL that answers 200 but is not Vonage
    canned.answer(status=200, body="<html></html>")
    result = await _gateway(canned.url, http_session).test_credentials()
    # Then the check fails and says why
    assert not result.ok
    assert "without a balance" in result.reason
