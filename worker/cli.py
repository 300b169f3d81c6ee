"""The ``smsgw`` command line: rich tables for people, ``--json`` for scripts.

Operator commands: ``dev`` and ``demo`` (the local stack), ``worker``, ``send``, ``status``,
``keys generate``, ``sandbox``, plus ``segment``, ``validate`` and ``gateways`` for
looking at messages, numbers and gateway types. Access codes are never printed.

Exit codes are named below; 2 is click's own usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from config.settings import Settings, get_settings
from gateways.base import GENERIC_FIELDS, SmsGateway
from gateways.errors import ConfigurationError, InvalidMessage, InvalidRecipient
from gateways.registry import discover, load_gateway
from worker.models import ShortMessage
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

EXIT_OK = 0
EXIT_INVALID = 1  # some input was refused; the output says which and why
EXIT_NOT_SENT = 1  # the job finished, and at least one recipient was not sent
EXIT_CONFIG = 3  # a gateway or setting is unknown or broken
EXIT_PENDING = 4  # the job is still queued or in flight (``send --wait`` timed out)
EXIT_UNKNOWN_JOB = 5  # no such job: never enqueued, or its records expired
EXIT_UNAVAILABLE = 6  # Redis (broker, result backend or state store) did not answer
EXIT_STACK = 7  # a part of the local stack did not start or stopped on its own

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err_console() -> Console:
    return Console(highlight=False, soft_wrap=True, stderr=True)


def _print_json(payload: Any) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


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
        _print_json(payload)
        return
    console = _console()
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
        _print_json(rows)
    else:
        table = Table("input", "E.164", "result")
        for row in rows:
            verdict = "[green]ok[/green]" if row["valid"] else f"[red]{row['reason']}[/red]"
            table.add_row(row["input"], row["e164"] or "-", verdict)
        _console().print(table)
    if not all(row["valid"] for row in rows):
        raise SystemExit(EXIT_INVALID)


@main.group("gateways")
def gateways_group() -> None:
    """List and describe the gateway types (built-in and plugins)."""


def _describe(cls: type[SmsGateway]) -> dict[str, Any]:
    meta = cls.metadata
    schema = cls.Options.model_json_schema()
    return {
        "name": meta.name,
        "description": meta.description,
        "url": meta.url,
        "aliases": list(meta.aliases),
        "required_fields": list(meta.required_fields()),
        "field_names": {name: meta.field_names.get(name) for name in GENERIC_FIELDS},
        "capabilities": meta.capabilities.model_dump(),
        "options": schema.get("properties", {}),
        "class": f"{cls.__module__}:{cls.__qualname__}",
    }


@gateways_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def gateways_list(as_json: bool) -> None:
    """Every registered gateway type, built-in or plugin."""
    try:
        entries = discover()
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from error
    enabled = get_settings().gateways_enabled
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(entries.items()):
        row: dict[str, Any] = {
            "name": name,
            "source": entry.distribution,
            "target": entry.target,
            "enabled": enabled is None or name in enabled,
        }
        try:
            meta = entry.load().metadata
        except ConfigurationError as error:
            row.update(alias_of=None, description=None, error=str(error))
        else:
            alias_of = meta.name if name != meta.name else None
            row.update(alias_of=alias_of, description=meta.description, error=None)
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "description", "from")
    for row in rows:
        if row["error"]:
            description = f"[red]cannot load: {row['error']}[/red]"
        elif not row["enabled"]:
            description = f"[dim](not enabled) {row['description']}[/dim]"
        elif row["alias_of"]:
            description = f"alias of {row['alias_of']}"
        else:
            description = row["description"]
        table.add_row(row["name"], description, row["source"] or "-")
    _console().print(table)


@gateways_group.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def gateways_describe(name: str, as_json: bool) -> None:
    """Metadata, required fields, field mapping and options of gateway NAME."""
    try:
        cls = load_gateway(name, get_settings().gateways_enabled)
    except ConfigurationError as error:
        _console().print(f"[red]{error}[/red]")
        raise SystemExit(EXIT_CONFIG) from error
    info = _describe(cls)
    if as_json:
        _print_json(info)
        return
    console = _console()
    console.print(f"[bold]{info['name']}[/bold]: {info['description']}")
    console.print(f"default URL: {info['url'] or '(none: the account must set url)'}")
    if info["aliases"]:
        console.print(f"aliases: {', '.join(info['aliases'])}")
    fields = Table("account field", "provider's name", "required")
    required = set(info["required_fields"])
    for field_name, provider_name in info["field_names"].items():
        fields.add_row(field_name, provider_name or "-", "yes" if field_name in required else "")
    console.print(fields)
    caps = info["capabilities"]
    console.print(
        f"capabilities: unicode={caps['unicode']}, max_segments={caps['max_segments']}, "
        f"concatenates={caps['concatenates']}, default_rate_per_s={caps['default_rate_per_s']}"
    )
    if info["options"]:
        options = Table("option", "type", "default", "description")
        for option, spec in info["options"].items():
            options.add_row(
                option,
                str(spec.get("type") or spec.get("anyOf", "")),
                json.dumps(spec.get("default")),
                spec.get("description", ""),
            )
        console.print(options)


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls", is_flag=True, help="Serve HTTPS with a generated self-signed certificate.")
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".smsgw/tls"),
    show_default=True,
    help="Where the certificate and key are written (and reused).",
)
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, help="Added latency.")
@click.option(
    "--accounts",
    "accounts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML list of sandbox accounts (replaces the documented defaults).",
)
@click.option("--dlr-url", default=None, help="Push delivery receipts to this URL.")
def sandbox_command(
    host: str,
    port: int,
    tls: bool,
    tls_dir: Path,
    latency_ms: float,
    accounts_file: Path | None,
    dlr_url: str | None,
) -> None:
    """Serve every built-in provider's API locally, with an inbox at /_sandbox/."""
    from gateways.sandbox import Faults, SandboxState, self_signed_certificate
    from gateways.sandbox.server import serve_forever

    accounts = SandboxState.load_accounts(accounts_file) if accounts_file else None
    state = SandboxState(accounts, dlr_url=dlr_url)
    if latency_ms:
        state.set_faults(faults=Faults(latency_ms=latency_ms))
    files = self_signed_certificate(tls_dir, host) if tls else None
    scheme = "https" if tls else "http"
    console = _console()
    console.print(
        f"sandbox on [bold]{scheme}://{host}:{port}[/bold]  inbox: {scheme}://{host}:{port}/_sandbox/"
    )
    if files:
        console.print(f"certificate: {files.certificate} (trust it in your client)")
    table = Table("provider", "account", "account_id", "user_id", "rate/s")
    for account in state.all_accounts():
        table.add_row(
            account.provider,
            account.name,
            account.account_id or "-",
            account.user_id or "-",
            str(account.rate_per_s or "unlimited"),
        )
    console.print(table)
    console.print(
        "passwords: see the README (defaults) or your accounts file; press Ctrl-C to stop"
    )
    serve_forever(state, host=host, port=port, tls=files)


