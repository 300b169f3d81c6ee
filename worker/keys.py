"""Every Redis key smsgw writes, and how long each lives. Units are in the names.

Keys hold ids and account names only: never a phone number, never a secret.
"""

from __future__ import annotations

__all__ = [
    "PREFIX",
    "ratelimit_key",
    "ratelimit_lane_key",
    "ratelimit_pause_key",
]

PREFIX = "sms"


def ratelimit_key(account: str) -> str:
    """GCRA state (theoretical arrival time) of an account, shared by every lane."""
    return f"{PREFIX}:rl:{{{account}}}:tat"


def ratelimit_lane_key(account: str, lane: str) -> str:
    """GCRA state of one lane's share of an account (bulk is capped below the account rate)."""
    return f"{PREFIX}:rl:{{{account}}}:lane:{lane}:tat"


def ratelimit_pause_key(account: str) -> str:
    """Set while the provider has asked the whole account to slow down; holds the resume time."""
    return f"{PREFIX}:rl:{{{account}}}:paused"
