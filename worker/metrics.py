"""Prometheus metrics: what the pipeline counts, and what is read from Redis at scrape time.

Counted by the workers, where the pipeline decides (``worker.dispatch``, ``worker.tasks``):

============================================  ===============================  ====================
metric                                        labels                           counted when
============================================  ===============================  ====================
``smsgw_jobs_total``                          lane, gateway, account, status   a job's result is new
``smsgw_parts_total``                         lane, gateway, account, status   ... per part
``smsgw_provider_latency_seconds``            lane, gateway                    a provider call ends
``smsgw_end_to_end_latency_seconds``          lane                             a part is accepted
``smsgw_ratelimit_waits_total``               account, lane                    the limiter says wait
``smsgw_ratelimit_wait_seconds_total``        account, lane                    ... for that long
``smsgw_provider_throttles_total``            account, gateway                 a provider throttles
``smsgw_retries_total``                       lane, error_class                a part is retried
============================================  ===============================  ====================

A part is one piece for one recipient; a recipient refused before any send (no account,
a message the gateway cannot carry) counts as one part. A job and its parts are counted
once, when the task stores a result the backend did not hold yet: a batch retried after
a Redis error, or a finished job delivered again, is not counted twice. End-to-end
latency runs from the job's enqueue to the provider accepting the part. A job's status is
``sent``, ``partial``, ``failed`` (no recipient at all) or its first unsent recipient's.

Read from Redis on every scrape by :class:`OperationsCollector` (so ``smsgw metrics`` shows
them too): ``smsgw_queue_depth{lane}``, ``smsgw_queue_oldest_age_seconds{lane}``,
``smsgw_lane_consumers{lane}``, ``smsgw_account_failing{account}``,
``smsgw_health_check_ok{check,subject}`` and ``smsgw_healthy`` (the :mod:`worker.health`
checks).

Label values are lane names, gateway types, account names, statuses and error class
names: never a number or a secret (every value also goes through the log redaction, in
case an operator named an account after a phone number).

Recording never raises: a metric that cannot be written (a full disk under
``PROMETHEUS_MULTIPROC_DIR``) is logged once per process and skipped, so a send the
provider accepted is always recorded as sent.

Multi-process: with ``PROMETHEUS_MULTIPROC_DIR`` set (before the first import of
prometheus-client), every process writes its counts to files there and the exposition
sums them (prefork children, several workers on one host). Each worker serves
``/metrics`` on ``SMSGW_METRICS_PORT`` when it is set (:func:`start_server`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ParamSpec

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from config.settings import Settings, get_settings
from worker.delivery import PartRef, PartState
from worker.health import HealthReport, check_health
from worker.logs import redact
from worker.models import DeliveryStatus, RecipientResult, SendSmsMessageResult

__all__ = [
    "END_TO_END_LATENCY",
    "JOBS",
    "PARTS",
    "PROVIDER_LATENCY",
    "PROVIDER_THROTTLES",
    "RATELIMIT_WAITS",
    "RATELIMIT_WAIT_SECONDS",
    "RETRIES",
    "OperationsCollector",
    "exposition",
    "job_status",
    "observe_accepted",
    "part_statuses",
    "provider_call",
    "rate_limit_wait",
    "record_job",
    "record_parts",
    "retry",
    "start_server",
    "throttled",
]

NONE = "none"

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_failed_once = threading.Event()


def _never_raises(record: Callable[_P, None]) -> Callable[_P, None]:
    """Counting must never fail a send: an error is logged (once a process) and dropped."""

    @functools.wraps(record)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception as error:  # any failure of the metrics library or its files
            _dropped(error)

    return guarded


def _dropped(error: Exception) -> None:
    if not _failed_once.is_set():
        _failed_once.set()
        log.error("metrics: cannot record (%s: %s); counts dropped", type(error).__name__, error)


# Codes should be accepted within seconds; bulk may queue for many minutes.
_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_END_TO_END_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

JOBS = Counter(
    "smsgw_jobs", "Jobs by final status", ["lane", "gateway", "account", "status"]
)  # fmt: skip
PARTS = Counter(
    "smsgw_parts",
    "Parts (one piece for one recipient) by final status",
    ["lane", "gateway", "account", "status"],
)
PROVIDER_LATENCY = Histogram(
    "smsgw_provider_latency_seconds",
    "Duration of one provider call, whatever its outcome",
    ["lane", "gateway"],
    buckets=_LATENCY_BUCKETS_S,
)
END_TO_END_LATENCY = Histogram(
    "smsgw_end_to_end_latency_seconds",
    "From a job's enqueue to a provider accepting one of its parts",
    ["lane"],
    buckets=_END_TO_END_BUCKETS_S,
)
RATELIMIT_WAITS = Counter(
    "smsgw_ratelimit_waits", "Times the rate limiter said wait", ["account", "lane"]
)
RATELIMIT_WAIT_SECONDS = Counter(
    "smsgw_ratelimit_wait_seconds", "Waits the rate limiter asked for", ["account", "lane"]
)
PROVIDER_THROTTLES = Counter(
    "smsgw_provider_throttles", "Provider throttle replies", ["account", "gateway"]
)
RETRIES = Counter(
    "smsgw_retries", "Parts (or whole jobs) scheduled for another try", ["lane", "error_class"]
)


@lru_cache(maxsize=4096)
def _label(value: str | None) -> str:
    # Label values are few (lanes, gateways, accounts, classes): redact each once.
    return redact(value) if value else NONE


def job_status(result: SendSmsMessageResult) -> str:
    """A job's final status: ``sent``; ``partial`` (some recipients sent); ``failed`` (no
    recipient at all, e.g. a missing job); else the first unsent recipient's status."""
    if result.success:
        return DeliveryStatus.SENT.value
    if not result.recipients:
        return "failed"
    unsent = [r for r in result.recipients if r.status != DeliveryStatus.SENT]
    if len(unsent) < len(result.recipients):
        return "partial"
    return unsent[0].status.value


