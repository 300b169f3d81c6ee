"""The pipeline's speed targets (issue 4), measured in one run against the 50 ms sandbox.

Everything runs as its own process on this machine: a private ``redis-server``, ``smsgw
sandbox --latency-ms 50``, the product's workers (``smsgw worker --lanes`` when that command
exists, else ``celery -A worker.app worker --pool threads``) and the naive baseline's worker
(:mod:`benchmarks.naive`, Celery's default prefork pool). Producers are the product's own:
:meth:`worker.producer.Producer.enqueue_many` for bulk, :meth:`~worker.producer.Producer.enqueue`
for codes. Phases, in order (Redis is flushed between them):

1. ``raw_sandbox_req_per_s``: an aiohttp client posting straight to the sandbox;
2. ``naive_msgs_per_s``: the baseline, queue pre-filled, then its worker started;
3. ``bulk_msgs_per_s``: bulk jobs (one recipient each) pre-filled, bulk workers started, no
   provider limit; ``worker_rss_mb`` per worker process after the 10k-th and the last message;
   ``bulk_batched_msgs_per_s`` (informative): the same with 100 recipients per job, i.e.
   without Celery's per-task cost;
4. ``otp_burst_msgs_per_s``: 2,000 single-recipient codes pre-filled, the otp worker started;
5. ``otp_p50_ms`` / ``otp_p99_ms``: codes enqueued one by one (10/s) while a 20,000-message
   bulk backlog drains at the account's rate; latency = the sandbox inbox's ``received_at``
   minus the time just before ``enqueue``;
6. ``rate_observed_per_s`` / ``provider_throttles``: two worker processes, the account and
   the sandbox's own account both at 50/s, 3,000 messages on the default lane.

Throughput is messages over the span from the first to the last message the sandbox
accepted (worker start-up is outside it). Beside each figure: worker CPU per message, the
cores our processes and everyone else's used meanwhile (the machine may be shared), and
``*_outcomes``, the final results' recipients by status (every part should be ``sent``).

Usage: ``python -m benchmarks.pipeline [--quick] [--profile S]``; prints JSON and merges it
into ``benchmarks/results/latest.json``. ``--help`` lists the knobs (pool size, counts, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis

from benchmarks import naive
from benchmarks.common import record, sandbox_process
from benchmarks.sandbox_rps import _aiohttp_rps
from benchmarks.stack import (
    Sandbox,
    StackEnv,
    WorkerProcess,
    WorkerSpec,
    cores_used,
    cpu_sample,
    py_spy,
    sandbox_accounts_file,
    smsgw_worker_available,
    wait_until,
)
from worker.crypto import generate_key, load_cipher
from worker.producer import Producer
from worker.redis_server import RedisServer

BULK_TO = "447400123456"  # valid UK mobiles (phonenumbers), one per traffic kind
CODE_TO = "447911123456"
NAIVE_TO = "447400654321"
NO_LIMIT_PER_S = 1_000_000.0  # an account rate the limiter never reaches
_CODE_TEXT = re.compile(r"^bench otp (\d+):")
_MIN_RATE_PER_S = 10.0  # waits assume at least this throughput before giving up


@dataclass(frozen=True)
class Scale:
    """Counts of one run."""

    raw_requests: int
    naive_messages: int
    bulk_messages: int
    rss_checkpoint: int
    batched_messages: int
    otp_burst: int
    backlog: int
    codes: int
    rate_messages: int


FULL = Scale(20_000, 400, 50_000, 10_000, 20_000, 2_000, 20_000, 300, 3_000)
QUICK = Scale(2_000, 60, 1_500, 500, 1_000, 300, 1_500, 20, 200)


@dataclass(frozen=True)
class Options:
    """Command-line knobs (see ``--help``)."""

    latency_ms: float
    raw_concurrency: int
    bulk_procs: int
    bulk_concurrency: int
    batch_recipients: int
    batched_concurrency: int
    otp_procs: int
    otp_concurrency: int
    rate_concurrency: int
    latency_account_rate: float
    rate_target: float
    code_interval_s: float
    worker: str
    loglevel: str
    profile_s: float
    phases: frozenset[str]


PHASES = ("raw", "naive", "bulk", "batched", "otp", "latency", "rate")


# --- helpers ---------------------------------------------------------------------------------


def _span_rate(timestamps: list[float]) -> float:
    """Messages per second between the first and the last timestamp."""
    if len(timestamps) < 2:
        return 0.0
    span = max(timestamps) - min(timestamps)
    return (len(timestamps) - 1) / span if span > 0 else 0.0


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _deadline_s(count: int, floor_s: float = 60.0) -> float:
    return floor_s + count / _MIN_RATE_PER_S


class Run:
    """One benchmark run: the shared processes and what every phase needs.

    Args:
        options: The knobs.
        scale: The counts.
        redis: The private Redis.
        sandbox: The unlimited 50 ms sandbox.
        log_dir: Where worker logs go.
    """

    def __init__(
        self, options: Options, scale: Scale, redis: RedisServer, sandbox: Sandbox, log_dir: Path
    ) -> None:
        self.options = options
        self.scale = scale
        self.redis = redis
        self.sandbox = sandbox
        self.log_dir = log_dir
        self.secret_key = generate_key()
        self.use_smsgw = options.worker == "smsgw" or (
            options.worker == "auto" and smsgw_worker_available()
        )
        self._names: dict[str, int] = {}
        self._accepted_before = 0

    def env(self, *, rate_per_s: float, sandbox_url: str | None = None) -> StackEnv:
        """The configuration of one phase."""
        url = sandbox_url or self.sandbox.url
        return StackEnv(self.redis, self.secret_key, url, rate_per_s)

    def fresh(self) -> None:
        """Empty Redis and the sandbox inbox between phases; count acceptances from now."""
        client = Redis.from_url(self.redis.url(0))
        try:
            client.flushall()
        finally:
            client.close()
        self.sandbox.clear_messages()
        self._accepted_before = self.sandbox.accepted()

    def spec(self, lanes: list[str], concurrency: int) -> WorkerSpec:
        """A product worker for ``lanes``."""
        return WorkerSpec(
            lanes=lanes,
            concurrency=concurrency,
            use_smsgw=self.use_smsgw,
            loglevel=self.options.loglevel,
        )

    @contextmanager
    def workers(
        self, env: StackEnv, *specs: tuple[str, WorkerSpec]
    ) -> Iterator[list[WorkerProcess]]:
        """Start product workers (``(name, spec)`` pairs); stop them all on exit."""
        started: list[WorkerProcess] = []
        try:
            for name, spec in specs:
                node = self._node(name)
                worker = WorkerProcess(node, spec.command(node), env.environment(), self.log_dir)
                started.append(worker.start())
            yield started
        finally:
            for worker in started:
                worker.terminate()  # all at once: their warm shutdowns overlap
            for worker in started:
                worker.stop()

    def _node(self, name: str) -> str:
        self._names[name] = self._names.get(name, 0) + 1
        return f"{name}{self._names[name]}"

    def wait_accepted(self, target: int, workers: list[WorkerProcess], what: str) -> None:
        """Wait until the sandbox accepted ``target`` messages this phase (workers must live)."""

        def done() -> bool:
            dead = [w for w in workers if not w.alive()]
            if dead:
                raise RuntimeError(f"worker {dead[0].name} exited:\n{dead[0].log_tail()}")
            return self.sandbox.accepted() - self._accepted_before >= target

        wait_until(done, timeout_s=_deadline_s(target), what=what, every_s=0.5)

    def outcomes(self, jobs: int) -> dict[str, Any]:
        """Wait (bounded) for ``jobs`` final results; count their recipients by status.

        Every job must end with one final result, and every part the sandbox accepted
        should be recorded ``sent``; anything else here is a finding, not noise.
        """
        backend = Redis.from_url(self.redis.url(1))
        statuses: Counter[str] = Counter()

        def finals() -> bool:
            statuses.clear()
            keys = list(backend.scan_iter("celery-task-meta-*", count=1_000))
            for first in range(0, len(keys), 1_000):
                for raw in backend.mget(keys[first : first + 1_000]):
                    meta = json.loads(raw) if raw else {}
                    if meta.get("status") != "SUCCESS":
                        statuses[f"task_{meta.get('status', 'missing')}".lower()] += 1
                        continue
                    statuses["jobs"] += 1
                    for recipient in meta["result"].get("recipients", []):
                        statuses[recipient["status"]] += 1
            return statuses["jobs"] >= jobs

        try:
            wait_until(finals, timeout_s=_deadline_s(jobs), what="final results", every_s=2)
        finally:
            backend.close()
        return dict(sorted(statuses.items()))

    def producer(self, env: StackEnv) -> Producer:
        """The product's producer, configured like the workers of ``env``."""
        from worker.app import create_app

        settings = env.settings()
        return Producer(
            redis=Redis.from_url(settings.state_redis_url.get_secret_value()),
            publisher=create_app(settings),
            settings=settings,
            cipher=load_cipher(settings),
        )


