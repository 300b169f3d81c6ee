"""Campaign targets (issue 6), measured in one run against a private Redis and the sandbox.

1. ``campaign_enqueue_100k_s``: wall time of ``smsgw campaign start FILE`` (its own process:
   start-up, file digest, every row checked, every recipient stored, the preview, every job
   published to the bulk lane) for a 100,000-row CSV with ``{name}``, ``{link}`` and a
   per-recipient ``{code}``; ``campaign_peak_rss_mb``: that process's peak resident set
   (``wait4``), beside the same figures for a 10,000-row file (memory must not grow with
   the file). Baseline in the same run: ``naive_campaign_rows_per_s``, one
   ``Producer.enqueue`` per row (a round trip and a task each), over 5,000 rows.
2. ``campaign_otp_p50_ms`` / ``campaign_otp_p99_ms``: login codes enqueued one by one (10/s)
   while a 20,000-recipient campaign drains at the account's bulk share (account 500
   segments/s, sandbox latency 50 ms, one bulk and one otp worker); latency = the
   sandbox inbox's ``received_at`` minus the time just before ``enqueue``.

Usage: ``python -m benchmarks.campaign [--quick]``; prints JSON and merges it into
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis import Redis

from benchmarks.common import record, sandbox_process
from benchmarks.stack import ROOT, Sandbox, StackEnv, WorkerProcess, WorkerSpec, wait_until
from worker.app import create_app
from worker.crypto import generate_key, load_cipher
from worker.producer import Producer
from worker.redis_server import RedisServer

TEMPLATE = "Hello {name}, reset your password at {link} with the temporary code {code}"
CODE_TO = "447911123456"
_CODE_TEXT = re.compile(r"^bench otp (\d+):")


def write_file(path: Path, rows: int) -> Path:
    """A campaign CSV of ``rows`` distinct valid UK mobiles (+447400000000 onwards)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "link", "code"])
        for n in range(rows):
            writer.writerow(
                [
                    f"+4474{n:08d}",
                    f"User {n}",
                    f"https://id.example/r/{n:x}",
                    f"{n * 7919 % 10**6:06d}",
                ]
            )
    return path


