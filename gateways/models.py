"""What adapters work with: the account, its proxy, one outbound SMS, the provider's receipt.

``GatewayAccount`` carries the origin's generic account fields. Each adapter's docstring maps
them onto the provider's own names (Vonage: ``user_id`` is the API key, ``password`` the
API secret). Secrets are ``SecretStr`` and every ``repr`` masks them and phone numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateways.encoding import Encoding, segment
from gateways.redaction import mask_number

__all__ = ["CheckResult", "GatewayAccount", "OutboundSms", "ProxySettings", "SendReceipt"]


class ProxySettings(BaseModel):
    """An HTTP proxy, with optional basic authentication (the origin's proxy fields).

    ``host_name`` wins over ``domain`` as the proxy host; the origin allowed either.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    host_name: str | None = None
    domain: str | None = None
    port: int = Field(default=8080, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    description: str | None = None

    @property
    def host(self) -> str:
        """The host the proxy listens on."""
        host = self.host_name or self.domain
        if not host:
            raise ValueError("a proxy needs proxy_host_name or proxy_domain")
        return host

    @property
    def url(self) -> str:
        """``http://host:port``, without credentials (those travel as a header)."""
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        auth = f"{self.username}:***@" if self.username else ""
        return f"ProxySettings({auth}{self.host_name or self.domain}:{self.port})"

    __str__ = __repr__


class GatewayAccount(BaseModel):
    """A gateway account: a gateway type plus credentials, endpoint, sender and proxy.

    Attributes:
        name: Unique account name (``main-vonage``).
        gateway: The gateway type, a registered name (``vonage``, ``twilio``, a plugin's).
        account_id / user_id / password: The origin's generic credential fields; what each
            means is in the adapter's docstring.
        url: The provider's base URL; the gateway type's default when omitted.
        sender: The sender id or number messages go out from.
        proxy_*: The origin's proxy fields; see :attr:`proxy`.
        rate_per_s: The account's sending rate limit (SMS segments per second).
        bulk_share: The bulk lane's share of ``rate_per_s`` (the global setting when unset).
        countries: ISO 3166 regions recipients may be in (any when empty).
        options: Provider extras, validated by the adapter's ``Options`` model.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=100)
    gateway: str = Field(min_length=1)
    description: str | None = None
    account_id: str | None = None
    user_id: str | None = None
    password: SecretStr | None = None
    url: str | None = None
    sender: str | None = None
    proxy_domain: str | None = None
    proxy_host_name: str | None = None
    proxy_port: int | None = Field(default=None, ge=1, le=65535)
    proxy_username: str | None = None
    proxy_password: SecretStr | None = None
    proxy_description: str | None = None
    rate_per_s: float | None = Field(default=None, gt=0)
    bulk_share: float | None = Field(default=None, gt=0, le=1)
    countries: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("countries", mode="before")
    @classmethod
    def _regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        regions = sorted({str(part).strip().upper() for part in value})
        bad = [r for r in regions if len(r) != 2 or not r.isalpha()]
        if bad:
            raise ValueError(f"must be two-letter ISO 3166 region codes, not {', '.join(bad)}")
        return tuple(regions)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        parts = urlsplit(value)
        if parts.username or parts.password:
            raise ValueError("must not hold credentials; use user_id and password")
        try:
            parts.port  # noqa: B018  # raises for a port out of range
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname:
            raise ValueError("has no host")
        return value

    @property
    def proxy(self) -> ProxySettings | None:
        """The proxy to use, or ``None`` when no proxy host is set."""
        if not (self.proxy_host_name or self.proxy_domain):
            return None
        return ProxySettings(
            host_name=self.proxy_host_name,
            domain=self.proxy_domain,
            port=self.proxy_port or 8080,
            username=self.proxy_username,
            password=self.proxy_password,
            description=self.proxy_description,
        )

    def secret(self, name: Literal["password", "proxy_password"]) -> str | None:
        """A secret field in clear, for the adapter that must send it. Never log the result."""
        value: SecretStr | None = getattr(self, name)
        return value.get_secret_value() if value is not None else None


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One piece of one job for one recipient, ready for a provider call.

    The text may hold an access code, so ``repr`` never shows it, and the number is masked.

    Attributes:
        to: The recipient in E.164 (``+447911123456``).
        text: The piece's text, access code included.
        sender: Overrides the account's sender when set.
        client_ref: Our reference for the piece (job id and piece number), echoed by
            providers that support one, for correlating delivery receipts.
        encoding: ``GSM-7`` or ``UCS-2``, derived from the text (never passed in, so it
            cannot disagree with it).
        segments: How many carrier SMS the text needs, derived likewise.
    """

    to: str
    text: str = field(repr=False)
    sender: str | None = None
    client_ref: str | None = None
    encoding: Encoding = field(init=False)
    segments: int = field(init=False)

    def __post_init__(self) -> None:
        counted = segment(self.text)
        object.__setattr__(self, "encoding", counted.encoding)
        object.__setattr__(self, "segments", max(1, counted.segments))

    @property
    def to_digits(self) -> str:
        """The number without ``+``, as most provider APIs want it."""
        return self.to.lstrip("+")

    def __repr__(self) -> str:
        return (
            f"OutboundSms(to={mask_number(self.to)!r}, encoding={self.encoding!r}, "
            f"segments={self.segments}, client_ref={self.client_ref!r})"
        )


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """What the provider said when it accepted a message.

    Attributes:
        provider_message_ids: One id per message the provider created (some providers
            return one per segment).
        segments: Segments the provider reports billing, when it says.
        status: The provider's own initial status word, when it gives one (``queued``).
    """

    provider_message_ids: tuple[str, ...]
    segments: int | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of ``test_connection`` / ``test_credentials`` / ``test_proxy``.

    Truthy on success; ``reason`` always says in plain words what was done or what failed.
    ``skipped`` marks a check that had nothing to test (no proxy configured, say).
    """

    ok: bool
    reason: str
    skipped: bool = False
    details: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok
