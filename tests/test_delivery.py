"""Per-part delivery state: atomic claims, lost outcomes, settled parts never reclaimed."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from worker.delivery import DeliveryState, PartRef, PartState
from worker.keys import parts_key
from worker.models import DeliveryStatus
from worker.ratelimit import AccountRate, RateLimiter

NUMBER = "+447400123456"


async def test_a_new_part_is_claimed_once_even_when_raced(async_redis: Redis) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    part = PartRef(NUMBER, 0)
    # When ten deliveries of the same job race for the part
    claims = await asyncio.gather(*(state.claim(part, resend_uncertain=False) for _ in range(10)))
    # Then exactly one wins; the others find it in flight and record the outcome as lost
    assert sum(c.claimed for c in claims) == 1
    assert (await state.load())[part.name].status == DeliveryStatus.UNKNOWN


async def test_sent_parts_are_never_claimed_again(async_redis: Redis) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    part = PartRef(NUMBER, 0)
    assert (await state.claim(part, resend_uncertain=True)).claimed
    await state.settle(part, PartState(DeliveryStatus.SENT, provider_ids=["m1"], segments=1))
    claim = await state.claim(part, resend_uncertain=True)
    assert (claim.claimed, claim.status, claim.attempts) == (False, DeliveryStatus.SENT, 1)
    loaded = (await state.load())[part.name]
    assert (loaded.provider_ids, loaded.segments, loaded.attempts) == (["m1"], 1, 1)


async def test_a_retrying_part_is_claimed_again_and_counts_attempts(async_redis: Redis) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    part = PartRef(NUMBER, 1)
    for attempt in (1, 2, 3):
        claim = await state.claim(part, resend_uncertain=False)
        assert (claim.claimed, claim.attempts) == (True, attempt)
        await state.settle(part, PartState(DeliveryStatus.RETRYING, reason="503"))


async def test_a_lane_that_resends_uncertain_parts_reclaims_them(async_redis: Redis) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    part = PartRef(NUMBER, 0)
    assert (await state.claim(part, resend_uncertain=True)).claimed
    again = await state.claim(part, resend_uncertain=True)
    assert (again.claimed, again.attempts) == (True, 2)


async def test_state_names_no_number_and_expires(async_redis: Redis) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    await state.claim(PartRef(NUMBER, 0), resend_uncertain=False)
    fields = await async_redis.hkeys(parts_key("job"))
    assert fields and not any("447400123456" in field for field in fields)
    assert 0 < await async_redis.ttl(parts_key("job")) <= 60


async def test_a_claim_with_tokens_charges_the_limiter_only_when_it_claims(
    async_redis: Redis,
) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    limiter = RateLimiter(async_redis)
    rate = AccountRate(rate_per_s=10, burst=1)
    part, other = PartRef(NUMBER, 0), PartRef(NUMBER, 1)
    tokens = limiter.request("acct", rate, lane="otp")
    # Given a part claimed (and charged) and sent
    first = await state.claim_with_tokens(part, tokens, resend_uncertain=False)
    assert (first.claimed, first.attempts, first.rate_limited) == (True, 1, False)
    await state.settle(part, PartState(DeliveryStatus.SENT, provider_ids=["m1"], segments=1))
    # When a redelivery asks for it again, it is refused as sent, even with the limit spent
    again = await state.claim_with_tokens(part, tokens, resend_uncertain=True)
    assert (again.claimed, again.status, again.rate_limited) == (False, DeliveryStatus.SENT, False)
    # And a part the limiter refuses is left unclaimed, with the wait to ask again
    refused = await state.claim_with_tokens(other, tokens, resend_uncertain=False)
    assert refused.rate_limited and not refused.claimed
    assert 0 < refused.retry_after_s <= 0.1
    assert other.name not in await state.load()
    # Then after the wait the part is claimed at its first attempt
    await asyncio.sleep(refused.retry_after_s + 0.01)
    later = await state.claim_with_tokens(other, tokens, resend_uncertain=False)
    assert (later.claimed, later.attempts) == (True, 1)


async def test_a_lost_part_found_by_a_claim_with_tokens_is_unknown_and_costs_nothing(
    async_redis: Redis,
) -> None:
    state = DeliveryState(async_redis, "job", ttl_s=60)
    limiter = RateLimiter(async_redis)
    tokens = limiter.request("acct", AccountRate(rate_per_s=1, burst=1), lane="otp")
    part = PartRef(NUMBER, 0)
    # Given a part left in flight by a worker that died
    await state.claim(part, resend_uncertain=False)
    # When a redelivery claims it, it becomes unknown, is not re-sent, and charges nothing
    claim = await state.claim_with_tokens(part, tokens, resend_uncertain=False)
    assert (claim.claimed, claim.status, claim.rate_limited) == (
        False,
        DeliveryStatus.UNKNOWN,
        False,
    )
    assert state.known[part.name].error_class == "LostOutcome"
    assert (await limiter.acquire("acct", AccountRate(rate_per_s=1, burst=1), lane="otp")).allowed
