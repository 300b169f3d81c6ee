"""Cluster-wide rate limits per gateway account, in Redis, charged per SMS segment.

One atomic Lua script implements GCRA (the generic cell rate algorithm) for the account
and, for lanes with a share below 100% (bulk), for the lane's share of it, in the same
call: a bulk send must fit both, a code only the account's. With bulk capped at 80% of
the account, codes always find capacity. A provider's throttle reply pauses the whole
account (:meth:`RateLimiter.pause`), which every worker sees on its next ``acquire``.

Nothing here sleeps: a refusal says how long to wait, and the caller (a Celery retry with
that countdown) frees its worker slot meanwhile. Celery's own per-worker ``rate_limit`` is
not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from config.settings import Settings
from gateways.base import Capabilities
from gateways.models import GatewayAccount
from worker.keys import ratelimit_key, ratelimit_lane_key, ratelimit_pause_key

__all__ = [
    "GCRA_LUA",
    "AccountRate",
    "Decision",
    "Pace",
    "RateLimiter",
    "TokenRequest",
    "account_rate",
]

_US_PER_S = 1_000_000

# A Lua function other scripts embed (the claim of a part takes its tokens in the same call).
# take(now, account TAT key, lane TAT key, pause key, ARGV offset): ARGV[o] cost (units),
# ARGV[o+1] account interval us/unit, ARGV[o+2] account burst us, ARGV[o+3] lane interval
# us/unit (0: no lane limit), ARGV[o+4] lane burst us. Returns the wait in us: 0 when the
# tokens were taken, else how long until they could be (nothing is charged then).
GCRA_LUA = """
local function take(now, account_key, lane_key, pause_key, o)
  local paused = tonumber(redis.call('GET', pause_key) or '0')
  if paused > now then
    return paused - now
  end
  local cost = tonumber(ARGV[o])
  local function check(key, interval, burst)
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local increment = cost * interval
    local new_tat = tat + increment
    -- A request larger than the burst passes once the limiter is idle, never sooner.
    local tolerance = math.max(burst, increment)
    local wait = new_tat - now - tolerance
    return new_tat, wait
  end
  local account_tat, account_wait =
    check(account_key, tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]))
  local lane_interval = tonumber(ARGV[o + 3])
  local lane_tat, lane_wait = 0, 0
  if lane_interval > 0 then
    lane_tat, lane_wait = check(lane_key, lane_interval, tonumber(ARGV[o + 4]))
  end
  local wait = math.max(account_wait, lane_wait)
  if wait > 0 then
    return wait
  end
  redis.call('SET', account_key, account_tat, 'PX', math.ceil((account_tat - now) / 1000) + 1000)
  if lane_interval > 0 then
    redis.call('SET', lane_key, lane_tat, 'PX', math.ceil((lane_tat - now) / 1000) + 1000)
  end
  return 0
end
"""

# KEYS[1] account TAT, KEYS[2] lane TAT (may be unused), KEYS[3] pause key; ARGV as ``take``.
# Returns {allowed (1/0), wait_us}. Times come from the server's clock, so every worker on
# every machine agrees.
_GCRA = (
    GCRA_LUA
    + """
local t = redis.call('TIME')
local wait = take(tonumber(t[1]) * 1000000 + tonumber(t[2]), KEYS[1], KEYS[2], KEYS[3], 1)
if wait > 0 then
  return {0, wait}
end
return {1, 0}
"""
)

# KEYS[1] pause key; ARGV[1] pause length in us. Extends, never shortens, a pause.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > current then
  redis.call('SET', KEYS[1], until_us, 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
  return until_us - now
end
return current - now
"""


@dataclass(frozen=True, slots=True)
class AccountRate:
    """An account's limit.

    Attributes:
        rate_per_s: SMS segments per second the account may send, all lanes together.
        burst: Segments that may go at once after an idle spell (at least 1).
        lane_share: The fraction of ``rate_per_s`` the limited lane may use (bulk: 0.8).
    """

    rate_per_s: float
    burst: float = 1.0
    lane_share: float = 0.8

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {self.rate_per_s}")
        if not 0 < self.lane_share <= 1:
            raise ValueError(f"lane_share must be in (0, 1], got {self.lane_share}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")


