"""Stall detection: the checks behind ``smsgw health``, the health metrics and compose.

:func:`check_health` reads everything at the time it is called and returns a
:class:`HealthReport`; nothing here keeps state. It is red when:

* Redis (broker, result backend or state store) does not answer;
* a lane has queued messages and no worker consumes it;
* the oldest queued job of a lane is older than the lane's threshold
  (``SMSGW_STALL_AFTER_S__OTP`` 30 s, ``__DEFAULT`` 5 min, ``__BULK`` 30 min);
* a worker took a lane's message and has held it longer than any retry countdown plus
  the task time limit plus the lane's threshold: the worker died (SIGKILL, out of memory)
  holding it, and the broker gives it back only after the visibility timeout (6 h);
* an account's last provider outcome was a permanent refusal of the account itself
  (bad credentials, no balance; recorded by :mod:`worker.account_status`);
* with ``worker=``: that worker node does not answer or does not consume the lanes.

How it reads the queues. A lane's queue is a Redis list on the broker (kombu LPUSHes, a
worker BRPOPs), plus one list per priority step, so its depth is their lengths and its
oldest message is the tail of each. The age of that message comes from the job it
carries: the task id is the job id (a batch's first argument lists job ids), and the job
record keeps ``enqueued_at``, written by every producer (other-language ones included),
whereas Celery's message headers carry no publish time. A retried task is republished with
an ``eta``; it waits from then, not from the job's enqueue, so the later of the two counts.

Messages a worker has taken (prefetched, running, or waiting for a retry's countdown) are
no longer in the list: kombu keeps them in the ``unacked`` hash (tag -> [message, exchange,
routing key]) and the ``unacked_index`` sorted set (tag -> when it was taken) until the
worker acknowledges them. An entry older than ``max_retry_countdown_s`` +
``task_time_limit_s`` + the lane's threshold belongs to no live worker's normal work.

How it finds consumers. One ``inspect().active_queues()`` broadcast through the broker
(Celery's remote control, which every worker answers, with or without gossip and mingle);
it waits ``SMSGW_HEALTH_TIMEOUT_S`` (1 s) for replies. Worker heartbeats would need an
event receiver listening for at least one heartbeat period (2 s or more) and do not say
which queues a worker consumes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel
from redis.exceptions import RedisError

from config.settings import Settings
from worker.account_status import AccountStatus, parse_account_status
from worker.keys import ACCOUNT_STATUS_TTL_S, account_statuses_key, accounts_key, job_key
from worker.logs import redact

__all__ = [
    "Check",
    "HealthReport",
    "LaneState",
    "check_health",
    "held_grace_s",
    "lane_threshold_s",
    "queue_lists",
    "read_lane",
    "read_unacked",
]

_TAIL_MESSAGES = 5  # messages read from a queue's tail to find one whose job is known
_REDIS_TIMEOUT_S = 2.0
_UNACKED_READ = 1000  # stalled entries read at most (beyond, the count is a lower bound)

Consumers = dict[str, list[str]]  # lane -> worker nodes consuming it


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict. ``subject`` is a lane, an account, a Redis role or a worker node."""

    name: str  # redis | consumers | queue_age | held | account | worker
    subject: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class LaneState:
    """What a lane's queue looks like now."""

    lane: str
    depth: int
    oldest_age_s: float | None  # None: empty, or no queued message names a known job
    threshold_s: float
    consumers: list[str] | None  # None: unknown (the broadcast failed)
    held_stalled: int = 0  # messages a worker took and has held too long (died holding them)
    held_oldest_s: float | None = None  # how long the oldest of those has been held