def _enqueue_bulk(producer: Producer, count: int, *, lane: str, to: str) -> float:
    """Enqueue ``count`` one-recipient jobs with ``enqueue_many``; return jobs/s."""
    started = time.perf_counter()
    chunk = 1_000
    for first in range(0, count, chunk):
        messages = [
            {
                "message": f"Your password expires soon; reset it at https://id.example/r/{n}",
                "phone_numbers": [to],
            }
            for n in range(first, min(count, first + chunk))
        ]
        producer.enqueue_many(messages, lane=lane)
    return count / (time.perf_counter() - started)


def _code(index: int) -> dict[str, Any]:
    return {
        "message": f"bench otp {index}: your code is {{code}}",
        "access_code": f"{index % 1_000_000:06d}",
        "phone_numbers": [CODE_TO],
    }


# --- phases ----------------------------------------------------------------------------------


def phase_raw(run: Run) -> dict[str, Any]:
    """The sandbox's capacity for an aiohttp client posting straight to it."""
    run.fresh()
    raw, failures = asyncio.run(
        _aiohttp_rps(run.sandbox.url, run.scale.raw_requests, run.options.raw_concurrency)
    )
    return {"raw_sandbox_req_per_s": round(raw, 1), "raw_sandbox_failures": failures}


def phase_naive(run: Run) -> dict[str, Any]:
    """The baseline: a plain Celery task per message, urllib, prefork (default -c)."""
    run.fresh()
    broker = run.redis.url(3)
    app = naive.create_app(broker)
    count = run.scale.naive_messages
    with app.producer_or_acquire() as publisher:
        for n in range(count):
            app.send_task(naive.TASK, args=[NAIVE_TO, f"naive {n}"], producer=publisher)
    env = {
        **run.env(rate_per_s=NO_LIMIT_PER_S).environment(),
        "NAIVE_BROKER_URL": broker,
        "NAIVE_SANDBOX_URL": run.sandbox.url,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.naive", "worker", "-Q", naive.QUEUE,
        "--without-gossip", "--without-mingle", "-n", "naive@%h", "-l", "WARNING",
    ]  # fmt: skip
    worker = WorkerProcess("naive", command, env, run.log_dir).start()
    try:
        run.wait_accepted(count, [worker], f"{count} naive messages")
    finally:
        worker.stop()
    received = [m["received_at"] for m in run.sandbox.messages(to=NAIVE_TO)]
    return {"naive_msgs_per_s": round(_span_rate(received), 1)}


