"""Requests per second the provider sandbox sustains on this machine.

Two clients in the same run against one ``smsgw sandbox`` process (Vonage ``/sms/json``):

* ``raw_sandbox_req_per_s``: an aiohttp client keeping ``--concurrency`` requests in
  flight over keep-alive connections, in its own process (the sandbox's real capacity);
* ``sandbox_naive_req_per_s``: the naive baseline, one synchronous ``urllib`` request at
  a time with a new connection each (what a simple script gets).

Usage: ``python -m benchmarks.sandbox_rps [--requests N] [--concurrency C]``; prints JSON
and merges it into ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import urllib.parse
import urllib.request

import aiohttp

from benchmarks.common import record, sandbox_process

_AUTH = "Basic " + base64.b64encode(b"sandbox1:sandbox-secret").decode()
_FORM = {"from": "smsgw", "to": "447700900123", "text": "Your code is 123456", "type": "text"}


async def _aiohttp_rps(url: str, requests: int, concurrency: int) -> tuple[float, int]:
    endpoint = f"{url}/sms/json"
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                queue.get_nowait()
                async with session.post(
                    endpoint, data=_FORM, headers={"Authorization": _AUTH}
                ) as response:
                    body = await response.json()
                    if response.status != 200 or body["messages"][0]["status"] != "0":
                        failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, failures


def _naive_rps(url: str, requests: int) -> float:
    body = urllib.parse.urlencode(_FORM).encode()
    started = time.perf_counter()
    for _ in range(requests):
        request = urllib.request.Request(
            f"{url}/sms/json", data=body, headers={"Authorization": _AUTH}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with sandbox_process() as url:
        naive = _naive_rps(url, min(2_000, args.requests))
        raw, failures = asyncio.run(_aiohttp_rps(url, args.requests, args.concurrency))
    figures = {
        "raw_sandbox_req_per_s": round(raw, 1),
        "sandbox_naive_req_per_s": round(naive, 1),
        "sandbox_raw_vs_naive_ratio": round(raw / naive, 2),
        "sandbox_failures": failures,
    }
    record(figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
