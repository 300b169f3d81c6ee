"""End-to-end harness: a private Redis, real ``celery worker`` and Flower subprocesses.

The fixtures here run the product as it runs in production: a worker process started with
``python -m celery -A worker.app worker`` against its own Redis (broker DB 0, result DB 1,
state DB 2) and the provider sandbox, configured only through ``SMSGW_*`` variables. The
test side enqueues with :class:`worker.producer.Producer` and waits on Celery results.
Import the fixtures into a test module (``from tests.celery_harness import e2e``).

Settings are small (short backoff, short countdowns) so retries finish in seconds. The
visibility timeout cannot go below the settings' 60 s floor, so a test that needs a
redelivery after a crash ages the broker's unacked entries instead of waiting
(:meth:`E2EStack.age_unacked`); kombu's own sweep at consumer start then restores them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from config.settings import Settings
from gateways.sandbox import SandboxAccount, SandboxServer
from worker.app import create_app
from worker.crypto import Cipher, generate_key
from worker.producer import Producer
from worker.redis_server import RedisServer, free_port

__all__ = [
    "E2EStack",
    "FlowerProcess",
    "WorkerProcess",
    "e2e",
    "e2e_redis",
    "e2e_stack",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

BROKER_DB, RESULT_DB, STATE_DB = 0, 1, 2

# Sandbox accounts the worker's gateway accounts point at. The passwords are secrets the
# tests look for everywhere they must not be.
MAIN_ACCOUNT = "main"
MAIN_KEY = "e2e-main-key"
MAIN_PASSWORD = "e2e-Main!Secret-71"
SLOW_ACCOUNT = "slow"
SLOW_KEY = "e2e-slow-key"
SLOW_PASSWORD = "e2e-Slow!Secret-52"
SLOW_RATE_PER_S = 2.0
SENDER = "smsgw"

FLOWER_USER = "e2e"
FLOWER_PASSWORD = "e2e-flower-pw"

# Celery's wording when a worker is consuming; the node name makes it unique.
_READY = "ready."
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0

# kombu's Redis transport: delivery time of each unacked message (a sorted set).
_UNACKED_INDEX = "unacked_index"


def wait_for(
    condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05, what: str
) -> None:
    """Poll ``condition`` until it holds.

    Raises:
        AssertionError: It did not hold within ``timeout_s`` (``what`` says what was awaited).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def sandbox_accounts() -> list[SandboxAccount]:
    """The sandbox accounts behind the worker's two gateway accounts."""
    return [
        SandboxAccount(
            provider="vonage", name=MAIN_ACCOUNT, user_id=MAIN_KEY, password=MAIN_PASSWORD
        ),
        SandboxAccount(
            provider="vonage",
            name=SLOW_ACCOUNT,
            user_id=SLOW_KEY,
            password=SLOW_PASSWORD,
            rate_per_s=SLOW_RATE_PER_S,
        ),
    ]


def stack_values(redis_server: RedisServer, sandbox_url: str, secret_key: str) -> dict[str, Any]:
    """Settings values shared by the worker (as ``SMSGW_*``) and the test side."""
    return {
        "broker_url": redis_server.url(BROKER_DB),
        "result_backend_url": redis_server.url(RESULT_DB),
        "state_redis_url": redis_server.url(STATE_DB),
        "secret_key": secret_key,
        "default_account": MAIN_ACCOUNT,
        "accounts": [
            {
                "name": MAIN_ACCOUNT,
                "gateway": "vonage",
                "url": sandbox_url,
                "user_id": MAIN_KEY,
                "password": MAIN_PASSWORD,
                "sender": SENDER,
            },
            # No rate here: the worker's own limit (the gateway's default) is far above the
            # sandbox's, so the provider's throttle replies are what slows this account.
            {
                "name": SLOW_ACCOUNT,
                "gateway": "vonage",
                "url": sandbox_url,
                "user_id": SLOW_KEY,
                "password": SLOW_PASSWORD,
                "sender": SENDER,
            },
        ],
        # Fast retries; the visibility timeout at its floor, still twice countdown + limit.
        "retry_base_s": 0.2,
        "max_retry_countdown_s": 2,
        "task_time_limit_s": 20,
        "visibility_timeout_s": 60,
        "provider_timeout_s": 5.0,
        "provider_connect_timeout_s": 2.0,
    }


