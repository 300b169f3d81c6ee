"""The pipeline: from a stored job to its one final ``SendSmsMessageResult``. No Celery here.

Per job, :meth:`Dispatcher.dispatch`:

1. loads the job (missing or malformed: a failed result naming why);
2. checks expiry (an expired part is recorded ``expired`` and never sent);
3. validates (refused recipients are ``failed_permanent`` with their reason; the rest go);
4. resolves the account (explicit > identity store > default);
5. renders the code into the text and cuts it into pieces per ``max_length``;
6. sends each recipient's pieces in order, recipients concurrently: rate-limit tokens
   first (per segment, lane share for bulk), then an atomic claim of the part, then the
   adapter call, then the part's outcome;
7. answers :class:`Finished` with the result, or :class:`RetryLater` with a countdown when
   some part must be tried again (transient failure, throttle, long rate-limit wait).

Every failure kind has one owner: the adapter's HTTP layer retries only connections that
never opened; this module decides everything else, and the Celery task only turns
``RetryLater`` into ``self.retry(countdown=...)``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from config.settings import Settings
from gateways.base import SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    InvalidMessage,
    OutcomeUnknown,
    PartiallySent,
    PermanentGatewayError,
    RateLimited,
    SmsError,
    TransientGatewayError,
)
from gateways.http import Timeouts
from gateways.models import GatewayAccount, OutboundSms
from gateways.registry import load_gateway
from worker import logs, metrics
from worker.account_status import AccountStatusRecorder
from worker.accounts import AccountDirectory, NoAccount
from worker.campaigns import CampaignGate, CampaignState, Gate, Outcome
from worker.crypto import Cipher, DecryptionFailed
from worker.delivery import Claim, DeliveryState, PartRef, PartState, lost_part
from worker.jobs import JobRecord
from worker.keys import campaign_ratelimit_account, job_key, parts_key
from worker.models import (
    DeliveryStatus,
    RecipientResult,
    SendSmsMessageResult,
    ShortMessage,
    expiry,
)
from worker.ratelimit import AccountRate, Pace, RateLimiter, TokenRequest, account_rate
from worker.results import job_failure, recipient_result, rejected_result, summarise
from worker.segmentation import Segmentation, segment, split_pieces
from worker.validation import number_region

__all__ = ["Dispatcher", "Finished", "RetryLater"]


@dataclass(frozen=True, slots=True)
class Finished:
    """The job is settled; this is its final result."""

    result: SendSmsMessageResult
    # Each part's final status, counted with the job by the task once the result is stored
    # (so a retried batch or a redelivered job is not counted twice).
    parts: tuple[DeliveryStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Some parts must be tried again after ``countdown_s`` seconds."""

    countdown_s: float
    reason: str
    held: bool = False  # held back by its campaign (paused, or its own rate): nothing tried


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    counted: Segmentation


@dataclass(frozen=True, slots=True)
class _Wait:
    """A recipient stopped early and wants another try (after ``after_s``, if known).

    ``held``: held back by its campaign (paused, or a rate limit): not a failed try.
    """

    after_s: float | None
    reason: str
    held: bool = False


@dataclass(slots=True)
class _Job:
    """Everything one dispatch of one job needs."""

    record: JobRecord
    message: ShortMessage
    account: GatewayAccount
    gateway: SmsGateway
    pieces: list[_Piece]
    delivery: DeliveryState
    deadline: datetime | None
    resend_uncertain: bool
    started_at: datetime
    tokens: dict[int, TokenRequest] = field(default_factory=dict)  # by segments, built once
    pace: Pace | None = None  # its campaign's own rate, charged with the account's tokens
    waiting: asyncio.Lock | None = None  # one job of a campaign's batch waits on a limit


# How long the jobs of one campaign batch may wait on rate limits inside the task, in
# multiples of max_inline_wait_s; the rest are held and come back as a batch.
_BATCH_WAIT_BUDGET = 10


