"""The domain: the job a producer enqueues and the result recorded for it.

``ShortMessage`` is the origin's job contract. Producers written against the origin can
post the same JSON: the PascalCase names (``AccessCode``, ``MaxLength``, ``Message``,
``PhoneNumbers``, ``ReferenceId``) are accepted as aliases of the Python names.

The access code is a secret. It is a ``SecretStr``: ``repr``, ``str``, logs and
``model_dump()`` show ``**********``; only :meth:`ShortMessage.render` puts it in clear,
into the text handed to a gateway.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from config.settings import DEFAULT_ALLOWED_NUMBER_TYPES, NumberType, get_settings
from gateways.errors import InvalidMessage, InvalidRecipient, Problem, SmsError
from worker.segmentation import CostEstimate, estimate
from worker.validation import normalize_numbers

__all__ = [
    "CODE_PLACEHOLDER",
    "DeliveryStatus",
    "MessageCheck",
    "RecipientResult",
    "SendSmsMessageResult",
    "ShortMessage",
    "expiry",
]

# Where the access code goes in the text; without it the code is appended after a space.
CODE_PLACEHOLDER = "{code}"
_MAX_CODE_LENGTH = 64
_MAX_REFERENCE_LENGTH = 200


class DeliveryStatus(StrEnum):
    """Where one recipient (or one part) of a job stands."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"  # the provider accepted it
    RETRYING = "retrying"
    EXPIRED = "expired"  # too late to send; never sent
    FAILED_PERMANENT = "failed_permanent"  # bad input or a provider refusal; never retried
    FAILED_EXHAUSTED = "failed_exhausted"  # transient failures until attempts or time ran out
    UNKNOWN = "unknown"  # the outcome was lost in a crash; not re-sent
    CANCELLED = "cancelled"  # its campaign was cancelled before it was sent; never sent
    DELIVERED = "delivered"  # a delivery receipt confirmed it
    UNDELIVERED = "undelivered"  # a delivery receipt reported failure

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to it without a delivery receipt."""
        return self not in _IN_FLIGHT


_IN_FLIGHT = frozenset({DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING})


@dataclass(frozen=True, slots=True)
class MessageCheck:
    """What :meth:`ShortMessage.check` found.

    Attributes:
        recipients: The valid recipients in E.164, duplicates collapsed, input order kept.
        rejected: One error per refused recipient, naming it (masked) and the reason.
        problems: Problems with the message itself (text, code, length, segments).
        estimate: Pieces and segments of the rendered text, when it could be computed.
    """

    recipients: tuple[str, ...]
    rejected: tuple[InvalidRecipient, ...]
    problems: tuple[Problem, ...]
    estimate: CostEstimate | None

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        """Message problems first, then one per refused recipient."""
        return self.problems + tuple(p for error in self.rejected for p in error.problems)

    @property
    def ok(self) -> bool:
        """Whether the message and every recipient passed."""
        return not self.problems and not self.rejected


def expiry(
    expires_at: datetime | None, ttl_s: float | None, enqueued_at: datetime
) -> datetime | None:
    """When a job enqueued at ``enqueued_at`` stops being worth sending, if ever: the
    earlier of its absolute expiry and its time to live."""
    deadlines = [d for d in (expires_at,) if d is not None]
    if ttl_s is not None:
        deadlines.append(enqueued_at + timedelta(seconds=ttl_s))
    return min(deadlines) if deadlines else None


class ShortMessage(BaseModel):
    """One SMS job as a producer submits it.

    Attributes:
        message: The text sent with the code; ``{code}`` marks where the code goes.
        access_code: The confirmation code (a secret). Optional for plain notifications.
        phone_numbers: One or more recipients, in international or national format.
        reference_id: The producer's reference; also the job's idempotency key.
        max_length: The most characters one dispatched piece may hold, counted in the
            text's encoding units (GSM-7 septets or UCS-2 code units); longer text is split.
        ttl_s: Seconds after enqueueing when the job is no longer worth sending.
        expires_at: An absolute deadline; the earlier of this and ``ttl_s`` applies.
    """

    # hide_input_in_errors: a misspelled field must not echo the access code in the error.
    model_config = ConfigDict(
        populate_by_name=True, extra="forbid", frozen=True, hide_input_in_errors=True
    )

    message: str = Field(default="", alias="Message")
    access_code: SecretStr | None = Field(default=None, alias="AccessCode")
    phone_numbers: list[str] = Field(default_factory=list, alias="PhoneNumbers")
    reference_id: str | None = Field(default=None, alias="ReferenceId")
    max_length: int = Field(
        default_factory=lambda: get_settings().max_length, alias="MaxLength", ge=1, le=10_000
    )
    ttl_s: float | None = Field(default=None, alias="TtlS", gt=0)
    expires_at: AwareDatetime | None = Field(default=None, alias="ExpiresAt")

    @field_validator("phone_numbers", mode="before")
    @classmethod
    def _numbers_as_list(cls, value: Any) -> Any:
        # Producers post one number as a string, or numbers as JSON integers.
        if isinstance(value, str | int):
            value = [value]
        if isinstance(value, list | tuple):
            return [str(item) if isinstance(item, int) else item for item in value]
        return value

    @field_validator("access_code", mode="before")
    @classmethod
    def _code_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    def render(self) -> str:
        """The text handed to the gateway, with the access code in clear.

        The result holds a secret: never log it or store it.
        """
        if self.access_code is None:
            return self.message
        code = self.access_code.get_secret_value()
        if CODE_PLACEHOLDER in self.message:
            return self.message.replace(CODE_PLACEHOLDER, code)
        return f"{self.message} {code}"

    def expiry(self, enqueued_at: datetime) -> datetime | None:
        """The moment after which the job must not be sent, if it has one."""
        return expiry(self.expires_at, self.ttl_s, enqueued_at)

    def is_expired(self, enqueued_at: datetime, now: datetime | None = None) -> bool:
        """Whether the job's deadline has passed."""
        deadline = self.expiry(enqueued_at)
        return deadline is not None and (now or datetime.now(UTC)) >= deadline

    def check(
        self,
        *,
        default_region: str | None = None,
        allowed_types: Collection[NumberType] = DEFAULT_ALLOWED_NUMBER_TYPES,
        max_parts: int | None = None,
    ) -> MessageCheck:
        """Apply the origin's rules and report everything found, without raising.

        Args:
            default_region: Region for numbers typed in national format.
            allowed_types: Number types that may receive messages.
            max_parts: The most SMS segments the whole text may need; settings when omitted.

        Returns:
            Valid recipients, refused recipients and message problems, all at once.
        """
        problems = self._text_problems()
        numbers = normalize_numbers(self.phone_numbers, default_region, allowed_types)
        if not self.phone_numbers:
            problems.append(Problem("phone_numbers", "at least one phone number is required"))
        cost: CostEstimate | None = None
        if not problems:
            cost, cost_problems = self._estimate(max_parts or get_settings().max_parts)
            problems.extend(cost_problems)
        return MessageCheck(numbers.valid, numbers.invalid, tuple(problems), cost)

    def validate(  # type: ignore[override]  # BaseModel.validate is pydantic's deprecated alias
        self,
        *,
        default_region: str | None = None,
        allowed_types: Collection[NumberType] = DEFAULT_ALLOWED_NUMBER_TYPES,
        max_parts: int | None = None,
    ) -> MessageCheck:
        """Like :meth:`check`, but raise when anything is wrong.

        Raises:
            InvalidMessage: With every problem found, each naming its field (and recipient).
        """
        result = self.check(
            default_region=default_region, allowed_types=allowed_types, max_parts=max_parts
        )
        if not result.ok:
            raise InvalidMessage(result.all_problems)
        return result

    def _text_problems(self) -> list[Problem]:
        problems: list[Problem] = []
        if not self.message.strip():
            problems.append(Problem("message", "must not be empty"))
        if self.access_code is not None:
            code = self.access_code.get_secret_value()
            if not code.strip():
                problems.append(Problem("access_code", "must not be blank"))
            elif any(ch.isspace() for ch in code):
                problems.append(Problem("access_code", "must not contain whitespace"))
            elif len(code) > _MAX_CODE_LENGTH:
                problems.append(
                    Problem("access_code", f"longer than {_MAX_CODE_LENGTH} characters")
                )
        elif CODE_PLACEHOLDER in self.message:
            problems.append(
                Problem(
                    "access_code", f"the message has a {CODE_PLACEHOLDER} placeholder but no code"
                )
            )
        if self.reference_id is not None and not self.reference_id.strip():
            problems.append(Problem("reference_id", "must not be blank when given"))
        elif self.reference_id is not None and len(self.reference_id) > _MAX_REFERENCE_LENGTH:
            problems.append(
                Problem("reference_id", f"longer than {_MAX_REFERENCE_LENGTH} characters")
            )
        return problems

    def _estimate(self, max_parts: int) -> tuple[CostEstimate | None, list[Problem]]:
        keep = (self.access_code.get_secret_value(),) if self.access_code else ()
        try:
            cost = estimate(self.render(), self.max_length, keep_whole=keep)
        except InvalidMessage as error:
            return None, list(error.problems)
        if cost.total_segments > max_parts:
            reason = (
                f"the text needs {cost.total_segments} SMS segments in {cost.piece_count} "
                f"piece(s), more than max_parts {max_parts}"
            )
            return cost, [Problem("message", reason)]
        return cost, []


