"""Simulated Clickatell: the Platform REST API and the legacy HTTP API, at their real paths.

Platform (sandbox provider ``clickatell``; an account's ``password`` is its integration API key)

=================================  ===========================================================
``POST /messages``                 JSON send, ``Authorization: <key>`` (raw), up to 200 ``to``
``GET /messages/http/send``        the HTTP variant: ``apiKey``, ``to`` (comma-separated),
                                   ``content``, optional ``from`` / ``clientMessageId``
``GET /v1/balance``                the One API balance: ``{"currency": "USD", "balance": n}``
=================================  ===========================================================

Sends answer ``202`` with one ``messages[]`` entry per recipient (``accepted`` true with an
``apiMessageId``, or false with ``errorCode``/``error``/``errorDescription``) and null
top-level errors. A whole-request failure has an empty ``messages`` list, a top-level
``errorCode``/``error``/``errorDescription`` and the HTTP status of the One API table:
a wrong key is ``401`` error 1, throttling is ``400`` error 43 ``Rate limit`` (the One API
status; no retry hint, none is documented), a fault is ``503`` error 19. Delivery receipts
are JSON POSTs with the fields the official PHP client reads.

Legacy HTTP (sandbox provider ``clickatell-http``; account_id = ``api_id``, user_id = ``user``,
password = ``password``)

``/http/auth``, ``/http/ping``, ``/http/sendmsg`` and ``/http/getbalance``, GET or POST,
authenticated by ``user`` + ``password`` + ``api_id`` or by a ``session_id`` from ``auth``
(32 hex, 15 minutes idle). Plain-text replies, HTTP 200 even for ``ERR:`` lines. ``sendmsg``
takes comma-separated ``to`` (one ``ID: x To: y`` / ``ERR: ... To: y`` line each when there
are several), ``unicode=1`` with UTF-16BE hex text (bad hex: ``ERR: 116``), and refuses a
text longer than ``concat`` parts (at most 3) allow with ``ERR: 113``. Throttling answers
``ERR: 130, Maximum MT limit exceeded until <unix time>``; a fault is HTTP 500
``ERR: 901, Internal error``. Without ``unicode=1``, characters GSM-7 cannot carry arrive
as ``?``, as on a handset. Delivery receipts (status ``004``) are form POSTs, sent when the
``callback`` level asks for final statuses (2, 3, 6 or 7).

Unconfirmed details chosen here (providers.md §10): Platform error numbering and HTTP
statuses follow the One API table; the Platform callback ``status`` is
``RECEIVED_BY_RECIPIENT`` with a millisecond ``timestamp``; the Platform refuses more than
10 parts (error 100); legacy callbacks use ``apiMsgId``/``cliMsgId``.
"""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from gateways.encoding import GSM7_BASIC, GSM7_EXTENSION, encoding_of, segment
from gateways.sandbox.core import after_accept, gate, hex_id, number_error, push_receipt, state_of
from gateways.sandbox.state import SandboxAccount, SandboxState

__all__ = ["routes"]

routes = web.RouteTableDef()

PLATFORM: Final = "clickatell"
LEGACY: Final = "clickatell-http"

# --- Platform ---------------------------------------------------------------------------

