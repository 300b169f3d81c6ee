"""``smsgw accounts ...``, ``smsgw stores ...`` and ``smsgw keys rotate``.

Gateway accounts and identity stores live in the state store (:mod:`worker.account_store`);
workers pick up changes within about a second. Secrets are never taken from a plain
command-line argument without a warning (shell history), never printed, never exported.

Exit codes: 0 done, 1 invalid input or a failed account test, 3 configuration (no key,
wrong key), 5 no such account or store, 6 Redis unreachable, 8 conflict (name taken,
still linked, read-only, the default).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml
from rich.markup import escape
from rich.table import Table

from config.settings import Settings, get_settings
from gateways.errors import ConfigurationError, InvalidRecipient
from gateways.models import GatewayAccount
from gateways.registry import load_gateway
from worker.account_checks import CHECKS, Check, CheckRow, run_checks
from worker.account_io import (
    export_document,
    import_document,
    load_document,
    referenced_variables,
)
from worker.account_store import (
    SECRET_FIELDS,
    AccountConflict,
    AccountNotFound,
    AccountStore,
    AccountUnreadable,
    AccountView,
    IdentityStore,
    InvalidAccount,
    build_account,
)
from worker.accounts import NoAccount
from worker.cli_output import (
    EXIT_CONFIG,
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    print_json,
    stderr_console,
    stdout_console,
)
from worker.crypto import Cipher, load_cipher
from worker.validation import normalize_number, number_region

__all__ = ["accounts_group", "keys_rotate", "stored_store_region", "stores_group"]

T = TypeVar("T")
MASK = "********"

# Plain fields settable from the command line: option name -> account field.
_PLAIN_OPTIONS = {
    "description": "description",
    "account_id": "account_id",
    "user_id": "user_id",
    "url": "url",
    "sender": "sender",
    "proxy_host": "proxy_host_name",
    "proxy_domain": "proxy_domain",
    "proxy_port": "proxy_port",
    "proxy_username": "proxy_username",
    "proxy_description": "proxy_description",
    "rate": "rate_per_s",
    "bulk_share": "bulk_share",
    "countries": "countries",
}


# --- plumbing -------------------------------------------------------------------------------


def _cipher(settings: Settings) -> Cipher | None:
    """The key for secrets; ``None`` when none is set outside development (writes refused)."""
    if settings.secret_key is None and settings.environment != "development":
        return None
    return load_cipher(settings)  # development: the local stack's key under .smsgw/


def _with_store(work: Callable[[AccountStore], Awaitable[T]]) -> T:
    """Run ``work`` against the account store, mapping its errors to exit codes."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    settings = get_settings()

    async def main() -> T:
        client: Redis = Redis.from_url(
            settings.state_redis_url.get_secret_value(), decode_responses=True
        )
        try:
            return await work(AccountStore(client, settings, _cipher(settings)))
        finally:
            await client.aclose()

    with _exits():
        try:
            return asyncio.run(main())
        except (RedisError, ConnectionError, TimeoutError) as error:
            stderr_console().print(
                f"[red]the state store did not answer ({type(error).__name__}: {error}); "
                "is SMSGW_STATE_REDIS_URL set?[/red]"
            )
            raise SystemExit(EXIT_UNAVAILABLE) from None


@contextmanager
def _exits() -> Iterator[None]:
    try:
        yield
    except AccountUnreadable as error:  # a key problem, not a missing account
        _fail(error, EXIT_CONFIG)
    except (AccountNotFound, NoAccount) as error:
        _fail(error, EXIT_NOT_FOUND)
    except AccountConflict as error:
        _fail(error, EXIT_CONFLICT)
    except InvalidAccount as error:
        _fail(error, EXIT_INVALID)
    except ConfigurationError as error:
        _fail(error, EXIT_CONFIG)


def _fail(error: Exception, code: int) -> NoReturn:
    stderr_console().print(f"[red]{escape(str(error))}[/red]")
    raise SystemExit(code) from None


