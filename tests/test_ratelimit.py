"""The cluster-wide GCRA limiter, against a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from worker.keys import ratelimit_key
from worker.ratelimit import AccountRate, RateLimiter


async def test_first_segment_passes_and_the_next_waits_one_interval(async_redis: Redis) -> None:
    # Given an account at 10 segments/s with no burst
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=10, burst=1)
    # When two segments are asked for at once
    first = await limiter.acquire("acct", rate, lane="otp")
    second = await limiter.acquire("acct", rate, lane="otp")
    # Then the first goes and the second must wait about 100 ms
    assert first.allowed
    assert not second.allowed
    assert 0 < second.retry_after_s <= 0.1


async def test_cost_is_charged_per_segment(async_redis: Redis) -> None:
    # Given 10/s with a burst of 5 segments
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=10, burst=5)
    # When a 3-segment message goes, then another 3-segment one
    assert (await limiter.acquire("acct", rate, lane="otp", cost=3)).allowed
    refused = await limiter.acquire("acct", rate, lane="otp", cost=3)
    # Then the second exceeds the burst by one segment: wait about 100 ms
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.1
    # And a 2-segment message still fits
    assert (await limiter.acquire("acct", rate, lane="otp", cost=2)).allowed


async def test_a_refusal_charges_nothing(async_redis: Redis, redis_client: object) -> None:
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=1, burst=1)
    assert (await limiter.acquire("acct", rate, lane="otp")).allowed
    tat_before = await async_redis.get(ratelimit_key("acct"))
    for _ in range(5):
        assert not (await limiter.acquire("acct", rate, lane="otp")).allowed
    assert await async_redis.get(ratelimit_key("acct")) == tat_before


async def test_a_message_larger_than_the_burst_passes_only_when_idle(async_redis: Redis) -> None:
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=100, burst=2)
    assert (await limiter.acquire("acct", rate, lane="otp", cost=6)).allowed
    refused = await limiter.acquire("acct", rate, lane="otp", cost=6)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.06


async def test_accounts_are_independent(async_redis: Redis) -> None:
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=1, burst=1)
    assert (await limiter.acquire("a", rate, lane="otp")).allowed
    assert (await limiter.acquire("b", rate, lane="otp")).allowed
    assert not (await limiter.acquire("a", rate, lane="otp")).allowed


async def test_bulk_gets_only_its_share_and_codes_still_pass(async_redis: Redis) -> None:
    # Given 2 segments/s, bulk limited to 50% (one every second; codes one every 0.5 s)
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=2, burst=1, lane_share=0.5)
    # When bulk sends one segment
    assert (await limiter.acquire("acct", rate, lane="bulk")).allowed
    # Then bulk must wait its own, longer interval
    bulk = await limiter.acquire("acct", rate, lane="bulk")
    assert not bulk.allowed
    assert 0.5 < bulk.retry_after_s <= 1.0
    # And once the account's interval has passed, a code goes while bulk still waits
    await asyncio.sleep(0.55)
    assert (await limiter.acquire("acct", rate, lane="otp")).allowed
    assert not (await limiter.acquire("acct", rate, lane="bulk")).allowed


async def test_pause_stops_every_lane_and_is_never_shortened(async_redis: Redis) -> None:
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=1000, burst=10)
    # Given the provider asked the account to wait 0.5 s
    assert 0.3 < await limiter.pause("acct", 0.5) <= 0.5
    # When a shorter pause arrives / Then the longer one stays in force
    assert await limiter.pause("acct", 0.1) > 0.2
    # And every lane is refused for the rest of it
    for lane in ("otp", "default", "bulk"):
        decision = await limiter.acquire("acct", rate, lane=lane)
        assert not decision.allowed
        assert 0.1 < decision.retry_after_s <= 0.5


async def test_many_clients_together_never_exceed_the_rate(
    redis_url: str, async_redis: Redis
) -> None:
    # Given four independent clients (as four worker processes would have) at 50 segments/s
    rate = AccountRate(rate_per_s=50, burst=1)
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    limiters = [RateLimiter(client) for client in clients]
    grants: list[float] = []

    async def hammer(limiter: RateLimiter) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            lane = "bulk" if len(grants) % 2 else "otp"
            decision = await limiter.acquire("acct", rate, lane=lane)
            if decision.allowed:
                grants.append(time.monotonic())
            else:
                await asyncio.sleep(min(decision.retry_after_s, 0.01))

    try:
        # When they all ask as fast as they can for about a second
        await asyncio.gather(*(hammer(limiter) for limiter in limiters))
    finally:
        for client in clients:
            await client.aclose()
    # Then over the span the grants took, together they stayed within the rate (+ burst)
    span_s = grants[-1] - grants[0]
    assert len(grants) <= 50 * span_s + 2
    assert len(grants) >= 10  # and the limiter did not starve them either


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": 0}, "rate_per_s must be positive"),
        ({"rate_per_s": 1, "lane_share": 0}, "lane_share"),
        ({"rate_per_s": 1, "burst": 0.5}, "burst must be at least 1"),
    ],
)
def test_bad_rates_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccountRate(**kwargs)


async def test_zero_cost_is_refused(async_redis: Redis) -> None:
    with pytest.raises(ValueError, match="at least 1 segment"):
        await RateLimiter(async_redis).acquire(
            "acct", AccountRate(rate_per_s=1), lane="otp", cost=0
        )
