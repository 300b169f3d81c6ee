"""The Red Oxygen adapter, over real HTTP against the sandbox's Red Oxygen simulator."""

from __future__ import annotations

import re
import socket
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
from gateways.http import HttpReply, Timeouts
from gateways.models import GatewayAccount, OutboundSms
from gateways.redoxygen import RESULT_CODES, RedOxygenGateway, raise_for_reply
from gateways.sandbox import Faults, SandboxAccount, SandboxServer

PASSWORD = "sandbox-password"
TO = "+447700900123"


def make_gateway(
    sandbox: SandboxServer,
    session: aiohttp.ClientSession,
    *,
    timeouts: Timeouts | None = None,
    **fields: Any,
) -> RedOxygenGateway:
    values: dict[str, Any] = {
        "name": "t",
        "gateway": "redoxygen",
        "url": sandbox.url,
        "account_id": "CI00000001",
        "user_id": "sandbox@example.com",
        "password": PASSWORD,
    }
    values.update(fields)
    return RedOxygenGateway(GatewayAccount(**values), session, timeouts=timeouts)


def requests_seen(sandbox: SandboxServer) -> int:
    return sum(s["requests"] for s in sandbox.state.stats() if s["provider"] == "redoxygen")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- sending ---------------------------------------------------------------------------------


async def test_gsm_text_is_delivered_with_a_synthetic_id_from_client_ref(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the sandbox's default Red Oxygen account
    gateway = make_gateway(sandbox, http_session)
    # When a GSM-7 text (extension characters included) is sent with a client reference
    text = "Your code is 123456 [€5 {ok}]"
    receipt = await gateway.send(OutboundSms(to=TO, text=text, client_ref="job-1:0"))
    # Then the receipt holds our synthetic id (Red Oxygen returns none)
    assert receipt.provider_message_ids == ("redoxygen:job-1:0",)
    # And the simulator received the digits and the exact text
    [message] = sandbox.state.messages(provider="redoxygen")
    assert message.to == "447700900123"
    assert message.text == text
    assert message.encoding == "GSM-7"
    assert message.segments == 1
    assert message.account == "sandbox"


async def test_without_client_ref_each_send_gets_its_own_id(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(sandbox, http_session)
    first = await gateway.send(OutboundSms(to=TO, text="one"))
    second = await gateway.send(OutboundSms(to=TO, text="two"))
    assert re.fullmatch(r"redoxygen:[0-9a-f]{32}", first.provider_message_ids[0])
    assert first.provider_message_ids != second.provider_message_ids


async def test_long_text_goes_as_one_request_and_arrives_whole(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a 3-segment GSM text
    text = ("The quick brown fox jumps over the lazy dog. " * 9)[:400]
    gateway = make_gateway(sandbox, http_session)
    # When sent
    await gateway.send(OutboundSms(to=TO, text=text))
    # Then Red Oxygen concatenates it: one inbox message of 3 segments
    [message] = sandbox.state.messages(provider="redoxygen")
    assert message.text == text
    assert message.segments == 3


async def test_exactly_765_septets_is_accepted_untruncated(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    text = "x" * 765
    await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text=text))
    [message] = sandbox.state.messages(provider="redoxygen")
    assert message.text == text


@pytest.mark.parametrize(
    "text",
    ["Привет, код 1234", "Merci, ça va"],
    ids=["cyrillic", "one-non-gsm-character"],
)
async def test_unicode_text_is_refused_before_any_request(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, text: str
) -> None:
    # Given text outside GSM-7 (Red Oxygen documents no Unicode), even one "ç"
    gateway = make_gateway(sandbox, http_session)
    # When sent
    with pytest.raises(PermanentGatewayError) as caught:
        await gateway.send(OutboundSms(to=TO, text=text))
    # Then it is refused as permanent, without reaching the provider
    assert type(caught.value) is PermanentGatewayError
    assert caught.value.request_sent is False
    assert "Unicode" in str(caught.value)
    assert requests_seen(sandbox) == 0
    assert sandbox.state.messages(provider="redoxygen") == []


@pytest.mark.parametrize("text", ["x" * 766, "€" * 383], ids=["766-chars", "766-septets"])
async def test_text_red_oxygen_would_truncate_is_refused_before_any_request(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, text: str
) -> None:
    # Given a text beyond 765 septets (383 euro signs are 766 septets in 383 characters)
    gateway = make_gateway(sandbox, http_session)
    # When sent / Then refused up front rather than silently truncated by the provider
    with pytest.raises(PermanentGatewayError, match="765") as caught:
        await gateway.send(OutboundSms(to=TO, text=text))
    assert caught.value.request_sent is False
    assert requests_seen(sandbox) == 0


async def test_password_travels_in_the_body_and_action_in_the_query(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a local server that records what it receives
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        seen.append((request.method, request.path_qs, form))
        return web.Response(text="0000 Message accepted")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        account = GatewayAccount(
            name="t",
            gateway="redoxygen",
            url=f"http://127.0.0.1:{port}",
            account_id="CI00000001",
            user_id="a@example.com",
            password=PASSWORD,
        )
        # When a message is sent
        await RedOxygenGateway(account, http_session).send(OutboundSms(to=TO, text="hi"))
    finally:
        await runner.cleanup()
    # Then only Action is in the query, everything else in the form body
    assert seen == [
        (
            "POST",
            "/sms.dll?Action=SendSMS",
            {
                "AccountId": "CI00000001",
                "Email": "a@example.com",
                "Password": PASSWORD,
                "Recipient": "447700900123",
                "Message": "hi",
            },
        )
    ]
    assert RedOxygenGateway.metadata.url == "https://www2.redoxygen.net"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"password": "wrong-password"}, "1004"),
        ({"account_id": "CI99999999"}, "1001"),
        ({"user_id": "someone@example.com"}, "1002"),
    ],
    ids=["password", "account-id", "email"],
)
async def test_wrong_credentials_reject_the_account(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    fields: dict[str, Any],
    code: str,
) -> None:
    gateway = make_gateway(sandbox, http_session, **fields)
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="hi"))
    assert caught.value.provider_code == code
    assert str(caught.value).startswith(f"redoxygen: result {code} (")
    assert sandbox.state.messages(provider="redoxygen") == []


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("2001", RecipientRejected),
        ("2003", RecipientRejected),
        ("3001", AccountRejected),
        ("2002", PermanentGatewayError),
        ("7777", PermanentGatewayError),
    ],
)
async def test_per_number_result_codes_are_classified(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    code: str,
    error_class: type[GatewayError],
) -> None:
    # Given the simulator answers this code for one recipient
    sandbox.state.set_faults("redoxygen", "*", Faults(number_errors={"447700900123": code}))
    # When a message goes to it
    with pytest.raises(error_class) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))
    # Then the error class follows the table (exactly, not a subclass)
    assert type(caught.value) is error_class
    assert caught.value.provider_code == code
    if code == "7777":
        assert "unknown code 7777" in str(caught.value)


