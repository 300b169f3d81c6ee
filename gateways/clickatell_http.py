"""Clickatell legacy HTTP API (``/http/sendmsg``), the API of the origin's example.

"Developers' Central" accounts authenticate every call with ``user``, ``password`` and
``api_id`` (we never use sessions, so a password change cannot leave one stale) and get
plain-text replies: ``ID: <apimsgid>`` or ``ERR: <code>, <description>``.

Encoding is the client's job here: UCS-2 text goes as UTF-16BE hex with ``unicode=1``
(``"Hi"`` -> ``00480069``; characters beyond the BMP as surrogate pairs), and a text longer
than one SMS needs ``concat=<parts>`` or the gateway refuses it (error 113).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from typing import ClassVar, Final, cast

from pydantic import BaseModel, ConfigDict, Field

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
from gateways.http import HttpReply, error_for_status
from gateways.models import CheckResult, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["ClickatellHttpGateway", "climsgid_for", "ucs2_hex"]

_NAME: Final = "clickatell-http"

# ``ERR:`` code -> (what the caller must do, what it means). providers.md §2A; the
# retry judgements are ours (114: a route may come back, so retry within the budget;
# 003/005: this adapter never uses sessions, so a session error means the account or the
# URL is not what we think, and retrying cannot fix it).
_ERRORS: Final[dict[str, tuple[type[GatewayError], str]]] = {
    "001": (AccountRejected, "Authentication failed"),
    "002": (AccountRejected, "Unknown username or password"),
    "003": (AccountRejected, "Session ID expired, though no session is used; check the account"),
    "004": (AccountRejected, "Account frozen"),
    "005": (AccountRejected, "Missing session ID; check the account's credentials and URL"),
    "007": (AccountRejected, "IP lockdown violation"),
    "100": (PermanentGatewayError, "Data malformed"),
    "101": (PermanentGatewayError, "Invalid or missing parameters"),
    "102": (PermanentGatewayError, "Invalid user data header"),
    "105": (RecipientRejected, "Invalid destination address"),
    "106": (PermanentGatewayError, "Invalid source address"),
    "107": (PermanentGatewayError, "Empty message"),
    "108": (AccountRejected, "Invalid or missing API ID"),
    "113": (PermanentGatewayError, "Maximum message parts exceeded"),
    "114": (TransientGatewayError, "Cannot route message"),
    "115": (PermanentGatewayError, "Message expired"),
    "116": (PermanentGatewayError, "Invalid Unicode data"),
    "120": (PermanentGatewayError, "Invalid delivery time"),
    "121": (RecipientRejected, "Destination mobile number blocked"),
    "122": (RecipientRejected, "Destination mobile opted out"),
    "123": (PermanentGatewayError, "Invalid sender ID"),
    "128": (RecipientRejected, "Number delisted"),
    "130": (RateLimited, "Maximum MT limit exceeded"),
    "301": (AccountRejected, "No credit left"),
    "302": (AccountRejected, "Max allowed credit"),
    "901": (TransientGatewayError, "Internal error, please retry"),
}

# "ERR: 105, Invalid Destination Address" (multi-recipient replies add " To: <msisdn>").
_ERR_LINE: Final = re.compile(r"ERR:\s*(\d+)\s*,?\s*(.*?)(?:\s+To:\s*\S*)?\s*$")
_ID_LINE: Final = re.compile(r"ID:\s*([0-9A-Za-z]+)")
_CREDIT_LINE: Final = re.compile(r"Credit:\s*(-?[0-9.]+)")
_UNTIL: Final = re.compile(r"until\s+(\d{9,})")
_MAX_CLIMSGID: Final = 32
_DEFAULT_CAP_WAIT_S: Final = 60.0  # error 130 without a readable "until" timestamp


def ucs2_hex(text: str) -> str:
    """Return ``text`` as the legacy API wants UCS-2 text: UTF-16BE, upper-case hex.

    Characters beyond the Basic Multilingual Plane become surrogate pairs, e.g.
    ``"Hi"`` -> ``"00480069"`` and ``"😀"`` -> ``"D83DDE00"``.
    """
    return text.encode("utf-16-be").hex().upper()


def climsgid_for(client_ref: str | None) -> str | None:
    """Our reference as a valid ``climsgid`` (at most 32 alphanumerics), or ``None``.

    An alphanumeric reference that fits is kept; any other becomes the 32-hex BLAKE2b
    digest of it, so references that differ only in punctuation stay distinct and the
    value can be recomputed when a callback brings it back.
    """
    if not client_ref:
        return None
    if client_ref.isascii() and client_ref.isalnum() and len(client_ref) <= _MAX_CLIMSGID:
        return client_ref
    return hashlib.blake2b(client_ref.encode("utf-8"), digest_size=16).hexdigest()


class ClickatellHttpOptions(BaseModel):
    """Provider extras of a legacy Clickatell account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callback: int = Field(default=2, ge=0, le=7)
    """Which statuses Clickatell pushes to the callback URL set for the API in Developers'
    Central: 0 none, 1 intermediate, 2 final (the default: delivery receipts), 3 both,
    4 errors, 5 = 1+4, 6 = 2+4, 7 all."""


