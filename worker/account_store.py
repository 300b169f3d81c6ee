"""Gateway accounts, identity stores and the default account, kept in Redis (the state store).

Layout (names in :mod:`worker.keys`): one hash of accounts (name -> JSON whose ``password``
and ``proxy_password`` are Fernet tokens, never clear text), one hash of identity stores
(name -> linked account and default region), the default account's name, and a version
that every change bumps in the same transaction, so workers notice a change by reading
one key (:mod:`worker.account_cache`).

Accounts and stores given in settings (``SMSGW_ACCOUNTS``, ``SMSGW_IDENTITY_STORES``,
``SMSGW_DEFAULT_ACCOUNT``) are *provisioned*: visible beside the stored ones, but read-only
here (change the environment instead), and a name may not be used by both. A default
account set here wins over ``SMSGW_DEFAULT_ACCOUNT``.

Every change runs as an optimistic transaction (``WATCH`` the version, read, check, then
``MULTI``/``EXEC``), so the checks (delete protection, unique names, links to existing
accounts) hold against concurrent changes from other operators.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from config.settings import IdentityStoreLink, Settings
from gateways.errors import ConfigurationError, UnknownGateway
from gateways.models import GatewayAccount
from gateways.registry import load_gateway
from worker.accounts import NoAccount, ResolvedAccount, SettingsAccounts
from worker.crypto import Cipher, DecryptionFailed
from worker.keys import (
    account_statuses_key,
    accounts_default_key,
    accounts_key,
    accounts_version_key,
    identity_stores_key,
)
from worker.validation import known_region

__all__ = [
    "SECRET_FIELDS",
    "AccountConflict",
    "AccountNotFound",
    "AccountStore",
    "AccountStoreError",
    "AccountUnreadable",
    "AccountView",
    "IdentityStore",
    "InvalidAccount",
    "Outcome",
    "PutOutcomes",
    "SecretsNeedKey",
    "Snapshot",
    "Source",
    "stored_fields",
    "stored_secrets",
    "validate_account",
]

SECRET_FIELDS: tuple[Literal["password", "proxy_password"], ...] = ("password", "proxy_password")
Source = Literal["stored", "environment"]
Outcome = Literal["created", "updated", "unchanged"]

_KEY_HINT = (
    "generate a key with `smsgw keys generate` and set SMSGW_SECRET_KEY (the same key for "
    "workers and the command line)"
)


class AccountStoreError(ConfigurationError):
    """A change to accounts or identity stores was refused; the message says why."""


class AccountNotFound(AccountStoreError):
    """No account or identity store of that name."""


class AccountConflict(AccountStoreError):
    """The change conflicts with what exists (name taken, still linked, read-only, default)."""


class InvalidAccount(AccountStoreError):
    """The account does not satisfy its gateway type; every problem is named."""


class SecretsNeedKey(AccountStoreError):
    """A secret must be written or read, and no encryption key is configured."""

    def __init__(self) -> None:
        super().__init__(
            f"SMSGW_SECRET_KEY is not set, so account secrets cannot be stored: {_KEY_HINT}"
        )


class AccountUnreadable(NoAccount):
    """A stored account's secrets cannot be decrypted with the configured key."""


