"""Vonage (formerly Nexmo) through the legacy SMS API, ``POST {base}/sms/json``.

Wire facts: /work/shared/providers.md §1. The request is a form post authenticated by an
HTTP Basic header (API key and secret), so no secret travels in the body or the URL. Vonage
splits a long text itself and answers with one ``messages[]`` entry per part, each with its
own ``message-id`` and ``status``; HTTP 200 carries failures too, as non-zero statuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PartiallySent,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    error_from_rule,
)
from gateways.http import HttpReply, basic_auth_header, error_for_status, parse_retry_after
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["STATUS_TABLE", "VonageGateway", "throttle_retry_after"]

_NAME: Final = "vonage"

CLIENT_REF_MAX: Final = 40
"""Vonage documents ``client-ref`` as at most 40 characters."""

_DEFAULT_RETRY_AFTER_S: Final = 1.0
_MIN_RETRY_AFTER_S: Final = 0.1
# "Throughput Rate Exceeded - please wait [ 250 ] and retry": the number is milliseconds.
_THROTTLE_HINT: Final = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")

STATUS_TABLE: Final[dict[str, tuple[type[GatewayError], str]]] = {
    "1": (RateLimited, "throttled; sending faster than the account's limit"),
    "2": (PermanentGatewayError, "a required parameter is missing"),
    "3": (PermanentGatewayError, "a parameter is invalid"),
    "4": (AccountRejected, "the API key or secret is wrong"),
    "5": (TransientGatewayError, "internal error at Vonage"),
    "6": (RecipientRejected, "the message was refused, usually for an unroutable number prefix"),
    "7": (RecipientRejected, "the number is barred"),
    "8": (AccountRejected, "the account is barred (suspended)"),
    "9": (AccountRejected, "no credit left; top up the account before sending again"),
    "10": (TransientGatewayError, "too many existing binds; back off and retry"),
    "11": (PermanentGatewayError, "the account is not enabled for the HTTP API (only SMPP)"),
    "12": (PermanentGatewayError, "the message is too long"),
    "13": (TransientGatewayError, "communication failure (legacy code)"),
    "14": (AccountRejected, "the request signature is invalid (check the clock and secret)"),
    "15": (PermanentGatewayError, "the sender (from) is not allowed for this destination"),
    "22": (PermanentGatewayError, "invalid network code"),
    "23": (PermanentGatewayError, "invalid callback URL"),
    "29": (RecipientRejected, "the destination is not whitelisted (demo account)"),
    "32": (AccountRejected, "a signature and an API secret were both sent"),
    "33": (RecipientRejected, "the number is de-activated"),
}
"""Vonage send ``status`` -> what the caller must do, and a plain explanation.

