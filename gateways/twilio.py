"""Twilio Programmable Messaging (the ``2010-04-01`` REST API).

One message is one form-encoded ``POST`` to ``/2010-04-01/Accounts/{AccountSid}/Messages.json``;
Twilio picks GSM-7 or UCS-2 itself, splits long text and reports ``num_segments``. Errors are
JSON ``{code, message, more_info, status}`` (or the RFC 9457 ``type/title/status/code/detail``
shape) and are classified by :data:`ERRORS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    error_from_rule,
)
from gateways.http import HttpReply, basic_auth_header, error_for_status, parse_retry_after
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["ERRORS", "TwilioGateway", "TwilioOptions"]

GATEWAY = "twilio"
API_VERSION = "2010-04-01"

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_USER_SID = re.compile(r"(AC|SK)[0-9a-fA-F]{32}")

# Twilio asks for exponential back-off on 20429 but sends no Retry-After header that we know of
# (providers.md §5): wait this long unless the reply carries one.
DEFAULT_THROTTLE_RETRY_S = 1.0
# 21611: the sender's queue already holds 10 h of messages; retrying in a second cannot help.
QUEUE_FULL_RETRY_S = 60.0


class _Rule(NamedTuple):
    error: type[GatewayError]
    reason: str
    retry_after_s: float | None = None


ERRORS: dict[int, _Rule] = {
    # The whole account: nothing sent through it can succeed until someone fixes it.
    10001: _Rule(AccountRejected, "account not active"),
    20003: _Rule(AccountRejected, "authentication failed or permission denied"),
    20404: _Rule(AccountRejected, "resource not found; check the Account SID and the base URL"),
    # Slow down: 20429 is "never processed and always safe to retry" (Twilio's words).
    20429: _Rule(RateLimited, "too many concurrent requests", DEFAULT_THROTTLE_RETRY_S),
    21611: _Rule(RateLimited, "the sender's queue is full (10 h of messages)", QUEUE_FULL_RETRY_S),
    20500: _Rule(TransientGatewayError, "internal server error"),
    20503: _Rule(TransientGatewayError, "service unavailable"),
    # This recipient only.
    21211: _Rule(RecipientRejected, "invalid 'To' number"),
    21408: _Rule(RecipientRejected, "sending to this region is not enabled"),
    21608: _Rule(RecipientRejected, "'To' number is unverified (trial account)"),
    21610: _Rule(RecipientRejected, "recipient unsubscribed (replied STOP)"),
    21612: _Rule(RecipientRejected, "cannot route to the 'To' number"),
    21614: _Rule(RecipientRejected, "'To' number cannot receive SMS"),
    21635: _Rule(RecipientRejected, "'To' number is a landline"),
    # The sender or the request is wrong: permanent, but the account itself is fine (another
    # sender or the Messaging Service still works), so not AccountRejected.
    21212: _Rule(PermanentGatewayError, "invalid 'From' number"),
    21606: _Rule(PermanentGatewayError, "'From' is not an SMS-capable number of this account"),
    21659: _Rule(PermanentGatewayError, "'From' is not a Twilio number"),
    21602: _Rule(PermanentGatewayError, "message body is required"),
    21603: _Rule(PermanentGatewayError, "'From' or 'MessagingServiceSid' is required"),
    21604: _Rule(PermanentGatewayError, "'To' number is required"),
    21609: _Rule(PermanentGatewayError, "invalid StatusCallback URL"),
    21617: _Rule(PermanentGatewayError, "message body exceeds 1600 characters"),
}
"""Twilio error code -> what it means for the caller. Unknown codes are permanent."""


class TwilioOptions(BaseModel):
    """Twilio extras, read from ``account.options``.

    Attributes:
        messaging_service_sid: Send through this Messaging Service (``MG`` + 32 hex) instead
            of a single ``From`` number; Twilio then picks the sender from the service's pool.
        status_callback: The URL Twilio POSTs status callbacks (sent, delivered, ...) to.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    status_callback: str | None = Field(default=None, max_length=4000)

    @field_validator("status_callback")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if "_" in parts.hostname:
            # Twilio refuses such hosts with 21609 on every send; say so up front.
            raise ValueError("Twilio refuses callback hosts with an underscore")
        return value


