"""The sandbox's memory: accounts, the inbox, fault settings, throttles and counters.

Everything here is plain in-process state of one sandbox server; the provider modules
read it through :class:`SandboxState`. It is touched from the server's event loop and,
in tests, from the test thread: every mutation takes one lock.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from gateways.encoding import segment

__all__ = [
    "DEFAULT_ACCOUNTS",
    "AfterAccept",
    "FaultDecision",
    "Faults",
    "InboxMessage",
    "SandboxAccount",
    "SandboxState",
]

_INBOX_LIMIT = 200_000  # bounds memory in long benchmark runs; oldest messages drop first
_ANY = "*"


class SandboxAccount(BaseModel):
    """One account a simulated provider accepts, in the generic account fields.

    Each provider module documents which fields it checks (Vonage: ``user_id`` is the API
    key and ``password`` the secret; Twilio: ``account_id`` is the Account SID, ...).
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    provider: str
    name: str
    account_id: str | None = None
    user_id: str | None = None
    password: str | None = None
    rate_per_s: float | None = Field(default=None, gt=0)
    """Requests per second the provider allows; over it, the provider's throttle reply."""
    balance: float = 100.0


# The documented default credentials for local use (README "Sandbox accounts").
DEFAULT_ACCOUNTS: tuple[SandboxAccount, ...] = (
    SandboxAccount(
        provider="vonage", name="sandbox", user_id="sandbox1", password="sandbox-secret"
    ),
    SandboxAccount(
        provider="twilio",
        name="sandbox",
        account_id="AC00000000000000000000000000000000",
        password="sandbox-auth-token",
    ),
    SandboxAccount(provider="clickatell", name="sandbox", password="sandbox-api-key"),
    SandboxAccount(
        provider="clickatell-http",
        name="sandbox",
        account_id="3500001",
        user_id="sandbox",
        password="sandbox-password",
    ),
    SandboxAccount(
        provider="redoxygen",
        name="sandbox",
        account_id="CI00000001",
        user_id="sandbox@example.com",
        password="sandbox-password",
    ),
    SandboxAccount(
        provider="bulletin", name="sandbox", user_id="sandbox", password="sandbox-password"
    ),
    SandboxAccount(provider="webhook", name="sandbox", password="sandbox-token"),
)


class Faults(BaseModel):
    """Faults to inject for one provider (and optionally one account).

    Shares are probabilities per request; ``*_next`` counters hit the next N requests for
    certain and count down, which is what deterministic tests want. The ``accept_then_*``
    counters hit only sends the provider accepted: the message is in the inbox (and its
    receipts are on their way), but the client never gets the answer, the case where a
    resend would duplicate the message.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0, description="extra random 0..N ms")
    error_share: float = Field(default=0.0, ge=0, le=1, description="share of 5xx replies")
    error_next: int = Field(default=0, ge=0)
    hang_share: float = Field(default=0.0, ge=0, le=1)
    hang_next: int = Field(default=0, ge=0)
    hang_s: float = Field(default=30.0, ge=0, description="how long a hung request waits")
    drop_share: float = Field(default=0.0, ge=0, le=1, description="connections dropped")
    drop_next: int = Field(default=0, ge=0)
    accept_then_drop_next: int = Field(
        default=0,
        ge=0,
        description="the next N accepted sends are recorded, then the connection is cut unanswered",
    )
    accept_then_hang_next: int = Field(
        default=0,
        ge=0,
        description="the next N accepted sends are recorded, then hang hang_s and are cut",
    )
    number_errors: dict[str, str] = Field(
        default_factory=dict,
        description="recipient digits (no +) -> the provider's own error code to answer",
    )


FaultDecision = str  # "proceed" | "error" | "hang" | "drop"
AfterAccept = str  # "answer" | "hang" | "drop"


@dataclass(slots=True)
class InboxMessage:
    """One message a simulated provider accepted."""

    id: int
    provider: str
    account: str
    sender: str | None
    to: str
    text: str
    encoding: str
    segments: int
    message_ids: list[str]
    received_at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        """The inbox API's JSON form."""
        return asdict(self)


