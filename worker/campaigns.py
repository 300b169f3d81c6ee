"""Bulk campaigns: their state in Redis, and the two things workers ask of it.

A campaign sends one text (per-recipient variables filled in) to every recipient of a file,
one job per recipient on the ``bulk`` lane, through the ordinary pipeline. Everything
about it lives in Redis, so a producer or worker restart loses nothing
(keys in :mod:`worker.keys`):

* ``sms:campaign:{id}`` (hash): its settings (name, file digest, template, account, rate,
  deadline), its state and its counters: ``rows``, ``invalid``, ``duplicates``,
  ``recipients``, ``pieces``, ``segments`` (planned), ``done``, ``status:<status>``
  (final outcomes by status), ``segments_sent``. Every counter changes inside a Lua script,
  so readers never see half an update.
* ``...:jobs`` (list): the job ids, in file order; ``...:seen`` (hash): number digest ->
  the file chunk that staged it (a duplicate number is sent once); ``...:outcomes`` (hash):
  job id -> the recipient's final outcome; ``...:invalid`` (list): refused rows.

State machine::

    running <-> paused        pause / resume
    running | paused -> cancelled        queued recipients end ``cancelled``
    running | paused -> finished         every recipient has a final outcome

Workers ask two things (:class:`CampaignGate`): *may this job go now* (not while paused;
a cancelled campaign's job settles ``cancelled`` unsent; a campaign with its own rate has
its tokens taken from a second GCRA key in each part's claim, with the account's), and
*record this job's final outcome*, which happens exactly once per job (``HSETNX`` on the
outcomes hash, then the counters, in one script), so a redelivered job never counts twice.

Every change (an outcome, a pause, a published batch, a committed chunk) renews the TTL of
all the campaign's keys together, the name key included, so none outlives the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from worker.keys import (
    campaign_index_key,
    campaign_invalid_key,
    campaign_jobs_key,
    campaign_key,
    campaign_name_key,
    campaign_outcomes_key,
    campaign_seen_key,
    job_key,
)
from worker.models import DeliveryStatus, SendSmsMessageResult

__all__ = [
    "Campaign",
    "CampaignError",
    "CampaignGate",
    "CampaignState",
    "CampaignStore",
    "Gate",
    "Outcome",
    "RatePlan",
    "campaign_job_id",
    "new_campaign_id",
    "number_digest",
    "plan_rate",
    "stage_argument",
]


class CampaignState(StrEnum):
    """Where a campaign stands."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"


class CampaignError(Exception):
    """A campaign operation that cannot be done (unknown id, wrong state, ...)."""


def new_campaign_id() -> str:
    """A fresh campaign id (32 hex characters)."""
    return uuid.uuid4().hex


def campaign_job_id(campaign_id: str, e164: str) -> str:
    """The job id of one recipient: the same recipient of a campaign is always the same job."""
    return hashlib.sha256(f"{campaign_id}:{e164}".encode()).hexdigest()[:32]


def stage_argument(digest: str, job_id: str, job_json: str) -> bytes:
    """One recipient's argument to the staging script (made where the job is built)."""
    return f"{digest}{job_id}{job_json}".encode()


