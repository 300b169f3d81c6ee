"""Simulated generic JSON API, the counterpart of the ``webhook`` gateway.

No real provider stands behind the webhook gateway, so this is a small, typical modern SMS
API to point it at (``SANDBOX_OPTIONS`` is a webhook account configuration that reaches it):

``POST /_sandbox/webhook/messages``
    ``Authorization: Bearer <token>`` (the ``webhook`` sandbox account's ``password``; the
    default is ``sandbox-token``). Body: JSON ``{"to": "+447700900123", "text": "...",
    "from": "Acme"}``, or the same fields as a urlencoded form; a ``GET`` with them in the
    query string is accepted too. ``from`` is optional.

    =====  ================================================================
    201    ``{"id": "<32 hex>", "status": "accepted"}``
    400    ``{"error": {"code": "invalid_body" | "missing_parameter" |
           "invalid_number" | <number_errors code>, "message": "..."}}``
    401    ``{"error": {"code": "unauthorized", "message": "..."}}`` and
           ``WWW-Authenticate: Bearer``
    415    ``{"error": {"code": "unsupported_media_type", ...}}``
    429    ``{"error": {"code": "rate_limited", "message": "...", "retry_after": 0.2}}``
           and ``Retry-After`` (whole seconds, at least 1)
    500    ``{"error": {"code": "internal_error", "message": "..."}}``
    =====  ================================================================

``GET /_sandbox/webhook/account``
    The same bearer token: 200 ``{"name": ..., "balance": ...}``, or the 401 above.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from aiohttp import web

from gateways.sandbox.core import after_accept, gate, hex_id, number_error, state_of
from gateways.sandbox.state import SandboxAccount

__all__ = ["ACCOUNT_PATH", "MESSAGES_PATH", "SANDBOX_OPTIONS", "routes"]

PROVIDER: Final = "webhook"
MESSAGES_PATH: Final = "/_sandbox/webhook/messages"
ACCOUNT_PATH: Final = "/_sandbox/webhook/account"

SANDBOX_OPTIONS: Final[dict[str, Any]] = {
    "path": MESSAGES_PATH,
    "headers": {"Authorization": "Bearer {password}"},
    "body_format": "json",
    "body": {"to": "{to}", "text": "{text}", "from": "{sender}"},
    "success_status": [201],
    "message_id_field": "id",
    "success_field": "status",
    "success_value": "accepted",
    "error_field": "error.message",
    "error_code_field": "error.code",
    "recipient_codes": ["invalid_number", "barred", "opted_out"],
    "account_codes": ["unauthorized", "insufficient_funds"],
    "retry_codes": ["rate_limited", "internal_error"],
    "retry_after_field": "error.retry_after",
    "credentials_path": ACCOUNT_PATH,
}
"""``account.options`` of a webhook account that talks to this API (``url`` = sandbox URL,
``password`` = the token)."""

_FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_BEARER: Final = "Bearer "

routes = web.RouteTableDef()


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def _unauthorized() -> web.Response:
    response = _error(401, "unauthorized", "missing or invalid bearer token")
    response.headers["WWW-Authenticate"] = 'Bearer realm="sandbox"'
    return response


def _authenticate(request: web.Request) -> SandboxAccount | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith(_BEARER):
        return None
    token = header[len(_BEARER) :].strip()
    if not token:
        return None
    return state_of(request).find_account(PROVIDER, password=token)


async def _params(request: web.Request) -> dict[str, str] | web.Response:
    """The request's fields, or the error reply for a body we cannot read."""
    if request.method == "GET":
        return dict(request.query)
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return _error(400, "invalid_body", "the body is not a JSON object")
        return {key: str(value) for key, value in data.items() if value is not None}
    if request.content_type in _FORM_TYPES:
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    return _error(415, "unsupported_media_type", "send JSON or a urlencoded form")


def _valid_number(digits: str) -> bool:
    return digits.isdigit() and 6 <= len(digits) <= 15


@routes.route("GET", MESSAGES_PATH)
@routes.post(MESSAGES_PATH)
async def send_message(request: web.Request) -> web.Response:
    """Accept one message, or refuse it as a typical JSON API does."""
    state = state_of(request)
    account = _authenticate(request)
    if account is None:
        state.count(PROVIDER, "?", "auth_failures")
        return _unauthorized()
    if await gate(request, PROVIDER, account) == "error":
        return _error(500, "internal_error", "internal server error, try again later")
    wait_s = state.take_token(account)
    if wait_s is not None:
        response = _error(429, "rate_limited", "too many requests", retry_after=round(wait_s, 3))
        response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        return response
    params = await _params(request)
    if isinstance(params, web.Response):
        return params
    to = params.get("to", "").strip()
    text = params.get("text", "")
    if to:
        code = number_error(request, PROVIDER, account, to)
        if code is not None:
            return _error(400, code, f"the recipient was refused ({code})")
    for name, value in (("to", to), ("text", text)):
        if not value:
            return _error(400, "missing_parameter", f"{name} is required")
    digits = to.removeprefix("+")
    if not _valid_number(digits):
        return _error(400, "invalid_number", "to must be a phone number in E.164")
    message_id = hex_id()
    state.record(
        provider=PROVIDER,
        account=account.name,
        sender=params.get("from") or None,
        to=digits,
        text=text,
        message_ids=[message_id],
    )
    await after_accept(request, PROVIDER, account)
    return web.json_response({"id": message_id, "status": "accepted"}, status=201)


@routes.get(ACCOUNT_PATH)
async def account_info(request: web.Request) -> web.Response:
    """The account behind the token: proves the credentials without sending."""
    account = _authenticate(request)
    if account is None:
        state_of(request).count(PROVIDER, "?", "auth_failures")
        return _unauthorized()
    return web.json_response({"name": account.name, "balance": account.balance})
