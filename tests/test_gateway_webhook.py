"""The generic webhook gateway against the sandbox's JSON API, and that API's contract."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

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
from gateways.sandbox.webhook import ACCOUNT_PATH, MESSAGES_PATH, SANDBOX_OPTIONS
from gateways.testing import GatewayConformance, check_no_secrets, unreachable_url
from gateways.webhook import WebhookGateway

TOKEN = "sandbox-token"
TO = "+447700900123"
MASKED_TO = "+44******0123"


def webhook_account(url: str, password: str | None = TOKEN, **options: Any) -> GatewayAccount:
    """A webhook account on the sandbox's JSON API; ``options`` override SANDBOX_OPTIONS."""
    return GatewayAccount(
        name="t",
        gateway="webhook",
        url=url,
        password=password,
        options={**SANDBOX_OPTIONS, **options},
    )


def make(
    url: str, session: aiohttp.ClientSession, *, timeouts: Timeouts | None = None, **kw: Any
) -> WebhookGateway:
    return WebhookGateway(webhook_account(url, **kw), session, timeouts=timeouts)


# --- sends ------------------------------------------------------------------------------


async def test_json_send_gsm7_lands_in_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a webhook account with a JSON body template and a sender
    gateway = WebhookGateway(
        webhook_account(sandbox.url).model_copy(update={"sender": "Acme"}), http_session
    )
    # When a GSM-7 text is sent
    receipt = await gateway.send(OutboundSms(to=TO, text="Your code is 123456"))
    # Then the provider's id and status come back and the inbox holds the message
    assert receipt.status == "accepted"
    [message] = sandbox.state.messages(provider="webhook")
    assert receipt.provider_message_ids == tuple(message.message_ids)
    assert re.fullmatch(r"[0-9a-f]{32}", receipt.provider_message_ids[0])
    assert (message.to, message.text, message.sender) == (
        "447700900123",
        "Your code is 123456",
        "Acme",
    )
    assert (message.encoding, message.segments) == ("GSM-7", 1)


