"""The workers' view of the account store: a decoded snapshot, re-checked at most every second.

Resolving a job's account must not cost a full read (and a decryption) per message, yet a
change made with ``smsgw accounts modify`` must reach running workers without a restart.
So each worker process keeps one :class:`~worker.account_store.AccountView` and, at most
every ``refresh_s``, reads the store's version (one ``GET``); only when it moved is the
snapshot read again. Secrets are decrypted once per account and version. A job whose account
or store is not in the view re-checks the version at once before it fails, so an account
created a moment ago is found; a *modified* account applies within ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from worker.account_store import AccountStore, AccountView
from worker.accounts import NoAccount, ResolvedAccount

__all__ = ["DEFAULT_REFRESH_S", "CachedAccounts"]

DEFAULT_REFRESH_S = 1.0


class CachedAccounts:
    """An :class:`~worker.accounts.AccountDirectory` over the account store, with a cache.

    Args:
        store: The account store.
        refresh_s: How stale the view may get before the version is read again.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        store: AccountStore,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._view: AccountView | None = None
        self._checked_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self.reloads = 0  # how many times the snapshot was read (for tests and metrics)

    async def resolve(self, account: str | None, identity_store: str | None) -> ResolvedAccount:
        """See :meth:`worker.accounts.AccountDirectory.resolve`."""
        view = await self.view()
        try:
            return view.resolve(account, identity_store)
        except NoAccount:
            # A miss may be an account or store created a moment ago: before failing the
            # job for good, make sure the view is current (one GET; misses are rare).
            fresh = await self.view(refresh=True)
            if fresh is view:
                raise
            return fresh.resolve(account, identity_store)

    async def view(self, *, refresh: bool = False) -> AccountView:
        """The current view, re-read only when the stored version moved.

        Args:
            refresh: Check the version now, however recently it was checked.
        """
        view = self._view
        if not refresh and view is not None and self._clock() - self._checked_at < self._refresh_s:
            return view
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # many jobs at once: one of them checks, the rest reuse
            view = self._view
            now = self._clock()
            if not refresh and view is not None and now - self._checked_at < self._refresh_s:
                return view
            if view is None or await self._store.version() != view.version:
                view = await self._store.view()
                self.reloads += 1
            self._view = view
            self._checked_at = now
            return view