# --- the pipeline's operator commands ------------------------------------------------------


def _parse_lanes(value: str, settings: Settings) -> list[str]:
    known = settings.lanes.names()
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        what = f"unknown lane(s) {', '.join(unknown)}" if unknown else "no lane given"
        raise click.BadParameter(f"{what}; the lanes are {', '.join(known)}", param_hint="--lanes")
    return names


@main.command("worker")
@click.option("--lanes", required=True, help="Lanes to consume, comma-separated: otp,default.")
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), default=8, show_default=True,
    help="Threads (sends in progress at once) in this worker process.",
)  # fmt: skip
@click.option(
    "--loglevel", "-l", type=click.Choice(_LOG_LEVELS, case_sensitive=False), default="info",
    show_default=True,
)  # fmt: skip
@click.option(
    "--name", "-n", default=None,
    help="Node name (default LANES@host); give each worker of one lane group on a host its own.",
)  # fmt: skip
def worker_command(lanes: str, concurrency: int, loglevel: str, name: str | None) -> None:
    """Run a Celery worker for LANES (threads pool, events on for Flower).

    Runs ``celery -A worker.app worker`` in place of this process, named after its lanes
    (``otp-default@host``). Start one per lane group so codes never wait behind bulk work.
    """
    from worker.stack import celery_worker_argv

    names = _parse_lanes(lanes, get_settings())
    argv = celery_worker_argv(names, concurrency=concurrency, loglevel=loglevel.lower(), name=name)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _unavailable(error: Exception) -> SystemExit:
    # The error's class and text only: redis-py and kombu keep credentials out of both.
    _err_console().print(
        f"[red]Redis did not answer ({type(error).__name__}: {error}); is the stack running, "
        "and are SMSGW_BROKER_URL / SMSGW_RESULT_BACKEND_URL / SMSGW_STATE_REDIS_URL set "
        "(`set -a; . .smsgw/dev.env; set +a` after `smsgw dev`)?[/red]"
    )
    return SystemExit(EXIT_UNAVAILABLE)


