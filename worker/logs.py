"""One logging setup for workers: plain lines for people, JSON lines for log pipelines.

``SMSGW_LOG_FORMAT=json`` switches to one JSON object a line. Every line carries the job id
and the lane it is about (``-`` / ``null`` outside a job), taken from context variables the
pipeline binds (:func:`bind`), in a task's thread from Celery's current task, or from the
task id of Celery's own task lines (``received``: the lane is not known yet there).

Two filters run on the handler, so they see every record, whichever logger it came from
(Celery's, kombu's, ours, a library's):

* phone numbers are masked (``+44******3456``), as :func:`gateways.redaction.mask_number`,
  URL-encoded ones (``To=%2B4479...``) too;
* anything that looks like a secret is scrubbed: ``password=...``, ``token: ...``,
  ``"access_code": "..."``, one-time codes (``code=482913``, ``otp: ...``,
  ``Your code is 482913``, ``code '...'``; not ``status_code=429`` or a provider's
  ``(code 21211``), credentials in URLs, ``Bearer``/``Basic`` authorization values and
  Fernet tokens (stored access codes).

The pipeline never logs a message text or a code in the first place; the filters are the
second line of defence, for what a library or a future log call might print.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

from gateways.redaction import mask_number

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "RedactingFilter",
    "bind",
    "configure_logging",
    "job_context",
    "mask_numbers",
    "redact",
    "scrub_secrets",
]

LogFormat = Literal["plain", "json"]

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(lane)s %(job_id)s] %(message)s"
_NONE = "-"

_job_id: ContextVar[str | None] = ContextVar("smsgw_job_id", default=None)
_lane: ContextVar[str | None] = ContextVar("smsgw_lane", default=None)

# A phone number as it may be written: 8 to 16 digits, an optional + or 00, separators
# (space, dot, dash, parentheses) between digits. Not when glued to letters (ids, hashes),
# and not a date or a dotted IP address; but after a URL-encoded "+" (``To=%2B4479...``).
_NUMBER = re.compile(
    r"(?:(?<![\w+.])|(?<=%2B)|(?<=%2b))"
    r"(?!\d{4}-\d{2}-\d{2})(?!\d{1,3}(?:\.\d{1,3}){3}(?!\d))"
    r"\+?\d(?:[ ().-]{0,2}\d){7,15}"
    r"(?![\w])"
)

_SECRET_WORDS = re.compile(
    r"password|passwd|pwd|secret|api[_-]?key|apikey|token|access[_-]?code|accesscode"
    r"|authorization|credential",
    re.IGNORECASE,
)
# Keys and phrases naming a one-time code: "code", "otp", "pin", "passcode", "totp", alone
# or as the last word of a key (verification_code, smsCode). A code is short: its value
# must have 4 characters or more, so "lane otp: 1 queued" stays readable.
_CODE_WORDS = frozenset({"code", "codes", "otp", "pin", "passcode", "totp"})
# Words before "code" that make it a status or an error code, not a secret.
_NOT_SECRET = frozenset(
    {
        "status", "error", "result", "unknown", "http", "exit", "return", "response",
        "provider", "reason", "country", "calling", "dial", "area", "postal", "zip",
        "region", "iso", "language", "currency", "promo", "bar", "qr", "source", "op",
    }
)  # fmt: skip
_MIN_CODE = 4
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[_\-\s]+")

# A value: quoted, or up to a separator; a closing parenthesis glued to its end stays.
_VALUE = r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\]]*[^\s,;&}\])])"""
# key=value, key: value, "key": "value". The key starts a word and is scanned once (the
# lookbehind), so a long run of word characters costs linear time.
_KEY_VALUE = re.compile(
    rf"""(?P<key>(?<![\w-])["']?(?P<name>[\w-]+)["']?\s*[:=]\s*){_VALUE}""",
)
# A code in a sentence: "Your code is 482913", "code 'Zx!4729q'", "Your+code+482913"
# (a URL-encoded form). An unquoted value must hold a digit; a number right after
# "(code" or "twilio: code" is a provider's error code and stays.
_CODE_PHRASE = re.compile(
    r"""(?P<key>(?<![\w-])(?P<name>code|otp|pin|passcode|totp)"""
    r"""(?:(?:\s+|\+)(?P<verb>is|was))?(?:\s+|\+))"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\])'"+]*\d[^\s,;&}\])'"+]*)""",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^@\s/]+@")
_AUTH_HEADER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_FERNET = re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}")
_HIDDEN = "***"


def mask_numbers(text: str) -> str:
    """Every phone-number-like run of digits in ``text``, masked."""
    return _NUMBER.sub(lambda match: mask_number(match.group()), text)


