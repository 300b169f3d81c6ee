"""Reading account verdicts at scrape time, beside a large state store.

Every metrics scrape and ``smsgw health`` reads every account's last provider outcome. A
private ``redis-server`` holds ``--keys`` unrelated keys (stored jobs; a 7-day job TTL
keeps millions) and ``--accounts`` verdicts:

1. ``naive``: one key per account (``sms:account:{NAME}:status``) found by ``SCAN MATCH``,
   then an ``HGETALL`` per account: the earlier layout, linear in the whole keyspace;
2. ``hash``: :func:`worker.health.read_accounts`, one ``HGETALL`` of the verdict hash.

Reports the median and best time of ``--rounds`` reads of each, and the ratio.

Usage: ``python -m benchmarks.health_scrape [--keys N] [--accounts N]``; prints JSON and
merges it into ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from benchmarks.common import record
from gateways.errors import AccountRejected
from worker.account_status import AccountStatusRecorder
from worker.health import read_accounts
from worker.keys import accounts_key, job_key
from worker.redis_server import RedisServer

_FILL_BATCH = 10_000


def _fill(client: redis.Redis, keys: int, accounts: list[str]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for n in range(keys):
            pipe.set(job_key(f"{n:032x}"), "{}")
            if n % _FILL_BATCH == 0:
                pipe.execute()
        for name in accounts:
            pipe.hset(accounts_key(), name, "{}")
            # The earlier layout, for the naive reader.
            pipe.hset(
                f"sms:account:{{{name}}}:status",
                mapping={"status": "ok", "account": name, "at": f"{time.time():.3f}"},
            )
        pipe.execute()


async def _verdicts(url: str, accounts: list[str]) -> None:
    client = AsyncRedis.from_url(url, decode_responses=True)
    recorder = AccountStatusRecorder(client)
    for n, name in enumerate(accounts):
        if n % 5:
            await recorder.ok(name)
        else:
            await recorder.failing(name, AccountRejected("bad credentials", gateway="vonage"))
    await client.aclose()


def _naive(client: redis.Redis) -> int:
    found = 0
    for key in client.scan_iter(match="sms:account:*:status", count=500):
        if client.hgetall(key):
            found += 1
    return found


def _timed(read: Callable[[], int], rounds: int) -> dict[str, float]:
    times: list[float] = []
    found = 0
    for _ in range(rounds):
        started = time.perf_counter()
        found = read()
        times.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(times) * 1000, 3),
        "best_ms": round(min(times) * 1000, 3),
        "accounts_found": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    names = [f"account-{n}" for n in range(args.accounts)]
    with RedisServer() as server:
        url = server.url(0)
        client = redis.Redis.from_url(url)
        _fill(client, args.keys, names)
        asyncio.run(_verdicts(url, names))
        naive = _timed(lambda: _naive(client), args.rounds)
        current = set(names)
        hashed = _timed(lambda: len(read_accounts(client, current, now_s=time.time())), args.rounds)
        client.close()
    figures: dict[str, Any] = {
        "health_scrape": {
            "keys": args.keys,
            "accounts": args.accounts,
            "naive_scan": naive,
            "hash": hashed,
            "ratio_naive_over_hash": round(naive["median_ms"] / hashed["median_ms"], 1),
        }
    }
    record(figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
