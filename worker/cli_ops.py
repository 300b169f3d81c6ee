"""``smsgw health`` and ``smsgw metrics``: is it working, and the numbers that say so."""

from __future__ import annotations

import click
from rich.table import Table

from config.settings import get_settings
from worker.cli_jobs import _parse_lanes
from worker.cli_output import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_UNHEALTHY,
    print_json,
    stderr_console,
    stdout_console,
)
from worker.health import HealthReport, check_health

__all__ = ["health_command", "metrics_command"]


def _lanes(value: str | None) -> list[str] | None:
    # The same lane parsing and error as `smsgw worker --lanes`.
    return _parse_lanes(value, get_settings()) if value else None


@click.command("health")
@click.option("--lanes", default=None, help="Check only these lanes, comma-separated [all].")
@click.option(
    "--worker", "node", default=None,
    help="Also require this worker node (e.g. otp-default@host) to answer and consume the lanes.",
)  # fmt: skip
@click.option(
    "--skip-accounts", is_flag=True, help="Do not check the gateway accounts' last outcomes."
)
@click.option(
    "--skip-queue-age", is_flag=True,
    help="Do not turn red for the age of queued jobs (a bulk backlog is normal).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def health_command(
    lanes: str | None, node: str | None, skip_accounts: bool, skip_queue_age: bool, as_json: bool
) -> None:
    """Check that codes flow: Redis answers, every lane with queued messages has a worker,
    no lane's oldest job is older than its threshold, no message is held by a lost worker,
    no account is failing permanently.

    Exit codes: 0 healthy, 6 Redis unreachable, 9 anything else wrong (the reasons are
    printed). Takes about SMSGW_HEALTH_TIMEOUT_S (1 s): the time workers get to answer.
    """
    report = check_health(
        get_settings(),
        lanes=_lanes(lanes),
        worker=node,
        accounts=not skip_accounts,
        queue_age=not skip_queue_age,
    )
    if as_json:
        print_json(report.to_json())
    else:
        _print_report(report)
    if report.ok:
        raise SystemExit(EXIT_OK)
    raise SystemExit(EXIT_UNAVAILABLE if not report.redis_ok else EXIT_UNHEALTHY)


def _print_report(report: HealthReport) -> None:
    out = stdout_console()
    if report.lanes:
        table = Table("lane", "queued", "oldest waited", "threshold", "workers")
        for lane in report.lanes:
            age = "-" if lane.oldest_age_s is None else f"{lane.oldest_age_s:.0f}s"
            workers = "?" if lane.consumers is None else ", ".join(lane.consumers) or "none"
            table.add_row(lane.lane, str(lane.depth), age, f"{lane.threshold_s:.0f}s", workers)
        out.print(table)
    if report.accounts:
        table = Table("account", "last outcome", "error")
        for account in report.accounts:
            verdict = "[green]ok[/green]" if account.status == "ok" else "[red]failing[/red]"
            table.add_row(account.account, verdict, account.error_class or "")
        out.print(table)
    if report.ok:
        out.print("[green]healthy[/green]")
        return
    err = stderr_console()
    for reason in report.reasons:
        err.print(f"[red]{reason}[/red]")


@click.command("metrics")
def metrics_command() -> None:
    """Print the Prometheus exposition once: queue depth and age, workers per lane, health;
    plus this host's worker counters when PROMETHEUS_MULTIPROC_DIR points at their files.

    Each worker serves the same (its own counters) on SMSGW_METRICS_PORT.
    """
    from worker.metrics import exposition

    click.echo(exposition().decode(), nl=False)
