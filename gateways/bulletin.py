"""Bulletin Connect: ``POST /api/1/sms/out`` with form fields, answered by HTTP status only.

Success is ``204 No Content``; any other 2xx is taken as success too *[choice]*, since
Bulletin answers by status alone and a 2xx says the message was taken. Bulletin returns no
id of its own but echoes the client's ``messageId`` (as ``inReplyToId``) in the receipts it
serves for polling, so the ``messageId`` we send *is* the message id in the receipt.
Choices made where Bulletin's documentation is silent, each marked *[choice]* below:

* **messageId.** ``client_ref`` when it fits Bulletin's 36 characters; a longer one becomes a
  UUID derived from it (the same piece always gets the same id); none gets a random UUID.
* **Unicode.** ``contentType=text/plain; charset=UTF-16`` marks a UCS-2 message. The form,
  like every form, is UTF-8 percent-encoded; nothing says the body must be re-encoded, so it
  is sent as text and ``contentType`` tells Bulletin to deliver it as UCS-2.
* **Throttling.** Bulletin documents no rate limit. A ``429``, or a ``503`` with
  ``Retry-After``, is taken as a throttle and honours ``Retry-After``; our sandbox answers
  ``429`` (invented).
* **Error text.** Bulletin puts it in the HTTP status line or an HTML ``<h1>``: the
  ``<h1>`` (or a short plain body) is read, else the status line's text
  (:attr:`HttpReply.reason`). A ``400`` whose text names the destination is a rejected
  recipient.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import ClassVar, Final
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    GatewayError,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    error_from_rule,
)
from gateways.http import HttpReply, error_for_status, parse_retry_after
from gateways.models import CheckResult, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["HTTP_STATUSES", "UNICODE_CONTENT_TYPE", "BulletinGateway"]

_NAME: Final = "bulletin"
UNICODE_CONTENT_TYPE: Final = "text/plain; charset=UTF-16"
_MAX_MESSAGE_ID: Final = 36
_MAX_TEXT_IN_ERROR: Final = 120
# A fixed namespace, so a long client_ref always maps to the same messageId.
_MESSAGE_ID_NAMESPACE: Final = uuid.UUID("4f1d7a52-3f0e-4b8e-9a53-6c2b1f0d8e11")
_H1: Final = re.compile(r"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAG: Final = re.compile(r"<[^>]+>")
_NAMES_DESTINATION: Final = re.compile(r"destination|recipient|msisdn", re.IGNORECASE)

HTTP_STATUSES: Final[dict[int, tuple[type[GatewayError], str]]] = {
    400: (PermanentGatewayError, "invalid request"),
    401: (AccountRejected, "unauthorised: wrong userId or password"),
    403: (AccountRejected, "forbidden: the account may not do this"),
    405: (PermanentGatewayError, "wrong method"),
    429: (RateLimited, "too many requests"),  # [choice] undocumented; our sandbox's throttle
    500: (TransientGatewayError, "internal error"),
}
"""HTTP status of a send -> (error class, what it means); others via ``error_for_status``."""


class BulletinOptions(BaseModel):
    """Bulletin extras in ``account.options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_code: str | None = Field(default=None, min_length=1)
    """Bulletin's ``rateCode`` (premium/billing route); replaces ``from``, which it excludes."""


