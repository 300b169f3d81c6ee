"""Clickatell Platform SMS API: ``POST /messages`` with an integration API key.

The Platform generation (portal.clickatell.com accounts) takes JSON, authenticates with the
raw integration API key in ``Authorization`` and answers ``202`` with one ``messages[]``
entry per recipient. It accepts UTF-8 content and picks encoding and concatenation itself.

Error codes: the numbering of ``/messages`` error codes is not confirmed anywhere public;
the table below is the One API table of the same platform (providers.md §2B). Older
``/messages`` replies carried only an ``error`` text, so a reply without a code is matched
on its text (``_TEXT_CODES``) and then classified through the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Final

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    error_from_rule,
)
from gateways.http import HttpReply, error_for_status, parse_retry_after
from gateways.models import CheckResult, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["ClickatellGateway"]

_NAME: Final = "clickatell"

# Provider error code -> (what the caller must do, what it means). One API numbering.
_ERRORS: Final[dict[int, tuple[type[GatewayError], str]]] = {
    1: (AccountRejected, "Invalid or missing integration API key"),
    2: (AccountRejected, "Account is not active"),
    3: (AccountRejected, "Integration is not active"),
    7: (AccountRejected, "Originating IP not approved"),
    18: (TransientGatewayError, "Internal error"),
    19: (TransientGatewayError, "Internal error, please retry"),
    20: (AccountRejected, "Insufficient account balance"),
    21: (PermanentGatewayError, "Payload data is malformed"),
    22: (PermanentGatewayError, "Maximum messages per request exceeded"),
    23: (PermanentGatewayError, "Invalid or missing parameter"),
    24: (PermanentGatewayError, "Maximum message content size exceeded"),
    25: (RecipientRejected, "Invalid recipient address"),
    26: (RecipientRejected, "Recipient opted out"),
    27: (RecipientRejected, "Recipient not available on channel"),
    28: (RecipientRejected, "Recipient not available on sandbox"),
    38: (AccountRejected, "Channel not active"),
    39: (AccountRejected, "Channel not available on integration"),
    40: (PermanentGatewayError, "Character set not supported"),
    41: (PermanentGatewayError, "Resource does not exist"),
    42: (PermanentGatewayError, "HTTP method not supported"),
    43: (RateLimited, "Rate limit"),
    44: (PermanentGatewayError, "FROM number suspended"),
    45: (PermanentGatewayError, "FROM number not related to integration"),
    46: (PermanentGatewayError, "Demo access expired"),
    100: (PermanentGatewayError, "Maximum message parts exceeded"),
    101: (PermanentGatewayError, "Destination does not support two-way messaging"),
    110: (PermanentGatewayError, "USA: must use a two-way integration"),
    111: (PermanentGatewayError, "USA: must enable STOP/SUBSCRIBE on the integration"),
}

# For replies that carry an error text but no code: lower-case fragment -> code above.
_TEXT_CODES: Final[tuple[tuple[str, int], ...]] = (
    ("api key", 1),
    ("authenticat", 1),
    ("account is not active", 2),
    ("integration is not active", 3),
    ("ip not approved", 7),
    ("please retry", 19),
    ("internal error", 18),
    ("balance", 20),
    ("credit", 20),
    ("destination address", 25),
    ("recipient address", 25),
    ("opted out", 26),
    ("rate limit", 43),
)


def _code_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _text_of(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class ClickatellGateway(SmsGateway):
    """Clickatell Platform SMS API (REST ``/messages``, integration API key).

    ::

        account field   Clickatell name
        -------------   ---------------
        password        integration API key (sent raw in Authorization)
        sender          from (a number registered on the integration)
        url             base URL (default https://platform.clickatell.com)
        account_id      not used
        user_id         not used

    Our ``client_ref`` travels as ``clientMessageId`` and comes back in status callbacks.
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="Clickatell Platform SMS API (REST /messages, integration API key)",
        url="https://platform.clickatell.com",
        password_required=True,
        field_names={"password": "integration API key", "sender": "from"},
        # The Platform splits and encodes itself; its part limit is undocumented (we assume 10)
        # and its rate limit too (error 43 exists, the number does not).
        capabilities=Capabilities(
            unicode=True, max_segments=10, concatenates=True, default_rate_per_s=50.0
        ),
    )

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": self.account.secret("password") or "",
            "Accept": "application/json",
        }

    def _secrets(self, sms: OutboundSms | None = None) -> tuple[str, ...]:
        """What a reply must never quote into an error: the API key and the message text."""
        return (self.account.secret("password") or "", sms.text if sms else "")

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """POST one message to ``/messages`` and return its ``apiMessageId``.

        Raises:
            RateLimited: Error 43.
            TransientGatewayError: Errors 18/19, 5xx, network trouble.
            RecipientRejected: Errors 25-28 (invalid, opted-out or unreachable number).
            AccountRejected: Errors 1/2/3/7/20/38/39, HTTP 401.
            OutcomeUnknown: No usable answer (timeout, dropped connection, a 2xx reply that
                cannot be read or accepts the message without an ``apiMessageId``).
            PermanentGatewayError: Anything else.
        """
        body: dict[str, Any] = {"content": sms.text, "to": [sms.to_digits], "charset": "UTF-8"}
        sender = sms.sender or self.sender
        if sender:
            body["from"] = sender
        if sms.client_ref:
            body["clientMessageId"] = sms.client_ref
        reply = await self.http.request(
            "POST", f"{self.base_url}/messages", json_body=body, headers=self._headers()
        )
        data = reply.json()
        secrets = self._secrets(sms)
        if not 200 <= reply.status < 300:
            raise self._request_error(reply, data, secrets)
        messages = data.get("messages") if isinstance(data, dict) else None
        entry = messages[0] if isinstance(messages, list) and messages else None
        if not isinstance(entry, dict):
            if isinstance(data, dict) and (data.get("errorCode") or data.get("error")):
                raise self._request_error(reply, data, secrets)
            raise _outcome_unknown(reply, "no message entry")
        message_id = entry.get("apiMessageId")
        if entry.get("accepted") is True:
            if isinstance(message_id, str) and message_id:
                return SendReceipt(provider_message_ids=(message_id,))
            raise _outcome_unknown(reply, "accepted without an apiMessageId")
        raise self._classify(
            reply,
            _code_of(entry.get("errorCode")),
            _text_of(entry.get("error"), entry.get("errorDescription")),
            secrets,
        )

    def _request_error(
        self, reply: HttpReply, data: Any, secrets: Iterable[str] = ()
    ) -> GatewayError:
        """The error of a whole request: top-level ``errorCode``/``error``, else the status."""
        code: int | None = None
        text: str | None = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):  # One API shape: {"error": {"code", "description"}}
                code = _code_of(error.get("code"))
                text = _text_of(error.get("description"))
            else:
                code = _code_of(data.get("errorCode"))
                text = _text_of(error, data.get("errorDescription"))
        if reply.status == 401 and code not in _ERRORS:
            code = 1  # the key is wrong whatever the body says
        if code is None and text is None:
            return error_for_status(reply, _NAME)
        return self._classify(reply, code, text, secrets)

    @staticmethod
    def _classify(
        reply: HttpReply, code: int | None, text: str | None, secrets: Iterable[str] = ()
    ) -> GatewayError:
        """One error from a provider code (or, without one, its error text)."""
        if code is None and text is not None:
            lowered = text.lower()
            code = next((c for fragment, c in _TEXT_CODES if fragment in lowered), None)
        known = _ERRORS.get(code) if code is not None else None
        status = reply.status
        provider_code = str(code) if code is not None else None
        said = provider_text(text, secrets=secrets) if text else None
        if known is None:
            if code is None and not 200 <= status < 300:
                return error_for_status(reply, _NAME)  # an unrecognised text: the status decides
            what = f"unknown code {code}" if code is not None else "message not accepted"
            detail = f" ({said})" if said else ""
            return PermanentGatewayError(
                f"{_NAME}: {what}{detail}",
                gateway=_NAME,
                http_status=status,
                provider_code=provider_code,
            )
        kind, meaning = known
        return error_from_rule(
            kind,
            f"{_NAME}: error {code} ({said or meaning})",
            gateway=_NAME,
            http_status=status,
            provider_code=provider_code,
            retry_after_s=parse_retry_after(reply.headers.get("Retry-After")),
        )

    async def test_credentials(self) -> CheckResult:
        """Ask the One API balance endpoint (``GET /v1/balance``) with the integration API key.

        The ``/messages`` generation documents no balance endpoint; the One API of the same
        platform has ``/v1/balance`` (documented by a third-party client only). A balance
        proves the key; a 401 disproves it; a 404 proves nothing either way.
        """
        try:
            reply = await self.http.request(
                "GET", f"{self.base_url}/v1/balance", headers=self._headers()
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        data = reply.json()
        if reply.status == 200 and isinstance(data, dict) and "balance" in data:
            balance = data.get("balance")
            currency = data.get("currency") or ""
            amount = f"{balance:.2f}" if isinstance(balance, int | float) else str(balance)
            return CheckResult(
                True,
                f"balance endpoint answered: {amount} {currency}".rstrip()
                + " (One API GET /v1/balance accepted the integration API key)",
                details={"balance": amount, "currency": str(currency)},
            )
        if reply.status == 404:
            return CheckResult(
                False,
                "GET /v1/balance answered HTTP 404: this integration may predate the One API "
                "balance endpoint, so the API key could not be checked without sending",
            )
        refusal = self._request_error(reply, data, self._secrets())
        reason = refusal.reason
        if isinstance(refusal, AccountRejected):
            return CheckResult(False, f"GET /v1/balance refused the integration API key: {reason}")
        return CheckResult(False, f"GET /v1/balance failed: {reason}")


def _outcome_unknown(reply: HttpReply, what: str) -> OutcomeUnknown:
    # A 2xx without a usable answer: Clickatell may have accepted the message.
    return OutcomeUnknown(
        f"{_NAME}: unreadable reply to a send (HTTP {reply.status}, {what}); "
        "the message may have been accepted",
        gateway=_NAME,
        http_status=reply.status,
    )
