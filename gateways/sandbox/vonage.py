"""Simulated Vonage (Nexmo) SMS API: ``/sms/json`` and ``/account/get-balance``.

Wire facts: /work/shared/providers.md §1. Accounts are ``provider="vonage"`` sandbox
accounts: ``user_id`` is the API key and ``password`` the API secret, which also serves as
the *signature secret* of signed requests (real Vonage keeps a separate one per key).

``/sms/json`` (POST form, or GET with the same fields in the query) takes the three ways
of authenticating Vonage accepts:

* ``api_key`` + ``api_secret`` fields;
* an ``Authorization: Basic base64(key:secret)`` header (what the official SDK sends);
* ``api_key`` + ``timestamp`` + ``sig``, no secret. The signature is checked against every
  method Vonage offers, told apart by length: the plain "MD5 hash" (md5 of the sorted
  ``&k=v`` string plus the secret) and HMAC-md5 (32 hex digits), HMAC-sha1 (40),
  HMAC-sha256 (64), HMAC-sha512 (128). A timestamp more than 5 minutes off fails too.

Replies are HTTP 200 with a ``status`` per part, as Vonage sends them: 32 for a secret and a
signature together, 2 for a missing field, 4 for bad credentials, 14 for a bad signature,
1 (with ``[ N ]`` ms to wait) when throttled, 9 when the balance cannot pay the parts.
An injected error fault is an HTTP 500; ``number_errors`` answer with that status code (the
code ``5`` being Vonage's own internal-error status). A ``number_errors`` value
``"<code>@<part>"`` (``"7@2"``) fails only that part of a long text with that status, as
Vonage may: the other parts are accepted with their message ids (and receipts), the failed
entry has a ``status`` and ``error-text`` but no ``message-id``, and the inbox message holds
the accepted parts' ids only. (With a part number beyond the text's parts, every part is
accepted.) A long text is split as Vonage does: one ``messages[]`` entry, message id and
(when ``dlr_url`` is set) POST-JSON delivery receipt per part, but one inbox message per
request.

Limits of the simulation: only ``type`` text and unicode (others get status 3), the balance
is never charged (``remaining-balance`` counts down within one reply only), the request's
``callback`` is validated but receipts always go to the sandbox's ``dlr_url``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from aiohttp import web

from gateways.encoding import segment
from gateways.sandbox.core import after_accept, gate, hex_id, number_error, push_receipt, state_of
from gateways.sandbox.state import SandboxAccount

__all__ = ["ERROR_TEXTS", "routes", "signature_matches", "signing_string"]

routes = web.RouteTableDef()

_PROVIDER: Final = "vonage"
_MAX_TEXT: Final = 3200
_MAX_CLIENT_REF: Final = 40
_MAX_CALLBACK: Final = 100
_TIMESTAMP_SKEW_S: Final = 300
_PRICE_PER_PART: Final = 0.0333
_NETWORK: Final = "23410"
_TYPES: Final = frozenset({"text", "unicode"})
_NO_RECEIPT: Final = frozenset({"0", "false"})

ERROR_TEXTS: Final[dict[str, str]] = {
    "1": "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
    "2": "Missing parameters",
    "3": "Invalid parameters",
    "4": "Bad Credentials",
    "5": "Internal Error",
    "6": "Invalid Message",
    "7": "Number Barred",
    "8": "Partner Account Barred",
    "9": "Partner Quota Exceeded",
    "10": "Too many existing binds",
    "11": "Account not enabled for HTTP",
    "12": "Message Too Long",
    "14": "Invalid Signature",
    "15": "Illegal Sender Address - rejected",
    "22": "Invalid Network Code",
    "23": "Invalid Callback Url",
    "29": "Non White-listed Destination - rejected",
    "32": "Signature And API Secret Disallowed",
    "33": "Number De-activated",
}
"""The ``error-text`` the simulator sends with each status code."""

_UNAUTHORIZED: Final = {"error-code": "401", "error-code-label": "authentication failed"}

# Signature methods by the length of their hex digest.
_HMAC_BY_LENGTH: Final = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


def _status(code: str, text: str | None = None) -> web.Response:
    """A Vonage error reply: HTTP 200 with one failed message entry."""
    entry = {"status": code, "error-text": text or ERROR_TEXTS.get(code, "Error")}
    return web.json_response({"message-count": "1", "messages": [entry]})


def signing_string(params: Mapping[str, str]) -> str:
    """The string Vonage signs: ``&k=v`` pairs sorted by key, ``sig`` left out.

    In the values (only), ``&`` and ``=`` become ``_``.
    """
    return "".join(
        f"&{key}={value.replace('&', '_').replace('=', '_')}"
        for key, value in sorted(params.items())
        if key != "sig"
    )


def signature_matches(params: Mapping[str, str], secret: str, sig: str) -> bool:
    """Whether ``sig`` signs ``params`` with ``secret`` by any of Vonage's methods."""
    payload = signing_string(params).encode()
    key = secret.encode()
    given = sig.strip().lower()
    digest_name = _HMAC_BY_LENGTH.get(len(given))
    if digest_name is None:
        return False
    candidates = [hmac.new(key, payload, digest_name).hexdigest()]
    if digest_name == "md5":
        candidates.append(hashlib.md5(payload + key, usedforsecurity=False).hexdigest())
    return any(hmac.compare_digest(given, candidate) for candidate in candidates)


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    try:
        auth = aiohttp.BasicAuth.decode(header, encoding="utf-8")
    except (ValueError, binascii.Error):
        return None  # not Basic: Vonage then looks for credentials in the fields
    return auth.login, auth.password


