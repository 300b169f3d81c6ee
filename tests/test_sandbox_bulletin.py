"""The Bulletin Connect simulator's wire contract, with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

import aiohttp

from gateways.sandbox import Faults, SandboxAccount, SandboxServer

CREDENTIALS = {"userId": "sandbox", "password": "sandbox-password"}
UTF16 = "text/plain; charset=UTF-16"


def message(**fields: str) -> dict[str, str]:
    return {**CREDENTIALS, "to": "447700900123", "body": "Hello", **fields}


async def call(
    sandbox: SandboxServer,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, str, str, Any]:
    async with session.request(
        method, f"{sandbox.url}/api/1/sms/{path}", data=form, params=query
    ) as response:
        return response.status, response.reason or "", await response.text(), response.headers


async def test_post_is_accepted_with_204_and_no_body(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, _, body, _ = await call(
        sandbox, http_session, "POST", "out", form=message(messageId="m-1", **{"from": "Acme"})
    )
    assert (status, body) == (204, "")
    [inbox] = sandbox.state.messages(provider="bulletin")
    assert (inbox.to, inbox.text, inbox.sender, inbox.message_ids) == (
        "447700900123",
        "Hello",
        "Acme",
        ["m-1"],
    )


async def test_get_with_query_parameters_is_accepted_and_gets_a_uuid(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, _, _, _ = await call(sandbox, http_session, "GET", "out", query=message())
    assert status == 204
    [inbox] = sandbox.state.messages(provider="bulletin")
    assert len(inbox.message_ids[0]) == 36  # generated when omitted, as documented


async def test_wrong_credentials_get_401_with_the_text_in_status_line_and_h1(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    for path in ("out", "status", "in", "queue"):
        method, where = ("POST", "form") if path == "out" else ("GET", "query")
        status, reason, body, _ = await call(
            sandbox, http_session, method, path, **{where: message(password="nope")}
        )
        assert (status, reason) == (401, "Invalid userId or password"), path
        assert "<h1>Invalid userId or password</h1>" in body
    [stats] = [s for s in sandbox.state.stats() if s["provider"] == "bulletin"]
    assert stats["auth_failures"] == 4


async def test_wrong_methods_get_405(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    assert (await call(sandbox, http_session, "PUT", "out", form=message()))[0] == 405
    status, reason, _, headers = await call(sandbox, http_session, "POST", "status", form=message())
    assert (status, reason, headers["Allow"]) == (405, "Use GET", "GET")


async def test_bad_parameters_get_400_with_their_reason(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    cases = {
        "no to": {**CREDENTIALS, "body": "x"},
        "bad to": message(to="+44 7700"),
        "no body": {**CREDENTIALS, "to": "447700900123"},
        "long id": message(messageId="x" * 37),
        "rate and from": message(rateCode="RC", **{"from": "Acme"}),
        "content type": message(contentType="text/x-vcard"),
        "over 480": message(body="a" * 481),
        "over limit": message(body="a" * 161, fragmentationLimit="1"),
        "bad limit": message(fragmentationLimit="0"),
    }
    reasons = {}
    for name, form in cases.items():
        status, reason, _, _ = await call(sandbox, http_session, "POST", "out", form=form)
        assert status == 400, name
        reasons[name] = reason
    assert reasons == {
        "no to": "Missing parameter: to",
        "bad to": "Invalid destination address",
        "no body": "Missing parameter: body",
        "long id": "messageId longer than 36 characters",
        "rate and from": "rateCode cannot be combined with from",
        "content type": "Unsupported contentType",
        "over 480": "body longer than 480 characters",
        "over limit": "body exceeds fragmentationLimit",
        "bad limit": "Invalid fragmentationLimit",
    }
    assert sandbox.state.messages(provider="bulletin") == []


async def test_unicode_needs_the_utf16_content_type(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the same non-GSM text without and with contentType=UTF-16
    text = "Привет €"
    await call(sandbox, http_session, "POST", "out", form=message(body=text))
    await call(sandbox, http_session, "POST", "out", form=message(body=text, contentType=UTF16))
    # Then without it the handset sees "?" for each non-GSM character; with it, the text
    plain, unicode = sandbox.state.messages(provider="bulletin")
    assert (plain.text, plain.encoding) == ("?????? €", "GSM-7")
    assert (unicode.text, unicode.encoding) == (text, "UCS-2")


async def test_fragmentation_limit_allows_long_text(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, *_ = await call(
        sandbox, http_session, "POST", "out", form=message(body="a" * 600, fragmentationLimit="4")
    )
    assert status == 204
    [inbox] = sandbox.state.messages(provider="bulletin")
    assert inbox.segments == 4


async def test_receipts_are_polled_one_per_call_in_the_documented_shape(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given two accepted messages, one with a source address
    await call(
        sandbox, http_session, "POST", "out", form=message(messageId="a-1", **{"from": "Acme"})
    )
    await call(
        sandbox, http_session, "POST", "out", form=message(messageId="a-2", to="61400000001")
    )
    # When the queue is read and the receipts are polled until none is left
    _, _, queue, _ = await call(sandbox, http_session, "GET", "queue", query=CREDENTIALS)
    polls = [
        await call(sandbox, http_session, "GET", "status", query=CREDENTIALS) for _ in range(3)
    ]
    # Then the queue showed two, each poll served one (inverted to/from), then 204
    assert queue == "statusCount=2&inCount=0"
    first, second = (parse_qs(body, keep_blank_values=True) for _, _, body, _ in polls[:2])
    assert first["inReplyToId"] == ["a-1"]
    assert (first["to"], first["from"], first["statusCode"]) == (
        ["Acme"],
        ["447700900123"],
        ["RCV"],
    )
    assert first["error"] == [""]
    assert first["messageId"] != ["a-1"]
    assert (second["inReplyToId"], second["to"], second["from"]) == (
        ["a-2"],
        ["2654"],
        ["61400000001"],
    )
    assert polls[2][0] == 204
    _, _, queue_after, _ = await call(sandbox, http_session, "GET", "queue", query=CREDENTIALS)
    assert queue_after == "statusCount=0&inCount=0"


async def test_replies_poll_answers_204(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    status, _, body, _ = await call(sandbox, http_session, "GET", "in", query=CREDENTIALS)
    assert (status, body) == (204, "")


async def test_number_errors_answer_a_status_or_queue_a_failed_receipt(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given one number refused outright and one that is unreachable after acceptance
    sandbox.state.set_faults(
        "bulletin", "*", Faults(number_errors={"447700900001": "400", "447700900002": "NUR"})
    )
    refused = await call(sandbox, http_session, "POST", "out", form=message(to="447700900001"))
    accepted = await call(sandbox, http_session, "POST", "out", form=message(to="447700900002"))
    # Then the first gets 400 naming the destination, the second 204 and an NUR receipt
    assert refused[:2] == (400, "Invalid destination address")
    assert accepted[0] == 204
    _, _, body, _ = await call(sandbox, http_session, "GET", "status", query=CREDENTIALS)
    receipt = parse_qs(body)
    assert receipt["statusCode"] == ["NUR"]
    assert receipt["error"] == ["Number unreachable"]


async def test_injected_fault_is_a_500(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("bulletin", "*", Faults(error_next=1))
    status, reason, _, _ = await call(sandbox, http_session, "POST", "out", form=message())
    assert (status, reason) == (500, "Internal error")


async def test_throttle_at_the_account_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account allowed 5 requests per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="bulletin", name="rated", user_id="rated", password="pw", rate_per_s=5
        )
    )
    form = message(userId="rated", password="pw")
    # When 20 requests go at once
    started = time.monotonic()
    replies = await asyncio.gather(
        *(call(sandbox, http_session, "POST", "out", form=form) for _ in range(20))
    )
    elapsed = time.monotonic() - started
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile, and the rest
    # get 429 with Retry-After
    statuses = [status for status, *_ in replies]
    assert 5 <= statuses.count(204) <= 5 + 5 * elapsed
    assert statuses.count(429) == 20 - statuses.count(204) > 0
    assert all(int(h["Retry-After"]) >= 1 for s, _, _, h in replies if s == 429)
