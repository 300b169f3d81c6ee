"""A record of broker messages that were not valid tasks, kept for operators.

Someone writing garbage to a queue must not crash a worker nor vanish silently: each such
message is logged and pushed (its kind and size, never its content, which may hold
anything) onto the capped list ``sms:rejected`` in the state store.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

from config.settings import get_settings
from worker.keys import REJECTED_MAX, rejected_key

__all__ = ["record_rejected"]

log = logging.getLogger(__name__)


def record_rejected(reason: str) -> None:
    """Log ``reason`` and keep it in ``sms:rejected`` (best effort: never raises)."""
    log.error("rejected a broker message: %s", reason)
    client = Redis.from_url(get_settings().state_redis_url.get_secret_value())
    entry = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}"
    try:
        with client.pipeline() as pipe:
            pipe.lpush(rejected_key(), entry)
            pipe.ltrim(rejected_key(), 0, REJECTED_MAX - 1)
            pipe.execute()
    except RedisError as error:
        log.error("could not record the rejected message (%s)", type(error).__name__)
    finally:
        client.close()
