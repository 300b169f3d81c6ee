"""``smsgw gateways list|describe`` and ``smsgw sandbox``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from config.settings import get_settings
from gateways.base import GENERIC_FIELDS, SmsGateway
from gateways.errors import ConfigurationError
from gateways.registry import discover, load_gateway
from worker.cli_output import (
    EXIT_CONFIG,
    print_json,
    stdout_console,
)

__all__ = ["gateways_group", "sandbox_command"]


@click.group("gateways")
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
        print_json(rows)
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
    stdout_console().print(table)


@gateways_group.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def gateways_describe(name: str, as_json: bool) -> None:
    """Metadata, required fields, field mapping and options of gateway NAME."""
    try:
        cls = load_gateway(name, get_settings().gateways_enabled)
    except ConfigurationError as error:
        stdout_console().print(f"[red]{error}[/red]")
        raise SystemExit(EXIT_CONFIG) from error
    info = _describe(cls)
    if as_json:
        print_json(info)
        return
    console = stdout_console()
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


@click.command("sandbox")
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
    console = stdout_console()
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
