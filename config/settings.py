"""The one typed settings root (pydantic-settings, env prefix ``SMSGW_``).

Values come from, in order of precedence: explicit arguments, ``SMSGW_*`` environment
variables (nested with ``__``, e.g. ``SMSGW_LANES__OTP=codes``), a ``.env`` file in the
working directory, then the defaults below. There is no module-level instance: call
:func:`get_settings`, which caches; tests override with :func:`override_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_ALLOWED_NUMBER_TYPES",
    "IdentityStoreLink",
    "Lanes",
    "NumberType",
    "Settings",
    "StallThresholds",
    "get_settings",
    "override_settings",
    "reload_settings",
]

# The phonenumbers number types, by their PhoneNumberType names.
NumberType = Literal[
    "FIXED_LINE",
    "MOBILE",
    "FIXED_LINE_OR_MOBILE",
    "TOLL_FREE",
    "PREMIUM_RATE",
    "SHARED_COST",
    "VOIP",
    "PERSONAL_NUMBER",
    "PAGER",
    "UAN",
    "VOICEMAIL",
    "UNKNOWN",
]

# Types that can receive an SMS and do not cost the sender a premium.
DEFAULT_ALLOWED_NUMBER_TYPES: frozenset[NumberType] = frozenset(
    {"MOBILE", "FIXED_LINE_OR_MOBILE", "PERSONAL_NUMBER", "PAGER", "VOIP"}
)


class Lanes(BaseModel):
    """Queue names of the three lanes; a code never waits behind bulk work."""

    otp: str = "otp"
    default: str = "default"
    bulk: str = "bulk"

    def names(self) -> tuple[str, str, str]:
        """The three queue names, most urgent first."""
        return (self.otp, self.default, self.bulk)


class StallThresholds(BaseModel):
    """How old the oldest queued job of each lane may get before health turns red."""

    otp: float = Field(default=30.0, gt=0)
    default: float = Field(default=300.0, gt=0)
    bulk: float = Field(default=1800.0, gt=0)


class IdentityStoreLink(BaseModel):
    """An identity store's gateway account and its region for national number formats."""

    account: str | None = None
    default_region: str | None = None


class Settings(BaseSettings):
    """Every setting of smsgw. Secrets are ``SecretStr`` and never printed in clear."""

    model_config = SettingsConfigDict(
        env_prefix="SMSGW_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"] = "development"

    # Redis: the broker carries task messages, the result backend keeps final results,
    # the state store keeps jobs, per-part delivery state, accounts and rate limits.
    broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    result_backend_url: SecretStr = SecretStr("redis://127.0.0.1:6379/1")
    state_redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/2")

    # Messages and recipients.
    default_region: str | None = Field(
        default=None,
        description="ISO 3166 region for numbers typed in national format, e.g. GB",
    )
    max_length: int = Field(default=160, ge=1, le=10_000)
    max_parts: int = Field(default=10, ge=1, le=255, description="most SMS segments per job")
    allowed_number_types: frozenset[NumberType] = DEFAULT_ALLOWED_NUMBER_TYPES

    lanes: Lanes = Lanes()

    # Which registered gateway types may load (built-ins and plugins); all when unset.
    gateways_enabled: frozenset[str] | None = None

    # Dispatch: retries, pacing and what to do when a send's outcome is unknown.
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="how long a job is kept")
    max_attempts: int = Field(default=8, ge=1, description="provider attempts per part")
    retry_base_s: float = Field(default=2.0, gt=0, description="first retry backoff")
    max_inline_wait_s: float = Field(
        default=2.0, ge=0, description="rate-limit waits up to this are awaited, longer retried"
    )
    bulk_share: float = Field(default=0.8, gt=0, le=1, description="bulk's share of a rate")
    rate_burst_s: float = Field(default=0.1, ge=0, description="burst, in seconds of rate")
    resend_uncertain_lanes: frozenset[str] = Field(
        default=frozenset(),
        description="lanes that re-send a part whose outcome is unknown (timeout, crash)",
    )
    otp_ttl_s: float = Field(default=600, gt=0, description="default expiry of an otp job")
    recipient_concurrency: int = Field(default=16, ge=1, description="sends at once per job")
    bulk_batch_size: int = Field(
        default=100, ge=1, le=1000, description="bulk jobs carried by one Celery task"
    )
    campaign_pause_poll_s: float = Field(
        default=10.0, gt=0, description="how often a paused campaign's held batches look again"
    )
    provider_timeout_s: float = Field(default=15.0, gt=0, description="one provider call")
    provider_connect_timeout_s: float = Field(default=5.0, gt=0)

    # Provisioned gateway accounts, read-only beside those managed with `smsgw accounts`
    # (kept in the state store): raw mappings, validated by the gateway adapters (config
    # never imports gateways).
    accounts: list[dict[str, Any]] = Field(default_factory=list, repr=False)
    default_account: str | None = None
    identity_stores: dict[str, IdentityStoreLink] = Field(default_factory=dict)

    # Celery: how long a final result is kept, and the broker's redelivery timeout, which
    # must stay far above any retry countdown plus the longest task (see config/celery.py).
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    visibility_timeout_s: int = Field(default=6 * 3600, ge=10)
    max_retry_countdown_s: int = Field(default=900, ge=1)
    task_time_limit_s: int = Field(default=120, ge=1, description="hard limit of one task")

    # Operations: worker logs, the metrics port of each worker, stall detection.
    log_format: Literal["plain", "json"] = "plain"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="each worker serves /metrics here; off if unset"
    )
    stall_after_s: StallThresholds = StallThresholds()
    health_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="how long health waits for workers to answer"
    )

    # Encrypts access codes and account secrets at rest (Fernet key).
    secret_key: SecretStr | None = None

    @field_validator("default_region")
    @classmethod
    def _upper_region(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        region = value.strip().upper()
        if len(region) != 2 or not region.isalpha():
            raise ValueError(f"must be a two-letter ISO 3166 region code, got {value!r}")
        return region


_overrides: list[Settings] = []


@lru_cache(maxsize=1)
def _load_settings() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The process-wide settings, read once on first use (or the innermost override)."""
    if _overrides:
        return _overrides[-1]
    return _load_settings()


def reload_settings() -> Settings:
    """Forget the cached settings and read them again (after the environment changed)."""
    _load_settings.cache_clear()
    return get_settings()


@contextmanager
def override_settings(**values: object) -> Iterator[Settings]:
    """Put other settings in force inside a ``with`` block (tests, one-off CLI runs).

    Args:
        **values: Field values; the rest is read as usual (environment, ``.env``).

    Yields:
        The settings in force inside the block.
    """
    settings = Settings(**values)  # type: ignore[arg-type]
    _overrides.append(settings)
    try:
        yield settings
    finally:
        _overrides.remove(settings)
