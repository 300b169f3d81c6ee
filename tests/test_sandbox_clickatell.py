"""The simulated Clickatell (Platform and legacy HTTP), spoken to with a plain HTTP client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateways.sandbox import Faults, SandboxAccount, SandboxServer

KEY = "sandbox-api-key"
LEGACY_AUTH = {"user": "sandbox", "password": "sandbox-password", "api_id": "3500001"}
NO_API_ID = {"user": "sandbox", "password": "sandbox-password"}
HEX32 = re.compile(r"[0-9a-f]{32}")
NULLS = {"errorCode": None, "error": None, "errorDescription": None}


async def _post_messages(
    session: aiohttp.ClientSession, url: str, body: Any, key: str | None = KEY
) -> tuple[int, Any]:
    headers = {"Authorization": key} if key is not None else {}
    async with session.post(f"{url}/messages", json=body, headers=headers) as response:
        return response.status, await response.json()


async def _legacy(
    session: aiohttp.ClientSession, url: str, command: str, method: str = "POST", **params: str
) -> tuple[int, str]:
    if method == "GET":
        request = session.get(f"{url}/http/{command}", params=params)
    else:
        request = session.post(f"{url}/http/{command}", data=params)
    async with request as response:
        return response.status, await response.text()


class _Receiver:
    """A local server that collects pushed delivery receipts."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            await self.received.put(("json", await request.json()))
        else:
            await self.received.put(("form", dict(await request.post())))
        return web.Response(text="OK")

    async def next(self) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.received.get(), timeout=3)


@pytest.fixture
async def receiver(sandbox: SandboxServer) -> AsyncIterator[_Receiver]:
    """A receipt receiver the sandbox pushes to, for this test only."""
    collector = _Receiver()
    app = web.Application()
    app.router.add_post("/dlr", collector.handle)
    async with TestServer(app) as server:
        sandbox.state.dlr_url = str(server.make_url("/dlr"))
        try:
            yield collector
        finally:
            sandbox.state.dlr_url = None


@pytest.fixture
def slow_accounts(sandbox: SandboxServer) -> Iterator[None]:
    """Accounts of both APIs that the provider allows 5 requests per second."""
    sandbox.state.add_account(
        SandboxAccount(provider="clickatell", name="slow", password="slow-key", rate_per_s=5)
    )
    sandbox.state.add_account(
        SandboxAccount(
            provider="clickatell-http",
            name="slow",
            account_id="3500005",
            user_id="slow",
            password="slow-password",
            rate_per_s=5,
        )
    )
    yield


# --- Platform -----------------------------------------------------------------------------


