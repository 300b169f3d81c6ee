"""Session-wide fixtures: a real Redis database and the provider sandbox, reset per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis.asyncio import Redis as AsyncRedis

from config.settings import Settings, override_settings
from gateways.sandbox import DEFAULT_ACCOUNTS, SandboxServer
from tests.harness import open_test_redis
from worker.crypto import Cipher, generate_key

# Property tests: random examples on developers' machines; in CI the same examples every run
# (a red CI must be reproducible), and no "too slow" verdict from a busy 2-core runner.
settings_profile = "ci" if os.environ.get("CI") else "dev"
hypothesis_settings.register_profile(
    "ci", derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile("dev", suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(settings_profile)


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


@pytest.fixture
def cipher() -> Cipher:
    """A cipher with a fresh key (what producers and workers share through SMSGW_SECRET_KEY)."""
    return Cipher([generate_key()])


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    """A Celery app on the test's ``settings`` (a module's own ``settings`` fixture wins)."""
    from worker.app import create_app

    celery = create_app(settings)
    yield celery
    celery.close()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One provider sandbox for the whole session, on a free loopback port."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """The sandbox with the default accounts and an empty inbox, faults and counters."""
    state = sandbox_server.state
    state.set_accounts(DEFAULT_ACCOUNTS)
    state.reset()
    state.dlr_url = None
    yield sandbox_server
    state.reset()
    state.set_accounts(DEFAULT_ACCOUNTS)
    state.dlr_url = None


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, as the worker's runtime shares one per process."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def async_redis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[AsyncRedis]:
    """An asyncio client on the (emptied) test database."""
    client: AsyncRedis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