def flush_stack_databases(server: RedisServer) -> None:
    """Empty the broker, result and state databases of a stack's Redis (best effort)."""
    for number in (BROKER_DB, RESULT_DB, STATE_DB):
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(server.url(number))
            client.flushdb()
            client.close()


def env_for(values: dict[str, Any]) -> dict[str, str]:
    """A subprocess environment carrying ``values`` as ``SMSGW_*`` variables, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    for name, value in values.items():
        env[f"SMSGW_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Process:
    """A child process whose output goes to a log file (appended across restarts)."""

    def __init__(
        self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def spawn(self) -> None:
        """Start the process (without waiting for it to be ready)."""
        if self.running:
            raise RuntimeError(f"the {self.name} is already running")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest reaches the fixtures, not us
            )

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        """Everything the process (and its earlier runs) wrote."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def recent_log(self) -> str:
        """What the current run wrote."""
        return self.log_text()[self._log_offset :]

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.recent_log()[-3000:]
            raise RuntimeError(f"the {self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not end in time."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no acks, no restore of prefetched messages."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self.process = None


class WorkerProcess(_Process):
    """``python -m celery -A worker.app worker`` on every lane, threads pool."""

    def __init__(self, *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.node = f"e2e-{os.getpid()}@localhost"
        super().__init__(
            "worker",
            [
                sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                "-Q", "otp,default,bulk", "--pool", "threads", "-c", "8", "-E",
                "-n", self.node, "--without-gossip", "--without-mingle", "-l", "INFO",
            ],
            env=env,
            cwd=cwd,
            log_path=log_path,
        )  # fmt: skip

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start the worker and wait until it consumes."""
        self.spawn()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait for Celery's ``ready.`` line of this run."""

        def ready() -> bool:
            self._check_alive()
            return f"{self.node} {_READY}" in self.recent_log()

        wait_for(ready, timeout_s=timeout_s, interval_s=0.1, what="the worker to be ready")

    def restart(self) -> None:
        """A warm stop, then a start."""
        self.stop()
        self.start()


class FlowerProcess(_Process):
    """``python -m celery -A worker.app flower`` on loopback, with basic auth."""

    def __init__(self, *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.port = free_port()
        super().__init__(
            "Flower",
            [
                sys.executable, "-m", "celery", "-A", "worker.app", "flower",
                "--address=127.0.0.1", f"--port={self.port}",
                f"--basic-auth={FLOWER_USER}:{FLOWER_PASSWORD}",
            ],
            env=env,
            cwd=cwd,
            log_path=log_path,
        )  # fmt: skip

    @property
    def url(self) -> str:
        """Flower's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        """GET ``path``; the status and body (errors are answers too)."""
        request = urllib.request.Request(self.url + path)
        if auth:
            token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), bytes(error.read())

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait until the HTTP API answers."""

        def answers() -> bool:
            self._check_alive()
            try:
                status, _ = self.get("/api/workers?refresh=0")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
            return status == 200

        wait_for(answers, timeout_s=timeout_s, interval_s=0.2, what="Flower to answer")


@dataclass(repr=False)
class E2EStack:
    """Everything an end-to-end test touches.

    Attributes:
        settings: The settings the worker runs with, as seen by the test side.
        app: A Celery app on the same broker and backend (publisher and result reader).
        producer: Enqueues jobs exactly as producers do.
        sandbox: The provider sandbox the worker's accounts point at.
        worker: The worker subprocess.
        flower: The Flower subprocess (started with the worker so it sees every task).
        redis_server: The private Redis.
    """

    settings: Settings
    app: Celery
    producer: Producer
    sandbox: SandboxServer
    worker: WorkerProcess
    flower: FlowerProcess
    redis_server: RedisServer
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    def db(self, number: int) -> redis.Redis:
        """A client on database ``number`` (bytes in, bytes out)."""
        if number not in self.clients:
            self.clients[number] = redis.Redis.from_url(self.redis_server.url(number))
        return self.clients[number]

    @property
    def state(self) -> redis.Redis:
        """The state store (jobs, part states, rate limits)."""
        return self.db(STATE_DB)

    def result(self, job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for the job's final result (the task's return value)."""
        value = AsyncResult(job_id, app=self.app).get(timeout=timeout_s, interval=0.05)
        assert isinstance(value, dict), value
        return value

    def results(self, job_ids: list[str], timeout_s: float = 45.0) -> list[dict[str, Any]]:
        """Every job's final result, in order (one shared deadline)."""
        deadline = time.monotonic() + timeout_s
        return [self.result(j, max(1.0, deadline - time.monotonic())) for j in job_ids]

    def task_state(self, job_id: str) -> str:
        """Celery's state of the job's task (``SUCCESS`` once its result is recorded)."""
        return str(AsyncResult(job_id, app=self.app).state)

    def age_unacked(self, by_s: float) -> int:
        """Make every unacked broker message look ``by_s`` seconds older than it is.

        Stands in for waiting out the visibility timeout after a crash: kombu restores
        unacked messages older than the timeout when a consumer starts.

        Returns:
            How many messages were aged.
        """
        broker = self.db(BROKER_DB)
        entries = broker.zrange(_UNACKED_INDEX, 0, -1, withscores=True)
        if entries:
            broker.zadd(_UNACKED_INDEX, {tag: score - by_s for tag, score in entries})
        return len(entries)

    def part_statuses(self) -> list[tuple[str, int, str]]:
        """(job id, piece, status) of every part in the state store."""
        found: list[tuple[str, int, str]] = []
        for key in self.state.scan_iter(match="sms:job:*:parts"):
            job_id = key.decode().split(":")[2]
            for name, value in self.state.hgetall(key).items():
                _, piece, kind = name.decode().split(":")
                if kind == "s":
                    found.append((job_id, int(piece), value.decode()))
        return found


@pytest.fixture(scope="session")
def e2e_redis() -> Iterator[RedisServer]:
    """A private redis-server for the end-to-end tests (never the developer's)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def e2e_stack(
    e2e_redis: RedisServer,
    sandbox_server: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2EStack]:
    """One worker and one Flower for a test module, both ready."""
    workdir = tmp_path_factory.mktemp("e2e")
    key = generate_key()
    values = stack_values(e2e_redis, sandbox_server.url, key)
    env = env_for(values)
    settings = Settings(**values)
    worker = WorkerProcess(env=env, cwd=workdir, log_path=workdir / "worker.log")
    flower = FlowerProcess(env=env, cwd=workdir, log_path=workdir / "flower.log")
    app = create_app(settings)
    state = redis.Redis.from_url(e2e_redis.url(STATE_DB))
    stack = E2EStack(
        settings=settings,
        app=app,
        producer=Producer(redis=state, publisher=app, settings=settings, cipher=Cipher([key])),
        sandbox=sandbox_server,
        worker=worker,
        flower=flower,
        redis_server=e2e_redis,
    )
    try:
        # Flower first: it only knows the tasks whose events it saw.
        flower.spawn()
        worker.spawn()
        flower.wait_ready()
        worker.wait_ready()
        yield stack
    finally:
        worker.stop()
        flower.stop()
        for client in stack.clients.values():
            client.close()
        state.close()
        with contextlib.suppress(Exception):
            app.close()
        flush_stack_databases(e2e_redis)


@pytest.fixture
def e2e(e2e_stack: E2EStack, sandbox: SandboxServer) -> Iterator[E2EStack]:
    """The running stack with a clean sandbox (plus the e2e accounts) and state store."""
    if not e2e_stack.worker.running:
        e2e_stack.worker.start()
    sandbox.state.set_accounts(sandbox_accounts())
    e2e_stack.state.flushdb()
    yield e2e_stack
    e2e_stack.state.flushdb()
