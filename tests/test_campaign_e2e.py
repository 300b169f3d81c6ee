"""Campaigns end to end: ``smsgw campaign`` processes, a real ``celery worker``, the sandbox.

One worker (threads pool, every lane) serves the module, against a private Redis; the
account's own rate is far above anything here, so the sandbox and the worker set the pace.
Commands run as their own processes with only ``SMSGW_*`` variables, as an operator runs
them. Every test checks the sandbox's inbox: each recipient gets its message exactly once
(a recipient recorded ``unknown`` at most once), and the report accounts for everyone.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import Settings
from gateways.sandbox import Faults, SandboxServer
from tests.celery_harness import (
    BROKER_DB,
    MAIN_ACCOUNT,
    MAIN_KEY,
    MAIN_PASSWORD,
    RESULT_DB,
    STATE_DB,
    WorkerProcess,
    env_for,
    sandbox_accounts,
    stack_values,
    wait_for,
)
from tests.harness import database_text
from worker.app import create_app
from worker.campaign_enqueue import CampaignEnqueuer
from worker.campaign_file import RowChecker, Template
from worker.campaigns import CampaignStore
from worker.crypto import generate_key, load_cipher
from worker.redis_server import RedisServer

TEMPLATE = "Hello {name}, reset your password at {link} with the temporary code {code}"
_COMMAND_TIMEOUT_S = 120.0


def code_of(index: int) -> str:
    return f"Tz!{index:05d}w"  # no id, token or base64 holds a '!': found anywhere, it leaked


def number_of(index: int) -> str:
    return f"+4474005{index:05d}"


def text_of(index: int) -> str:
    return (
        f"Hello User{index}, reset your password at https://id.example/r/{index} "
        f"with the temporary code {code_of(index)}"
    )


@dataclass
class Stack:
    """The worker, its environment, and the stores the tests read."""

    env: dict[str, str]
    cwd: Path
    worker: WorkerProcess
    sandbox: SandboxServer
    redis_server: RedisServer
    settings: Settings

    def smsgw(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``smsgw ARGS`` as its own process (``env``: extra variables)."""
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )

    def db(self, number: int) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url(number), decode_responses=True)

    def campaigns(self) -> CampaignStore:
        return CampaignStore(self.db(STATE_DB), ttl_s=self.settings.job_ttl_s)

    def summary(self, campaign_id: str) -> dict[str, Any]:
        return self.campaigns().require(campaign_id).summary()

    def inbox(self) -> Counter[str]:
        """Messages the sandbox accepted, by recipient (E.164)."""
        return Counter("+" + m.to for m in self.sandbox.state.messages(provider="vonage"))

    def start(self, path: Path, *extra: str) -> str:
        done = self.smsgw("campaign", "start", str(path), "--template", TEMPLATE, *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def wait_finished(self, campaign_id: str, timeout_s: float = 90) -> dict[str, Any]:
        wait_for(
            lambda: self.summary(campaign_id)["remaining"] == 0,
            timeout_s=timeout_s,
            interval_s=0.2,
            what=f"campaign {campaign_id} to finish",
        )
        return self.summary(campaign_id)

    def report(self, campaign_id: str, path: Path) -> list[dict[str, str]]:
        done = self.smsgw("campaign", "report", campaign_id, "--csv", str(path))
        assert done.returncode == 0, done.stderr
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def sandbox_idle(self) -> None:
        """Wait until every provider call in flight has been answered."""

        def idle() -> bool:
            for row in self.sandbox.state.stats():
                if row["account"] == MAIN_ACCOUNT:
                    return bool(row["requests"] == row["accepted"] + row["faults"])
            return True

        wait_for(idle, timeout_s=15, what="the sandbox to answer every call")


@pytest.fixture(scope="module")
def stack(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("campaigns")
    with RedisServer() as server:
        values = stack_values(server, sandbox_server.url, generate_key())
        values["accounts"][0]["rate_per_s"] = 100_000  # the worker's limit never binds here
        values["campaign_pause_poll_s"] = 0.5
        env = env_for(values)
        worker = WorkerProcess(env=env, cwd=workdir, log_path=workdir / "worker.log")
        worker.start()
        try:
            yield Stack(env, workdir, worker, sandbox_server, server, Settings(**values))
        finally:
            worker.stop()


@pytest.fixture
def e2e(stack: Stack, sandbox: SandboxServer) -> Iterator[Stack]:
    """The stack with a clean sandbox (plus its accounts) and empty databases."""
    if not stack.worker.running:
        stack.worker.start()
    sandbox.state.set_accounts(sandbox_accounts())
    for number in (BROKER_DB, RESULT_DB, STATE_DB):
        stack.db(number).flushdb()
    yield stack
    stack.sandbox.state.clear_faults()


def recipients_file(path: Path, count: int, *, extra: list[list[str]] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "link", "code"])
        for index in range(count):
            writer.writerow(
                [number_of(index), f"User{index}", f"https://id.example/r/{index}", code_of(index)]
            )
        writer.writerows(extra or [])
    return path


def test_a_5000_recipient_campaign_from_file_to_report(e2e: Stack, tmp_path: Path) -> None:
    # Given a file of 5,000 recipients, one repeated and two invalid rows
    extra = [
        [number_of(17), "Again", "https://id.example/r/again", code_of(99_999)],
        ["12", "Short", "https://id.example/r/short", "1"],
        [number_of(5_001), "NoLink", "", "2"],
    ]
    path = recipients_file(tmp_path / "reset.csv", 5_000, extra=extra)
    # When started from the command line
    started = e2e.smsgw("campaign", "start", str(path), "--template", TEMPLATE)
    assert started.returncode == 0, started.stderr
    campaign_id = started.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", campaign_id)
    # Then the preview and the refused rows were printed first, masked
    assert "line 5003 (**): phone number: too short" in started.stderr
    assert "line 5004 (+44******5001): {link}: the column 'link' is empty" in started.stderr
    assert re.search(r"5,003\s+│\s+2\s+│\s+1\s+│\s+5,000", started.stdout), started.stdout
    # And every recipient gets its own text exactly once
    summary = e2e.wait_finished(campaign_id)
    assert summary["state"] == "finished"
    assert summary["sent"] == 5_000 and summary["done"] == 5_000
    e2e.sandbox_idle()
    inbox = e2e.inbox()
    assert inbox == Counter({number_of(i): 1 for i in range(5_000)})
    texts = {("+" + m.to, m.text) for m in e2e.sandbox.state.messages(provider="vonage")}
    assert (number_of(17), text_of(17)) in texts
    # And the report has one row per recipient and per refused row, never a code
    rows = e2e.report(campaign_id, tmp_path / "report.csv")
    sent = [r for r in rows if r["status"] == "sent"]
    assert len(sent) == 5_000 and len(rows) == 5_002
    assert {r["phone_number"] for r in sent} == {number_of(i) for i in range(5_000)}
    assert all(r["provider_message_ids"] and r["segments"] == "1" for r in sent)
    assert [(r["line"], r["status"]) for r in rows if r["status"] != "sent"] == [
        ("5003", "invalid"),
        ("5004", "invalid"),
    ]
    report_text = (tmp_path / "report.csv").read_text()
    assert "!" not in report_text  # every code holds a '!'
    # And status and list agree
    status = e2e.smsgw("campaign", "status", campaign_id, "--json")
    assert json.loads(status.stdout)["sent"] == 5_000
    listed = json.loads(e2e.smsgw("campaign", "list", "--json").stdout)
    assert [c["id"] for c in listed] == [campaign_id]
    watched = e2e.smsgw("campaign", "watch", campaign_id)
    assert watched.returncode == 0 and "finished" in watched.stdout
    assert re.search(r"5,000\s+│\s+5,000\s+│\s+0", watched.stdout), watched.stdout
    # And starting the same file again sends nothing more
    again = e2e.smsgw("campaign", "start", str(path), "--template", TEMPLATE)
    assert again.returncode == 0 and "already started" in again.stderr
    assert again.stdout.strip() == campaign_id
    time.sleep(0.5)
    assert sum(e2e.inbox().values()) == 5_000


def test_pause_stops_new_sends_and_resume_finishes_the_rest(e2e: Stack, tmp_path: Path) -> None:
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(latency_ms=30))
    path = recipients_file(tmp_path / "pause.csv", 3_000)
    campaign_id = e2e.start(path)
    wait_for(lambda: sum(e2e.inbox().values()) >= 100, timeout_s=30, what="sends to begin")
    # When paused
    paused = e2e.smsgw("campaign", "pause", campaign_id)
    assert paused.returncode == 0, paused.stderr
    # Then the sends in flight finish, and no new one starts
    e2e.sandbox_idle()
    time.sleep(0.5)
    e2e.sandbox_idle()
    during = sum(e2e.inbox().values())
    time.sleep(2.0)
    assert sum(e2e.inbox().values()) == during
    summary = e2e.summary(campaign_id)
    assert summary["state"] == "paused" and 100 <= summary["sent"] < 3_000
    # When resumed, the rest go, each recipient once
    assert e2e.smsgw("campaign", "resume", campaign_id).returncode == 0
    summary = e2e.wait_finished(campaign_id)
    assert summary["state"] == "finished" and summary["sent"] == 3_000
    e2e.sandbox_idle()
    assert e2e.inbox() == Counter({number_of(i): 1 for i in range(3_000)})