# One API code -> (HTTP status of a whole-request failure, error text).
_P_ERRORS: Final[dict[int, tuple[int, str]]] = {
    1: (401, "Invalid or missing integration API key"),
    2: (400, "Account is not active"),
    3: (400, "Integration is not active"),
    7: (401, "Originating IP not approved"),
    18: (500, "Internal error"),
    19: (503, "Internal error, please retry"),
    20: (402, "Insufficient account balance"),
    21: (400, "Payload data is malformed"),
    22: (400, "Maximum messages per request exceeded"),
    23: (400, "Invalid or missing parameter"),
    24: (400, "Maximum message content size exceeded"),
    25: (400, "Invalid recipient address"),
    26: (400, "Recipient opted out"),
    27: (400, "Recipient not available on channel"),
    28: (400, "Recipient not available on sandbox"),
    40: (400, "Character set not supported"),
    41: (400, "Resource does not exist"),
    42: (400, "HTTP method not supported"),
    43: (400, "Rate limit"),
    44: (400, "FROM number is suspended"),
    45: (400, "FROM number is not related to integration"),
    46: (400, "Demo access has expired"),
    100: (400, "Maximum message parts exceeded"),
}
# Codes that concern the whole request, never one recipient (the table's "global" level).
_P_GLOBAL: Final = frozenset({1, 2, 3, 7, 21, 22, 41, 42})
_P_MAX_RECIPIENTS: Final = 200
_P_MAX_PARTS: Final = 10
_P_CHARSETS: Final = frozenset({"UTF-8", "UTF8", "ISO-8859-1"})
_NO_ERROR: Final[dict[str, None]] = {"errorCode": None, "error": None, "errorDescription": None}


def _p_text(code: int) -> str:
    return _P_ERRORS.get(code, (400, "Unknown error"))[1]


def _p_failure(code: int, text: str | None = None) -> web.Response:
    """A whole-request failure in the /messages shape."""
    error = text or _p_text(code)
    body = {"messages": [], "errorCode": code, "error": error, "errorDescription": error}
    return web.json_response(body, status=_P_ERRORS.get(code, (400, ""))[0])


def _p_account(state: SandboxState, key: str | None) -> SandboxAccount | None:
    key = (key or "").strip()
    return state.find_account(PLATFORM, password=key) if key else None


async def _p_admit(request: web.Request, key: str | None) -> SandboxAccount | web.Response:
    """Authenticate, apply faults and the throttle: the account, or the reply to give."""
    state = state_of(request)
    account = _p_account(state, key)
    if account is None:
        state.count(PLATFORM, "?", "auth_failures")
        return _p_failure(1)
    if await gate(request, PLATFORM, account) == "error":
        return _p_failure(19)
    if state.take_token(account) is not None:
        return _p_failure(43)
    return account


def _valid_msisdn(digits: str) -> bool:
    return 7 <= len(digits) <= 15 and digits.isascii() and digits.isdigit()


async def _p_send(
    request: web.Request,
    account: SandboxAccount,
    *,
    recipients: list[Any],
    content: str,
    sender: str | None,
    client_message_id: str | None,
    charset: str | None,
) -> web.Response:
    if len(recipients) > _P_MAX_RECIPIENTS:
        return _p_failure(22)
    state = state_of(request)
    content_code: int | None = None
    if charset is not None and charset.upper() not in _P_CHARSETS:
        content_code = 40
    elif segment(content).segments > _P_MAX_PARTS:
        content_code = 100
    request_id = hex_id(32)
    messages: list[dict[str, Any]] = []
    for raw in recipients:
        to = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        digits = to.removeprefix("+")
        code = content_code
        if code is None and not _valid_msisdn(digits):
            code = 25
        if code is None:
            configured = number_error(request, PLATFORM, account, digits)
            if configured is not None:
                code = int(configured) if configured.isdigit() else 25
                if code in _P_GLOBAL:
                    return _p_failure(code)
        if code is not None:
            error = _p_text(code)
            messages.append(
                {"apiMessageId": None, "accepted": False, "to": to,
                 "errorCode": code, "error": error, "errorDescription": error}
            )  # fmt: skip
            continue
        message_id = hex_id(32)
        state.record(
            provider=PLATFORM,
            account=account.name,
            sender=sender,
            to=digits,
            text=content,
            message_ids=[message_id],
        )
        messages.append({"apiMessageId": message_id, "accepted": True, "to": to, **_NO_ERROR})
        if state.dlr_url:
            push_receipt(
                request,
                json_body={
                    "apiKey": account.password,
                    "messageId": message_id,
                    "requestId": request_id,
                    "clientMessageId": client_message_id or "",
                    "to": digits,
                    "from": sender or "",
                    "status": "RECEIVED_BY_RECIPIENT",
                    "statusDescription": "Received by recipient",
                    "timestamp": int(time.time() * 1000),
                },
            )
    if any(entry["accepted"] for entry in messages):
        await after_accept(request, PLATFORM, account)
    return web.json_response({"messages": messages, **_NO_ERROR}, status=202)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@routes.post("/messages")