def scrub_secrets(text: str) -> str:
    """``text`` with every value that looks like a secret replaced by ``***``."""
    text = _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{_HIDDEN}@", text)
    text = _AUTH_HEADER.sub(rf"\g<kind> {_HIDDEN}", text)
    text = _FERNET.sub(_HIDDEN, text)
    text = _KEY_VALUE.sub(_hide_key_value, text)
    return _CODE_PHRASE.sub(_hide_code_phrase, text)


def _words(name: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]


def _is_code_key(name: str) -> bool:
    """``code``, ``otp``, ``verification_code``, ``smsCode``; not ``status_code``."""
    words = _words(name)
    if not words or words[-1] not in _CODE_WORDS:
        return False
    return len(words) == 1 or words[-2] not in _NOT_SECRET


def _hide_key_value(match: re.Match[str]) -> str:
    name, value = match.group("name"), match.group("value")
    if _SECRET_WORDS.search(name):
        return _hidden(match)
    if _is_code_key(name) and len(value.strip("'\"")) >= _MIN_CODE:
        return _hidden(match)
    return match.group()


def _hide_code_phrase(match: re.Match[str]) -> str:
    value = match.group("value")
    quoted = value[:1] in {'"', "'"}
    if len(value.strip("'\"")) < _MIN_CODE:
        return match.group()
    if match.group("verb") is None and not quoted:
        before = match.string[: match.start()].rstrip(" +")
        previous = _words(before.rsplit(None, 1)[-1]) if before else []
        if before.endswith(("(", ":")) or (previous and previous[-1] in _NOT_SECRET):
            return match.group()
    return _hidden(match)


def _hidden(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in {'"', "'"} else ""
    return f"{match.group('key')}{quote}{_HIDDEN}{quote}"


def redact(text: str) -> str:
    """Secrets scrubbed, then numbers masked: what may go into a log line."""
    return mask_numbers(scrub_secrets(text))


def bind(*, job_id: str | None = None, lane: str | None = None) -> None:
    """Tag the log lines of the current context (thread or asyncio task) with a job and lane.

    Only the values given are changed. An asyncio task gets a copy of its creator's
    context, so a value bound inside one job's coroutine never leaks into another's.
    """
    if job_id is not None:
        _job_id.set(job_id)
    if lane is not None:
        _lane.set(lane)


@contextmanager
def job_context(job_id: str | None, lane: str | None = None) -> Iterator[None]:
    """Tag the log lines inside the block; the previous tags come back after it."""
    job_token = _job_id.set(job_id)
    lane_token = _lane.set(lane)
    try:
        yield
    finally:
        _lane.reset(lane_token)
        _job_id.reset(job_token)


def _celery_task() -> tuple[str | None, str | None]:
    """The job (task id) and lane (routing key) of the Celery task running in this thread."""
    if "celery" not in sys.modules:
        return None, None
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    if request is None or not getattr(request, "id", None):
        return None, None
    delivery = getattr(request, "delivery_info", None) or {}
    lane = delivery.get("routing_key") if isinstance(delivery, dict) else None
    return str(request.id), str(lane) if lane else None


class ContextFilter(logging.Filter):
    """Sets ``record.job_id`` and ``record.lane`` (``-`` when the line is about no job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id, lane = _job_id.get(), _lane.get()
        if job_id is None:
            job_id, task_lane = _celery_task()
            lane = lane or task_lane
        if job_id is None and isinstance(record.args, dict) and record.args.get("id"):
            # Celery's "Task sms.send[id] received" lines, logged before the task runs.
            job_id = str(record.args["id"])
        record.job_id = job_id or _NONE
        record.lane = lane or _NONE
        return True


class RedactingFilter(logging.Filter):
    """Renders the record's message and traceback, masked and scrubbed, before any output."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what can be kept
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(self._tracebacks.formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, job id, lane (+ traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": _or_null(getattr(record, "job_id", None)),
            "lane": _or_null(getattr(record, "lane", None)),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def _or_null(value: object) -> str | None:
    return None if value in (None, _NONE) else str(value)


_HANDLER_NAME = "smsgw"


def configure_logging(
    *, level: int | str = logging.INFO, fmt: LogFormat = "plain", stream: IO[str] | None = None
) -> logging.Handler:
    """Route every logger through one handler on the root logger, with both filters.

    Calling it again replaces the handler it installed before (and no other handler).

    Args:
        level: The root logger's level.
        fmt: ``plain`` or ``json``.
        stream: Where lines go (standard error by default).

    Returns:
        The installed handler.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become log lines too (JSON when asked)
    return handler
