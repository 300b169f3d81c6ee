"""The processes a pipeline benchmark runs, and the small clients it needs to watch them.

* :func:`sandbox_accounts_file` writes the ``smsgw sandbox --accounts`` YAML (the sandbox's
  own throttle per account);
* :class:`Sandbox` reads a running sandbox's counters and inbox (``/_sandbox/...``);
* :class:`StackEnv` turns a private Redis, a sandbox URL and an account rate into the
  ``SMSGW_*`` environment of worker processes and the same :class:`Settings` for producers;
* :class:`WorkerProcess` starts one worker in its own process group and stops that group
  (SIGTERM, then SIGKILL), measuring its resident set from ``/proc`` meanwhile.

Everything is bounded: every wait has a deadline and every process is stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from config.settings import Settings
from worker.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

SANDBOX_KEY = "sandbox1"  # the documented Vonage sandbox key and secret
SANDBOX_SECRET = "sandbox-secret"
ACCOUNT = "bench"  # the gateway account the workers send through
PROVIDER = "vonage"

_STOP_TIMEOUT_S = 20.0


def sandbox_accounts_file(path: Path, *, rate_per_s: float | None) -> Path:
    """Write a sandbox accounts YAML: the Vonage sandbox account, throttled at ``rate_per_s``."""
    account: dict[str, Any] = {
        "provider": PROVIDER,
        "name": "sandbox",
        "user_id": SANDBOX_KEY,
        "password": SANDBOX_SECRET,
    }
    if rate_per_s is not None:
        account["rate_per_s"] = rate_per_s
    path.write_text(yaml.safe_dump([account]), encoding="utf-8")
    return path


class Sandbox:
    """The control API of a running ``smsgw sandbox``.

    Args:
        url: The sandbox's base URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def counters(self) -> dict[str, int]:
        """Vonage counters summed over accounts: requests, accepted, throttled, ..."""
        totals: dict[str, int] = {}
        for row in self._call("GET", "/_sandbox/stats")["stats"]:
            if row["provider"] != PROVIDER:
                continue
            for name, value in row.items():
                if isinstance(value, int):
                    totals[name] = totals.get(name, 0) + value
        return totals

    def accepted(self) -> int:
        """Messages the simulated Vonage accepted so far."""
        return self.counters().get("accepted", 0)

    def messages(self, *, to: str | None = None) -> list[dict[str, Any]]:
        """Inbox messages (oldest first), optionally to one number (digits, no ``+``)."""
        query = f"?{urllib.parse.urlencode({'to': to})}" if to else ""
        found: list[dict[str, Any]] = self._call("GET", f"/_sandbox/messages{query}")["messages"]
        return found

    def clear_messages(self) -> None:
        """Empty the inbox (faults, latency and counters stay)."""
        self._call("DELETE", "/_sandbox/messages")


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, every_s: float = 0.25
) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