async def test_throttle_is_rate_limited_with_the_retry_after_hint(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account limited to 1 request per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="redoxygen",
            name="slow",
            account_id="CI00000002",
            user_id="slow@example.com",
            password="slow-password",
            rate_per_s=1,
        )
    )
    gateway = make_gateway(
        sandbox,
        http_session,
        account_id="CI00000002",
        user_id="slow@example.com",
        password="slow-password",
    )
    # When two messages go at once
    await gateway.send(OutboundSms(to=TO, text="first"))
    with pytest.raises(RateLimited) as caught:
        await gateway.send(OutboundSms(to=TO, text="second"))
    # Then the second is throttled with the simulator's (invented) code and Retry-After
    assert caught.value.provider_code == "9001"
    assert caught.value.retry_after_s == 1.0
    assert len(sandbox.state.messages(provider="redoxygen")) == 1


async def test_server_error_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("redoxygen", "*", Faults(error_next=1))
    with pytest.raises(TransientGatewayError) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.http_status == 500
    assert caught.value.provider_code == "9000"


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("redoxygen", "*", Faults(hang_next=1, hang_s=2))
    gateway = make_gateway(sandbox, http_session, timeouts=Timeouts(total_s=0.5))
    with pytest.raises(OutcomeUnknown, match="did not answer in time"):
        await gateway.send(OutboundSms(to=TO, text="hi"))


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("redoxygen", "*", Faults(drop_next=1))
    with pytest.raises(OutcomeUnknown) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))
    assert caught.value.request_sent is True


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        *[(200, f"{code} Some text", cls) for code, (cls, _) in RESULT_CODES.items()],
        (200, "8123 Something new", PermanentGatewayError),
        # A 2xx without a result code: the message may have been accepted.
        (200, "Server says hello", OutcomeUnknown),
        (202, "", OutcomeUnknown),
        (404, "Not found", PermanentGatewayError),
        (502, "<html>Bad gateway</html>", TransientGatewayError),
        (403, "", AccountRejected),
        (500, "1004 Invalid password", AccountRejected),
    ],
)
def test_every_reply_maps_to_exactly_one_error_class(
    status: int, body: str, error_class: type[GatewayError]
) -> None:
    # Given a reply / When classified / Then exactly the table's class is raised
    reply = HttpReply(status, {"Retry-After": "3"}, body.encode())
    with pytest.raises(GatewayError) as caught:
        raise_for_reply(reply)
    assert type(caught.value) is error_class
    assert caught.value.gateway == "redoxygen"
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after_s == 3.0


