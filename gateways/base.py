"""The gateway interface (the origin's ``ISmsGateway``), written for plugin authors.

A gateway adapter is mechanism only: it turns one validated, already-segmented piece
(:class:`~gateways.models.OutboundSms`) into provider HTTP calls and returns the provider's
message ids (:class:`~gateways.models.SendReceipt`), or raises an error from
:mod:`gateways.errors` that says what the caller should do. Validation, segmentation, rate
limiting, retry policy and result recording belong to the worker, not to adapters.

To write a plugin:

1. Subclass :class:`SmsGateway`, set ``metadata`` (below) and implement :meth:`send` and
   :meth:`test_credentials`. Use :class:`gateways.http.GatewayHttp` (``self.http``) for every
   request: it applies the account's proxy, the timeouts and the error mapping.
2. Document in the class docstring which generic account field means what to the provider.
3. Optionally declare ``Options``, a pydantic model of provider extras read from
   ``account.options``.
4. Register the class in your package's ``pyproject.toml``::

       [project.entry-points."smsgw.gateways"]
       acme = "acme_sms:AcmeGateway"

5. Run the conformance kit (:mod:`gateways.testing`) against it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateways.errors import ConfigurationError
from gateways.http import GatewayHttp, Timeouts
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt

__all__ = ["GENERIC_FIELDS", "Capabilities", "GatewayMetadata", "NoOptions", "SmsGateway"]

# The origin's generic account fields, in the order people fill them in.
GENERIC_FIELDS: tuple[str, ...] = (
    "account_id",
    "user_id",
    "password",
    "url",
    "sender",
    "proxy_domain",
    "proxy_host_name",
    "proxy_port",
    "proxy_username",
    "proxy_password",
)


class Capabilities(BaseModel):
    """What a provider can do, so the worker can plan around it."""

    model_config = ConfigDict(frozen=True)

    unicode: bool = True
    """The provider can send UCS-2 text (otherwise non-GSM text is refused up front)."""
    max_segments: int = Field(default=10, ge=1)
    """The most concatenated segments the provider accepts for one message."""
    concatenates: bool = True
    """The provider splits a long text into concatenated segments itself."""
    default_rate_per_s: float = Field(default=10.0, gt=0)
    """The sending rate an account of this type gets unless it sets its own."""


class GatewayMetadata(BaseModel):
    """The origin's gateway metadata: identity, default URL and which fields are required."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The registered name (``vonage``); entry points must use it or one of ``aliases``."""
    description: str
    url: str | None = None
    """The provider's default base URL; an account's ``url`` overrides it."""
    aliases: tuple[str, ...] = ()
    account_id_required: bool = False
    user_id_required: bool = False
    password_required: bool = False
    url_required: bool = False
    sender_required: bool = False
    proxy_domain_required: bool = False
    proxy_host_name_required: bool = False
    proxy_port_required: bool = False
    proxy_username_required: bool = False
    proxy_password_required: bool = False
    field_names: dict[str, str] = Field(default_factory=dict)
    """Generic field -> the provider's name for it, e.g. ``{"user_id": "API key"}``."""
    capabilities: Capabilities = Capabilities()

    def required_fields(self) -> tuple[str, ...]:
        """The generic fields an account of this type must fill in."""
        return tuple(name for name in GENERIC_FIELDS if getattr(self, f"{name}_required", False))

    def label(self, field_name: str) -> str:
        """``user_id (API key)``: the generic name with the provider's name beside it."""
        provider_name = self.field_names.get(field_name)
        return f"{field_name} ({provider_name})" if provider_name else field_name


class NoOptions(BaseModel):
    """The options model of a gateway without provider extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SmsGateway(abc.ABC):
    """Base class of every gateway adapter (built-in or plugin).

    Args:
        account: The account to send through; checked against ``metadata`` here.
        session: The worker's shared ``aiohttp.ClientSession`` (never one per send).
        timeouts: Connect and total timeouts of each provider call.

    Raises:
        ConfigurationError: A required field is missing (every missing one is named), the
            account is for another gateway type, or ``options`` are invalid.
    """

    metadata: ClassVar[GatewayMetadata]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(
        self,
        account: GatewayAccount,
        session: aiohttp.ClientSession,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.check_account(account)
        self.account = account
        self.session = session
        self.timeouts = timeouts or Timeouts()
        self.options: BaseModel = self._parse_options(account)
        self.http = GatewayHttp(
            session, gateway=self.metadata.name, proxy=account.proxy, timeouts=self.timeouts
        )

    @classmethod
    def check_account(cls, account: GatewayAccount) -> None:
        """Raise :class:`ConfigurationError` naming every required field the account lacks."""
        meta = cls.metadata
        if account.gateway != meta.name and account.gateway not in meta.aliases:
            raise ConfigurationError(
                f"account {account.name!r} is for gateway {account.gateway!r}, not {meta.name!r}"
            )
        missing = [name for name in meta.required_fields() if not _filled(account, name)]
        if missing:
            labels = ", ".join(meta.label(name) for name in missing)
            raise ConfigurationError(
                f"{meta.name} account {account.name!r} is missing required field(s): {labels}"
            )
        cls._parse_options(account)

    @classmethod
    def _parse_options(cls, account: GatewayAccount) -> BaseModel:
        try:
            return cls.Options.model_validate(account.options)
        except ValidationError as error:
            problems = "; ".join(
                "options" + "".join(f".{part}" for part in item["loc"]) + f": {item['msg']}"
                for item in error.errors()
            )
            raise ConfigurationError(
                f"{cls.metadata.name} account {account.name!r}: {problems}"
            ) from None

    @property
    def base_url(self) -> str:
        """The account's URL, else the gateway type's default."""
        url = self.account.url or self.metadata.url
        if not url:
            raise ConfigurationError(
                f"{self.metadata.name} account {self.account.name!r} needs a url"
            )
        return url.rstrip("/")

    @property
    def sender(self) -> str | None:
        """The account's default sender."""
        return self.account.sender

    @abc.abstractmethod
    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Hand one piece to the provider.

        Returns:
            The provider's message ids (at least one).

        Raises:
            TransientGatewayError: Retry later (``RateLimited`` says when).
            PermanentGatewayError: Retrying cannot help (``RecipientRejected`` for this number,
                ``AccountRejected`` for the whole account).
        """

    @abc.abstractmethod
    async def test_credentials(self) -> CheckResult:
        """Check the credentials with the provider, without sending a message where possible.

        The reason must say plainly what was done (``balance endpoint answered: 12.50 EUR``),
        and where the provider has no such endpoint, what the check could and could not prove.
        """

    async def test_connection(self) -> CheckResult:
        """Check that the provider's host answers HTTP (through the proxy, when one is set)."""
        return await self.http.probe(self.base_url)

    async def test_proxy(self) -> CheckResult:
        """Check that the configured proxy accepts our credentials and forwards requests."""
        if self.account.proxy is None:
            return CheckResult(True, "no proxy configured; connections are direct", skipped=True)
        return await self.http.probe(self.base_url, through_proxy_only=True)

    def clone(self, **changes: Any) -> Self:
        """A new adapter of the same type, on a copy of the account with ``changes`` applied."""
        account = GatewayAccount.model_validate({**self.account.model_dump(), **changes})
        return type(self)(account, self.session, timeouts=self.timeouts)

    async def aclose(self) -> None:  # noqa: B027  # optional hook, not abstract
        """Release what the adapter holds. The shared session belongs to the caller."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} account={self.account.name!r}>"


def _filled(account: GatewayAccount, name: str) -> bool:
    value = getattr(account, name)
    if value is None:
        return False
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return bool(text.strip())