@dataclass(frozen=True)
class StackEnv:
    """How worker processes and producers of one benchmark phase are configured.

    Attributes:
        redis: The private Redis (broker db 0, results db 1, state db 2).
        secret_key: The Fernet key access codes are encrypted with.
        sandbox_url: Where the account's Vonage API lives.
        rate_per_s: The account's rate limit (segments/s); very high means "no limit".
    """

    redis: RedisServer
    secret_key: str
    sandbox_url: str
    rate_per_s: float

    def account(self) -> dict[str, Any]:
        """The gateway account, as ``SMSGW_ACCOUNTS`` lists it."""
        return {
            "name": ACCOUNT,
            "gateway": PROVIDER,
            "url": self.sandbox_url,
            "user_id": SANDBOX_KEY,
            "password": SANDBOX_SECRET,
            "sender": "bench",
            "rate_per_s": self.rate_per_s,
        }

    def variables(self) -> dict[str, str]:
        """The ``SMSGW_*`` variables of a worker process."""
        return {
            "SMSGW_BROKER_URL": self.redis.url(0),
            "SMSGW_RESULT_BACKEND_URL": self.redis.url(1),
            "SMSGW_STATE_REDIS_URL": self.redis.url(2),
            "SMSGW_SECRET_KEY": self.secret_key,
            "SMSGW_ACCOUNTS": json.dumps([self.account()]),
            "SMSGW_DEFAULT_ACCOUNT": ACCOUNT,
        }

    def environment(self) -> dict[str, str]:
        """The whole environment of a worker process (ours, minus other SMSGW_* values)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
        return {**base, **self.variables(), "PYTHONUNBUFFERED": "1"}

    def settings(self) -> Settings:
        """The same configuration as :class:`Settings`, for the producer in this process."""
        return Settings(
            broker_url=self.redis.url(0),
            result_backend_url=self.redis.url(1),
            state_redis_url=self.redis.url(2),
            secret_key=self.secret_key,
            accounts=[self.account()],
            default_account=ACCOUNT,
        )


def _smsgw_worker_options() -> str | None:
    """The help text of ``smsgw worker`` when that command exists, else ``None``."""
    found = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return found.stdout if found.returncode == 0 else None


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker process of the product.

    Attributes:
        lanes: Queues it consumes.
        pool: Celery pool (``threads``, ``prefork``, ...).
        concurrency: Threads (or children) in the pool.
        use_smsgw: Start it with ``smsgw worker --lanes`` instead of ``celery worker``.
        loglevel: Worker log level.
    """

    lanes: Sequence[str]
    pool: str = "threads"
    concurrency: int = 16
    use_smsgw: bool = False
    loglevel: str = "WARNING"

    def command(self, node: str) -> list[str]:
        """The command line of a worker called ``node``."""
        lanes = ",".join(self.lanes)
        if self.use_smsgw:
            return [
                sys.executable, "-m", "worker.cli", "worker", "--lanes", lanes,
                "-c", str(self.concurrency), "-l", self.loglevel.lower(), "-n", f"{node}@%h",
            ]  # fmt: skip
        return [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "-Q", lanes, "--pool", self.pool, "-c", str(self.concurrency),
            "-E", "--without-gossip", "--without-mingle",
            "-n", f"{node}@%h", "-l", self.loglevel,
        ]  # fmt: skip


def smsgw_worker_available() -> bool:
    """Whether ``smsgw worker --lanes`` exists in this checkout."""
    help_text = _smsgw_worker_options()
    return help_text is not None and "--lanes" in help_text


class WorkerProcess:
    """A process (and its children) started in a new session, so its group can be stopped.

    Args:
        name: A short name (logs, node name).
        command: The command line.
        env: Its environment.
        log_dir: Where ``<name>.log`` goes.
    """

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start it (output goes to its log file)."""
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The main process id."""
        if self.process is None:
            raise RuntimeError(f"worker {self.name} was not started")
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident set of the main process plus its children, in MiB (from ``/proc``)."""
        return sum(_rss_kib(pid) for pid in [self.pid, *_children(self.pid)]) / 1024

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the main process and its live children used so far."""
        return sum(_cpu_s(pid) for pid in [self.pid, *_children(self.pid)])

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its group: Celery's warm shutdown); see :meth:`stop`."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM to its process group (warm shutdown), SIGKILL if it outlasts the timeout."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=_STOP_TIMEOUT_S)
        if process is not None:
            # Children (prefork) may outlive their parent briefly; the group goes too.
            _signal_group(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log (for error messages)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.exists():
        return found
    for task in tasks.iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found + [grandchild for child in found for grandchild in _children(child)]


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: the whole machine (busy) and this process with its descendants."""

    at: float
    machine_busy_s: float
    ours_s: float


def cpu_sample() -> CpuSample:
    """Now: machine busy time from ``/proc/stat`` and ours (harness, Redis, sandbox, workers).

    Descendants that exit between two samples drop out of ``ours``: compare samples taken
    while the same processes run.
    """
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    busy_s = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    ours = sum(_cpu_s(pid) for pid in [me, *_children(me)])
    return CpuSample(time.monotonic(), busy_s, ours)


def cores_used(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Cores busy between two samples: ours, and everyone else's (other jobs on the machine)."""
    span = max(after.at - before.at, 1e-9)
    ours = (after.ours_s - before.ours_s) / span
    machine = (after.machine_busy_s - before.machine_busy_s) / span
    return {"ours": round(ours, 2), "others": round(max(machine - ours, 0.0), 2)}


def py_spy() -> str | None:
    """The ``py-spy`` binary next to this interpreter or on PATH, if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")
