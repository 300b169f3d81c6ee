"""Account resolution per job: the workers' versioned cache against a re-read per message.

A private ``redis-server`` holds 50 stored accounts (each with an encrypted password) and
50 identity stores. Jobs cycle through the stores:

1. ``naive``: what a worker without the cache would do, read the whole store and decrypt
   the account for every job (``AccountStore.view().resolve``), ``--count`` / 10 jobs;
2. ``cached``: :class:`worker.account_cache.CachedAccounts`, as the runtime uses it (the
   version is re-read at most once a second; the snapshot only when it moved), ``--count``;
3. ``cached_while_changing``: the same for 3 s while another client modifies an account 10
   times a second, so the cache reloads about once a second.

4. ``many_stores``: 1,000 and 10,000 identity stores (``--stores``): cached resolutions per
   second, and the time of one store lookup in a view (a name index built once per view)
   against the earlier way, rebuilding and sorting the store list on every lookup.

Reports resolutions per second, Redis commands per resolution (from ``INFO stats``; phases 1
and 2), reloads per second (phase 3), the ratio cached / naive, and per phase-4 size the
lookup times and their ratio.

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
from config.settings import IdentityStoreLink, Settings
from gateways.models import GatewayAccount
from worker.account_cache import CachedAccounts
from worker.account_store import AccountStore, AccountView, IdentityStore
from worker.crypto import Cipher, generate_key
from worker.keys import identity_stores_key
from worker.redis_server import RedisServer

ACCOUNTS = 50
CHANGING_S = 3.0
LOOKUPS = 200


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


def _rebuilt_lookup(view: AccountView, name: str) -> IdentityStore | None:
    """The earlier lookup, as the baseline: rebuild and sort every store, then scan."""
    found = [
        IdentityStore(n, link.account, link.default_region, "stored")
        for n, link in view.snapshot.stores.items()
    ]
    return next((s for s in sorted(found, key=lambda s: s.name) if s.name == name), None)


def _per_lookup_us(lookup: Callable[[str], object], names: list[str]) -> float:
    started = time.perf_counter()
    for name in names:
        assert lookup(name) is not None
    return round((time.perf_counter() - started) / len(names) * 1e6, 2)


async def _many_stores(url: str, count: int, stores: int) -> dict[str, Any]:
    client: Redis = Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    store = AccountStore(client, Settings(), Cipher([generate_key()]))
    await _fill(store)
    async with client.pipeline(transaction=False) as pipe:
        for index in range(ACCOUNTS, stores):
            link = IdentityStoreLink(account=f"account-{index % ACCOUNTS}", default_region="GB")
            pipe.hset(identity_stores_key(), f"store-{index}", link.model_dump_json())
        await pipe.execute()
    await store.set_default("account-0")  # bumps the version: the cache reads it all
    cache = CachedAccounts(store)
    names = [f"store-{(index * 7919) % stores}" for index in range(count)]
    await cache.resolve(None, names[0])  # the first read of the snapshot, not measured
    started = time.perf_counter()
    for name in names:
        await cache.resolve(None, name)
    elapsed = time.perf_counter() - started
    view = await cache.view()
    indexed = _per_lookup_us(view.store, names[:LOOKUPS])
    rebuilt = _per_lookup_us(lambda name: _rebuilt_lookup(view, name), names[:LOOKUPS])
    await client.aclose()
    return {
        "stores": stores,
        "cached_resolutions_per_s": round(count / elapsed, 1),
        "store_lookup_us": indexed,
        "rebuilt_lookup_us": rebuilt,
        "rebuilt_vs_indexed": round(rebuilt / indexed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="resolutions per phase")
    parser.add_argument(
        "--stores", type=int, nargs="+", default=[1_000, 10_000], help="phase 4 store counts"
    )
    args = parser.parse_args()
    with RedisServer() as server:
        figures = asyncio.run(_run(server.url(0), args.count))
        figures["many_stores"] = [
            asyncio.run(_many_stores(server.url(1), args.count, stores)) for stores in args.stores
        ]
    figures = {"account_resolution": {"count": args.count, "accounts": ACCOUNTS, **figures}}
    record(figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
