"""``smsgw demo``: the local stack, four jobs that show the pipeline, a report, teardown.

The jobs: a login code to one of the origin's example numbers; a long UCS-2 message split
into pieces; a message with an invalid recipient beside a valid one; a message whose first
provider call meets a transient fault (then succeeds on Celery's retry). Each scenario
states what must happen, so the demo doubles as a smoke test: the exit status is 0 only
when every scenario ended as expected and Flower shows no access code.

The code is random per run and never printed: the inbox is shown with it masked. Tests
set ``SMSGW_DEMO_CODE`` to know which code to look for in the output and the logs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from rich.console import Console
from rich.table import Table

from gateways.sandbox import Faults
from gateways.sandbox.state import InboxMessage
from worker.models import ShortMessage
from worker.stack import STATE_DIR, LocalStack, StackOptions

__all__ = ["DEMO_NUMBER", "Scenario", "run_demo"]

DEMO_NUMBER = "447079692712"  # an example number of the origin's documentation
_RESULT_TIMEOUT_S = 60.0
_MASK = "••••••"
_FLOWER_EVENTS_WAIT_S = 5.0

_LONG_UCS2 = (
    "Здравствуйте! Ваш пароль был сброшен службой поддержки. Если это сделали не вы, "
    "срочно свяжитесь с нами по номеру на нашем сайте. Ссылка для входа действует 24 часа. "  # noqa: RUF001
    "Спасибо, что вы с нами!"  # noqa: RUF001
)

Check = Callable[[dict[str, Any], list[InboxMessage]], list[str]]


@dataclass(slots=True)
class Scenario:
    """One demo job and what must come of it."""

    name: str
    message: ShortMessage
    lane: str
    check: Check
    account: str | None = None
    fault_provider: str | None = None
    job_id: str = ""
    result: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _recipients(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["phone_number"]: r for r in result.get("recipients", [])}


def _to(inbox: list[InboxMessage], number: str, provider: str) -> list[InboxMessage]:
    return [m for m in inbox if m.to.lstrip("+") == number.lstrip("+") and m.provider == provider]


def _scenarios(code: str, numbers: dict[str, str]) -> list[Scenario]:
    login_to, long_to, mixed_to, fault_to = (
        numbers["login"],
        numbers["long"],
        numbers["mixed"],
        numbers["fault"],
    )

    def login(result: dict[str, Any], inbox: list[InboxMessage]) -> list[str]:
        problems = []
        if not result.get("success"):
            problems.append("the job did not succeed")
        received = _to(inbox, login_to, "vonage")
        if len(received) != 1 or code not in received[0].text:
            problems.append(f"expected one message holding the code, found {len(received)}")
        return problems

    def long_text(result: dict[str, Any], inbox: list[InboxMessage]) -> list[str]:
        recipient = _recipients(result).get(long_to, {})
        received = _to(inbox, long_to, "vonage")
        problems = []
        if recipient.get("status") != "sent" or recipient.get("pieces", 0) < 2:
            problems.append("expected the text sent in several pieces")
        if len(received) != recipient.get("pieces") or any(m.encoding != "UCS-2" for m in received):
            problems.append(f"expected one UCS-2 inbox message per piece, found {len(received)}")
        return problems

    def mixed(result: dict[str, Any], inbox: list[InboxMessage]) -> list[str]:
        statuses = sorted(r["status"] for r in result.get("recipients", []))
        problems = []
        if result.get("success") or statuses != ["failed_permanent", "sent"]:
            problems.append(f"expected one sent and one failed_permanent, got {statuses}")
        if len(_to(inbox, mixed_to, "vonage")) != 1:
            problems.append("expected exactly one message for the valid recipient")
        return problems

    def fault(result: dict[str, Any], inbox: list[InboxMessage]) -> list[str]:
        recipient = _recipients(result).get(fault_to, {})
        problems = []
        if recipient.get("status") != "sent" or recipient.get("attempts") != 2:
            problems.append(
                f"expected sent on the 2nd attempt, got {recipient.get('status')} after "
                f"{recipient.get('attempts')} attempt(s)"
            )
        if len(_to(inbox, fault_to, "twilio")) != 1:
            problems.append("expected exactly one message in the inbox (no duplicate)")
        return problems

    return [
        Scenario(
            name="login code",
            message=ShortMessage(
                message="Your login code is {code}. It expires in 10 minutes.",
                access_code=code,
                phone_numbers=[login_to],
                reference_id=f"demo-login-{secrets.token_hex(4)}",
            ),
            lane="otp",
            check=login,
        ),
        Scenario(
            name="long UCS-2 text",
            message=ShortMessage(message=_LONG_UCS2, phone_numbers=[long_to], max_length=70),
            lane="default",
            check=long_text,
        ),
        Scenario(
            name="invalid recipient",
            message=ShortMessage(
                message="Your password was reset by the helpdesk.",
                phone_numbers=[mixed_to, "12345"],
            ),
            lane="default",
            check=mixed,
        ),
        Scenario(
            name="transient fault",
            message=ShortMessage(
                message="Your password reset was approved.", phone_numbers=[fault_to]
            ),
            lane="default",
            account="sandbox-twilio",
            fault_provider="twilio",
            check=fault,
        ),
    ]


def _demo_code() -> str:
    # Eight digits: long enough that finding it in the output cannot be a coincidence.
    return os.environ.get("SMSGW_DEMO_CODE") or f"{secrets.randbelow(90_000_000) + 10_000_000}"


def run_demo(
    console: Console,
    *,
    state_dir: Path = STATE_DIR,
    retry_base_s: float = 0.2,
    ready_timeout_s: float = 90.0,
) -> int:
    """Run the demo; returns the exit status (0 when every scenario went as expected)."""
    began = time.monotonic()
    code = _demo_code()
    numbers = {
        "login": f"+{DEMO_NUMBER}",
        "long": "+447400123456",
        "mixed": "+447911123456",
        "fault": "+447911123457",
    }
    scenarios = _scenarios(code, numbers)
    options = StackOptions(
        state_dir=state_dir,
        log_prefix="demo-",
        redis="private",
        sandbox_port=0,
        flower_port=0,
        concurrency=4,
        worker_env={"SMSGW_RETRY_BASE_S": str(retry_base_s)},
        ready_timeout_s=ready_timeout_s,
        write_env_file=False,
    )
    console.print("[bold]smsgw demo[/bold]: starting Redis, the sandbox, workers and Flower")
    stack = LocalStack(options)
    flower_problems: list[str] = []
    try:
        stack.start()
        console.print(
            f"ready in {stack.started_in_s:.1f} s: Redis {stack.broker_url.rsplit('/', 1)[0]} "
            f"(private), sandbox {stack.sandbox_url}, Flower {stack.flower_url}; "
            f"logs in {stack.log_dir}"
        )
        for note in stack.notes:
            console.print(f"[yellow]note: {note}[/yellow]")
        _send(stack, scenarios)
        _wait(stack, scenarios)
        assert stack.sandbox is not None
        inbox = stack.sandbox.state.messages()
        for scenario in scenarios:
            if scenario.result is not None:
                scenario.problems.extend(scenario.check(scenario.result, inbox))
        if stack.flower_url is not None:
            flower_problems = _check_flower(stack, console, code, scenarios)
        _print_results(console, scenarios)
        _print_inbox(console, inbox, code)
    finally:
        console.print("stopping the stack ...")
        stack.stop()
    failed = [s for s in scenarios if s.problems]
    for scenario in failed:
        console.print(f"[red]✗ {scenario.name}: {'; '.join(scenario.problems)}[/red]")
    for problem in flower_problems:
        console.print(f"[red]✗ Flower: {problem}[/red]")
    elapsed = time.monotonic() - began
    if failed or flower_problems:
        console.print(f"[red]demo FAILED[/red] in {elapsed:.1f} s; logs in {stack.log_dir}")
        return 1
    console.print(
        f"[green]demo passed[/green]: {len(scenarios)} scenarios as expected in {elapsed:.1f} s"
    )
    return 0


def _send(stack: LocalStack, scenarios: list[Scenario]) -> None:
    producer = stack.producer()
    assert stack.sandbox is not None
    for scenario in scenarios:
        if scenario.fault_provider:
            # The provider's next request fails with a 5xx: a transient fault, retried.
            stack.sandbox.state.set_faults(scenario.fault_provider, faults=Faults(error_next=1))
        scenario.job_id = producer.enqueue(
            scenario.message, lane=scenario.lane, account=scenario.account
        )


def _wait(stack: LocalStack, scenarios: list[Scenario]) -> None:
    app = stack.celery_app()
    deadline = time.monotonic() + _RESULT_TIMEOUT_S
    for scenario in scenarios:
        pending: AsyncResult[Any] = AsyncResult(scenario.job_id, app=app)
        try:
            value = pending.get(
                timeout=max(1.0, deadline - time.monotonic()), propagate=False, interval=0.1
            )
        except CeleryTimeout:
            scenario.problems.append(f"no result within {_RESULT_TIMEOUT_S:.0f} s")
            continue
        if isinstance(value, dict):
            scenario.result = value
        else:
            scenario.problems.append(f"the task failed: {type(value).__name__}")


def _check_flower(
    stack: LocalStack, console: Console, code: str, scenarios: list[Scenario]
) -> list[str]:
    """Flower answers only with the password, and its task list holds no access code."""
    problems: list[str] = []
    status, _ = stack.flower_get("/api/tasks", auth=False)
    if status != 401:
        problems.append(f"/api/tasks without credentials answered {status}, not 401")
    wanted = {s.job_id for s in scenarios}
    deadline = time.monotonic() + _FLOWER_EVENTS_WAIT_S
    while True:
        # Flower learns of tasks from events, which may trail the results a little.
        status, body = stack.flower_get("/api/tasks")
        if status != 200:
            return [*problems, f"/api/tasks answered {status}"]
        seen = wanted & set(json.loads(body or b"{}"))
        if seen == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if code.encode() in body:
        problems.append("the access code appears in /api/tasks")
    console.print(f"Flower lists {len(seen)} of the {len(wanted)} demo jobs")
    return problems


def _print_results(console: Console, scenarios: list[Scenario]) -> None:
    table = Table(
        "scenario", "job", "recipient", "status", "pieces", "segments", "attempts", "reason",
        "check", title="Results",
    )  # fmt: skip
    for scenario in scenarios:
        verdict = "[green]✓[/green]" if not scenario.problems else "[red]✗[/red]"
        recipients = (scenario.result or {}).get("recipients") or [{}]
        for index, row in enumerate(recipients):
            first = index == 0
            table.add_row(
                scenario.name if first else "",
                scenario.job_id[:8] if first else "",
                str(row.get("phone_number", "-")),
                str(row.get("status", "-")),
                str(row.get("pieces", "-")),
                str(row.get("segments", "-")),
                str(row.get("attempts", "-")),
                str(row.get("reason") or ""),
                verdict if first else "",
            )
    console.print(table)


def _print_inbox(console: Console, inbox: list[InboxMessage], code: str) -> None:
    table = Table("#", "provider", "to", "encoding", "segments", "text", title="Sandbox inbox")
    for message in inbox:
        table.add_row(
            str(message.id),
            message.provider,
            message.to,
            message.encoding,
            str(message.segments),
            message.text.replace(code, _MASK),
        )
    console.print(table)
    console.print(f"(access code shown as {_MASK}; it is never printed)")