class BulletinGateway(SmsGateway):
    """Bulletin Connect's HTTP API (``/api/1/sms/out``, receipts by polling).

    ::

        account field   Bulletin name
        -------------   -------------
        user_id         userId
        password        password
        sender          from (must be enabled on Connect accounts)
        url             base URL (default https://service.bulletinconnect.net)
        options         rate_code -> rateCode (then no from is sent)
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="Bulletin Connect HTTP API (/api/1/sms/out); receipts by polling",
        url="https://service.bulletinconnect.net",
        user_id_required=True,
        password_required=True,
        field_names={"user_id": "userId", "password": "password", "sender": "from"},
        capabilities=Capabilities(
            unicode=True,
            max_segments=10,  # [choice] fragmentationLimit's ceiling is not documented
            concatenates=True,
            default_rate_per_s=10.0,  # [choice] no rate limit is documented
        ),
    )
    Options: ClassVar[type[BaseModel]] = BulletinOptions

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Send one piece; the receipt's id is the ``messageId`` we chose.

        Raises:
            PermanentGatewayError: Bulletin refused the request (``RecipientRejected`` when
                its text names the destination, ``AccountRejected`` on 401/403).
            TransientGatewayError: Network trouble or a 5xx (``RateLimited`` when throttled).
        """
        message_id = message_id_for(sms.client_ref)
        form = {
            "userId": self.account.user_id or "",
            "password": self.account.secret("password") or "",
            "to": sms.to_digits,
            "body": sms.text,
            "messageId": message_id,
            "fragmentationLimit": str(sms.segments),
        }
        rate_code = self.options.rate_code if isinstance(self.options, BulletinOptions) else None
        sender = sms.sender or self.sender
        if rate_code:
            form["rateCode"] = rate_code
        elif sender:
            form["from"] = sender
        if sms.encoding == "UCS-2":
            form["contentType"] = UNICODE_CONTENT_TYPE
        reply = await self.http.request("POST", f"{self.base_url}/api/1/sms/out", data=form)
        if not 200 <= reply.status < 300:
            raise error_for_send(reply, secrets=(form["password"], sms.text))
        return SendReceipt(provider_message_ids=(message_id,), segments=sms.segments)

    async def test_credentials(self) -> CheckResult:
        """Ask for the queue depth (``GET /api/1/sms/queue``): read-only, needs valid credentials.

        Bulletin takes ``userId``/``password`` in the query string here (GET only); the HTTP
        layer never puts a URL into an error message.
        """
        params = {
            "userId": self.account.user_id or "",
            "password": self.account.secret("password") or "",
        }
        try:
            reply = await self.http.request(
                "GET", f"{self.base_url}/api/1/sms/queue", params=params
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        if reply.status == 200:
            counts = parse_qs(reply.text)
            receipts = counts.get("statusCount", ["?"])[0]
            replies = counts.get("inCount", ["?"])[0]
            return CheckResult(
                True,
                f"queue endpoint accepted the credentials: {receipts} receipt(s) and "
                f"{replies} reply(ies) waiting",
                details={"statusCount": receipts, "inCount": replies},
            )
        refused = error_for_send(reply, secrets=(params["password"],)).reason
        return CheckResult(False, f"credentials not confirmed: queue endpoint answered {refused}")


def message_id_for(client_ref: str | None) -> str:
    """The ``messageId`` to send: ``client_ref`` if it fits 36 characters, else a UUID."""
    if not client_ref:
        return str(uuid.uuid4())
    if len(client_ref) <= _MAX_MESSAGE_ID:
        return client_ref
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, client_ref))


def error_text(reply: HttpReply) -> str:
    """Bulletin's error text from an HTML ``<h1>`` (or a short plain body), one line."""
    body = reply.text
    found = _H1.search(body)
    raw = found.group(1) if found else ("" if "<" in body else body)
    return " ".join(_TAG.sub(" ", raw).split())[:_MAX_TEXT_IN_ERROR]


def error_for_send(reply: HttpReply, *, secrets: Iterable[str] = ()) -> GatewayError:
    """The error a non-2xx reply of Bulletin means.

    Args:
        reply: The reply.
        secrets: Values the error text must not carry (the password, the message text).
    """
    status = reply.status
    said = error_text(reply) or reply.reason
    shown = provider_text(said, secrets=secrets, limit=_MAX_TEXT_IN_ERROR)
    detail = f"{_NAME}: HTTP {status}" + (f" ({shown})" if shown else "")
    retry_after = reply.headers.get("Retry-After")
    error_class: type[GatewayError]
    if status == 429 or (status == 503 and retry_after):
        error_class = RateLimited
    elif status in HTTP_STATUSES:
        error_class = HTTP_STATUSES[status][0]
    else:
        return error_for_status(reply, _NAME, "Bulletin")
    if status == 400 and _NAMES_DESTINATION.search(said):
        error_class = RecipientRejected
    return error_from_rule(
        error_class,
        detail,
        gateway=_NAME,
        http_status=status,
        retry_after_s=parse_retry_after(retry_after),
    )