@_never_raises
def record_job(result: SendSmsMessageResult, parts: Iterable[DeliveryStatus] = ()) -> None:
    """Count a job's final result and its parts' final statuses, under the result's lane,
    gateway and account (once per job: the task does it when it records a new result)."""
    JOBS.labels(
        _label(result.lane), _label(result.gateway), _label(result.account), job_status(result)
    ).inc()
    record_parts(result.lane or NONE, result.gateway, result.account, parts)


@_never_raises
def record_parts(
    lane: str, gateway: str | None, account: str | None, statuses: Iterable[DeliveryStatus]
) -> None:
    """Count the final status of each part of a finished job."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.value] = counts.get(status.value, 0) + 1
    for status_name, count in counts.items():
        PARTS.labels(_label(lane), _label(gateway), _label(account), status_name).inc(count)


def part_statuses(
    states: Mapping[str, PartState], recipients: Iterable[RecipientResult], pieces: int
) -> list[DeliveryStatus]:
    """Each part's final status; a piece never tried (an earlier one failed) takes its
    recipient's status."""
    statuses: list[DeliveryStatus] = []
    for recipient in recipients:
        for piece in range(pieces):
            state = states.get(PartRef(recipient.phone_number, piece).name)
            final = state is not None and state.status.is_final
            statuses.append(state.status if state is not None and final else recipient.status)
    return statuses


@contextmanager
def provider_call(lane: str, gateway: str) -> Iterator[None]:
    """Time one provider call (success or error)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _observe_call(lane, gateway, time.perf_counter() - started)


@_never_raises
def _observe_call(lane: str, gateway: str, seconds: float) -> None:
    PROVIDER_LATENCY.labels(_label(lane), _label(gateway)).observe(seconds)


@_never_raises
def observe_accepted(lane: str, enqueued_at: datetime) -> None:
    """A provider accepted a part: record how long after the job's enqueue."""
    END_TO_END_LATENCY.labels(_label(lane)).observe(
        max(0.0, (datetime.now(UTC) - enqueued_at).total_seconds())
    )


@_never_raises
def rate_limit_wait(account: str, lane: str, wait_s: float) -> None:
    """The limiter refused a part's tokens for ``wait_s`` seconds."""
    RATELIMIT_WAITS.labels(_label(account), _label(lane)).inc()
    RATELIMIT_WAIT_SECONDS.labels(_label(account), _label(lane)).inc(max(0.0, wait_s))


