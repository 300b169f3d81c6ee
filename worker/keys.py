"""Every Redis key smsgw writes, and how long each lives. Units are in the names.

Keys hold ids, account names and hashes only: never a phone number, never a secret.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "ACCOUNT_STATUS_TTL_S",
    "PREFIX",
    "REJECTED_MAX",
    "account_statuses_key",
    "accounts_default_key",
    "accounts_key",
    "accounts_version_key",
    "campaign_index_key",
    "campaign_invalid_key",
    "campaign_jobs_key",
    "campaign_key",
    "campaign_name_key",
    "campaign_outcomes_key",
    "campaign_publish_lock_key",
    "campaign_ratelimit_account",
    "campaign_seen_key",
    "identity_stores_key",
    "job_key",
    "parts_key",
    "ratelimit_key",
    "ratelimit_lane_key",
    "ratelimit_pause_key",
    "reference_key",
    "rejected_key",
]

PREFIX = "sms"
REJECTED_MAX = 10_000  # malformed broker messages kept for inspection, newest first
ACCOUNT_STATUS_TTL_S = 7 * 24 * 3600  # an account unused this long drops out of health


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def job_key(job_id: str) -> str:
    """The stored job (JSON, access code encrypted); lives ``job_ttl_s``."""
    return f"{PREFIX}:job:{job_id}"


def parts_key(job_id: str) -> str:
    """Hash of the job's per-part delivery state; lives as long as the job."""
    return f"{PREFIX}:job:{job_id}:parts"


def reference_key(reference_id: str) -> str:
    """A producer's ``reference_id`` -> job id (hashed: references may hold personal data)."""
    return f"{PREFIX}:ref:{_digest(reference_id)}"


def rejected_key() -> str:
    """List of broker messages that were not valid tasks, with the reason."""
    return f"{PREFIX}:rejected"


def ratelimit_key(account: str) -> str:
    """GCRA state (theoretical arrival time) of an account, shared by every lane."""
    return f"{PREFIX}:rl:{{{account}}}:tat"


def ratelimit_lane_key(account: str, lane: str) -> str:
    """GCRA state of one lane's share of an account (bulk is capped below the account rate)."""
    return f"{PREFIX}:rl:{{{account}}}:lane:{lane}:tat"


def ratelimit_pause_key(account: str) -> str:
    """Set while the provider has asked the whole account to slow down; holds the resume time."""
    return f"{PREFIX}:rl:{{{account}}}:paused"


def accounts_key() -> str:
    """Hash of gateway accounts: name -> JSON (password and proxy_password encrypted)."""
    return f"{PREFIX}:accounts"


def identity_stores_key() -> str:
    """Hash of identity stores: name -> JSON (linked account, default region)."""
    return f"{PREFIX}:stores"


def accounts_default_key() -> str:
    """The name of the default gateway account, when one is set."""
    return f"{PREFIX}:accounts:default"


def accounts_version_key() -> str:
    """Bumped with every change of accounts, stores or the default (workers' caches)."""
    return f"{PREFIX}:accounts:version"


def account_statuses_key() -> str:
    """Hash of account name -> its last provider outcome (JSON: ok, or failing permanently)
    for health checks; one hash, so a scrape reads every account in one command."""
    return f"{PREFIX}:account-status"


def campaign_key(campaign_id: str) -> str:
    """Hash of a campaign: its settings, state and counters (updated atomically)."""
    return f"{PREFIX}:campaign:{campaign_id}"


def campaign_jobs_key(campaign_id: str) -> str:
    """List of a campaign's job ids (one recipient each), in file order."""
    return f"{PREFIX}:campaign:{campaign_id}:jobs"


def campaign_seen_key(campaign_id: str) -> str:
    """Hash of number digests -> the file chunk that staged them (duplicates are sent once)."""
    return f"{PREFIX}:campaign:{campaign_id}:seen"


def campaign_outcomes_key(campaign_id: str) -> str:
    """Hash of job id -> the recipient's final outcome (JSON: number, status, ids, reason)."""
    return f"{PREFIX}:campaign:{campaign_id}:outcomes"


def campaign_invalid_key(campaign_id: str) -> str:
    """List of the file's refused rows (JSON: line, masked number, reason)."""
    return f"{PREFIX}:campaign:{campaign_id}:invalid"


def campaign_name_key(name: str) -> str:
    """A campaign's name -> its id (hashed: names are free text)."""
    return f"{PREFIX}:campaign-name:{_digest(name)}"


def campaign_publish_lock_key(campaign_id: str) -> str:
    """Held by the one process publishing a campaign's jobs."""
    return f"{PREFIX}:campaign:{campaign_id}:publishing"


def campaign_index_key() -> str:
    """Sorted set of campaign ids by creation time (``smsgw campaign list``)."""
    return f"{PREFIX}:campaigns"


def campaign_ratelimit_account(campaign_id: str) -> str:
    """The name a campaign's own rate (``--rate``/``--deadline``) is limited under."""
    return f"campaign:{campaign_id}"
