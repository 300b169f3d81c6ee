"""Shared pieces of the benchmarks: result file, free ports, a sandbox subprocess."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.redis_server import free_port

RESULTS = Path(__file__).parent / "results" / "latest.json"


def record(figures: dict[str, Any]) -> dict[str, Any]:
    """Merge ``figures`` into ``benchmarks/results/latest.json`` and return the whole file."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(figures)
    current["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


@contextmanager
def sandbox_process(*extra: str) -> Iterator[str]:
    """Run ``smsgw sandbox`` in its own process; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "worker.cli", "sandbox", "--port", str(port), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None:
                    raise RuntimeError("the sandbox exited before it answered") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