@_never_raises
def throttled(account: str, gateway: str) -> None:
    """The provider answered with a throttle (429 or its own wording)."""
    PROVIDER_THROTTLES.labels(_label(account), _label(gateway)).inc()


@_never_raises
def retry(lane: str | None, error: BaseException | str) -> None:
    """A part or job goes for another try because of ``error`` (its class is the label)."""
    error_class = error if isinstance(error, str) else type(error).__name__
    RETRIES.labels(_label(lane), _label(error_class)).inc()


# --- read at scrape time ----------------------------------------------------------------


class OperationsCollector(Collector):
    """Queue depth and age, consumers, account failures and health, read on each scrape.

    A report is reused for ``cache_s`` seconds, so that several scrapers (or a fast
    scrape interval) do not each cost a broadcast to every worker.

    Args:
        settings: Settings in force (the process's, read on each scrape, by default).
        check: Produces the health report (:func:`worker.health.check_health` by default).
        cache_s: How long a report is reused.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        check: Callable[[Settings], HealthReport] | None = None,
        cache_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._check = check
        self._cache_s = cache_s
        self._cached: tuple[float, HealthReport] | None = None
        self._lock = threading.Lock()

    def _report(self) -> HealthReport:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_s:
                return self._cached[1]
            settings = self._settings or get_settings()
            report = (self._check or check_health)(settings)
            self._cached = (now, report)
            return report

    def collect(self) -> Iterable[Metric]:
        """The gauges, from a fresh (or at most ``cache_s`` old) health report."""
        report = self._report()
        depth = GaugeMetricFamily(
            "smsgw_queue_depth",
            "Broker messages queued on a lane (a bulk batch message carries up to 100 jobs)",
            labels=["lane"],
        )
        age = GaugeMetricFamily(
            "smsgw_queue_oldest_age_seconds",
            "How long the oldest queued job of a lane has waited (0 when none)",
            labels=["lane"],
        )
        consumers = GaugeMetricFamily(
            "smsgw_lane_consumers", "Workers consuming a lane", labels=["lane"]
        )
        for lane in report.lanes:
            depth.add_metric([_label(lane.lane)], lane.depth)
            age.add_metric([_label(lane.lane)], lane.oldest_age_s or 0.0)
            if lane.consumers is not None:
                consumers.add_metric([_label(lane.lane)], len(lane.consumers))
        failing = GaugeMetricFamily(
            "smsgw_account_failing",
            "1 when an account's last provider outcome was a permanent refusal of the account",
            labels=["account"],
        )
        for account in report.accounts:
            failing.add_metric([_label(account.account)], 1 if account.status == "failing" else 0)
        checks = GaugeMetricFamily(
            "smsgw_health_check_ok",
            "1 when the check passes (smsgw health)",
            labels=["check", "subject"],
        )
        for check in report.checks:
            checks.add_metric([_label(check.name), _label(check.subject)], 1 if check.ok else 0)
        healthy = GaugeMetricFamily("smsgw_healthy", "1 when every health check passes")
        healthy.add_metric([], 1 if report.ok else 0)
        yield from (depth, age, consumers, failing, checks, healthy)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry(settings: Settings | None = None) -> CollectorRegistry:
    """A registry with this host's counters (every process's, in multi-process mode) and
    the scrape-time gauges."""
    target = CollectorRegistry()
    if _multiprocess():
        MultiProcessCollector(target)  # type: ignore[no-untyped-call]
    else:
        target.register(_ProcessMetrics())
    target.register(OperationsCollector(settings))
    return target


class _ProcessMetrics(Collector):
    """This process's own metrics (the default registry), for a registry of our own."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(settings: Settings | None = None) -> bytes:
    """The text exposition (what ``/metrics`` serves and ``smsgw metrics`` prints)."""
    return generate_latest(registry(settings))


_server: Any = None


def start_server(port: int, *, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port`` from this process (once; later calls do nothing)."""
    global _server
    if _server is not None:
        return
    _server, _ = start_http_server(port, addr=addr, registry=registry())


def stop_server() -> None:
    """Stop the server :func:`start_server` started, if any."""
    global _server
    server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()