Codes not listed are permanent (``unknown code N``), as providers.md §1.6 advises.
"""

# How hard each outcome stops the caller; with several failed parts (and none accepted) the
# worst one is raised.
_SEVERITY: Final[dict[type[GatewayError], int]] = {
    RateLimited: 1,
    TransientGatewayError: 2,
    RecipientRejected: 3,
    PermanentGatewayError: 4,
    AccountRejected: 5,
}


def throttle_retry_after(error_text: str) -> float:
    """Seconds to wait from a throttle reply's ``[ N ]`` hint (N in milliseconds).

    The provider's own hint is honoured as given (the worker's limiter paces the account
    anyway), with a 0.1 s floor so a ``[ 0 ]`` cannot cause a busy retry loop; without a
    hint, 1 s.
    """
    found = _THROTTLE_HINT.search(error_text)
    if found is None:
        return _DEFAULT_RETRY_AFTER_S
    return max(float(found.group(1)) / 1000, _MIN_RETRY_AFTER_S)


class VonageGateway(SmsGateway):
    """Vonage (Nexmo) SMS API: one form post per message, Basic-auth with key and secret.

    ::

        account field   Vonage name
        -------------   -----------
        user_id         API key
        password        API secret
        sender          from (E.164 digits or an alphanumeric sender id); required,
                        a message's own sender overrides it
        url             base URL (default https://rest.nexmo.com)
        account_id      not used

    Behaviour worth knowing:

    * ``type=unicode`` is sent when the piece is UCS-2 (its text decides), else
      ``type=text``; Vonage does not detect it and would garble non-GSM text.
    * ``client-ref`` carries :attr:`OutboundSms.client_ref`; one longer than Vonage's 40
      characters is cut to its *last* 40, which keep the piece number and most of the job
      id, so refs stay distinct. Receipts also carry the per-part message ids.
    * Vonage may accept some parts of a long text and refuse others. Then
      :class:`~gateways.errors.PartiallySent` is raised (permanent, whatever the failed
      part's status, a throttle included) with the accepted parts' ids, since those parts
      are on their way and a resend would duplicate them. When no part was accepted, the
      worst part's error is raised.
    * A 200 reply that cannot be read, or whose parts carry no message id, is
      :class:`~gateways.errors.OutcomeUnknown`: the message may have gone out.
    * ``max_segments`` is 20: the most parts that always fit Vonage's 3,200-character limit
      (20 x 153 GSM-7 characters). Vonage recommends at most 6 parts for reliable
      reassembly on handsets; set ``max_parts`` to 6 to follow that advice.
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        aliases=("nexmo",),
        description="Vonage (formerly Nexmo) SMS API, /sms/json",
        url="https://rest.nexmo.com",
        user_id_required=True,
        password_required=True,
        sender_required=True,  # Vonage refuses every request without `from` (status 2)
        field_names={
            "user_id": "API key",
            "password": "API secret",
            "sender": "from",
            "url": "base URL",
        },
        capabilities=Capabilities(
            unicode=True, max_segments=20, concatenates=True, default_rate_per_s=30.0
        ),
    )

    @classmethod
    def check_account(cls, account: GatewayAccount) -> None:
        """The base checks, plus an API key that can travel in a Basic header."""
        super().check_account(account)
        if ":" in (account.user_id or ""):
            raise ConfigurationError(
                f"{_NAME} account {account.name!r}: user_id (API key) cannot contain ':'"
            )

    def _auth(self) -> dict[str, str]:
        """The Basic ``Authorization`` header (key and secret); never log it."""
        key, secret = self.account.user_id or "", self.account.secret("password") or ""
        return {"Authorization": basic_auth_header(key, secret)}

    def _secrets(self, sms: OutboundSms | None = None) -> tuple[str, ...]:
        """What must never be quoted back from a reply: the secret and the message text."""
        return (self.account.secret("password") or "", sms.text if sms else "")

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Post one piece to ``/sms/json`` and return the message id of every part.

        Raises:
            RateLimited: Throttled (status 1 or HTTP 429); ``retry_after_s`` from Vonage's hint.
            OutcomeUnknown: No usable answer (timeout, dropped connection, a 200 reply that
                cannot be read or holds no message id): the message may have been accepted.
            TransientGatewayError: Internal errors, network trouble before sending.
            PartiallySent: Some parts were accepted and another refused (whatever its status):
                re-sending would duplicate the accepted ones.
            RecipientRejected: The number is invalid, barred, de-activated or not whitelisted.
            AccountRejected: Bad credentials or signature, no credit, account barred.
            PermanentGatewayError: Anything else Vonage refused, unknown codes included.
        """
        # sender_required: the account always has one; a message's own sender wins.
        sender = sms.sender or self.account.sender or ""
        form = {
            "from": sender,
            "to": sms.to_digits,
            "text": sms.text,
            "type": "unicode" if sms.encoding == "UCS-2" else "text",
        }
        if sms.client_ref:
            form["client-ref"] = sms.client_ref[-CLIENT_REF_MAX:]
        reply = await self.http.request(
            "POST", f"{self.base_url}/sms/json", data=form, headers=self._auth()
        )
        return _receipt(reply, self._secrets(sms))

    async def test_credentials(self) -> CheckResult:
        """Ask Vonage's balance endpoint (``GET /account/get-balance``); sends nothing."""
        try:
            reply = await self.http.request(
                "GET", f"{self.base_url}/account/get-balance", headers=self._auth()
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        body = reply.json()
        if reply.status == 200 and isinstance(body, dict):
            value = body.get("value")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return CheckResult(
                    True,
                    f"balance endpoint answered: {value:.2f} EUR",
                    details={
                        "balance": str(value),
                        "auto_reload": str(body.get("autoReload", "unknown")).lower(),
                    },
                )
        if reply.status == 200:
            return CheckResult(
                False,
                "balance endpoint answered HTTP 200 without a balance; "
                "is the url a Vonage REST API?",
            )
        refused = _request_error(reply, body, self._secrets())
        return CheckResult(False, f"balance endpoint refused the request: {refused.reason}")


def _receipt(reply: HttpReply, secrets: Iterable[str]) -> SendReceipt:
    """The receipt for a send reply, or the error it stands for."""
    body = reply.json()
    if reply.status != 200:
        raise _request_error(reply, body, secrets)
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(messages, list) or not messages:
        if isinstance(body, dict) and "error-code" in body:
            raise _request_error(reply, body, secrets)
        raise _unreadable(reply, "no messages in the reply")
    parts = [part for part in messages if isinstance(part, dict)]
    accepted = [
        str(part["message-id"])
        for part in parts
        if str(part.get("status")) == "0" and part.get("message-id")
    ]
    failed = [
        (index, str(part.get("status")), str(part.get("error-text") or ""))
        for index, part in enumerate(parts, start=1)
        if str(part.get("status")) != "0"
    ]
    if failed:
        raise _part_failure(failed, accepted, len(parts), secrets)
    if not accepted:
        raise _unreadable(reply, "no message id in the reply")
    # Every part has status 0: it is on its way even if one part came without an id.
    return SendReceipt(provider_message_ids=tuple(accepted), segments=_count(body, len(parts)))


def _count(body: Mapping[str, Any], default: int) -> int:
    try:
        return int(body.get("message-count", default))
    except (TypeError, ValueError):
        return default


def _unreadable(reply: HttpReply, what: str) -> OutcomeUnknown:
    # Vonage may have accepted the message; the worker's per-lane policy decides.
    return OutcomeUnknown(
        f"{_NAME}: unreadable reply (HTTP {reply.status}, {what}); "
        f"the message may have been accepted",
        gateway=_NAME,
        http_status=reply.status,
    )


def _rule(code: str) -> tuple[type[GatewayError], str]:
    return STATUS_TABLE.get(code, (PermanentGatewayError, f"unknown code {code}"))


def _part_failure(
    failed: list[tuple[int, str, str]], accepted: list[str], total: int, secrets: Iterable[str]
) -> GatewayError:
    """The error to raise when one or more parts failed.

    With some parts accepted it is :class:`PartiallySent`, whatever the failed parts said
    (even a throttle): a resend would duplicate what went out. Otherwise the worst failed
    part's error.
    """

    def severity(item: tuple[int, str, str]) -> int:
        return _SEVERITY[_rule(item[1])[0]]

    worst_index, code, error_text = max(failed, key=severity)
    error_class, reason = _rule(code)
    said = provider_text(error_text, secrets=secrets) or "no error text"
    message = f"{_NAME}: status {code} ({said}): {reason}"
    if total > 1:
        which = f"part {worst_index} of {total}"
        if len(failed) > 1:
            which = f"{len(failed)} of {total} parts failed, the worst being part {worst_index}"
        message += f"; {which}"
    if accepted:
        message += (
            f"; {len(accepted)} of {total} parts were accepted and will be delivered "
            f"(message ids {', '.join(accepted)}), so the message is not re-sent"
        )
        return PartiallySent(
            message,
            gateway=_NAME,
            accepted_ids=tuple(accepted),
            http_status=200,
            provider_code=code,
        )
    if total > 1:
        message += "; no part was accepted"
    # Several throttled parts: wait for the longest hint among them.
    retry_after_s = max(
        (throttle_retry_after(text) for _, part_code, text in failed if part_code == "1"),
        default=_DEFAULT_RETRY_AFTER_S,
    )
    return error_from_rule(
        error_class,
        message,
        gateway=_NAME,
        http_status=200,
        provider_code=code,
        retry_after_s=retry_after_s,
    )


def _request_error(reply: HttpReply, body: Any, secrets: Iterable[str]) -> GatewayError:
    """The error for a request-level failure: an HTTP error or a top-level ``error-code``."""
    code = label = None
    if isinstance(body, dict):
        code = str(body["error-code"]) if "error-code" in body else None
        label = str(body["error-code-label"]) if "error-code-label" in body else None
    status = reply.status
    if status == 200 and code is not None and code.isdigit():
        status = int(code)  # an error body under HTTP 200: its code is the HTTP-like status
    said = f" ({provider_text(label, secrets=secrets)})" if label else ""
    shown_code = provider_text(code, secrets=secrets, limit=20) if code else None
    detail = f"{_NAME}: HTTP {reply.status}" + (f", error-code {shown_code}" if code else "")
    detail += said
    error_class: type[GatewayError]
    if status in (401, 403):
        error_class, detail = AccountRejected, f"{detail}: the API key or secret was refused"
    elif status == 429:
        error_class, detail = RateLimited, f"{detail}: too many concurrent requests"
    elif status == 407 or not (code or label):
        return error_for_status(reply, _NAME, "the Vonage API")
    elif status == 408 or status >= 500:
        error_class = TransientGatewayError
    else:
        error_class = PermanentGatewayError
    return error_from_rule(
        error_class,
        detail,
        gateway=_NAME,
        http_status=reply.status,
        provider_code=code,
        retry_after_s=parse_retry_after(reply.headers.get("Retry-After")),
    )
