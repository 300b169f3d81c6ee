"""Simulated Twilio Programmable Messaging API (``2010-04-01``), at Twilio's own paths.

==================================================================  =============================
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``             create a message (form)
``GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``       fetch a message
``GET  /2010-04-01/Accounts/{AccountSid}.json``                      the account resource
``GET  /2010-04-01/Accounts/{AccountSid}/Balance.json``              the balance
==================================================================  =============================

Authentication is HTTP Basic, ``AccountSid:AuthToken`` (a sandbox account's ``account_id`` and
``password``), or ``ApiKeySid:ApiKeySecret`` for an account entry whose ``user_id`` is an
``SK...`` key (its ``password`` is the key secret, its ``account_id`` the Account SID in the
path). Anything else gets Twilio's 401 / code 20003.

Simulated behaviour (choices where Twilio's documentation is silent are marked *choice*):

* Twilio's test-credential magic numbers apply to **every** account, so tests and demos can
  trigger errors without configuring faults: From ``+15005550001`` -> 21212, ``+15005550007``
  -> 21606, ``+15005550008`` -> 21611; To ``+15005550001`` -> 21211, ``+15005550002`` ->
  21612, ``+15005550003`` -> 21408, ``+15005550004`` -> 21610, ``+15005550009`` -> 21614.
  Unlike Twilio's test credentials, any other From is accepted and status callbacks are sent.
* Missing ``To`` -> 21604, missing ``From`` and ``MessagingServiceSid`` -> 21603, missing
  ``Body`` -> 21602, ``Body`` over 1600 characters -> 21617, a ``To`` that is not E.164 with
  ``+`` -> 21211, an invalid ``StatusCallback`` -> 21609, a malformed ``MessagingServiceSid``
  -> 21701 (*choice*: the code of a Messaging Service that cannot be found). All HTTP 400.
* The throttle answers HTTP 429 / code 20429 with a ``Retry-After`` header in whole seconds
  (*choice*: Twilio documents exponential back-off, not the header; sending one lets clients
  that honour it be tested).
* An injected fault answers HTTP 500 / code 20500 "Internal Server Error".
* ``number_errors`` answer with the configured Twilio code, HTTP 400 (401 for 20003, 404 for
  20404, 429 for 20429, 500 for 20500).
* Success: HTTP 201 with the Message resource; ``num_segments`` counted like a carrier would
  (``"0"`` at first with a Messaging Service, as Twilio does), status ``queued`` (``accepted``
  with a Messaging Service).
* Status callbacks go to the request's ``StatusCallback``, else to the sandbox's receipt URL:
  ``sent`` after 0.1 s, then ``delivered`` after 0.2 s, form-encoded and signed with
  ``X-Twilio-Signature`` (HMAC-SHA1 of the Auth Token over the URL plus the sorted
  parameters, base64). A fetch shows the same progression.
* Account status (*choice*, the sandbox accounts have no status field): an account whose
  name starts with ``suspended`` or ``closed`` has that status; its account resource says so
  and its sends get 401 / 20003 like bad credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateways.sandbox.core import (
    _RECEIPT_TASKS,
    DLR_SESSION,
    after_accept,
    gate,
    hex_id,
    number_error,
    state_of,
)
from gateways.sandbox.state import InboxMessage, SandboxAccount, SandboxState

__all__ = ["PROVIDER", "routes", "signature"]

PROVIDER = "twilio"
API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
SENT_AFTER_S = 0.1
DELIVERED_AFTER_S = 0.2

_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
    "sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone "
    "number for this destination/account.",
    21609: "The StatusCallback URL is not a valid URL.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
    "number via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service Sid {service} is invalid.",
}
_HTTP_STATUS: dict[int, int] = {20003: 401, 20404: 404, 20429: 429, 20500: 500}
_FROM_MAGIC: dict[str, int] = {"+15005550001": 21212, "+15005550007": 21606, "+15005550008": 21611}
_TO_MAGIC: dict[str, int] = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
# Twilio's webhook requests identify themselves so.
_CALLBACK_HEADERS = {"User-Agent": "TwilioProxy/1.1"}

routes = web.RouteTableDef()


# --- wire helpers ---------------------------------------------------------------------------


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a form POST to ``url``.

    Base64 of HMAC-SHA1, keyed with the Auth Token, over the URL followed by every parameter
    name and value, sorted by name.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _error(
    code: int,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    **values: str,
) -> web.Response:
    """Twilio's error body: ``{code, message, more_info, status}``."""
    http_status = status or _HTTP_STATUS.get(code, 400)
    template = _MESSAGES.get(code)
    message = template.format_map(_Blank(values)) if template else None
    body = {
        "code": code,
        "message": message or f"Error {code}",
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": http_status,
    }
    return web.json_response(body, status=http_status, headers=headers)


