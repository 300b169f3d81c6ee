"""The Twilio adapter against the sandbox's Twilio simulator (real HTTP), plus its error table."""

from __future__ import annotations

import json
import re
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
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
)
from gateways.http import Timeouts
from gateways.models import GatewayAccount, OutboundSms
from gateways.sandbox import Faults, SandboxAccount, SandboxServer
from gateways.twilio import QUEUE_FULL_RETRY_S, TwilioGateway

ACCOUNT_SID = "AC00000000000000000000000000000000"
AUTH_TOKEN = "sandbox-auth-token"
SENDER = "+15005550006"
SERVICE_SID = "MG" + "ab" * 16
KEY_SID = "SK" + "12" * 16
TO = "+447911123456"
SID = re.compile(r"SM[0-9a-f]{32}")


def make_account(url: str, **changes: Any) -> GatewayAccount:
    fields: dict[str, Any] = {
        "name": "t",
        "gateway": "twilio",
        "url": url,
        "account_id": ACCOUNT_SID,
        "password": AUTH_TOKEN,
        "sender": SENDER,
    }
    fields.update(changes)
    return GatewayAccount(**fields)


def make_gateway(
    sandbox: SandboxServer,
    session: aiohttp.ClientSession,
    timeouts: Timeouts | None = None,
    **changes: Any,
) -> TwilioGateway:
    return TwilioGateway(make_account(sandbox.url, **changes), session, timeouts=timeouts)


def free_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- sending ----------------------------------------------------------------------------------


async def test_gsm7_send_lands_in_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox account / When a GSM-7 text is sent
    receipt = await make_gateway(sandbox, http_session).send(OutboundSms(TO, "Your code is 1234"))
    # Then Twilio's message SID, segment count and initial status come back
    assert len(receipt.provider_message_ids) == 1
    assert SID.fullmatch(receipt.provider_message_ids[0])
    assert (receipt.segments, receipt.status) == (1, "queued")
    # And the simulator holds exactly what was sent
    [message] = sandbox.state.messages(provider="twilio")
    assert (message.to, message.sender, message.text) == (TO, SENDER, "Your code is 1234")
    assert (message.encoding, message.segments) == ("GSM-7", 1)
    assert message.message_ids == list(receipt.provider_message_ids)


