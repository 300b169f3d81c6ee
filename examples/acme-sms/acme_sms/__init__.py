"""ACME SMS for smsgw: the worked example of a third-party gateway plugin.

ACME SMS is a fictional provider with a small JSON API (see ``README.md`` next to this
package, and :mod:`acme_sms.fake_server`, which imitates it for tests). The package shows
everything a plugin needs:

* a :class:`~gateways.base.SmsGateway` subclass with ``metadata`` and a docstring that maps
  the generic account fields onto the provider's names;
* an ``Options`` model for provider extras;
* one table that classifies the provider's error codes into smsgw's error tree;
* an entry point in ``pyproject.toml`` (``acme = "acme_sms:AcmeGateway"``);
* a fake of the provider's API, so the plugin's tests (and smsgw's conformance kit,
  :mod:`gateways.testing`) exercise real HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict

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

__all__ = ["ERRORS", "AcmeGateway", "AcmeOptions"]

_NAME = "acme"

# ACME error code -> (what it means to smsgw, a short reason). The retry decision lives in
# the class: a throttle waits, an internal error retries, a bad number or key never does.
ERRORS: dict[str, tuple[type[GatewayError], str]] = {
    "throttled": (RateLimited, "too many requests"),
    "internal": (TransientGatewayError, "internal error"),
    "unavailable": (TransientGatewayError, "service unavailable"),
    "unauthorized": (AccountRejected, "API key refused"),
    "insufficient_credit": (AccountRejected, "no credit left"),
    "suspended": (AccountRejected, "account suspended"),
    "invalid_recipient": (RecipientRejected, "invalid recipient"),
    "recipient_opted_out": (RecipientRejected, "recipient opted out"),
    "invalid_request": (PermanentGatewayError, "invalid request"),
}


class AcmeOptions(BaseModel):
    """Provider extras, read from ``account.options``."""

    # Attribute docstrings become the schema's descriptions (``smsgw gateways describe``).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    priority: Literal["normal", "high"] = "normal"
    """ACME's delivery priority; ``high`` costs more and suits login codes."""


class AcmeGateway(SmsGateway):
    """ACME SMS JSON API (fictional; the example plugin).

    ::

        account field   ACME name
        -------------   ---------
        password        API key (sent as ``Authorization: Bearer <key>``)
        sender          from
        url             API base URL (default https://api.acme-sms.example)

    ``options``: ``priority`` (``normal`` or ``high``).
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="ACME SMS (example plugin)",
        url="https://api.acme-sms.example",
        password_required=True,
        field_names={"password": "API key", "sender": "from", "url": "API base URL"},
        capabilities=Capabilities(
            unicode=True, max_segments=6, concatenates=True, default_rate_per_s=5.0
        ),
    )
    Options: ClassVar[type[BaseModel]] = AcmeOptions

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.account.secret('password') or ''}",
            "Accept": "application/json",
        }

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """POST the message to ``/v1/messages``; ACME answers 201 with one id per message."""
        options = cast(AcmeOptions, self.options)  # the base class parsed it with Options
        body: dict[str, Any] = {"to": sms.to, "text": sms.text, "priority": options.priority}
        sender = sms.sender or self.account.sender
        if sender:
            body["from"] = sender
        if sms.client_ref:
            body["reference"] = sms.client_ref
        reply = await self.http.request(
            "POST", f"{self.base_url}/v1/messages", json_body=body, headers=self._headers()
        )
        if reply.status not in (200, 201):
            raise self._error(reply)
        data = reply.json()
        message_id = data.get("id") if isinstance(data, dict) else None
        if not message_id:
            # Accepted or not, we cannot tell: the worker decides whether to risk a resend.
            raise OutcomeUnknown(
                f"{_NAME}: answered HTTP {reply.status} without a message id; "
                "the message may have been accepted",
                gateway=_NAME,
                http_status=reply.status,
            )
        parts = data.get("parts")
        return SendReceipt(
            provider_message_ids=(str(message_id),),
            segments=parts if isinstance(parts, int) else None,
            status=str(data["status"]) if data.get("status") else None,
        )

    async def test_credentials(self) -> CheckResult:
        """Read the balance from ``/v1/account``: proves the key without sending anything."""
        try:
            reply = await self.http.request(
                "GET", f"{self.base_url}/v1/account", headers=self._headers()
            )
            if reply.status != 200:
                raise self._error(reply)
        except GatewayError as error:
            return CheckResult(False, error.reason)
        data = reply.json()
        if not isinstance(data, dict) or "balance" not in data:
            return CheckResult(False, "the account endpoint answered without a balance")
        currency = data.get("currency", "")
        return CheckResult(True, f"balance endpoint answered: {data['balance']} {currency}".strip())

    def _error(self, reply: HttpReply) -> GatewayError:
        """The error for a non-success reply: ACME's code through ``ERRORS``, else the status."""
        data = reply.json()
        error = data.get("error") if isinstance(data, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, str):
            return error_for_status(reply, _NAME)
        if code not in ERRORS:
            # Provider text goes into a message only through provider_text (it may quote
            # the number, the text or the key back).
            shown = provider_text(code, secrets=(self.account.secret("password") or "",))
            return PermanentGatewayError(
                f"{_NAME}: unknown code {shown} (HTTP {reply.status})",
                gateway=_NAME,
                http_status=reply.status,
                provider_code=code,
            )
        kind, reason = ERRORS[code]
        return error_from_rule(
            kind,
            f"{_NAME}: {code} ({reason})",
            gateway=_NAME,
            http_status=reply.status,
            provider_code=code,
            retry_after_s=parse_retry_after(reply.headers.get("Retry-After")),
        )
