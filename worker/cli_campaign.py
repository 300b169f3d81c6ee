"""``smsgw campaign start|status|watch|list|pause|resume|cancel|report``: bulk campaigns.

``start`` reads a CSV or JSONL file as a stream, checks every row (refused rows are named
by line with the reason; ``--strict`` refuses the file), stores one job per distinct
recipient, prints the cost preview (and stops there with ``--dry-run``), then publishes the
jobs to the bulk lane. Running ``start`` again with the same file (or ``--name``) resumes an
interrupted start and never sends anyone twice. No command prints a per-recipient code.

Exit codes (see :mod:`worker.cli_output`): 0 ok, 1 refused (rows with ``--strict``, a
state change that does not apply), 3 configuration, 5 unknown campaign, 6 Redis unreachable.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from config.settings import Settings, get_settings
from gateways.errors import ConfigurationError
from gateways.registry import load_gateway
from worker.account_store import AccountStore
from worker.accounts import ResolvedAccount
from worker.campaign_file import (
    CampaignFileError,
    RowChecker,
    Template,
    csv_columns,
    file_digest,
    file_format,
)
from worker.campaigns import (
    Campaign,
    CampaignError,
    CampaignState,
    CampaignStore,
    RatePlan,
    plan_rate,
)
from worker.cli_output import (
    EXIT_CONFIG,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN_JOB,
    print_json,
    redis_errors,
    stderr_console,
    stdout_console,
)
from worker.crypto import load_cipher
from worker.keys import job_key
from worker.ratelimit import account_rate

__all__ = ["REPORT_COLUMNS", "campaign_group"]

_SHOWN_INVALID = 20  # refused rows listed on the terminal; all of them are in the report
_JSON_INVALID = 1000
_FINAL = (CampaignState.FINISHED,)
_PREVIEW_COLUMNS = ("rows", "invalid", "duplicates", "recipients", "pieces", "segments")


@click.group("campaign")
def campaign_group() -> None:
    """Bulk campaigns (password resets): start from a file, watch, pause, report."""


@contextmanager
def _store(settings: Settings) -> Iterator[CampaignStore]:
    client: Redis = Redis.from_url(
        settings.state_redis_url.get_secret_value(), decode_responses=True
    )
    try:
        yield CampaignStore(client, ttl_s=settings.job_ttl_s)
    except redis_errors() as error:
        stderr_console().print(
            f"[red]Redis did not answer ({type(error).__name__}: {error}); is "
            "SMSGW_STATE_REDIS_URL (and SMSGW_BROKER_URL) set?[/red]"
        )
        raise SystemExit(EXIT_UNAVAILABLE) from None
    finally:
        client.close()


def _fail(message: str, code: int) -> SystemExit:
    stderr_console().print(f"[red]{message}[/red]")
    return SystemExit(code)


def _parse_deadline(value: str | None, settings: Settings) -> datetime | None:
    if value is None:
        return None
    try:
        deadline = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time with its offset, e.g. 2026-11-25T18:00:00+00:00 or ...Z",
            param_hint="--deadline",
        ) from None
    if deadline.tzinfo is None:
        raise click.BadParameter(
            "give the time zone (e.g. Z or +01:00): a bare time is ambiguous",
            param_hint="--deadline",
        )
    left_s = (deadline - datetime.now(UTC)).total_seconds()
    if left_s <= 0:
        raise click.BadParameter("the deadline has passed", param_hint="--deadline")
    if left_s > settings.job_ttl_s:
        raise click.BadParameter(
            f"more than SMSGW_JOB_TTL_S ({settings.job_ttl_s} s) away: the campaign's jobs "
            "would be gone before it",
            param_hint="--deadline",
        )
    return deadline


def _resolve(
    settings: Settings, account: str | None, identity_store: str | None
) -> tuple[float, str | None]:
    """The account's bulk share (segments/s) and the region for national numbers, resolved
    as the workers will resolve them (stored accounts and stores over provisioned ones)."""

    async def resolve() -> ResolvedAccount:
        client: AsyncRedis = AsyncRedis.from_url(
            settings.state_redis_url.get_secret_value(), decode_responses=True
        )
        try:
            view = await AccountStore(client, settings, load_cipher(settings)).view()
        finally:
            await client.aclose()
        return view.resolve(account, identity_store)

    try:
        resolved = asyncio.run(resolve())
        gateway = load_gateway(resolved.account.gateway, settings.gateways_enabled)
    except ConfigurationError as error:
        raise _fail(str(error), EXIT_CONFIG) from None
    except redis_errors() as error:
        raise _fail(f"Redis did not answer ({type(error).__name__})", EXIT_UNAVAILABLE) from None
    rate = account_rate(resolved.account, gateway.metadata.capabilities, settings)
    return rate.rate_per_s * rate.lane_share, resolved.default_region


@campaign_group.command("start")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--template", "-t", required=True,
    help="The text; {name}, {link}, ... come from the file's columns, {code} is a secret.",
)  # fmt: skip
@click.option("--account", default=None, help="Send through this gateway account.")
@click.option("--store", "identity_store", default=None, help="The identity store's account.")
@click.option(
    "--rate", "rate_per_s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="At most this many SMS segments per second (within the account's bulk share).",
)  # fmt: skip
@click.option("--deadline", default=None, help="Finish by this ISO time (e.g. ...T18:00Z).")
@click.option("--name", default=None, help="A unique name [file name + content digest].")
@click.option("--max-length", type=click.IntRange(1, 10_000), default=None, help="Piece size.")
@click.option("--strict", is_flag=True, help="Refuse the whole file if any row is invalid.")
@click.option("--dry-run", is_flag=True, help="Check the file and print the preview only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def start_command(
    file: Path,
    template: str,
    account: str | None,
    identity_store: str | None,
    rate_per_s: float | None,
    deadline: str | None,
    name: str | None,
    max_length: int | None,
    strict: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Start a campaign: one message per recipient of FILE (CSV or JSONL).

    Every row is checked first; refused rows are listed (line and reason) and the rest go,
    unless --strict. A number repeated in the file gets one message. The cost preview
    (recipients, pieces, segments per encoding) comes before anything is sent. Running the
    same start again resumes it (nobody is sent twice).
    """
    settings = get_settings()
    if account and identity_store:
        raise click.UsageError("give --account or --store, not both")
    due = _parse_deadline(deadline, settings)
    try:
        text = Template(template)
        file_format(file)
        if file.suffix.lower() == ".csv":
            text.check_columns(csv_columns(file))
    except CampaignFileError as error:
        raise _fail(str(error), EXIT_INVALID) from None
    bulk_rate, region = _resolve(settings, account, identity_store)
    checker = RowChecker(
        text,
        max_length=max_length or settings.max_length,
        max_parts=settings.max_parts,
        default_region=region,
        allowed_types=settings.allowed_number_types,
    )
    digest = file_digest(file)
    name = name or f"{file.stem}-{digest[:12]}"
    fields = {
        "name": f"dry-run:{name}:{time.time_ns()}" if dry_run else name,
        "file": file.name,
        "file_sha256": digest,
        "template": template,
        "account": account or "",
        "identity_store": identity_store or "",
        "max_length": str(checker.max_length),
        "deadline": due.isoformat() if due else "",
        "requested_rate_per_s": "" if rate_per_s is None else repr(rate_per_s),
    }
    with _store(settings) as store:
        campaign, created = store.create(fields)
        if not created:
            _check_same(campaign, fields)
            if campaign.enqueued:
                _already_started(campaign, as_json)
                return
        try:
            code = _stage_and_publish(
                store, campaign, checker, file, settings,
                bulk_rate=bulk_rate, requested=rate_per_s, due=due,
                strict=strict, dry_run=dry_run, as_json=as_json,
            )  # fmt: skip
        except BaseException:
            if dry_run:
                store.delete(campaign.id)
            raise
    if code != EXIT_OK:
        raise SystemExit(code)