def phase_bulk(run: Run) -> dict[str, Any]:
    """Bulk throughput with no provider limit, and worker memory along the way."""
    run.fresh()
    env = run.env(rate_per_s=NO_LIMIT_PER_S)
    count, checkpoint = run.scale.bulk_messages, run.scale.rss_checkpoint
    enqueue_rate = _enqueue_bulk(run.producer(env), count, lane="bulk", to=BULK_TO)
    spec = run.spec(["bulk"], run.options.bulk_concurrency)
    figures: dict[str, Any] = {"bulk_enqueue_per_s": round(enqueue_rate, 1)}
    with run.workers(env, *[("bulk", spec)] * run.options.bulk_procs) as workers:
        profiler = _start_profiler(run, workers[0])
        run.wait_accepted(checkpoint, workers, f"{checkpoint} bulk messages")
        rss_checkpoint = [w.rss_mb() for w in workers]
        cpu_checkpoint = sum(w.cpu_s() for w in workers)
        machine = cpu_sample()
        run.wait_accepted(count, workers, f"{count} bulk messages")
        cores = cores_used(machine, cpu_sample())
        rss_end = [w.rss_mb() for w in workers]
        # Worker CPU per message past start-up: what a core buys, whatever else runs.
        cpu_ms = 1000 * (sum(w.cpu_s() for w in workers) - cpu_checkpoint) / (count - checkpoint)
        _stop_profiler(profiler)
        figures["bulk_outcomes"] = run.outcomes(count)
    received = [m["received_at"] for m in run.sandbox.messages(to=BULK_TO)]
    figures.update(
        bulk_msgs_per_s=round(_span_rate(received), 1),
        bulk_messages=len(received),
        bulk_worker_cpu_ms_per_msg=round(cpu_ms, 2),
        bulk_cores_ours=cores["ours"],
        bulk_cores_others=cores["others"],
        worker_rss_mb=round(max(rss_end), 1),
        worker_rss_mb_checkpoint=round(max(rss_checkpoint), 1),
        worker_rss_checkpoint_messages=checkpoint,
        worker_rss_end_messages=count,
        worker_rss_mb_per_process=[round(r, 1) for r in rss_end],
    )
    return figures


