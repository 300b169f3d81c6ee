"""The ``smsgw`` command line: rich tables for people, ``--json`` for scripts.

Exit codes are named below; 2 is click's own usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from config.settings import get_settings
from gateways.base import GENERIC_FIELDS, SmsGateway
from gateways.errors import ConfigurationError, InvalidMessage, InvalidRecipient
from gateways.registry import discover, load_gateway
from worker.segmentation import segment, split_pieces
from worker.validation import normalize_number

__all__ = ["EXIT_CONFIG", "EXIT_INVALID", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_INVALID = 1  # some input was refused; the output says which and why
EXIT_CONFIG = 3  # a gateway or setting is unknown or broken


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


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


if __name__ == "__main__":
    main()
