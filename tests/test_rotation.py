"""Rotating the access codes of stored jobs to the first key, in real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


class _InterleavingCipher(Cipher):
    """Rotates like a Cipher, but lets another client change a job between read and write."""

    def __init__(self, keys: list[str], before_write: dict[str, Callable[[], Any]]) -> None:
        super().__init__(keys)
        self.before_write = before_write

    def rotate(self, token: str) -> str:
        rotated = super().rotate(token)
        action = self.before_write.pop(token, None)
        if action is not None:
            action()
        return rotated


async def test_a_job_changed_or_deleted_during_rotation_is_left_alone(
    async_redis: Redis, redis_client: redis.Redis
) -> None:
    # Given two jobs under the old key: one a producer rewrites (a new code, a fresh expiry)
    # and one a worker deletes, each right after the rotation read it
    old, new = generate_key(), generate_key()
    rewritten, deleted, untouched = (stored_job(redis_client, Cipher([old])) for _ in range(3))
    fresh = rewritten.model_copy(update={"access_code_enc": Cipher([old]).encrypt("Fresh!77")})

    def rewrite() -> None:
        redis_client.set(job_key(rewritten.id), fresh.model_dump_json(), ex=300)

    cipher = _InterleavingCipher(
        [new, old],
        {
            str(rewritten.access_code_enc): rewrite,
            str(deleted.access_code_enc): lambda: redis_client.delete(job_key(deleted.id)),
        },
    )
    # When the codes are rotated
    outcome = await rotate_job_codes(async_redis, cipher)
    # Then only the untouched job was rewritten; the other write is kept, the deleted stays gone
    assert not cipher.before_write  # both interleavings happened
    assert outcome.rotated == 1
    assert redis_client.get(job_key(rewritten.id)) == fresh.model_dump_json()
    assert 290 <= redis_client.ttl(job_key(rewritten.id)) <= 300
    assert redis_client.exists(job_key(deleted.id)) == 0
    moved = JobRecord.model_validate_json(redis_client.get(job_key(untouched.id)) or "")
    assert moved.short_message(Cipher([new])).access_code is not None