def number_digest(e164: str) -> str:
    """What the duplicate check stores instead of the number (24 hex characters)."""
    return hashlib.sha256(e164.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign as stored (settings, state and counters)."""

    fields: dict[str, str]

    @property
    def id(self) -> str:
        """The campaign id."""
        return self.fields["id"]

    @property
    def name(self) -> str:
        """Its name (unique)."""
        return self.fields.get("name", "")

    @property
    def state(self) -> CampaignState:
        """Its state."""
        return CampaignState(self.fields.get("state", CampaignState.RUNNING))

    def count(self, name: str) -> int:
        """A counter (0 when never set)."""
        return int(self.fields.get(name) or 0)

    @property
    def enqueued(self) -> bool:
        """Whether every recipient is staged and published to the workers."""
        return self.fields.get("enqueued") == "1"

    @property
    def staged(self) -> bool:
        """Whether the whole file was read and every recipient stored."""
        return self.fields.get("staged") == "1"

    @property
    def rate_per_s(self) -> float | None:
        """The campaign's own limit (segments/s), if it has one."""
        value = self.fields.get("rate_per_s")
        return float(value) if value else None

    def statuses(self) -> dict[str, int]:
        """Final outcomes so far, by status."""
        return {
            key.removeprefix("status:"): int(value)
            for key, value in self.fields.items()
            if key.startswith("status:") and int(value)
        }

    @property
    def remaining(self) -> int:
        """Recipients without a final outcome yet."""
        return max(0, self.count("recipients") - self.count("done"))

    def summary(self) -> dict[str, Any]:
        """The JSON form (``smsgw campaign status --json``); never a secret."""
        statuses = self.statuses()
        sent = statuses.get(DeliveryStatus.SENT, 0)
        failed = sum(v for k, v in statuses.items() if k.startswith("failed"))
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "file": self.fields.get("file"),
            "account": self.fields.get("account") or None,
            "identity_store": self.fields.get("identity_store") or None,
            "rate_per_s": self.rate_per_s,
            "deadline": self.fields.get("deadline") or None,
            "created_at": self.fields.get("created_at"),
            "finished_at": self.fields.get("finished_at") or None,
            "staged": self.staged,
            "enqueued": self.enqueued,
            "rows": self.count("rows"),
            "invalid": self.count("invalid"),
            "duplicates": self.count("duplicates"),
            "recipients": self.count("recipients"),
            "pieces": self.count("pieces"),
            "segments": self.count("segments"),
            "segments_sent": self.count("segments_sent"),
            "sent": sent,
            "failed": failed,
            "expired": statuses.get(DeliveryStatus.EXPIRED, 0),
            "cancelled": statuses.get(DeliveryStatus.CANCELLED, 0),
            "unknown": statuses.get(DeliveryStatus.UNKNOWN, 0),
            "done": self.count("done"),
            "remaining": self.remaining,
            "statuses": statuses,
            "first_done_at": self.fields.get("first_done_at") or None,
            "last_done_at": self.fields.get("last_done_at") or None,
        }


@dataclass(frozen=True, slots=True)
class RatePlan:
    """How fast a campaign goes, and whether it meets its deadline.

    Attributes:
        rate_per_s: The campaign's own limit (segments/s); ``None``: the account's bulk share.
        bulk_rate_per_s: The account's bulk share of its rate (segments/s).
        needed_per_s: The rate the deadline needs, when there is one.
        reachable: Whether the deadline can be met at the account's bulk share.
        duration_s: How long sending takes at the planned pace.
    """

    rate_per_s: float | None
    bulk_rate_per_s: float
    needed_per_s: float | None
    reachable: bool | None
    duration_s: float


# Pace a deadline campaign this much faster than strictly needed: it finishes at ~80% of
# the window, leaving room for retries and throttles.
DEADLINE_MARGIN: Final = 1.25