def test_cancel_ends_queued_recipients_cancelled_and_sends_none_after(
    e2e: Stack, tmp_path: Path
) -> None:
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(latency_ms=30))
    path = recipients_file(tmp_path / "cancel.csv", 3_000)
    campaign_id = e2e.start(path)
    wait_for(lambda: sum(e2e.inbox().values()) >= 100, timeout_s=30, what="sends to begin")
    # When cancelled
    cancelled = e2e.smsgw("campaign", "cancel", campaign_id, "--json")
    assert json.loads(cancelled.stdout) == {"id": campaign_id, "state": "cancelled"}
    # Then every recipient ends sent (before the cancel) or cancelled, never sent after
    summary = e2e.wait_finished(campaign_id)
    e2e.sandbox_idle()
    assert summary["state"] == "cancelled"
    assert summary["sent"] + summary["cancelled"] == 3_000
    assert summary["cancelled"] > 0
    inbox = e2e.inbox()
    assert sum(inbox.values()) == summary["sent"] and max(inbox.values()) == 1
    rows = e2e.report(campaign_id, tmp_path / "report.csv")
    by_status = Counter(r["status"] for r in rows)
    assert by_status == Counter({"sent": summary["sent"], "cancelled": summary["cancelled"]})
    assert {r["phone_number"] for r in rows if r["status"] == "sent"} == set(inbox)
    time.sleep(1.0)
    assert sum(e2e.inbox().values()) == summary["sent"]
    # And a cancelled campaign cannot be resumed
    refused = e2e.smsgw("campaign", "resume", campaign_id)
    assert refused.returncode == 1 and "it is cancelled" in refused.stderr


