"""Per-part delivery state in Redis: the authority that keeps redelivery from double-sending.

Every (job, recipient, piece) is a *part*. Before a provider call the part is claimed
atomically (one Lua script): a part already ``sent`` is never claimed again, and a part
found ``sending`` was in flight when a worker died, so its outcome is lost: it becomes
``unknown`` and is not re-sent, unless its lane's policy says to re-send (documented in
the README). The state lives in one hash per job (``sms:job:{id}:parts``), three fields a
part: ``<part>:s`` status, ``<part>:a`` attempts, ``<part>:d`` detail (JSON). Parts are
named by a hash of the recipient and the piece number, so no number is spelled out in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from gateways.errors import SmsError
from worker.keys import parts_key
from worker.models import DeliveryStatus
from worker.ratelimit import GCRA_LUA, Pace, TokenRequest

__all__ = ["LOST_OUTCOME", "Claim", "DeliveryState", "PartRef", "PartState", "lost_part"]

# Claim a part, and when the limiter's keys are given, take its rate-limit tokens in the same
# atomic call (one round trip a part). A part that cannot be claimed costs no tokens; a part
# refused by the limiter is not claimed.
# KEYS[1] the job's parts hash; optionally KEYS[2..4] the limiter's keys (account TAT, lane
# TAT, pause), and KEYS[5] a second TAT (a campaign's own pace) that must allow it too
# ARGV[1] part name, ARGV[2] "1" to re-send a part whose outcome was lost, ARGV[3] TTL s,
# ARGV[4] detail JSON recorded when a lost outcome becomes unknown; ARGV[5..9] the
# limiter's ``take`` arguments when its keys are given; ARGV[10..11] the pace's interval
# (us/unit) and burst (us) with KEYS[5]. Nothing is charged unless every limit allows it.
# Returns {claimed (1/0), status, attempts, wait_us} (wait_us > 0: refused by the limiter).
_CLAIM = (
    GCRA_LUA
    + """
local status = redis.call('HGET', KEYS[1], ARGV[1] .. ':s')
if status == 'sending' then
  if ARGV[2] ~= '1' then
    redis.call('HSET', KEYS[1], ARGV[1] .. ':s', 'unknown', ARGV[1] .. ':d', ARGV[4])
    return {0, 'unknown', tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':a') or '0'), 0}
  end
elseif status and status ~= 'retrying' and status ~= 'queued' then
  return {0, status, tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':a') or '0'), 0}
end
if #KEYS > 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local pace_tat, wait = 0, 0
  if #KEYS > 4 then
    local tat = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), now)
    local increment = tonumber(ARGV[5]) * tonumber(ARGV[10])
    pace_tat = tat + increment
    wait = pace_tat - now - math.max(tonumber(ARGV[11]), increment)
  end
  if wait <= 0 then
    wait = take(now, KEYS[2], KEYS[3], KEYS[4], 5)
  end
  if wait <= 0 and #KEYS > 4 then
    redis.call('SET', KEYS[5], pace_tat, 'PX', math.ceil((pace_tat - now) / 1000) + 1000)
  end
  if wait > 0 then
    -- At least 1 us: a refusal must never read as "granted".
    return {0, status or 'queued', tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':a') or '0'),
            math.max(1, math.ceil(wait))}
  end