def plan_rate(
    segments: int,
    *,
    bulk_rate_per_s: float,
    requested_per_s: float | None = None,
    seconds_left: float | None = None,
) -> RatePlan:
    """The campaign's pace from its size, the account's bulk share, ``--rate`` and deadline.

    Without a deadline the campaign goes at ``--rate`` (capped by the account's share, which
    the workers enforce anyway) or at the account's share. With one, it goes at the rate the
    deadline needs (times :data:`DEADLINE_MARGIN`), so a campaign with days to spare does not
    take the account's whole bulk share; never above ``--rate`` or the share.
    """
    ceiling = min(bulk_rate_per_s, requested_per_s or bulk_rate_per_s)
    needed = reachable = None
    pace = ceiling
    if seconds_left is not None:
        needed = segments / max(seconds_left, 1e-9)
        reachable = needed <= bulk_rate_per_s and (
            requested_per_s is None or needed <= requested_per_s
        )
        pace = min(ceiling, needed * DEADLINE_MARGIN)
    own = None if pace >= bulk_rate_per_s else pace
    return RatePlan(
        rate_per_s=own,
        bulk_rate_per_s=bulk_rate_per_s,
        needed_per_s=needed,
        reachable=reachable,
        duration_s=segments / pace if pace > 0 else 0.0,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's line in the report: never a secret."""

    job_id: str
    e164: str
    status: str
    provider_ids: list[str]
    segments: int
    reason: str

    def as_json(self) -> str:
        """The JSON stored in the outcomes hash."""
        return json.dumps(
            {
                "n": self.e164,
                "s": self.status,
                "ids": self.provider_ids,
                "seg": self.segments,
                "r": self.reason,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, job_id: str, raw: str) -> Outcome:
        """Read an outcome back."""
        data = json.loads(raw)
        return cls(job_id, data["n"], data["s"], list(data["ids"]), int(data["seg"]), data["r"])

    @classmethod
    def from_result(cls, result: SendSmsMessageResult, e164: str) -> Outcome:
        """The outcome of a campaign job (one recipient) from its final result."""
        if not result.recipients:
            reason = result.exception_message or "the job failed"
            return cls(result.job_id, e164, DeliveryStatus.FAILED_PERMANENT, [], 0, reason)
        recipient = result.recipients[0]
        return cls(
            result.job_id,
            recipient.phone_number if recipient.phone_number.startswith("+") else e164,
            recipient.status.value,
            list(recipient.provider_message_ids),
            recipient.segments,
            recipient.reason or "",
        )


# Finish when every staged recipient has an outcome and the enqueue is over. Embedded below.
# KEYS[1] the campaign hash; ``now`` an ISO time.
_FINISH_LUA = """
local function finish_if_done(key, now)
  local c = redis.call('HMGET', key, 'done', 'recipients', 'enqueued', 'state', 'finished_at')
  if c[3] == '1' and tonumber(c[1] or '0') >= tonumber(c[2] or '0') then
    if c[4] == 'running' or c[4] == 'paused' then
      redis.call('HSET', key, 'state', 'finished')
    end
    if not c[5] then
      redis.call('HSET', key, 'finished_at', now)
    end
  end
end
"""

# Every key of a campaign lives as long as the others: each change refreshes them all
# together (and the name key, kept in the hash's ``name_key``). Embedded below.
# KEYS[1..5] the campaign's keys (:func:`_campaign_keys`: the hash first).
_REFRESH_LUA = """
local function refresh_all(ttl)
  for i = 1, 5 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
  local name_key = redis.call('HGET', KEYS[1], 'name_key')
  if name_key then
    redis.call('EXPIRE', name_key, ttl)
  end
end
"""

# KEYS[1..5] the campaign's keys (hash, outcomes, ...)
# ARGV[1] job id, ARGV[2] outcome JSON, ARGV[3] status, ARGV[4] segments sent, ARGV[5] now,
# ARGV[6] TTL s. Returns 1 when recorded, 0 when the job's outcome was already recorded,
# -1 when the campaign is gone.
_RECORD = (
    _FINISH_LUA
    + _REFRESH_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('HINCRBY', KEYS[1], 'status:' .. ARGV[3], 1)
redis.call('HINCRBY', KEYS[1], 'segments_sent', ARGV[4])
redis.call('HSETNX', KEYS[1], 'first_done_at', ARGV[5])
redis.call('HSET', KEYS[1], 'last_done_at', ARGV[5])
finish_if_done(KEYS[1], ARGV[5])
refresh_all(ARGV[6])
return 1
"""
)

# Cancel the recipients a crashed start never published: each gets ``cancelled`` (once).
# KEYS[1..5] the campaign's keys; ARGV[1] now, ARGV[2] TTL s, ARGV[3] "1" when these are
# the last ones, then (job id, outcome JSON) pairs. Returns how many were recorded now.
_CANCEL_UNPUBLISHED = (
    _FINISH_LUA
    + _REFRESH_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local recorded = 0
for i = 4, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    recorded = recorded + 1
  end
end
redis.call('HINCRBY', KEYS[1], 'done', recorded)
redis.call('HINCRBY', KEYS[1], 'status:cancelled', recorded)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'enqueued', '1')
  finish_if_done(KEYS[1], ARGV[1])
end
refresh_all(ARGV[2])
return recorded
"""
)

# Stage a chunk's recipients in one call.
# KEYS[1] seen hash, KEYS[2] jobs list, KEYS[3..] the job keys
# ARGV[1] chunk number, ARGV[2] TTL s, then per recipient (same order as its job key) one
# argument: the number digest (24 hex), the job id (32 hex), then the job JSON; one argument
# instead of three, because packing arguments is most of what this costs the producer.
# Returns per recipient: 1 staged now, 2 staged by an interrupted run of this same chunk,
# 0 a duplicate of a number staged earlier.
_STAGE = """
local answers = {}
for i = 3, #KEYS do
  local row = ARGV[i]
  local digest = string.sub(row, 1, 24)
  local chunk = redis.call('HGET', KEYS[1], digest)
  if chunk then
    answers[#answers + 1] = (chunk == ARGV[1]) and 2 or 0
  else
    redis.call('HSET', KEYS[1], digest, ARGV[1])
    redis.call('SET', KEYS[i], string.sub(row, 57), 'EX', ARGV[2])
    redis.call('RPUSH', KEYS[2], string.sub(row, 25, 56))
    answers[#answers + 1] = 1
  end
end
return answers
"""

# KEYS[1..5] the campaign's keys (KEYS[5] the invalid list)
# ARGV[1] the chunk count after this one, ARGV[2] counter increments (JSON object),
# ARGV[3] TTL s, ARGV[4..] refused rows (JSON). Idempotent: a chunk commits once.
_COMMIT = (
    _REFRESH_LUA
    + """
if tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0') >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'chunks', ARGV[1])
for name, value in pairs(cjson.decode(ARGV[2])) do
  redis.call('HINCRBY', KEYS[1], name, value)
end
for i = 4, #ARGV do
  redis.call('RPUSH', KEYS[5], ARGV[i])
end
refresh_all(ARGV[3])
return 1
"""
)

# KEYS[1..5] the campaign's keys; ARGV[1] the published count after this batch (never goes
# back), ARGV[2] TTL s.
_PUBLISHED = (
    _REFRESH_LUA
    + """
if tonumber(redis.call('HGET', KEYS[1], 'published') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'published', ARGV[1])
end
refresh_all(ARGV[2])
return 1
"""
)

# KEYS[1] campaign hash; ARGV[1] now. Every recipient is published: the campaign may finish.
_ENQUEUED = (
    _FINISH_LUA
    + """
redis.call('HSET', KEYS[1], 'enqueued', '1')
finish_if_done(KEYS[1], ARGV[1])
return 1
"""
)

# KEYS[1..5] the campaign's keys; ARGV[1] action, ARGV[2] now, ARGV[3] TTL s.
# Returns {1, new state} or {0, current state} when the action does not apply.
_TRANSITION = (
    _REFRESH_LUA
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, 'missing'} end
local allowed = {
  pause = {running = 'paused'},
  resume = {paused = 'running'},
  cancel = {running = 'cancelled', paused = 'cancelled'},
}
local target = allowed[ARGV[1]][state]
if not target then return {0, state} end
redis.call('HSET', KEYS[1], 'state', target, 'state_changed_at', ARGV[2])
refresh_all(ARGV[3])
return {1, target}
"""
)

_ACTIONS = {"pause", "resume", "cancel"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CampaignStore:
    """Campaign state for producers and the CLI (synchronous Redis).

    Args:
        redis: The state store, ``decode_responses=True``.
        ttl_s: How long a campaign's keys live after their last change (the jobs' TTL).
    """

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._stage = redis.register_script(_STAGE)
        self._commit = redis.register_script(_COMMIT)
        self._published = redis.register_script(_PUBLISHED)
        self._enqueued = redis.register_script(_ENQUEUED)
        self._transition = redis.register_script(_TRANSITION)
        self._cancel_unpublished = redis.register_script(_CANCEL_UNPUBLISHED)

    def find_by_name(self, name: str) -> Campaign | None:
        """The campaign called ``name``, if there is one."""
        campaign_id = self.redis.get(campaign_name_key(name))
        return self.get(str(campaign_id)) if campaign_id else None

    def create(self, fields: dict[str, str]) -> tuple[Campaign, bool]:
        """Create a campaign named ``fields["name"]``, unless one by that name exists.

        Returns:
            The campaign, and whether it was created now (False: it existed).
        """
        name = fields["name"]
        campaign_id = new_campaign_id()
        if not self.redis.set(campaign_name_key(name), campaign_id, nx=True, ex=self.ttl_s):
            existing = self.find_by_name(name)
            if existing is None:
                raise CampaignError(f"campaign {name!r} is being created by another process")
            return existing, False
        now = _now()
        stored = {
            **fields,
            "id": campaign_id,
            "state": CampaignState.RUNNING.value,
            "created_at": now,
            "chunks": "0",
            "published": "0",
            "name_key": campaign_name_key(name),
        }
        with self.redis.pipeline() as pipe:
            mapping: dict[Any, Any] = dict(stored)
            pipe.hset(campaign_key(campaign_id), mapping=mapping)
            pipe.expire(campaign_key(campaign_id), self.ttl_s)
            pipe.zadd(campaign_index_key(), {campaign_id: datetime.now(UTC).timestamp()})
            pipe.execute()
        return Campaign(stored), True

    def get(self, campaign_id: str) -> Campaign | None:
        """The campaign with this id, or ``None``."""
        fields = self.redis.hgetall(campaign_key(campaign_id))
        return Campaign(_texts(fields)) if fields else None

    def require(self, campaign_id: str) -> Campaign:
        """The campaign, or a :class:`CampaignError` naming the unknown id."""
        campaign = self.get(campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign {campaign_id}: never started here, or it expired")
        return campaign

    def all(self) -> list[Campaign]:
        """Every campaign still kept, newest first."""
        ids = [_text(i) for i in self.redis.zrevrange(campaign_index_key(), 0, -1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for campaign_id in ids:
                pipe.hgetall(campaign_key(campaign_id))
            found = pipe.execute()
        gone = [i for i, f in zip(ids, found, strict=True) if not f]
        if gone:
            self.redis.zrem(campaign_index_key(), *gone)
        return [Campaign(_texts(f)) for f in found if f]

    def delete(self, campaign_id: str) -> None:
        """Forget a campaign (a dry run's staging) and its stored jobs."""
        campaign = self.get(campaign_id)
        jobs = campaign_jobs_key(campaign_id)

        while True:
            ids = self.redis.lpop(jobs, 1000)
            if not ids:
                break
            self.redis.delete(*[job_key(_text(i)) for i in ids])
        keys = [
            campaign_key(campaign_id),
            campaign_seen_key(campaign_id),
            campaign_outcomes_key(campaign_id),
            campaign_invalid_key(campaign_id),
        ]
        if campaign is not None:
            keys.append(campaign_name_key(campaign.name))
        self.redis.delete(*keys)
        self.redis.zrem(campaign_index_key(), campaign_id)

    def stage_chunk(
        self, campaign_id: str, chunk: int, jobs: list[tuple[str, bytes]], *, ttl_s: int
    ) -> list[int]:
        """Store a chunk's jobs in one call: (job id, :func:`stage_argument`) each.

        Returns:
            Per job: 1 stored now, 2 stored by an interrupted run of this chunk, 0 duplicate.
        """
        if not jobs:
            return []
        keys = [campaign_seen_key(campaign_id), campaign_jobs_key(campaign_id)]
        keys += [job_key(job_id) for job_id, _ in jobs]
        args: list[bytes | str | int] = [chunk, ttl_s]
        args += [argument for _, argument in jobs]
        return [int(answer) for answer in self._stage(keys=keys, args=args)]

    def commit_chunk(
        self, campaign_id: str, chunks: int, counters: dict[str, int], invalid: list[str]
    ) -> bool:
        """Record that the file's first ``chunks`` chunks are staged, with their counts."""
        done = self._commit(
            keys=_campaign_keys(campaign_id),
            args=[chunks, json.dumps(counters), self.ttl_s, *invalid],
        )
        return bool(int(done))

    def set_rate(self, campaign_id: str, rate_per_s: float | None) -> None:
        """Set (or clear) the campaign's own limit, in SMS segments per second."""
        self.redis.hset(
            campaign_key(campaign_id), "rate_per_s", "" if rate_per_s is None else repr(rate_per_s)
        )

    def mark_staged(self, campaign_id: str) -> None:
        """The whole file is read: the recipient count is final."""
        self.redis.hset(campaign_key(campaign_id), "staged", "1")

    def job_ids(self, campaign_id: str, start: int, count: int) -> list[str]:
        """``count`` job ids from position ``start`` in file order."""
        found = self.redis.lrange(campaign_jobs_key(campaign_id), start, start + count - 1)
        return [_text(i) for i in found]

    def mark_published(self, campaign_id: str, published: int) -> None:
        """The first ``published`` jobs are on the bulk queue."""
        self._published(keys=_campaign_keys(campaign_id), args=[published, self.ttl_s])

    def mark_enqueued(self, campaign_id: str) -> None:
        """Every job is on the queue; the campaign finishes when the last outcome arrives."""
        self._enqueued(keys=[campaign_key(campaign_id)], args=[_now()])

    def transition(self, campaign_id: str, action: str) -> CampaignState:
        """Pause, resume or cancel.

        Cancelling a campaign whose start stopped before publishing everyone also ends the
        unpublished recipients ``cancelled`` (nothing else would). Resuming gives its stored
        jobs their full lifetime again.

        Raises:
            CampaignError: Unknown campaign, or the action does not apply in its state.
        """
        if action not in _ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        changed, state = self._transition(
            keys=_campaign_keys(campaign_id), args=[action, _now(), self.ttl_s]
        )
        if state == "missing":
            raise CampaignError(f"no campaign {campaign_id}: never started here, or it expired")
        if not int(changed):
            raise CampaignError(f"cannot {action} campaign {campaign_id}: it is {state}")
        if action == "cancel":
            self.cancel_unpublished(campaign_id)
        elif action == "resume":
            self.refresh_jobs(campaign_id)
        return CampaignState(state)

    def cancel_unpublished(self, campaign_id: str, chunk: int = 1000) -> int:
        """Record ``cancelled`` for every recipient not published yet, and mark the campaign
        enqueued (no start will publish them). Safe to repeat, and against a start still
        publishing: an outcome is recorded once.

        Returns:
            How many recipients were cancelled now.
        """
        campaign = self.require(campaign_id)
        if campaign.enqueued:
            return 0
        # The list may hold a chunk stored but never committed (not counted): not a recipient.
        position, end = campaign.count("published"), campaign.count("recipients")
        cancelled = 0
        while True:
            count = min(chunk, end - position)
            ids = self.job_ids(campaign_id, position, count) if count > 0 else []
            jobs = self.redis.mget([job_key(i) for i in ids]) if ids else []
            pairs: list[str] = []
            for job_id, raw in zip(ids, jobs, strict=True):
                number = _job_number(raw)
                reason = "its campaign was cancelled before it was sent"
                outcome = Outcome(job_id, number, DeliveryStatus.CANCELLED, [], 0, reason)
                pairs += [job_id, outcome.as_json()]
            position += len(ids)
            last = "1" if not ids or position >= end else "0"
            cancelled += int(
                self._cancel_unpublished(
                    keys=_campaign_keys(campaign_id), args=[_now(), self.ttl_s, last, *pairs]
                )
            )
            if last == "1":
                return cancelled

    def refresh_jobs(self, campaign_id: str, chunk: int = 1000) -> None:
        """Give every stored job of the campaign its full lifetime again."""
        start = 0
        while ids := self.job_ids(campaign_id, start, chunk):
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.expire(job_key(job_id), self.ttl_s)
                pipe.execute()
            start += len(ids)

    def outcomes(self, campaign_id: str, chunk: int = 1000) -> Iterator[tuple[str, Outcome | None]]:
        """(job id, outcome or ``None`` while it has none) of every recipient, in file order."""
        start = 0
        while True:
            ids = self.job_ids(campaign_id, start, chunk)
            if not ids:
                return
            found = self.redis.hmget(campaign_outcomes_key(campaign_id), ids)
            for job_id, raw in zip(ids, found, strict=True):
                yield job_id, Outcome.from_json(job_id, _text(raw)) if raw else None
            start += len(ids)

    def invalid_rows(self, campaign_id: str, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """The refused rows (line, masked number, reason), in file order."""
        start = 0
        key = campaign_invalid_key(campaign_id)
        while True:
            rows = self.redis.lrange(key, start, start + chunk - 1)
            if not rows:
                return
            for raw in rows:
                yield json.loads(raw)
            start += len(rows)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(fields: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _campaign_keys(campaign_id: str) -> list[str]:
    """The keys every campaign script takes, in this order (the hash first)."""
    return [
        campaign_key(campaign_id),
        campaign_outcomes_key(campaign_id),
        campaign_jobs_key(campaign_id),
        campaign_seen_key(campaign_id),
        campaign_invalid_key(campaign_id),
    ]


def _job_number(raw: Any) -> str:
    """The recipient of a stored campaign job ("" when the job is gone)."""
    if not raw:
        return ""
    numbers = json.loads(raw).get("message", {}).get("phone_numbers") or [""]
    return str(numbers[0])


def _record_args(outcome: Outcome, ttl_s: int) -> list[str | int]:
    sent = outcome.segments if outcome.status == DeliveryStatus.SENT else 0
    return [outcome.job_id, outcome.as_json(), outcome.status, sent, _now(), ttl_s]


@dataclass(frozen=True, slots=True)
class Gate:
    """What a worker may do with a campaign's job now."""

    state: CampaignState | None  # None: the campaign is gone (expired): send as any job
    rate_per_s: float | None
    deadline: datetime | None = None

    def holds(self, now: datetime) -> bool:
        """Whether its jobs are held now: paused, and not past the campaign's deadline (an
        expired job still settles)."""
        expired = self.deadline is not None and now >= self.deadline
        return self.state is CampaignState.PAUSED and not expired


class CampaignGate:
    """The worker's view of campaigns: may a job go, and record its outcome.

    Lookups of one campaign that overlap (a batch of its jobs dispatched together) share
    one Redis read, so the check costs a round trip per batch, not per job, and every
    answer is read after the question was asked (a pause is never missed by a cache).

    Args:
        redis: The state store (``decode_responses=True``).
        ttl_s: How long outcomes are kept.
    """

    def __init__(self, redis: AsyncRedis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._record = redis.register_script(_RECORD)
        self._pending: dict[str, asyncio.Future[Gate]] = {}

    async def gate(self, campaign_id: str) -> Gate:
        """The campaign's state and own rate, read now."""
        pending = self._pending.get(campaign_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Gate] = asyncio.get_running_loop().create_future()
        self._pending[campaign_id] = future
        try:
            state, rate, deadline = await self._redis.hmget(
                campaign_key(campaign_id), ["state", "rate_per_s", "deadline"]
            )
            answer = Gate(
                CampaignState(_text(state)) if state else None,
                float(rate) if rate else None,
                datetime.fromisoformat(_text(deadline)) if deadline else None,
            )
            future.set_result(answer)
            return answer
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._pending[campaign_id]

    async def record(self, campaign_id: str, result: SendSmsMessageResult, e164: str) -> bool:
        """Record a job's final result as its recipient's outcome, once.

        Returns:
            True when recorded now; False when it already was (a redelivered job) or the
            campaign is gone.
        """
        return await self.record_outcome(campaign_id, Outcome.from_result(result, e164))

    async def record_outcome(self, campaign_id: str, outcome: Outcome) -> bool:
        """Record a recipient's outcome, once (see :meth:`record`)."""
        recorded = await self._record(
            keys=_campaign_keys(campaign_id), args=_record_args(outcome, self._ttl_s)
        )
        return int(recorded) == 1