def _public(account: GatewayAccount) -> dict[str, Any]:
    """The account's fields with every secret masked."""
    fields = account.model_dump(mode="json")
    for name in SECRET_FIELDS:
        fields[name] = MASK if account.secret(name) is not None else None
    return fields


def _effective_url(account: GatewayAccount, settings: Settings) -> str | None:
    if account.url:
        return account.url
    try:
        return load_gateway(account.gateway, settings.gateways_enabled).metadata.url
    except ConfigurationError:
        return None


def _read_secret(option: str, env_var: str | None, from_stdin: bool) -> str | None:
    if env_var and from_stdin:
        raise click.UsageError(f"give --{option}-env or --{option}-stdin, not both")
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise click.BadParameter(
                f"environment variable {env_var} is not set", param_hint=f"--{option}-env"
            )
        return value
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return None


def _secrets(
    *,
    password: str | None,
    password_env: str | None,
    password_stdin: bool,
    proxy_password_env: str | None,
    proxy_password_stdin: bool,
) -> dict[str, str]:
    found: dict[str, str] = {}
    if password is not None:
        stderr_console().print(
            "[yellow]warning: --password puts the secret in your shell history and the process "
            "list; prefer --password-env or --password-stdin[/yellow]"
        )
        found["password"] = password
    value = _read_secret("password", password_env, password_stdin)
    if value is not None:
        if "password" in found:
            raise click.UsageError("give one of --password, --password-env, --password-stdin")
        found["password"] = value
    value = _read_secret("proxy-password", proxy_password_env, proxy_password_stdin)
    if value is not None:
        found["proxy_password"] = value
    return found