class ClickatellHttpGateway(SmsGateway):
    """Clickatell legacy HTTP API (``api.clickatell.com/http``, Developers' Central).

    ::

        account field   Clickatell name
        -------------   ---------------
        account_id      api_id (the HTTP API's id in Developers' Central)
        user_id         user
        password        password
        sender          from (registered sender id or two-way number)
        url             base URL (default https://api.clickatell.com)

    ``options.callback`` sets the ``callback`` level (see :class:`ClickatellHttpOptions`).
    Our ``client_ref`` travels as ``climsgid`` (see :func:`climsgid_for`).
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="Clickatell legacy HTTP API (/http/sendmsg, user + password + api_id)",
        url="https://api.clickatell.com",
        account_id_required=True,
        user_id_required=True,
        password_required=True,
        field_names={
            "account_id": "API ID",
            "user_id": "user",
            "password": "password",
            "sender": "from",
        },
        # concat allows "up to a maximum of 3" parts (Clickatell's HTTP API overview);
        # "about 100 messages per second" is the documented ceiling, we start at half.
        capabilities=Capabilities(
            unicode=True, max_segments=3, concatenates=True, default_rate_per_s=50.0
        ),
    )
    Options: ClassVar[type[BaseModel]] = ClickatellHttpOptions

    def _auth(self) -> dict[str, str]:
        return {
            "user": self.account.user_id or "",
            "password": self.account.secret("password") or "",
            "api_id": self.account.account_id or "",
        }

    def _secrets(self, sms: OutboundSms | None = None) -> tuple[str, ...]:
        """What a reply must never quote into an error: the password and the message text."""
        return (self.account.secret("password") or "", sms.text if sms else "")

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """POST one message to ``/http/sendmsg`` and return its ``apimsgid``.

        Raises:
            RateLimited: Error 130, until the timestamp the gateway names.
            TransientGatewayError: Errors 114/901, 5xx, network trouble.
            OutcomeUnknown: No usable answer (timeout, dropped connection, a 2xx reply
                without an ``ID:`` line): the message may have been accepted.
            RecipientRejected: Errors 105/121/122/128.
            AccountRejected: Errors 001/002/003/004/005/007/108/301/302.
            PermanentGatewayError: Anything else.
        """
        options = cast(ClickatellHttpOptions, self.options)
        form = self._auth()
        form["to"] = sms.to_digits
        if sms.encoding == "UCS-2":
            form["text"] = ucs2_hex(sms.text)
            form["unicode"] = "1"
        else:
            form["text"] = sms.text
        if sms.segments > 1:
            form["concat"] = str(sms.segments)
        sender = sms.sender or self.sender
        if sender:
            form["from"] = sender
        climsgid = climsgid_for(sms.client_ref)
        if climsgid:
            form["climsgid"] = climsgid
        form["callback"] = str(options.callback)
        reply = await self.http.request("POST", f"{self.base_url}/http/sendmsg", data=form)
        lines = [line.strip() for line in reply.text.splitlines() if line.strip()]
        first = lines[0] if lines else ""
        if first.startswith("ERR"):
            raise _classify(reply, first, self._secrets(sms))
        if not 200 <= reply.status < 300:
            raise error_for_status(reply, _NAME)
        ids = tuple(m.group(1) for line in lines if (m := _ID_LINE.match(line)))
        if not ids:
            raise OutcomeUnknown(
                f"{_NAME}: unreadable reply to sendmsg (HTTP {reply.status}, no ID line); "
                "the message may have been accepted",
                gateway=_NAME,
                http_status=reply.status,
            )
        return SendReceipt(provider_message_ids=ids)

    async def test_credentials(self) -> CheckResult:
        """Ask ``/http/getbalance`` with the account's user, password and API ID."""
        try:
            reply = await self.http.request(
                "POST", f"{self.base_url}/http/getbalance", data=self._auth()
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        text = reply.text.strip()
        credit = _CREDIT_LINE.match(text)
        if reply.status == 200 and credit:
            return CheckResult(
                True,
                f"balance endpoint answered: {credit.group(1)} credits",
                details={"credits": credit.group(1)},
            )
        if text.startswith("ERR"):
            refusal = _classify(reply, text.splitlines()[0], self._secrets())
        elif reply.status != 200:
            refusal = error_for_status(reply, _NAME)
        else:
            return CheckResult(False, f"getbalance gave an unreadable reply (HTTP {reply.status})")
        reason = refusal.reason
        if isinstance(refusal, AccountRejected):
            return CheckResult(False, f"getbalance refused the credentials: {reason}")
        return CheckResult(False, f"getbalance failed: {reason}")


def _classify(reply: HttpReply, line: str, secrets: Iterable[str] = ()) -> GatewayError:
    """One error from an ``ERR: <code>, <description>`` line (the recipient is never kept)."""
    match = _ERR_LINE.match(line)
    if match is None:
        return PermanentGatewayError(
            f"{_NAME}: unreadable error reply (HTTP {reply.status})",
            gateway=_NAME,
            http_status=reply.status,
        )
    code = match.group(1).zfill(3)
    description = match.group(2).strip()
    said = provider_text(description, secrets=secrets)
    known = _ERRORS.get(code)
    if known is None:
        detail = f" ({said})" if said else ""
        return PermanentGatewayError(
            f"{_NAME}: unknown code {code}{detail}",
            gateway=_NAME,
            http_status=reply.status,
            provider_code=code,
        )
    kind, meaning = known
    until = _UNTIL.search(description)  # error 130's "until <unix time>"
    wait_s = float(until.group(1)) - time.time() if until else _DEFAULT_CAP_WAIT_S
    return error_from_rule(
        kind,
        f"{_NAME}: ERR {code} ({said or meaning})",
        gateway=_NAME,
        http_status=reply.status,
        provider_code=code,
        retry_after_s=max(1.0, wait_s),
    )
