"""Assemble the one final ``SendSmsMessageResult`` of a job from its parts' states.

The result holds numbers (it is the job's record) but never a code: the message inside is
the redacted one, and part reasons come from error messages, which never hold secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from gateways.errors import InvalidRecipient
from worker.delivery import PartRef, PartState
from worker.jobs import JobRecord
from worker.models import DeliveryStatus, RecipientResult, SendSmsMessageResult, ShortMessage

__all__ = ["job_failure", "recipient_result", "rejected_result", "summarise"]

_MAX_SUMMARY = 1000


def recipient_result(recipient: str, pieces: int, states: dict[str, PartState]) -> RecipientResult:
    """One recipient's outcome: sent when every piece is sent, else the first unsettled piece's."""
    ids: list[str] = []
    segments = attempts = 0
    blocking: PartState | None = None
    sent_pieces = 0
    for piece in range(pieces):
        state = states.get(PartRef(recipient, piece).name)
        if state is None:
            state = PartState(DeliveryStatus.QUEUED)
        attempts += state.attempts
        if state.status == DeliveryStatus.SENT:
            sent_pieces += 1
            ids.extend(state.provider_ids)
            segments += state.segments
        elif blocking is None:
            blocking = state
    if blocking is None:
        return RecipientResult(
            phone_number=recipient,
            status=DeliveryStatus.SENT,
            provider_message_ids=ids,
            pieces=pieces,
            segments=segments,
            attempts=attempts,
        )
    reason = blocking.reason
    if sent_pieces and reason:
        reason = f"{reason} ({sent_pieces} of {pieces} pieces were sent)"
    return RecipientResult(
        phone_number=recipient,
        status=blocking.status,
        provider_message_ids=ids,
        pieces=pieces,
        segments=segments,
        attempts=attempts,
        error_class=blocking.error_class,
        reason=reason,
    )


def rejected_result(error: InvalidRecipient) -> RecipientResult:
    """A recipient refused by validation (shown masked, as the error shows it)."""
    problem = error.problems[0]
    return RecipientResult(
        phone_number=problem.recipient or "",
        status=DeliveryStatus.FAILED_PERMANENT,
        error_class=type(error).__name__,
        reason=f"{problem.field}: {error.reason}",
    )


def summarise(
    record: JobRecord,
    message: ShortMessage,
    recipients: Sequence[RecipientResult],
    *,
    gateway: str | None,
    account: str | None,
    started_at: datetime,
) -> SendSmsMessageResult:
    """The final result of a job whose recipients all reached a final status."""
    failed = [r for r in recipients if r.status != DeliveryStatus.SENT]
    exception_message = None
    if failed:
        details = "; ".join(f"{r.phone_number}: {r.status.value} ({r.reason})" for r in failed)
        exception_message = f"{len(failed)} of {len(recipients)} recipient(s) not sent: {details}"
        exception_message = exception_message[:_MAX_SUMMARY]
    return SendSmsMessageResult(
        job_id=record.id,
        success=bool(recipients) and not failed,
        exception_message=exception_message,
        message=message,
        recipients=list(recipients),
        lane=record.lane,
        gateway=gateway,
        account=account,
        enqueued_at=record.enqueued_at,
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )


def job_failure(
    job_id: str,
    reason: str,
    *,
    record: JobRecord | None = None,
    message: ShortMessage | None = None,
    started_at: datetime | None = None,
) -> SendSmsMessageResult:
    """The result of a job that failed as a whole (missing, malformed, no account, ...)."""
    return SendSmsMessageResult(
        job_id=job_id,
        success=False,
        exception_message=reason,
        message=message or ShortMessage(),
        recipients=[],
        lane=record.lane if record else None,
        enqueued_at=record.enqueued_at if record else None,
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