def _redis_errors() -> tuple[type[Exception], ...]:
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    return (RedisError, OperationalError, ConnectionError, TimeoutError)


def _read_code(code: str | None) -> str | None:
    if code != "-":
        return code
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _region_for(settings: Settings, identity_store: str | None) -> str | None:
    link = settings.identity_stores.get(identity_store) if identity_store else None
    return (link.default_region if link else None) or settings.default_region


def _checked_message(
    fields: dict[str, Any], settings: Settings, identity_store: str | None
) -> tuple[ShortMessage, list[str], list[dict[str, str]]]:
    """The message, its valid recipients (E.164) and refused ones; exits when it cannot go.

    A problem with the message itself refuses it, and so do numbers that are all invalid;
    refused numbers beside valid ones are named on stderr and go into the job (its result
    records them).
    """
    err = _err_console()
    try:
        message = ShortMessage.model_validate(fields)
    except ValidationError as error:
        # hide_input_in_errors: the messages name fields, never the values (the code).
        for detail in error.errors():
            err.print(f"[red]{'.'.join(map(str, detail['loc']))}: {detail['msg']}[/red]")
        raise SystemExit(EXIT_INVALID) from None
    check = message.check(
        default_region=_region_for(settings, identity_store),
        allowed_types=settings.allowed_number_types,
        max_parts=settings.max_parts,
    )
    # The operator's own input is shown as typed, as `smsgw validate` does.
    rejected = [{"input": e.raw, "reason": e.reason} for e in check.rejected]
    for row in rejected:
        err.print(f"[yellow]not sending to {row['input']!r}: {row['reason']}[/yellow]")
    for problem in check.problems:
        err.print(f"[red]{problem}[/red]")
    if not check.problems and not check.recipients:
        err.print("[red]no valid recipient: nothing enqueued[/red]")
    if check.problems or not check.recipients:
        raise SystemExit(EXIT_INVALID)
    return message, list(check.recipients), rejected