@dataclass(frozen=True, slots=True)
class IdentityStore:
    """An identity store (a tenant) and the account its producers' jobs go through."""

    name: str
    account: str | None
    default_region: str | None
    source: Source = "stored"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything stored, read in one transaction; accounts still encoded (secrets encrypted)."""

    version: str | None
    accounts: dict[str, str]
    stores: dict[str, IdentityStoreLink]
    default: str | None


@dataclass
class PutOutcomes:
    """What :meth:`AccountStore.put_all` did, per account and store, and to the default."""

    accounts: dict[str, Outcome] = field(default_factory=dict)
    stores: dict[str, Outcome] = field(default_factory=dict)
    default: Outcome | None = None


def validate_account(account: GatewayAccount, enabled: frozenset[str] | None) -> None:
    """Check ``account`` against its gateway type's metadata (built-in or plugin).

    Raises:
        InvalidAccount: Unknown gateway type (with a "did you mean"), missing required
            fields (all named in one message), invalid options or an unknown country.
    """
    try:
        cls = load_gateway(account.gateway, enabled)
    except UnknownGateway as error:
        raise InvalidAccount(f"account {account.name!r}: {error}") from None
    try:
        cls.check_account(account)
    except ConfigurationError as error:
        raise InvalidAccount(str(error)) from None
    unknown = [c for c in account.countries if known_region(c) is None]
    if unknown:
        raise InvalidAccount(
            f"account {account.name!r}: unknown country code(s) {', '.join(unknown)} "
            "(ISO 3166 two-letter regions, e.g. GB, DE)"
        )


def build_account(fields: dict[str, Any]) -> GatewayAccount:
    """A :class:`GatewayAccount` from plain fields, with an error naming each bad field.

    Raises:
        InvalidAccount: An unknown field (a typo would otherwise be dropped silently), or a
            field with the wrong type or value (the value is never shown).
    """
    unknown = sorted(set(fields) - set(GatewayAccount.model_fields))
    if unknown:
        name = fields.get("name") or "(unnamed)"
        raise InvalidAccount(
            f"account {name!r}: unknown field(s) {', '.join(unknown)}; the fields are "
            f"{', '.join(GatewayAccount.model_fields)}"
        )
    try:
        return GatewayAccount.model_validate(fields)
    except ValidationError as error:
        name = fields.get("name") or "(unnamed)"
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'account'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidAccount(f"account {name!r}: {problems}") from None


def encode_account(account: GatewayAccount, cipher: Cipher | None) -> str:
    """The stored JSON of ``account``: plain fields, and secrets as Fernet tokens."""
    fields = account.model_dump(mode="json", exclude=set[str](SECRET_FIELDS), exclude_none=True)
    secrets: dict[str, str] = {}
    for name in SECRET_FIELDS:
        value = account.secret(name)
        if value is None:
            continue
        if cipher is None:
            raise SecretsNeedKey()
        secrets[name] = cipher.encrypt(value)
    return json.dumps({"fields": fields, "secrets": secrets}, separators=(",", ":"))


def decode_account(name: str, raw: str, cipher: Cipher | None) -> GatewayAccount:
    """The account behind its stored JSON, secrets decrypted.

    Raises:
        AccountUnreadable: The secrets were encrypted with another key (or no key is set).
    """
    stored = json.loads(raw)
    fields: dict[str, Any] = dict(stored["fields"])
    for secret_name, token in stored.get("secrets", {}).items():
        if cipher is None:
            raise AccountUnreadable(
                f"gateway account {name!r} has encrypted secrets and SMSGW_SECRET_KEY is not set"
            )
        try:
            fields[secret_name] = SecretStr(cipher.decrypt(token))
        except DecryptionFailed:
            raise AccountUnreadable(
                f"gateway account {name!r}: its secrets cannot be decrypted; SMSGW_SECRET_KEY "
                "differs from the key they were encrypted with"
            ) from None
    return GatewayAccount.model_validate(fields)


def stored_secrets(raw: str) -> tuple[str, ...]:
    """The names of the secrets a stored account holds, read without decrypting them."""
    return tuple(json.loads(raw).get("secrets", {}))


def stored_fields(raw: str) -> dict[str, Any]:
    """A stored account's plain fields (no secrets), read without decrypting anything."""
    return dict(json.loads(raw)["fields"])


def _next_version(current: str | None) -> str:
    # A fresh start (new or flushed database) begins at a random number, so a worker that
    # cached version N of an earlier database cannot mistake a new version N for it.
    if current is None:
        return str(random.randrange(1, 2**48))
    return str(int(current) + 1)


