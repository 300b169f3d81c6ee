"""The Bulletin adapter, over real HTTP against the sandbox's Bulletin Connect simulator."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateways.bulletin import BulletinGateway, error_for_send, message_id_for
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
from gateways.sandbox import Faults, SandboxAccount, SandboxServer

PASSWORD = "sandbox-password"
TO = "+447700900123"


def make_gateway(
    sandbox: SandboxServer,
    session: aiohttp.ClientSession,
    *,
    timeouts: Timeouts | None = None,
    **fields: Any,
) -> BulletinGateway:
    values: dict[str, Any] = {
        "name": "t",
        "gateway": "bulletin",
        "url": sandbox.url,
        "user_id": "sandbox",
        "password": PASSWORD,
    }
    values.update(fields)
    return BulletinGateway(GatewayAccount(**values), session, timeouts=timeouts)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- sending ---------------------------------------------------------------------------------


async def test_gsm_text_is_delivered_and_client_ref_is_the_message_id(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the default Bulletin account with a sender
    gateway = make_gateway(sandbox, http_session, sender="Acme")
    text = "Your code is 123456 [€5]"
    # When a GSM-7 text is sent with a client reference
    receipt = await gateway.send(OutboundSms(to=TO, text=text, client_ref="job-1:0"))
    # Then our messageId is the provider id (Bulletin echoes it in receipts)
    assert receipt.provider_message_ids == ("job-1:0",)
    assert receipt.segments == 1
    [message] = sandbox.state.messages(provider="bulletin")
    assert (message.to, message.text, message.sender) == ("447700900123", text, "Acme")
    assert message.encoding == "GSM-7"
    assert message.message_ids == ["job-1:0"]


async def test_ucs2_text_arrives_intact(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given text outside GSM-7, an emoji (a surrogate pair) included
    text = "Ваш код 123456 👋 ça"
    # When sent (the text makes it UCS-2)
    await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text=text))
    # Then the simulator delivered it as UCS-2, character for character (no "?")
    [message] = sandbox.state.messages(provider="bulletin")
    assert message.text == text
    assert message.encoding == "UCS-2"


async def test_one_character_outside_gsm_makes_the_message_unicode(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a French text whose only non-GSM character is "ç"
    sms = OutboundSms(to=TO, text="Merci, ça va")
    assert sms.encoding == "UCS-2"
    # When sent / Then it went marked as UTF-16 and arrived intact as UCS-2
    await make_gateway(sandbox, http_session).send(sms)
    [message] = sandbox.state.messages(provider="bulletin")
    assert (message.text, message.encoding) == ("Merci, ça va", "UCS-2")


@pytest.mark.parametrize(
    ("text", "segments"),
    [("a" * 500, 4), ("ж" * 150, 3)],
    ids=["gsm-4-segments", "ucs2-3-segments"],
)
async def test_long_text_is_sent_once_with_a_fragmentation_limit(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, text: str, segments: int
) -> None:
    # Given a text beyond Bulletin's 480-character default (or 3 UCS-2 segments)
    gateway = make_gateway(sandbox, http_session)
    # When sent
    receipt = await gateway.send(OutboundSms(to=TO, text=text))
    # Then fragmentationLimit lets it through whole
    assert receipt.segments == segments
    [message] = sandbox.state.messages(provider="bulletin")
    assert message.text == text
    assert message.segments == segments


async def test_message_ids_without_or_with_a_long_client_ref(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(sandbox, http_session)
    long_ref = "job-" + "x" * 40
    # When sent without a reference, twice, and with one too long for Bulletin's 36 characters
    first = await gateway.send(OutboundSms(to=TO, text="a"))
    second = await gateway.send(OutboundSms(to=TO, text="b"))
    third = await gateway.send(OutboundSms(to=TO, text="c", client_ref=long_ref))
    # Then random UUIDs, and a UUID derived from the long reference (stable across retries)
    assert uuid.UUID(first.provider_message_ids[0]).version == 4
    assert first.provider_message_ids != second.provider_message_ids
    assert third.provider_message_ids == (message_id_for(long_ref),)
    assert len(third.provider_message_ids[0]) == 36
    ids = [m.message_ids[0] for m in sandbox.state.messages(provider="bulletin")]
    assert ids == [
        *first.provider_message_ids,
        *second.provider_message_ids,
        message_id_for(long_ref),
    ]


async def test_piece_sender_wins_and_rate_code_replaces_from(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given one account with a sender, one with a rateCode as well
    plain = make_gateway(sandbox, http_session, sender="Acme")
    rated = make_gateway(sandbox, http_session, sender="Acme", options={"rate_code": "RC1"})
    # When each sends (the simulator refuses rateCode together with from)
    await plain.send(OutboundSms(to=TO, text="a", sender="Other"))
    await rated.send(OutboundSms(to=TO, text="b"))
    # Then the piece's sender went as from, and the rateCode account sent no from
    assert [m.sender for m in sandbox.state.messages(provider="bulletin")] == ["Other", None]


async def test_request_is_a_form_post_without_credentials_in_the_url(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a local server that records what it receives
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        seen.append((request.method, request.path_qs, form))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        account = GatewayAccount(
            name="t",
            gateway="bulletin",
            url=f"http://127.0.0.1:{port}",
            user_id="u1",
            password=PASSWORD,
            sender="Acme",
        )
        # When a UCS-2 message is sent
        await BulletinGateway(account, http_session).send(
            OutboundSms(to=TO, text="код", client_ref="r1")
        )
    finally:
        await runner.cleanup()
    # Then every field is in the form body, contentType marks UTF-16
    assert seen == [
        (
            "POST",
            "/api/1/sms/out",
            {
                "userId": "u1",
                "password": PASSWORD,
                "to": "447700900123",
                "body": "код",
                "messageId": "r1",
                "fragmentationLimit": "1",
                "from": "Acme",
                "contentType": "text/plain; charset=UTF-16",
            },
        )
    ]
    assert BulletinGateway.metadata.url == "https://service.bulletinconnect.net"


# --- errors ----------------------------------------------------------------------------------


async def test_wrong_password_rejects_the_account(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(sandbox, http_session, password="wrong-password")
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="hi"))
    assert caught.value.http_status == 401
    assert str(caught.value) == "bulletin: HTTP 401 (Invalid userId or password)"


@pytest.mark.parametrize(
    ("code", "error_class"),
    [("400", RecipientRejected), ("403", AccountRejected), ("405", PermanentGatewayError)],
)
async def test_per_number_http_errors_are_classified(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    code: str,
    error_class: type[GatewayError],
) -> None:
    # Given the simulator answers this status for one recipient
    sandbox.state.set_faults("bulletin", "*", Faults(number_errors={"447700900123": code}))
    # When a message goes to it / Then exactly the table's class is raised
    with pytest.raises(error_class) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))
    assert type(caught.value) is error_class
    assert caught.value.http_status == int(code)


async def test_throttle_is_rate_limited_with_retry_after(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account limited to 1 request per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="bulletin", name="slow", user_id="slow", password="slow-pw", rate_per_s=1
        )
    )
    gateway = make_gateway(sandbox, http_session, user_id="slow", password="slow-pw")
    # When two messages go at once
    await gateway.send(OutboundSms(to=TO, text="first"))
    with pytest.raises(RateLimited) as caught:
        await gateway.send(OutboundSms(to=TO, text="second"))
    # Then the second is throttled with the simulator's Retry-After
    assert caught.value.http_status == 429
    assert caught.value.retry_after_s == 1.0


async def test_server_error_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("bulletin", "*", Faults(error_next=1))
    with pytest.raises(TransientGatewayError) as caught:
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.http_status == 500


async def test_timeout_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("bulletin", "*", Faults(hang_next=1, hang_s=2))
    gateway = make_gateway(sandbox, http_session, timeouts=Timeouts(total_s=0.5))
    with pytest.raises(OutcomeUnknown, match="did not answer in time"):
        await gateway.send(OutboundSms(to=TO, text="hi"))


async def test_dropped_connection_is_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("bulletin", "*", Faults(drop_next=1))
    with pytest.raises(OutcomeUnknown):
        await make_gateway(sandbox, http_session).send(OutboundSms(to=TO, text="hi"))


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_any_2xx_is_accepted(http_session: aiohttp.ClientSession, status: int) -> None:
    # Given a Bulletin that answers another 2xx than its documented 204
    async def accept(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(status=status, text="OK")

    app = web.Application()
    app.router.add_post("/api/1/sms/out", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        account = GatewayAccount(
            name="t",
            gateway="bulletin",
            url=f"http://127.0.0.1:{runner.addresses[0][1]}",
            user_id="u1",
            password=PASSWORD,
        )
        # When a message is sent
        receipt = await BulletinGateway(account, http_session).send(
            OutboundSms(to=TO, text="hi", client_ref="r1")
        )
    finally:
        await runner.cleanup()
    # Then it counts as accepted, under the messageId we chose
    assert receipt.provider_message_ids == ("r1",)


@pytest.mark.parametrize(
    ("status", "headers", "body", "error_class"),
    [
        (
            400,
            {},
            "<html><body><h1>Missing parameter: body</h1></body></html>",
            PermanentGatewayError,
        ),
        (400, {}, "<h1>Invalid destination address</h1>", RecipientRejected),
        (400, {}, "Invalid recipient", RecipientRejected),
        (401, {}, "", AccountRejected),
        (403, {}, "<h1>Forbidden</h1>", AccountRejected),
        (405, {}, "", PermanentGatewayError),
        (429, {"Retry-After": "7"}, "", RateLimited),
        (503, {"Retry-After": "7"}, "", RateLimited),
        (503, {}, "", TransientGatewayError),
        (500, {}, "", TransientGatewayError),
        (418, {}, "", PermanentGatewayError),
    ],
)
def test_every_status_maps_to_exactly_one_error_class(
    status: int, headers: dict[str, str], body: str, error_class: type[GatewayError]
) -> None:
    error = error_for_send(HttpReply(status, headers, body.encode()))
    assert type(error) is error_class
    assert error.http_status == status
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 7.0


def test_error_text_is_read_from_the_h1_without_markup() -> None:
    body = b"<html><head><title>x</title></head><body><h1>Bad <b>thing</b>\n here</h1></body>"
    assert str(error_for_send(HttpReply(400, {}, body))) == "bulletin: HTTP 400 (Bad thing here)"


def test_error_text_falls_back_to_the_status_line() -> None:
    # Given a 400 whose only text is its status line (Bulletin's other way of saying it)
    reply = HttpReply(400, {}, b"", reason="Invalid destination address")
    # When classified / Then the status line is the error text, and it names the recipient
    error = error_for_send(reply)
    assert type(error) is RecipientRejected
    assert str(error) == "bulletin: HTTP 400 (Invalid destination address)"


def test_error_text_echoing_the_request_is_made_safe() -> None:
    # Given an error text that quotes the password, the message text and the number
    body = f"<h1>Refused {PASSWORD} for 447700900123: code 918273 here</h1>".encode()
    # When classified with the secrets
    error = error_for_send(HttpReply(400, {}, body), secrets=(PASSWORD, "code 918273 here"))
    # Then none of them shows, the number only masked
    text = str(error)
    assert PASSWORD not in text and "918273" not in text and "447700900123" not in text
    assert text == "bulletin: HTTP 400 (Refused *** for 447*****0123: ***)"


# --- checks ----------------------------------------------------------------------------------


async def test_connection_check(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    assert (await make_gateway(sandbox, http_session).test_connection()).ok
    down = make_gateway(
        sandbox,
        http_session,
        url=f"http://127.0.0.1:{closed_port()}",
        timeouts=Timeouts(connect_attempts=1),
    )
    result = await down.test_connection()
    assert not result.ok
    assert "cannot connect" in result.reason


async def test_credential_check_reads_the_queue(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given one accepted message whose receipt waits to be polled
    gateway = make_gateway(sandbox, http_session)
    await gateway.send(OutboundSms(to=TO, text="hi"))
    # When the credentials are checked
    result = await gateway.test_credentials()
    # Then the queue endpoint answered, and the reason says what it showed
    assert result.ok, result.reason
    assert "1 receipt(s)" in result.reason
    assert result.details == {"statusCount": "1", "inCount": "0"}
    # And nothing more was sent
    assert len(sandbox.state.messages(provider="bulletin")) == 1


async def test_credential_check_fails_on_a_wrong_password(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    result = await make_gateway(sandbox, http_session, password="wrong").test_credentials()
    assert not result.ok
    assert not result.skipped
    assert "HTTP 401" in result.reason


async def test_credential_check_fails_when_unreachable(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    gateway = make_gateway(
        sandbox,
        http_session,
        url=f"http://127.0.0.1:{closed_port()}",
        timeouts=Timeouts(connect_attempts=1),
    )
    result = await gateway.test_credentials()
    assert not result.ok
    assert "cannot connect" in result.reason


# --- configuration and secrets ---------------------------------------------------------------


def test_missing_fields_are_all_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        BulletinGateway.check_account(GatewayAccount(name="t", gateway="bulletin"))
    assert "user_id (userId)" in str(caught.value)
    assert "password (password)" in str(caught.value)


def test_unknown_options_are_refused() -> None:
    account = GatewayAccount(
        name="t", gateway="bulletin", user_id="u", password="p", options={"rate": "x"}
    )
    with pytest.raises(ConfigurationError, match=r"options\.rate"):
        BulletinGateway.check_account(account)


def test_metadata_is_registered_under_its_entry_point_name() -> None:
    from gateways.registry import load_gateway

    assert load_gateway("bulletin") is BulletinGateway


async def test_no_secret_or_text_in_errors_or_repr(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong password (in the query string of the credential check) and a secret text
    secret = "wrong-password-s3cr3t"
    gateway = make_gateway(sandbox, http_session, password=secret)
    with pytest.raises(GatewayError) as caught:
        await gateway.send(OutboundSms(to=TO, text="code 918273"))
    sandbox.state.set_faults("bulletin", "*", Faults(drop_next=1))
    check = await gateway.test_credentials()
    # Then neither the password, the code nor the number shows anywhere
    for shown in (str(caught.value), repr(caught.value), check.reason, repr(gateway)):
        assert secret not in shown
        assert "918273" not in shown
        assert "447700900123" not in shown
    assert not check.ok