@main.command("send")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--message", "-m", "text", required=True, help="The text; {code} marks the code.")
@click.option(
    "--code", default=None,
    help="The access code (a secret, never printed); '-' reads it from stdin.",
)  # fmt: skip
@click.option("--lane", default=None, help="otp, default or bulk [otp with --code, else default]")
@click.option("--account", default=None, help="Send through this gateway account.")
@click.option("--store", "identity_store", default=None, help="The producer's identity store.")
@click.option("--reference", default=None, help="Your reference (also the idempotency key).")
@click.option("--max-length", type=click.IntRange(1, 10_000), default=None, help="Piece size.")
@click.option("--ttl", "ttl_s", type=click.FloatRange(min=0, min_open=True), help="Expiry, s.")
@click.option("--wait", is_flag=True, help="Wait for the final result and show it.")
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=60.0,
    show_default=True, help="How long --wait waits, in seconds.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def send_command(
    numbers: tuple[str, ...],
    text: str,
    code: str | None,
    lane: str | None,
    account: str | None,
    identity_store: str | None,
    reference: str | None,
    max_length: int | None,
    ttl_s: float | None,
    wait: bool,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Enqueue a message to NUMBERS; print its job id (or, with --wait, its result).

    The message is checked first: a problem with the message itself refuses it, and so do
    numbers that are all invalid; when only some are, they are named and the rest go (the
    job's result records the refused ones). Exit codes: 0 sent, 1 refused or not sent to
    everyone, 4 no result within --timeout, 6 Redis unreachable.
    """
    settings = get_settings()
    if account and identity_store:
        raise click.UsageError("give --account or --store, not both")
    lane = lane or (settings.lanes.otp if code is not None else settings.lanes.default)
    if lane not in settings.lanes.names():
        known = ", ".join(settings.lanes.names())
        raise click.BadParameter(
            f"unknown lane {lane!r}; the lanes are {known}", param_hint="--lane"
        )
    fields: dict[str, Any] = {"message": text, "phone_numbers": list(numbers)}
    code = _read_code(code)
    optional = {"access_code": code, "reference_id": reference, "max_length": max_length}
    fields.update({k: v for k, v in {**optional, "ttl_s": ttl_s}.items() if v is not None})
    err = _err_console()
    message, recipients, rejected = _checked_message(fields, settings, identity_store)
    from worker.producer import enqueue

    try:
        job_id = enqueue(message, lane=lane, account=account, identity_store=identity_store)
    except ConfigurationError as error:
        err.print(f"[red]{error}[/red]")
        raise SystemExit(EXIT_CONFIG) from None
    except _redis_errors() as error:
        raise _unavailable(error) from None
    if not wait:
        if as_json:
            _print_json(
                {"job_id": job_id, "lane": lane, "recipients": recipients,
                 "rejected": rejected}
            )  # fmt: skip
        else:
            err.print(f"enqueued on lane {lane} for {len(recipients)} recipient(s); job id:")
            click.echo(job_id)
        return
    if not as_json:
        err.print(f"job {job_id} enqueued on lane {lane}; waiting up to {timeout_s:g} s ...")
    raise SystemExit(_wait_and_show(job_id, timeout_s, as_json))


def _wait_and_show(job_id: str, timeout_s: float, as_json: bool) -> int:
    from celery.exceptions import TimeoutError as CeleryTimeout
    from celery.result import AsyncResult

    from worker.app import app

    try:
        pending: AsyncResult[Any] = AsyncResult(job_id, app=app)
        value: Any = pending.get(timeout=timeout_s, propagate=False, interval=0.2)
    except CeleryTimeout:
        if as_json:
            _print_json({"job_id": job_id, "state": "pending", "waited_s": timeout_s})
        else:
            _err_console().print(
                f"[yellow]no result within {timeout_s:g} s; the job is queued or in flight: "
                f"smsgw status {job_id}[/yellow]"
            )
        return EXIT_PENDING
    except _redis_errors() as error:
        raise _unavailable(error) from None
    return _show_final(job_id, value, as_json)


def _show_final(job_id: str, value: Any, as_json: bool) -> int:
    """Print a job's final result (or its task's crash); the exit code for it."""
    if not isinstance(value, dict):
        reason = f"the task failed: {type(value).__name__}: {value}"
        if as_json:
            _print_json({"job_id": job_id, "state": "failed", "error": reason})
        else:
            _console().print(f"[red]job {job_id}: {reason}[/red]")
        return EXIT_NOT_SENT
    if as_json:
        _print_json({"job_id": job_id, "state": "finished", "result": value})
    else:
        _print_result(value)
    return EXIT_OK if value.get("success") else EXIT_NOT_SENT


def _print_result(result: dict[str, Any]) -> None:
    console = _console()
    verdict = "[green]sent[/green]" if result.get("success") else "[red]not sent[/red]"
    where = ", ".join(
        f"{label} {result[key]}"
        for label, key in (("lane", "lane"), ("account", "account"), ("gateway", "gateway"))
        if result.get(key)
    )
    console.print(
        f"job {result.get('job_id')}: finished, {verdict}" + (f" ({where})" if where else "")
    )
    table = Table("recipient", "status", "pieces", "segments", "attempts", "provider ids", "reason")
    for row in result.get("recipients") or []:
        status = str(row.get("status"))
        colour = "green" if status == "sent" else "red"
        table.add_row(
            str(row.get("phone_number")),
            f"[{colour}]{status}[/{colour}]",
            str(row.get("pieces", 0)),
            str(row.get("segments", 0)),
            str(row.get("attempts", 0)),
            ", ".join(row.get("provider_message_ids") or []) or "-",
            str(row.get("reason") or ""),
        )
    console.print(table)
    if result.get("exception_message") and not result.get("recipients"):
        console.print(f"[red]{result['exception_message']}[/red]")


@main.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status_command(job_id: str, as_json: bool) -> None:
    """Show job JOB_ID: its final result, or while in flight its live per-part state.

    Exit codes: 0 finished and sent, 1 finished and not sent to everyone, 4 still queued
    or in flight, 5 no such job (or its records expired), 6 Redis unreachable.
    """
    job_id = job_id.strip().lower()
    if not _JOB_ID.match(job_id):
        raise click.BadParameter("a job id is 32 hexadecimal characters", param_hint="JOB_ID")
    from celery import states
    from celery.result import AsyncResult

    from worker.app import app

    settings = get_settings()
    try:
        pending: AsyncResult[Any] = AsyncResult(job_id, app=app)
        state = pending.state
        if state in states.READY_STATES:
            raise SystemExit(_show_final(job_id, pending.result, as_json))
        live = asyncio.run(_live_state(job_id, settings))
    except _redis_errors() as error:
        raise _unavailable(error) from None
    if live is None:
        message = f"no job {job_id}: it was never enqueued here, or its records expired"
        if as_json:
            _print_json({"job_id": job_id, "state": "unknown", "error": message})
        else:
            _err_console().print(f"[red]{message}[/red]")
        raise SystemExit(EXIT_UNKNOWN_JOB)
    live["celery_state"] = state
    if as_json:
        _print_json(live)
    else:
        _print_live(live)
    raise SystemExit(EXIT_PENDING)


async def _live_state(job_id: str, settings: Settings) -> dict[str, Any] | None:
    """The stored job and its parts' states, or ``None`` when no job has that id."""
    from redis.asyncio import Redis

    from worker.delivery import DeliveryState
    from worker.jobs import JobRecord
    from worker.keys import job_key

    client: Redis = Redis.from_url(
        settings.state_redis_url.get_secret_value(), decode_responses=True
    )
    try:
        raw = await client.get(job_key(job_id))
        if raw is None:
            return None
        parts = await DeliveryState(client, job_id, ttl_s=settings.job_ttl_s).load()
    finally:
        await client.aclose()
    try:
        record = JobRecord.model_validate_json(raw)
        message = record.redacted_message()
    except ValidationError:
        return {"job_id": job_id, "state": "in_flight", "error": "malformed job record"}
    check = message.check(
        default_region=_region_for(settings, record.identity_store),
        allowed_types=settings.allowed_number_types,
        max_parts=settings.max_parts,
    )
    return {
        "job_id": job_id,
        "state": "in_flight",
        "lane": record.lane,
        "enqueued_at": record.enqueued_at.isoformat(),
        "account": record.account,
        "identity_store": record.identity_store,
        "message": message.model_dump(mode="json"),
        "recipients": [_recipient_parts(recipient, parts) for recipient in check.recipients],
        "rejected": [
            {"phone_number": e.problems[0].recipient, "reason": e.reason} for e in check.rejected
        ],
    }


