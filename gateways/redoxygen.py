"""Red Oxygen: the HTTP API ``sms.dll?Action=SendSMS`` (plain-text result codes).

Red Oxygen documents little beyond the request fields, so several behaviours here are our
own choices; each is marked *[choice]* and explained where it is made:

* **Result codes.** The reply is plain text whose first four characters are a numeric
  result code, ``0000`` meaning success. No other code is documented publicly: the table
  :data:`RESULT_CODES` holds the codes *our sandbox invents*, clearly labelled, and any other
  non-zero code is treated as permanent (the judgement in our provider notes).
* **Message ids.** A success reply carries no documented message id, and Red Oxygen has no
  delivery-receipt API to correlate one with. The receipt therefore holds a *synthetic* id,
  ``redoxygen:<client_ref>`` (or ``redoxygen:<random hex>`` without a client reference):
  it identifies our send, not a provider record.
* **Unicode.** Not documented, so the capabilities say ``unicode=False`` and :meth:`send`
  refuses text outside GSM-7 before any request rather than risk it arriving garbled.
* **Length.** Red Oxygen silently truncates a message beyond 765 characters. 765 is 5
  concatenated parts of 153 septets, so we count septets (``€`` counts two) and refuse a
  longer text before sending: a provider must never cut an access code off silently.
* **Credential check.** There is no balance or verify call: :meth:`test_credentials` says
  so and checks only what it can without sending.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import ClassVar, Final

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.encoding import units
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

__all__ = ["MAX_MESSAGE_SEPTETS", "RESULT_CODES", "RedOxygenGateway"]

_NAME: Final = "redoxygen"
SUCCESS: Final = "0000"
MAX_MESSAGE_SEPTETS: Final = 765
"""Red Oxygen's documented maximum; it truncates anything longer without saying so."""
_MAX_TEXT_IN_ERROR: Final = 120

# Every code except 0000 is INVENTED by our sandbox (Red Oxygen publishes none); the classes
# follow our judgement: credentials/credit -> the account, the number -> the recipient,
# server trouble -> retry, anything else -> permanent.
RESULT_CODES: Final[dict[str, tuple[type[GatewayError], str]]] = {
    "1000": (PermanentGatewayError, "unknown action"),
    "1001": (AccountRejected, "invalid account id"),
    "1002": (AccountRejected, "invalid email"),
    "1004": (AccountRejected, "invalid password"),
    "2001": (RecipientRejected, "invalid recipient"),
    "2002": (PermanentGatewayError, "empty message"),
    "2003": (RecipientRejected, "recipient barred"),
    "3001": (AccountRejected, "insufficient credits"),
    "9000": (TransientGatewayError, "server error"),
    "9001": (RateLimited, "too many requests"),
}
"""Result code -> (error class, what it means). Invented codes: see the module docstring."""


