"""Masking helpers for personal data that may reach logs, errors and CLI output.

Phone numbers are personal data: anything that can end up in a log line or an exception
message shows them masked (``+44******3456``). Secrets are never shown at all; they are
handled with pydantic ``SecretStr`` and never reach these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["mask_number", "provider_text"]

_DIGIT_RUN = re.compile(r"\+?\d(?:[\d .-]*\d){3,}")
_PROVIDER_TEXT_LIMIT = 200

_KEEP_HEAD = 3
_KEEP_TAIL = 4


def mask_number(raw: str) -> str:
    """Mask the middle of a phone number, keeping enough to recognise it.

    Args:
        raw: The number as typed or in E.164.

    Returns:
        The number with every character but the first three and last four replaced by
        ``*`` (``+447911123456`` -> ``+44******3456``); short inputs keep less.
    """
    text = raw.strip()
    if len(text) >= _KEEP_HEAD + _KEEP_TAIL + 3:
        hidden = len(text) - _KEEP_HEAD - _KEEP_TAIL
        return text[:_KEEP_HEAD] + "*" * hidden + text[-_KEEP_TAIL:]
    if len(text) >= 6:
        return "*" * (len(text) - 2) + text[-2:]
    return "*" * len(text)


def provider_text(
    text: str, *, secrets: Iterable[str] = (), limit: int = _PROVIDER_TEXT_LIMIT
) -> str:
    """A provider's free-form error text, safe for an exception message.

    Providers quote back what they were sent: every run of four or more digits (a number,
    a code) is masked, and each of ``secrets`` (the password, the message text) is removed.

    Args:
        text: The provider's text.
        secrets: Values that must not appear (empty ones are ignored).
        limit: The most characters kept.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _DIGIT_RUN.sub(_mask_digit_run, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mask_digit_run(match: re.Match[str]) -> str:
    run = match.group()
    # Long runs are numbers: keep their ends so a person can tell them apart. Short ones
    # may be codes: hide every digit.
    return mask_number(run) if len(run) >= 10 else "*" * len(run)