end
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':a', 1)
redis.call('HSET', KEYS[1], ARGV[1] .. ':s', 'sending')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, 'sending', attempts, 0}
"""
)

# KEYS[1] the job's parts hash; ARGV[1] TTL s, ARGV[2] part name, ARGV[3] status,
# ARGV[4] detail JSON. One command instead of MULTI/HSET/EXPIRE/EXEC, as atomic.
_SETTLE = """
redis.call('HSET', KEYS[1], ARGV[2] .. ':s', ARGV[3], ARGV[2] .. ':d', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

_US_PER_S = 1_000_000
_SETTLE_ATTEMPTS = 5  # the first try, then tenacity's
_FIRST_RETRY_S = 0.1

LOST_OUTCOME = (
    "the outcome of this send was lost (a worker stopped while the provider call was in "
    "flight); not re-sent, to avoid a duplicate"
)


@dataclass(frozen=True, slots=True)
class PartRef:
    """One piece for one recipient."""

    recipient: str  # E.164
    piece: int

    @property
    def name(self) -> str:
        """The part's name in the state hash: a hash of the number, then the piece."""
        return f"{_number_digest(self.recipient)}:{self.piece}"


@dataclass(slots=True)
class PartState:
    """What is known about one part."""

    status: DeliveryStatus
    attempts: int = 0
    provider_ids: list[str] = field(default_factory=list)
    segments: int = 0
    error_class: str | None = None
    reason: str | None = None

    def detail_json(self) -> str:
        """The JSON stored in the ``<part>:d`` field."""
        return json.dumps(
            {
                "ids": self.provider_ids,
                "segments": self.segments,
                "error_class": self.error_class,
                "reason": self.reason,
            }
        )


def lost_part() -> PartState:
    """The state of a part whose outcome was lost: unknown, and why."""
    return PartState(DeliveryStatus.UNKNOWN, error_class="LostOutcome", reason=LOST_OUTCOME)


_LOST_DETAIL = lost_part().detail_json()


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: whether this worker may send the part now."""

    claimed: bool
    status: DeliveryStatus
    attempts: int
    retry_after_s: float = 0.0  # > 0: not claimed because the rate limit refused the tokens

    @property
    def rate_limited(self) -> bool:
        """Whether the claim failed only for want of rate-limit tokens (ask again later)."""
        return not self.claimed and self.retry_after_s > 0


class DeliveryState:
    """The delivery state of one job's parts.

    Args:
        redis: The state store (``decode_responses=True``).
        job_id: The job.
        ttl_s: How long the state is kept after the last change.
    """

    def __init__(self, redis: Redis, job_id: str, *, ttl_s: int) -> None:
        self._redis = redis
        self._key = parts_key(job_id)
        self._ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)
        # What this delivery has read and written, so the final result needs no re-read.
        self.known: dict[str, PartState] = {}

    async def load(self) -> dict[str, PartState]:
        """Every part's state, by part name, read from Redis (and remembered)."""
        return self.remember(await self._redis.hgetall(self._key))

    def remember(self, raw: dict[Any, Any]) -> dict[str, PartState]:
        """Take the states from an ``HGETALL`` of the parts hash made elsewhere."""
        states: dict[str, PartState] = {}
        for raw_key, raw_value in raw.items():
            key, value = _text(raw_key), _text(raw_value)
            name, _, kind = key.rpartition(":")
            state = states.setdefault(name, PartState(DeliveryStatus.QUEUED))
            if kind == "s":
                state.status = DeliveryStatus(value)
            elif kind == "a":
                state.attempts = int(value)
            elif kind == "d":
                detail = json.loads(value)
                state.provider_ids = list(detail.get("ids") or [])
                state.segments = int(detail.get("segments") or 0)
                state.error_class = detail.get("error_class")
                state.reason = detail.get("reason")
        self.known = states
        return states

    async def claim(self, part: PartRef, *, resend_uncertain: bool) -> Claim:
        """Atomically take the part for sending, unless it is already settled (no tokens)."""
        return await self.claim_with_tokens(part, None, resend_uncertain=resend_uncertain)

    async def claim_with_tokens(
        self,
        part: PartRef,
        tokens: TokenRequest | None,
        *,
        resend_uncertain: bool,
        pace: Pace | None = None,
    ) -> Claim:
        """:meth:`claim`, taking the part's rate-limit tokens in the same atomic call.

        The tokens are charged only when the part is claimed; a part that is already settled
        (or whose outcome was lost) costs none. When the limiter refuses, the part is left as
        it was and :attr:`Claim.retry_after_s` says when to ask again.

        With ``pace`` (a campaign's own rate, next to the account's ``tokens``), the part
        must fit both; neither is charged when either refuses.

        The parts hash and the limiter's keys are touched by one script, so they must live
        on one Redis server (the state store is one server, not a Redis Cluster).
        """
        keys: list[str] = [self._key]
        args: list[str | int] = [
            part.name,
            "1" if resend_uncertain else "0",
            self._ttl_s,
            _LOST_DETAIL,
        ]
        if tokens is not None:
            keys += tokens.keys
            args += tokens.args
            if pace is not None:
                keys.append(pace.key)
                args += [pace.interval_us, pace.burst_us]
        claimed, status, attempts, wait_us = await self._claim(keys=keys, args=args)
        claim = Claim(
            bool(int(claimed)),
            DeliveryStatus(status),
            int(attempts),
            retry_after_s=int(wait_us) / _US_PER_S,
        )
        return self._claimed(part, claim)

    def _claimed(self, part: PartRef, claim: Claim) -> Claim:
        """Remember what a claim learnt about the part."""
        if claim.claimed:
            self.known[part.name] = PartState(DeliveryStatus.SENDING, attempts=claim.attempts)
        elif claim.status == DeliveryStatus.UNKNOWN and not claim.rate_limited:
            lost = lost_part()
            lost.attempts = claim.attempts
            self.known[part.name] = lost
        return claim

    async def settle(self, part: PartRef, state: PartState) -> None:
        """Record the part's new status and detail (the claim holder's outcome).

        Retried briefly on a Redis error: after a provider accepted the part, losing this
        write would leave it ``sending``, and a redelivery would call it unknown.
        """
        previous = self.known.get(part.name)
        if previous is not None:
            state.attempts = max(state.attempts, previous.attempts)
        self.known[part.name] = state
        args: list[str | int] = [self._ttl_s, part.name, state.status.value, state.detail_json()]
        try:
            # The first try outside tenacity: it is the one that almost always succeeds.
            await self._settle(keys=[self._key], args=args)
            return
        except RedisError:
            await asyncio.sleep(_FIRST_RETRY_S)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RedisError),
            stop=stop_after_attempt(_SETTLE_ATTEMPTS - 1),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        ):
            with attempt:
                await self._settle(keys=[self._key], args=args)

    async def settle_error(
        self, part: PartRef, status: DeliveryStatus, error: SmsError, *, reason: str | None = None
    ) -> PartState:
        """Record a failure of the part with the error's class and message."""
        state = PartState(status, error_class=type(error).__name__, reason=reason or str(error))
        await self.settle(part, state)
        return state


@lru_cache(maxsize=8192)
def _number_digest(recipient: str) -> str:
    # Asked several times per part (state lookups, claim, settle, result): hash once.
    return hashlib.sha256(recipient.encode()).hexdigest()[:16]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
