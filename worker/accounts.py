"""Which gateway account a job goes through.

Resolution order, as in the origin: the account the job names, else the account linked to
the job's identity store, else the default account. :class:`SettingsAccounts` reads the
*provisioned* accounts from settings (``SMSGW_ACCOUNTS``, ``SMSGW_DEFAULT_ACCOUNT``,
``SMSGW_IDENTITY_STORES``). The account store in Redis (:mod:`worker.account_store`) manages
the rest and layers them over these; workers resolve through its cache
(:mod:`worker.account_cache`), which implements the same :class:`AccountDirectory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from config.settings import IdentityStoreLink, Settings
from gateways.errors import ConfigurationError
from gateways.models import GatewayAccount

__all__ = ["AccountDirectory", "NoAccount", "ResolvedAccount", "SettingsAccounts"]


class NoAccount(ConfigurationError):
    """No gateway account applies to a job; the message says what was looked for."""


@dataclass(frozen=True, slots=True)
class ResolvedAccount:
    """The account a job goes through, and the region for its national numbers."""

    account: GatewayAccount
    default_region: str | None


class AccountDirectory(Protocol):
    """Resolves a job's account."""

    async def resolve(self, account: str | None, identity_store: str | None) -> ResolvedAccount:
        """The account for a job naming ``account`` and/or ``identity_store``.

        Raises:
            NoAccount: Nothing applies; the message names what was missing.
        """
        ...


class SettingsAccounts:
    """Accounts, identity-store links and the default account, from settings."""

    def __init__(self, settings: Settings) -> None:
        accounts: dict[str, GatewayAccount] = {}
        for index, raw in enumerate(settings.accounts):
            try:
                account = GatewayAccount.model_validate(raw)
            except ValidationError as error:
                fields = ", ".join(".".join(map(str, e["loc"])) for e in error.errors())
                raise ConfigurationError(
                    f"SMSGW_ACCOUNTS[{index}] is not a valid account (check: {fields})"
                ) from None
            accounts[account.name] = account
        self._accounts = accounts
        self._default = settings.default_account
        self._stores = settings.identity_stores
        self._region = settings.default_region

    def names(self) -> list[str]:
        """The configured account names."""
        return sorted(self._accounts)

    @property
    def accounts(self) -> dict[str, GatewayAccount]:
        """The configured accounts by name (read-only: they belong to the environment)."""
        return dict(self._accounts)

    @property
    def stores(self) -> dict[str, IdentityStoreLink]:
        """The configured identity stores by name."""
        return dict(self._stores)

    @property
    def default(self) -> str | None:
        """``SMSGW_DEFAULT_ACCOUNT``."""
        return self._default

    @property
    def region(self) -> str | None:
        """``SMSGW_DEFAULT_REGION``, for stores that set none."""
        return self._region

    async def resolve(self, account: str | None, identity_store: str | None) -> ResolvedAccount:
        """See :meth:`AccountDirectory.resolve`."""
        link = self._stores.get(identity_store) if identity_store else None
        if identity_store and link is None and account is None:
            raise NoAccount(f"identity store {identity_store!r} is not known")
        region = (link.default_region if link else None) or self._region
        name = account or (link.account if link else None) or self._default
        if name is None:
            where = f"identity store {identity_store!r} links no account and " if link else ""
            raise NoAccount(f"no gateway account: the job names none, {where}no default is set")
        found = self._accounts.get(name)
        if found is None:
            raise NoAccount(f"gateway account {name!r} does not exist")
        return ResolvedAccount(found, region)