async def test_platform_success_body_has_the_documented_shape(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the default key / When one message is posted
    status, body = await _post_messages(
        http_session, sandbox.url, {"content": "Hello", "to": ["27999000001"], "from": "SMSGW"}
    )
    # Then 202 with one accepted entry and null errors, and the inbox holds it
    assert status == 202
    assert set(body) == {"messages", "errorCode", "error", "errorDescription"}
    (entry,) = body["messages"]
    assert HEX32.fullmatch(entry["apiMessageId"])
    assert entry == {"apiMessageId": entry["apiMessageId"], "accepted": True,
                     "to": "27999000001", **NULLS}  # fmt: skip
    assert {k: body[k] for k in NULLS} == NULLS
    (message,) = sandbox.state.messages(provider="clickatell")
    assert (message.to, message.text, message.sender) == ("27999000001", "Hello", "SMSGW")


@pytest.mark.parametrize("key", ["wrong-key", None, f"Bearer {KEY}"])
async def test_platform_wrong_key_gets_error_1(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, key: str | None
) -> None:
    # Given a wrong, missing or Bearer-prefixed key (the Platform wants it raw)
    # When a message is posted
    status, body = await _post_messages(
        http_session, sandbox.url, {"content": "Hello", "to": ["27999000001"]}, key=key
    )
    # Then 401 with the request-level error shape, and nothing is sent
    assert status == 401
    assert body == {
        "messages": [],
        "errorCode": 1,
        "error": "Invalid or missing integration API key",
        "errorDescription": "Invalid or missing integration API key",
    }
    assert sandbox.state.messages() == []
    stats = {(s["provider"], s["account"]): s for s in sandbox.state.stats()}
    assert stats[("clickatell", "?")]["auth_failures"] == 1


async def test_platform_rejects_recipients_one_by_one(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given one recipient configured as opted out
    sandbox.state.set_faults("clickatell", "*", Faults(number_errors={"27999000002": "26"}))
    # When a message goes to a good, an opted-out and a malformed number
    status, body = await _post_messages(
        http_session,
        sandbox.url,
        {"content": "Hi", "to": ["27999000001", "27999000002", "12ab"]},
    )
    # Then each gets its own entry, still 202, and only the good one is in the inbox
    assert status == 202
    good, opted_out, malformed = body["messages"]
    assert good["accepted"] is True
    assert opted_out == {"apiMessageId": None, "accepted": False, "to": "27999000002",
                         "errorCode": 26, "error": "Recipient opted out",
                         "errorDescription": "Recipient opted out"}  # fmt: skip
    assert (malformed["accepted"], malformed["errorCode"]) == (False, 25)
    assert [m.to for m in sandbox.state.messages(provider="clickatell")] == ["27999000001"]


@pytest.mark.parametrize(
    ("body", "status", "code", "error"),
    [
        ({"content": "Hi"}, 400, 23, "Invalid or missing parameter: to"),
        ({"to": ["27999000001"]}, 400, 23, "Invalid or missing parameter: content"),
        ({"content": "Hi", "to": [f"2799900{i:04d}" for i in range(201)]}, 400, 22,
         "Maximum messages per request exceeded"),
        (["not", "an", "object"], 400, 21, "Payload data is malformed"),
    ],
)  # fmt: skip
async def test_platform_refuses_bad_requests(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    body: Any,
    status: int,
    code: int,
    error: str,
) -> None:
    # Given a request missing a parameter, with too many recipients, or not an object
    # When it is posted / Then the whole request fails with the table's code
    got_status, got = await _post_messages(http_session, sandbox.url, body)
    assert (got_status, got["errorCode"], got["error"], got["messages"]) == (
        status,
        code,
        error,
        [],
    )


async def test_platform_refuses_malformed_json(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a body that is not JSON / When it is posted / Then error 21 at HTTP 400
    async with http_session.post(
        f"{sandbox.url}/messages", data=b"{not json", headers={"Authorization": KEY}
    ) as response:
        assert response.status == 400
        assert (await response.json())["errorCode"] == 21


async def test_platform_throttles_at_the_configured_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, slow_accounts: None
) -> None:
    # Given an account allowed 5 requests per second
    body = {"content": "Hi", "to": ["27999000001"]}
    # When 20 requests arrive at once
    started = time.monotonic()
    replies = await asyncio.gather(
        *(_post_messages(http_session, sandbox.url, body, key="slow-key") for _ in range(20))
    )
    elapsed = time.monotonic() - started
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile, and the rest
    # get error 43 "Rate limit" at HTTP 400
    accepted = [r for r in replies if r[0] == 202]
    throttled = [r for r in replies if r[0] == 400]
    assert 5 <= len(accepted) <= 5 + 5 * elapsed
    assert throttled
    assert len(accepted) + len(throttled) == 20
    assert all(b["errorCode"] == 43 and b["error"] == "Rate limit" for _, b in throttled)


async def test_platform_fault_is_a_503_error_19(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request fails inside the provider
    sandbox.state.set_faults("clickatell", "*", Faults(error_next=1))
    # When a message is posted / Then 503 with error 19
    status, body = await _post_messages(
        http_session, sandbox.url, {"content": "Hi", "to": ["27999000001"]}
    )
    assert (status, body["errorCode"], body["error"]) == (503, 19, "Internal error, please retry")


async def test_platform_http_get_variant(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the HTTP variant with two comma-separated recipients
    params = {"apiKey": KEY, "to": "27999000001,27999000002", "content": "Привет"}
    # When it is called
    async with http_session.get(f"{sandbox.url}/messages/http/send", params=params) as response:
        status, body = response.status, await response.json()
    # Then the same JSON shape comes back, one entry per recipient
    assert status == 202
    assert [m["to"] for m in body["messages"]] == ["27999000001", "27999000002"]
    assert all(m["accepted"] for m in body["messages"])
    assert {m.text for m in sandbox.state.messages(provider="clickatell")} == {"Привет"}
    # ... and a wrong apiKey gets error 1
    params["apiKey"] = "wrong"
    async with http_session.get(f"{sandbox.url}/messages/http/send", params=params) as response:
        assert response.status == 401
        assert (await response.json())["errorCode"] == 1


async def test_platform_balance(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the default key / When the One API balance is asked
    async with http_session.get(
        f"{sandbox.url}/v1/balance", headers={"Authorization": KEY}
    ) as response:
        assert response.status == 200
        assert await response.json() == {"currency": "USD", "balance": 100.0}
    # ... and with a wrong key, a One API error object at 401
    async with http_session.get(
        f"{sandbox.url}/v1/balance", headers={"Authorization": "nope"}
    ) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == 1


async def test_platform_pushes_a_json_status_callback(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, receiver: _Receiver
) -> None:
    # Given a receipt URL / When a message with a client message id is accepted
    _, body = await _post_messages(
        http_session,
        sandbox.url,
        {"content": "Hi", "to": ["27999000001"], "from": "SMSGW", "clientMessageId": "ref1"},
    )
    # Then a JSON callback with the documented fields arrives
    kind, receipt = await receiver.next()
    assert kind == "json"
    assert set(receipt) == {"apiKey", "messageId", "requestId", "clientMessageId", "to", "from",
                            "status", "statusDescription", "timestamp"}  # fmt: skip
    assert receipt["messageId"] == body["messages"][0]["apiMessageId"]
    assert (receipt["clientMessageId"], receipt["to"], receipt["from"]) == (
        "ref1",
        "27999000001",
        "SMSGW",
    )
    assert receipt["status"] == "RECEIVED_BY_RECIPIENT"


# --- Legacy HTTP --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({**LEGACY_AUTH, "password": "wrong"}, "ERR: 001, Authentication failed"),
        (NO_API_ID, "ERR: 108, Invalid or missing API ID"),
        ({**LEGACY_AUTH, "api_id": "3599999"}, "ERR: 108, Invalid or missing API ID"),
        ({"session_id": "0" * 32}, "ERR: 003, Session ID expired"),
    ],
)  # fmt: skip
async def test_legacy_auth_errors(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    params: dict[str, str],
    expected: str,
) -> None:
    # Given bad credentials / When sendmsg is called / Then the exact ERR line at HTTP 200
    status, text = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001", text="Hi", **params
    )
    assert (status, text) == (200, expected)
    assert sandbox.state.messages() == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_legacy_sendmsg_success(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, method: str
) -> None:
    # Given the default credentials / When sendmsg is called by GET or POST
    status, text = await _legacy(
        http_session, sandbox.url, "sendmsg", method, to="27999000001", text="Hello",
        **LEGACY_AUTH,
    )  # fmt: skip
    # Then the reply is "ID: <32 hex>" and the message is in the inbox under that id
    assert status == 200
    match = re.fullmatch(r"ID: ([0-9a-f]{32})", text)
    assert match
    (message,) = sandbox.state.messages(provider="clickatell-http")
    assert (message.to, message.text, message.message_ids) == (
        "27999000001",
        "Hello",
        [match.group(1)],
    )


async def test_legacy_session_flow(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a session from auth
    _, text = await _legacy(http_session, sandbox.url, "auth", **LEGACY_AUTH)
    match = re.fullmatch(r"OK: ([0-9a-f]{32})", text)
    assert match
    session_id = match.group(1)
    # When it is pinged, used to send and to ask the balance
    _, pong = await _legacy(http_session, sandbox.url, "ping", session_id=session_id)
    _, sent = await _legacy(
        http_session, sandbox.url, "sendmsg", session_id=session_id, to="27999000001", text="Hi"
    )
    _, credit = await _legacy(http_session, sandbox.url, "getbalance", session_id=session_id)
    # Then each works; a ping without a session is refused
    assert pong == "OK: "
    assert sent.startswith("ID: ")
    assert credit == "Credit: 100.0"
    _, missing = await _legacy(http_session, sandbox.url, "ping")
    assert missing == "ERR: 005, Missing session ID"


async def test_legacy_multi_recipient_lines(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given one of three recipients is blocked
    sandbox.state.set_faults("clickatell-http", "*", Faults(number_errors={"27999000002": "121"}))
    # When all three are sent to in one call
    _, text = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001,27999000002,27999000003",
        text="Hi", **LEGACY_AUTH,
    )  # fmt: skip
    # Then there is one line per recipient, naming it
    first, second, third = text.splitlines()
    assert re.fullmatch(r"ID: [0-9a-f]{32} To: 27999000001", first)
    assert second == "ERR: 121, Destination mobile number blocked To: 27999000002"
    assert re.fullmatch(r"ID: [0-9a-f]{32} To: 27999000003", third)
    assert len(sandbox.state.messages(provider="clickatell-http")) == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"text": "00480069", "unicode": "1"}, "Hi"),
        ({"text": "D83DDE00", "unicode": "1"}, "😀"),
        ({"text": "Ça coûte 5€"}, "Ça co?te 5€"),  # GSM-7 cannot carry û
    ],
)
async def test_legacy_text_decoding(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    params: dict[str, str],
    expected: str,
) -> None:
    # Given a hex UCS-2 text or a plain one / When it is sent / Then the inbox shows the handset's
    _, text = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001", **params, **LEGACY_AUTH
    )
    assert text.startswith("ID: ")
    (message,) = sandbox.state.messages(provider="clickatell-http")
    assert message.text == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"text": "00G8", "unicode": "1"}, "ERR: 116, Invalid Unicode data"),
        ({"text": "004800", "unicode": "1"}, "ERR: 116, Invalid Unicode data"),
        ({"text": "D83D", "unicode": "1"}, "ERR: 116, Invalid Unicode data"),
        ({"text": "a" * 161}, "ERR: 113, Maximum message parts exceeded"),
        ({"text": "a" * 400, "concat": "2"}, "ERR: 113, Maximum message parts exceeded"),
        ({"text": "a" * 700, "concat": "5"}, "ERR: 113, Maximum message parts exceeded"),
        ({"text": ""}, "ERR: 107, Empty message"),
        ({"text": "Hi", "to": ""}, "ERR: 101, Invalid or missing parameters"),
        ({"text": "Hi", "climsgid": "has-dash"}, "ERR: 101, Invalid or missing parameters"),
        ({"text": "Hi", "to": "+27999000001"}, "ERR: 105, Invalid destination address"),
    ],
)
async def test_legacy_sendmsg_refusals(
    sandbox: SandboxServer,
    http_session: aiohttp.ClientSession,
    params: dict[str, str],
    expected: str,
) -> None:
    # Given bad hex, too many parts for concat, an empty text, a bad recipient or climsgid
    fields = {"to": "27999000001", **params}
    # When sendmsg is called / Then the exact ERR line, and nothing is sent
    _, text = await _legacy(http_session, sandbox.url, "sendmsg", **fields, **LEGACY_AUTH)
    assert text == expected
    assert sandbox.state.messages() == []