@dataclass(slots=True)
class _Bucket:
    rate_per_s: float
    tokens: float
    updated: float


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    accepted: int = 0
    throttled: int = 0
    auth_failures: int = 0
    faults: int = 0


class SandboxState:
    """Accounts, inbox, faults, throttles and counters of one sandbox server.

    Args:
        accounts: The accounts providers accept; the documented defaults when omitted.
        dlr_url: Where providers that push delivery receipts send them (None: no receipts).
        seed: Seed for the random fault shares, for reproducible runs.
    """

    def __init__(
        self,
        accounts: tuple[SandboxAccount, ...] | list[SandboxAccount] | None = None,
        *,
        dlr_url: str | None = None,
        seed: int | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._accounts: list[SandboxAccount] = list(
            DEFAULT_ACCOUNTS if accounts is None else accounts
        )
        self._inbox: deque[InboxMessage] = deque(maxlen=_INBOX_LIMIT)
        self._ids = itertools.count(1)
        self._faults: dict[tuple[str, str], Faults] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._counters: dict[tuple[str, str], _Counters] = {}
        self._random = random.Random(seed)
        self.dlr_url = dlr_url

    # --- accounts -----------------------------------------------------------------------

    @staticmethod
    def load_accounts(path: Path) -> list[SandboxAccount]:
        """Read accounts from a YAML file: a list of mappings with the account fields."""
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if isinstance(data, dict):
            data = data.get("accounts", [])
        return [SandboxAccount.model_validate(item) for item in data]

    def add_account(self, account: SandboxAccount) -> None:
        """Accept another account (replacing one of the same provider and name)."""
        with self._lock:
            self._accounts = [
                a for a in self._accounts
                if (a.provider, a.name) != (account.provider, account.name)
            ]  # fmt: skip
            self._accounts.append(account)
            self._buckets.pop((account.provider, account.name), None)

    def set_accounts(self, accounts: tuple[SandboxAccount, ...] | list[SandboxAccount]) -> None:
        """Replace every account (and forget their throttles)."""
        with self._lock:
            self._accounts = list(accounts)
            self._buckets.clear()

    def all_accounts(self) -> list[SandboxAccount]:
        """Every account of every provider."""
        return list(self._accounts)

    def accounts(self, provider: str) -> list[SandboxAccount]:
        """The accounts of one provider."""
        return [a for a in self._accounts if a.provider == provider]

    def find_account(self, provider: str, **fields: str | None) -> SandboxAccount | None:
        """The provider's account whose given fields all match exactly, if any."""
        for account in self.accounts(provider):
            if all(getattr(account, key) == value for key, value in fields.items()):
                return account
        return None

    # --- faults ---------------------------------------------------------------------------

    def set_faults(
        self, provider: str = _ANY, account: str = _ANY, faults: Faults | None = None
    ) -> None:
        """Set (or, with ``faults=None``, clear) the faults of a provider / account."""
        with self._lock:
            if faults is None:
                self._faults.pop((provider, account), None)
            else:
                self._faults[(provider, account)] = faults

    def clear_faults(self) -> None:
        """Remove every fault setting."""
        with self._lock:
            self._faults.clear()

    def faults_for(self, provider: str, account: str) -> Faults | None:
        """The most specific fault setting for this provider and account."""
        for key in ((provider, account), (provider, _ANY), (_ANY, _ANY)):
            if key in self._faults:
                return self._faults[key]
        return None

    def list_faults(self) -> list[dict[str, Any]]:
        """Every fault setting, for the control API."""
        return [
            {"provider": p, "account": a, **f.model_dump()} for (p, a), f in self._faults.items()
        ]

    def decide_fault(self, faults: Faults) -> FaultDecision:
        """Draw the fate of one request: proceed, a 5xx, a hang or a dropped connection."""
        with self._lock:
            for kind in ("drop", "hang", "error"):
                next_field = f"{kind}_next"
                if getattr(faults, next_field) > 0:
                    setattr(faults, next_field, getattr(faults, next_field) - 1)
                    return kind
            roll = self._random.random()
        if roll < faults.drop_share:
            return "drop"
        if roll < faults.drop_share + faults.hang_share:
            return "hang"
        if roll < faults.drop_share + faults.hang_share + faults.error_share:
            return "error"
        return "proceed"

    def decide_after_accept(self, faults: Faults) -> AfterAccept:
        """Draw the fate of the reply to an accepted send: answer, hang or drop."""
        with self._lock:
            for kind in ("drop", "hang"):
                next_field = f"accept_then_{kind}_next"
                if getattr(faults, next_field) > 0:
                    setattr(faults, next_field, getattr(faults, next_field) - 1)
                    return kind
        return "answer"

    def latency_s(self, faults: Faults) -> float:
        """The delay to add to one request."""
        jitter = (
            self._random.uniform(0, faults.latency_jitter_ms) if faults.latency_jitter_ms else 0
        )
        return (faults.latency_ms + jitter) / 1000

    # --- throttling -----------------------------------------------------------------------

    def take_token(self, account: SandboxAccount) -> float | None:
        """Charge one request to the account's rate; ``None`` if allowed, else seconds to wait.

        A token bucket holding one second's worth of requests, like most providers' limits.
        """
        if account.rate_per_s is None:
            return None
        key = (account.provider, account.name)
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            capacity = max(1.0, account.rate_per_s)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(account.rate_per_s, capacity, now)
            bucket.tokens = min(
                capacity, bucket.tokens + (now - bucket.updated) * bucket.rate_per_s
            )
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            self._count(key, "throttled")
            return (1.0 - bucket.tokens) / bucket.rate_per_s

    # --- inbox and counters ---------------------------------------------------------------

    def record(
        self,
        *,
        provider: str,
        account: str,
        sender: str | None,
        to: str,
        text: str,
        message_ids: list[str],
    ) -> InboxMessage:
        """Put an accepted message into the inbox (encoding and segments computed here)."""
        counted = segment(text)
        with self._lock:
            message = InboxMessage(
                id=next(self._ids),
                provider=provider,
                account=account,
                sender=sender,
                to=to,
                text=text,
                encoding=counted.encoding,
                segments=max(1, counted.segments),
                message_ids=message_ids,
            )
            self._inbox.append(message)
            self._count((provider, account), "accepted")
        return message

    def messages(
        self, *, provider: str | None = None, to: str | None = None, since: float | None = None
    ) -> list[InboxMessage]:
        """Inbox messages, oldest first, filtered."""
        want_to = to.lstrip("+") if to else None
        with self._lock:
            items = list(self._inbox)
        return [
            m for m in items
            if (provider is None or m.provider == provider)
            and (want_to is None or m.to.lstrip("+") == want_to)
            and (since is None or m.received_at >= since)
        ]  # fmt: skip

    def clear_messages(self) -> None:
        """Empty the inbox."""
        with self._lock:
            self._inbox.clear()

    def count(self, provider: str, account: str, what: str) -> None:
        """Add one to a counter (``requests``, ``auth_failures``, ``faults``)."""
        with self._lock:
            self._count((provider, account), what)

    def _count(self, key: tuple[str, str], what: str) -> None:
        counters = self._counters.setdefault(key, _Counters())
        setattr(counters, what, getattr(counters, what) + 1)

    def stats(self) -> list[dict[str, Any]]:
        """Counters per provider and account."""
        with self._lock:
            return [
                {"provider": p, "account": a, **asdict(c)} for (p, a), c in self._counters.items()
            ]

    def reset(self) -> None:
        """Empty the inbox, faults, throttles and counters (accounts stay)."""
        with self._lock:
            self._inbox.clear()
            self._faults.clear()
            self._buckets.clear()
            self._counters.clear()