def phase_batched(run: Run) -> dict[str, Any]:
    """Bulk jobs of many recipients each: one Celery task carries many messages.

    Not a target of its own: beside ``bulk_msgs_per_s`` it shows what the per-task cost of
    Celery takes from one-recipient jobs.
    """
    run.fresh()
    env = run.env(rate_per_s=NO_LIMIT_PER_S)
    per_job = run.options.batch_recipients
    recipients = [f"447400{100_000 + n:06d}" for n in range(per_job)]
    jobs = max(1, run.scale.batched_messages // per_job)
    run.producer(env).enqueue_many(
        [
            {"message": f"Your password expires soon; reset it at https://id.example/c/{n}",
             "phone_numbers": recipients}
            for n in range(jobs)
        ],
        lane="bulk",
    )  # fmt: skip
    count = jobs * per_job
    spec = run.spec(["bulk"], run.options.batched_concurrency)
    with run.workers(env, *[("batched", spec)] * run.options.bulk_procs) as workers:
        profiler = _start_profiler(run, workers[0])
        machine = cpu_sample()
        run.wait_accepted(count, workers, f"{count} batched bulk messages")
        cores = cores_used(machine, cpu_sample())
        cpu_ms = 1000 * sum(w.cpu_s() for w in workers) / count  # start-up included
        _stop_profiler(profiler)
        outcomes = run.outcomes(jobs)  # retried jobs need their workers
    received = [m["received_at"] for m in run.sandbox.messages()]
    return {
        "bulk_batched_outcomes": outcomes,
        "bulk_batched_msgs_per_s": round(_span_rate(received), 1),
        "bulk_batched_recipients_per_job": per_job,
        "bulk_batched_messages": len(received),
        "bulk_batched_worker_cpu_ms_per_msg": round(cpu_ms, 2),
        "bulk_batched_cores_ours": cores["ours"],
        "bulk_batched_cores_others": cores["others"],
    }


def phase_otp_burst(run: Run) -> dict[str, Any]:
    """A burst of single-recipient codes on the otp lane."""
    run.fresh()
    env = run.env(rate_per_s=NO_LIMIT_PER_S)
    producer = run.producer(env)
    count = run.scale.otp_burst
    started = time.perf_counter()
    for n in range(count):
        producer.enqueue(_code(n), lane="otp")
    enqueue_rate = count / (time.perf_counter() - started)
    spec = run.spec(["otp"], run.options.otp_concurrency)
    with run.workers(env, *[("otp", spec)] * run.options.otp_procs) as workers:
        run.wait_accepted(count, workers, f"{count} codes")
        cpu_ms = 1000 * sum(w.cpu_s() for w in workers) / count  # start-up included
        outcomes = run.outcomes(count)
    received = [m["received_at"] for m in run.sandbox.messages(to=CODE_TO)]
    return {
        "otp_burst_outcomes": outcomes,
        "otp_burst_msgs_per_s": round(_span_rate(received), 1),
        "otp_burst_messages": len(received),
        "otp_worker_cpu_ms_per_msg": round(cpu_ms, 2),
        "otp_enqueue_per_s": round(enqueue_rate, 1),
    }


def phase_latency(run: Run) -> dict[str, Any]:
    """Code latency while a bulk backlog drains at the account's rate."""
    run.fresh()
    options = run.options
    env = run.env(rate_per_s=options.latency_account_rate)
    producer = run.producer(env)
    backlog = run.scale.backlog
    _enqueue_bulk(producer, backlog, lane="bulk", to=BULK_TO)
    bulk = run.spec(["bulk"], options.bulk_concurrency)
    otp = run.spec(["otp"], options.otp_concurrency)
    specs = [*[("lat-bulk", bulk)] * options.bulk_procs, ("lat-otp", otp)]
    with run.workers(env, *specs) as workers:
        run.wait_accepted(min(200, backlog // 10), workers, "the bulk backlog to flow")
        # Warm-up codes: the otp worker is up and its connections are open.
        for n in range(3):
            producer.enqueue(_code(1_000_000 + n), lane="otp")
        wait_until(
            lambda: len(run.sandbox.messages(to=CODE_TO)) >= 3, timeout_s=60, what="warm-up codes"
        )
        sent_at: dict[int, float] = {}
        for n in range(run.scale.codes):
            sent_at[n] = time.time()
            producer.enqueue(_code(n), lane="otp")
            time.sleep(options.code_interval_s)
        wait_until(
            lambda: len(run.sandbox.messages(to=CODE_TO)) >= 3 + len(sent_at),
            timeout_s=60,
            what="the measured codes",
        )
        broker = Redis.from_url(run.redis.url(0))
        left = broker.llen("bulk")
        broker.close()
    latencies: list[float] = []
    for message in run.sandbox.messages(to=CODE_TO):
        found = _CODE_TEXT.match(message["text"])
        if found and int(found.group(1)) in sent_at:
            latencies.append((message["received_at"] - sent_at[int(found.group(1))]) * 1000)
    window = (min(sent_at.values()), max(sent_at.values()))
    bulk_during = [
        m["received_at"]
        for m in run.sandbox.messages(to=BULK_TO)
        if window[0] <= m["received_at"] <= window[1]
    ]
    return {
        "otp_p50_ms": round(_percentile(latencies, 0.50), 1),
        "otp_p99_ms": round(_percentile(latencies, 0.99), 1),
        "otp_max_ms": round(max(latencies), 1),
        "otp_latency_codes": len(latencies),
        "otp_latency_account_rate_per_s": options.latency_account_rate,
        "otp_latency_bulk_rate_per_s": round(_span_rate(bulk_during), 1),
        "otp_latency_backlog_left": int(left),
    }


def phase_rate(run: Run) -> dict[str, Any]:
    """Two worker processes sharing an account limited at 50/s; the sandbox limits it too."""
    target = run.options.rate_target
    count = run.scale.rate_messages
    accounts = sandbox_accounts_file(run.log_dir / "sandbox-accounts.yaml", rate_per_s=target)
    extra = ("--latency-ms", str(run.options.latency_ms), "--accounts", str(accounts))
    with sandbox_process(*extra) as url:
        limited = Sandbox(url)
        run.fresh()
        env = run.env(rate_per_s=target, sandbox_url=url)
        _enqueue_bulk(run.producer(env), count, lane="default", to=BULK_TO)
        spec = run.spec(["default"], run.options.rate_concurrency)
        with run.workers(env, ("rate", spec), ("rate", spec)) as workers:

            def done() -> bool:
                if not all(w.alive() for w in workers):
                    raise RuntimeError("a rate worker exited")
                return limited.accepted() >= count

            wait_until(done, timeout_s=60 + 2 * count / target, what=f"{count} limited messages")
            outcomes = run.outcomes(count)
        received = [m["received_at"] for m in limited.messages(to=BULK_TO)]
        throttles = limited.counters().get("throttled", 0)
    observed = _span_rate(received)
    return {
        "rate_outcomes": outcomes,
        "rate_target_per_s": target,
        "rate_observed_per_s": round(observed, 2),
        "rate_error_pct": round(100 * (observed - target) / target, 2),
        "rate_messages": len(received),
        "provider_throttles": throttles,
    }


def _start_profiler(run: Run, worker: WorkerProcess) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` on one bulk worker for ``--profile`` seconds, when asked and installed."""
    binary = py_spy()
    if not run.options.profile_s or binary is None:
        return None
    output = run.log_dir / f"{worker.name}.pyspy.txt"
    command = [
        binary, "record", "-p", str(worker.pid), "-d", str(int(run.options.profile_s)),
        "-f", "raw", "-o", str(output), "--nonblocking", "--gil", "-r", "100",
    ]  # fmt: skip
    time.sleep(3)  # past start-up
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None:
        return
    try:
        profiler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.terminate()
        profiler.wait(timeout=10)


# --- the run ---------------------------------------------------------------------------------


def _ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """Ratios to the baseline and the raw capacity, and which targets are met."""
    naive_rate = figures.get("naive_msgs_per_s") or 0.0
    bulk = figures.get("bulk_msgs_per_s")
    raw = figures.get("raw_sandbox_req_per_s")
    otp = figures.get("otp_burst_msgs_per_s")
    out: dict[str, Any] = {}
    targets: dict[str, bool] = {}
    if bulk is not None and naive_rate:
        out["bulk_vs_naive"] = round(bulk / naive_rate, 1)
        targets["bulk >= 1500/s"] = bulk >= 1_500
        targets["bulk >= 40x naive"] = bulk >= 40 * naive_rate
    if bulk is not None and raw:
        out["bulk_vs_raw_sandbox"] = round(bulk / raw, 3)
        targets["bulk >= raw/2"] = bulk >= raw / 2
    if otp is not None and naive_rate:
        out["otp_burst_vs_naive"] = round(otp / naive_rate, 1)
        targets["otp burst >= 10x naive"] = otp >= 10 * naive_rate
    if "otp_p99_ms" in figures:
        targets["otp p99 <= 300 ms"] = figures["otp_p99_ms"] <= 300
    if "rate_observed_per_s" in figures:
        targets["rate within 3%"] = abs(figures["rate_error_pct"]) <= 3
        targets["zero provider throttles"] = figures["provider_throttles"] == 0
    if "worker_rss_mb" in figures:
        targets["worker rss <= 300 MB"] = figures["worker_rss_mb"] <= 300
    out["pipeline_targets"] = targets
    return out


def _phase(
    figures: dict[str, Any], name: str, body: Callable[[Run], dict[str, Any]], run: Run
) -> None:
    """Run one phase; a failure is recorded (``<name>_error``) and the next phase still runs."""
    started = time.monotonic()
    print(f"[pipeline] {name} ...", file=sys.stderr, flush=True)
    try:
        figures.update(body(run))
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        figures[f"pipeline_{name}_error"] = f"{type(error).__name__}: {error}"[:2_000]
    print(f"[pipeline] {name} done in {time.monotonic() - started:.1f}s", file=sys.stderr)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally``: processes stop


def run_all(options: Options, scale: Scale) -> dict[str, Any]:
    """Every selected phase, in order, with the shared processes up; the figures."""
    log_dir = Path(tempfile.mkdtemp(prefix="smsgw-bench-"))
    figures: dict[str, Any] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        url = stack.enter_context(sandbox_process("--latency-ms", str(options.latency_ms)))
        run = Run(options, scale, redis, Sandbox(url), log_dir)
        bodies: dict[str, Callable[[Run], dict[str, Any]]] = {
            "raw": phase_raw,
            "naive": phase_naive,
            "bulk": phase_bulk,
            "batched": phase_batched,
            "otp": phase_otp_burst,
            "latency": phase_latency,
            "rate": phase_rate,
        }
        for name in PHASES:
            if name in options.phases:
                _phase(figures, name, bodies[name], run)
        figures["pipeline_mode"] = "quick" if scale == QUICK else "full"
        figures["pipeline_config"] = {
            **{k: v for k, v in asdict(options).items() if k != "phases"},
            "scale": asdict(scale),
            "worker_command": "smsgw worker" if run.use_smsgw else "celery worker --pool threads",
            "sandbox_latency_ms": options.latency_ms,
            "logs": str(log_dir),
            "duration_s": round(time.monotonic() - started, 1),
        }
    figures.update(_ratios(figures))
    return figures


def _options(argv: list[str] | None) -> tuple[Options, Scale]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="small counts: a smoke run in under a minute")
    add("--latency-ms", type=float, default=50.0, help="sandbox latency per request")
    add("--raw-concurrency", type=int, default=512, help="raw aiohttp client's requests in flight")
    add("--bulk-procs", type=int, default=2, help="bulk worker processes")
    add("--bulk-concurrency", type=int, default=32, help="threads per bulk worker")
    add("--batch-recipients", type=int, default=100, help="recipients per job, batched phase")
    # Threads x recipient_concurrency (16) must stay under the runtime's Redis pool (128):
    # past it, MaxConnectionsError fails jobs mid-send and parts end up "unknown".
    add("--batched-concurrency", type=int, default=6, help="threads per worker, batched phase")
    add("--otp-procs", type=int, default=1, help="otp worker processes (burst phase)")
    add("--otp-concurrency", type=int, default=32, help="threads per otp worker")
    add("--rate-concurrency", type=int, default=8, help="threads per worker, rate phase")
    add("--latency-account-rate", type=float, default=500.0, help="account rate, latency phase")
    add("--rate-target", type=float, default=50.0, help="account + sandbox rate, rate phase")
    add("--code-interval-s", type=float, default=0.1, help="pause between measured codes")
    add("--worker", choices=("auto", "celery", "smsgw"), default="auto", help="worker command")
    add("--loglevel", default="WARNING", help="product workers' log level")
    add("--profile", type=float, default=0.0, help="py-spy a bulk worker for N seconds")
    add("--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}")
    args = parser.parse_args(argv)
    phases = frozenset(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    options = Options(
        latency_ms=args.latency_ms,
        raw_concurrency=args.raw_concurrency,
        bulk_procs=args.bulk_procs,
        bulk_concurrency=args.bulk_concurrency,
        batch_recipients=args.batch_recipients,
        batched_concurrency=args.batched_concurrency,
        otp_procs=args.otp_procs,
        otp_concurrency=args.otp_concurrency,
        rate_concurrency=args.rate_concurrency,
        latency_account_rate=args.latency_account_rate,
        rate_target=args.rate_target,
        code_interval_s=args.code_interval_s,
        worker=args.worker,
        loglevel=args.loglevel,
        profile_s=args.profile,
        phases=phases,
    )
    return options, QUICK if args.quick else FULL


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print the figures and merge them into the results file."""
    options, scale = _options(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    figures = run_all(options, scale)
    record(figures)
    print(json.dumps(figures, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