@dataclass
class AccountView:
    """Stored plus provisioned accounts and stores at one version, decoded on demand.

    Args:
        snapshot: What Redis held.
        provisioned: The accounts and stores from settings.
        cipher: Decrypts stored secrets.
    """

    snapshot: Snapshot
    provisioned: SettingsAccounts
    cipher: Cipher | None
    _decoded: dict[str, GatewayAccount] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        """The stored version this view was read at."""
        return self.snapshot.version

    @property
    def default(self) -> str | None:
        """The default account: the stored choice, else ``SMSGW_DEFAULT_ACCOUNT``."""
        return self.snapshot.default or self.provisioned.default

    def account_names(self) -> dict[str, Source]:
        """Every account name and where it comes from."""
        names: dict[str, Source] = dict.fromkeys(self.provisioned.names(), "environment")
        names.update(dict.fromkeys(self.snapshot.accounts, "stored"))
        return dict(sorted(names.items()))

    def source(self, name: str) -> Source | None:
        """Where account ``name`` comes from, or ``None`` when there is none."""
        return self.account_names().get(name)

    def account(self, name: str) -> GatewayAccount:
        """Account ``name``, secrets decrypted.

        Raises:
            AccountNotFound: No such account.
            AccountUnreadable: Its secrets cannot be decrypted.
        """
        found = self._decoded.get(name)
        if found is not None:
            return found
        raw = self.snapshot.accounts.get(name)
        if raw is not None:
            found = decode_account(name, raw, self.cipher)
        else:
            found = self.provisioned.accounts.get(name)
        if found is None:
            raise AccountNotFound(f"gateway account {name!r} does not exist")
        self._decoded[name] = found
        return found

    @cached_property
    def _stores_by_name(self) -> dict[str, IdentityStore]:
        # Built once per view: a job naming a store looks it up here, per message.
        found = {
            name: IdentityStore(name, link.account, link.default_region, "stored")
            for name, link in self.snapshot.stores.items()
        }
        found.update(
            (name, IdentityStore(name, link.account, link.default_region, "environment"))
            for name, link in self.provisioned.stores.items()
        )
        return dict(sorted(found.items()))

    def stores(self) -> list[IdentityStore]:
        """Every identity store, stored and provisioned, by name."""
        return list(self._stores_by_name.values())

    def store(self, name: str) -> IdentityStore | None:
        """Identity store ``name``, or ``None``."""
        return self._stores_by_name.get(name)

    def linked_stores(self, account: str) -> list[str]:
        """The identity stores linked to ``account``."""
        return [s.name for s in self._stores_by_name.values() if s.account == account]

    def resolve(self, account: str | None, identity_store: str | None) -> ResolvedAccount:
        """Explicit account > the identity store's linked account > the default account.

        Raises:
            NoAccount: Nothing applies; the message names what was missing.
        """
        store = self.store(identity_store) if identity_store else None
        if identity_store and store is None and account is None:
            raise NoAccount(f"identity store {identity_store!r} is not known")
        region = (store.default_region if store else None) or self.provisioned.region
        name = account or (store.account if store else None) or self.default
        if name is None:
            where = f"identity store {identity_store!r} links no account and " if store else ""
            raise NoAccount(f"no gateway account: the job names none, {where}no default is set")
        try:
            return ResolvedAccount(self.account(name), region)
        except AccountNotFound as error:
            raise NoAccount(str(error)) from None


_Write = Callable[[Pipeline], Any]
T = TypeVar("T")


