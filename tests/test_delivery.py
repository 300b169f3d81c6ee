"""Per-part delivery state: atomic claims, lost outcomes, settled parts never reclaimed."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from worker.delivery import DeliveryState, PartRef, PartState
from worker.keys import parts_key
from worker.models import DeliveryStatus

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
