"""What every ``smsgw`` command shares: exit codes and how output is printed.

Rich tables go to people, ``--json`` to scripts; errors go to stderr. Access codes are
never printed by any command.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

__all__ = [
    "EXIT_CONFIG",
    "EXIT_CONFLICT",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_SENT",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_STACK",
    "EXIT_UNAVAILABLE",
    "EXIT_UNHEALTHY",
    "EXIT_UNKNOWN_JOB",
    "LOG_LEVELS",
    "print_json",
    "redis_errors",
    "stderr_console",
    "stdout_console",
]

EXIT_OK = 0
EXIT_INVALID = 1  # some input was refused; the output says which and why
EXIT_NOT_SENT = 1  # the job finished, and at least one recipient was not sent
EXIT_CONFIG = 3  # a gateway or setting is unknown or broken
EXIT_PENDING = 4  # the job is still queued or in flight (``send --wait`` timed out)
EXIT_UNKNOWN_JOB = 5  # no such job: never enqueued, or its records expired
EXIT_UNAVAILABLE = 6  # Redis (broker, result backend or state store) did not answer
EXIT_STACK = 7  # a part of the local stack did not start or stopped on its own
EXIT_NOT_FOUND = 5  # no such gateway account or identity store (as for jobs)
EXIT_CONFLICT = 8  # the change conflicts with what exists (name taken, still linked, read-only)
EXIT_UNHEALTHY = 9  # a lane is stalled, a worker is missing or an account is failing

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def stdout_console() -> Console:
    """Standard output for people."""
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """Standard error, for warnings and failures."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(payload: Any) -> None:
    """Standard output for scripts."""
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


def redis_errors() -> tuple[type[Exception], ...]:
    """What a command catches when Redis (state store or broker) does not answer."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    return (RedisError, OperationalError, ConnectionError, TimeoutError)