def account_rate(
    account: GatewayAccount, capabilities: Capabilities, settings: Settings
) -> AccountRate:
    """An account's limit: its own rate, else its gateway's default; bulk gets its share
    (the account's own ``bulk_share``, else ``SMSGW_BULK_SHARE``).

    The dispatcher charges sends against it and ``smsgw campaign start`` plans with it.
    """
    rate_per_s = account.rate_per_s or capabilities.default_rate_per_s
    burst = max(1.0, rate_per_s * settings.rate_burst_s)
    share = account.bulk_share or settings.bulk_share
    return AccountRate(rate_per_s=rate_per_s, burst=burst, lane_share=share)


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer: go now, or wait ``retry_after_s`` seconds and ask again."""

    allowed: bool
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One charge to the limiter, as a script embedding :data:`GCRA_LUA` passes it on.

    Attributes:
        keys: The account's TAT, the lane's TAT and the account's pause key, in that order.
        args: ``take``'s five arguments (cost, then intervals and bursts in us).
    """

    keys: tuple[str, str, str]
    args: tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Pace:
    """A second limit a claim must fit besides the account's (a campaign's own rate).

    Attributes:
        key: Its TAT key.
        interval_us: Microseconds per segment.
        burst_us: Its burst, in microseconds.
    """

    key: str
    interval_us: int
    burst_us: int

    @classmethod
    def of(cls, name: str, rate_per_s: float, burst: float) -> Pace:
        """The pace limited under ``name`` at ``rate_per_s`` segments/s (burst >= 1)."""
        interval_us = _US_PER_S / rate_per_s
        return cls(ratelimit_key(name), round(interval_us), round(max(1.0, burst) * interval_us))


class RateLimiter:
    """GCRA limits per account (and per limited lane), shared by every worker through Redis.

    Args:
        redis: The state-store client.
        limited_lanes: Lanes that get only ``lane_share`` of an account's rate.
    """

    def __init__(
        self, redis: Redis, *, limited_lanes: frozenset[str] = frozenset({"bulk"})
    ) -> None:
        self._redis = redis
        self._limited_lanes = limited_lanes
        self._gcra = redis.register_script(_GCRA)
        self._pause = redis.register_script(_PAUSE)

    def request(self, account: str, rate: AccountRate, *, lane: str, cost: int = 1) -> TokenRequest:
        """The keys and arguments of :data:`GCRA_LUA`'s ``take`` for this charge.

        Raises:
            ValueError: ``cost`` is below 1.
        """
        if cost < 1:
            raise ValueError(f"cost must be at least 1 segment, got {cost}")
        interval_us = _US_PER_S / rate.rate_per_s
        burst_us = rate.burst * interval_us
        if lane in self._limited_lanes and rate.lane_share < 1:
            # The lane's burst is its share of the account's, so a bulk burst never takes
            # the capacity a code arriving a moment later needs.
            lane_interval_us = interval_us / rate.lane_share
            lane_burst_us = rate.burst * rate.lane_share * lane_interval_us
        else:
            lane_interval_us = lane_burst_us = 0.0
        return TokenRequest(
            keys=(
                ratelimit_key(account),
                ratelimit_lane_key(account, lane),
                ratelimit_pause_key(account),
            ),
            args=(
                cost,
                round(interval_us),
                round(burst_us),
                round(lane_interval_us),
                round(lane_burst_us),
            ),
        )

    async def acquire(
        self, account: str, rate: AccountRate, *, lane: str, cost: int = 1
    ) -> Decision:
        """Charge ``cost`` segments to ``account`` for ``lane`` if its limits allow it now.

        Nothing is charged when the answer is no.
        """
        request = self.request(account, rate, lane=lane, cost=cost)
        allowed, wait_us = await self._gcra(keys=list(request.keys), args=list(request.args))
        if int(allowed):
            return Decision(True)
        return Decision(False, retry_after_s=int(wait_us) / _US_PER_S)

    async def pause(self, account: str, seconds: float) -> float:
        """Stop every lane of ``account`` for ``seconds`` (a provider throttle reply).

        Returns:
            Seconds until the account resumes (a longer pause already in force wins).
        """
        remaining_us = await self._pause(
            keys=[ratelimit_pause_key(account)], args=[max(1, round(seconds * _US_PER_S))]
        )
        return max(int(remaining_us), 0) / _US_PER_S
