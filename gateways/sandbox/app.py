"""The sandbox application: every provider at its real paths, plus the control API.

Control API (JSON unless noted):

==========================  =========================================================
``GET /_sandbox/``          the inbox as a small HTML page (refreshes itself)
``GET /_sandbox/messages``  accepted messages; filters ``provider``, ``to``, ``since``
``DELETE /_sandbox/messages``  empty the inbox
``GET /_sandbox/faults``    fault settings
``PUT /_sandbox/faults``    set faults: ``{"provider": "vonage", "account": "*", ...}``
``DELETE /_sandbox/faults``  clear every fault
``GET /_sandbox/stats``     requests, accepted, throttled, auth failures, faults
``GET /_sandbox/accounts``  accounts (secrets masked); ``POST`` adds one
``POST /_sandbox/reset``    empty inbox, faults, throttles and counters
``GET /_sandbox/health``    ``{"ok": true}``
==========================  =========================================================
"""

from __future__ import annotations

import html
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateways.sandbox.core import STATE, DroppedConnection, start_receipts, stop_receipts
from gateways.sandbox.state import Faults, SandboxAccount, SandboxState

__all__ = ["PROVIDER_MODULES", "build_app"]

# One module per simulated provider; each exposes ``routes: web.RouteTableDef``.
PROVIDER_MODULES: tuple[str, ...] = (
    "gateways.sandbox.vonage",
    "gateways.sandbox.twilio",
    "gateways.sandbox.clickatell",
    "gateways.sandbox.redoxygen",
    "gateways.sandbox.bulletin",
    "gateways.sandbox.webhook",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _dropped_connections(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DroppedConnection:
        # The transport is already aborted; answering nothing is the point.
        return web.Response(status=499)


def build_app(state: SandboxState | None = None) -> web.Application:
    """The sandbox as an aiohttp application."""
    app = web.Application(middlewares=[_dropped_connections])
    app[STATE] = state or SandboxState()
    app.on_startup.append(start_receipts)
    app.on_cleanup.append(stop_receipts)
    for name in PROVIDER_MODULES:
        app.router.add_routes(importlib.import_module(name).routes)
    app.router.add_routes(_control)
    return app


_control = web.RouteTableDef()


def _state(request: web.Request) -> SandboxState:
    return request.app[STATE]


@_control.get("/_sandbox/health")
async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@_control.get("/_sandbox/messages")
async def _messages(request: web.Request) -> web.Response:
    query = request.query
    try:
        since = float(query["since"]) if "since" in query else None
    except ValueError:
        raise web.HTTPBadRequest(text="since must be a Unix timestamp in seconds") from None
    found = _state(request).messages(
        provider=query.get("provider"), to=query.get("to"), since=since
    )
    return web.json_response({"messages": [m.as_json() for m in found]})


@_control.delete("/_sandbox/messages")
async def _clear_messages(request: web.Request) -> web.Response:
    _state(request).clear_messages()
    return web.Response(status=204)


@_control.get("/_sandbox/faults")
async def _faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": _state(request).list_faults()})


@_control.put("/_sandbox/faults")
async def _set_faults(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    provider = str(body.pop("provider", "*"))
    account = str(body.pop("account", "*"))
    try:
        faults = Faults.model_validate(body)
    except ValidationError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    _state(request).set_faults(provider, account, faults)
    return web.json_response({"provider": provider, "account": account, **faults.model_dump()})


@_control.delete("/_sandbox/faults")
async def _clear_faults(request: web.Request) -> web.Response:
    _state(request).clear_faults()
    return web.Response(status=204)


@_control.get("/_sandbox/stats")
async def _stats(request: web.Request) -> web.Response:
    return web.json_response({"stats": _state(request).stats()})


@_control.get("/_sandbox/accounts")
async def _accounts(request: web.Request) -> web.Response:
    state = _state(request)
    providers = sorted({a.provider for a in state.all_accounts()})
    listed = [
        {**a.model_dump(), "password": "***" if a.password else None}
        for p in providers
        for a in state.accounts(p)
    ]
    return web.json_response({"accounts": listed})


@_control.post("/_sandbox/accounts")
async def _add_account(request: web.Request) -> web.Response:
    try:
        account = SandboxAccount.model_validate(await request.json())
    except ValidationError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    _state(request).add_account(account)
    return web.json_response({"provider": account.provider, "name": account.name}, status=201)


@_control.post("/_sandbox/reset")
async def _reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return web.Response(status=204)


@_control.get("/_sandbox/")
async def _inbox_page(request: web.Request) -> web.Response:
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(value))}</td>"
            for value in (m.id, m.provider, m.account, m.sender or "", m.to, m.encoding, m.segments)
        )
        + f"<td class=text>{html.escape(m.text)}</td></tr>"
        for m in reversed(_state(request).messages())
    )
    page = _PAGE.format(count=len(_state(request).messages()), rows=rows)
    return web.Response(text=page, content_type="text/html")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>smsgw sandbox inbox</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3rem .6rem; text-align: left; }}
td.text {{ white-space: pre-wrap; font-family: ui-monospace, monospace; }}
</style></head><body>
<h1>Sandbox inbox</h1><p>{count} message(s), newest first. JSON: <a href="messages">messages</a>,
<a href="stats">stats</a>, <a href="faults">faults</a>.</p>
<table><tr><th>#</th><th>provider</th><th>account</th><th>from</th><th>to</th>
<th>encoding</th><th>segments</th><th>text</th></tr>
{rows}
</table></body></html>
"""