def test_a_cancel_stops_sends_waiting_on_the_campaign_rate(e2e: Stack, tmp_path: Path) -> None:
    # Given a campaign paced at 20/s: its batches wait on the limiter
    path = recipients_file(tmp_path / "paced.csv", 400)
    campaign_id = e2e.start(path, "--rate", "20")
    wait_for(lambda: sum(e2e.inbox().values()) >= 20, timeout_s=30, what="sends to begin")
    # When cancelled
    assert e2e.smsgw("campaign", "cancel", campaign_id).returncode == 0
    cancelled_at = time.time()
    # Then nothing reaches the provider after the cancel returned (a send claimed just
    # before it may land a moment later)
    summary = e2e.wait_finished(campaign_id)
    e2e.sandbox_idle()
    late = [
        m for m in e2e.sandbox.state.messages(provider="vonage") if m.received_at > cancelled_at
    ]
    assert len(late) <= 1, [m.received_at - cancelled_at for m in late]
    assert summary["state"] == "cancelled" and summary["cancelled"] >= 300
    assert summary["sent"] + summary["cancelled"] == 400
    assert sum(e2e.inbox().values()) == summary["sent"]


def test_a_paused_job_on_its_own_keeps_its_tries(e2e: Stack, tmp_path: Path) -> None:
    # Given a campaign job retried on its own (as after a transient failure) with 38 tries
    # used, while its campaign is paused
    store = e2e.campaigns()
    campaign, _ = store.create({"name": "alone", "template": TEMPLATE})
    app = create_app(e2e.settings)
    enqueuer = CampaignEnqueuer(store, app, e2e.settings, load_cipher(e2e.settings), checkers=0)
    checker = RowChecker(
        Template(TEMPLATE),
        max_length=160,
        max_parts=e2e.settings.max_parts,
        default_region=None,
        allowed_types=e2e.settings.allowed_number_types,
    )
    enqueuer.stage(campaign, checker, recipients_file(tmp_path / "alone.csv", 1))
    store.mark_published(campaign.id, 1)
    store.mark_enqueued(campaign.id)
    [job_id] = store.job_ids(campaign.id, 0, 1)
    store.transition(campaign.id, "pause")
    app.send_task("sms.send", args=[job_id], task_id=job_id, queue="bulk", retries=38)
    # When it stays paused for several looks (every 0.5 s), then resumes into a transient
    # failure
    time.sleep(3.0)
    e2e.sandbox.state.set_faults("vonage", MAIN_ACCOUNT, Faults(error_next=1))
    store.transition(campaign.id, "resume")
    # Then the looks while paused did not use up its tries: it is retried, and sent
    summary = e2e.wait_finished(campaign.id, timeout_s=30)
    app.close()
    assert summary["sent"] == 1, summary
    assert e2e.inbox() == Counter({number_of(0): 1})


