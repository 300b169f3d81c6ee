"""Enqueue API for producers (MFA services, helpdesk tools, campaigns).

``enqueue`` checks the message's shape, stores the job in Redis under a fresh id (access
code encrypted, a TTL), and publishes an ``sms.send`` task whose only argument is that id,
to the lane's queue. The same ``reference_id`` twice returns the first job's id and sends
nothing twice. Producers in other languages write the same two things: the job JSON
documented in :mod:`worker.jobs` at ``sms:job:{id}``, and a Celery task message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from redis import Redis

from config.settings import Settings, get_settings
from worker.crypto import Cipher, load_cipher
from worker.jobs import JobRecord
from worker.keys import job_key, reference_key
from worker.models import ShortMessage

__all__ = ["SEND_BATCH_TASK", "SEND_TASK", "Producer", "Publisher", "enqueue", "enqueue_many"]

SEND_TASK = "sms.send"  # the task name producers publish (worker.tasks registers it)
SEND_BATCH_TASK = "sms.send_batch"  # many bulk jobs in one task

# KEYS[1] job key, KEYS[2] reference key (or the job key again when there is none)
# ARGV[1] job JSON, ARGV[2] job id, ARGV[3] TTL s, ARGV[4] "1" when there is a reference
# Returns the id of the job that owns the reference: ARGV[2] when this one was stored.
_STORE = """
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return ARGV[2]
"""


class Publisher(Protocol):
    """Publishes a task by name (a Celery app's ``send_task``)."""

    def send_task(self, name: str, args: Any = ..., **options: Any) -> Any:
        """Publish task ``name``."""
        ...


class Producer:
    """Stores jobs and publishes their tasks.

    Args:
        redis: The state store (jobs and references live there).
        publisher: The Celery app (or anything with its ``send_task``).
        settings: Lane names, TTLs and the OTP default expiry.
        cipher: Encrypts access codes.
    """

    def __init__(
        self, *, redis: Redis, publisher: Publisher, settings: Settings, cipher: Cipher
    ) -> None:
        self._redis = redis
        self._publisher = publisher
        self._settings = settings
        self._cipher = cipher
        self._store = redis.register_script(_STORE)

    def _prepare(
        self,
        message: ShortMessage | dict[str, Any],
        *,
        lane: str,
        account: str | None,
        identity_store: str | None,
        ttl_s: float | None,
    ) -> JobRecord:
        lanes = self._settings.lanes
        if lane not in lanes.names():
            raise ValueError(f"unknown lane {lane!r}; the lanes are {', '.join(lanes.names())}")
        parsed = ShortMessage.model_validate(message) if isinstance(message, dict) else message
        if ttl_s is not None:
            parsed = parsed.model_copy(update={"ttl_s": ttl_s})
        elif lane == lanes.otp and parsed.ttl_s is None and parsed.expires_at is None:
            # A login code nobody reads after ten minutes must not arrive after that.
            parsed = parsed.model_copy(update={"ttl_s": self._settings.otp_ttl_s})
        return JobRecord.create(
            parsed, self._cipher, lane=lane, account=account, identity_store=identity_store
        )

    def _store_job(self, record: JobRecord, reference_id: str | None) -> str:
        ttl_s = self._settings.job_ttl_s
        ref = reference_key(reference_id) if reference_id else job_key(record.id)
        owner: str | bytes = self._store(
            keys=[job_key(record.id), ref],
            args=[record.model_dump_json(), record.id, ttl_s, "1" if reference_id else "0"],
        )
        return owner.decode() if isinstance(owner, bytes) else owner

    def _publish(self, record: JobRecord, reference_id: str | None) -> None:
        try:
            self._publisher.send_task(
                SEND_TASK, args=[record.id], task_id=record.id, queue=record.lane
            )
        except Exception:
            # Unpublished means never sent: forget the job so the producer can try again
            # with the same reference.
            keys = [job_key(record.id)]
            if reference_id:
                keys.append(reference_key(reference_id))
            self._redis.delete(*keys)
            raise

    def enqueue(
        self,
        message: ShortMessage | dict[str, Any],
        *,
        lane: str = "default",
        account: str | None = None,
        identity_store: str | None = None,
        ttl_s: float | None = None,
    ) -> str:
        """Store and publish one job.

        Args:
            message: A ``ShortMessage`` or its JSON form (origin names accepted).
            lane: ``otp`` (login codes), ``default`` (helpdesk) or ``bulk`` (campaigns).
            account: Send through this gateway account.
            identity_store: The producer's identity store (its linked account applies).
            ttl_s: Seconds after which the job is not worth sending (otp lane: a default).

        Returns:
            The job id; for a ``reference_id`` seen before, the first job's id.

        Raises:
            pydantic.ValidationError: The message's shape is wrong (each field named).
            ValueError: The lane is unknown.
        """
        record = self._prepare(
            message, lane=lane, account=account, identity_store=identity_store, ttl_s=ttl_s
        )
        reference_id = record.message.get("reference_id")
        owner = self._store_job(record, reference_id)
        if owner != record.id:
            return owner
        self._publish(record, reference_id)
        return record.id

    def enqueue_many(
        self,
        messages: Iterable[ShortMessage | dict[str, Any]],
        *,
        lane: str = "bulk",
        account: str | None = None,
        identity_store: str | None = None,
        ttl_s: float | None = None,
    ) -> list[str]:
        """:meth:`enqueue` for many messages, stored in pipelined round trips.

        On the bulk lane, jobs travel ``bulk_batch_size`` to a task (``sms.send_batch``);
        each still gets its own result under its own id.
        """
        records = [
            self._prepare(m, lane=lane, account=account, identity_store=identity_store, ttl_s=ttl_s)
            for m in messages
        ]
        ttl = self._settings.job_ttl_s
        with self._redis.pipeline(transaction=False) as pipe:
            for record in records:
                reference_id = record.message.get("reference_id")
                ref = reference_key(reference_id) if reference_id else job_key(record.id)
                self._store(
                    keys=[job_key(record.id), ref],
                    args=[record.model_dump_json(), record.id, ttl, "1" if reference_id else "0"],
                    client=pipe,
                )
            owners = pipe.execute()
        ids: list[str] = []
        fresh: list[JobRecord] = []
        for record, owner in zip(records, owners, strict=True):
            owner_id = owner.decode() if isinstance(owner, bytes) else str(owner)
            ids.append(owner_id)
            if owner_id == record.id:
                fresh.append(record)
        if lane != self._settings.lanes.bulk:
            for record in fresh:
                self._publish(record, record.message.get("reference_id"))
            return ids
        size = self._settings.bulk_batch_size
        for start in range(0, len(fresh), size):
            self._publish_batch(fresh[start : start + size])
        return ids

    def _publish_batch(self, records: list[JobRecord]) -> None:
        try:
            self._publisher.send_task(
                SEND_BATCH_TASK, args=[[record.id for record in records]], queue=records[0].lane
            )
        except Exception:
            # As for one job: unpublished jobs are forgotten so they can be enqueued again.
            keys = [job_key(record.id) for record in records]
            keys += [
                reference_key(ref)
                for record in records
                if (ref := record.message.get("reference_id"))
            ]
            self._redis.delete(*keys)
            raise


_default: Producer | None = None


def _default_producer() -> Producer:
    global _default
    if _default is None:
        from worker.app import app

        settings = get_settings()
        _default = Producer(
            redis=Redis.from_url(settings.state_redis_url.get_secret_value()),
            publisher=app,
            settings=settings,
            cipher=load_cipher(settings),
        )
    return _default


def enqueue(message: ShortMessage | dict[str, Any], **options: Any) -> str:
    """:meth:`Producer.enqueue` with the process settings and the smsgw Celery app."""
    return _default_producer().enqueue(message, **options)


def enqueue_many(messages: Iterable[ShortMessage | dict[str, Any]], **options: Any) -> list[str]:
    """:meth:`Producer.enqueue_many` with the process settings and the smsgw Celery app."""
    return _default_producer().enqueue_many(messages, **options)