class AccountStore:
    """Create, change, link and delete accounts and identity stores in Redis.

    Args:
        redis: The state store (``decode_responses=True``).
        settings: Settings in force (provisioned accounts, enabled gateway types).
        cipher: Encrypts secrets; ``None`` when no key is configured (then any write or
            read of a secret is refused with how to make a key).
    """

    def __init__(self, redis: Redis, settings: Settings, cipher: Cipher | None) -> None:
        self.redis = redis
        self.settings = settings
        self.cipher = cipher
        self.provisioned = SettingsAccounts(settings)

    # --- reading -------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Everything stored, consistent (one ``MULTI``)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            _queue_reads(pipe)
            replies = await pipe.execute()
        return _snapshot(replies)

    async def stored_store(self, name: str) -> IdentityStoreLink | None:
        """Stored identity store ``name`` alone (one ``HGET``), or ``None``."""
        raw = await self.redis.hget(identity_stores_key(), name)
        return IdentityStoreLink.model_validate_json(raw) if raw is not None else None

    async def version(self) -> str | None:
        """The current version (changes with every write)."""
        value = await self.redis.get(accounts_version_key())
        return str(value) if value is not None else None

    async def view(self) -> AccountView:
        """Stored and provisioned accounts, now."""
        return AccountView(await self.snapshot(), self.provisioned, self.cipher)

    # --- accounts --------------------------------------------------------------------------

    async def create(self, account: GatewayAccount) -> None:
        """Store a new account.

        Raises:
            AccountConflict: The name is taken (stored or provisioned).
            InvalidAccount: It does not satisfy its gateway type.
            SecretsNeedKey: It has a secret and no key is configured.
        """
        validate_account(account, self.settings.gateways_enabled)
        encoded = encode_account(account, self.cipher)

        def plan(view: AccountView) -> tuple[None, list[_Write]]:
            source = view.source(account.name)
            if source is not None:
                raise AccountConflict(f"gateway account {account.name!r} already exists ({source})")
            return None, [lambda p: p.hset(accounts_key(), account.name, encoded)]

        await self._change(plan)

    async def modify(self, name: str, changes: dict[str, Any]) -> GatewayAccount:
        """Change fields of a stored account (``None`` clears a field); the new account.

        Read, merge, check and write happen in one watched transaction, so two operators
        changing different fields at once both keep their change. An account the key cannot
        open may still be changed when every secret it holds is replaced (the repair after
        a lost key).

        Raises:
            AccountNotFound, AccountConflict (provisioned), InvalidAccount, SecretsNeedKey,
            AccountUnreadable (its secrets cannot be opened and not all are replaced).
        """
        if "name" in changes and changes["name"] != name:
            raise InvalidAccount("an account cannot be renamed; create a new one and relink")
        enabled = self.settings.gateways_enabled

        def plan(view: AccountView) -> tuple[GatewayAccount, list[_Write]]:
            source = view.source(name)
            if source is None:
                raise AccountNotFound(f"gateway account {name!r} does not exist")
            if source == "environment":
                raise _provisioned(name)
            updated = build_account({**_current_fields(view, name, changes), **changes})
            validate_account(updated, enabled)
            # The health verdict was about the old settings; the next send gives a new one.
            return updated, [
                _hset_account(name, encode_account(updated, self.cipher)),
                lambda p: p.hdel(account_statuses_key(), name),
            ]

        return await self._change(plan)

    async def put_all(
        self,
        accounts: Sequence[GatewayAccount],
        stores: Sequence[IdentityStore],
        default: str | None,
    ) -> PutOutcomes:
        """Create or replace accounts, identity stores and the default as given (import).

        Everything is checked, then written in one transaction with one version bump: a
        problem anywhere writes nothing, and workers never see half of it. Items that
        already hold the same values are left alone (``unchanged``).

        Raises:
            AccountConflict: An account or store is provisioned (read-only here).
            AccountNotFound: A store or the default names an account that exists nowhere.
            InvalidAccount, SecretsNeedKey: As for :meth:`create`; a bad store region.
        """
        for account in accounts:
            validate_account(account, self.settings.gateways_enabled)
        wanted = [
            IdentityStore(
                s.name, s.account, _region(s.default_region, f"identity store {s.name!r}: ")
            )
            for s in stores
        ]

        def plan(view: AccountView) -> tuple[PutOutcomes, list[_Write]]:
            outcomes = PutOutcomes()
            writes: list[_Write] = []
            for account in accounts:
                outcome, write = self._put_account(view, account)
                outcomes.accounts[account.name] = outcome
                writes += write
            known = set(view.account_names()) | {a.name for a in accounts}
            for store in wanted:
                outcome, write = _put_store(view, store, known)
                outcomes.stores[store.name] = outcome
                writes += write
            if default is not None:
                if default not in known:
                    raise AccountNotFound(
                        f"the default: gateway account {default!r} does not exist"
                    )
                current = view.snapshot.default
                if current == default:
                    outcomes.default = "unchanged"
                else:
                    outcomes.default = "updated" if current else "created"
                    writes.append(lambda p: p.set(accounts_default_key(), default))
            return outcomes, writes

        return await self._change(plan)

    async def delete(self, name: str, *, force: bool = False) -> list[str]:
        """Delete a stored account; warnings for the operator (empty when none).

        Raises:
            AccountNotFound: No such account.
            AccountConflict: It is provisioned, linked to identity stores (named), named by
                ``SMSGW_DEFAULT_ACCOUNT`` (even with ``force``: that cannot be cleared here,
                and jobs would fall back to it), or the stored default and ``force`` is not
                given.
        """

        def plan(view: AccountView) -> tuple[list[str], list[_Write]]:
            source = view.source(name)
            if source is None:
                raise AccountNotFound(f"gateway account {name!r} does not exist")
            if source == "environment":
                raise _provisioned(name)
            if view.provisioned.default == name:
                raise AccountConflict(
                    f"gateway account {name!r} cannot be deleted while SMSGW_DEFAULT_ACCOUNT names "
                    "it (jobs would fall back to a missing account); change the environment "
                    "first"
                )
            linked = view.linked_stores(name)
            if linked:
                raise AccountConflict(
                    f"gateway account {name!r} is linked to identity store(s) "
                    f"{', '.join(linked)}; link them to another account or unlink them first"
                )
            writes: list[_Write] = [
                lambda p: p.hdel(accounts_key(), name),
                lambda p: p.hdel(account_statuses_key(), name),  # no health verdict on a ghost
            ]
            warnings: list[str] = []
            if view.snapshot.default == name:
                if not force:
                    raise AccountConflict(
                        f"gateway account {name!r} is the default account; choose another "
                        f"default first (`smsgw accounts default OTHER`) or delete with --force"
                    )
                writes.append(lambda p: p.delete(accounts_default_key()))
                fallback = view.provisioned.default
                warnings.append(
                    f"{name!r} was the default account; jobs that name no account and no "
                    + (
                        f"linked store now use {fallback!r} (SMSGW_DEFAULT_ACCOUNT)"
                        if fallback
                        else "linked store now fail until a default is set"
                    )
                )
            return warnings, writes

        return await self._change(plan)

    async def set_default(self, name: str | None) -> None:
        """Make ``name`` the default account, or clear the stored default (``None``).

        Raises:
            AccountNotFound: No such account.
        """

        def plan(view: AccountView) -> tuple[None, list[_Write]]:
            if name is None:
                return None, [lambda p: p.delete(accounts_default_key())]
            if view.source(name) is None:
                raise AccountNotFound(f"gateway account {name!r} does not exist")
            return None, [lambda p: p.set(accounts_default_key(), name)]

        await self._change(plan)

    # --- identity stores -------------------------------------------------------------------

    async def create_store(
        self, name: str, *, account: str | None = None, default_region: str | None = None
    ) -> IdentityStore:
        """A new identity store, linked to ``account`` or else to the default account.

        Raises:
            AccountConflict: The name is taken.
            AccountNotFound: ``account`` does not exist.
            InvalidAccount: The region is not an ISO 3166 region.
        """
        region = _region(default_region)
        if not name.strip():
            raise InvalidAccount("an identity store needs a name")

        def plan(view: AccountView) -> tuple[IdentityStore, list[_Write]]:
            existing = view.store(name)
            if existing is not None:
                raise AccountConflict(f"identity store {name!r} already exists ({existing.source})")
            linked = account or view.default  # as in the origin: the default links itself
            if account is not None and view.source(account) is None:
                raise AccountNotFound(f"gateway account {account!r} does not exist")
            store = IdentityStore(name, linked, region)
            return store, [lambda p: p.hset(identity_stores_key(), name, _store_json(store))]

        return await self._change(plan)

    async def delete_store(self, name: str) -> None:
        """Delete a stored identity store (its account stays)."""

        def plan(view: AccountView) -> tuple[None, list[_Write]]:
            self._stored_store(view, name)
            return None, [lambda p: p.hdel(identity_stores_key(), name)]

        await self._change(plan)

    async def link(
        self, name: str, account: str | None, *, default_region: str | None = None
    ) -> IdentityStore:
        """Link identity store ``name`` to ``account`` (``None`` unlinks it).

        Args:
            name: The stored identity store.
            account: The account its jobs go through; ``None`` unlinks.
            default_region: Also set its default region, in the same change (``None``
                keeps the current one).
        """
        region = _region(default_region)

        def plan(view: AccountView) -> tuple[IdentityStore, list[_Write]]:
            current = self._stored_store(view, name)
            if account is not None and view.source(account) is None:
                raise AccountNotFound(f"gateway account {account!r} does not exist")
            store = IdentityStore(name, account, region or current.default_region)
            return store, [lambda p: p.hset(identity_stores_key(), name, _store_json(store))]

        return await self._change(plan)

    async def set_region(self, name: str, default_region: str | None) -> IdentityStore:
        """Set (or clear) the identity store's default region for national numbers."""
        region = _region(default_region)

        def plan(view: AccountView) -> tuple[IdentityStore, list[_Write]]:
            current = self._stored_store(view, name)
            store = IdentityStore(name, current.account, region)
            return store, [lambda p: p.hset(identity_stores_key(), name, _store_json(store))]

        return await self._change(plan)

    # --- keys ------------------------------------------------------------------------------

    async def rotate(self) -> int:
        """Re-encrypt every stored secret with the first configured key; how many.

        Raises:
            SecretsNeedKey: No key is configured.
            AccountUnreadable: A secret opens with none of the configured keys (nothing is
                changed then).
        """
        cipher = self.cipher
        if cipher is None:
            raise SecretsNeedKey()

        def plan(view: AccountView) -> tuple[int, list[_Write]]:
            writes: list[_Write] = []
            count = 0
            for name, raw in view.snapshot.accounts.items():
                stored = json.loads(raw)
                secrets = stored.get("secrets", {})
                if not secrets:
                    continue
                try:
                    stored["secrets"] = {k: cipher.rotate(v) for k, v in secrets.items()}
                except DecryptionFailed:
                    raise AccountUnreadable(
                        f"gateway account {name!r}: its secrets open with none of the keys in "
                        "SMSGW_SECRET_KEY; put the old key after the new one and rotate again"
                    ) from None
                count += len(secrets)
                encoded = json.dumps(stored, separators=(",", ":"))
                writes.append(_hset_account(name, encoded))
            return count, writes

        return await self._change(plan)

    # --- internals -------------------------------------------------------------------------

    def _put_account(
        self, view: AccountView, account: GatewayAccount
    ) -> tuple[Outcome, list[_Write]]:
        source = view.source(account.name)
        if source == "environment":
            raise _provisioned(account.name)
        if source == "stored":
            try:
                if _same(view.account(account.name), account):
                    return "unchanged", []
            except AccountUnreadable:
                pass  # a key that cannot open it: replacing it is the repair
        encoded = encode_account(account, self.cipher)
        return ("updated" if source else "created"), [_hset_account(account.name, encoded)]

    def _stored_store(self, view: AccountView, name: str) -> IdentityStore:
        store = view.store(name)
        if store is None:
            raise AccountNotFound(f"identity store {name!r} does not exist")
        if store.source == "environment":
            raise AccountConflict(
                f"identity store {name!r} comes from SMSGW_IDENTITY_STORES and is read-only "
                "here; change the environment instead"
            )
        return store

    async def _change(self, plan: Callable[[AccountView], tuple[T, list[_Write]]]) -> T:
        """Run ``plan`` on a watched view and apply its writes with a version bump, atomically.

        A concurrent change anywhere (every change bumps the version) makes it start over.
        """
        version_key = accounts_version_key()
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(version_key)
                    replies = [
                        await pipe.get(version_key),
                        await pipe.hgetall(accounts_key()),
                        await pipe.hgetall(identity_stores_key()),
                        await pipe.get(accounts_default_key()),
                    ]
                    view = AccountView(_snapshot(replies), self.provisioned, self.cipher)
                    result, writes = plan(view)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for write in writes:
                        write(pipe)
                    if writes:
                        pipe.set(version_key, _next_version(view.version))
                    await pipe.execute()
                    return result
                except WatchError:
                    continue


