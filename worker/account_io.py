"""Import and export of accounts, identity stores and the default account (YAML).

The format is shown in ``config/accounts.example.yaml``. Any string value may be an
environment reference, ``${VAR}``, expanded on import; secrets should always be. Import is
idempotent: an account, store or default that already holds the same values is left alone
and reported ``unchanged``, and the whole file is checked before anything is written.
Export never writes a secret in clear: each one becomes a reference
(``${SMSGW_ACCOUNT_<NAME>_PASSWORD}``), or is left out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gateways.models import GatewayAccount
from worker.account_store import (
    SECRET_FIELDS,
    AccountNotFound,
    AccountStore,
    AccountView,
    InvalidAccount,
    build_account,
    validate_account,
)

__all__ = [
    "AccountsFile",
    "ImportReport",
    "StoreEntry",
    "export_document",
    "import_document",
    "load_document",
    "secret_variable",
]

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Outcome = Literal["created", "updated", "unchanged"]


class StoreEntry(BaseModel):
    """One identity store in the file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    account: str | None = None
    default_region: str | None = None


class AccountsFile(BaseModel):
    """The file: accounts (generic fields), the default, identity stores."""

    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    accounts: list[dict[str, Any]] = []
    identity_stores: list[StoreEntry] = []


@dataclass
class ImportReport:
    """What an import did, per account and store, plus warnings."""

    accounts: dict[str, Outcome] = field(default_factory=dict)
    stores: dict[str, Outcome] = field(default_factory=dict)
    default: Outcome | None = None
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "accounts": self.accounts,
            "identity_stores": self.stores,
            "default": self.default,
            "warnings": self.warnings,
        }

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        outcomes = [*self.accounts.values(), *self.stores.values(), self.default]
        return any(o not in (None, "unchanged") for o in outcomes)


def load_document(path: Path) -> AccountsFile:
    """Read and shape-check an accounts file.

    Raises:
        InvalidAccount: Not YAML, or not the expected shape (the message names where).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InvalidAccount(f"{path}: not valid YAML ({error})") from None
    try:
        return AccountsFile.model_validate(data or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidAccount(f"{path}: {problems}") from None


def secret_variable(account: str, secret: str) -> str:
    """The environment variable an export refers to for one secret of one account."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", account).strip("_").upper()
    return f"SMSGW_ACCOUNT_{name}_{secret.upper()}"


def _expand(account: str, fields: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    expanded: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, str):

            def lookup(match: re.Match[str], key: str = key) -> str:
                variable = match.group(1)
                if variable not in environ:
                    raise InvalidAccount(
                        f"account {account!r}, field {key}: environment variable {variable} "
                        "is not set"
                    )
                return environ[variable]

            value = _REFERENCE.sub(lookup, value)
        expanded[key] = value
    return expanded


def _prepare(
    document: AccountsFile, environ: Mapping[str, str], report: ImportReport
) -> list[GatewayAccount]:
    accounts: list[GatewayAccount] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.accounts):
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidAccount(f"accounts[{index}]: every account needs a name")
        if name in seen:
            raise InvalidAccount(f"account {name!r} appears twice in the file")
        seen.add(name)
        for secret in SECRET_FIELDS:
            value = raw.get(secret)
            if isinstance(value, str) and value and not _REFERENCE.fullmatch(value.strip()):
                report.warnings.append(
                    f"account {name!r}: {secret} is written in clear in the file; "
                    f"prefer a reference such as ${{{secret_variable(name, secret)}}}"
                )
        accounts.append(build_account(_expand(name, raw, environ)))
    return accounts


async def import_document(
    store: AccountStore, document: AccountsFile, environ: Mapping[str, str] | None = None
) -> ImportReport:
    """Create or update what the file describes; unchanged items are left alone.

    Every account is built, its references expanded and checked against its gateway type
    before the first write, so a bad file changes nothing.

    Raises:
        InvalidAccount: A problem in the file (names the account, field, variable).
        AccountNotFound: A store or the default names an account that exists nowhere.
        AccountConflict: The file would change a provisioned (environment) item.
    """
    environ = os.environ if environ is None else environ
    report = ImportReport()
    accounts = _prepare(document, environ, report)
    for account in accounts:
        validate_account(account, store.settings.gateways_enabled)
    view = await store.view()
    known = set(view.account_names()) | {a.name for a in accounts}
    wanted = [(s.account, f"identity store {s.name!r}") for s in document.identity_stores]
    for name, where in [*wanted, (document.default, "the default")]:
        if name is not None and name not in known:
            raise AccountNotFound(f"{where}: gateway account {name!r} exists nowhere")
    for account in accounts:
        report.accounts[account.name] = await store.put(account)
    for entry in document.identity_stores:
        report.stores[entry.name] = await store.put_store(
            entry.name, account=entry.account, default_region=entry.default_region
        )
    if document.default is not None:
        current = (await store.snapshot()).default
        if current == document.default:
            report.default = "unchanged"
        else:
            await store.set_default(document.default)
            report.default = "updated" if current else "created"
    return report


def export_document(view: AccountView, *, omit_secrets: bool = False) -> dict[str, Any]:
    """The stored accounts, stores and default as a file; secrets as references or omitted.

    Provisioned (environment) accounts and stores are not exported: they are configured
    where they come from.
    """
    accounts: list[dict[str, Any]] = []
    for name, source in view.account_names().items():
        if source != "stored":
            continue
        account = view.account(name)
        fields = account.model_dump(
            mode="json", exclude=set[str](SECRET_FIELDS), exclude_none=True, exclude_defaults=True
        )
        fields = {"name": account.name, "gateway": account.gateway, **fields}
        if not omit_secrets:
            for secret in SECRET_FIELDS:
                if account.secret(secret) is not None:
                    fields[secret] = f"${{{secret_variable(name, secret)}}}"
        accounts.append(fields)
    stores = [
        {
            key: value
            for key, value in {
                "name": s.name,
                "account": s.account,
                "default_region": s.default_region,
            }.items()
            if value is not None
        }
        for s in view.stores()
        if s.source == "stored"
    ]
    document: dict[str, Any] = {}
    if view.snapshot.default is not None:
        document["default"] = view.snapshot.default
    document["accounts"] = accounts
    document["identity_stores"] = stores
    return document
