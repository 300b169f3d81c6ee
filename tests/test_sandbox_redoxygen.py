"""The Red Oxygen simulator's wire contract, with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from gateways.sandbox import Faults, SandboxAccount, SandboxServer

CREDENTIALS = {
    "AccountId": "CI00000001",
    "Email": "sandbox@example.com",
    "Password": "sandbox-password",
}


async def post(
    sandbox: SandboxServer,
    session: aiohttp.ClientSession,
    form: dict[str, str],
    *,
    query: str = "?Action=SendSMS",
) -> tuple[int, str, Any]:
    async with session.post(f"{sandbox.url}/sms.dll{query}", data=form) as response:
        return response.status, await response.text(), response.headers


def message(**fields: str) -> dict[str, str]:
    return {**CREDENTIALS, "Recipient": "447700900123", "Message": "Hello", **fields}


async def test_post_form_is_accepted_with_the_documented_reply(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given valid credentials / When a form is posted with Action in the query
    status, body, _ = await post(sandbox, http_session, message())
    # Then the reply is plain text starting with 0000, and the message is in the inbox
    assert (status, body) == (200, "0000 Message accepted")
    [inbox] = sandbox.state.messages(provider="redoxygen")
    assert (inbox.to, inbox.text, inbox.sender) == ("447700900123", "Hello", None)


async def test_get_with_everything_in_the_query_is_accepted(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    params = {"Action": "SendSMS", **message(Message="Hi & bye")}
    async with http_session.get(f"{sandbox.url}/sms.dll", params=params) as response:
        assert await response.text() == "0000 Message accepted"
    [inbox] = sandbox.state.messages(provider="redoxygen")
    assert inbox.text == "Hi & bye"


async def test_parameter_names_match_case_insensitively(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    form = {
        "AccountID": "CI00000001",
        "EMAIL": "sandbox@example.com",
        "password": "sandbox-password",
        "recipient": "447700900123",
        "MESSAGE": "Hello",
    }
    _, body, _ = await post(sandbox, http_session, form, query="?action=sendsms")
    assert body.startswith("0000")


async def test_comma_separated_recipients_each_get_the_message(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    _, body, _ = await post(sandbox, http_session, message(Recipient="447700900123,61400000001"))
    assert body.startswith("0000")
    assert [m.to for m in sandbox.state.messages(provider="redoxygen")] == [
        "447700900123",
        "61400000001",
    ]


async def test_text_beyond_765_characters_is_silently_truncated(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an 800-character text (documented: the excess is truncated without a word)
    text = "".join(str(i % 10) for i in range(800))
    _, body, _ = await post(sandbox, http_session, message(Message=text))
    # Then the reply is still success and the inbox holds the first 765 characters
    assert body == "0000 Message accepted"
    [inbox] = sandbox.state.messages(provider="redoxygen")
    assert inbox.text == text[:765]


async def test_wrong_credentials_get_their_result_codes_and_are_counted(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    replies = [
        (await post(sandbox, http_session, message(**wrong)))[1]
        for wrong in (
            {"Password": "nope"},
            {"AccountId": "CI99999999"},
            {"Email": "x@example.com"},
        )
    ]
    assert replies == [
        "1004 Invalid password",
        "1001 Invalid account id",
        "1002 Invalid email address",
    ]
    [stats] = [s for s in sandbox.state.stats() if s["provider"] == "redoxygen"]
    assert stats["auth_failures"] == 3
    assert sandbox.state.messages(provider="redoxygen") == []


async def test_missing_or_bad_parameters_get_result_codes(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    cases = {
        "no action": ("", message()),
        "no recipient": ("?Action=SendSMS", {**CREDENTIALS, "Message": "Hi"}),
        "bad recipient": ("?Action=SendSMS", message(Recipient="call me")),
        "empty message": ("?Action=SendSMS", message(Message="")),
    }
    codes = {
        name: (await post(sandbox, http_session, form, query=query))[1][:4]
        for name, (query, form) in cases.items()
    }
    assert codes == {
        "no action": "1000",
        "no recipient": "2001",
        "bad recipient": "2001",
        "empty message": "2002",
    }
    assert sandbox.state.messages(provider="redoxygen") == []


async def test_number_errors_answer_the_configured_code(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("redoxygen", "*", Faults(number_errors={"447700900123": "2003"}))
    _, body, _ = await post(sandbox, http_session, message())
    assert body == "2003 Recipient barred"


async def test_injected_fault_is_a_500_with_code_9000(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    sandbox.state.set_faults("redoxygen", "*", Faults(error_next=1))
    status, body, _ = await post(sandbox, http_session, message())
    assert status == 500
    assert body.startswith("9000 ")


async def test_throttle_at_the_account_rate(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an account allowed 5 requests per second
    sandbox.state.add_account(
        SandboxAccount(
            provider="redoxygen",
            name="rated",
            account_id="CI00000005",
            user_id="rated@example.com",
            password="rated-password",
            rate_per_s=5,
        )
    )
    form = message(AccountId="CI00000005", Email="rated@example.com", Password="rated-password")
    # When 20 requests go at once
    started = time.monotonic()
    replies = await asyncio.gather(*(post(sandbox, http_session, form) for _ in range(20)))
    elapsed = time.monotonic() - started
    # Then the burst of 5 is accepted, plus at most what refilled meanwhile, and the rest
    # throttled with Retry-After
    accepted = [r for r in replies if r[1].startswith("0000")]
    throttled = [r for r in replies if r[1].startswith("9001")]
    assert 5 <= len(accepted) <= 5 + 5 * elapsed
    assert throttled
    assert len(accepted) + len(throttled) == 20
    assert all(int(headers["Retry-After"]) >= 1 for _, _, headers in throttled)