class RecipientResult(BaseModel):
    """The outcome for one recipient of a job.

    Attributes:
        phone_number: E.164 for a valid number; for a refused one, the input masked.
        status: Where it stands.
        provider_message_ids: One id per SMS the provider accepted (per piece or segment).
        pieces: How many pieces the text was split into for this recipient.
        segments: SMS segments billed (or to be billed) in total.
        attempts: Provider calls made for this recipient, retries included.
        error_class: The error class name when it failed (``RecipientRejected``, ...).
        reason: A human reason when it failed; never a secret.
    """

    model_config = ConfigDict(frozen=True)

    phone_number: str
    status: DeliveryStatus
    provider_message_ids: list[str] = Field(default_factory=list)
    pieces: int = 0
    segments: int = 0
    attempts: int = 0
    error_class: str | None = None
    reason: str | None = None

    @classmethod
    def from_error(
        cls, phone_number: str, error: SmsError, status: DeliveryStatus
    ) -> RecipientResult:
        """A failed recipient, with the error's class name and message as the reason."""
        return cls(
            phone_number=phone_number,
            status=status,
            error_class=type(error).__name__,
            reason=str(error),
        )


class SendSmsMessageResult(BaseModel):
    """The one final record of a job, as kept in the result backend.

    ``success``, ``exception_message`` and ``message`` are the origin's fields; ``message``
    is the job with its access code redacted (it serialises as ``**********``).
    """

    job_id: str
    success: bool
    exception_message: str | None = None
    message: ShortMessage
    recipients: list[RecipientResult] = Field(default_factory=list)
    lane: str | None = None
    gateway: str | None = None
    account: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def segments(self) -> int:
        """SMS segments across every recipient."""
        return sum(recipient.segments for recipient in self.recipients)