def _check_same(campaign: Campaign, fields: dict[str, str]) -> None:
    for key, label in (("file_sha256", "file"), ("template", "template")):
        if campaign.fields.get(key) != fields[key]:
            raise _fail(
                f"campaign {campaign.name!r} ({campaign.id}) exists with another {label}; "
                "give this one another --name",
                EXIT_INVALID,
            )


def _already_started(campaign: Campaign, as_json: bool) -> None:
    if as_json:
        print_json({"campaign": campaign.summary(), "already_started": True})
        return
    stderr_console().print(
        f"campaign {campaign.name!r} was already started ({campaign.state.value}); "
        f"nothing new enqueued. smsgw campaign status {campaign.id}"
    )
    click.echo(campaign.id)


def _stage_and_publish(
    store: CampaignStore,
    campaign: Campaign,
    checker: RowChecker,
    file: Path,
    settings: Settings,
    *,
    bulk_rate: float,
    requested: float | None,
    due: datetime | None,
    strict: bool,
    dry_run: bool,
    as_json: bool,
) -> int:
    from worker.app import app
    from worker.campaign_enqueue import CampaignEnqueuer

    enqueuer = CampaignEnqueuer(store, app, settings, load_cipher(settings))
    err = stderr_console()
    try:
        with _progress(as_json, "checking and storing rows") as advance:
            enqueuer.stage(campaign, checker, file, on_chunk=lambda p: advance(p.rows))
    except CampaignFileError as error:
        # The same file fails the same way on every run: nothing of it was published, so
        # no half-stored campaign is left behind (in `list`, as running).
        store.delete(campaign.id)
        raise _fail(f"{error}; nothing was sent", EXIT_INVALID) from None
    staged = store.require(campaign.id)
    seconds_left = (due - datetime.now(UTC)).total_seconds() if due else None
    plan = plan_rate(
        staged.count("segments"),
        bulk_rate_per_s=bulk_rate,
        requested_per_s=requested,
        seconds_left=seconds_left,
    )
    invalid = list(_first(store.invalid_rows(campaign.id), _JSON_INVALID))
    too_slow = plan.duration_s > settings.job_ttl_s
    refuse = (strict and staged.count("invalid") > 0) or staged.count("recipients") == 0 or too_slow
    payload = {
        "campaign": {**staged.summary(), "id": None if dry_run or refuse else staged.id},
        "preview": _preview(staged),
        "plan": _plan_json(plan),
        "invalid_rows": invalid,
        "dry_run": dry_run,
        "refused": refuse,
    }
    if as_json and (refuse or dry_run):
        print_json(payload)
    elif not as_json:
        _print_invalid(invalid, staged.count("invalid"))
        _print_preview(staged, plan)
    if refuse or dry_run:
        store.delete(campaign.id)
        if refuse and not as_json:
            why = (
                f"at this pace the campaign needs {_duration(plan.duration_s)}, longer than its "
                f"jobs are kept (SMSGW_JOB_TTL_S, {settings.job_ttl_s} s): raise --rate; "
                "nothing was sent"
                if too_slow
                else f"--strict: {staged.count('invalid')} invalid row(s); nothing was sent"
                if staged.count("recipients")
                else "no valid recipient; nothing was sent"
            )
            err.print(f"[red]{why}[/red]")
        elif not as_json:
            err.print("dry run: nothing was stored or sent")
        return EXIT_INVALID if refuse else EXIT_OK
    store.set_rate(campaign.id, plan.rate_per_s)
    total = staged.count("recipients")
    try:
        with _progress(as_json, "publishing to the bulk lane", total) as advance:
            enqueuer.publish(campaign.id, on_batch=advance)
    except CampaignError as error:
        raise _fail(str(error), EXIT_INVALID) from None
    if as_json:
        print_json({**payload, "campaign": store.require(campaign.id).summary()})
    else:
        err.print(
            f"campaign {staged.name!r} started: {total} recipient(s) on the bulk lane. "
            f"Watch it: smsgw campaign watch {campaign.id}"
        )
        click.echo(campaign.id)
    return EXIT_OK


