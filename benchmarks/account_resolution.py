"""Account resolution per job: the workers' versioned cache against a re-read per message.

A private ``redis-server`` holds 50 stored accounts (each with an encrypted password) and
50 identity stores. Jobs cycle through the stores:

1. ``naive``: what a worker without the cache would do, read the whole store and decrypt
   the account for every job (``AccountStore.view().resolve``), ``--count`` / 10 jobs;
2. ``cached``: :class:`worker.account_cache.CachedAccounts`, as the runtime uses it (the
   version is re-read at most once a second; the snapshot only when it moved), ``--count``;
3. ``cached_while_changing``: the same for 3 s while another client modifies an account 10
   times a second, so the cache reloads about once a second.

Reports resolutions per second, Redis commands per resolution (from ``INFO stats``; phases 1
and 2), reloads per second (phase 3) and the ratio cached / naive.

Usage: ``python -m benchmarks.account_resolution [--count N]``; prints JSON and merges it
into ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from benchmarks.common import record
from config.settings import Settings
from gateways.models import GatewayAccount
from worker.account_cache import CachedAccounts
from worker.account_store import AccountStore
from worker.crypto import Cipher, generate_key
from worker.redis_server import RedisServer

ACCOUNTS = 50
CHANGING_S = 3.0


async def _commands(client: Redis) -> int:
    stats = await client.info("stats")
    return int(stats["total_commands_processed"])


async def _phase(
    client: Redis, count: int, resolve: Callable[[str], Awaitable[str]]
) -> dict[str, float]:
    before = await _commands(client)
    started = time.perf_counter()
    for index in range(count):
        await resolve(f"store-{index % ACCOUNTS}")
    elapsed = time.perf_counter() - started
    commands = await _commands(client) - before - 1  # the INFO itself
    return {
        "resolutions_per_s": round(count / elapsed, 1),
        "redis_commands_per_resolution": round(commands / count, 4),
    }


async def _fill(store: AccountStore) -> None:
    for index in range(ACCOUNTS):
        await store.create(
            GatewayAccount(
                name=f"account-{index}", gateway="vonage", user_id=f"key-{index}",
                password=f"secret-{index}", sender="Bench",
            )
        )  # fmt: skip
        await store.create_store(f"store-{index}", account=f"account-{index}")


async def _run(url: str, count: int) -> dict[str, Any]:
    client: Redis = Redis.from_url(url, decode_responses=True)
    store = AccountStore(client, Settings(), Cipher([generate_key()]))
    await _fill(store)

    async def naive(name: str) -> str:
        return (await store.view()).resolve(None, name).account.name

    cache = CachedAccounts(store)

    async def cached(name: str) -> str:
        return (await cache.resolve(None, name)).account.name

    figures: dict[str, Any] = {
        "naive": await _phase(client, max(1, count // 10), naive),
        "cached": await _phase(client, count, cached),
    }
    # The writer runs on its own thread and loop: the cached path rarely awaits I/O, so a
    # task on this loop would hardly ever get a turn.
    stop = threading.Event()

    async def churn() -> None:
        writer = AccountStore(Redis.from_url(url, decode_responses=True), Settings(), store.cipher)
        flip = 0
        while not stop.is_set():
            flip += 1
            await writer.modify("account-0", {"sender": f"Bench{flip % 2}"})
            await asyncio.sleep(0.1)
        await writer.redis.aclose()

    changer = threading.Thread(target=lambda: asyncio.run(churn()))
    changer.start()
    reloads, resolved = cache.reloads, 0
    started = time.perf_counter()
    while time.perf_counter() - started < CHANGING_S:
        await cached(f"store-{resolved % ACCOUNTS}")
        resolved += 1
    elapsed = time.perf_counter() - started
    stop.set()
    changer.join()
    figures["cached_while_changing"] = {
        "seconds": CHANGING_S,
        "resolutions_per_s": round(resolved / elapsed, 1),
        "reloads_per_s": round((cache.reloads - reloads) / elapsed, 2),
    }
    figures["cached_vs_naive"] = round(
        figures["cached"]["resolutions_per_s"] / figures["naive"]["resolutions_per_s"], 1
    )
    await client.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="resolutions per phase")
    args = parser.parse_args()
    with RedisServer() as server:
        figures = asyncio.run(_run(server.url(0), args.count))
    figures = {"account_resolution": {"count": args.count, "accounts": ACCOUNTS, **figures}}
    record(figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
