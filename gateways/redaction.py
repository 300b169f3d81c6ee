"""Masking helpers for personal data that may reach logs, errors and CLI output.

Phone numbers are personal data: anything that can end up in a log line or an exception
message shows them masked (``+44******3456``). Secrets are never shown at all; they are
handled with pydantic ``SecretStr`` and never reach these helpers.
"""

from __future__ import annotations

__all__ = ["mask_number"]

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
