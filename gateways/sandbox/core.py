"""What every simulated provider does around its own wire format.

A provider handler authenticates in its own way, then calls :func:`gate` (latency, faults,
counters), :meth:`SandboxState.take_token` (its throttle), answers ``number_errors`` with
its own error codes, and on success :meth:`SandboxState.record` plus, where the provider
pushes them, :func:`push_receipt`, then :func:`after_accept` (the ``accept_then_*`` faults)
before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import aiohttp
from aiohttp import web

from gateways.sandbox.state import Faults, SandboxAccount, SandboxState

__all__ = [
    "DLR_SESSION",
    "STATE",
    "DroppedConnection",
    "after_accept",
    "gate",
    "hex_id",
    "number_error",
    "push_receipt",
    "state_of",
]

log = logging.getLogger(__name__)

STATE: web.AppKey[SandboxState] = web.AppKey("state", SandboxState)
DLR_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("dlr_session", aiohttp.ClientSession)
_RECEIPT_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("receipt_tasks")


class DroppedConnection(Exception):
    """Raised after the connection was cut on purpose, so nothing is written."""


def state_of(request: web.Request) -> SandboxState:
    """The sandbox state of the app serving ``request``."""
    return request.app[STATE]


def hex_id(length: int = 32) -> str:
    """A random lower-case hex id of ``length`` characters, as many providers use."""
    return secrets.token_hex((length + 1) // 2)[:length]


async def gate(request: web.Request, provider: str, account: SandboxAccount) -> str:
    """Count the request and apply the configured latency and faults.

    Returns:
        ``"proceed"``, or ``"error"`` when the provider must answer with its 5xx reply.
        A hang sleeps past the client's timeout and then answers as an error; a drop cuts
        the connection and raises :class:`DroppedConnection`.
    """
    state = state_of(request)
    state.count(provider, account.name, "requests")
    faults = state.faults_for(provider, account.name)
    if faults is None:
        return "proceed"
    delay_s = state.latency_s(faults)
    if delay_s:
        await asyncio.sleep(delay_s)
    decision = state.decide_fault(faults)
    if decision == "proceed":
        return decision
    state.count(provider, account.name, "faults")
    if decision == "drop":
        if request.transport is not None:
            request.transport.abort()
        raise DroppedConnection
    if decision == "hang":
        await asyncio.sleep(faults.hang_s)
    return "error"


async def after_accept(request: web.Request, provider: str, account: SandboxAccount) -> None:
    """Apply the ``accept_then_*`` faults to a send that was just accepted and recorded.

    Returns at once when the reply may go out. Otherwise the connection is cut without an
    answer (raising :class:`DroppedConnection`), after sleeping ``hang_s`` for a hang, so
    the client sees a dropped connection or its own timeout for a message that was sent.
    """
    state = state_of(request)
    faults = state.faults_for(provider, account.name)
    if faults is None:
        return
    decision = state.decide_after_accept(faults)
    if decision == "answer":
        return
    state.count(provider, account.name, "faults")
    if decision == "hang":
        await asyncio.sleep(faults.hang_s)
    if request.transport is not None:
        request.transport.abort()
    raise DroppedConnection


def number_error(
    request: web.Request, provider: str, account: SandboxAccount, to: str
) -> str | None:
    """The provider error code configured for this recipient, if any."""
    faults: Faults | None = state_of(request).faults_for(provider, account.name)
    if faults is None:
        return None
    return faults.number_errors.get(to.lstrip("+"))


def push_receipt(
    request: web.Request,
    *,
    form: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    delay_s: float = 0.2,
    url: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """POST a delivery receipt in the background.

    Args:
        request: The send request the receipt is about.
        form / json_body: The receipt, form-encoded or JSON.
        delay_s: How long after the send it arrives.
        url: Where to (a per-request callback URL); the sandbox's receipt URL when omitted.
        headers: Extra headers, e.g. a provider's signature.
    """
    target = url or state_of(request).dlr_url
    if not target:
        return
    app = request.app

    async def deliver() -> None:
        await asyncio.sleep(delay_s)
        session = app[DLR_SESSION]
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(target, data=form, json=json_body, headers=headers) as response:
                await response.read()

    task = asyncio.get_running_loop().create_task(deliver())
    tasks = app[_RECEIPT_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def start_receipts(app: web.Application) -> None:
    """App startup: the client session receipts are pushed with."""
    app[DLR_SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    app[_RECEIPT_TASKS] = set()


async def stop_receipts(app: web.Application) -> None:
    """App cleanup: cancel pending receipts and close the session."""
    pending: set[asyncio.Task[None]] = app[_RECEIPT_TASKS]
    tasks = list(pending)
    for task in tasks:
        task.cancel()
    # Wait for the cancellations to land, so no task still uses the session being closed.
    await asyncio.gather(*tasks, return_exceptions=True)
    await app[DLR_SESSION].close()