class _Blank(dict[str, str]):
    """Template values; a value the caller did not give renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _rfc2822(moment: float) -> str:
    return format_datetime(datetime.fromtimestamp(moment, UTC))


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _account_status(account: SandboxAccount) -> str:
    for status in ("suspended", "closed"):
        if account.name.startswith(status):
            return status
    return "active"


def _auth_token(state: SandboxState, account: SandboxAccount) -> str:
    """The Auth Token of the account (an API-key entry signs with its account's token)."""
    if account.user_id:
        owner = state.find_account(PROVIDER, account_id=account.account_id, user_id=None)
        if owner is not None and owner.password:
            return owner.password
    return account.password or ""


def _authenticate(request: web.Request) -> SandboxAccount | None:
    sid = request.match_info["sid"]
    credentials = _basic_credentials(request)
    if credentials is None:
        return None
    user, password = credentials
    state = state_of(request)
    if user == sid:
        return state.find_account(PROVIDER, account_id=sid, user_id=None, password=password)
    if user.startswith("SK"):
        return state.find_account(PROVIDER, account_id=sid, user_id=user, password=password)
    return None


async def _admit(request: web.Request, *, sending: bool = False) -> SandboxAccount | web.Response:
    """Authenticate, apply faults and the throttle: the account, or Twilio's error reply."""
    account = _authenticate(request)
    if account is None or (sending and _account_status(account) != "active"):
        state_of(request).count(PROVIDER, account.name if account else "?", "auth_failures")
        return _error(20003, headers=_AUTHENTICATE)
    if await gate(request, PROVIDER, account) == "error":
        return _error(20500)
    retry_s = state_of(request).take_token(account)
    if retry_s is not None:
        return _error(20429, headers={"Retry-After": str(max(1, math.ceil(retry_s)))})
    return account


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _valid_callback(url: str) -> bool:
    if len(url) > 4000 or not url.startswith(("http://", "https://")):
        return False
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return bool(host) and "_" not in host


def _request_error(
    to: str, from_: str, service: str, body: str, callback: str
) -> web.Response | None:
    """Twilio's 400 for a malformed create request, or None."""
    if not to:
        return _error(21604)
    if not from_ and not service:
        return _error(21603)
    if service and not _SERVICE_SID.fullmatch(service):
        return _error(21701, service=service)
    if not body:
        return _error(21602)
    if len(body) > MAX_BODY_CHARS:
        return _error(21617)
    if not _E164.fullmatch(to):
        return _error(21211, to=to)
    if from_ and not (_E164.fullmatch(from_) or _ALPHANUMERIC_SENDER.fullmatch(from_)):
        return _error(21212, from_=from_)
    if callback and not _valid_callback(callback):
        return _error(21609)
    code = _FROM_MAGIC.get(from_) or _TO_MAGIC.get(to)
    if code is not None:
        return _error(code, to=to, from_=from_)
    return None


def _message_resource(
    *,
    account_sid: str,
    sid: str,
    from_: str | None,
    service: str | None,
    to: str,
    body: str,
    status: str,
    segments: int,
    created: float,
    sent: float | None = None,
) -> dict[str, Any]:
    """The Message resource as Twilio returns it (strings where Twilio uses strings)."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    date_created = _rfc2822(created)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "messaging_service_sid": service,
        "from": from_,
        "to": to,
        "body": body,
        "status": status,
        "direction": "outbound-api",
        "num_segments": str(segments),
        "num_media": "0",
        "price": None,
        "price_unit": "USD",
        "error_code": None,
        "error_message": None,
        "api_version": API_VERSION,
        "date_created": date_created,
        "date_updated": _rfc2822(sent) if sent is not None else date_created,
        "date_sent": _rfc2822(sent) if sent is not None else None,
        "uri": f"{uri}.json",
        "subresource_uris": {"media": f"{uri}/Media.json"},
    }


def _push_status_callbacks(
    request: web.Request, *, url: str, auth_token: str, fields: dict[str, str]
) -> None:
    """POST ``sent`` then ``delivered`` to ``url`` in the background, signed."""
    app = request.app

    async def deliver() -> None:
        session = app[DLR_SESSION]
        waited = 0.0
        for status, at_s in (("sent", SENT_AFTER_S), ("delivered", DELIVERED_AFTER_S)):
            await asyncio.sleep(at_s - waited)
            waited = at_s
            form = {**fields, "MessageStatus": status, "SmsStatus": status}
            if status == "delivered":
                form["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
            headers = {**_CALLBACK_HEADERS, "X-Twilio-Signature": signature(auth_token, url, form)}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url, data=form, headers=headers) as response:
                    await response.read()

    task = asyncio.get_running_loop().create_task(deliver())
    tasks = app[_RECEIPT_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# --- handlers -------------------------------------------------------------------------------


@routes.post("/2010-04-01/Accounts/{sid}/Messages.json")
async def create_message(request: web.Request) -> web.Response:
    """Create (send) a message."""
    admitted = await _admit(request, sending=True)
    if isinstance(admitted, web.Response):
        return admitted
    account = admitted
    form = await request.post()
    to = _field(form, "To")
    if to:
        configured = number_error(request, PROVIDER, account, to)
        if configured is not None:
            code = int(configured) if configured.isdigit() else 21211
            return _error(code, to=to, from_=_field(form, "From"))
    from_ = _field(form, "From")
    service = _field(form, "MessagingServiceSid")
    value = form.get("Body")
    body = value if isinstance(value, str) else ""
    callback = _field(form, "StatusCallback")
    refused = _request_error(to, from_, service, body, callback)
    if refused is not None:
        return refused

    state = state_of(request)
    account_sid = request.match_info["sid"]
    sid = "SM" + hex_id(32)
    now = time.time()
    message = state.record(
        provider=PROVIDER,
        account=account.name,
        sender=from_ or service,
        to=to,
        text=body,
        message_ids=[sid],
    )
    resource = _message_resource(
        account_sid=account_sid,
        sid=sid,
        from_=from_ or None,
        service=service or None,
        to=to,
        body=body,
        status="accepted" if service else "queued",
        # A Messaging Service reports segments only once it has picked a sender.
        segments=0 if service else message.segments,
        created=now,
    )
    receipt_url = callback or state.dlr_url
    if receipt_url:
        fields = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": account_sid,
            "To": to,
            "ApiVersion": API_VERSION,
        }
        if from_:
            fields["From"] = from_
        if service:
            fields["MessagingServiceSid"] = service
        _push_status_callbacks(
            request, url=receipt_url, auth_token=_auth_token(state, account), fields=fields
        )
    await after_accept(request, PROVIDER, account)
    return web.json_response(resource, status=201)


def _find_message(state: SandboxState, account: SandboxAccount, sid: str) -> InboxMessage | None:
    for message in reversed(state.messages(provider=PROVIDER)):
        if message.account == account.name and sid in message.message_ids:
            return message
    return None


@routes.get("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json")
async def fetch_message(request: web.Request) -> web.Response:
    """Fetch a message this account sent, with its status as it progresses."""
    admitted = await _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    message_sid = request.match_info["message_sid"]
    found = _find_message(state_of(request), admitted, message_sid)
    if found is None:
        return _error(20404)
    service = found.sender if found.sender and found.sender.startswith("MG") else None
    age_s = time.time() - found.received_at
    if age_s >= DELIVERED_AFTER_S:
        status = "delivered"
    elif age_s >= SENT_AFTER_S:
        status = "sent"
    else:
        status = "accepted" if service else "queued"
    resource = _message_resource(
        account_sid=request.match_info["sid"],
        sid=message_sid,
        from_=None if service else found.sender,
        service=service,
        to=found.to,
        body=found.text,
        status=status,
        segments=0 if status in ("accepted", "queued") and service else found.segments,
        created=found.received_at,
        sent=found.received_at + SENT_AFTER_S if age_s >= SENT_AFTER_S else None,
    )
    return web.json_response(resource)


@routes.get("/2010-04-01/Accounts/{sid}.json")
async def fetch_account(request: web.Request) -> web.Response:
    """The Account resource (what a credential test reads)."""
    admitted = await _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    sid = request.match_info["sid"]
    created = _rfc2822(0.0)
    base = f"/{API_VERSION}/Accounts/{sid}"
    return web.json_response(
        {
            "auth_token": _auth_token(state_of(request), admitted),
            "date_created": created,
            "date_updated": created,
            "friendly_name": admitted.name,
            "owner_account_sid": sid,
            "sid": sid,
            "status": _account_status(admitted),
            "subresource_uris": {
                "balance": f"{base}/Balance.json",
                "messages": f"{base}/Messages.json",
            },
            "type": "Full",
            "uri": f"{base}.json",
        }
    )


@routes.get("/2010-04-01/Accounts/{sid}/Balance.json")
async def fetch_balance(request: web.Request) -> web.Response:
    """The account balance."""
    admitted = await _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    return web.json_response(
        {
            "account_sid": request.match_info["sid"],
            "balance": f"{admitted.balance:.2f}",
            "currency": "USD",
        }
    )
