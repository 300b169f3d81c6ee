"""Key rotation for stored jobs: re-encrypt each waiting job's access code with the first key.

Account secrets are rotated by :meth:`worker.account_store.AccountStore.rotate`; this module
does the same for jobs still in the state store, so the old key can be dropped right after
``smsgw keys rotate`` instead of after the longest job lifetime. A job is rewritten only if
it is unchanged since it was read (compare-and-set in one script) and keeps its expiry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from worker.crypto import Cipher, DecryptionFailed
from worker.keys import job_key

__all__ = ["JobRotation", "rotate_job_codes"]

# KEYS[1] the job; ARGV[1] the JSON read before, ARGV[2] the JSON to write.
# Returns 1 when written, 0 when the job changed or vanished meanwhile (left alone).
_REPLACE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""

_SCAN_BATCH = 500


@dataclass(frozen=True, slots=True)
class JobRotation:
    """What a rotation of stored jobs did.

    Attributes:
        rotated: Jobs whose access code was re-encrypted.
        unreadable: Jobs whose code opens with none of the keys (left as they are; they fail
            with that reason when dispatched).
    """

    rotated: int
    unreadable: int


async def rotate_job_codes(redis: Redis, cipher: Cipher) -> JobRotation:
    """Re-encrypt the access code of every stored job with the first key of ``cipher``."""
    replace = redis.register_script(_REPLACE_IF_UNCHANGED)
    rotated = unreadable = 0
    batch: list[str] = []
    async for key in redis.scan_iter(match=job_key("*"), count=_SCAN_BATCH):
        if str(key).endswith(":parts"):
            continue
        batch.append(str(key))
        if len(batch) >= _SCAN_BATCH:
            done, bad = await _rotate_batch(redis, replace, cipher, batch)
            rotated, unreadable, batch = rotated + done, unreadable + bad, []
    if batch:
        done, bad = await _rotate_batch(redis, replace, cipher, batch)
        rotated, unreadable = rotated + done, unreadable + bad
    return JobRotation(rotated, unreadable)


async def _rotate_batch(
    redis: Redis, replace: AsyncScript, cipher: Cipher, keys: list[str]
) -> tuple[int, int]:
    values = await redis.mget(keys)
    rotated = unreadable = 0
    for key, raw in zip(keys, values, strict=True):
        if raw is None:
            continue
        try:
            stored = json.loads(raw)
        except ValueError:
            continue  # a malformed job is reported when dispatched, not here
        token = stored.get("access_code_enc") if isinstance(stored, dict) else None
        if not isinstance(token, str):
            continue
        try:
            stored["access_code_enc"] = cipher.rotate(token)
        except DecryptionFailed:
            unreadable += 1
            continue
        rewritten = json.dumps(stored, separators=(",", ":"))
        rotated += int(await replace(keys=[key], args=[raw, rewritten]))
    return rotated, unreadable