def test_a_worker_killed_mid_campaign_sends_nobody_twice(e2e: Stack, tmp_path: Path) -> None:
    # Provider calls take 100-300 ms, so the kill lands with sends in flight
    e2e.sandbox.state.set_faults(
        "vonage", MAIN_ACCOUNT, Faults(latency_ms=100, latency_jitter_ms=200)
    )
    path = recipients_file(tmp_path / "kill.csv", 600)
    campaign_id = e2e.start(path)
    wait_for(lambda: sum(e2e.inbox().values()) >= 50, timeout_s=30, what="sends to begin")
    e2e.worker.kill()
    e2e.sandbox.state.clear_faults()
    e2e.sandbox_idle()
    at_kill = sum(e2e.inbox().values())
    assert at_kill < 600
    # Stand-in for waiting out the visibility timeout: age what the dead worker held
    broker = e2e.db(BROKER_DB)
    entries = broker.zrange("unacked_index", 0, -1, withscores=True)
    assert entries
    broker.zadd("unacked_index", {tag: score - 3_600 for tag, score in entries})
    e2e.worker.start()
    summary = e2e.wait_finished(campaign_id)
    e2e.sandbox_idle()
    inbox = e2e.inbox()
    assert summary["state"] == "finished"
    assert summary["sent"] + summary["unknown"] == 600
    rows = e2e.report(campaign_id, tmp_path / "report.csv")
    unknown = {r["phone_number"] for r in rows if r["status"] == "unknown"}
    assert len(rows) == 600 and len(unknown) == summary["unknown"]
    # Each recipient exactly once, except those recorded unknown: at most once
    for index in range(600):
        number = number_of(index)
        if number in unknown:
            assert inbox[number] <= 1
        else:
            assert inbox[number] == 1, number