async def test_ucs2_text_arrives_decoded(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    text = "Код: 1234 ✓ 😀"
    receipt = await make_gateway(sandbox, http_session).send(OutboundSms(TO, text))
    assert receipt.segments == 1
    [message] = sandbox.state.messages(provider="twilio")
    assert (message.text, message.encoding) == (text, "UCS-2")


async def test_long_message_reports_its_segments(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given 400 GSM-7 characters: 3 parts of at most 153
    text = "0123456789" * 40
    receipt = await make_gateway(sandbox, http_session).send(OutboundSms(TO, text))
    assert receipt.segments == 3
    [message] = sandbox.state.messages(provider="twilio")
    assert (message.text, message.segments) == (text, 3)


async def test_messaging_service_replaces_from(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account that sends through a Messaging Service and has no sender
    gateway = make_gateway(
        sandbox, http_session, sender=None, options={"messaging_service_sid": SERVICE_SID}
    )
    receipt = await gateway.send(OutboundSms(TO, "hello"))
    # Then Twilio accepts it without counting segments yet
    assert (receipt.status, receipt.segments) == ("accepted", None)
    [message] = sandbox.state.messages(provider="twilio")
    assert message.sender == SERVICE_SID


async def test_api_key_authenticates_as_user_id(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an API key of the sandbox account
    sandbox.state.add_account(
        SandboxAccount(
            provider="twilio",
            name="key",
            account_id=ACCOUNT_SID,
            user_id=KEY_SID,
            password="key-secret",
        )
    )
    # When the key SID and secret are used / Then the send is accepted under that key
    gateway = make_gateway(sandbox, http_session, user_id=KEY_SID, password="key-secret")
    assert (await gateway.send(OutboundSms(TO, "hi"))).provider_message_ids
    assert sandbox.state.messages(provider="twilio")[0].account == "key"
    # And the Auth Token is no longer accepted with the key SID as user
    wrong = make_gateway(sandbox, http_session, user_id=KEY_SID)
    with pytest.raises(AccountRejected):
        await wrong.send(OutboundSms(TO, "hi"))


# --- errors -----------------------------------------------------------------------------------


async def test_wrong_auth_token_is_account_rejected_without_the_secret(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(sandbox, http_session, password="not-the-token-xyz")
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(TO, "hi"))
    assert (caught.value.http_status, caught.value.provider_code) == (401, "20003")
    assert "not-the-token-xyz" not in str(caught.value)
    assert "not-the-token-xyz" not in repr(caught.value)
    assert "not-the-token-xyz" not in repr(gateway)
    assert "not-the-token-xyz" not in repr(gateway.account)
    assert sandbox.state.messages(provider="twilio") == []


@pytest.mark.parametrize("code", ["21211", "21408", "21608", "21610", "21612", "21614", "21635"])
async def test_recipient_codes_are_recipient_rejected(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, code: str
) -> None:
    # Given the simulator answers this recipient with a Twilio error code
    sandbox.state.set_faults("twilio", "*", Faults(number_errors={TO.lstrip("+"): code}))
    with pytest.raises(RecipientRejected) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(TO, "hi"))
    assert (caught.value.provider_code, caught.value.http_status) == (code, 400)
    # And the message masks the number even though Twilio's text may quote it
    assert TO not in str(caught.value)


async def test_magic_numbers_map_like_real_errors(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(sandbox, http_session)
    # Unsubscribed recipient (To +15005550004 -> 21610)
    with pytest.raises(RecipientRejected, match="21610"):
        await gateway.send(OutboundSms("+15005550004", "hi"))
    # Invalid sender (From +15005550001 -> 21212): permanent, neither recipient nor account
    with pytest.raises(PermanentGatewayError) as bad_sender:
        await gateway.send(OutboundSms(TO, "hi", sender="+15005550001"))
    assert type(bad_sender.value) is PermanentGatewayError
    assert bad_sender.value.provider_code == "21212"
    # Full sender queue (From +15005550008 -> 21611): retry much later
    with pytest.raises(RateLimited) as queue_full:
        await gateway.send(OutboundSms(TO, "hi", sender="+15005550008"))
    assert queue_full.value.retry_after_s == QUEUE_FULL_RETRY_S


async def test_throttle_is_rate_limited_with_the_retry_after(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account the simulator allows one request a second
    sandbox.state.add_account(
        SandboxAccount(
            provider="twilio",
            name="slow",
            account_id="AC" + "11" * 16,
            password="slow-token",
            rate_per_s=1,
        )
    )
    gateway = make_gateway(
        sandbox, http_session, account_id="AC" + "11" * 16, password="slow-token"
    )
    await gateway.send(OutboundSms(TO, "first"))
    # When a second request follows at once / Then Twilio's 20429 with its Retry-After
    with pytest.raises(RateLimited) as caught:
        await gateway.send(OutboundSms(TO, "second"))
    assert (caught.value.http_status, caught.value.provider_code) == (429, "20429")
    assert caught.value.retry_after_s == 1.0


async def test_server_error_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("twilio", "*", Faults(error_next=1))
    gateway = make_gateway(sandbox, http_session)
    with pytest.raises(TransientGatewayError) as caught:
        await gateway.send(OutboundSms(TO, "hi"))
    assert type(caught.value) is TransientGatewayError
    assert (caught.value.http_status, caught.value.provider_code) == (500, "20500")
    # And the next send goes through
    assert (await gateway.send(OutboundSms(TO, "hi"))).provider_message_ids


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("twilio", "*", Faults(hang_next=1, hang_s=2))
    gateway = make_gateway(sandbox, http_session, timeouts=Timeouts(total_s=0.5))
    with pytest.raises(OutcomeUnknown, match="did not answer in time"):
        await gateway.send(OutboundSms(TO, "hi"))


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("twilio", "*", Faults(drop_next=1))
    with pytest.raises(OutcomeUnknown) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(TO, "hi"))
    assert caught.value.request_sent
    assert sandbox.state.messages(provider="twilio") == []


# --- checks -----------------------------------------------------------------------------------


async def test_connection_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    assert await make_gateway(sandbox, http_session).test_connection()
    fast = Timeouts(connect_s=0.5, total_s=1, connect_attempts=1)
    closed = TwilioGateway(make_account(free_port_url()), http_session, timeouts=fast)
    result = await closed.test_connection()
    assert not result
    assert "cannot connect" in result.reason


async def test_credentials_check_reads_the_account_status(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the right credentials / Then the account resource says active
    good = await make_gateway(sandbox, http_session).test_credentials()
    assert good
    assert good.reason == f"account {ACCOUNT_SID} is active (Full)"
    # Given a wrong token / Then a failure naming Twilio's 20003, without the token
    bad = await make_gateway(sandbox, http_session, password="wrong-token-123").test_credentials()
    assert not bad
    assert "20003" in bad.reason
    assert "wrong-token-123" not in bad.reason
    # Given a suspended account / Then a failure saying so
    suspended_sid = "AC" + "22" * 16
    sandbox.state.add_account(
        SandboxAccount(
            provider="twilio", name="suspended-1", account_id=suspended_sid, password="tok"
        )
    )
    gateway = make_gateway(sandbox, http_session, account_id=suspended_sid, password="tok")
    suspended = await gateway.test_credentials()
    assert not suspended
    assert "suspended" in suspended.reason
    # And sending through it is refused as an account problem
    with pytest.raises(AccountRejected):
        await gateway.send(OutboundSms(TO, "hi"))


async def test_credentials_check_reports_an_unreachable_host(
    http_session: aiohttp.ClientSession,
) -> None:
    fast = Timeouts(connect_s=0.5, total_s=1, connect_attempts=1)
    gateway = TwilioGateway(make_account(free_port_url()), http_session, timeouts=fast)
    result = await gateway.test_credentials()
    assert not result
    assert "cannot connect" in result.reason


# --- configuration ----------------------------------------------------------------------------


def test_metadata() -> None:
    meta = TwilioGateway.metadata
    assert meta.name == "twilio"
    assert meta.url == "https://api.twilio.com"
    assert meta.required_fields() == ("account_id", "password")
    caps = meta.capabilities
    assert (caps.unicode, caps.concatenates, caps.max_segments) == (True, True, 10)
    assert caps.default_rate_per_s == 1.0


async def test_missing_required_fields_are_all_named(http_session: aiohttp.ClientSession) -> None:
    account = GatewayAccount(name="t", gateway="twilio", sender=SENDER)
    with pytest.raises(ConfigurationError) as caught:
        TwilioGateway(account, http_session)
    assert "account_id (Account SID)" in str(caught.value)
    assert "password (Auth Token or API Key secret)" in str(caught.value)


async def test_sender_or_messaging_service_is_required(
    http_session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TwilioGateway(make_account("http://127.0.0.1:1", sender=None), http_session)
    assert "sender" in str(caught.value)
    assert "messaging_service_sid" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"account_id": "ACME-1"}, "account_id (Account SID)"),
        ({"user_id": "alice"}, "user_id (API Key SID)"),
        ({"options": {"messaging_service_sid": "MG123"}}, "options.messaging_service_sid"),
        ({"options": {"status_callback": "ftp://x.example/cb"}}, "options.status_callback"),
        ({"options": {"status_callback": "https://my_host.example/cb"}}, "underscore"),
        ({"options": {"validity": 10}}, "options.validity"),
    ],
)
async def test_malformed_settings_are_named(
    http_session: aiohttp.ClientSession, changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        TwilioGateway(make_account("http://127.0.0.1:1", **changes), http_session)


# --- the error table, exhaustively (a scripted local server) ----------------------------------
# aioresponses 0.7 cannot build responses on aiohttp 3.14, so a tiny server plays Twilio.


@dataclass
class ScriptedTwilio:
    """Answers every request with one scripted reply and remembers what it was sent."""

    url: str = ""
    status: int = 201
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    async def handle(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.requests.append((request.path, dict(request.headers), form))
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedTwilio]:
    fake = ScriptedTwilio()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def twilio_error(code: int, status: int, message: str = "text") -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "code", "retry_after"),
    [
        (401, twilio_error(20003, 401), {}, AccountRejected, "20003", None),
        (400, twilio_error(10001, 400), {}, AccountRejected, "10001", None),
        (404, twilio_error(20404, 404), {}, AccountRejected, "20404", None),
        (429, twilio_error(20429, 429), {}, RateLimited, "20429", 1.0),
        (429, twilio_error(20429, 429), {"Retry-After": "7"}, RateLimited, "20429", 7.0),
        (400, twilio_error(21611, 400), {}, RateLimited, "21611", 60.0),
        (500, twilio_error(20500, 500), {}, TransientGatewayError, "20500", None),
        (503, twilio_error(20503, 503), {}, TransientGatewayError, "20503", None),
        (400, twilio_error(21211, 400), {}, RecipientRejected, "21211", None),
        (400, twilio_error(21408, 400), {}, RecipientRejected, "21408", None),
        (400, twilio_error(21608, 400), {}, RecipientRejected, "21608", None),
        (400, twilio_error(21610, 400), {}, RecipientRejected, "21610", None),
        (400, twilio_error(21612, 400), {}, RecipientRejected, "21612", None),
        (400, twilio_error(21614, 400), {}, RecipientRejected, "21614", None),
        (400, twilio_error(21635, 400), {}, RecipientRejected, "21635", None),
        (400, twilio_error(21212, 400), {}, PermanentGatewayError, "21212", None),
        (400, twilio_error(21606, 400), {}, PermanentGatewayError, "21606", None),
        (400, twilio_error(21659, 400), {}, PermanentGatewayError, "21659", None),
        (400, twilio_error(21602, 400), {}, PermanentGatewayError, "21602", None),
        (400, twilio_error(21603, 400), {}, PermanentGatewayError, "21603", None),
        (400, twilio_error(21604, 400), {}, PermanentGatewayError, "21604", None),
        (400, twilio_error(21609, 400), {}, PermanentGatewayError, "21609", None),
        (400, twilio_error(21617, 400), {}, PermanentGatewayError, "21617", None),
        # Unknown codes: permanent, unless the HTTP status says more.
        (400, twilio_error(99999, 400), {}, PermanentGatewayError, "99999", None),
        (503, twilio_error(99999, 503), {}, TransientGatewayError, "99999", None),
        (429, twilio_error(99998, 429), {"Retry-After": "3"}, RateLimited, "99998", 3.0),
        # The RFC 9457 shape.
        (
            400,
            {
                "type": "https://www.twilio.com/docs/errors/21211",
                "title": "Invalid 'To'",
                "status": 400,
                "code": 21211,
                "detail": "bad number",
                "instance": "/x",
            },
            {},
            RecipientRejected,
            "21211",
            None,
        ),
        # No Twilio body at all: by HTTP status.
        (502, "<html>bad gateway</html>", {}, TransientGatewayError, None, None),
        (429, "", {"Retry-After": "2"}, RateLimited, None, 2.0),
        (403, "", {}, AccountRejected, None, None),
        (418, "", {}, PermanentGatewayError, None, None),
    ],
)
async def test_error_table(
    http_session: aiohttp.ClientSession,
    scripted: ScriptedTwilio,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: type[GatewayError],
    code: str | None,
    retry_after: float | None,
) -> None:
    # Given Twilio answering the create request so
    scripted.reply(status, body, headers)
    gateway = TwilioGateway(make_account(scripted.url), http_session)
    # When sending / Then exactly the expected class, with Twilio's code and status
    with pytest.raises(GatewayError) as caught:
        await gateway.send(OutboundSms(TO, "hi"))
    assert type(caught.value) is expected
    assert caught.value.provider_code == code
    assert caught.value.http_status == status
    assert str(caught.value).startswith("twilio: ")
    if retry_after is not None:
        assert isinstance(caught.value, RateLimited)
        assert caught.value.retry_after_s == retry_after


async def test_unknown_code_quotes_twilio_with_numbers_masked(
    http_session: aiohttp.ClientSession, scripted: ScriptedTwilio
) -> None:
    said = f"The number {TO} cannot do that."
    scripted.reply(400, twilio_error(21999, 400, said))
    gateway = TwilioGateway(make_account(scripted.url), http_session)
    with pytest.raises(PermanentGatewayError) as caught:
        await gateway.send(OutboundSms(TO, "hi"))
    assert "unknown code 21999" in str(caught.value)
    assert "cannot do that" in str(caught.value)
    assert TO not in str(caught.value)
    assert "+44******3456" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [(201, {"status": "queued"}), (201, "not json"), (200, {"sid": ""})],
    ids=["no-sid", "not-json", "empty-sid"],
)
async def test_success_without_a_sid_is_outcome_unknown(
    http_session: aiohttp.ClientSession, scripted: ScriptedTwilio, status: int, body: Any
) -> None:
    # Given Twilio answers a 2xx without a usable message SID
    scripted.reply(status, body)
    gateway = TwilioGateway(make_account(scripted.url), http_session)
    # When sent / Then the outcome is unknown: Twilio may well have queued it
    with pytest.raises(OutcomeUnknown, match="without a message sid") as caught:
        await gateway.send(OutboundSms(TO, "hi"))
    assert caught.value.http_status == status