class Dispatcher:
    """Runs jobs through the pipeline; one per worker process, shared by its tasks.

    Args:
        redis: The state store (``decode_responses=True``).
        session: The process's shared HTTP session.
        settings: Settings in force.
        accounts: Where jobs' accounts are resolved.
        cipher: Decrypts stored access codes.
        clock: The current time (tests pass a fixed one).
    """

    def __init__(
        self,
        *,
        redis: Redis,
        session: aiohttp.ClientSession,
        settings: Settings,
        accounts: AccountDirectory,
        cipher: Cipher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._redis = redis
        self._session = session
        self._settings = settings
        self._accounts = accounts
        self._cipher = cipher
        self._clock = clock
        self._limiter = RateLimiter(redis, limited_lanes=frozenset({settings.lanes.bulk}))
        self._account_status = AccountStatusRecorder(redis)
        self._campaigns = CampaignGate(redis, ttl_s=settings.job_ttl_s)
        self._gateways: dict[str, tuple[GatewayAccount, SmsGateway]] = {}
        self._retiring: dict[asyncio.Task[None], SmsGateway] = {}
        self._timeouts = Timeouts(
            connect_s=settings.provider_connect_timeout_s,
            total_s=settings.provider_timeout_s,
            deadline_s=settings.provider_timeout_s + settings.provider_connect_timeout_s,
        )

    async def aclose(self) -> None:
        """Release the adapters (the session and Redis belong to the caller)."""
        for task, retired in list(self._retiring.items()):
            task.cancel()
            await retired.aclose()
        self._retiring.clear()
        for _, gateway in self._gateways.values():
            await gateway.aclose()
        self._gateways.clear()

    # --- the job -------------------------------------------------------------------------

    async def dispatch(
        self,
        job_id: str,
        *,
        attempt: int = 0,
        loaded: tuple[Any, Any] | None = None,
        campaign: str | None = None,
        waiting: asyncio.Lock | None = None,
    ) -> Finished | RetryLater:
        """Take the job as far as it can go now.

        Args:
            job_id: The stored job's id.
            attempt: How many times this job was retried already (Celery's count).
            loaded: The job's stored JSON and its parts' ``HGETALL``, when already read.
            campaign: The campaign the job belongs to, when the caller knows it (a missing
                job's outcome is still recorded there).
            waiting: Shared by the jobs of one batch: one at a time waits on a rate limit.
        """
        started_at = self._clock()
        logs.bind(job_id=job_id)
        if loaded is None:
            loaded = (await self._load([job_id]))[0]
        raw, raw_parts = loaded
        if raw is None:
            reason = "job not found: it expired or was never stored"
            if campaign is not None:
                await self._record_missing(campaign, job_id, bool(raw_parts))
            return Finished(job_failure(job_id, reason))
        try:
            record = JobRecord.model_validate_json(raw)
        except ValidationError as error:
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in error.errors()}))
            reason = f"malformed job record ({error.error_count()} problem(s): {fields})"
            return Finished(job_failure(job_id, reason, started_at=started_at))
        logs.bind(lane=record.lane)
        gate: Gate | None = None
        if record.campaign is not None:
            # Before any parsing or decrypting (reads of one campaign's batch are shared).
            gate = await self._campaigns.gate(record.campaign)
            if gate.state is CampaignState.PAUSED and not _record_expired(record, started_at):
                return self._paused()
        outcome = await self._dispatch_record(record, attempt, started_at, raw_parts, gate, waiting)
        if record.campaign is not None and isinstance(outcome, Finished):
            # The one place a campaign job's final result is counted (once: redelivery-safe).
            numbers = record.message.get("phone_numbers") or [""]
            await self._campaigns.record(record.campaign, outcome.result, str(numbers[0]))
        return outcome

    def _paused(self) -> RetryLater:
        return RetryLater(self._settings.campaign_pause_poll_s, "campaign paused", held=True)

    async def _record_missing(self, campaign: str, job_id: str, tried: bool) -> None:
        """A campaign's job whose record is gone still gets its outcome, so the campaign
        finishes: ``expired`` if it was never tried, ``unknown`` if it may have been sent."""
        status = DeliveryStatus.UNKNOWN if tried else DeliveryStatus.EXPIRED
        reason = (
            f"its stored job expired (jobs are kept SMSGW_JOB_TTL_S, "
            f"{self._settings.job_ttl_s} s) before it was {'settled' if tried else 'sent'}"
        )
        await self._campaigns.record_outcome(campaign, Outcome(job_id, "", status, [], 0, reason))

    async def _dispatch_record(
        self,
        record: JobRecord,
        attempt: int,
        started_at: datetime,
        raw_parts: dict[Any, Any],
        gate: Gate | None,
        waiting: asyncio.Lock | None,
    ) -> Finished | RetryLater:
        try:
            message = record.short_message(self._cipher)
        except (DecryptionFailed, ValidationError) as error:
            reason = str(error) if isinstance(error, DecryptionFailed) else "malformed message"
            return Finished(job_failure(record.id, reason, record=record, started_at=started_at))
        return await self._dispatch(record, message, attempt, started_at, raw_parts, gate, waiting)

    async def _load(self, job_ids: list[str]) -> list[tuple[Any, Any]]:
        """Each job's stored JSON and its parts' states, all in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.get(job_key(job_id))
                pipe.hgetall(parts_key(job_id))
            replies = await pipe.execute()
        return list(zip(replies[::2], replies[1::2], strict=True))

    async def dispatch_many(
        self, job_ids: list[str], *, campaign: str | None = None
    ) -> list[tuple[str, Finished | RetryLater]]:
        """Dispatch several jobs at once (a bulk batch), each as :meth:`dispatch` would.

        The jobs and their parts' states are read in one round trip for the whole batch.
        Every job runs to its end even if another fails; then the first error surfaces
        (dispatching again is safe: parts already sent are never re-sent).

        Args:
            job_ids: The jobs.
            campaign: The campaign they all belong to, if any: while it is paused the batch
                is held after one read, without loading a job.
        """
        if campaign is not None:
            gate = await self._campaigns.gate(campaign)
            if gate.holds(self._clock()):
                return [(job_id, self._paused()) for job_id in job_ids]
        loaded = await self._load(job_ids)
        waiting = asyncio.Lock()
        outcomes = await asyncio.gather(
            *(
                self.dispatch(job_id, loaded=data, campaign=campaign, waiting=waiting)
                for job_id, data in zip(job_ids, loaded, strict=True)
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [
            (job_id, outcome)
            for job_id, outcome in zip(job_ids, outcomes, strict=True)
            if not isinstance(outcome, BaseException)
        ]

    async def _dispatch(
        self,
        record: JobRecord,
        message: ShortMessage,
        attempt: int,
        started_at: datetime,
        raw_parts: dict[Any, Any],
        gate: Gate | None = None,
        waiting: asyncio.Lock | None = None,
    ) -> Finished | RetryLater:
        # The message already validated, its code redacted: no second parse of the job.
        redacted = (
            message.model_copy(update={"access_code": SecretStr("redacted")})
            if message.access_code is not None
            else message
        )
        no_account: NoAccount | None = None
        try:
            resolved = await self._accounts.resolve(record.account, record.identity_store)
        except NoAccount as error:
            no_account = error
        region = resolved.default_region if no_account is None else self._settings.default_region
        check = message.check(
            default_region=region,
            allowed_types=self._settings.allowed_number_types,
            max_parts=self._settings.max_parts,
        )
        rejected = [rejected_result(error) for error in check.rejected]
        if no_account is not None:
            return self._everyone_failed(
                record, redacted, check.recipients, no_account, started_at, rejected
            )
        account = resolved.account
        if check.problems:
            return self._everyone_failed(
                record, redacted, check.recipients, InvalidMessage(check.problems), started_at,
                rejected, account=account,
            )  # fmt: skip
        recipients, outside = _within_countries(account, check.recipients)
        rejected += outside
        try:
            gateway = self._gateway(account)
            pieces = self._pieces(message, gateway)
        except (ConfigurationError, PermanentGatewayError) as error:
            return self._everyone_failed(
                record, redacted, recipients, error, started_at, rejected, account=account
            )
        job = _Job(
            record=record,
            message=message,
            account=account,
            gateway=gateway,
            pieces=pieces,
            delivery=_delivery(self._redis, record.id, self._settings.job_ttl_s, raw_parts),
            deadline=message.expiry(record.enqueued_at),
            started_at=started_at,
            resend_uncertain=record.lane in self._settings.resend_uncertain_lanes,
            waiting=waiting if record.campaign is not None else None,
        )
        go = await self._campaign_gate(job, recipients, gate) if gate else True
        if isinstance(go, RetryLater):
            return go
        waits = await self._send_all(job, recipients) if go else []
        held = [w for w in waits if w.held]
        if held:
            # Not a failed try: the job comes back later in a batch, its tries untouched.
            countdown_s = min(
                min(w.after_s or 0.0 for w in held), float(self._settings.max_retry_countdown_s)
            )
            return RetryLater(max(countdown_s, 0.01), held[0].reason, held=True)
        if waits:
            retry = await self._retry_or_give_up(job, recipients, waits, attempt)
            if retry is not None:
                return retry
        states = job.delivery.known
        results = [recipient_result(r, len(pieces), states) for r in recipients]
        statuses = metrics.part_statuses(states, results, len(pieces))
        return Finished(
            summarise(
                record,
                redacted,
                [*results, *rejected],
                gateway=gateway.metadata.name,
                account=account.name,
                started_at=started_at,
            ),
            parts=tuple(statuses),
        )

    def _everyone_failed(
        self,
        record: JobRecord,
        redacted: ShortMessage,
        recipients: tuple[str, ...],
        error: SmsError,
        started_at: datetime,
        rejected: list[RecipientResult] | None = None,
        *,
        account: GatewayAccount | None = None,
    ) -> Finished:
        """Every recipient failed before any send: each counts as one failed part, under the
        account (and its gateway type) when one was resolved."""
        failed = [
            RecipientResult(
                phone_number=recipient,
                status=DeliveryStatus.FAILED_PERMANENT,
                error_class=type(error).__name__,
                reason=str(error),
            )
            for recipient in recipients
        ]
        everyone = [*failed, *(rejected or [])]
        if not everyone:
            return Finished(job_failure(record.id, str(error), record=record, message=redacted))
        return Finished(
            summarise(
                record,
                redacted,
                everyone,
                gateway=self._gateway_name(account) if account else None,
                account=account.name if account else None,
                started_at=started_at,
            ),
            parts=tuple(r.status for r in failed),
        )

    def _gateway(self, account: GatewayAccount) -> SmsGateway:
        cached = self._gateways.get(account.name)
        if cached is not None and cached[0] == account:
            return cached[1]
        cls = load_gateway(account.gateway, self._settings.gateways_enabled)
        gateway = cls(account, self._session, timeouts=self._timeouts)
        self._gateways[account.name] = (account, gateway)
        if cached is not None:
            self._retire(cached[1])
        return gateway

    def _gateway_name(self, account: GatewayAccount) -> str:
        """The gateway type's own name (``vonage`` for an account of type ``nexmo``), as a
        sent job reports it; the account's word for it when the type does not load."""
        try:
            return load_gateway(account.gateway, self._settings.gateways_enabled).metadata.name
        except ConfigurationError:
            return account.gateway

    def _retire(self, gateway: SmsGateway) -> None:
        # The account was modified: sends already under way may still use the old adapter,
        # so it is closed once any of them must have finished, not now.
        async def close_later() -> None:
            await asyncio.sleep(self._timeouts.deadline_s)
            await gateway.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring[task] = gateway
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def _pieces(self, message: ShortMessage, gateway: SmsGateway) -> list[_Piece]:
        code = message.access_code.get_secret_value() if message.access_code else None
        texts = split_pieces(
            message.render(), message.max_length, keep_whole=(code,) if code else ()
        )
        pieces = [_Piece(text, segment(text)) for text in texts]
        caps = gateway.metadata.capabilities
        name = gateway.metadata.name
        if not caps.unicode and any(p.counted.encoding == "UCS-2" for p in pieces):
            raise PermanentGatewayError(
                f"{name}: cannot send UCS-2 text; the message has characters outside GSM-7",
                gateway=name,
                request_sent=False,
            )
        widest = max((p.counted.segments for p in pieces), default=0)
        if widest > caps.max_segments:
            raise PermanentGatewayError(
                f"{name}: a piece needs {widest} SMS segments, more than the {caps.max_segments} "
                "this gateway accepts; lower max_length",
                gateway=name,
                request_sent=False,
            )
        return pieces

    # --- sending ---------------------------------------------------------------------------

    async def _send_all(self, job: _Job, recipients: tuple[str, ...]) -> list[_Wait]:
        states = dict(job.delivery.known)
        if len(recipients) == 1:
            # The common case (bulk: one recipient a job) needs no task, gather or semaphore.
            alone = await self._send_recipient(job, recipients[0], states)
            return [alone] if alone is not None else []
        limit = asyncio.Semaphore(self._settings.recipient_concurrency)

        async def one(recipient: str) -> _Wait | None:
            async with limit:
                return await self._send_recipient(job, recipient, states)

        # Every recipient's coroutine runs to its end even if another fails, so no send is
        # left in flight (unsettled) after the task returns; then the first error surfaces.
        outcomes = await asyncio.gather(*(one(r) for r in recipients), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [outcome for outcome in outcomes if isinstance(outcome, _Wait)]

    async def _send_recipient(
        self, job: _Job, recipient: str, states: dict[str, PartState]
    ) -> _Wait | None:
        for index, piece in enumerate(job.pieces):
            part = PartRef(recipient, index)
            known = states.get(part.name)
            if known is not None and known.status == DeliveryStatus.SENT:
                continue
            if known is not None and known.status.is_final:
                return None
            if job.deadline is not None and self._clock() >= job.deadline:
                # A part left in flight by a crash may have reached the provider: that is
                # unknown, not expired.
                lost = known is not None and known.status == DeliveryStatus.SENDING
                await job.delivery.settle(part, lost_part() if lost else _expired_part())
                return None
            claim = await self._claim(job, part, piece.counted.segments)
            if isinstance(claim, _Wait):
                return claim
            if not claim.claimed:
                if claim.status == DeliveryStatus.SENT:
                    continue
                return None
            outcome = await self._send_part(job, recipient, index, piece, part, claim.attempts)
            if isinstance(outcome, _Wait):
                return outcome
            if not outcome:
                return None
        return None

    async def _claim(self, job: _Job, part: PartRef, segments: int) -> Claim | _Wait:
        """Claim the part with its rate-limit tokens (one round trip); wait for the limit
        briefly in-loop, while a longer wait is a retry (a campaign's job: held)."""
        tokens = job.tokens.get(segments)
        if tokens is None:
            tokens = job.tokens[segments] = self._limiter.request(
                job.account.name, self._rate(job), lane=job.record.lane, cost=segments
            )
        claim = await job.delivery.claim_with_tokens(
            part, tokens, resend_uncertain=job.resend_uncertain, pace=job.pace
        )
        if not claim.rate_limited:
            return claim
        if job.waiting is None:
            return await self._wait_for_tokens(job, part, tokens, claim)
        # A campaign's batch: one job at a time waits on the limit (the others would only
        # ask the limiter again and again), and each looks at its campaign again first.
        async with job.waiting:
            return await self._wait_for_tokens(job, part, tokens, None)

    async def _wait_for_tokens(
        self, job: _Job, part: PartRef, tokens: TokenRequest, refused: Claim | None
    ) -> Claim | _Wait:
        campaign = job.record.campaign
        limit = f"rate limit of account {job.account.name!r}"
        if job.pace is not None:
            limit = f"rate limit of its campaign or of account {job.account.name!r}"
        while True:
            if refused is None:
                if campaign is not None:
                    stop = await self._campaign_stop(job, part)
                    if stop is not None:
                        return stop
                claim = await job.delivery.claim_with_tokens(
                    part, tokens, resend_uncertain=job.resend_uncertain, pace=job.pace
                )
                if not claim.rate_limited:
                    return claim
            else:
                claim, refused = refused, None
            wait_s = claim.retry_after_s
            metrics.rate_limit_wait(job.account.name, job.record.lane, wait_s)
            now = self._clock()
            too_late = job.deadline is not None and (
                now.timestamp() + wait_s >= job.deadline.timestamp()
            )
            if too_late:
                return _Wait(wait_s, limit)
            waited_s = (now - job.started_at).total_seconds()
            budget_s = self._settings.max_inline_wait_s * (
                _BATCH_WAIT_BUDGET if campaign is not None else 1
            )
            if wait_s > self._settings.max_inline_wait_s or (
                campaign is not None and waited_s + wait_s > budget_s
            ):
                return _Wait(wait_s, limit, held=campaign is not None)
            await asyncio.sleep(wait_s)

    async def _campaign_stop(self, job: _Job, part: PartRef) -> Claim | _Wait | None:
        """Its campaign, read again: held when paused, settled when cancelled, else None."""
        assert job.record.campaign is not None
        gate = await self._campaigns.gate(job.record.campaign)
        if gate.state is CampaignState.CANCELLED:
            await self._settle_open_parts(job, (part.recipient,), *_CANCELLED)
            return Claim(False, DeliveryStatus.CANCELLED, 0)
        if gate.holds(self._clock()):
            return _Wait(self._settings.campaign_pause_poll_s, "campaign paused", held=True)
        return None

    def _rate(self, job: _Job) -> AccountRate:
        return account_rate(job.account, job.gateway.metadata.capabilities, self._settings)

    # --- campaigns -------------------------------------------------------------------------

    async def _campaign_gate(
        self, job: _Job, recipients: tuple[str, ...], gate: Gate
    ) -> RetryLater | bool:
        """Whether a campaign's job may go now (True), was settled unsent (False), or waits.

        Paused: held (the batch comes back later; an expired job still settles). Cancelled:
        every open part settles ``cancelled``, never sent. With its own rate, each part's
        claim takes the campaign's tokens (per segment) with the account's, all or none.
        """
        assert job.record.campaign is not None
        if gate.state is CampaignState.CANCELLED:
            await self._settle_open_parts(job, recipients, *_CANCELLED)
            return False
        if gate.holds(self._clock()):
            return self._paused()
        if gate.rate_per_s is not None:
            burst = gate.rate_per_s * self._settings.rate_burst_s
            name = campaign_ratelimit_account(job.record.campaign)
            job.pace = Pace.of(name, gate.rate_per_s, burst)
        return True

    async def _send_part(
        self, job: _Job, recipient: str, index: int, piece: _Piece, part: PartRef, attempts: int
    ) -> _Wait | bool:
        """One provider call for a claimed part.

        Returns:
            True when sent; False when the part settled as failed (the recipient stops);
            a wait when it must be tried again later.
        """
        sms = OutboundSms(
            to=recipient,
            text=piece.text,
            sender=job.account.sender,
            client_ref=f"{job.record.id}:{index}",
        )
        delivery = job.delivery
        lane, gateway_name = job.record.lane, job.gateway.metadata.name
        try:
            with metrics.provider_call(lane, gateway_name):
                receipt = await job.gateway.send(sms)
        except RateLimited as error:
            metrics.throttled(job.account.name, gateway_name)
            metrics.retry(lane, error)
            await self._limiter.pause(job.account.name, error.retry_after_s)
            await delivery.settle_error(part, DeliveryStatus.RETRYING, error)
            return _Wait(error.retry_after_s, str(error))
        except OutcomeUnknown as error:
            if not job.resend_uncertain:
                reason = f"{error}; not re-sent, to avoid a duplicate"
                await delivery.settle_error(part, DeliveryStatus.UNKNOWN, error, reason=reason)
                return False
            return await self._transient(job, part, error, attempts)
        except TransientGatewayError as error:
            return await self._transient(job, part, error, attempts)
        except PartiallySent as error:
            await delivery.settle(
                part,
                PartState(
                    DeliveryStatus.FAILED_PERMANENT,
                    provider_ids=list(error.accepted_ids),
                    error_class=type(error).__name__,
                    reason=str(error),
                ),
            )
            return False
        except PermanentGatewayError as error:
            if isinstance(error, AccountRejected):
                await self._account_status.failing(job.account.name, error)
            await delivery.settle_error(part, DeliveryStatus.FAILED_PERMANENT, error)
            return False
        segments = receipt.segments or piece.counted.segments
        await delivery.settle(
            part,
            PartState(
                DeliveryStatus.SENT,
                attempts=attempts,
                provider_ids=list(receipt.provider_message_ids),
                segments=segments,
            ),
        )
        metrics.observe_accepted(lane, job.record.enqueued_at)  # after the outcome is safe
        await self._account_status.ok(job.account.name)
        return True

    async def _transient(
        self, job: _Job, part: PartRef, error: TransientGatewayError, attempts: int
    ) -> _Wait | bool:
        """A failure worth another try, unless the part has had all its attempts."""
        delivery = job.delivery
        if attempts >= self._settings.max_attempts:
            reason = f"{error} (gave up after {attempts} attempts)"
            await delivery.settle_error(part, DeliveryStatus.FAILED_EXHAUSTED, error, reason=reason)
            return False
        await delivery.settle_error(part, DeliveryStatus.RETRYING, error)
        metrics.retry(job.record.lane, error)
        return _Wait(None, str(error))

    # --- retries ---------------------------------------------------------------------------

    async def _retry_or_give_up(
        self, job: _Job, recipients: tuple[str, ...], waits: list[_Wait], attempt: int
    ) -> RetryLater | None:
        hinted = [w.after_s for w in waits if w.after_s is not None]
        backoff_s = min(
            self._settings.retry_base_s * 2 ** min(attempt, 32),  # no float overflow
            float(self._settings.max_retry_countdown_s),
        )
        backoff_s *= random.uniform(0.5, 1.0)  # jitter: retries of many jobs spread out
        countdown_s = min(
            max([backoff_s, *hinted]) if hinted else backoff_s,
            float(self._settings.max_retry_countdown_s),
        )
        now = self._clock()
        if job.deadline is not None and now.timestamp() + countdown_s >= job.deadline.timestamp():
            await self._settle_open_parts(
                job, recipients, DeliveryStatus.EXPIRED, "expired while waiting to be retried"
            )
            return None
        if attempt + 1 >= self._settings.max_attempts * 5:
            await self._settle_open_parts(
                job,
                recipients,
                DeliveryStatus.FAILED_EXHAUSTED,
                f"gave up after {attempt + 1} tries of the job ({waits[0].reason})",
            )
            return None
        return RetryLater(countdown_s, waits[0].reason)

    async def _settle_open_parts(
        self, job: _Job, recipients: tuple[str, ...], status: DeliveryStatus, reason: str
    ) -> None:
        states = await job.delivery.load()
        for recipient in recipients:
            for index in range(len(job.pieces)):
                part = PartRef(recipient, index)
                known = states.get(part.name)
                if known is not None and known.status == DeliveryStatus.SENDING:
                    await job.delivery.settle(part, lost_part())
                    continue
                if known is None or not known.status.is_final:
                    error_class = known.error_class if known else None
                    await job.delivery.settle(
                        part,
                        PartState(
                            status,
                            attempts=known.attempts if known else 0,
                            error_class=error_class,
                            reason=f"{reason}; last error: {known.reason}"
                            if known and known.reason
                            else reason,
                        ),
                    )


def _within_countries(
    account: GatewayAccount, recipients: tuple[str, ...]
) -> tuple[tuple[str, ...], list[RecipientResult]]:
    """The recipients the account may send to, and a refusal for each of the others."""
    if not account.countries:
        return recipients, []
    allowed: list[str] = []
    refused: list[RecipientResult] = []
    for recipient in recipients:
        region = number_region(recipient)
        if region in account.countries:
            allowed.append(recipient)
            continue
        refused.append(
            RecipientResult(
                phone_number=recipient,
                status=DeliveryStatus.FAILED_PERMANENT,
                error_class="CountryNotAllowed",
                reason=f"a number of {region or 'no known country'}; account {account.name!r} "
                f"sends only to {', '.join(account.countries)}",
            )
        )
    return tuple(allowed), refused


def _record_expired(record: JobRecord, now: datetime) -> bool:
    """Whether a stored job is past its expiry, read without parsing its message."""
    expires_at, ttl_s = record.message.get("expires_at"), record.message.get("ttl_s")
    deadline = expiry(
        datetime.fromisoformat(str(expires_at)) if expires_at else None,
        float(ttl_s) if ttl_s else None,
        record.enqueued_at,
    )
    return deadline is not None and now >= deadline


_CANCELLED = (DeliveryStatus.CANCELLED, "its campaign was cancelled before it was sent")


def _expired_part() -> PartState:
    return PartState(DeliveryStatus.EXPIRED, reason="expired before it was sent")


def _delivery(redis: Redis, job_id: str, ttl_s: int, raw_parts: dict[Any, Any]) -> DeliveryState:
    delivery = DeliveryState(redis, job_id, ttl_s=ttl_s)
    delivery.remember(raw_parts)
    return delivery