class TwilioGateway(SmsGateway):
    """Twilio Programmable Messaging.

    ::

        account field   Twilio name
        -------------   -----------
        account_id      Account SID (AC...), the account in every URL
        user_id         API Key SID (SK...), optional: then password is the key's secret
        password        Auth Token (or the API Key secret when user_id is set)
        sender          From: a Twilio number in E.164 or an alphanumeric sender ID
        url             base URL (default https://api.twilio.com)

    Requests authenticate with HTTP Basic ``user_id:password`` when ``user_id`` holds an API
    Key SID, else ``account_id:password`` (Account SID and Auth Token).

    ``options.messaging_service_sid`` sends through a Messaging Service instead of ``From``;
    an account needs a sender or a Messaging Service. With a Messaging Service the account's
    sender is not sent; a per-message sender still is (as ``From``, picked from the pool).
    ``options.status_callback`` asks Twilio to POST status callbacks there.

    Twilio has no client reference field, so ``client_ref`` is not sent; callbacks carry the
    message SID this adapter returns. The default rate is 1 segment/s, what a US long code
    delivers (Twilio queues the surplus for up to 10 h, then fails with 21611 / 30001); short
    codes and Messaging Services allow far more: set the account's ``rate_per_s``.
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=GATEWAY,
        description="Twilio Programmable Messaging (REST API 2010-04-01)",
        url="https://api.twilio.com",
        account_id_required=True,
        password_required=True,
        field_names={
            "account_id": "Account SID",
            "user_id": "API Key SID (optional)",
            "password": "Auth Token or API Key secret",
            "sender": "From",
            "url": "base URL",
        },
        capabilities=Capabilities(
            unicode=True, max_segments=10, concatenates=True, default_rate_per_s=1.0
        ),
    )
    Options: ClassVar[type[BaseModel]] = TwilioOptions

    @classmethod
    def check_account(cls, account: GatewayAccount) -> None:
        """Also require a sender or a Messaging Service, and SIDs of the right form.

        Raises:
            ConfigurationError: Naming every problem found.
        """
        super().check_account(account)
        options = cls._parse_options(account)
        problems: list[str] = []
        if not _ACCOUNT_SID.fullmatch(account.account_id or ""):
            # It goes into every URL path: refuse anything but a SID.
            problems.append("account_id (Account SID) must be 'AC' followed by 32 hex digits")
        if account.user_id and not _USER_SID.fullmatch(account.user_id):
            problems.append(
                "user_id (API Key SID) must be 'SK' (or 'AC') followed by 32 hex digits"
            )
        if not (account.sender or "").strip() and not getattr(
            options, "messaging_service_sid", None
        ):
            problems.append("needs sender (From) or options.messaging_service_sid")
        if problems:
            raise ConfigurationError(f"{GATEWAY} account {account.name!r}: " + "; ".join(problems))

    @property
    def twilio_options(self) -> TwilioOptions:
        """The account's Twilio options."""
        assert isinstance(self.options, TwilioOptions)
        return self.options

    @property
    def account_url(self) -> str:
        """``{base}/2010-04-01/Accounts/{AccountSid}``."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account.account_id}"

    def _headers(self) -> dict[str, str]:
        # A header rather than aiohttp.BasicAuth, which aiohttp 3.14 deprecates. The SIDs are
        # checked in check_account, so the login never holds a ':'.
        login = self.account.user_id or self.account.account_id or ""
        return {
            "Accept": "application/json",
            "Authorization": basic_auth_header(login, self.account.secret("password") or ""),
        }

    def _secrets(self, sms: OutboundSms | None = None) -> tuple[str, ...]:
        """What a reply must never quote into an error: the token and the message text."""
        return (self.account.secret("password") or "", sms.text if sms else "")

    def _form(self, sms: OutboundSms) -> dict[str, str]:
        options = self.twilio_options
        form = {"To": sms.to if sms.to.startswith("+") else f"+{sms.to_digits}", "Body": sms.text}
        if options.messaging_service_sid:
            form["MessagingServiceSid"] = options.messaging_service_sid
            if sms.sender:
                form["From"] = sms.sender
        else:
            form["From"] = sms.sender or self.account.sender or ""
        if options.status_callback:
            form["StatusCallback"] = options.status_callback
        return form

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Create one Message resource.

        Raises:
            TransientGatewayError: Network trouble or a Twilio-side failure (``RateLimited``
                for 20429 / HTTP 429 and for a full sender queue, 21611).
            OutcomeUnknown: No usable answer (timeout, dropped connection, a 2xx reply
                without a message SID): Twilio may have queued the message.
            PermanentGatewayError: Refused (``RecipientRejected``, ``AccountRejected``).
        """
        reply = await self.http.request(
            "POST",
            f"{self.account_url}/Messages.json",
            data=self._form(sms),
            headers=self._headers(),
        )
        if not 200 <= reply.status < 300:
            raise classify(reply, "Messages API", secrets=self._secrets(sms))
        body = reply.json()
        sid = body.get("sid") if isinstance(body, dict) else None
        if not isinstance(sid, str) or not sid:
            # Twilio may well have queued it; the worker's policy decides about a resend.
            raise OutcomeUnknown(
                f"{GATEWAY}: HTTP {reply.status} without a message sid; "
                "the message may have been accepted",
                gateway=GATEWAY,
                http_status=reply.status,
            )
        status = body.get("status")
        return SendReceipt(
            provider_message_ids=(sid,),
            segments=_positive_int(body.get("num_segments")),
            status=status if isinstance(status, str) else None,
        )

    async def test_credentials(self) -> CheckResult:
        """Fetch the Account resource: it proves the credentials and shows the account status.

        It cannot prove that the sender or the Messaging Service may send.
        """
        sid = self.account.account_id
        try:
            reply = await self.http.request(
                "GET",
                f"{self.account_url}.json",
                headers=self._headers(),
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        if reply.status != 200:
            refused = classify(reply, "Accounts API", secrets=self._secrets())
            return CheckResult(False, refused.reason)
        body = reply.json()
        if not isinstance(body, dict):
            return CheckResult(False, f"account resource of {sid} answered without JSON")
        status = str(body.get("status") or "unknown")
        kind = str(body.get("type") or "unknown type")
        details = {"status": status, "type": kind}
        if status == "active":
            return CheckResult(True, f"account {sid} is active ({kind})", details=details)
        return CheckResult(
            False, f"credentials accepted, but account {sid} is {status}", details=details
        )


def classify(
    reply: HttpReply, what: str = "Twilio", *, secrets: Iterable[str] = ()
) -> GatewayError:
    """The error for a non-success Twilio reply, by its code (:data:`ERRORS`), else its status.

    Args:
        reply: The reply.
        what: Which API answered, for replies without a Twilio code.
        secrets: Values Twilio's text must not carry into the message (token, message text).
    """
    code, said = _error_fields(reply.json(), secrets)
    if code is None:
        return error_for_status(reply, GATEWAY, what)
    rule = ERRORS.get(code)
    if rule is not None:
        return error_from_rule(
            rule.error,
            f"{GATEWAY}: code {code} ({rule.reason})",
            gateway=GATEWAY,
            http_status=reply.status,
            provider_code=str(code),
            retry_after_s=parse_retry_after(
                reply.headers.get("Retry-After"), rule.retry_after_s or DEFAULT_THROTTLE_RETRY_S
            ),
        )
    detail = f": {said}" if said else ""
    status = reply.status
    if status in (401, 403, 407, 408, 429) or status >= 500:
        # An unknown code on a status that says more than "refused": trust the status.
        error = error_for_status(reply, GATEWAY, what)
        error.provider_code = str(code)
        error.args = (f"{error} (code {code}{detail})",)
        return error
    return PermanentGatewayError(
        f"{GATEWAY}: unknown code {code} (HTTP {status}){detail}",
        gateway=GATEWAY,
        http_status=status,
        provider_code=str(code),
    )


def _error_fields(body: Any, secrets: Iterable[str] = ()) -> tuple[int | None, str | None]:
    """``(code, text)`` from the classic or the RFC 9457 error shape, the text made safe.

    Twilio's texts quote the request ("The 'To' number +1555... is not valid"): they go
    through :func:`~gateways.redaction.provider_text`.
    """
    if not isinstance(body, dict):
        return None, None
    raw_code = body.get("code")
    code: int | None
    try:
        code = int(raw_code) if raw_code is not None and not isinstance(raw_code, bool) else None
    except (TypeError, ValueError):
        code = None
    text = body.get("message") or body.get("detail") or body.get("title")
    if not isinstance(text, str) or not text.strip():
        return code, None
    return code, provider_text(text, secrets=secrets)


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