class RedOxygenGateway(SmsGateway):
    """Red Oxygen's HTTP API: ``POST {url}/sms.dll?Action=SendSMS`` with a form body.

    ::

        account field   Red Oxygen name
        -------------   ---------------
        account_id      AccountId (e.g. CI00012345)
        user_id         Email (the user's email address)
        password        Password
        sender          (not sent: the HTTP API has no sender field)
        url             base URL (default https://www2.redoxygen.net)

    ``Action=SendSMS`` stays in the query string; everything else, the password included,
    travels in the form body.
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="Red Oxygen HTTP API (sms.dll?Action=SendSMS); GSM-7 only, no receipts",
        url="https://www2.redoxygen.net",
        account_id_required=True,
        user_id_required=True,
        password_required=True,
        field_names={"account_id": "AccountId", "user_id": "Email", "password": "Password"},
        capabilities=Capabilities(
            unicode=False,  # [choice] Unicode sending is not documented
            max_segments=5,  # 765 septets = 5 parts of 153
            concatenates=True,
            default_rate_per_s=5.0,  # [choice] no rate limit is documented; stay modest
        ),
    )

    @property
    def send_url(self) -> str:
        """Where messages are posted (``Action`` goes in the query separately)."""
        return f"{self.base_url}/sms.dll"

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Send one piece; see the module docstring for the choices made here.

        Raises:
            PermanentGatewayError: The text is not GSM-7 or longer than 765 septets (nothing
                is sent), or Red Oxygen refused it (``RecipientRejected`` / ``AccountRejected``
                for the invented codes that mean so).
            TransientGatewayError: Network trouble or a server error (``RateLimited`` when
                throttled).
            OutcomeUnknown: No usable answer (timeout, dropped connection, a 2xx reply
                without a result code): the message may have been sent.
        """
        self._check_text(sms)
        form = {
            "AccountId": self.account.account_id or "",
            "Email": self.account.user_id or "",
            "Password": self.account.secret("password") or "",
            "Recipient": sms.to_digits,
            "Message": sms.text,
        }
        reply = await self.http.request(
            "POST", self.send_url, params={"Action": "SendSMS"}, data=form
        )
        raise_for_reply(reply, secrets=(form["Password"], sms.text))
        reference = sms.client_ref or uuid.uuid4().hex
        return SendReceipt(provider_message_ids=(f"{_NAME}:{reference}",))

    def _check_text(self, sms: OutboundSms) -> None:
        if sms.encoding == "UCS-2":
            raise PermanentGatewayError(
                f"{_NAME}: Red Oxygen documents no Unicode sending; text outside the GSM-7 "
                "alphabet was not sent (it could arrive garbled)",
                gateway=_NAME,
                request_sent=False,
            )
        septets = units(sms.text, "GSM-7")
        if septets > MAX_MESSAGE_SEPTETS:
            raise PermanentGatewayError(
                f"{_NAME}: the text needs {septets} septets; Red Oxygen silently truncates "
                f"beyond {MAX_MESSAGE_SEPTETS}, so it was not sent",
                gateway=_NAME,
                request_sent=False,
            )

    async def test_credentials(self) -> CheckResult:
        """Say plainly that Red Oxygen offers no credential check; check the email's shape.

        Red Oxygen's HTTP API has no balance, verify or account call, and a send is the only
        request that authenticates. A check that cannot check must not claim success, so
        the result is ``ok=False, skipped=True`` with the reason; an ``Email`` that is not an
        email address is reported as a plain failure.
        """
        email = self.account.user_id or ""
        local, _, domain = email.partition("@")
        if not (local and "." in domain):
            return CheckResult(
                False,
                "user_id (Email) is not an email address; Red Oxygen expects the user's email",
            )
        return CheckResult(
            False,
            "not checked: Red Oxygen's HTTP API has no credential, balance or verify call; "
            "only a real send to a number you own proves AccountId, Email and Password",
            skipped=True,
        )


def raise_for_reply(reply: HttpReply, *, secrets: Iterable[str] = ()) -> None:
    """Return on a ``0000`` reply, else raise the error its result code (or status) means.

    ``0000`` is Red Oxygen's own word that the message was accepted, so it counts whatever
    the HTTP status. A 2xx reply without a result code leaves the outcome unknown.

    Args:
        reply: The send's reply.
        secrets: Values the reply's text must not carry into an error (password, text).
    """
    text = reply.text.strip()
    code = text[:4] if len(text) >= 4 and text[:4].isdigit() else None
    if code == SUCCESS:
        return
    if code is not None:
        said = provider_text(text[4:], secrets=secrets, limit=_MAX_TEXT_IN_ERROR)
        detail = f"{_NAME}: result {code} ({said or 'no text'})"
        error_class, _meaning = RESULT_CODES.get(code, (PermanentGatewayError, ""))
        if code not in RESULT_CODES:
            detail += f": unknown code {code}"
        raise error_from_rule(
            error_class,
            detail,
            gateway=_NAME,
            http_status=reply.status,
            provider_code=code,
            retry_after_s=parse_retry_after(reply.headers.get("Retry-After")),
        )
    if not 200 <= reply.status < 300:
        raise error_for_status(reply, _NAME, "Red Oxygen")
    raise OutcomeUnknown(
        f"{_NAME}: HTTP {reply.status} without a 4-digit result code; "
        "the message may have been accepted",
        gateway=_NAME,
        http_status=reply.status,
    )