async def _platform_rest(request: web.Request) -> web.Response:
    admitted = await _p_admit(request, request.headers.get("Authorization"))
    if isinstance(admitted, web.Response):
        return admitted
    try:
        payload = json.loads(await request.read())
    except ValueError:
        return _p_failure(21)
    if not isinstance(payload, dict):
        return _p_failure(21)
    recipients = payload.get("to")
    if not isinstance(recipients, list) or not recipients:
        return _p_failure(23, "Invalid or missing parameter: to")
    content = payload.get("content")
    if not isinstance(content, str) or not content:
        return _p_failure(23, "Invalid or missing parameter: content")
    return await _p_send(
        request,
        admitted,
        recipients=recipients,
        content=content,
        sender=_optional_str(payload.get("from")),
        client_message_id=_optional_str(payload.get("clientMessageId")),
        charset=_optional_str(payload.get("charset")),
    )


@routes.get("/messages/http/send")
async def _platform_http(request: web.Request) -> web.Response:
    query = request.query
    admitted = await _p_admit(request, query.get("apiKey"))
    if isinstance(admitted, web.Response):
        return admitted
    recipients = [to.strip() for to in query.get("to", "").split(",") if to.strip()]
    if not recipients:
        return _p_failure(23, "Invalid or missing parameter: to")
    content = query.get("content", "")
    if not content:
        return _p_failure(23, "Invalid or missing parameter: content")
    return await _p_send(
        request,
        admitted,
        recipients=list(recipients),
        content=content,
        sender=query.get("from") or None,
        client_message_id=query.get("clientMessageId") or None,
        charset=query.get("charset") or None,
    )


@routes.get("/v1/balance")
async def _platform_balance(request: web.Request) -> web.Response:
    state = state_of(request)
    account = _p_account(state, request.headers.get("Authorization"))
    if account is None:
        state.count(PLATFORM, "?", "auth_failures")
        return web.json_response({"error": {"code": 1, "description": _p_text(1)}}, status=401)
    if await gate(request, PLATFORM, account) == "error":
        return web.json_response({"error": {"code": 19, "description": _p_text(19)}}, status=503)
    return web.json_response({"currency": "USD", "balance": account.balance})


# --- Legacy HTTP ------------------------------------------------------------------------

_L_TEXTS: Final[dict[str, str]] = {
    "001": "Authentication failed",
    "002": "Unknown username or password",
    "003": "Session ID expired",
    "004": "Account frozen",
    "005": "Missing session ID",
    "007": "IP lockdown violation",
    "100": "Data malformed",
    "101": "Invalid or missing parameters",
    "102": "Invalid user data header",
    "105": "Invalid destination address",
    "106": "Invalid source address",
    "107": "Empty message",
    "108": "Invalid or missing API ID",
    "113": "Maximum message parts exceeded",
    "114": "Cannot route message",
    "115": "Message expired",
    "116": "Invalid Unicode data",
    "120": "Invalid delivery time",
    "121": "Destination mobile number blocked",
    "122": "Destination mobile opted out",
    "123": "Invalid sender ID",
    "128": "Number delisted",
    "130": "Maximum MT limit exceeded",
    "301": "No credit left",
    "302": "Max allowed credit",
    "901": "Internal error",
}
_L_MAX_PARTS: Final = 3
_L_MAX_RECIPIENTS: Final = {"GET": 300, "POST": 600}
_L_FINAL_CALLBACKS: Final = frozenset({2, 3, 6, 7})  # callback levels that include 004
_L_MAX_CLIMSGID: Final = 32
_L_CAP_WAIT_S: Final = 60  # how far ahead a configured number error 130 names its "until"
_GSM7: Final = GSM7_BASIC | GSM7_EXTENSION
_SESSION_IDLE_S: Final = 15 * 60.0
_SESSION_LIMIT: Final = 10_000


