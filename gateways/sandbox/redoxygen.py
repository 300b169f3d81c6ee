"""Simulated Red Oxygen HTTP API: ``/sms.dll?Action=SendSMS`` (GET or POST form).

What is documented is reproduced: ``Action`` in the query, the fields ``AccountId``,
``Email``, ``Password``, ``Recipient`` (digits, comma-separated for several) and ``Message``
in the query (GET) or form body (POST), a plain-text reply whose first four characters are
the result code (``0000 Message accepted``), and silent truncation beyond 765 characters.

INVENTED here, because Red Oxygen publishes none of it (labelled so clients know):

==========  ===========  ==============================================================
result      HTTP status  when
==========  ===========  ==============================================================
1000        200          ``Action`` is missing or not ``SendSMS``
1001        200          no account with that ``AccountId``
1002        200          the ``Email`` is not a user of that account
1004        200          wrong ``Password``
2001        200          ``Recipient`` missing or not 6-15 digits
2002        200          ``Message`` missing or empty
2003        200          recipient barred (only through ``number_errors``)
3001        200          insufficient credits (only through ``number_errors``)
9000        500          server error (fault injection)
9001        200          over the account's ``rate_per_s``; ``Retry-After`` header (seconds)
==========  ===========  ==============================================================

Parameter names match case-insensitively (third-party clients send ``AccountID``). Unicode
is not documented: the text is recorded as decoded (UTF-8 form encoding). The reply carries
no message id, as documented; the inbox records an internal id only.
"""

from __future__ import annotations

import math
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping

from gateways.sandbox.core import after_accept, gate, hex_id, number_error, state_of
from gateways.sandbox.state import SandboxAccount

__all__ = ["MAX_MESSAGE_CHARS", "routes"]

PROVIDER: Final = "redoxygen"
MAX_MESSAGE_CHARS: Final = 765

# Texts of the invented result codes (see the module docstring).
_TEXTS: Final[dict[str, str]] = {
    "0000": "Message accepted",
    "1000": "Unknown action",
    "1001": "Invalid account id",
    "1002": "Invalid email address",
    "1004": "Invalid password",
    "2001": "Invalid recipient",
    "2002": "Message is empty",
    "2003": "Recipient barred",
    "3001": "Insufficient credits",
    "9000": "Server error, please try again later",
    "9001": "Too many requests",
}

routes = web.RouteTableDef()


def _reply(code: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = _TEXTS.get(code, "Error")
    return web.Response(text=f"{code} {text}", status=status, headers=headers)


def _lower_keys(source: MultiMapping[str | Any]) -> dict[str, str]:
    """Text parameters by lower-cased name (names match case-insensitively)."""
    return {key.lower(): value for key, value in source.items() if isinstance(value, str)}


def _authenticate(accounts: list[SandboxAccount], params: dict[str, str]) -> SandboxAccount | str:
    """The matching account, or the result code saying which field is wrong."""
    with_id = [a for a in accounts if a.account_id == params.get("accountid")]
    if not with_id:
        return "1001"
    with_email = [a for a in with_id if a.user_id == params.get("email")]
    if not with_email:
        return "1002"
    password = params.get("password")
    return next((a for a in with_email if a.password == password), "1004")


def _recipients(raw: str) -> list[str] | None:
    """The digits of each comma-separated recipient, or None if any is not a number."""
    found = []
    for item in raw.split(","):
        digits = item.strip().removeprefix("+")
        if not (digits.isdigit() and 6 <= len(digits) <= 15):
            return None
        found.append(digits)
    return found or None


@routes.route("*", "/sms.dll")
async def send_sms(request: web.Request) -> web.Response:
    """``sms.dll``: only ``Action=SendSMS`` is simulated."""
    if request.method not in ("GET", "POST"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    params = _lower_keys(request.query)
    if request.method == "POST":
        params.update(_lower_keys(await request.post()))
    if params.get("action", "").lower() != "sendsms":
        return _reply("1000")
    state = state_of(request)
    account = _authenticate(state.accounts(PROVIDER), params)
    if isinstance(account, str):
        state.count(PROVIDER, "?", "auth_failures")
        return _reply(account)
    if await gate(request, PROVIDER, account) == "error":
        return _reply("9000", status=500)
    retry_s = state.take_token(account)
    if retry_s is not None:
        return _reply("9001", headers={"Retry-After": str(max(1, math.ceil(retry_s)))})
    recipients = _recipients(params.get("recipient", ""))
    if recipients is None:
        return _reply("2001")
    for to in recipients:
        code = number_error(request, PROVIDER, account, to)
        if code is not None:
            return _reply(code)
    # Documented: longer messages are truncated without a word.
    text = params.get("message", "")[:MAX_MESSAGE_CHARS]
    if not text:
        return _reply("2002")
    for to in recipients:
        state.record(
            provider=PROVIDER,
            account=account.name,
            sender=None,
            to=to,
            text=text,
            message_ids=[hex_id(16)],
        )
    await after_accept(request, PROVIDER, account)
    return _reply("0000")
