"""The async bridge: one event loop, one HTTP session, one Redis client per worker process.

Celery tasks are synchronous; the pipeline is asyncio. Each worker process runs one event
loop in a daemon thread and keeps, on that loop, the shared ``aiohttp.ClientSession``, the
``redis.asyncio`` client and the :class:`~worker.dispatch.Dispatcher`. A task calls
:func:`run`, which hands the coroutine to that loop and waits for it, so tasks on many
threads (the ``threads`` pool) share one loop and one connection pool, and a prefork child
gets its own after the fork (the runtime notices the new pid).

Why the ``threads`` pool: provider calls are I/O; dozens of tasks in flight per process
cost a thread each and share one loop, where prefork would need a process per concurrent
send. If Celery gains native asyncio tasks (celery/celery#6552), only this module changes.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from redis.asyncio import BlockingConnectionPool, Redis

from config.settings import Settings, get_settings
from worker.account_cache import CachedAccounts
from worker.account_store import AccountStore
from worker.crypto import load_cipher
from worker.dispatch import Dispatcher

__all__ = ["Runtime", "current", "run", "shutdown"]

T = TypeVar("T")

_START_TIMEOUT_S = 30.0
_POOL_WAIT_S = 30.0


class Runtime:
    """The loop thread and what lives on it, for one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="smsgw-runtime", daemon=True
        )
        self._thread.start()
        self.session: aiohttp.ClientSession
        self.redis: Redis
        self.dispatcher: Dispatcher
        self.run(self._open(), timeout_s=_START_TIMEOUT_S)

    async def _open(self) -> None:
        connections = max(64, self.settings.recipient_concurrency * 8)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        )
        # A blocking pool: when every connection is busy a caller waits for one instead of
        # failing, since a failed write after a provider accepted a part would turn a sent
        # part into an unknown one.
        pool = BlockingConnectionPool.from_url(
            self.settings.state_redis_url.get_secret_value(),
            decode_responses=True,
            max_connections=connections,
            timeout=_POOL_WAIT_S,
        )
        self.redis = Redis(connection_pool=pool)
        cipher = load_cipher(self.settings)
        self.dispatcher = Dispatcher(
            redis=self.redis,
            session=self.session,
            settings=self.settings,
            # Stored accounts over the provisioned ones (settings); changes apply within ~1 s.
            accounts=CachedAccounts(AccountStore(self.redis, self.settings, cipher)),
            cipher=cipher,
        )

    async def _close(self) -> None:
        await self.dispatcher.aclose()
        await self.session.close()
        await self.redis.aclose()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stop(self) -> None:
        """Close the session and clients, then stop the loop thread."""
        if not self._thread.is_alive():
            return
        try:
            self.run(self._close(), timeout_s=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    """This process's runtime, started on first use (and again in a forked child)."""
    global _current
    runtime = _current
    if runtime is not None and runtime.pid == os.getpid():
        return runtime
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = Runtime(get_settings())
        return _current


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on this process's loop and return its result."""
    return current().run(coro)


def shutdown() -> None:
    """Stop this process's runtime, if it started one."""
    global _current
    with _lock:
        runtime, _current = _current, None
    if runtime is not None and runtime.pid == os.getpid():
        runtime.stop()