def _secret_matches(account: SandboxAccount, secret: str) -> bool:
    return account.password is not None and hmac.compare_digest(
        account.password.encode(), secret.encode()
    )


def _authenticate(request: web.Request, params: Mapping[str, str]) -> SandboxAccount | web.Response:
    """The account the request authenticates as, or Vonage's error reply."""
    state = state_of(request)
    basic = _basic_credentials(request)
    key: str | None
    secret: str | None
    sig: str | None = None
    if basic is not None:
        key, secret = basic
    else:
        key, secret, sig = params.get("api_key"), params.get("api_secret"), params.get("sig")
        if secret and sig:
            return _status("32")
        if not key:
            return _status("2", "Missing api_key")
        if not secret and not sig:
            return _status("2", "Missing api_secret")
    account = state.find_account(_PROVIDER, user_id=key)
    if account is None or (sig is None and not _secret_matches(account, secret or "")):
        state.count(_PROVIDER, account.name if account else "?", "auth_failures")
        return _status("4")
    if sig is not None and not _signature_ok(account, params, sig):
        state.count(_PROVIDER, account.name, "auth_failures")
        return _status("14")
    return account


def _signature_ok(account: SandboxAccount, params: Mapping[str, str], sig: str) -> bool:
    try:
        stamp = float(params.get("timestamp", ""))
    except ValueError:
        return False
    if abs(time.time() - stamp) > _TIMESTAMP_SKEW_S:
        return False
    return signature_matches(params, account.password or "", sig)


def _invalid(params: Mapping[str, str]) -> web.Response | None:
    """Vonage's reply to a request with a missing or invalid field, if it has one."""
    for name in ("from", "to"):
        if not params.get(name):
            return _status("2", f"Missing {name} param")
    kind = params.get("type", "text")
    if kind not in _TYPES:
        return _status("3", "Invalid type param")
    if not params.get("text"):
        return _status("2", "Missing text param")
    to = params["to"].lstrip("+")
    if not (to.isdigit() and 7 <= len(to) <= 15):
        return _status("3", "Invalid to param")
    if len(params["text"]) > _MAX_TEXT:
        return _status("12")
    if len(params.get("client-ref", "")) > _MAX_CLIENT_REF:
        return _status("3", "Invalid client-ref param")
    callback = params.get("callback")
    if callback is not None and (
        len(callback) > _MAX_CALLBACK or not callback.startswith(("http://", "https://"))
    ):
        return _status("23")
    return None