@dataclass(slots=True)
class HealthReport:
    """Every check made, and the lanes and accounts they looked at."""

    checks: list[Check] = field(default_factory=list)
    lanes: list[LaneState] = field(default_factory=list)
    accounts: list[AccountStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Green: every check passed."""
        return all(check.ok for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        """Why it is red (empty when green)."""
        return [check.reason for check in self.checks if not check.ok]

    @property
    def redis_ok(self) -> bool:
        """Whether every Redis answered."""
        return all(check.ok for check in self.checks if check.name == "redis")

    def to_json(self) -> dict[str, Any]:
        """The report for ``--json``."""
        return {
            "healthy": self.ok,
            "reasons": self.reasons,
            "checks": [asdict(check) for check in self.checks],
            "lanes": [asdict(lane) for lane in self.lanes],
            "accounts": [asdict(account) for account in self.accounts],
        }


def lane_threshold_s(settings: Settings, lane: str) -> float:
    """How old the oldest queued job of ``lane`` may be (the default lane's for others)."""
    lanes, stall = settings.lanes, settings.stall_after_s
    return {lanes.otp: stall.otp, lanes.bulk: stall.bulk}.get(lane, stall.default)


def queue_lists(lane: str) -> list[str]:
    """The broker lists holding ``lane``'s messages: the queue and its priority lists
    (kombu's Redis transport names them, its step 0 being the queue itself)."""
    return [lane, *(f"{lane}{Channel.sep}{step}" for step in PRIORITY_STEPS if step)]


def held_grace_s(settings: Settings, lane: str) -> float:
    """How long a worker may normally hold one of ``lane``'s messages: the longest retry
    countdown, plus the task time limit, plus the lane's threshold."""
    return (
        settings.max_retry_countdown_s
        + settings.task_time_limit_s
        + lane_threshold_s(settings, lane)
    )


def read_unacked(
    broker: redis.Redis, lanes: dict[str, float], *, now_s: float
) -> dict[str, list[float]]:
    """Messages workers took and have held longer than their lane's grace.

    Args:
        broker: The broker's Redis.
        lanes: Lane -> grace in seconds (:func:`held_grace_s`).
        now_s: Unix time in seconds.

    Returns:
        Lane -> how long each of its stalled messages has been held, in seconds.
    """
    if not lanes:
        return {}
    oldest_allowed = now_s - min(lanes.values())
    entries = broker.zrangebyscore(
        Channel.unacked_index_key, "-inf", oldest_allowed, start=0, num=_UNACKED_READ,
        withscores=True,
    )  # fmt: skip
    pairs: list[tuple[Any, float]] = [(e[0], float(e[1])) for e in entries or []]
    if not pairs:
        return {}
    raws = broker.hmget(Channel.unacked_key, [tag for tag, _ in pairs])
    held: dict[str, list[float]] = {}
    for (_, taken_s), raw in zip(pairs, raws, strict=True):
        lane = _routing_key(raw)
        if lane is not None and lane in lanes and now_s - taken_s > lanes[lane]:
            held.setdefault(lane, []).append(now_s - taken_s)
    return held


def _routing_key(raw: bytes | str | None) -> str | None:
    # An unacked entry is kombu's JSON [message, exchange, routing key].
    if raw is None:
        return None
    try:
        _, _, routing_key = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return str(routing_key) if routing_key else None


def read_lane(
    broker: redis.Redis, state: redis.Redis, lane: str, *, now_s: float
) -> tuple[int, float | None]:
    """A lane's queued messages and the age of the oldest one whose job is known.

    Returns:
        (depth, age in seconds or None).
    """
    names = queue_lists(lane)
    with broker.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
            pipe.lrange(name, -_TAIL_MESSAGES, -1)
        replies = pipe.execute()
    depth = sum(int(n) for n in replies[::2])
    ages: list[float] = []
    for tail in replies[1::2]:
        # The tail's last element is the oldest message; walk towards newer ones until one
        # names a job whose record still exists.
        for raw in reversed(tail):
            queued_since = _queued_since(raw, state)
            if queued_since is not None:
                ages.append(max(0.0, now_s - queued_since))
                break
    return depth, max(ages) if ages else None


def _queued_since(raw: bytes | str, state: redis.Redis) -> float | None:
    """When the job in a raw kombu message started waiting (Unix s), or None if unknown."""
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        job_ids = _job_ids(envelope, headers)
    except (ValueError, TypeError, AttributeError):
        return None  # not a task message; the transport records and drops those
    for job_id in job_ids[:1]:
        stored = state.get(job_key(job_id))
        if stored is None:
            return None
        try:
            enqueued = datetime.fromisoformat(json.loads(stored)["enqueued_at"]).timestamp()
        except (ValueError, TypeError, KeyError):
            return None
        eta = _timestamp(headers.get("eta"))
        return max(enqueued, eta) if eta is not None else enqueued
    return None


def _job_ids(envelope: dict[str, Any], headers: dict[str, Any]) -> list[str]:
    body = envelope.get("body")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64" and body:
        body = base64.b64decode(body)
    args = json.loads(body)[0] if body else []
    if args and isinstance(args[0], list):  # sms.send_batch: [[job ids]]
        return [str(job_id) for job_id in args[0]]
    if args and isinstance(args[0], str):  # sms.send: [job id]
        return [args[0]]
    task_id = headers.get("id")
    return [str(task_id)] if task_id else []


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def read_accounts(state: redis.Redis, names: Iterable[str], *, now_s: float) -> list[AccountStatus]:
    """The recorded outcome of each account that exists now, by name (one ``HGETALL``).

    Args:
        state: The state store.
        names: The accounts that exist (stored and provisioned): a record left by an
            account deleted since is ignored.
        now_s: Unix time; a record older than ``ACCOUNT_STATUS_TTL_S`` is ignored.
    """
    current = set(names)
    found: list[AccountStatus] = []
    for raw in state.hgetall(account_statuses_key()).values():
        status = parse_account_status(raw)
        if status is None or status.account not in current:
            continue
        if now_s - status.at_s <= ACCOUNT_STATUS_TTL_S:
            found.append(status)
    return sorted(found, key=lambda status: status.account)


def account_names(state: redis.Redis, settings: Settings) -> set[str]:
    """Every account name: the stored ones and those of ``SMSGW_ACCOUNTS``."""
    stored = {_text(name) for name in state.hkeys(accounts_key())}
    provisioned = {
        str(raw["name"]) for raw in settings.accounts if isinstance(raw, dict) and raw.get("name")
    }
    return stored | provisioned


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def inspect_consumers(app: Celery, timeout_s: float) -> Consumers:
    """Which worker nodes consume which queue, from one remote-control broadcast.

    Raises:
        Exception: Whatever the broker connection raises (the caller reports it).
    """
    with app.connection_for_read() as connection:
        replies = app.control.inspect(timeout=timeout_s, connection=connection).active_queues()
    consumers: Consumers = {}
    for node, queues in sorted((replies or {}).items()):
        for queue in queues or []:
            name = queue.get("name") if isinstance(queue, dict) else None
            if name:
                consumers.setdefault(str(name), []).append(str(node))
    return consumers


def check_health(
    settings: Settings,
    *,
    lanes: Sequence[str] | None = None,
    worker: str | None = None,
    accounts: bool = True,
    queue_age: bool = True,
    consumers: Callable[[float], Consumers] | None = None,
    clock: Callable[[], float] = time.time,
) -> HealthReport:
    """Run every check and return the report (never raises for an unreachable service).

    Args:
        settings: Where Redis is, the lanes and their thresholds.
        lanes: The lanes to check (all by default).
        worker: Also require this worker node to answer and consume ``lanes``.
        accounts: Whether to check the accounts' recorded outcomes.
        queue_age: Whether a lane's oldest queued job past its threshold is red (the ages
            are reported either way); the bulk worker's healthcheck leaves it out, since a
            large campaign's backlog is normal.
        consumers: Finds the consumers (timeout in, lane -> nodes out); the Celery
            broadcast by default.
        clock: Unix time in seconds.
    """
    report = HealthReport()
    selected = list(lanes) if lanes else list(settings.lanes.names())
    clients = _clients(settings)
    try:
        _check_redis(report, clients)
        if not report.redis_ok:
            return report
        broker, state = clients["broker"], clients["state store"]
        found, broadcast_error = _consumers(settings, consumers)
        now_s = clock()
        grace = {lane: held_grace_s(settings, lane) for lane in selected}
        held = read_unacked(broker, grace, now_s=now_s)
        for lane in selected:
            depth, age_s = read_lane(broker, state, lane, now_s=now_s)
            nodes = None if found is None else found.get(lane, [])
            stalled = held.get(lane, [])
            state_of_lane = LaneState(
                lane, depth, age_s, lane_threshold_s(settings, lane), nodes,
                held_stalled=len(stalled), held_oldest_s=max(stalled, default=None),
            )  # fmt: skip
            report.lanes.append(state_of_lane)
            checks = _lane_checks(state_of_lane, broadcast_error)
            report.checks.extend(c for c in checks if queue_age or c.name != "queue_age")
        if worker is not None:
            report.checks.append(_worker_check(worker, selected, found, broadcast_error))
        if accounts:
            report.accounts = read_accounts(state, account_names(state, settings), now_s=now_s)
            report.checks.extend(_account_check(status) for status in report.accounts)
        return report
    except (RedisError, OSError) as error:
        # Redis went away between the ping and the reads.
        report.checks.append(Check("redis", "redis", False, f"Redis failed: {_describe(error)}"))
        return report
    finally:
        for client in clients.values():
            client.close()


def _clients(settings: Settings) -> dict[str, redis.Redis]:
    urls = {
        "broker": settings.broker_url.get_secret_value(),
        "result backend": settings.result_backend_url.get_secret_value(),
        "state store": settings.state_redis_url.get_secret_value(),
    }
    return {
        role: redis.Redis.from_url(
            url, socket_connect_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S
        )
        for role, url in urls.items()
    }


def _check_redis(report: HealthReport, clients: dict[str, redis.Redis]) -> None:
    for role, client in clients.items():
        try:
            client.ping()
        except (RedisError, OSError) as error:
            reason = f"Redis ({role}) does not answer: {_describe(error)}"
            report.checks.append(Check("redis", role, False, reason))
        else:
            report.checks.append(Check("redis", role, True, f"Redis ({role}) answers"))


def _describe(error: Exception) -> str:
    # The class and the text (redis-py and kombu name host and port, not the password),
    # redacted all the same: this text goes to healthcheck logs and metrics.
    return redact(f"{type(error).__name__}: {error}")


def _consumers(
    settings: Settings, consumers: Callable[[float], Consumers] | None
) -> tuple[Consumers | None, str | None]:
    if consumers is not None:
        try:
            return consumers(settings.health_timeout_s), None
        except Exception as error:  # any broker failure is a verdict, not a crash
            return None, _describe(error)
    from worker import app as celery_app

    # The process's app when it talks to these settings' broker, else one of their own (a
    # process whose settings changed after the app was made must not ask another broker).
    own = celery_app.app.conf.broker_url == settings.broker_url.get_secret_value()
    app = celery_app.app if own else celery_app.create_app(settings)
    try:
        return inspect_consumers(app, settings.health_timeout_s), None
    except Exception as error:  # any broker failure is a verdict, not a crash
        return None, _describe(error)
    finally:
        if not own:
            app.close()


def _lane_checks(lane: LaneState, broadcast_error: str | None) -> Iterable[Check]:
    name = lane.lane
    if lane.consumers is None:
        yield Check(
            "consumers", name, False, f"lane {name}: could not ask workers ({broadcast_error})"
        )
    elif lane.depth and not lane.consumers:
        yield Check(
            "consumers",
            name,
            False,
            f"lane {name}: {lane.depth} queued message(s) and no worker consumes it",
        )
    else:
        yield Check(
            "consumers", name, True, f"lane {name}: {len(lane.consumers)} worker(s) consume it"
        )
    age = lane.oldest_age_s
    if age is not None and age > lane.threshold_s:
        reason = (
            f"lane {name}: the oldest queued job has waited {age:.0f}s, "
            f"more than {lane.threshold_s:.0f}s"
        )
        yield Check("queue_age", name, False, reason)
    else:
        waited = "nothing queued" if age is None else f"the oldest queued job has waited {age:.0f}s"
        yield Check("queue_age", name, True, f"lane {name}: {waited}")
    if lane.held_stalled:
        reason = (
            f"lane {name}: {lane.held_stalled} message(s) taken by a worker "
            f"{lane.held_oldest_s or 0:.0f}s ago and never finished (the worker died holding "
            "them; the broker gives them back after its visibility timeout)"
        )
        yield Check("held", name, False, reason)
    else:
        yield Check("held", name, True, f"lane {name}: no message held by a lost worker")


def _worker_check(
    node: str, lanes: list[str], found: Consumers | None, broadcast_error: str | None
) -> Check:
    if found is None:
        return Check("worker", node, False, f"worker {node}: could not ask ({broadcast_error})")
    missing = [lane for lane in lanes if node not in found.get(lane, [])]
    if not any(node in nodes for nodes in found.values()):
        return Check("worker", node, False, f"worker {node} does not answer")
    if missing:
        return Check("worker", node, False, f"worker {node} does not consume {', '.join(missing)}")
    return Check("worker", node, True, f"worker {node} consumes {', '.join(lanes)}")


def _account_check(status: AccountStatus) -> Check:
    name = status.account
    if status.status == "failing":
        at = datetime.fromtimestamp(status.at_s).astimezone().isoformat(timespec="seconds")
        reason = (
            f"account {name} is failing permanently (last refusal {at}): "
            f"{status.error_class}: {status.reason}"
        )
        return Check("account", name, False, reason)
    return Check("account", name, True, f"account {name}: last send went through")