@dataclass(slots=True)
class _Session:
    account: str
    used: float


# Sessions live beside each sandbox's state (the shared state has no slot for them).
_SESSIONS: weakref.WeakKeyDictionary[SandboxState, dict[str, _Session]] = (
    weakref.WeakKeyDictionary()
)


def _sessions(state: SandboxState) -> dict[str, _Session]:
    table = _SESSIONS.get(state)
    if table is None:
        table = _SESSIONS[state] = {}
    return table


def _l_line(code: str) -> str:
    text = _L_TEXTS.get(code, "Unknown error")
    if code == "130":
        text = f"{text} until {int(time.time()) + _L_CAP_WAIT_S}"
    return f"ERR: {code}, {text}"


def _l_reply(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status)


def _l_fault() -> web.Response:
    return _l_reply("ERR: 901, Internal error", status=500)


async def _l_params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        form = await request.post()
        params.update((key, value) for key, value in form.items() if isinstance(value, str))
    return params


def _l_login(state: SandboxState, params: dict[str, str]) -> SandboxAccount | str:
    """The account named by user + password + api_id, or the ``ERR:`` line to answer."""
    api_id = params.get("api_id", "").strip()
    user = params.get("user", "")
    password = params.get("password", "")
    if not api_id:
        return _l_line("108")
    account = state.find_account(LEGACY, account_id=api_id, user_id=user, password=password)
    if account is not None:
        return account
    if user and state.find_account(LEGACY, user_id=user, password=password) is not None:
        return _l_line("108")  # right user and password, wrong API
    return _l_line("001")


def _l_session(state: SandboxState, session_id: str) -> SandboxAccount | str:
    table = _sessions(state)
    session = table.get(session_id)
    now = time.monotonic()
    if session is None or now - session.used > _SESSION_IDLE_S:
        table.pop(session_id, None)
        return _l_line("003")
    account = state.find_account(LEGACY, name=session.account)
    if account is None:
        table.pop(session_id, None)
        return _l_line("003")
    session.used = now
    return account


async def _l_admit(
    request: web.Request, params: dict[str, str], *, session_only: bool = False
) -> SandboxAccount | web.Response:
    """Authenticate (session or credentials) and apply faults: the account, or the reply."""
    state = state_of(request)
    session_id = params.get("session_id", "").strip()
    if session_id:
        found = _l_session(state, session_id)
    elif session_only:
        found = _l_line("005")
    else:
        found = _l_login(state, params)
    if isinstance(found, str):
        state.count(LEGACY, "?", "auth_failures")
        return _l_reply(found)
    if await gate(request, LEGACY, found) == "error":
        return _l_fault()
    return found


@routes.get("/http/auth")
@routes.post("/http/auth")
async def _legacy_auth(request: web.Request) -> web.Response:
    state = state_of(request)
    found = _l_login(state, await _l_params(request))
    if isinstance(found, str):
        state.count(LEGACY, "?", "auth_failures")
        return _l_reply(found)
    if await gate(request, LEGACY, found) == "error":
        return _l_fault()
    table = _sessions(state)
    if len(table) >= _SESSION_LIMIT:
        del table[next(iter(table))]  # the oldest session goes first
    session_id = hex_id(32)
    table[session_id] = _Session(found.name, time.monotonic())
    return _l_reply(f"OK: {session_id}")