def _hset_account(name: str, encoded: str) -> _Write:
    return lambda pipe: pipe.hset(accounts_key(), name, encoded)


def _queue_reads(pipe: Pipeline) -> None:
    pipe.get(accounts_version_key())
    pipe.hgetall(accounts_key())
    pipe.hgetall(identity_stores_key())
    pipe.get(accounts_default_key())


def _snapshot(replies: list[Any]) -> Snapshot:
    version, accounts, stores, default = replies
    return Snapshot(
        version=str(version) if version is not None else None,
        accounts=dict(accounts or {}),
        stores={
            name: IdentityStoreLink.model_validate_json(raw) for name, raw in (stores or {}).items()
        },
        default=default,
    )


def _store_json(store: IdentityStore) -> str:
    return IdentityStoreLink(
        account=store.account, default_region=store.default_region
    ).model_dump_json()


def _put_store(
    view: AccountView, store: IdentityStore, accounts: set[str]
) -> tuple[Outcome, list[_Write]]:
    existing = view.store(store.name)
    if existing is not None and existing.source == "environment":
        raise AccountConflict(
            f"identity store {store.name!r} comes from SMSGW_IDENTITY_STORES and is read-only "
            "here; change the environment instead"
        )
    if store.account is not None and store.account not in accounts:
        raise AccountNotFound(
            f"identity store {store.name!r}: gateway account {store.account!r} does not exist"
        )
    if existing == store:
        return "unchanged", []
    encoded = _store_json(store)
    return ("updated" if existing else "created"), [
        lambda p: p.hset(identity_stores_key(), store.name, encoded)
    ]