def test_dry_run_strict_and_bad_templates_send_nothing(e2e: Stack, tmp_path: Path) -> None:
    path = recipients_file(tmp_path / "dry.csv", 20, extra=[["12", "X", "https://x", "1"]])
    # A dry run prints the preview and stores nothing
    dry = e2e.smsgw("campaign", "start", str(path), "--template", TEMPLATE, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["preview"]["recipients"] == 20 and preview["preview"]["invalid"] == 1
    assert preview["invalid_rows"] == [
        {"line": 22, "number": "**", "reason": "phone number: too short"}
    ]
    assert preview["campaign"]["id"] is None
    assert "!" not in dry.stdout
    # --strict refuses the whole file
    strict = e2e.smsgw("campaign", "start", str(path), "--template", TEMPLATE, "--strict")
    assert strict.returncode == 1 and "--strict: 1 invalid row(s)" in strict.stderr
    # An unknown placeholder is refused before anything is read
    unknown = e2e.smsgw("campaign", "start", str(path), "--template", "Hi {nmae} {code}")
    assert unknown.returncode == 1 and "{nmae}" in unknown.stderr
    # An unknown campaign is exit 5
    assert e2e.smsgw("campaign", "status", "0" * 32).returncode == 5
    time.sleep(0.5)
    assert e2e.inbox() == Counter()
    assert e2e.db(STATE_DB).dbsize() == 0


def test_deadline_is_checked_against_the_account_rate(e2e: Stack, tmp_path: Path) -> None:
    path = recipients_file(tmp_path / "deadline.csv", 30)
    tomorrow = datetime.fromtimestamp(time.time() + 86_400, UTC).isoformat()
    # The sandbox-backed account in this stack is limited to 100,000/s: bulk gets 80%
    started = e2e.smsgw(
        "campaign", "start", str(path), "--template", TEMPLATE, "--dry-run", "--json",
        "--deadline", tomorrow,
    )  # fmt: skip
    plan = json.loads(started.stdout)["plan"]
    assert plan["deadline_reachable"] is True
    assert plan["account_bulk_rate_per_s"] == pytest.approx(80_000)
    assert plan["rate_per_s"] < 1e-3  # paced over the window, not at the account's share
    # A deadline beyond the jobs' lifetime is refused
    too_far = e2e.smsgw(
        "campaign", "start", str(path), "-t", TEMPLATE, "--deadline", "2099-01-01T00:00:00Z"
    )
    assert too_far.returncode == 2 and "SMSGW_JOB_TTL_S" in too_far.stderr
    # So is a pace that would take longer than the jobs are kept
    too_slow = e2e.smsgw("campaign", "start", str(path), "-t", TEMPLATE, "--rate", "0.00001")
    assert too_slow.returncode == 1, too_slow.stderr
    assert "longer than its jobs are kept (SMSGW_JOB_TTL_S" in too_slow.stderr
    assert e2e.db(STATE_DB).dbsize() == 0


def test_a_file_that_stops_being_utf8_leaves_no_campaign(e2e: Stack, tmp_path: Path) -> None:
    path = recipients_file(tmp_path / "broken.csv", 1_500)
    with path.open("ab") as handle:
        handle.write(b"+447400599999,Br\xff\xfeken,https://x,1\n")
    started = e2e.smsgw("campaign", "start", str(path), "-t", TEMPLATE)
    assert started.returncode == 1 and "not UTF-8" in started.stderr
    assert json.loads(e2e.smsgw("campaign", "list", "--json").stdout) == []
    assert e2e.db(STATE_DB).dbsize() == 0
    assert e2e.inbox() == Counter()


def test_no_secret_in_redis_the_worker_log_or_cli_output(e2e: Stack, tmp_path: Path) -> None:
    path = recipients_file(tmp_path / "secrets.csv", 40)
    started = e2e.smsgw("campaign", "start", str(path), "--template", TEMPLATE, "--json")
    assert started.returncode == 0, started.stderr
    answer = json.loads(started.stdout)
    campaign_id = answer["campaign"]["id"]
    assert answer["campaign"]["enqueued"] is True and answer["preview"]["recipients"] == 40
    e2e.wait_finished(campaign_id)
    outputs = [started.stdout, started.stderr]
    for command in (("status", campaign_id, "--json"), ("status", campaign_id), ("list",)):
        done = e2e.smsgw("campaign", *command)
        outputs += [done.stdout, done.stderr]
    report = e2e.report(campaign_id, tmp_path / "report.csv")
    assert len(report) == 40
    # The codes did reach the recipients ...
    assert text_of(3) in {m.text for m in e2e.sandbox.state.messages(provider="vonage")}
    # ... and appear nowhere else: not in any Redis key or value, not in the worker's log,
    # not in any command's output
    dump = _dump(e2e)
    log = e2e.worker.log_text()
    for index in range(40):
        code = code_of(index)
        assert code not in dump, "a code is stored in Redis"
        assert code not in log, "a code is in the worker's log"
        assert all(code not in text for text in outputs), "a code was printed"
        assert number_of(index).lstrip("+") not in log, "a number in clear in the log"
    assert MAIN_PASSWORD not in dump and MAIN_PASSWORD not in log
    assert f"sms:campaign:{campaign_id}" in dump  # the scan sees the campaign


def _dump(e2e: Stack) -> str:
    """Every key and value of the three databases, kombu message bodies decoded."""
    urls = (e2e.redis_server.url(n) for n in (BROKER_DB, RESULT_DB, STATE_DB))
    return "\n".join(database_text(url) for url in urls)


def test_a_start_killed_while_storing_is_resumed_by_running_it_again(
    e2e: Stack, tmp_path: Path
) -> None:
    path = recipients_file(tmp_path / "crash.csv", 8_000)
    command = [sys.executable, "-m", "worker.cli", "campaign", "start", str(path), "-t", TEMPLATE]
    # Given a start killed (with its checker processes) after storing some chunks, before
    # publishing anything
    process = subprocess.Popen(
        command,
        env=e2e.env,
        cwd=e2e.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = e2e.campaigns()

    def some_chunks_stored() -> bool:
        found = store.all()
        return bool(found) and found[0].count("chunks") >= 2

    try:
        wait_for(some_chunks_stored, timeout_s=60, interval_s=0.01, what="chunks to be stored")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [crashed] = store.all()
    assert not crashed.staged and crashed.count("published") == 0
    assert e2e.inbox() == Counter()
    status = e2e.smsgw("campaign", "status", crashed.id)
    assert "enqueue incomplete" in status.stdout and "run the same" in status.stdout
    # When the same start runs again
    campaign_id = e2e.start(path)
    # Then it is the same campaign, and every recipient gets one message
    assert campaign_id == crashed.id
    summary = e2e.wait_finished(campaign_id)
    assert summary["recipients"] == summary["sent"] == 8_000
    assert summary["duplicates"] == 0 and summary["rows"] == 8_000
    e2e.sandbox_idle()
    assert e2e.inbox() == Counter({number_of(i): 1 for i in range(8_000)})


def test_a_stored_identity_store_gives_the_account_and_the_region(
    e2e: Stack, tmp_path: Path
) -> None:
    # Given a stored account (its own sender, 500/s, bulk gets 10%) and a British store on it
    created = e2e.smsgw(
        "accounts", "create", "tenant", "--gateway", "vonage", "--url", e2e.sandbox.url,
        "--user-id", MAIN_KEY, "--password-env", "TENANT_SECRET", "--sender", "Tenant",
        "--rate", "500", "--bulk-share", "0.1",
        TENANT_SECRET=MAIN_PASSWORD,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    store = e2e.smsgw("stores", "create", "uk-helpdesk", "--account", "tenant", "--region", "GB")
    assert store.returncode == 0, store.stderr
    # And a file of national numbers
    path = tmp_path / "national.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "link", "code"])
        for index in range(5):
            writer.writerow([f"07400 6000{index:02d}", f"U{index}", "https://x", code_of(index)])
    # When a campaign for the store is planned, then started
    planned = e2e.smsgw(
        "campaign", "start", str(path), "-t", TEMPLATE, "--store", "uk-helpdesk", "--dry-run",
        "--json",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    preview = json.loads(planned.stdout)
    # Then the store's region reads the numbers, and the stored account's bulk share paces it
    assert preview["preview"]["recipients"] == 5 and preview["preview"]["invalid"] == 0
    assert preview["plan"]["account_bulk_rate_per_s"] == pytest.approx(50)
    campaign_id = e2e.start(path, "--store", "uk-helpdesk")
    assert e2e.wait_finished(campaign_id)["sent"] == 5
    e2e.sandbox_idle()
    sent = [m for m in e2e.sandbox.state.messages(provider="vonage") if m.sender == "Tenant"]
    assert sorted("+" + m.to for m in sent) == [f"+4474006000{i:02d}" for i in range(5)]


def test_a_start_killed_while_publishing_then_cancelled_accounts_for_everyone(
    e2e: Stack, tmp_path: Path
) -> None:
    path = recipients_file(tmp_path / "publish-crash.csv", 3_000)
    command = [sys.executable, "-m", "worker.cli", "campaign", "start", str(path), "-t", TEMPLATE]
    # Given a start killed part-way through publishing (one job a task, so it takes a while)
    process = subprocess.Popen(
        command,
        env={**e2e.env, "SMSGW_BULK_BATCH_SIZE": "1"},
        cwd=e2e.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = e2e.campaigns()

    def publishing() -> bool:
        found = store.all()
        return bool(found) and found[0].count("published") >= 200

    try:
        wait_for(publishing, timeout_s=60, interval_s=0.005, what="publishing to begin")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [crashed] = store.all()
    assert not crashed.enqueued and crashed.count("published") < 3_000
    # When it is cancelled instead of started again
    assert e2e.smsgw("campaign", "cancel", crashed.id).returncode == 0
    # Then the campaign ends: every recipient sent once or cancelled, none left queued
    summary = e2e.wait_finished(crashed.id)
    assert summary["state"] == "cancelled" and summary["finished_at"]
    assert summary["sent"] + summary["cancelled"] == 3_000
    assert summary["cancelled"] >= 3_000 - crashed.count("published")
    e2e.sandbox_idle()
    inbox = e2e.inbox()
    assert sum(inbox.values()) == summary["sent"] and max(inbox.values(), default=1) == 1
    rows = e2e.report(crashed.id, tmp_path / "report.csv")
    assert len(rows) == 3_000 and "queued" not in {r["status"] for r in rows}
    assert e2e.smsgw("campaign", "watch", crashed.id).returncode == 0
