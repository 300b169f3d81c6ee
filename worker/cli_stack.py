"""``smsgw dev`` and ``smsgw demo``: the local stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from worker.cli_output import (
    EXIT_OK,
    EXIT_STACK,
    LOG_LEVELS,
    stdout_console,
)

__all__ = ["demo_command", "dev_command"]


def _display_url(url: str) -> str:
    """A Redis URL without its database and with any credentials masked."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    auth = "***@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{auth}{parts.hostname}:{parts.port or 6379}"


def _print_stack_summary(stack: Any) -> None:
    from worker.stack import DEFAULT_SANDBOX_ACCOUNT

    console = stdout_console()
    redis_where = {
        "configured": "the configured server",
        "embedded": f"embedded, AOF on, data in {stack.options.state_dir / 'redis'}",
        "private": "private, temporary",
    }[stack.redis_source]
    console.print(f"[bold green]smsgw dev is ready[/bold green] ({stack.started_in_s:.1f} s)")
    table = Table("part", "where", show_header=False, box=None)
    table.add_row("Redis", f"{_display_url(stack.broker_url)}  ({redis_where})")
    databases = "broker db 0 · results db 1 · state db 2"
    if stack.redis_source == "configured":
        databases = "broker, results and state as configured"
    table.add_row("", databases)
    table.add_row("Sandbox", f"{stack.sandbox_url}   inbox: {stack.sandbox_url}/_sandbox/")
    if stack.flower_url:
        table.add_row(
            "Flower",
            f"{stack.flower_url}   user {'admin'}, password {stack.flower_password}  "
            "(shown once; new each start)",
        )
    workers = ", ".join(child.name.removeprefix("worker-") for child in stack.workers)
    table.add_row("Workers", f"{workers}   logs in {stack.log_dir}/")
    names = [a["name"] + (" (default)" if a["name"] == DEFAULT_SANDBOX_ACCOUNT else "")
             for a in stack.accounts]  # fmt: skip
    table.add_row("Accounts", ", ".join(names))
    console.print(table)
    for note in stack.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
    console.print(
        "\nIn another terminal of this directory:\n"
        f"  set -a; . {stack.env_file}; set +a\n"
        "  smsgw send 447079692712 --message 'Your code is {code}' --code - --wait"
        "   [dim](type the code)[/dim]\n"
        "  smsgw status <job id>\n"
        "Press Ctrl-C to stop everything."
    )


@click.command("dev")
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".smsgw"),
    show_default=True, help="Embedded Redis data, logs and dev.env.",
)  # fmt: skip
@click.option("--embedded-redis", is_flag=True, help="Start Redis even if the configured answers.")
@click.option("--redis-port", type=click.IntRange(1, 65535), default=None, help="Embedded port.")
@click.option("--sandbox-port", type=click.IntRange(0, 65535), default=8025, show_default=True)
@click.option("--flower-port", type=click.IntRange(0, 65535), default=5555, show_default=True)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--loglevel", "-l", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="info", show_default=True)  # fmt: skip
def dev_command(
    state_dir: Path,
    embedded_redis: bool,
    redis_port: int | None,
    sandbox_port: int,
    flower_port: int,
    no_flower: bool,
    concurrency: int,
    loglevel: str,
) -> None:
    """Run the local stack until Ctrl-C: Redis, the sandbox, a worker per lane group, Flower.

    Uses the configured Redis when it answers, else starts one (AOF on, data in
    STATE_DIR/redis). Busy ports fall back to free ones. The URLs are printed, and written
    to STATE_DIR/dev.env for other shells.
    """
    from worker.stack import LocalStack, StackError, StackOptions, interrupt_on_sigterm

    options = StackOptions(
        state_dir=state_dir,
        redis="embedded" if embedded_redis else "auto",
        redis_port=redis_port,
        sandbox_port=sandbox_port,
        flower_port=None if no_flower else flower_port,
        concurrency=concurrency,
        loglevel=loglevel.lower(),
    )
    console = stdout_console()
    stack = LocalStack(options)
    code = EXIT_OK
    with interrupt_on_sigterm():
        try:
            console.print("starting the local stack ...")
            stack.start()
            _print_stack_summary(stack)
            while not (exited := stack.exited()):
                time.sleep(0.5)
            for name, returncode, log in exited:
                console.print(f"[red]{name} stopped (exit code {returncode}); see {log}[/red]")
            code = EXIT_STACK
        except StackError as error:
            console.print(f"[red]{error}[/red]")
            code = EXIT_STACK
        except KeyboardInterrupt:
            console.print("\nstopping ...")
        finally:
            stack.stop()
    console.print("stopped.")
    raise SystemExit(code)


@click.command("demo")
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".smsgw"),
    show_default=True, help="Where the demo's logs go (STATE_DIR/logs/demo-*.log).",
)  # fmt: skip
def demo_command(state_dir: Path) -> None:
    """Start the stack, send four jobs that show the pipeline, report, tear down.

    A login code, a long UCS-2 text, an invalid recipient and a transient provider fault;
    exit 0 only when each ends as expected (the demo is also a smoke test). Uses a private
    Redis, so it runs on a machine with nothing but Python.
    """
    from worker.demo import run_demo
    from worker.stack import StackError, interrupt_on_sigterm

    console = stdout_console()
    with interrupt_on_sigterm():
        try:
            code = run_demo(console, state_dir=state_dir)
        except StackError as error:
            console.print(f"[red]{error}[/red]")
            code = EXIT_STACK
        except KeyboardInterrupt:
            console.print("interrupted")
            code = 130
    raise SystemExit(code)