async def test_legacy_concat_allows_long_texts(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a 400-character text (3 parts) / When sent with concat=3 / Then it is accepted
    _, text = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001", text="a" * 400, concat="3",
        **LEGACY_AUTH,
    )  # fmt: skip
    assert text.startswith("ID: ")
    assert sandbox.state.messages(provider="clickatell-http")[0].segments == 3


async def test_legacy_throttles_at_the_configured_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, slow_accounts: None
) -> None:
    # Given an API allowed 5 requests per second
    auth = {"user": "slow", "password": "slow-password", "api_id": "3500005"}
    # When 20 sends arrive at once
    started = time.monotonic()
    replies = await asyncio.gather(
        *(
            _legacy(http_session, sandbox.url, "sendmsg", to="27999000001", text="Hi", **auth)
            for _ in range(20)
        )
    )
    elapsed = time.monotonic() - started
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile; the rest get
    # ERR 130 with a UNIX time in the near future
    texts = [text for _, text in replies]
    accepted = [t for t in texts if t.startswith("ID: ")]
    throttled = [t for t in texts if t.startswith("ERR: 130, Maximum MT limit exceeded until ")]
    assert 5 <= len(accepted) <= 5 + 5 * elapsed
    assert throttled
    assert len(accepted) + len(throttled) == 20
    until = int(throttled[0].rsplit(" ", 1)[1])
    assert time.time() < until <= time.time() + 3