async def test_ucs2_and_long_texts_arrive_intact(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the JSON template
    gateway = make(sandbox.url, http_session)
    unicode_text = "Код подтверждения: 4821 ✓"
    long_text = "Password reset requested. " * 15  # 390 GSM-7 characters
    # When a UCS-2 text and a multi-segment text are sent
    await gateway.send(OutboundSms(to=TO, text=unicode_text))
    await gateway.send(OutboundSms(to=TO, text=long_text))
    # Then both arrive unchanged, with their encoding and segment counts
    first, second = sandbox.state.messages(provider="webhook")
    assert (first.text, first.encoding, first.segments) == (unicode_text, "UCS-2", 1)
    assert (second.text, second.encoding, second.segments) == (long_text, "GSM-7", 3)


async def test_form_body_variant(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a template that posts a urlencoded form with the bare digits
    gateway = make(
        sandbox.url,
        http_session,
        body_format="form",
        body={"to": "{to_digits}", "text": "{text}", "from": "{sender}"},
    )
    # When a message with its own sender is sent
    receipt = await gateway.send(OutboundSms(to=TO, text="naïve café", sender="Shop"))
    # Then the form was read as the JSON would have been
    [message] = sandbox.state.messages(provider="webhook")
    assert (message.to, message.text, message.sender) == ("447700900123", "naïve café", "Shop")
    assert receipt.provider_message_ids == tuple(message.message_ids)


async def test_get_variant_with_query_template(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a GET template that puts the fields in the query string
    gateway = make(
        sandbox.url,
        http_session,
        method="GET",
        body=None,
        query={"to": "{to}", "text": "{text} & more"},
    )
    # When sent
    await gateway.send(OutboundSms(to=TO, text="a=1"))
    # Then the values were URL-encoded and arrived intact
    [message] = sandbox.state.messages(provider="webhook")
    assert (message.to, message.text) == ("447700900123", "a=1 & more")


async def test_every_placeholder_is_rendered(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a text template using the message placeholders and account fields
    account = webhook_account(
        sandbox.url,
        body={
            "to": "{to}",
            "text": "{text}|{to_digits}|{encoding}|{segments}|{client_ref}|{account_id}|{user_id}",
            "from": "{sender}",
        },
    ).model_copy(update={"account_id": "acc-9", "user_id": "u-7", "sender": "Default"})
    gateway = WebhookGateway(account, http_session)
    # When a two-segment text (170 GSM-7 characters) is sent with a client reference and no
    # sender of its own
    text = "h" * 170
    await gateway.send(OutboundSms(to=TO, text=text, client_ref="j-1/2"))
    # Then every value was filled in, the account's sender included
    [message] = sandbox.state.messages(provider="webhook")
    assert message.text == f"{text}|447700900123|GSM-7|2|j-1/2|acc-9|u-7"
    assert message.sender == "Default"


async def test_default_body_is_to_and_text(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given options without a body template
    options = {k: v for k, v in SANDBOX_OPTIONS.items() if k != "body"}
    gateway = WebhookGateway(
        GatewayAccount(
            name="t", gateway="webhook", url=sandbox.url, password=TOKEN, options=options
        ),
        http_session,
    )
    # When sent / Then the default {"to": "{to}", "text": "{text}"} body was understood
    await gateway.send(OutboundSms(to=TO, text="default body"))
    assert [m.text for m in sandbox.state.messages(provider="webhook")] == ["default body"]


async def test_missing_message_id_gives_a_synthetic_one(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a template that does not read the provider's id
    gateway = make(sandbox.url, http_session, message_id_field=None)
    # When sent with and without a client reference
    with_ref = await gateway.send(OutboundSms(to=TO, text="x", client_ref="job-1/1"))
    without = await gateway.send(OutboundSms(to=TO, text="x"))
    # Then the ids are synthetic: webhook:<client_ref>, else webhook:<uuid4>
    assert with_ref.provider_message_ids == ("webhook:job-1/1",)
    assert re.fullmatch(r"webhook:[0-9a-f-]{36}", without.provider_message_ids[0])


# --- error classes against the sandbox --------------------------------------------------


async def test_wrong_token_is_account_rejected(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a wrong bearer token
    gateway = make(sandbox.url, http_session, password="wrong-token-123")
    # When sent / Then the account is rejected, with the provider's code, no secret shown
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to=TO, text="code 998877"))
    error = caught.value
    assert (error.http_status, error.provider_code, error.gateway) == (
        401,
        "unauthorized",
        "webhook",
    )
    assert str(error).startswith("webhook: provider answered HTTP 401, code 'unauthorized'")
    check_no_secrets(gateway, ["wrong-token-123", "998877", TO], errors=[error])


async def test_number_errors_map_by_code_lists(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given per-number provider codes: one listed as a recipient code, one in no list
    sandbox.state.set_faults(
        "webhook", "*", Faults(number_errors={"447700900111": "barred", "447700900222": "odd"})
    )
    gateway = make(sandbox.url, http_session)
    # When sent to each
    barred = await _send_error(gateway, "+447700900111")
    unlisted = await _send_error(gateway, "+447700900222")
    # Then the listed code refuses the recipient; the unlisted one falls back to HTTP 400
    assert type(barred) is RecipientRejected and barred.provider_code == "barred"
    assert type(unlisted) is PermanentGatewayError and unlisted.provider_code == "odd"


async def test_invalid_number_is_recipient_rejected(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a recipient the API cannot parse / When sent
    error = await _send_error(make(sandbox.url, http_session), "+12")
    # Then it is refused as a recipient problem
    assert type(error) is RecipientRejected and error.provider_code == "invalid_number"


async def test_throttle_is_rate_limited_with_the_reply_delay(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account allowing one request per second
    sandbox.state.add_account(
        SandboxAccount(provider="webhook", name="slow", password="slow-token", rate_per_s=1)
    )
    precise = make(sandbox.url, http_session, password="slow-token")
    header_only = make(sandbox.url, http_session, password="slow-token", retry_after_field=None)
    # When three are sent at once
    await precise.send(OutboundSms(to=TO, text="1"))
    first = await _send_error(precise, TO)
    second = await _send_error(header_only, TO)
    # Then the reply's own delay is used, else the Retry-After header (whole seconds)
    assert isinstance(first, RateLimited) and isinstance(second, RateLimited)
    assert 0.5 < first.retry_after_s <= 1.0 and first.provider_code == "rate_limited"
    assert second.retry_after_s == 1.0


async def test_server_error_is_transient(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the API fails the next request with a 500
    sandbox.state.set_faults("webhook", "*", Faults(error_next=1))
    # When sent / Then the failure is transient (no delay known, so not a throttle)
    error = await _send_error(make(sandbox.url, http_session), TO)
    assert type(error) is TransientGatewayError
    assert (error.http_status, error.provider_code) == (500, "internal_error")


async def test_without_code_fields_the_http_status_decides(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a template that reads no error code, and a failing API
    gateway = make(sandbox.url, http_session, error_code_field=None, error_field=None)
    sandbox.state.set_faults("webhook", "*", Faults(error_next=1))
    # When sent with a bad token and during the failure
    failed = await _send_error(gateway, TO)
    refused = await _send_error(gateway.clone(password="not-the-token"), TO)
    # Then error_for_status classifies: 5xx transient, 401 account
    assert type(failed) is TransientGatewayError and failed.provider_code is None
    assert type(refused) is AccountRejected and refused.http_status == 401


async def test_success_field_mismatch_is_permanent(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a template expecting a status the API never answers
    gateway = make(sandbox.url, http_session, success_value="queued")
    # When sent / Then the 201 is not taken for a success
    error = await _send_error(gateway, TO)
    assert type(error) is PermanentGatewayError
    assert "status='accepted'" in str(error) and "no error code" in str(error)


async def test_timeout_and_dropped_connection_are_outcome_unknown(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a hang longer than the adapter's timeout, then a dropped connection
    sandbox.state.set_faults("webhook", "*", Faults(hang_next=1, hang_s=2, drop_next=1))
    gateway = make(sandbox.url, http_session, timeouts=Timeouts(total_s=0.5))
    # When sent twice (the drop is served first)
    dropped = await _send_error(gateway, TO)
    hung = await _send_error(gateway, TO)
    # Then both leave the outcome unknown: both may have reached the provider
    assert type(dropped) is OutcomeUnknown and dropped.request_sent
    assert type(hung) is OutcomeUnknown and "did not answer in time" in str(hung)


async def _send_error(gateway: WebhookGateway, to: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await gateway.send(OutboundSms(to=to, text="code 424242"))
    return caught.value


# --- reply reading, table-driven, against a scripted local provider --------------------


@dataclass
class ScriptedProvider:
    """A local HTTP server that records each request and answers the reply it is given."""

    url: str = ""
    status: int = 200
    body: Any = field(default_factory=dict)  # dict/list: JSON; str: plain text
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "content_type": request.content_type,
                "body": await request.read(),
            }
        )
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=self.headers)
        return web.json_response(self.body, status=self.status, headers=self.headers)


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    scripted = ScriptedProvider()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    scripted.url = str(server.make_url("")).rstrip("/")
    yield scripted
    await server.close()


TABLE_OPTIONS: dict[str, Any] = {
    "path": "/send",
    "headers": {"X-Key": "{password}"},
    "body": {"number": "{to_digits}", "message": "{text}"},
    "message_id_field": "messages.0.id",
    "success_field": "ok",
    "error_field": "error.text",
    "error_code_field": "error.code",
    "permanent_codes": ["P1"],
    "recipient_codes": ["R1"],
    "account_codes": ["A1"],
    "retry_codes": ["T1"],
    "retry_after_field": "error.wait",
}


def table_gateway(url: str, session: aiohttp.ClientSession, **options: Any) -> WebhookGateway:
    account = GatewayAccount(
        name="t", gateway="webhook", url=url, password="k-321", options={**TABLE_OPTIONS, **options}
    )
    return WebhookGateway(account, session)


def _err(code: str, wait: Any = None) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "text": "refused", "wait": wait}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "retry_after_s"),
    [
        (200, _err("R1"), {}, RecipientRejected, None),
        (200, _err("A1"), {}, AccountRejected, None),
        (400, _err("P1"), {}, PermanentGatewayError, None),
        (503, _err("T1"), {}, TransientGatewayError, None),
        (200, _err("T1", wait=7), {}, RateLimited, 7.0),
        (503, _err("T1"), {"Retry-After": "3"}, RateLimited, 3.0),
        (429, {}, {"Retry-After": "5"}, RateLimited, 5.0),
        (429, _err("zz", wait="2.5"), {}, RateLimited, 2.5),
        (200, _err("zz"), {}, PermanentGatewayError, None),
        (200, {"ok": False}, {}, PermanentGatewayError, None),
        (404, "not json", {}, PermanentGatewayError, None),
        (502, "bad gateway", {}, TransientGatewayError, None),
        (403, _err("zz"), {}, AccountRejected, None),
        (400, _err("zz"), {}, PermanentGatewayError, None),
    ],
)
async def test_reply_classification_table(
    provider: ScriptedProvider,
    http_session: aiohttp.ClientSession,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: type[GatewayError],
    retry_after_s: float | None,
) -> None:
    # Given a provider replying this way
    provider.reply(status, body, headers)
    gateway = table_gateway(provider.url, http_session)
    # When sent
    with pytest.raises(GatewayError) as caught:
        await gateway.send(OutboundSms(to=TO, text="hello"))
    # Then the error class (exactly), the status, the code and the delay are the table's
    error = caught.value
    assert type(error) is expected
    assert error.http_status == status
    if isinstance(body, dict) and "error" in body:
        assert error.provider_code == body["error"]["code"]
    if retry_after_s is not None:
        assert isinstance(error, RateLimited)
        assert error.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("body", "ids", "status"),
    [
        ({"ok": True, "messages": [{"id": "m-1"}, {"id": "m-2"}]}, ("m-1",), "true"),
        ({"ok": 1, "messages": [{"id": 77}]}, ("77",), "1"),
    ],
)
async def test_reply_ids_and_truthy_success(
    provider: ScriptedProvider,
    http_session: aiohttp.ClientSession,
    body: dict[str, Any],
    ids: tuple[str, ...],
    status: str,
) -> None:
    # Given a success reply (success_field set, no success_value: truthy means success)
    provider.reply(200, body)
    # When sent
    receipt = await table_gateway(provider.url, http_session).send(
        OutboundSms(to=TO, text="hello", client_ref="ref-9")
    )
    # Then the id is read by dotted path (list index included)
    assert receipt.provider_message_ids == ids
    assert receipt.status == status


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"ok": "yes", "messages": []}),
        (200, {"ok": True, "messages": {"id": "not-a-list"}}),
        (200, {"ok": True, "messages": [{"id": ""}]}),
    ],
    ids=["empty-list", "not-a-list", "empty-id"],
)
async def test_success_without_the_configured_id_is_outcome_unknown(
    provider: ScriptedProvider,
    http_session: aiohttp.ClientSession,
    status: int,
    body: dict[str, Any],
) -> None:
    # Given a success reply (success_field truthy) that lacks the id message_id_field names
    provider.reply(status, body)
    # When sent
    with pytest.raises(OutcomeUnknown) as caught:
        await table_gateway(provider.url, http_session).send(
            OutboundSms(to=TO, text="hello", client_ref="ref-9")
        )
    # Then the outcome is unknown (the provider may have sent it), naming the missing field
    assert "without messages.0.id" in str(caught.value)
    assert caught.value.http_status == status


async def test_request_carries_the_rendered_template(
    provider: ScriptedProvider, http_session: aiohttp.ClientSession
) -> None:
    # Given the table template, plus a query and a path placeholder
    provider.reply(200, {"ok": True, "messages": [{"id": "m"}]})
    gateway = table_gateway(
        provider.url,
        http_session,
        path="/send/{to}",
        query={"ref": "{client_ref}", "n": "{segments}"},
    )
    # When a two-segment text is sent
    text = "hello " * 30
    await gateway.send(OutboundSms(to=TO, text=text, client_ref="a/b c"))
    # Then headers, path, query and JSON body hold the rendered, properly encoded values
    [sent] = provider.requests
    assert sent["method"] == "POST" and sent["path"] == "/send/+447700900123"
    assert sent["headers"]["X-Key"] == "k-321"
    assert sent["query"] == {"ref": "a/b c", "n": "2"}
    assert sent["content_type"] == "application/json"
    assert json.loads(sent["body"]) == {"number": "447700900123", "message": text}


async def test_body_format_none_sends_no_body(
    provider: ScriptedProvider, http_session: aiohttp.ClientSession
) -> None:
    # Given a POST whose fields all travel in the query
    provider.reply(204, "")
    gateway = table_gateway(
        provider.url,
        http_session,
        body_format="none",
        body=None,
        query={"to": "{to_digits}", "text": "{text}"},
        success_field=None,
        message_id_field=None,  # a 204 carries no id
    )
    # When sent / Then no body went out and the 204 is a success with a synthetic id
    receipt = await gateway.send(OutboundSms(to=TO, text="hi", client_ref="r-1"))
    assert provider.requests[0]["body"] == b""
    assert receipt.provider_message_ids == ("webhook:r-1",)


async def test_provider_echo_of_secrets_is_scrubbed(
    provider: ScriptedProvider, http_session: aiohttp.ClientSession
) -> None:
    # Given a provider that echoes the key, the text and the number in its error text
    echo = {"error": {"code": "P1", "text": "key k-321 may not send 'code 5566' to 447700900123"}}
    provider.reply(400, echo)
    gateway = table_gateway(provider.url, http_session)
    # When sent
    with pytest.raises(PermanentGatewayError) as caught:
        await gateway.send(OutboundSms(to=TO, text="code 5566"))
    # Then the error keeps the provider's words but not the secret, text or full number
    assert "key *** may not send '***' to 447*****0123" in str(caught.value)
    check_no_secrets(gateway, ["k-321", "code 5566", "447700900123"], errors=[caught.value])


# --- account validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (
            {"body": {"to": "{recipient}", "text": "{text}"}},
            "options.body: value of 'to': unknown placeholder {recipient}",
        ),
        ({"headers": {"Authorization": "Bearer {token}"}}, "unknown placeholder {token}"),
        ({"query": {"q": "{to"}}, "options.query: value of 'q': malformed template"),
        ({"body": {"to": "{to:>20}", "text": "{text}"}}, "{to} takes no conversion or format spec"),
        ({"body": {"to": "{0}", "text": "{text}"}}, "unknown placeholder {0}"),
        ({"path": "/send/{password}"}, "options.path: {password} may only appear in headers"),
        ({"path": "send"}, "options.path: 'send' must start with '/'"),
        ({"credentials_path": "/a?key={password}"}, "options.credentials_path"),
        ({"method": "GET"}, "options.body: a GET request or body_format 'none' sends no body"),
        ({"body": {"text": "{text}"}}, "never uses {to} or {to_digits}"),
        ({"body": {"to": "{to}"}}, "never uses {text}"),
        (
            {"body": {"to": "{to}", "text": "{text}", "a": "{account_id}"}},
            "uses {account_id} but the account's account_id is empty",
        ),
        (
            {"retry_codes": ["unauthorized"]},
            "code 'unauthorized' is in both account_codes and retry_codes",
        ),
        ({"success_field": None}, "success_value is set without success_field"),
        (
            {"message_id_field": "data..id"},
            "options.message_id_field: 'data..id' is not a dotted path",
        ),
        ({"success_status": [200, 999]}, "options.success_status"),
        ({"timeout": 3}, "options.timeout: Extra inputs are not permitted"),
    ],
)
def test_bad_templates_fail_at_account_creation(options: dict[str, Any], fragment: str) -> None:
    # Given an account whose template is wrong
    account = webhook_account("http://provider.test", **options)
    # When it is checked (as creating the account does) / Then the error names the problem
    with pytest.raises(ConfigurationError) as caught:
        WebhookGateway.check_account(account)
    assert fragment in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_password_placeholder_needs_a_password() -> None:
    # Given the bearer template but an account without a password / Then it is refused
    with pytest.raises(ConfigurationError, match=r"uses \{password\} but the account.s password"):
        WebhookGateway.check_account(webhook_account("http://provider.test", password=None))