def _first(rows: Iterator[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for index, row in enumerate(rows):
        if index >= count:
            return
        yield row


@contextmanager
def _progress(quiet: bool, what: str, total: int | None = None) -> Iterator[Any]:
    err = stderr_console()
    if quiet or not err.is_terminal:
        yield lambda _: None
        return
    columns = [TextColumn(what), BarColumn(), TextColumn("{task.completed:,} rows")]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.update(task, completed=done)


def _preview(campaign: Campaign) -> dict[str, Any]:
    encodings = {
        encoding: {
            "recipients": campaign.count(f"recipients:{encoding}"),
            "segments": campaign.count(f"segments:{encoding}"),
        }
        for encoding in ("GSM-7", "UCS-2")
        if campaign.count(f"recipients:{encoding}")
    }
    return {
        "rows": campaign.count("rows"),
        "invalid": campaign.count("invalid"),
        "duplicates": campaign.count("duplicates"),
        "recipients": campaign.count("recipients"),
        "pieces": campaign.count("pieces"),
        "segments": campaign.count("segments"),
        "by_encoding": encodings,
    }


def _plan_json(plan: RatePlan) -> dict[str, Any]:
    return {
        "rate_per_s": plan.rate_per_s,
        "account_bulk_rate_per_s": round(plan.bulk_rate_per_s, 3),
        "deadline_needs_per_s": None if plan.needed_per_s is None else round(plan.needed_per_s, 3),
        "deadline_reachable": plan.reachable,
        "duration_s": round(plan.duration_s, 1),
    }


def _print_invalid(rows: list[dict[str, Any]], total: int) -> None:
    err = stderr_console()
    for row in rows[:_SHOWN_INVALID]:
        shown = f" ({row['number']})" if row.get("number") else ""
        err.print(f"[yellow]line {row['line']}{shown}: {row['reason']}[/yellow]")
    if total > _SHOWN_INVALID:
        err.print(f"[yellow]... and {total - _SHOWN_INVALID} more invalid row(s) (in the report)")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_preview(campaign: Campaign, plan: RatePlan) -> None:
    console = stdout_console()
    preview = _preview(campaign)
    table = Table(*_PREVIEW_COLUMNS)
    table.add_row(*(f"{preview[k]:,}" for k in _PREVIEW_COLUMNS))
    console.print(table)
    for encoding, cost in preview["by_encoding"].items():
        console.print(
            f"  {encoding}: {cost['recipients']:,} recipient(s), {cost['segments']:,} segment(s)"
        )
    pace = plan.rate_per_s or plan.bulk_rate_per_s
    own = "" if plan.rate_per_s else " (the account's bulk share)"
    console.print(f"pace {pace:.4g} segment(s)/s{own}; about {_duration(plan.duration_s)} to send")
    if plan.needed_per_s is not None:
        verdict = (
            "[green]reachable[/green]"
            if plan.reachable
            else "[red]NOT reachable[/red] (recipients not sent by then end expired)"
        )
        console.print(
            f"deadline {campaign.fields.get('deadline')}: needs {plan.needed_per_s:.4g} "
            f"segment(s)/s, the account's bulk share is {plan.bulk_rate_per_s:.4g}/s: {verdict}"
        )


# --- watching and reporting -------------------------------------------------------------------


def _load(store: CampaignStore, campaign_id: str, as_json: bool = False) -> Campaign:
    campaign = store.get(campaign_id.strip())
    if campaign is None:
        message = f"no campaign {campaign_id}: never started here, or its records expired"
        if as_json:
            print_json({"id": campaign_id, "error": message})
            raise SystemExit(EXIT_UNKNOWN_JOB)
        raise _fail(message, EXIT_UNKNOWN_JOB)
    return campaign


@campaign_group.command("status")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(campaign_id: str, as_json: bool) -> None:
    """Show campaign CAMPAIGN_ID: state and counters (exit 5 when unknown)."""
    with _store(get_settings()) as store:
        campaign = _load(store, campaign_id, as_json)
    if as_json:
        print_json(campaign.summary())
        return
    console = stdout_console()
    console.print(_status_table(campaign.summary(), rate=None))
    if not campaign.enqueued:
        # A start that stopped half-way (crash, Ctrl-C): its recipients are not all queued.
        console.print(
            f"[yellow]enqueue incomplete: {campaign.count('rows'):,} row(s) read, "
            f"{campaign.count('published'):,} of {campaign.count('recipients'):,} "
            "recipient(s) queued; run the same `smsgw campaign start` again to finish it"
            "[/yellow]"
        )


def _status_table(summary: dict[str, Any], rate: float | None) -> Table:
    table = Table(title=f"campaign {summary['name']} ({summary['id']}): {summary['state']}")
    for column in ("recipients", "sent", "failed", "expired", "cancelled", "unknown", "remaining"):
        table.add_column(column, justify="right")
    table.add_column("rate/s", justify="right")
    table.add_column("ETA", justify="right")
    eta = "-"
    if rate and summary["remaining"] and summary["state"] == "running":
        eta = _duration(summary["remaining"] / rate)
    table.add_row(
        *(
            f"{summary[k]:,}"
            for k in ("recipients", "sent", "failed", "expired", "cancelled", "unknown")
        ),
        f"{summary['remaining']:,}",
        f"{rate:.1f}" if rate is not None else "-",
        eta,
    )
    return table


@campaign_group.command("watch")
@click.argument("campaign_id")
@click.option(
    "--interval", "interval_s", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
    help="Seconds between refreshes.",
)  # fmt: skip
def watch_command(campaign_id: str, interval_s: float) -> None:
    """Live progress of CAMPAIGN_ID (sent, failed, expired, remaining, rate, ETA).

    Exits when every recipient has an outcome, or on Ctrl-C.
    """
    settings = get_settings()
    with _store(settings) as store:
        campaign = _load(store, campaign_id)
        samples: deque[tuple[float, int]] = deque(maxlen=30)
        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            console=stdout_console(),
        )  # fmt: skip
        task = bar.add_task("done", total=max(1, campaign.count("recipients")))
        try:
            with Live(console=stdout_console(), refresh_per_second=4) as live:
                while True:
                    summary = campaign.summary()
                    samples.append((time.monotonic(), summary["done"]))
                    rate = _rate(samples)
                    bar.update(task, completed=summary["done"], total=max(1, summary["recipients"]))
                    live.update(Group(bar, _status_table(summary, rate)))
                    if _settled(campaign):
                        break
                    time.sleep(interval_s)
                    campaign = _load(store, campaign_id)
        except KeyboardInterrupt:
            pass


def _settled(campaign: Campaign) -> bool:
    return (campaign.enqueued and campaign.remaining == 0) or campaign.state in _FINAL


def _rate(samples: deque[tuple[float, int]]) -> float | None:
    if len(samples) < 2:
        return None
    (t0, d0), (t1, d1) = samples[0], samples[-1]
    return (d1 - d0) / (t1 - t0) if t1 > t0 else None


@campaign_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(as_json: bool) -> None:
    """Every campaign still kept, newest first."""
    with _store(get_settings()) as store:
        campaigns = [c.summary() for c in store.all()]
    if as_json:
        print_json(campaigns)
        return
    table = Table("id", "name", "state", "created", "recipients", "sent", "failed", "remaining")
    for c in campaigns:
        table.add_row(
            c["id"], c["name"], c["state"], str(c["created_at"]),
            *(f"{c[k]:,}" for k in ("recipients", "sent", "failed", "remaining")),
        )  # fmt: skip
    stdout_console().print(table)


def _transition(campaign_id: str, action: str, as_json: bool) -> None:
    with _store(get_settings()) as store:
        _load(store, campaign_id, as_json)
        try:
            state = store.transition(campaign_id.strip(), action)
        except CampaignError as error:
            if as_json:
                print_json({"id": campaign_id, "error": str(error)})
                raise SystemExit(EXIT_INVALID) from None
            raise _fail(str(error), EXIT_INVALID) from None
    if as_json:
        print_json({"id": campaign_id, "state": state.value})
        return
    notes = {
        CampaignState.PAUSED: "no new sends until resumed; sends in flight finish",
        CampaignState.RUNNING: "sending again",
        CampaignState.CANCELLED: "queued recipients end cancelled; none is sent from now on",
    }
    stdout_console().print(f"campaign {campaign_id}: {state.value} ({notes[state]})")


@campaign_group.command("pause")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pause_command(campaign_id: str, as_json: bool) -> None:
    """Pause CAMPAIGN_ID: no new sends until resumed (sends in flight finish)."""
    _transition(campaign_id, "pause", as_json)


@campaign_group.command("resume")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def resume_command(campaign_id: str, as_json: bool) -> None:
    """Resume a paused CAMPAIGN_ID."""
    _transition(campaign_id, "resume", as_json)


@campaign_group.command("cancel")
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cancel_command(campaign_id: str, as_json: bool) -> None:
    """Cancel CAMPAIGN_ID: queued recipients end cancelled and are never sent."""
    _transition(campaign_id, "cancel", as_json)


REPORT_COLUMNS = (
    "phone_number",
    "status",
    "provider_message_ids",
    "segments",
    "reason",
    "line",
    "job_id",
)


@campaign_group.command("report")
@click.argument("campaign_id")
@click.option(
    "--csv", "csv_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the report ('-' for standard output).",
)  # fmt: skip
def report_command(campaign_id: str, csv_path: str) -> None:
    """Write one CSV row per recipient of CAMPAIGN_ID (and per refused row); never a code.

    Columns: phone_number (E.164; refused rows masked), status, provider_message_ids,
    segments, reason, line (refused rows), job_id. Recipients still in flight show
    ``queued``.
    """
    with _store(get_settings()) as store:
        campaign = _load(store, campaign_id)
        if csv_path == "-":
            rows = _write_report(store, campaign, sys.stdout)
        else:
            with open(csv_path, "w", newline="", encoding="utf-8") as handle:
                rows = _write_report(store, campaign, handle)
    if csv_path != "-":
        stderr_console().print(f"{rows:,} row(s) written to {csv_path}")


def _write_report(store: CampaignStore, campaign: Campaign, handle: IO[str]) -> int:
    writer = csv.writer(handle)
    writer.writerow(REPORT_COLUMNS)
    count = 0
    missing: list[str] = []

    def flush_missing() -> None:
        # Recipients without an outcome yet: their number comes from the stored job.
        jobs = store.redis.mget([job_key(j) for j in missing]) if missing else []
        for job_id, raw in zip(missing, jobs, strict=True):
            number, reason = "", "the job's record expired"
            if raw:
                number = str((json.loads(raw)["message"].get("phone_numbers") or [""])[0])
                reason = ""
            writer.writerow([number, "queued", "", 0, reason, "", job_id])
        missing.clear()

    for job_id, outcome in store.outcomes(campaign.id):
        count += 1
        if outcome is None:
            missing.append(job_id)
            if len(missing) >= 1000:
                flush_missing()
            continue
        writer.writerow(
            [
                outcome.e164,
                outcome.status,
                " ".join(outcome.provider_ids),
                outcome.segments,
                outcome.reason,
                "",
                job_id,
            ]
        )
    flush_missing()
    for row in store.invalid_rows(campaign.id):
        count += 1
        writer.writerow([row["number"] or "", "invalid", "", 0, row["reason"], row["line"], ""])
    return count
