"""``smsgw send``, ``status``, ``worker`` and ``keys``: the CLI against a real worker.

A private Redis, the session's sandbox and one ``smsgw worker --lanes otp,default``
subprocess; every pipeline command runs as its own process with only ``SMSGW_*`` variables,
as an operator would run it. Nothing consumes the ``bulk`` lane here, so a bulk job stays
queued: that is how the in-flight answers are tested without timing games.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from cryptography.fernet import Fernet

from config.settings import Settings
from gateways.sandbox import Faults, SandboxServer
from worker.app import create_app
from worker.cli import (
    EXIT_INVALID,
    EXIT_NOT_SENT,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNKNOWN_JOB,
    main,
)
from worker.crypto import generate_key
from worker.redis_server import RedisServer
from worker.stack import DEFAULT_SANDBOX_ACCOUNT, sandbox_gateway_accounts

CODE = "58213947"  # distinctive: found anywhere it must not be, it cannot be a coincidence
NUMBER = "447079692712"
_READY_TIMEOUT_S = 60.0
_COMMAND_TIMEOUT_S = 90.0


@dataclass
class Pipeline:
    """The worker's environment, its log, and the state store."""

    env: dict[str, str]
    cwd: Path
    log: Path
    state: redis.Redis

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``smsgw ARGS`` as its own process against the pipeline."""
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=self.env,
            cwd=self.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )


@pytest.fixture(scope="module")
def pipeline(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """A private Redis and one worker for the otp and default lanes."""
    home = tmp_path_factory.mktemp("cli-pipeline")
    with RedisServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
        env.update(
            SMSGW_BROKER_URL=server.url(0),
            SMSGW_RESULT_BACKEND_URL=server.url(1),
            SMSGW_STATE_REDIS_URL=server.url(2),
            SMSGW_SECRET_KEY=generate_key(),
            SMSGW_ACCOUNTS=json.dumps(sandbox_gateway_accounts(sandbox_server.url)),
            SMSGW_DEFAULT_ACCOUNT=DEFAULT_SANDBOX_ACCOUNT,
            SMSGW_RETRY_BASE_S="0.2",
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
        )
        log = home / "worker.log"
        argv = [sys.executable, "-m", "worker.cli", "worker", "--lanes", "otp,default", "-c", "4"]
        with log.open("wb") as handle:
            worker = subprocess.Popen(
                argv, env=env, cwd=home, stdout=handle, stderr=subprocess.STDOUT
            )
        app = create_app(
            Settings(broker_url=server.url(0), result_backend_url=server.url(1))  # type: ignore[arg-type]
        )
        state = redis.Redis.from_url(server.url(2), decode_responses=True)
        try:
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while not app.control.ping(timeout=0.5):
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"worker not ready:\n{log.read_text()}"
            yield Pipeline(env=env, cwd=home, log=log, state=state)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            app.close()
            state.close()


@pytest.fixture
def inbox(sandbox: SandboxServer) -> SandboxServer:
    """The sandbox, emptied for this test."""
    return sandbox


def _assert_no_code(*texts: str) -> None:
    for text in texts:
        assert CODE not in text


def test_send_wait_delivers_a_code_and_status_shows_the_result(
    pipeline: Pipeline, inbox: SandboxServer
) -> None:
    # Given a code typed on stdin, so it is neither in argv nor in the shell history
    sent = pipeline.run(
        "send", NUMBER, "--message", "Your login code is {code}", "--code", "-", "--wait",
        stdin=CODE + "\n",
    )  # fmt: skip
    # Then it is sent on the otp lane and the table names the recipient in E.164
    assert sent.returncode == EXIT_OK, sent.stdout + sent.stderr
    assert "+447079692712" in sent.stdout
    assert "sent" in sent.stdout and "lane otp" in sent.stdout
    # And the provider received the code, once
    received = inbox.state.messages(to=NUMBER)
    assert [m.text for m in received] == [f"Your login code is {CODE}"]
    # When the operator asks for the finished job
    job_id = re.search(r"job ([0-9a-f]{32})", sent.stdout + sent.stderr)
    assert job_id is not None
    table = pipeline.run("status", job_id.group(1))
    as_json = pipeline.run("status", job_id.group(1), "--json")
    # Then both forms show the final result, and no output holds the code
    assert table.returncode == EXIT_OK and "finished" in table.stdout
    payload = json.loads(as_json.stdout)
    assert payload["state"] == "finished"
    assert payload["result"]["success"] is True
    assert payload["result"]["recipients"][0]["provider_message_ids"]
    assert payload["result"]["message"]["access_code"] == "**********"
    _assert_no_code(
        sent.stdout, sent.stderr, table.stdout, table.stderr, as_json.stdout, as_json.stderr
    )
    # And neither does the worker's log
    _assert_no_code(pipeline.log.read_text(errors="replace"))


def test_send_wait_with_an_invalid_number_fails_that_recipient_only(
    pipeline: Pipeline, inbox: SandboxServer
) -> None:
    sent = pipeline.run(
        "send", "447911123456", "12345", "--message", "Your password was reset",
        "--wait", "--json",
    )  # fmt: skip
    # The refused number is named before enqueueing, the job still goes, exit 1
    assert sent.returncode == EXIT_NOT_SENT, sent.stdout + sent.stderr
    assert "not sending to '12345': too short" in sent.stderr
    result = json.loads(sent.stdout)["result"]
    statuses = {r["phone_number"]: r["status"] for r in result["recipients"]}
    assert statuses["+447911123456"] == "sent"
    assert sorted(statuses.values()) == ["failed_permanent", "sent"]
    assert result["success"] is False
    assert len(inbox.state.messages(to="447911123456")) == 1


def test_a_transient_fault_is_retried_and_reported_with_its_attempts(
    pipeline: Pipeline, inbox: SandboxServer
) -> None:
    inbox.state.set_faults("vonage", faults=Faults(error_next=1))
    sent = pipeline.run("send", "447911123457", "--message", "Reset approved", "--wait", "--json")
    assert sent.returncode == EXIT_OK, sent.stdout + sent.stderr
    recipient = json.loads(sent.stdout)["result"]["recipients"][0]
    assert (recipient["status"], recipient["attempts"]) == ("sent", 2)
    assert len(inbox.state.messages(to="447911123457")) == 1


def test_send_refuses_a_message_nobody_can_receive_and_enqueues_nothing(
    pipeline: Pipeline,
) -> None:
    before = set(pipeline.state.scan_iter("sms:job:*"))
    all_bad = pipeline.run("send", "12345", "--message", "hello")
    no_code = pipeline.run("send", NUMBER, "--message", "Your code is {code}")
    assert all_bad.returncode == EXIT_INVALID
    assert "too short" in all_bad.stderr and "nothing enqueued" in all_bad.stderr
    assert no_code.returncode == EXIT_INVALID
    assert "placeholder but no code" in no_code.stderr
    assert set(pipeline.state.scan_iter("sms:job:*")) == before


def test_a_queued_job_shows_its_live_state_and_wait_times_out(pipeline: Pipeline) -> None:
    # Given a job on the bulk lane, which no worker consumes here
    sent = pipeline.run(
        "send", NUMBER, "447911123456", "--message", "Code {code}", "--code", "-",
        "--lane", "bulk", "--json", stdin=CODE,
    )  # fmt: skip
    assert sent.returncode == EXIT_OK, sent.stderr
    queued = json.loads(sent.stdout)
    assert queued["lane"] == "bulk"
    assert queued["recipients"] == ["+447079692712", "+447911123456"]
    # When its status is asked
    live = pipeline.run("status", queued["job_id"], "--json")
    table = pipeline.run("status", queued["job_id"])
    # Then it is in flight: stored job, recipients queued, exit code "pending"
    assert live.returncode == EXIT_PENDING, live.stderr
    payload = json.loads(live.stdout)
    assert payload["state"] == "in_flight"
    assert payload["lane"] == "bulk"
    assert [r["status"] for r in payload["recipients"]] == ["queued", "queued"]
    assert payload["message"]["access_code"] == "**********"
    assert table.returncode == EXIT_PENDING and "in flight" in table.stdout
    # And waiting on it gives up with the same code
    waited = pipeline.run(
        "send", NUMBER, "--message", "hi", "--lane", "bulk", "--wait", "--timeout", "1", "--json"
    )
    assert waited.returncode == EXIT_PENDING
    assert json.loads(waited.stdout)["state"] == "pending"
    _assert_no_code(sent.stdout, sent.stderr, live.stdout, table.stdout)


def test_the_live_status_reads_national_numbers_with_a_stored_stores_region(
    pipeline: Pipeline,
) -> None:
    # Given a stored identity store for British numbers and its job queued on the bulk lane
    store = pipeline.run("stores", "create", "uk-helpdesk", "--region", "GB")
    assert store.returncode == EXIT_OK, store.stderr
    sent = pipeline.run(
        "send", "07400 123456", "--store", "uk-helpdesk", "--message", "hi", "--lane", "bulk",
        "--json",
    )  # fmt: skip
    assert sent.returncode == EXIT_OK, sent.stderr
    # When its live status is asked
    live = pipeline.run("status", json.loads(sent.stdout)["job_id"], "--json")
    # Then the national number is shown as the worker will read it
    assert live.returncode == EXIT_PENDING, live.stderr
    recipients = json.loads(live.stdout)["recipients"]
    assert [r["phone_number"] for r in recipients] == ["+447400123456"]


def test_status_of_an_unknown_job_says_so_with_its_own_exit_code(pipeline: Pipeline) -> None:
    unknown = "0" * 32
    table = pipeline.run("status", unknown)
    as_json = pipeline.run("status", unknown, "--json")
    assert table.returncode == EXIT_UNKNOWN_JOB
    assert f"no job {unknown}" in table.stderr
    assert as_json.returncode == EXIT_UNKNOWN_JOB
    assert json.loads(as_json.stdout)["state"] == "unknown"


def test_status_refuses_something_that_is_not_a_job_id() -> None:
    result = CliRunner().invoke(main, ["status", "not-a-job"])
    assert result.exit_code == 2
    assert "32 hexadecimal characters" in result.output


def test_worker_with_an_unknown_lane_is_a_usage_error_naming_the_lanes() -> None:
    result = CliRunner().invoke(main, ["worker", "--lanes", "otp,nope"])
    assert result.exit_code == 2
    assert "unknown lane(s) nope; the lanes are otp, default, bulk" in result.output


def test_send_takes_an_account_or_a_store_not_both() -> None:
    args = ["send", NUMBER, "-m", "hi", "--account", "a", "--store", "s"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "not both" in result.output


def test_keys_generate_prints_a_fernet_key_and_how_to_use_it() -> None:
    result = CliRunner().invoke(main, ["keys", "generate"])
    assert result.exit_code == EXIT_OK
    key = result.stdout.strip()
    Fernet(key.encode())  # raises unless it is a valid key
    assert "SMSGW_SECRET_KEY" in result.stderr
    assert key not in result.stderr


def test_stored_accounts_and_stores_serve_the_running_worker(
    pipeline: Pipeline, inbox: SandboxServer
) -> None:
    # Given an account and an identity store made with the CLI, while the worker runs
    vonage = next(a for a in sandbox_gateway_accounts(inbox.url) if a["gateway"] == "vonage")
    created = pipeline.run(
        "accounts", "create", "tenant-vonage", "--gateway", "vonage", "--url", inbox.url,
        "--user-id", vonage["user_id"], "--sender", "Tenant", "--password-stdin",
        stdin=vonage["password"] + "\n",
    )  # fmt: skip
    assert created.returncode == EXIT_OK, created.stderr
    store = pipeline.run(
        "stores", "create", "tenant", "--account", "tenant-vonage", "--region", "GB"
    )
    assert store.returncode == EXIT_OK, store.stderr
    listed = pipeline.run("accounts", "list", "--json")
    sources = {row["name"]: row["source"] for row in json.loads(listed.stdout)}
    assert sources["tenant-vonage"] == "stored"
    assert sources[DEFAULT_SANDBOX_ACCOUNT] == "environment"
    # When a job for the store gives a national number
    sent = pipeline.run(
        "send", "07400 123456", "--store", "tenant", "--message", "Reset done", "--wait", "--json"
    )
    # Then the store's region read it, and the stored account sent it
    assert sent.returncode == EXIT_OK, sent.stdout + sent.stderr
    result = json.loads(sent.stdout)["result"]
    assert result["account"] == "tenant-vonage"
    assert result["recipients"][0]["phone_number"] == "+447400123456"
    assert [m.sender for m in inbox.state.messages(to="447400123456")] == ["Tenant"]
    assert vonage["password"] not in created.stdout + created.stderr + listed.stdout
