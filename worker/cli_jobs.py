"""``smsgw send``, ``status``, ``worker`` and ``keys``: jobs and the processes that run them."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from config.settings import Settings, get_settings
from gateways.errors import ConfigurationError
from worker.cli_output import (
    EXIT_CONFIG,
    EXIT_INVALID,
    EXIT_NOT_SENT,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN_JOB,
    LOG_LEVELS,
    print_json,
    redis_errors,
    stderr_console,
    stdout_console,
)
from worker.models import ShortMessage

__all__ = ["keys_group", "send_command", "status_command", "worker_command"]


_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _parse_lanes(value: str, settings: Settings) -> list[str]:
    known = settings.lanes.names()
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        what = f"unknown lane(s) {', '.join(unknown)}" if unknown else "no lane given"
        raise click.BadParameter(f"{what}; the lanes are {', '.join(known)}", param_hint="--lanes")
    return names


@click.command("worker")
@click.option("--lanes", required=True, help="Lanes to consume, comma-separated: otp,default.")
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), default=8, show_default=True,
    help="Threads (sends in progress at once) in this worker process.",
)  # fmt: skip
@click.option(
    "--loglevel", "-l", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
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
    if get_settings().log_format == "json":
        argv.insert(argv.index("worker"), "--quiet")  # no plain-text banner among JSON lines
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _unavailable(error: Exception) -> SystemExit:
    # The error's class and text only: redis-py and kombu keep credentials out of both.
    stderr_console().print(
        f"[red]Redis did not answer ({type(error).__name__}: {error}); is the stack running, "
        "and are SMSGW_BROKER_URL / SMSGW_RESULT_BACKEND_URL / SMSGW_STATE_REDIS_URL set "
        "(`set -a; . .smsgw/dev.env; set +a` after `smsgw dev`)?[/red]"
    )
    return SystemExit(EXIT_UNAVAILABLE)


def _read_code(code: str | None) -> str | None:
    if code != "-":
        return code
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _region_for(
    settings: Settings, identity_store: str | None, *, stored: bool = False
) -> str | None:
    link = settings.identity_stores.get(identity_store) if identity_store else None
    if identity_store and link is None and stored:  # a store kept by `smsgw stores`
        from worker.cli_accounts import stored_store_region

        return stored_store_region(settings, identity_store) or settings.default_region
    return (link.default_region if link else None) or settings.default_region


def _checked_message(
    fields: dict[str, Any], settings: Settings, identity_store: str | None
) -> tuple[ShortMessage, list[str], list[dict[str, str]]]:
    """The message, its valid recipients (E.164) and refused ones; exits when it cannot go.

    A problem with the message itself refuses it, and so do numbers that are all invalid;
    refused numbers beside valid ones are named on stderr and go into the job (its result
    records them).
    """
    err = stderr_console()
    try:
        message = ShortMessage.model_validate(fields)
    except ValidationError as error:
        # hide_input_in_errors: the messages name fields, never the values (the code).
        for detail in error.errors():
            err.print(f"[red]{'.'.join(map(str, detail['loc']))}: {detail['msg']}[/red]")
        raise SystemExit(EXIT_INVALID) from None
    check = message.check(
        default_region=_region_for(settings, identity_store, stored=True),
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


@click.command("send")
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
    err = stderr_console()
    message, recipients, rejected = _checked_message(fields, settings, identity_store)
    from worker.producer import enqueue

    try:
        job_id = enqueue(message, lane=lane, account=account, identity_store=identity_store)
    except ConfigurationError as error:
        err.print(f"[red]{error}[/red]")
        raise SystemExit(EXIT_CONFIG) from None
    except redis_errors() as error:
        raise _unavailable(error) from None
    if not wait:
        if as_json:
            print_json(
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
            print_json({"job_id": job_id, "state": "pending", "waited_s": timeout_s})
        else:
            stderr_console().print(
                f"[yellow]no result within {timeout_s:g} s; the job is queued or in flight: "
                f"smsgw status {job_id}[/yellow]"
            )
        return EXIT_PENDING
    except redis_errors() as error:
        raise _unavailable(error) from None
    return _show_final(job_id, value, as_json)


def _show_final(job_id: str, value: Any, as_json: bool) -> int:
    """Print a job's final result (or its task's crash); the exit code for it."""
    if not isinstance(value, dict):
        reason = f"the task failed: {type(value).__name__}: {value}"
        if as_json:
            print_json({"job_id": job_id, "state": "failed", "error": reason})
        else:
            stdout_console().print(f"[red]job {job_id}: {reason}[/red]")
        return EXIT_NOT_SENT
    if as_json:
        print_json({"job_id": job_id, "state": "finished", "result": value})
    else:
        _print_result(value)
    return EXIT_OK if value.get("success") else EXIT_NOT_SENT


def _print_result(result: dict[str, Any]) -> None:
    console = stdout_console()
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


@click.command("status")
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
    except redis_errors() as error:
        raise _unavailable(error) from None
    if live is None:
        message = f"no job {job_id}: it was never enqueued here, or its records expired"
        if as_json:
            print_json({"job_id": job_id, "state": "unknown", "error": message})
        else:
            stderr_console().print(f"[red]{message}[/red]")
        raise SystemExit(EXIT_UNKNOWN_JOB)
    live["celery_state"] = state
    if as_json:
        print_json(live)
    else:
        _print_live(live)
    raise SystemExit(EXIT_PENDING)


async def _live_state(job_id: str, settings: Settings) -> dict[str, Any] | None:
    """The stored job and its parts' states, or ``None`` when no job has that id."""
    from redis.asyncio import Redis

    from worker.account_store import AccountStore
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
        try:
            record = JobRecord.model_validate_json(raw)
            message = record.redacted_message()
        except ValidationError:
            return {"job_id": job_id, "state": "in_flight", "error": "malformed job record"}
        stored = (
            await AccountStore(client, settings, None).stored_store(record.identity_store)
            if record.identity_store
            else None
        )
    finally:
        await client.aclose()
    check = message.check(
        default_region=(stored.default_region if stored else None)
        or _region_for(settings, record.identity_store),
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
    console = stdout_console()
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


@click.group("keys")
def keys_group() -> None:
    """Encryption keys for access codes and account secrets at rest."""


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