@routes.get("/http/ping")
@routes.post("/http/ping")
async def _legacy_ping(request: web.Request) -> web.Response:
    admitted = await _l_admit(request, await _l_params(request), session_only=True)
    return admitted if isinstance(admitted, web.Response) else _l_reply("OK: ")


@routes.get("/http/getbalance")
@routes.post("/http/getbalance")
async def _legacy_balance(request: web.Request) -> web.Response:
    admitted = await _l_admit(request, await _l_params(request))
    if isinstance(admitted, web.Response):
        return admitted
    return _l_reply(f"Credit: {admitted.balance}")


def _decode_ucs2(hex_text: str) -> str | None:
    try:
        return bytes.fromhex(hex_text).decode("utf-16-be")
    except ValueError:  # bad hex, odd length or a lone surrogate (UnicodeDecodeError)
        return None


def _l_text(params: dict[str, str]) -> str | None:
    """The message text as the handset would show it, or ``None`` for bad Unicode data."""
    text = params.get("text", "")
    if params.get("unicode") == "1":
        return _decode_ucs2(text)
    if encoding_of(text) != "GSM-7":
        return "".join(ch if ch in _GSM7 else "?" for ch in text)
    return text


def _int_param(params: dict[str, str], name: str, default: int) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return default
    return int(value) if value.isascii() and value.isdigit() else None


@routes.get("/http/sendmsg")
@routes.post("/http/sendmsg")
async def _legacy_sendmsg(request: web.Request) -> web.Response:
    params = await _l_params(request)
    admitted = await _l_admit(request, params)
    if isinstance(admitted, web.Response):
        return admitted
    account = admitted
    state = state_of(request)
    retry_s = state.take_token(account)
    if retry_s is not None:
        until = int(time.time() + retry_s) + 1
        return _l_reply(f"ERR: 130, Maximum MT limit exceeded until {until}")
    recipients = [to.strip() for to in params.get("to", "").split(",") if to.strip()]
    concat = _int_param(params, "concat", 1)
    callback = _int_param(params, "callback", 0)
    climsgid = params.get("climsgid", "")
    if (
        not recipients
        or len(recipients) > _L_MAX_RECIPIENTS.get(request.method, 600)
        or concat is None
        or callback is None
        or (climsgid and not (climsgid.isascii() and climsgid.isalnum()))
        or len(climsgid) > _L_MAX_CLIMSGID
    ):
        return _l_reply(_l_line("101"))
    text = _l_text(params)
    if text is None:
        return _l_reply(_l_line("116"))
    if not text:
        return _l_reply(_l_line("107"))
    parts = segment(text).segments
    if parts > max(1, min(concat, _L_MAX_PARTS)):
        return _l_reply(_l_line("113"))
    sender = params.get("from") or None
    receipts = bool(state.dlr_url) and callback in _L_FINAL_CALLBACKS
    several = len(recipients) > 1
    lines: list[str] = []
    for to in recipients:
        suffix = f" To: {to}" if several else ""
        code = None if _valid_msisdn(to) else "105"
        if code is None:
            configured = number_error(request, LEGACY, account, to)
            code = configured.zfill(3) if configured is not None else None
        if code is not None:
            lines.append(_l_line(code) + suffix)
            continue
        message_id = hex_id(32)
        state.record(
            provider=LEGACY,
            account=account.name,
            sender=sender,
            to=to,
            text=text,
            message_ids=[message_id],
        )
        lines.append(f"ID: {message_id}{suffix}")
        if receipts:
            push_receipt(
                request,
                form={
                    "api_id": account.account_id or "",
                    "apiMsgId": message_id,
                    "cliMsgId": climsgid,
                    "to": to,
                    "from": sender or "",
                    "timestamp": str(int(time.time())),
                    "status": "004",
                    "charge": f"{float(parts):.1f}",
                },
            )
    if any(line.startswith("ID:") for line in lines):
        await after_accept(request, LEGACY, account)
    return _l_reply("\n".join(lines))