def _current_fields(view: AccountView, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Stored account ``name``'s fields to merge ``changes`` into, secrets in clear.

    When the key cannot open its secrets, its plain fields will do if ``changes`` replaces
    every secret it holds; otherwise the account stays unreadable.
    """
    try:
        return _plain(view.account(name))
    except AccountUnreadable:
        raw = view.snapshot.accounts[name]
        if not set(stored_secrets(raw)) <= set(changes):
            raise
        return stored_fields(raw)


def _plain(account: GatewayAccount) -> dict[str, Any]:
    """The account's fields with secrets in clear (for merging changes; never printed)."""
    fields = account.model_dump()
    for name in SECRET_FIELDS:
        fields[name] = account.secret(name)
    return fields


def _same(left: GatewayAccount, right: GatewayAccount) -> bool:
    return _plain(left) == _plain(right)


def _provisioned(name: str) -> AccountConflict:
    return AccountConflict(
        f"gateway account {name!r} comes from SMSGW_ACCOUNTS and is read-only here; "
        "change the environment instead"
    )


def _region(value: str | None, where: str = "") -> str | None:
    if value is None or not value.strip():
        return None
    region = known_region(value)
    if region is None:
        raise InvalidAccount(
            f"{where}default region {value!r} is not an ISO 3166 region (e.g. GB, DE)"
        )
    return region