def _secret_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--password", default=None, hidden=True,
            help="The password in clear (lands in shell history: prefer the next two).",
        ),
        click.option("--password-env", metavar="VAR", help="Read the password from env VAR."),
        click.option("--password-stdin", is_flag=True, help="Read the password from stdin."),
        click.option("--proxy-password-env", metavar="VAR", help="Proxy password from env VAR."),
        click.option(
            "--proxy-password-stdin", is_flag=True,
            help="Read the proxy password from stdin (after the password, if both).",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _field_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--description", help="What the account is for."),
        click.option("--account-id", help="Generic field account_id (see gateways describe)."),
        click.option("--user-id", help="Generic field user_id."),
        click.option("--url", help="Provider base URL [the gateway type's default]."),
        click.option("--sender", help="Sender id or number."),
        click.option("--proxy-host", help="Proxy host name."),
        click.option("--proxy-domain", help="Proxy domain (used when no host name)."),
        click.option("--proxy-port", type=click.IntRange(1, 65535), help="Proxy port."),
        click.option("--proxy-username", help="Proxy user."),
        click.option("--proxy-description", help="What the proxy is."),
        click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Segments/s."),
        click.option(
            "--bulk-share", type=click.FloatRange(0, 1, min_open=True),
            help="The bulk lane's share of the rate [SMSGW_BULK_SHARE].",
        ),
        click.option("--countries", help="Allowed recipient countries, e.g. GB,IE [any]."),
        click.option(
            "--option", "options", multiple=True, metavar="KEY=VALUE",
            help="A provider option (repeatable); VALUE is read as YAML.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _plain_fields(values: dict[str, Any]) -> dict[str, Any]:
    return {
        field: values[option]
        for option, field in _PLAIN_OPTIONS.items()
        if values.get(option) is not None
    }


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def _prompt_missing_password(fields: dict[str, Any], settings: Settings) -> None:
    """Ask for a required password on a terminal (hidden), as the last resort."""
    if fields.get("password") is not None or not sys.stdin.isatty():
        return
    try:
        meta = load_gateway(str(fields.get("gateway")), settings.gateways_enabled).metadata
    except ConfigurationError:
        return
    if meta.password_required:
        fields["password"] = click.prompt(meta.label("password"), hide_input=True)


def stored_store_region(settings: Settings, identity_store: str) -> str | None:
    """The default region of a stored identity store, for checking numbers before enqueueing.

    ``None`` when the store is unknown or the state store does not answer: the worker, which
    resolves the store itself, has the last word.
    """
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def main() -> str | None:
        client: Redis = Redis.from_url(
            settings.state_redis_url.get_secret_value(), decode_responses=True
        )
        try:
            link = await AccountStore(client, settings, None).stored_store(identity_store)
        finally:
            await client.aclose()
        return link.default_region if link else None

    try:
        return asyncio.run(main())
    except (RedisError, ConnectionError, TimeoutError):
        return None


# --- accounts -------------------------------------------------------------------------------


@click.group("accounts")
def accounts_group() -> None:
    """Gateway accounts: create, modify, default, test, delete, import, export."""


def _account_row(view: AccountView, name: str, settings: Settings) -> dict[str, Any]:
    source = view.account_names()[name]
    row: dict[str, Any] = {"name": name, "source": source, "default": view.default == name}
    row["identity_stores"] = view.linked_stores(name)
    try:
        account = view.account(name)
    except NoAccount as error:
        row["error"] = str(error)
        return row
    row.update(_public(account))
    row["effective_url"] = _effective_url(account, settings)
    return row


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def accounts_list(as_json: bool) -> None:
    """Every gateway account, stored or from the environment (secrets masked)."""
    settings = get_settings()

    async def work(store: AccountStore) -> list[dict[str, Any]]:
        view = await store.view()
        return [_account_row(view, name, settings) for name in view.account_names()]

    rows = _with_store(work)
    if as_json:
        print_json(rows)
        return
    table = Table("name", "gateway", "source", "default", "sender", "rate/s", "stores", "notes")
    for row in rows:
        table.add_row(
            row["name"],
            row.get("gateway", "?"),
            row["source"],
            "yes" if row["default"] else "",
            row.get("sender") or "-",
            str(row.get("rate_per_s") or "type default"),
            ", ".join(row["identity_stores"]) or "-",
            f"[red]{row['error']}[/red]" if row.get("error") else row.get("description") or "",
        )
    stdout_console().print(table)


@accounts_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def accounts_show(name: str, as_json: bool) -> None:
    """Every field of account NAME (secrets masked), its source and linked stores."""
    settings = get_settings()

    async def work(store: AccountStore) -> dict[str, Any]:
        view = await store.view()
        if view.source(name) is None:
            raise AccountNotFound(f"gateway account {name!r} does not exist")
        view.account(name)  # a key that cannot open its secrets: say so (exit 3)
        return _account_row(view, name, settings)

    row = _with_store(work)
    if as_json:
        print_json(row)
        return
    table = Table("field", "value")
    for key, value in row.items():
        if key == "url" and not value:
            value = f"(type default) {row['effective_url'] or '-'}"
        if key == "effective_url":
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
        table.add_row(key, "-" if shown in (None, "", {}) else str(shown))
    stdout_console().print(table)


@accounts_group.command("create")
@click.argument("name")
@click.option("--gateway", "gateway", required=True, help="Gateway type (smsgw gateways list).")
@_field_options
@_secret_options
@click.option("--default", "make_default", is_flag=True, help="Also make it the default.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def accounts_create(
    name: str, gateway: str, make_default: bool, as_json: bool, **values: Any
) -> None:
    """Create gateway account NAME of type GATEWAY, checked against the type's metadata."""
    settings = get_settings()
    fields: dict[str, Any] = {"name": name, "gateway": gateway, **_plain_fields(values)}
    fields["options"] = _parse_options(values.pop("options"))
    fields.update(_secrets(**_secret_values(values)))
    _prompt_missing_password(fields, settings)
    with _exits():
        account = build_account(fields)

    async def work(store: AccountStore) -> None:
        await store.create(account)
        if make_default:
            await store.set_default(name)

    _with_store(work)
    _done(as_json, {"created": name, "default": make_default, "account": _public(account)},
          f"created gateway account {name!r} ({account.gateway})"
          + (", now the default" if make_default else ""))  # fmt: skip


def _secret_values(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("password", "password_env", "password_stdin", "proxy_password_env")
    picked = {key: values.pop(key) for key in keys}
    picked["proxy_password_stdin"] = values.pop("proxy_password_stdin")
    return picked


def _done(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        print_json(payload)
    else:
        stdout_console().print(text)


@accounts_group.command("modify")
@click.argument("name")
@_field_options
@_secret_options
@click.option(
    "--clear", "clear", multiple=True, metavar="FIELD",
    help="Unset a field (repeatable): e.g. --clear sender --clear proxy_password.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def accounts_modify(name: str, clear: tuple[str, ...], as_json: bool, **values: Any) -> None:
    """Change fields of stored account NAME; running workers pick it up within a second."""
    changes = _plain_fields(values)
    options = values.pop("options")
    if options:
        changes["options"] = _parse_options(options)
    changes.update(_secrets(**_secret_values(values)))
    settable = set(GatewayAccount.model_fields) - {"name", "gateway"}
    for field in clear:
        if field not in settable:
            raise click.BadParameter(
                f"{field!r} is not a field that can be cleared ({', '.join(sorted(settable))})",
                param_hint="--clear",
            )
        changes[field] = GatewayAccount.model_fields[field].get_default(call_default_factory=True)
    if not changes:
        raise click.UsageError("nothing to change: give at least one field option or --clear")

    async def work(store: AccountStore) -> GatewayAccount:
        return await store.modify(name, changes)

    account = _with_store(work)
    _done(as_json, {"modified": name, "fields": sorted(changes), "account": _public(account)},
          f"modified gateway account {name!r}: {', '.join(sorted(changes))}")  # fmt: skip


@accounts_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete even the default account (warns).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def accounts_delete(name: str, force: bool, as_json: bool) -> None:
    """Delete stored account NAME; refused while identity stores link to it."""

    async def work(store: AccountStore) -> list[str]:
        return await store.delete(name, force=force)

    warnings = _with_store(work)
    for warning in warnings:
        stderr_console().print(f"[yellow]warning: {escape(warning)}[/yellow]")
    _done(as_json, {"deleted": name, "warnings": warnings}, f"deleted gateway account {name!r}")


@accounts_group.command("default")
@click.argument("name", required=False)
@click.option("--clear", is_flag=True, help="Clear the stored default.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def accounts_default(name: str | None, clear: bool, as_json: bool) -> None:
    """Show the default account, or make NAME the default (new stores link to it)."""
    if name and clear:
        raise click.UsageError("give NAME or --clear, not both")

    async def work(store: AccountStore) -> str | None:
        if name or clear:
            await store.set_default(name)
        return (await store.view()).default

    default = _with_store(work)
    _done(as_json, {"default": default}, f"default account: {default or '(none)'}")


@accounts_group.command("test")
@click.argument("name")
@click.option("--to", "to", default=None, help="Send a real test message to this number (+...).")
@click.option("--credentials", "checks", flag_value="credentials", multiple=True)
@click.option("--connection", "checks", flag_value="connection", multiple=True)
@click.option("--proxy", "checks", flag_value="proxy", multiple=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def accounts_test(name: str, to: str | None, checks: tuple[str, ...], as_json: bool) -> None:
    """Test account NAME against its provider; exit 1 when any check fails.

    --credentials, --connection and --proxy run the adapter's checks; --to sends a real
    message (number in international format). With no option: connection, credentials and
    proxy, in a table.
    """
    settings = get_settings()
    chosen: list[Check] = [c for c in CHECKS if c in checks]
    recipient: str | None = None
    if to is not None:
        try:
            recipient = normalize_number(to, None, settings.allowed_number_types)
        except InvalidRecipient as error:
            raise click.BadParameter(
                f"{error.reason} (give it in international format, e.g. +447911123456)",
                param_hint="--to",
            ) from None
        chosen.append("send")
    if not chosen:
        chosen = list(CHECKS)

    async def work(store: AccountStore) -> list[CheckRow]:
        account = (await store.view()).account(name)
        if recipient is not None and account.countries:
            region = number_region(recipient)
            if region not in account.countries:  # as jobs are refused: before sending
                raise click.BadParameter(
                    f"a number of {region or 'no known country'}; account {name!r} sends only "
                    f"to {', '.join(account.countries)}",
                    param_hint="--to",
                )
        return await run_checks(account, settings, chosen, to=recipient)

    rows = _with_store(work)
    if as_json:
        print_json({"account": name, "ok": all(r.ok for r in rows),
                    "checks": [r.as_json() for r in rows]})  # fmt: skip
    else:
        table = Table("check", "result", "reason")
        for row in rows:
            verdict = (
                "[dim]skipped[/dim]" if row.skipped
                else "[green]pass[/green]" if row.ok else "[red]fail[/red]"
            )  # fmt: skip
            table.add_row(row.check, verdict, row.reason)
        stdout_console().print(table)
    raise SystemExit(EXIT_OK if all(r.ok for r in rows) else EXIT_INVALID)


@accounts_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def accounts_import(path: Path, as_json: bool) -> None:
    """Create or update accounts, stores and the default from PATH (YAML; idempotent).

    Values may be ${VAR} references to the environment; secrets should be.
    """
    with _exits():
        document = load_document(path)
    report = _with_store(lambda store: import_document(store, document))
    for warning in report.warnings:
        stderr_console().print(f"[yellow]warning: {escape(warning)}[/yellow]")
    if as_json:
        print_json(report.as_json())
        return
    table = Table("kind", "name", "result")
    for account, outcome in report.accounts.items():
        table.add_row("account", account, outcome)
    for store_name, outcome in report.stores.items():
        table.add_row("identity store", store_name, outcome)
    if report.default is not None:
        table.add_row("default", document.default or "", report.default)
    stdout_console().print(table)


@accounts_group.command("export")
@click.option("--omit-secrets", is_flag=True, help="Leave secrets out instead of ${VAR}.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file [stdout].",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML (same content).")
def accounts_export(omit_secrets: bool, output: Path | None, as_json: bool) -> None:
    """Write stored accounts, stores and the default as YAML; never a secret in clear."""

    async def work(store: AccountStore) -> dict[str, Any]:
        return export_document(await store.view(), omit_secrets=omit_secrets)

    document = _with_store(work)
    if as_json:
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        stderr_console().print(f"wrote {output}")
    variables = referenced_variables(document)
    if variables:
        stderr_console().print(
            "secrets are references; set these before importing: " + ", ".join(variables)
        )


# --- identity stores ------------------------------------------------------------------------


@click.group("stores")
def stores_group() -> None:
    """Identity stores (tenants) and the gateway account each one's jobs go through."""


def _store_json(store: IdentityStore) -> dict[str, Any]:
    return {
        "name": store.name,
        "account": store.account,
        "default_region": store.default_region,
        "source": store.source,
    }


def _print_stores(stores: list[IdentityStore], default: str | None) -> None:
    table = Table("identity store", "account", "default region", "source")
    for store in stores:
        account = store.account or f"[dim](default: {default or 'none'})[/dim]"
        table.add_row(store.name, account, store.default_region or "-", store.source)
    stdout_console().print(table)


@stores_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stores_list(as_json: bool) -> None:
    """Every identity store and its linked account."""

    async def work(store: AccountStore) -> tuple[list[IdentityStore], str | None]:
        view = await store.view()
        return view.stores(), view.default

    stores, default = _with_store(work)
    if as_json:
        print_json([_store_json(s) for s in stores])
    else:
        _print_stores(stores, default)


@stores_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stores_show(name: str, as_json: bool) -> None:
    """Identity store NAME, and the account its jobs resolve to."""

    async def work(store: AccountStore) -> dict[str, Any]:
        view = await store.view()
        found = view.store(name)
        if found is None:
            raise AccountNotFound(f"identity store {name!r} does not exist")
        row = _store_json(found)
        try:
            row["resolves_to"] = view.resolve(None, name).account.name
        except NoAccount as error:
            row["resolves_to"] = None
            row["problem"] = str(error)
        return row

    row = _with_store(work)
    if as_json:
        print_json(row)
        return
    table = Table("field", "value")
    for key, value in row.items():
        table.add_row(key, str(value) if value is not None else "-")
    stdout_console().print(table)


@stores_group.command("create")
@click.argument("name")
@click.option("--account", default=None, help="Link this account [the default account].")
@click.option("--region", default=None, help="Default region for national numbers, e.g. GB.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stores_create(name: str, account: str | None, region: str | None, as_json: bool) -> None:
    """Create identity store NAME; without --account it links the default account."""

    async def work(store: AccountStore) -> IdentityStore:
        return await store.create_store(name, account=account, default_region=region)

    created = _with_store(work)
    linked = created.account or "no account (no default is set)"
    _done(as_json, _store_json(created), f"created identity store {name!r}, linked to {linked}")


@stores_group.command("delete")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stores_delete(name: str, as_json: bool) -> None:
    """Delete identity store NAME (its account stays)."""

    async def work(store: AccountStore) -> None:
        await store.delete_store(name)

    _with_store(work)
    _done(as_json, {"deleted": name}, f"deleted identity store {name!r}")


@stores_group.command("link")
@click.argument("name")
@click.argument("account")
@click.option("--region", default=None, help="Also set the default region, e.g. GB.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stores_link(name: str, account: str, region: str | None, as_json: bool) -> None:
    """Link identity store NAME to gateway ACCOUNT."""

    async def work(store: AccountStore) -> IdentityStore:
        return await store.link(name, account, default_region=region)

    linked = _with_store(work)
    _done(as_json, _store_json(linked), f"identity store {name!r} now uses account {account!r}")


@stores_group.command("region")
@click.argument("name")
@click.argument("region", required=False)
@click.option("--clear", is_flag=True, help="Clear it (SMSGW_DEFAULT_REGION applies).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stores_region(name: str, region: str | None, clear: bool, as_json: bool) -> None:
    """Set identity store NAME's default REGION for national numbers (e.g. GB)."""
    if bool(region) == clear:
        raise click.UsageError("give REGION or --clear")

    async def work(store: AccountStore) -> IdentityStore:
        return await store.set_region(name, None if clear else region)

    changed = _with_store(work)
    shown = changed.default_region or "(none: SMSGW_DEFAULT_REGION applies)"
    _done(as_json, _store_json(changed), f"identity store {name!r}: default region {shown}")


@stores_group.command("unlink")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stores_unlink(name: str, as_json: bool) -> None:
    """Unlink identity store NAME; its jobs then use the default account."""

    async def work(store: AccountStore) -> IdentityStore:
        return await store.link(name, None)

    unlinked = _with_store(work)
    _done(as_json, _store_json(unlinked), f"identity store {name!r} now uses the default account")


# --- keys -----------------------------------------------------------------------------------


@click.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def keys_rotate(as_json: bool) -> None:
    """Re-encrypt every stored secret with the first key of SMSGW_SECRET_KEY.

    Account secrets and the access codes of stored jobs. Rotation: put the new key first
    (SMSGW_SECRET_KEY=new,old) on every producer, worker and operator, run this, then drop
    the old key.
    """
    from worker.rotation import JobRotation, rotate_job_codes

    async def work(store: AccountStore) -> tuple[int, JobRotation]:
        accounts = await store.rotate()  # refuses without a key, names an unreadable account
        assert store.cipher is not None
        return accounts, await rotate_job_codes(store.redis, store.cipher)

    accounts, jobs = _with_store(work)
    if jobs.unreadable:
        stderr_console().print(
            f"[yellow]warning: {jobs.unreadable} stored job(s) have an access code that opens "
            "with none of the keys; they were left as they are and fail when dispatched[/yellow]"
        )
    _done(
        as_json,
        {"rotated": accounts, "jobs_rotated": jobs.rotated, "jobs_unreadable": jobs.unreadable},
        f"re-encrypted {accounts} account secret(s) and {jobs.rotated} stored job code(s) "
        "with the first key",
    )