def _recipient_parts(recipient: str, parts: dict[str, Any]) -> dict[str, Any]:
    from worker.delivery import PartRef
    from worker.models import DeliveryStatus

    prefix = PartRef(recipient, 0).name.rpartition(":")[0] + ":"
    found = sorted(
        (int(name.removeprefix(prefix)), state)
        for name, state in parts.items()
        if name.startswith(prefix)
    )
    rows = [
        {
            "piece": piece,
            "status": state.status.value,
            "attempts": state.attempts,
            "provider_message_ids": state.provider_ids,
            "segments": state.segments,
            "error_class": state.error_class,
            "reason": state.reason,
        }
        for piece, state in found
    ]
    statuses = [DeliveryStatus(row["status"]) for row in rows]
    if not statuses:
        status = DeliveryStatus.QUEUED
    else:
        status = next(
            (s for s in statuses if not s.is_final),
            next((s for s in statuses if s != DeliveryStatus.SENT), DeliveryStatus.SENT),
        )
    return {"phone_number": recipient, "status": status.value, "parts": rows}


def _print_live(live: dict[str, Any]) -> None:
    console = _console()
    if "recipients" not in live:
        console.print(f"job {live['job_id']}: in flight; {live.get('error', '')}")
        return
    details = [
        f"lane {live['lane']}",
        f"enqueued {live['enqueued_at']}",
        f"account {live['account'] or '(resolved by the worker)'}",
    ]
    if live["identity_store"]:
        details.append(f"store {live['identity_store']}")
    console.print(
        f"job {live['job_id']}: [yellow]in flight[/yellow] (celery: {live['celery_state']}); "
        + ", ".join(details)
    )
    table = Table(
        "recipient", "status", "parts (piece: status, attempts)", "provider ids", "reason"
    )
    for row in live["recipients"]:
        parts = ", ".join(f"{p['piece']}: {p['status']} x{p['attempts']}" for p in row["parts"])
        ids = [i for p in row["parts"] for i in p["provider_message_ids"]]
        reasons = [p["reason"] for p in row["parts"] if p["reason"]]
        table.add_row(
            row["phone_number"], row["status"], parts or "-", ", ".join(ids) or "-",
            "; ".join(reasons),
        )  # fmt: skip
    for row in live["rejected"]:
        table.add_row(row["phone_number"], "failed_permanent", "-", "-", row["reason"])
    console.print(table)


@main.group("keys")
def keys_group() -> None:
    """Encryption keys for access codes at rest."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key for SMSGW_SECRET_KEY (the hint goes to stderr)."""
    from worker.crypto import generate_key

    click.echo(generate_key())
    click.echo(
        "Give producers and workers the same key: export SMSGW_SECRET_KEY=<the key above> "
        "(to rotate, put the new key first and keep the old after a comma).",
        err=True,
    )


# --- the local stack -----------------------------------------------------------------------


def _display_url(url: str) -> str:
    """A Redis URL without its database and with any credentials masked."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    auth = "***@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{auth}{parts.hostname}:{parts.port or 6379}"


def _print_stack_summary(stack: Any) -> None:
    from worker.stack import DEFAULT_SANDBOX_ACCOUNT

    console = _console()
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


@main.command("dev")
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
@click.option("--loglevel", "-l", type=click.Choice(_LOG_LEVELS, case_sensitive=False),
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
    console = _console()
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


@main.command("demo")
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

    console = _console()
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


if __name__ == "__main__":
    main()