async def test_legacy_fault_is_http_500_err_901(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the next request fails inside the gateway
    sandbox.state.set_faults("clickatell-http", "*", Faults(error_next=1))
    # When sendmsg is called / Then HTTP 500 with ERR 901
    status, text = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001", text="Hi", **LEGACY_AUTH
    )
    assert (status, text) == (500, "ERR: 901, Internal error")


async def test_legacy_getbalance(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the default credentials / When the balance is asked / Then the credit line
    assert await _legacy(http_session, sandbox.url, "getbalance", **LEGACY_AUTH) == (
        200,
        "Credit: 100.0",
    )


async def test_legacy_pushes_a_form_callback_for_final_statuses(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, receiver: _Receiver
) -> None:
    # Given a receipt URL; a first message asks for no callbacks, a second for final ones
    _, quiet = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000001", text="Hi", callback="0",
        **LEGACY_AUTH,
    )  # fmt: skip
    _, loud = await _legacy(
        http_session, sandbox.url, "sendmsg", to="27999000002", text="Hi", callback="2",
        climsgid="ref2", **{"from": "27999000000"}, **LEGACY_AUTH,
    )  # fmt: skip
    # When the receipts arrive
    kind, receipt = await receiver.next()
    # Then only the second message's comes, as a form with status 004
    assert kind == "form"
    assert receipt["apiMsgId"] == loud.removeprefix("ID: ")
    assert receipt["apiMsgId"] != quiet.removeprefix("ID: ")
    assert {k: receipt[k] for k in ("api_id", "cliMsgId", "to", "from", "status", "charge")} == {
        "api_id": "3500001",
        "cliMsgId": "ref2",
        "to": "27999000002",
        "from": "27999000000",
        "status": "004",
        "charge": "1.0",
    }
    assert abs(int(receipt["timestamp"]) - time.time()) < 5
