"""A fake of the ACME SMS API, shipped with the plugin so its tests use real HTTP.

A plugin author ships one of these: smsgw's own sandbox only knows the built-in
providers, and tests against a real local server exercise the real session, timeouts,
proxy and error mapping that mocks would skip.

The API it imitates (all JSON; every error is ``{"error": {"code": ..., "message": ...}}``)::

    POST /v1/messages   Authorization: Bearer <API key>
                        {"to": "+447700900123", "text": "...", "from"?: "...",
                         "reference"?: "...", "priority"?: "normal" | "high"}
                        201 {"id": "msg_<hex>", "parts": 1, "status": "queued"}
    GET  /v1/account    200 {"balance": "12.50", "currency": "EUR"}

    401 unauthorized  402 insufficient_credit  403 suspended  400 invalid_request
    422 invalid_recipient | recipient_opted_out  429 throttled (+ Retry-After)  500 internal

Usage::

    fake = FakeAcme()
    async with fake.serve() as url:
        ...  # an account with url=url, password=fake.api_key
    assert fake.messages[0].text == "..."
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateways.encoding import segment

__all__ = ["DEFAULT_API_KEY", "AcmeMessage", "FakeAcme"]

DEFAULT_API_KEY = "acme-test-key"

_STATUS = {
    "invalid_request": 400,
    "unauthorized": 401,
    "insufficient_credit": 402,
    "suspended": 403,
    "invalid_recipient": 422,
    "recipient_opted_out": 422,
    "throttled": 429,
    "internal": 500,
}


@dataclass(slots=True)
class AcmeMessage:
    """One message the fake accepted."""

    id: str
    to: str
    text: str
    sender: str | None
    reference: str | None
    priority: str
    parts: int


@dataclass
class FakeAcme:
    """The fake provider's state and its aiohttp application.

    Attributes:
        api_key: The one API key it accepts.
        messages: Accepted messages, oldest first.
        recipient_errors: Recipient (E.164) -> the ACME error code to answer for it (codes
            the fake does not know go out as HTTP 400).
        throttle_next: Answer the next N sends with ``throttled``.
        fail_next: Answer the next N sends with ``internal``.
        retry_after_s: The ``Retry-After`` of a throttle reply.
    """

    api_key: str = DEFAULT_API_KEY
    balance: str = "12.50"
    currency: str = "EUR"
    messages: list[AcmeMessage] = field(default_factory=list)
    recipient_errors: dict[str, str] = field(default_factory=dict)
    throttle_next: int = 0
    fail_next: int = 0
    retry_after_s: int = 2

    def app(self) -> web.Application:
        """The fake as an aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._send)
        app.router.add_get("/v1/account", self._account)
        return app

    @asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> AsyncIterator[str]:
        """Serve on a loopback port in the running event loop; yields the base URL."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
            bound_port = runner.addresses[0][1]
            scheme = "https" if ssl_context else "http"
            yield f"{scheme}://{host}:{bound_port}"
        finally:
            await runner.cleanup()

    @staticmethod
    def _error(code: str, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"error": {"code": code, "message": message}},
            status=_STATUS.get(code, 400),
            headers=headers,
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _account(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error("unauthorized", "Invalid API key")
        return web.json_response({"balance": self.balance, "currency": self.currency})

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error("unauthorized", "Invalid API key")
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._error("internal", "Something went wrong on our side")
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return self._error(
                "throttled", "Too many requests", **{"Retry-After": str(self.retry_after_s)}
            )
        try:
            body: Any = await request.json()
        except ValueError:
            return self._error("invalid_request", "Body must be JSON")
        problem = _problem(body)
        if problem:
            return self._error("invalid_request", problem)
        code = self.recipient_errors.get(body["to"])
        if code:
            return self._error(code, "Recipient refused")
        message = AcmeMessage(
            id=f"msg_{secrets.token_hex(8)}",
            to=body["to"],
            text=body["text"],
            sender=body.get("from"),
            reference=body.get("reference"),
            priority=body.get("priority", "normal"),
            parts=max(1, segment(body["text"]).segments),
        )
        self.messages.append(message)
        return web.json_response(
            {"id": message.id, "parts": message.parts, "status": "queued"}, status=201
        )


def _problem(body: Any) -> str | None:
    """What is wrong with a send request's body, in ACME's words; None if nothing."""
    if not isinstance(body, dict):
        return "Body must be a JSON object"
    to = body.get("to")
    if not isinstance(to, str) or not to.startswith("+") or not to[1:].isdigit():
        return "'to' must be an E.164 number"
    if not isinstance(body.get("text"), str) or not body["text"]:
        return "'text' is required"
    if body.get("priority", "normal") not in ("normal", "high"):
        return "'priority' must be normal or high"
    return None
