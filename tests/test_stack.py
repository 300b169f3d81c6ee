"""The local stack: ``smsgw demo`` and ``smsgw dev`` as a user runs them, end to end.

Both run as subprocesses in a scratch directory with the configured Redis URLs pointing at
a port where nothing listens, as on a fresh machine: the stack must start its own Redis.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config.settings import Settings
from gateways.models import GatewayAccount
from gateways.registry import load_gateway
from worker.cli import EXIT_OK
from worker.redis_server import free_port, redis_answers
from worker.stack import (
    DEFAULT_SANDBOX_ACCOUNT,
    celery_worker_argv,
    lane_groups,
    sandbox_gateway_accounts,
)

DEMO_CODE = "90417263"
_STACK_TIMEOUT_S = 240.0


def _fresh_machine_env() -> dict[str, str]:
    """No SMSGW_* from the developer, and Redis URLs where nothing answers."""
    dead = f"redis://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSGW_", "FLOWER_"))}
    env.update(
        SMSGW_BROKER_URL=f"{dead}/0",
        SMSGW_RESULT_BACKEND_URL=f"{dead}/1",
        SMSGW_STATE_REDIS_URL=f"{dead}/2",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.timeout(300)
def test_demo_runs_every_scenario_on_its_own_redis_and_prints_no_code(tmp_path: Path) -> None:
    env = {**_fresh_machine_env(), "SMSGW_DEMO_CODE": DEMO_CODE}
    began = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=_STACK_TIMEOUT_S,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == EXIT_OK, output
    # The results table: each scenario, the invalid recipient refused, the fault retried
    for scenario in ("login code", "long UCS-2 text", "invalid recipient", "transient fault"):
        assert scenario in completed.stdout
    assert "Results" in completed.stdout and "failed_permanent" in completed.stdout
    assert "too short" in completed.stdout
    # The inbox: the code's message with the code masked, the UCS-2 pieces
    assert "Sandbox inbox" in completed.stdout
    assert "Your login code is ••••••" in completed.stdout
    assert "UCS-2" in completed.stdout
    assert "demo passed" in completed.stdout
    # The code is nowhere in the output, nor in any log the stack wrote
    assert DEMO_CODE not in output
    logs = sorted((tmp_path / ".smsgw" / "logs").glob("demo-*.log"))
    assert {log.name for log in logs} >= {"demo-worker-otp-default.log", "demo-worker-bulk.log"}
    for log in logs:
        assert DEMO_CODE not in log.read_text(errors="replace"), log.name
    # It left nothing running and no key file behind (a private, throwaway stack)
    assert not (tmp_path / ".smsgw" / "secret.key").exists()
    print(f"demo wall time: {time.monotonic() - began:.1f} s")


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, raw = line.partition("=")
            values[name] = shlex.split(raw)[0]
    return values


@pytest.mark.timeout(300)
def test_dev_serves_until_sigterm_then_stops_everything(tmp_path: Path) -> None:
    env = _fresh_machine_env()
    command = [
        sys.executable, "-m", "worker.cli", "dev",
        "--sandbox-port", "0", "--flower-port", "0", "-c", "2",
    ]  # fmt: skip
    output = tmp_path / "dev.out"
    with output.open("wb") as handle:
        dev = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=handle, stderr=handle)
    env_file = tmp_path / ".smsgw" / "dev.env"
    try:
        deadline = time.monotonic() + _STACK_TIMEOUT_S
        while not env_file.exists() or "Press Ctrl-C" not in output.read_text():
            assert dev.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        printed = output.read_text()
        # The summary: an embedded Redis (AOF on, under .smsgw), the URLs, Flower's password
        assert "embedded, AOF on" in printed
        password = re.search(r"user admin, password (\S+)", printed)
        flower = re.search(r"(http://127\.0\.0\.1:\d+)\s+user admin", printed)
        assert password and flower, printed
        stack_env = _read_env_file(env_file)
        assert redis_answers(stack_env["SMSGW_STATE_REDIS_URL"])
        assert stack_env["SMSGW_DEFAULT_ACCOUNT"] == DEFAULT_SANDBOX_ACCOUNT
        assert "SMSGW_SECRET_KEY" not in stack_env
        assert (tmp_path / ".smsgw" / "redis" / "redis.log").exists()
        # Flower answers with the printed credentials
        token = base64.b64encode(f"admin:{password.group(1)}".encode()).decode()
        request = urllib.request.Request(
            f"{flower.group(1)}/api/workers?refresh=1", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            workers = json.loads(reply.read())
        assert {name.partition("@")[0] for name in workers} >= {"otp-default", "bulk"}
        # A shell that loads dev.env in the same directory sends through the stack
        sent = subprocess.run(
            [sys.executable, "-m", "worker.cli", "send", "447079692712", "-m", "hi", "--wait"],
            cwd=tmp_path,
            env={**env, **stack_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sent.returncode == EXIT_OK, sent.stdout + sent.stderr
        assert "sandbox-vonage" in sent.stdout
        # When SIGTERM arrives (as from a service manager or `timeout`)
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=120) == EXIT_OK, output.read_text()
    finally:
        if dev.poll() is None:
            # SIGTERM first even when the test failed: the stack stops what it started
            # (SIGKILL would orphan its workers, Flower and Redis).
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()
    # Then everything it started is gone, and so is the env file
    assert "stopped." in output.read_text()
    assert not env_file.exists()
    assert not redis_answers(stack_env["SMSGW_STATE_REDIS_URL"])


def test_every_seeded_sandbox_account_is_a_valid_account_of_its_gateway() -> None:
    accounts = sandbox_gateway_accounts("http://127.0.0.1:8025")
    assert DEFAULT_SANDBOX_ACCOUNT in {a["name"] for a in accounts}
    for raw in accounts:
        account = GatewayAccount.model_validate(raw)
        load_gateway(account.gateway).check_account(account)  # raises when incomplete


def test_workers_run_per_lane_group_with_the_threads_pool(settings: Settings) -> None:
    groups = lane_groups(settings)
    assert groups == (("otp", "default"), ("bulk",))
    argv = celery_worker_argv(groups[0], concurrency=8, loglevel="info")
    joined = " ".join(argv)
    assert "-A worker.app worker -Q otp,default --pool threads --concurrency 8" in joined
    assert "--without-gossip --without-mingle -E -n otp-default@%h" in joined
