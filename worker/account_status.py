"""Each gateway account's last provider outcome, kept in Redis for health checks.

The pipeline records an account as ``failing`` when a provider refuses the account itself
(:class:`~gateways.errors.AccountRejected`: bad credentials, no balance, a bad URL), and as
``ok`` again after a send goes through. ``smsgw health`` turns red for an account whose
last outcome was a failure.

A success is written at most once per :data:`OK_REFRESH_S` per account and process (a hot
account would otherwise pay a Redis write per part), and at once when this process last
saw the account fail. So health goes green within ``OK_REFRESH_S`` of the first success
after a failure another process recorded. Every account's record is one field of one hash
(:func:`~worker.keys.account_statuses_key`), a JSON object (``status``, ``at`` in Unix
seconds, ``account``, ``error_class``, ``reason``), so health reads them all with one
``HGETALL``; a record older than :data:`~worker.keys.ACCOUNT_STATUS_TTL_S` is ignored.
Reasons come from error messages, which never hold a secret or a number in clear.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateways.errors import GatewayError
from worker.keys import ACCOUNT_STATUS_TTL_S, account_statuses_key
from worker.logs import redact

__all__ = ["OK_REFRESH_S", "AccountStatus", "AccountStatusRecorder", "parse_account_status"]

OK_REFRESH_S = 30.0
_REASON_LIMIT = 300

log = logging.getLogger(__name__)

Status = Literal["ok", "failing"]


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What the last provider call of an account said about the account."""

    account: str
    status: Status
    at_s: float
    error_class: str | None = None
    reason: str | None = None


def parse_account_status(text: str | bytes) -> AccountStatus | None:
    """A record read back from the hash (its JSON); None when malformed."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    status = raw.get("status")
    if status not in ("ok", "failing") or not raw.get("account"):
        return None
    verdict: Status = "ok" if status == "ok" else "failing"
    try:
        at_s = float(raw.get("at") or "")
    except ValueError:
        return None
    return AccountStatus(
        account=str(raw["account"]),
        status=verdict,
        at_s=at_s,
        error_class=str(raw.get("error_class") or "") or None,
        reason=str(raw.get("reason") or "") or None,
    )


class AccountStatusRecorder:
    """Writes accounts' outcomes; one per worker process (inside the dispatcher).

    Args:
        redis: The state store (``decode_responses=True``).
        clock: Unix time in seconds (tests pass their own).
    """

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._last_ok: dict[str, float] = {}  # account -> when this process last wrote ok

    async def failing(self, account: str, error: GatewayError) -> None:
        """Record that the provider refused ``account`` itself."""
        self._last_ok.pop(account, None)
        await self._write(
            account,
            {
                "status": "failing",
                "error_class": type(error).__name__,
                "reason": redact(str(error))[:_REASON_LIMIT],
            },
        )

    async def ok(self, account: str) -> None:
        """Record a send that went through (cheap: at most one write per refresh period)."""
        now = self._clock()
        last = self._last_ok.get(account)
        if last is not None and now - last < OK_REFRESH_S:
            return
        self._last_ok[account] = now
        await self._write(account, {"status": "ok", "error_class": "", "reason": ""})

    async def _write(self, account: str, fields: dict[str, str]) -> None:
        # Bookkeeping for health: a failed write must not turn a send into a failure.
        key = account_statuses_key()
        record = json.dumps({**fields, "account": account, "at": f"{self._clock():.3f}"})
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, account, record)
                pipe.expire(key, ACCOUNT_STATUS_TTL_S)  # all of it, once no account is used
                await pipe.execute()
        except RedisError as error:
            self._last_ok.pop(account, None)
            log.warning("account %s: status not recorded (%s)", account, type(error).__name__)
