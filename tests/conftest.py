"""Session-wide fixtures: a real Redis database, emptied around every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.settings import Settings, override_settings
from tests.harness import open_test_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the test database (configured server, or a private one)."""
    with open_test_redis() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, empty at the start and flushed at the end."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings independent of the developer's environment and ``.env``."""
    with override_settings(default_region=None, max_length=160, max_parts=10) as value:
        yield value
