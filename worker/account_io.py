"""Import and export of accounts, identity stores and the default account (YAML).

The format is shown in ``config/accounts.example.yaml``. Any string value may be an
environment reference, ``${VAR}``, expanded on import; secrets should always be. Import is
idempotent: an account, store or default that already holds the same values is left alone
and reported ``unchanged``, and the whole file is checked before anything is written.
Export never writes a secret in clear: each one becomes a reference
(``${SMSGW_ACCOUNT_<NAME>_PASSWORD}``), or is left out.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gateways.models import GatewayAccount
from worker.account_store import (
    SECRET_FIELDS,
    AccountStore,
    AccountView,
    IdentityStore,
    InvalidAccount,
    Outcome,
    build_account,
    stored_fields,
    stored_secrets,
)

__all__ = [
    "AccountsFile",
    "ImportReport",
    "StoreEntry",
    "export_document",
    "import_document",
    "load_document",
    "referenced_variables",
    "secret_variable",
]

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        raise InvalidAccount(f"{path}: not valid YAML ({_yaml_problem(error)})") from None
    try:
        return AccountsFile.model_validate(data or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidAccount(f"{path}: {problems}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, never the offending line itself (it may hold a secret)."""
    problem = getattr(error, "problem", None) or "cannot be parsed"
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem}, line {mark.line + 1}, column {mark.column + 1}"


def secret_variable(account: str, secret: str) -> str:
    """The environment variable an export refers to for one secret of one account."""
    return f"SMSGW_ACCOUNT_{_variable_stem(account)}_{secret.upper()}"


def _variable_stem(account: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", account).strip("_").upper()


def _variable_stems(accounts: list[str]) -> dict[str, str]:
    """Each account's part of its secrets' variable names, unique among ``accounts``.

    Names that differ only in case or punctuation (``main-vonage``, ``Main.Vonage``) would
    share one variable, so each of those gets a short digest of its exact name appended.
    """
    by_stem: dict[str, list[str]] = {}
    for name in accounts:
        by_stem.setdefault(_variable_stem(name), []).append(name)
    stems: dict[str, str] = {}
    for stem, names in by_stem.items():
        for name in names:
            digest = hashlib.sha256(name.encode()).hexdigest()[:6].upper()
            stems[name] = stem if len(names) == 1 else f"{stem}_{digest}"
    return stems


def referenced_variables(document: Mapping[str, Any]) -> list[str]:
    """The environment variables an exported document's secrets refer to, sorted."""
    return sorted(
        match.group(1)
        for account in document.get("accounts", [])
        for secret in SECRET_FIELDS
        if isinstance(account.get(secret), str)
        and (match := _REFERENCE.fullmatch(account[secret])) is not None
    )


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

    Every account is built, its references expanded and checked against its gateway type,
    then everything is written in one transaction: a bad file changes nothing.

    Raises:
        InvalidAccount: A problem in the file (names the account, field, variable).
        AccountNotFound: A store or the default names an account that exists nowhere.
        AccountConflict: The file would change a provisioned (environment) item.
    """
    environ = os.environ if environ is None else environ
    report = ImportReport()
    accounts = _prepare(document, environ, report)
    stores = [IdentityStore(s.name, s.account, s.default_region) for s in document.identity_stores]
    done = await store.put_all(accounts, stores, document.default)
    report.accounts, report.stores, report.default = done.accounts, done.stores, done.default
    return report


def export_document(view: AccountView, *, omit_secrets: bool = False) -> dict[str, Any]:
    """The stored accounts, stores and default as a file; secrets as references or omitted.

    Provisioned (environment) accounts and stores are not exported: they are configured
    where they come from.
    """
    accounts: list[dict[str, Any]] = []
    stored = {name: view.snapshot.accounts[name] for name in sorted(view.snapshot.accounts)}
    stems = _variable_stems(list(stored))
    for name, raw in stored.items():
        # No decryption: a backup works without the key (or with a wrong one).
        account = GatewayAccount.model_validate(stored_fields(raw))
        fields = account.model_dump(
            mode="json", exclude=set[str](SECRET_FIELDS), exclude_none=True, exclude_defaults=True
        )
        fields = {"name": account.name, "gateway": account.gateway, **fields}
        if not omit_secrets:
            for secret in stored_secrets(raw):
                fields[secret] = f"${{SMSGW_ACCOUNT_{stems[name]}_{secret.upper()}}}"
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
