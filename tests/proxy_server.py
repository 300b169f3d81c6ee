"""A real HTTP proxy for tests: proxy.py in a subprocess, with basic auth, on a free port.

The proxy writes an access-log line per client connection (``POST 127.0.0.1:PORT/path -
201 Created``) when the connection closes; :meth:`ProxyServer.wait_for_log` waits for one,
which is how tests prove a request went through the proxy and not around it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["ProxyServer", "free_port"]

_START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyServer:
    """proxy.py on 127.0.0.1 with ``--basic-auth``; a context manager.

    Args:
        workdir: Where the port file, the log and proxy.py's data directory go.
        username: The proxy user.
        password: The proxy password.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, username: str = "user", password: str = "pass") -> None:
        self.workdir = workdir
        self.username = username
        self.password = password
        self.port = 0
        self.log_path = workdir / "proxy.log"
        self._port_file = workdir / "proxy.port"
        self._output_path = workdir / "proxy.out"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyServer:
        """Start the proxy and return once it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_file.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "proxy",
            "--hostname", self.host,
            "--port", "0",  # the OS picks a free port; proxy.py writes it to --port-file
            "--port-file", str(self._port_file),
            "--basic-auth", f"{self.username}:{self.password}",
            # One acceptor and one worker start fast and keep the log in one process.
            "--num-acceptors", "1",
            "--num-workers", "1",
            "--log-level", "INFO",  # INFO carries the access log
            "--log-file", str(self.log_path),
            "--data-dir", str(self.workdir / "data"),
        ]  # fmt: skip
        with self._output_path.open("wb") as output:
            self._process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"proxy.py exited at start:\n{self.output()}")
            text = self._port_file.read_text().strip() if self._port_file.exists() else ""
            if text.isdigit():
                self.port = int(text)
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"proxy.py did not start in {_START_TIMEOUT_S} s:\n{self.output()}")

    def stop(self) -> None:
        """Stop the proxy process (the one this object started) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def output(self) -> str:
        """What the process printed (startup errors end up here)."""
        return self._output_path.read_text(errors="replace") if self._output_path.exists() else ""

    def log(self) -> str:
        """The proxy's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        """The log's length now, to look only at what comes after."""
        return len(self.log())

    def wait_for_log(self, needle: str, *, after: int = 0, timeout_s: float = 5.0) -> str:
        """The first log line after offset ``after`` containing ``needle``.

        Raises:
            AssertionError: No such line appeared within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.log()[after:].splitlines():
                if needle in line:
                    return line
            if time.monotonic() >= deadline:
                recent = self.log()[after:]
                raise AssertionError(f"no log line with {needle!r} in {timeout_s} s:\n{recent}")
            time.sleep(0.05)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