def start_campaign(env: StackEnv, path: Path) -> tuple[float, float, dict[str, Any]]:
    """Run ``smsgw campaign start`` as its own process: (seconds, peak RSS MiB, its JSON)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "campaign", "start", str(path),
         "--template", TEMPLATE, "--json"],
        cwd=ROOT, env=env.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = process.communicate(timeout=600)
    elapsed = time.perf_counter() - started
    # Reaped by communicate(): the peak RSS of this process's children (this process runs
    # one start per size, so the figure is that start's producer).
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if process.returncode != 0:
        raise RuntimeError(f"campaign start failed ({process.returncode}): {err.decode()[-2000:]}")
    return elapsed, peak_kib / 1024, json.loads(out)


def phase_enqueue(redis: RedisServer, workdir: Path, rows: int, small: int) -> dict[str, Any]:
    env = StackEnv(redis, generate_key(), "http://127.0.0.1:9", rate_per_s=500.0)
    figures: dict[str, Any] = {}
    for count, label in ((small, "small"), (rows, "large")):
        Redis.from_url(redis.url(0)).flushall()
        path = write_file(workdir / f"campaign-{count}.csv", count)
        # Peak RSS: measured in a fresh interpreter per size, so one run cannot hide another.
        probe = subprocess.run(
            [sys.executable, "-m", "benchmarks.campaign", "--measure-start", str(path),
             "--redis-port", str(redis.port), "--secret-key", env.secret_key],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
        seconds, rss_mb, recipients = json.loads(probe.stdout)
        if recipients != count:
            raise RuntimeError(f"{recipients} of {count} recipients staged")
        figures[f"campaign_{label}_rows"] = count
        figures[f"campaign_{label}_enqueue_s"] = round(seconds, 2)
        figures[f"campaign_{label}_peak_rss_mb"] = round(rss_mb, 1)
    if rows == 100_000:
        figures["campaign_enqueue_100k_s"] = figures["campaign_large_enqueue_s"]
        figures["campaign_peak_rss_mb"] = figures["campaign_large_peak_rss_mb"]
    figures["campaign_enqueue_rows_per_s"] = round(rows / figures["campaign_large_enqueue_s"], 1)
    return figures


def measure_start(path: Path, port: int, secret_key: str) -> None:
    """``--measure-start``: one timed ``campaign start`` (its peak RSS: this process's child)."""
    redis = RedisServer(port=port)  # the parent's server, already running: only its URLs
    env = StackEnv(redis, secret_key, "http://127.0.0.1:9", rate_per_s=500.0)
    seconds, rss_mb, output = start_campaign(env, path)
    print(json.dumps([seconds, rss_mb, output["campaign"]["recipients"]]))


def phase_naive(redis: RedisServer, rows: int) -> dict[str, Any]:
    """One ``Producer.enqueue`` per row: what a script without campaigns would do."""
    Redis.from_url(redis.url(0)).flushall()
    env = StackEnv(redis, generate_key(), "http://127.0.0.1:9", rate_per_s=500.0)
    settings = env.settings()
    producer = Producer(
        redis=Redis.from_url(settings.state_redis_url.get_secret_value()),
        publisher=create_app(settings),
        settings=settings,
        cipher=load_cipher(settings),
    )
    started = time.perf_counter()
    for n in range(rows):
        producer.enqueue(
            {
                "message": f"Hello User {n}, reset your password at https://id.example/r/{n:x} "
                "with the temporary code {code}",
                "access_code": f"{n * 7919 % 10**6:06d}",
                "phone_numbers": [f"+4474{n:08d}"],
            },
            lane="bulk",
        )
    elapsed = time.perf_counter() - started
    return {"naive_campaign_rows": rows, "naive_campaign_rows_per_s": round(rows / elapsed, 1)}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def phase_latency(
    redis: RedisServer, workdir: Path, backlog: int, codes: int, account_rate: float
) -> dict[str, Any]:
    """Code latency while a campaign drains at the account's bulk share."""
    Redis.from_url(redis.url(0)).flushall()
    with sandbox_process("--latency-ms", "50") as url:
        sandbox = Sandbox(url)
        env = StackEnv(redis, generate_key(), url, rate_per_s=account_rate)
        path = write_file(workdir / "latency.csv", backlog)
        _, _, started = start_campaign(env, path)
        campaign_id = started["campaign"]["id"]
        settings = env.settings()
        producer = Producer(
            redis=Redis.from_url(settings.state_redis_url.get_secret_value()),
            publisher=create_app(settings),
            settings=settings,
            cipher=load_cipher(settings),
        )
        workers = [
            WorkerProcess(name, WorkerSpec(lanes=lanes, concurrency=32).command(name),
                          env.environment(), workdir)
            for name, lanes in (("camp-bulk", ["bulk"]), ("camp-otp", ["otp"]))
        ]  # fmt: skip
        try:
            for worker in workers:
                worker.start()
            wait_until(
                lambda: sandbox.accepted() >= 200, timeout_s=120, what="the campaign to flow"
            )
            for n in range(3):  # warm-up: the otp worker's connections are open
                producer.enqueue(_code(1_000_000 + n), lane="otp")
            wait_until(lambda: len(sandbox.messages(to=CODE_TO)) >= 3, timeout_s=60, what="warm-up")
            sent_at: dict[int, float] = {}
            for n in range(codes):
                sent_at[n] = time.time()
                producer.enqueue(_code(n), lane="otp")
                time.sleep(0.1)
            wait_until(
                lambda: len(sandbox.messages(to=CODE_TO)) >= 3 + codes,
                timeout_s=60,
                what="the measured codes",
            )
            state = Redis.from_url(
                settings.state_redis_url.get_secret_value(), decode_responses=True
            )
            done = int(state.hget(f"sms:campaign:{campaign_id}", "done") or 0)
        finally:
            for worker in workers:
                worker.stop()
        latencies: list[float] = []
        campaign_during: list[float] = []
        window: tuple[float, float] = (min(sent_at.values()), max(sent_at.values()))
        for message in sandbox.messages():
            found = _CODE_TEXT.match(message["text"])
            if found and int(found.group(1)) in sent_at:
                latencies.append((message["received_at"] - sent_at[int(found.group(1))]) * 1000)
            elif not found and window[0] <= message["received_at"] <= window[1]:
                campaign_during.append(message["received_at"])
    span = (max(campaign_during) - min(campaign_during)) if len(campaign_during) > 1 else 0
    return {
        "campaign_otp_p50_ms": round(_percentile(latencies, 0.5), 1),
        "campaign_otp_p99_ms": round(_percentile(latencies, 0.99), 1),
        "campaign_otp_max_ms": round(max(latencies), 1),
        "campaign_otp_codes": len(latencies),
        "campaign_latency_account_rate_per_s": account_rate,
        "campaign_rate_during_codes_per_s": round((len(campaign_during) - 1) / span, 1)
        if span
        else 0.0,
        "campaign_done_at_end": done,
    }


def _code(index: int) -> dict[str, Any]:
    return {
        "message": f"bench otp {index}: your code is {{code}}",
        "access_code": f"{index % 1_000_000:06d}",
        "phone_numbers": [CODE_TO],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--measure-start", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--secret-key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_start:
        measure_start(args.measure_start, args.redis_port, args.secret_key)
        return
    rows, small, naive, backlog, codes = (
        (10_000, 1_000, 500, 2_000, 20) if args.quick else (100_000, 10_000, 5_000, 20_000, 300)
    )
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="smsgw-campaign-") as tmp:
        redis = stack.enter_context(RedisServer())
        workdir = Path(tmp)
        for name, body in (
            ("enqueue", lambda: phase_enqueue(redis, workdir, rows, small)),
            ("naive", lambda: phase_naive(redis, naive)),
            ("latency", lambda: phase_latency(redis, workdir, backlog, codes, 500.0)),
        ):
            print(f"[campaign] {name} ...", file=sys.stderr, flush=True)
            try:
                figures.update(body())
            except Exception as error:  # one phase failing must not lose the others
                figures[f"campaign_{name}_error"] = f"{type(error).__name__}: {error}"[:2000]
    if "campaign_enqueue_rows_per_s" in figures and "naive_campaign_rows_per_s" in figures:
        figures["campaign_enqueue_vs_naive"] = round(
            figures["campaign_enqueue_rows_per_s"] / figures["naive_campaign_rows_per_s"], 1
        )
    figures["campaign_bench"] = {
        "mode": "quick" if args.quick else "full",
        "cpus": os.cpu_count(),
        "duration_s": round(time.monotonic() - started, 1),
    }
    record(figures)
    print(json.dumps(figures, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
