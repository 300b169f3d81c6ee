"""Simulated Bulletin Connect HTTP API (``/api/1/sms/...``): form parameters, HTTP statuses.

Endpoints, as documented:

=====================  =====  ===========================================================
``/api/1/sms/out``     GET,   send: ``userId``, ``password``, ``to``, ``body``, ``messageId``,
                       POST   ``from`` / ``rateCode``, ``contentType``, ``fragmentationLimit``;
                              ``204`` on success
``/api/1/sms/status``  GET    one delivery receipt per call (``200`` + form-encoded body), or
                              ``204`` when none is waiting
``/api/1/sms/in``      GET    one reply per call; the sandbox has none, so always ``204``
``/api/1/sms/queue``   GET    ``statusCount=N&inCount=M``
=====================  =====  ===========================================================

Errors are HTTP statuses with the text in the status line and an HTML ``<h1>``: ``400``
bad or missing parameter, ``401`` wrong ``userId``/``password``, ``405`` wrong method,
``500`` internal error (fault injection).

INVENTED here, because Bulletin documents none of it:

* ``429 Too Many Requests`` with ``Retry-After`` (seconds) over the account's ``rate_per_s``.
* Without ``contentType=text/plain; charset=UTF-16`` the message goes out as GSM-7 and
  every character outside GSM-7 is recorded as ``?`` (what a handset would show).
* A ``body`` beyond ``fragmentationLimit`` segments (480 characters without one) is
  refused with ``400``, not truncated.
* ``number_errors`` values: digits (``"400"``) answer the send with that HTTP status (``400``
  says "Invalid destination address"); a status code such as ``"NUR"`` accepts the send and
  queues a receipt with that status instead of ``RCV``.

Receipts: every accepted message gets one ``RCV`` receipt (``messageId`` a new id,
``inReplyToId`` the sender's ``messageId``, ``to`` the source address, ``from`` the
recipient), served oldest first.
"""

from __future__ import annotations

import math
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiMapping

from gateways.encoding import GSM7_BASIC, GSM7_EXTENSION, segment
from gateways.sandbox.core import after_accept, gate, number_error, state_of
from gateways.sandbox.state import InboxMessage, SandboxAccount, SandboxState

__all__ = ["DEFAULT_SOURCE", "routes"]

PROVIDER: Final = "bulletin"
DEFAULT_SOURCE: Final = "2654"
"""The short code receipts name as ``to`` when the message had no ``from``."""
_MAX_MESSAGE_ID: Final = 36
_DEFAULT_MAX_CHARS: Final = 480
_GSM7: Final = GSM7_BASIC | GSM7_EXTENSION
_STATUS_ERRORS: Final[dict[str, str]] = {
    "NUR": "Number unreachable",
    "ERR": "Internal error",
    "NRCV": "Not received",
    "NRC": "Not received",
    "EXP": "Not delivered within allowed time",
    "INF": "Insufficient funds",
}

routes = web.RouteTableDef()


@dataclass
class _Receipts:
    """Receipt bookkeeping of one sandbox state, derived from its inbox."""

    reported_upto: dict[str, int] = field(default_factory=dict)
    """Account name -> inbox id of the last message whose receipt was served."""
    statuses: dict[int, str] = field(default_factory=dict)
    """Inbox id -> status code, for messages whose receipt is not ``RCV``."""


# Inbox ids only grow (a reset does not restart them), so a cursor survives resets.
_RECEIPTS: weakref.WeakKeyDictionary[SandboxState, _Receipts] = weakref.WeakKeyDictionary()


def _receipts(state: SandboxState) -> _Receipts:
    found = _RECEIPTS.get(state)
    if found is None:
        found = _RECEIPTS[state] = _Receipts()
    return found


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    page = f"<html><head><title>{status} {text}</title></head><body><h1>{text}</h1></body></html>"
    return web.Response(
        status=status, reason=text, text=page, content_type="text/html", headers=headers
    )


def _text_params(source: MultiMapping[str | Any]) -> dict[str, str]:
    return {key: value for key, value in source.items() if isinstance(value, str)}


async def _params(request: web.Request) -> dict[str, str]:
    """Query parameters, overridden by form fields on POST (names are case-sensitive)."""
    params = _text_params(request.query)
    if request.method == "POST":
        params.update(_text_params(await request.post()))
    return params


def _account(request: web.Request, params: dict[str, str]) -> SandboxAccount | None:
    state = state_of(request)
    account = state.find_account(
        PROVIDER, user_id=params.get("userId"), password=params.get("password")
    )
    if account is None:
        state.count(PROVIDER, "?", "auth_failures")
    return account


def _unauthorised() -> web.Response:
    return _error(401, "Invalid userId or password")


def _wrong_method(allowed: str) -> web.Response:
    return _error(405, f"Use {allowed}", headers={"Allow": allowed})


def _as_gsm(text: str) -> str:
    return "".join(ch if ch in _GSM7 else "?" for ch in text)