async def test_twilio_text_echoing_the_token_and_text_is_made_safe(
    http_session: aiohttp.ClientSession, scripted: ScriptedTwilio
) -> None:
    # Given an unknown error whose text quotes the auth token and the message text
    token = "echoed-token-88c1"
    said = f"Token {token} may not send 'pin 5521' to {TO}"
    scripted.reply(400, twilio_error(21999, 400, said))
    gateway = TwilioGateway(make_account(scripted.url, password=token), http_session)
    # When sent
    with pytest.raises(PermanentGatewayError) as caught:
        await gateway.send(OutboundSms(TO, "pin 5521"))
    # Then Twilio's words stay, without the token, the text or the whole number
    text = str(caught.value)
    assert token not in text and "5521" not in text and TO not in text
    assert "Token *** may not send '***' to +44******3456" in text


async def test_request_form_and_auth_header(
    http_session: aiohttp.ClientSession, scripted: ScriptedTwilio
) -> None:
    # Given an API-key account with a Messaging Service and a status callback
    callback = "https://hooks.example.com/twilio?x=1"
    scripted.reply(201, {"sid": "SM" + "0" * 32, "num_segments": "0"})
    account = make_account(
        scripted.url,
        user_id=KEY_SID,
        password="key-secret",
        options={"messaging_service_sid": SERVICE_SID, "status_callback": callback},
    )
    gateway = TwilioGateway(account, http_session)
    receipt = await gateway.send(OutboundSms("447911123456", "hi", sender="Acme"))
    assert receipt.segments is None
    [(path, headers, form)] = scripted.requests
    # Then the form goes to the account's Messages resource with Twilio's field names
    assert path == MESSAGES_PATH
    assert form == {
        "To": TO,
        "Body": "hi",
        "MessagingServiceSid": SERVICE_SID,
        "From": "Acme",
        "StatusCallback": callback,
    }
    # And Basic auth uses the key SID and secret
    assert headers["Authorization"] == aiohttp.encode_basic_auth(KEY_SID, "key-secret")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
