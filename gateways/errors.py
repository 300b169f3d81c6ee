"""The one error tree of smsgw, split by what the caller must do.

::

    SmsError
    ├── ConfigurationError          bad settings or account fields; fix the config, never retried
    │   └── UnknownGateway          no gateway of that name; the message suggests the closest one
    ├── InvalidMessage              the job is wrong; recorded failed_permanent, never retried
    │   ├── InvalidRecipient        one phone number (which one, and why)
    │   └── TooManySegments         the text needs more SMS segments than allowed
    ├── DuplicateMessage            the job or part was already claimed; not a failure
    └── GatewayError                a provider call failed (gateway, http_status, provider_code)
        ├── TransientGatewayError   network, 5xx: retry later
        │   ├── RateLimited         throttled: retry after ``retry_after_s``
        │   └── OutcomeUnknown      no usable answer (timeout, dropped): it may have been sent
        └── PermanentGatewayError   retrying cannot help
            ├── RecipientRejected   this recipient only (invalid or barred number)
            ├── AccountRejected     the whole account (bad credentials, no balance, bad URL)
            └── PartiallySent       some segments were accepted, the rest refused

Every error carries structured context as attributes, and its message never holds a
secret: phone numbers appear masked, access codes and passwords never.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateways.redaction import mask_number

__all__ = [
    "AccountRejected",
    "ConfigurationError",
    "DuplicateMessage",
    "GatewayError",
    "InvalidMessage",
    "InvalidRecipient",
    "OutcomeUnknown",
    "PartiallySent",
    "PermanentGatewayError",
    "Problem",
    "RateLimited",
    "RecipientRejected",
    "SmsError",
    "TooManySegments",
    "TransientGatewayError",
    "UnknownGateway",
    "error_from_rule",
]


class SmsError(Exception):
    """Root of every error smsgw raises on purpose."""


class ConfigurationError(SmsError):
    """Settings or account fields are missing or wrong; raised early, never retried."""


class UnknownGateway(ConfigurationError):
    """No gateway is registered under the requested name."""

    def __init__(self, name: str, suggestion: str | None = None, *, reason: str = "") -> None:
        self.name = name
        self.suggestion = suggestion
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        what = f"gateway {name!r} {reason}" if reason else f"unknown gateway {name!r}"
        super().__init__(f"{what}{hint}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a message: the field, the recipient when there is one, and why.

    ``recipient`` is already masked; it exists so a person can tell which number is meant.
    """

    field: str
    reason: str
    recipient: str | None = None

    def __str__(self) -> str:
        who = f" ({self.recipient})" if self.recipient else ""
        return f"{self.field}{who}: {self.reason}"


class InvalidMessage(SmsError):
    """The message cannot be sent as it is. Carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("InvalidMessage needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


class InvalidRecipient(InvalidMessage):
    """A phone number is not a number we may send to.

    Attributes:
        raw: The number as given (kept for callers that must show it to its owner; the
            message itself only holds the masked form).
        reason: Why it was refused, e.g. ``too short`` or ``premium-rate numbers are not allowed``.
    """

    def __init__(self, raw: str, reason: str, *, field: str = "phone_numbers") -> None:
        self.raw = raw
        self.reason = reason
        super().__init__([Problem(field=field, reason=reason, recipient=mask_number(raw))])


class TooManySegments(InvalidMessage):
    """The text needs more SMS segments than ``max_parts`` (or the gateway) allows."""

    def __init__(self, segments: int, limit: int, *, field: str = "message") -> None:
        self.segments = segments
        self.limit = limit
        reason = f"needs {segments} SMS segments, more than the limit of {limit}"
        super().__init__([Problem(field=field, reason=reason)])


class DuplicateMessage(SmsError):
    """The job or part was already claimed by an earlier delivery; not a failure."""


class GatewayError(SmsError):
    """A provider call failed.

    Attributes:
        gateway: The gateway type name (``vonage``, ``twilio``, ...).
        http_status: The HTTP status of the reply, when there was one.
        provider_code: The provider's own error code, when it gave one.
        request_sent: False only when the request certainly never reached the provider
            (connection refused, proxy unreachable): then a retry cannot duplicate a message.
    """

    def __init__(
        self,
        message: str,
        *,
        gateway: str,
        http_status: int | None = None,
        provider_code: str | None = None,
        request_sent: bool = True,
    ) -> None:
        self.gateway = gateway
        self.http_status = http_status
        self.provider_code = provider_code
        self.request_sent = request_sent
        super().__init__(message)

    @property
    def reason(self) -> str:
        """The message without the leading ``"<gateway>: "``."""
        return str(self).removeprefix(f"{self.gateway}: ")


class TransientGatewayError(GatewayError):
    """Network trouble, a timeout or a provider-side failure: the same send may succeed later."""


class RateLimited(TransientGatewayError):
    """The provider (or our own limiter) asked us to slow down for ``retry_after_s`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        gateway: str,
        retry_after_s: float,
        http_status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            message,
            gateway=gateway,
            http_status=http_status,
            provider_code=provider_code,
            request_sent=True,
        )


class OutcomeUnknown(TransientGatewayError):
    """The request may have reached the provider but no usable answer came back.

    A timeout after sending, a dropped connection, a success reply without a message id:
    re-sending may duplicate the message. The worker's per-lane policy decides.
    """


class PermanentGatewayError(GatewayError):
    """Retrying the same send cannot succeed."""


class RecipientRejected(PermanentGatewayError):
    """The provider refused this recipient (invalid, barred or unreachable number)."""


class AccountRejected(PermanentGatewayError):
    """The provider refused the account (bad credentials, no balance, suspended)."""


class PartiallySent(PermanentGatewayError):
    """The provider accepted some segments of a message and refused the rest.

    Re-sending would duplicate the accepted ones, so it is final; ``accepted_ids`` are the
    provider ids of what went out.
    """

    def __init__(
        self,
        message: str,
        *,
        gateway: str,
        accepted_ids: tuple[str, ...],
        http_status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        self.accepted_ids = accepted_ids
        super().__init__(
            message, gateway=gateway, http_status=http_status, provider_code=provider_code
        )


def error_from_rule(
    error_class: type[GatewayError],
    message: str,
    *,
    gateway: str,
    http_status: int | None = None,
    provider_code: str | None = None,
    retry_after_s: float = 1.0,
) -> GatewayError:
    """Build the error an adapter's table names (``retry_after_s`` only for RateLimited)."""
    if issubclass(error_class, RateLimited):
        return error_class(
            message,
            gateway=gateway,
            retry_after_s=retry_after_s,
            http_status=http_status,
            provider_code=provider_code,
        )
    return error_class(
        message, gateway=gateway, http_status=http_status, provider_code=provider_code
    )
