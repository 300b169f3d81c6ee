"""The ``smsgw`` command line: rich tables for people, ``--json`` for scripts.

Operator commands: ``dev`` and ``demo`` (the local stack), ``worker``, ``send``, ``status``,
``keys generate``, ``sandbox``, plus ``segment``, ``validate`` and ``gateways`` for
looking at messages, numbers and gateway types. Access codes are never printed.

Exit codes live in :mod:`worker.cli_output`; 2 is click's own usage error. Each command
group has a module of its own (``cli_gateways``, ``cli_jobs``, ``cli_stack``).
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from config.settings import get_settings
from gateways.errors import InvalidMessage, InvalidRecipient
from worker.cli_accounts import accounts_group, keys_rotate, stores_group
from worker.cli_campaign import campaign_group
from worker.cli_gateways import gateways_group, sandbox_command
from worker.cli_jobs import keys_group, send_command, status_command, worker_command
from worker.cli_ops import health_command, metrics_command
from worker.cli_output import (
    EXIT_CONFIG,
    EXIT_INVALID,
    EXIT_NOT_SENT,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_STACK,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN_JOB,
    print_json,
    stdout_console,
)
from worker.cli_stack import demo_command, dev_command
from worker.segmentation import segment, split_pieces
from worker.validation import normalize_number

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INVALID",
    "EXIT_NOT_SENT",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_STACK",
    "EXIT_UNAVAILABLE",
    "EXIT_UNKNOWN_JOB",
    "main",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smsgw")
def main() -> None:
    """smsgw: SMS dispatch for login codes and password resets."""


@main.command("segment")
@click.argument("text")
@click.option(
    "--max-length",
    type=click.IntRange(min=1),
    default=None,
    help="Also split into pieces of at most this many units (the job's max_length).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def segment_command(text: str, max_length: int | None, as_json: bool) -> None:
    """Show how TEXT is encoded and split into SMS segments (and pieces)."""
    result = segment(text)
    payload: dict[str, Any] = {
        "encoding": result.encoding,
        "units": result.units,
        "segments": result.segments,
        "parts": list(result.parts),
    }
    pieces: list[str] | None = None
    if max_length is not None:
        try:
            pieces = split_pieces(text, max_length)
        except InvalidMessage as error:
            raise click.BadParameter(str(error), param_hint="--max-length") from error
        payload["pieces"] = [_piece_json(piece) for piece in pieces]
        payload["total_segments"] = sum(piece["segments"] for piece in payload["pieces"])
    if as_json:
        print_json(payload)
        return
    console = stdout_console()
    unit = "septets" if result.encoding == "GSM-7" else "UTF-16 units"
    console.print(
        f"[bold]{result.encoding}[/bold], {result.units} {unit}, {result.segments} SMS segment(s)"
    )
    table = Table("part", "units", "text")
    for index, part in enumerate(result.parts, start=1):
        table.add_row(str(index), str(segment(part).units), repr(part))
    console.print(table)
    if pieces is not None:
        console.print(
            f"max_length {max_length}: {len(pieces)} piece(s), "
            f"{payload['total_segments']} SMS segment(s) in total"
        )
        table = Table("piece", "encoding", "units", "segments", "text")
        for index, piece in enumerate(payload["pieces"], start=1):
            table.add_row(
                str(index),
                piece["encoding"],
                str(piece["units"]),
                str(piece["segments"]),
                repr(piece["text"]),
            )
        console.print(table)


def _piece_json(piece: str) -> dict[str, Any]:
    counted = segment(piece)
    return {
        "encoding": counted.encoding,
        "units": counted.units,
        "segments": counted.segments,
        "text": piece,
    }


@main.command("validate")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--region", default=None, help="Default region for national formats, e.g. GB.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def validate_command(numbers: tuple[str, ...], region: str | None, as_json: bool) -> None:
    """Normalise phone NUMBERS to E.164, or say why each is refused (exit 1 if any is)."""
    settings = get_settings()
    region = region.strip().upper() if region else settings.default_region
    rows: list[dict[str, Any]] = []
    for raw in numbers:
        try:
            e164 = normalize_number(raw, region, settings.allowed_number_types)
        except InvalidRecipient as error:
            rows.append({"input": raw, "valid": False, "e164": None, "reason": error.reason})
        except ValueError as error:  # an unknown --region: a usage error, not a number's fault
            raise click.BadParameter(str(error), param_hint="--region") from error
        else:
            rows.append({"input": raw, "valid": True, "e164": e164, "reason": None})
    if as_json:
        print_json(rows)
    else:
        table = Table("input", "E.164", "result")
        for row in rows:
            verdict = "[green]ok[/green]" if row["valid"] else f"[red]{row['reason']}[/red]"
            table.add_row(row["input"], row["e164"] or "-", verdict)
        stdout_console().print(table)
    if not all(row["valid"] for row in rows):
        raise SystemExit(EXIT_INVALID)


keys_group.add_command(keys_rotate)
for _command in (
    accounts_group,
    stores_group,
    gateways_group,
    sandbox_command,
    worker_command,
    send_command,
    status_command,
    keys_group,
    dev_command,
    demo_command,
    health_command,
    metrics_command,
    campaign_group,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