@pytest.mark.parametrize("status", [200, 202, 500])
def test_a_0000_reply_is_accepted_whatever_the_status(status: int) -> None:
    # Given Red Oxygen's own success code / When classified / Then nothing is raised
    raise_for_reply(HttpReply(status, {}, b"0000 Message accepted\r\n"))


def test_result_text_echoing_the_request_is_made_safe() -> None:
    # Given a result text that quotes the password, the message text and the number
    body = b"2001 Bad recipient 61412345678 for s3cret-pw: 'your pin 9911'"
    # When classified with the secrets
    with pytest.raises(RecipientRejected) as caught:
        raise_for_reply(HttpReply(200, {}, body), secrets=("s3cret-pw", "your pin 9911"))
    # Then the text keeps its sense but none of them
    assert str(caught.value) == "redoxygen: result 2001 (Bad recipient 614****5678 for ***: '***')"


# --- checks ----------------------------------------------------------------------------------


async def test_connection_check_reaches_the_host(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    result = await make_gateway(sandbox, http_session).test_connection()
    assert result.ok, result.reason


async def test_connection_check_fails_on_a_closed_port(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(
        sandbox,
        http_session,
        url=f"http://127.0.0.1:{closed_port()}",
        timeouts=Timeouts(connect_attempts=1),
    )
    result = await gateway.test_connection()
    assert not result.ok
    assert "cannot connect" in result.reason


async def test_credential_check_says_plainly_it_cannot_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a well-formed account / When its credentials are "checked"
    result = await make_gateway(sandbox, http_session).test_credentials()
    # Then the check does not claim success: skipped, and the reason says why
    assert not result.ok
    assert result.skipped
    assert "no credential" in result.reason
    assert "real send" in result.reason
    # And nothing was sent
    assert requests_seen(sandbox) == 0


async def test_credential_check_fails_on_an_email_that_is_not_one(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    result = await make_gateway(sandbox, http_session, user_id="sandbox").test_credentials()
    assert not result.ok
    assert not result.skipped
    assert "Email" in result.reason


# --- configuration and secrets ---------------------------------------------------------------


def test_missing_fields_are_all_named() -> None:
    account = GatewayAccount(name="t", gateway="redoxygen")
    with pytest.raises(ConfigurationError) as caught:
        RedOxygenGateway.check_account(account)
    message = str(caught.value)
    for label in ("account_id (AccountId)", "user_id (Email)", "password (Password)"):
        assert label in message


def test_metadata_is_registered_under_its_entry_point_name() -> None:
    from gateways.registry import load_gateway

    assert load_gateway("redoxygen") is RedOxygenGateway
    assert RedOxygenGateway.metadata.capabilities.unicode is False
    assert RedOxygenGateway.metadata.capabilities.max_segments == 5


async def test_no_secret_or_text_in_errors_or_repr(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account with a wrong password and a text holding an access code
    secret = "wrong-password-s3cr3t"
    gateway = make_gateway(sandbox, http_session, password=secret)
    errors: list[GatewayError] = []
    for sms in (
        OutboundSms(to=TO, text="code 918273"),
        OutboundSms(to=TO, text="код 918273"),
        OutboundSms(to=TO, text="918273" * 200),
    ):
        with pytest.raises(GatewayError) as caught:
            await gateway.send(sms)
        errors.append(caught.value)
    # Then neither the password, the code nor the number shows anywhere
    for shown in [*(str(e) for e in errors), *(repr(e) for e in errors), repr(gateway)]:
        assert secret not in shown
        assert "918273" not in shown
        assert "447700900123" not in shown