def _check_message(params: dict[str, str]) -> tuple[str, str | None, str] | web.Response:
    """The text as delivered, the sender and the messageId; or Bulletin's 400."""
    body = params.get("body", "")
    if not body:
        return _error(400, "Missing parameter: body")
    message_id = params.get("messageId") or str(uuid.uuid4())
    if len(message_id) > _MAX_MESSAGE_ID:
        return _error(400, "messageId longer than 36 characters")
    sender = params.get("from") or None
    if sender and params.get("rateCode"):
        return _error(400, "rateCode cannot be combined with from")
    content_type = params.get("contentType", "text/plain").replace(" ", "").lower()
    if content_type == "text/plain;charset=utf-16":
        text = body
    elif content_type == "text/plain":
        text = _as_gsm(body)
    else:
        return _error(400, "Unsupported contentType")
    limit_raw = params.get("fragmentationLimit")
    if limit_raw is None:
        if len(text) > _DEFAULT_MAX_CHARS:
            return _error(400, "body longer than 480 characters")
    elif not (limit_raw.isdigit() and int(limit_raw) >= 1):
        return _error(400, "Invalid fragmentationLimit")
    elif segment(text).segments > int(limit_raw):
        return _error(400, "body exceeds fragmentationLimit")
    return text, sender, message_id


@routes.route("*", "/api/1/sms/out")
async def send_sms(request: web.Request) -> web.Response:
    """Send one message (GET or POST)."""
    if request.method not in ("GET", "POST"):
        return _wrong_method("GET, POST")
    params = await _params(request)
    account = _account(request, params)
    if account is None:
        return _unauthorised()
    if await gate(request, PROVIDER, account) == "error":
        return _error(500, "Internal error")
    state = state_of(request)
    retry_s = state.take_token(account)
    if retry_s is not None:
        return _error(429, "Too many requests", {"Retry-After": str(max(1, math.ceil(retry_s)))})
    to = params.get("to", "")
    if not to:
        return _error(400, "Missing parameter: to")
    if not (to.isdigit() and 6 <= len(to) <= 15):
        return _error(400, "Invalid destination address")
    receipt_status = "RCV"
    code = number_error(request, PROVIDER, account, to)
    if code is not None:
        if code.isdigit():
            status = int(code)
            return _error(status, "Invalid destination address" if status == 400 else "Refused")
        receipt_status = code
    checked = _check_message(params)
    if isinstance(checked, web.Response):
        return checked
    text, sender, message_id = checked
    message = state.record(
        provider=PROVIDER,
        account=account.name,
        sender=sender,
        to=to,
        text=text,
        message_ids=[message_id],
    )
    if receipt_status != "RCV":
        _receipts(state).statuses[message.id] = receipt_status
    await after_accept(request, PROVIDER, account)
    return web.Response(status=204)


def _pending(state: SandboxState, account: SandboxAccount) -> list[InboxMessage]:
    after = _receipts(state).reported_upto.get(account.name, 0)
    return [
        m for m in state.messages(provider=PROVIDER) if m.account == account.name and m.id > after
    ]


def _receipt_body(state: SandboxState, message: InboxMessage) -> str:
    status = _receipts(state).statuses.pop(message.id, "RCV")
    return urlencode(
        {
            "messageId": str(uuid.uuid4()),
            "to": message.sender or DEFAULT_SOURCE,
            "from": message.to,
            "statusCode": status,
            "inReplyToId": message.message_ids[0] if message.message_ids else "",
            "error": _STATUS_ERRORS.get(status, ""),
        }
    )


async def _polling_account(request: web.Request) -> SandboxAccount | web.Response:
    """Authenticate a polling call (GET only) and apply faults, or the error reply."""
    if request.method != "GET":
        return _wrong_method("GET")
    account = _account(request, _text_params(request.query))
    if account is None:
        return _unauthorised()
    if await gate(request, PROVIDER, account) == "error":
        return _error(500, "Internal error")
    return account


@routes.route("*", "/api/1/sms/status")
async def poll_status(request: web.Request) -> web.Response:
    """The oldest receipt not served yet, or 204."""
    account = await _polling_account(request)
    if isinstance(account, web.Response):
        return account
    state = state_of(request)
    pending = _pending(state, account)
    if not pending:
        return web.Response(status=204)
    message = pending[0]
    _receipts(state).reported_upto[account.name] = message.id
    return web.Response(
        text=_receipt_body(state, message), content_type="application/x-www-form-urlencoded"
    )


@routes.route("*", "/api/1/sms/in")
async def poll_replies(request: web.Request) -> web.Response:
    """Replies from handsets: the sandbox receives none."""
    account = await _polling_account(request)
    if isinstance(account, web.Response):
        return account
    return web.Response(status=204)


@routes.route("*", "/api/1/sms/queue")
async def queue_depth(request: web.Request) -> web.Response:
    """How many receipts and replies wait to be polled."""
    account = await _polling_account(request)
    if isinstance(account, web.Response):
        return account
    waiting = len(_pending(state_of(request), account))
    return web.Response(
        text=urlencode({"statusCount": waiting, "inCount": 0}),
        content_type="application/x-www-form-urlencoded",
    )