async def _send(request: web.Request, params: dict[str, str]) -> web.Response:
    account = _authenticate(request, params)
    if isinstance(account, web.Response):
        return account
    if await gate(request, _PROVIDER, account) == "error":
        return web.Response(status=500, text="Internal Server Error")
    state = state_of(request)
    wait_s = state.take_token(account)
    if wait_s is not None:
        wait_ms = max(1, math.ceil(wait_s * 1000))
        return _status("1", f"Throughput Rate Exceeded - please wait [ {wait_ms} ] and retry")
    to = params.get("to", "").lstrip("+")
    code = number_error(request, _PROVIDER, account, to) if to else None
    failed_part: int | None = None
    if code and "@" in code:  # "<code>@<part>": only that part fails
        code, _, part = code.partition("@")
        failed_part = int(part) if part.isdigit() else None
    elif code and code != "0":
        return _status(code)
    invalid = _invalid(params)
    if invalid is not None:
        return invalid
    text = params["text"]
    parts = max(1, segment(text).segments)
    if account.balance < _PRICE_PER_PART * parts:
        return _status("9")
    sender = params["from"]
    all_ids = [hex_id(16).upper() for _ in range(parts)]
    ids = [message_id for number, message_id in enumerate(all_ids, 1) if number != failed_part]
    if not ids:  # a one-part text whose only part fails
        return _status(code or "5")
    state.record(
        provider=_PROVIDER, account=account.name, sender=sender, to=to, text=text, message_ids=ids
    )
    echoed: dict[str, str] = {
        name: params[name] for name in ("client-ref", "account-ref") if name in params
    }
    price = f"{_PRICE_PER_PART:.8f}"
    messages: list[dict[str, str]] = [
        {
            "to": to,
            "message-id": message_id,
            "status": "0",
            "remaining-balance": f"{account.balance - _PRICE_PER_PART * number:.8f}",
            "message-price": price,
            "network": _NETWORK,
            **echoed,
        }
        for number, message_id in enumerate(all_ids, start=1)
    ]
    if failed_part is not None and failed_part <= parts:
        messages[failed_part - 1] = {
            "to": to,
            "status": code or "5",
            "error-text": ERROR_TEXTS.get(code or "5", "Error"),
            **echoed,
        }
    if state.dlr_url and params.get("status-report-req", "1").lower() not in _NO_RECEIPT:
        _push_receipts(request, account, params, to, ids)
    await after_accept(request, _PROVIDER, account)
    return web.json_response({"message-count": str(parts), "messages": messages})


def _push_receipts(
    request: web.Request,
    account: SandboxAccount,
    params: Mapping[str, str],
    to: str,
    ids: list[str],
) -> None:
    """One POST-JSON delivery receipt per part, as Vonage sends them."""
    now = datetime.now(UTC)
    common: dict[str, Any] = {
        "msisdn": to,
        "to": params["from"],
        "network-code": _NETWORK,
        "price": f"{_PRICE_PER_PART:.8f}",
        "status": "delivered",
        "scts": now.strftime("%y%m%d%H%M"),
        "err-code": "0",
        "api-key": account.user_id,
        "message-timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "client-ref" in params:
        common["client-ref"] = params["client-ref"]
    for message_id in ids:
        push_receipt(request, json_body={**common, "messageId": message_id})


def _fields(values: Mapping[str, Any]) -> dict[str, str]:
    return {key: value for key, value in values.items() if isinstance(value, str)}


@routes.post("/sms/json")
async def send_form(request: web.Request) -> web.Response:
    """Send an SMS: form fields (query-string fields are read too, the form wins)."""
    params = _fields(request.query)
    params.update(_fields(await request.post()))
    return await _send(request, params)


@routes.get("/sms/json")
async def send_query(request: web.Request) -> web.Response:
    """Send an SMS with every field in the query string (older integrations do this)."""
    return await _send(request, _fields(request.query))


@routes.get("/account/get-balance")
async def get_balance(request: web.Request) -> web.Response:
    """The account balance in EUR: Basic header or ``api_key``/``api_secret`` query."""
    state = state_of(request)
    basic = _basic_credentials(request)
    key, secret = basic or (request.query.get("api_key"), request.query.get("api_secret"))
    account = state.find_account(_PROVIDER, user_id=key) if key else None
    if account is None or not _secret_matches(account, secret or ""):
        state.count(_PROVIDER, account.name if account else "?", "auth_failures")
        return web.json_response(_UNAUTHORIZED, status=401)
    if await gate(request, _PROVIDER, account) == "error":
        return web.Response(status=500, text="Internal Server Error")
    return web.json_response({"value": account.balance, "autoReload": False})
