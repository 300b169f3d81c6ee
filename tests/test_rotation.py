"""Rotating the access codes of stored jobs to the first key, in real Redis."""

from __future__ import annotations

import redis
from redis.asyncio import Redis

from worker.crypto import Cipher, generate_key
from worker.jobs import JobRecord
from worker.keys import job_key, parts_key
from worker.models import ShortMessage
from worker.rotation import rotate_job_codes

CODE = "Qz!40417"


def stored_job(client: redis.Redis, cipher: Cipher, code: str | None = CODE) -> JobRecord:
    message = ShortMessage(
        message="Code {code}" if code else "Notice",
        access_code=code,
        phone_numbers=["+447400123456"],
    )
    record = JobRecord.create(message, cipher, lane="otp")
    client.set(job_key(record.id), record.model_dump_json(), ex=600)
    client.hset(parts_key(record.id), "x", "y")
    return record


async def test_job_codes_move_to_the_new_key_and_keep_their_expiry(
    async_redis: Redis, redis_client: redis.Redis
) -> None:
    # Given jobs under the old key (one without a code) and one under a key nobody has
    old, new = generate_key(), generate_key()
    records = [stored_job(redis_client, Cipher([old])) for _ in range(3)]
    plain = stored_job(redis_client, Cipher([old]), code=None)
    lost = stored_job(redis_client, Cipher([generate_key()]))
    before = {r.id: redis_client.get(job_key(r.id)) for r in [*records, plain, lost]}
    # When rotated with the new key first and the old one after it
    outcome = await rotate_job_codes(async_redis, Cipher([new, old]))
    # Then every code opens with the new key alone
    assert (outcome.rotated, outcome.unreadable) == (3, 1)
    for record in records:
        raw = redis_client.get(job_key(record.id))
        assert raw is not None and raw != before[record.id]
        message = JobRecord.model_validate_json(raw).short_message(Cipher([new]))
        assert message.access_code is not None
        assert message.access_code.get_secret_value() == CODE
        # And the job keeps its expiry, and its parts are untouched
        assert 590 <= redis_client.ttl(job_key(record.id)) <= 600
        assert redis_client.hgetall(parts_key(record.id)) == {"x": "y"}
    # And a job without a code, or one no key opens, is left as it was
    assert redis_client.get(job_key(plain.id)) == before[plain.id]
    assert redis_client.get(job_key(lost.id)) == before[lost.id]
    # And the code is never written in clear
    assert all(CODE not in str(redis_client.get(job_key(r.id))) for r in records)