def test_url_is_required() -> None:
    # Given no url / Then it is refused naming the field
    account = webhook_account("http://provider.test").model_copy(update={"url": None})
    with pytest.raises(ConfigurationError, match=r"missing required field\(s\): url"):
        WebhookGateway.check_account(account)


# --- checks -----------------------------------------------------------------------------


async def test_credentials_and_connection_checks(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given accounts with the right and a wrong token, and one without a credentials path
    good = make(sandbox.url, http_session)
    bad = make(sandbox.url, http_session, password="wrong-token-456")
    unconfigured = make(sandbox.url, http_session, credentials_path=None)
    # When checked
    ok, refused, skipped = (
        await good.test_credentials(),
        await bad.test_credentials(),
        await unconfigured.test_credentials(),
    )
    # Then each says what happened
    assert ok and "answered HTTP 200" in ok.reason
    assert not refused and "HTTP 401: the credentials were refused" in refused.reason
    assert not skipped and skipped.skipped and "set options.credentials_path" in skipped.reason
    assert await good.test_connection()
    assert "wrong-token-456" not in refused.reason
    assert sandbox.state.messages() == []  # nothing was sent


async def test_checks_against_a_closed_port_fail_plainly(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given nothing listening at the account's url
    gateway = make(unreachable_url(), http_session, timeouts=Timeouts(connect_attempts=1))
    # When checked / Then both checks fail with a reason, without raising
    credentials = await gateway.test_credentials()
    connection = await gateway.test_connection()
    assert not credentials and "cannot connect" in credentials.reason
    assert not connection and "cannot connect" in connection.reason


# --- the conformance kit's server-free tests, on this gateway ---------------------------


class TestWebhookConformance(GatewayConformance):
    gateway_class = WebhookGateway

    def valid_account(self) -> GatewayAccount:
        return webhook_account("http://provider.test", password="conformance-token-1")


# --- the sandbox API itself, with a plain client ----------------------------------------


async def test_sandbox_api_contract(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    url = sandbox.url + MESSAGES_PATH
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # Given / When a good request / Then 201 with exactly id and status
    async with http_session.post(url, json={"to": TO, "text": "hi"}, headers=auth) as reply:
        body = await reply.json()
        assert reply.status == 201
        assert set(body) == {"id", "status"} and body["status"] == "accepted"
        assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    # When the token is wrong / Then 401, the error shape and a bearer challenge
    async with http_session.post(
        url, json={"to": TO, "text": "hi"}, headers={"Authorization": "Bearer x"}
    ) as reply:
        assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await reply.json())["error"]["code"] == "unauthorized"
    # When a field is missing, the JSON is broken, or the type unsupported / Then 400/415
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"to": TO}}, 400, "missing_parameter"),
        (
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_body",
        ),
        (
            {"data": b"to=1", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
    ]
    for kwargs, status, code in cases:
        headers = {**auth, **kwargs.pop("headers", {})}
        async with http_session.post(url, headers=headers, **kwargs) as reply:
            assert (reply.status, (await reply.json())["error"]["code"]) == (status, code)
    # When the account endpoint is asked / Then 200 with a good token, 401 without
    async with http_session.get(sandbox.url + ACCOUNT_PATH, headers=auth) as reply:
        assert reply.status == 200 and (await reply.json())["name"] == "sandbox"
    async with http_session.get(sandbox.url + ACCOUNT_PATH) as reply:
        assert reply.status == 401
    assert len(sandbox.state.messages(provider="webhook")) == 1


async def test_sandbox_throttles_at_the_account_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account limited to 5 requests per second
    sandbox.state.add_account(
        SandboxAccount(provider="webhook", name="rl", password="rl-token", rate_per_s=5)
    )
    headers = {"Authorization": "Bearer rl-token"}

    async def post() -> tuple[int, str | None]:
        async with http_session.post(
            sandbox.url + MESSAGES_PATH, json={"to": TO, "text": "x"}, headers=headers
        ) as reply:
            await reply.read()
            return reply.status, reply.headers.get("Retry-After")

    # When 20 are fired at once
    started = time.monotonic()
    replies = await asyncio.gather(*(post() for _ in range(20)))
    elapsed = time.monotonic() - started
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile, and the rest
    # throttled with Retry-After
    accepted = [r for r in replies if r[0] == 201]
    throttled = [r for r in replies if r[0] == 429]
    assert 5 <= len(accepted) <= 5 + 5 * elapsed and throttled
    assert len(accepted) + len(throttled) == 20
    assert all(retry == "1" for _status, retry in throttled)
