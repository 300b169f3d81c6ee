"""Testing a gateway account, as the origin did: connection, credentials, proxy, a real send.

Each check runs the adapter's own method against the provider (or the sandbox) and comes
back as one row: passed or not, and the reason in plain words. Nothing here prints or
keeps a secret; reasons come from the adapters, which keep secrets out of their errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import aiohttp

from config.settings import Settings
from gateways.base import SmsGateway
from gateways.errors import SmsError
from gateways.http import Timeouts
from gateways.models import GatewayAccount, OutboundSms
from gateways.redaction import mask_number
from gateways.registry import load_gateway

__all__ = ["CHECKS", "Check", "CheckRow", "run_checks"]

Check = Literal["connection", "credentials", "proxy", "send"]
CHECKS: tuple[Check, ...] = ("connection", "credentials", "proxy")

TEST_TEXT = "smsgw test message from gateway account {name}"


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One check's outcome."""

    check: Check
    ok: bool
    reason: str
    skipped: bool = False

    def as_json(self) -> dict[str, Any]:
        """The row for ``--json``."""
        return asdict(self)


async def run_checks(
    account: GatewayAccount, settings: Settings, checks: list[Check], *, to: str | None = None
) -> list[CheckRow]:
    """Run ``checks`` against ``account``'s provider, in order.

    Args:
        account: The account (secrets in clear, as the adapter needs them).
        settings: Timeouts and enabled gateway types.
        checks: Which checks; ``send`` needs ``to``.
        to: The recipient of the test message, E.164 (already validated).
    """
    timeouts = Timeouts(
        connect_s=settings.provider_connect_timeout_s,
        total_s=settings.provider_timeout_s,
        deadline_s=settings.provider_timeout_s + settings.provider_connect_timeout_s,
    )
    cls = load_gateway(account.gateway, settings.gateways_enabled)
    rows: list[CheckRow] = []
    async with aiohttp.ClientSession() as session:
        gateway = cls(account, session, timeouts=timeouts)
        try:
            for check in checks:
                rows.append(await _run(gateway, check, to))
        finally:
            await gateway.aclose()
    return rows


async def _run(gateway: SmsGateway, check: Check, to: str | None) -> CheckRow:
    if check == "send":
        return await _send(gateway, to)
    method = {
        "connection": gateway.test_connection,
        "credentials": gateway.test_credentials,
        "proxy": gateway.test_proxy,
    }[check]
    try:
        result = await method()
    except SmsError as error:  # an adapter that raises instead of answering a CheckResult
        return CheckRow(check, False, str(error))
    return CheckRow(check, result.ok, result.reason, result.skipped)


async def _send(gateway: SmsGateway, to: str | None) -> CheckRow:
    if to is None:
        raise ValueError("the send check needs a recipient")
    sms = OutboundSms(
        to=to,
        text=TEST_TEXT.format(name=gateway.account.name),
        sender=gateway.account.sender,
    )
    try:
        receipt = await gateway.send(sms)
    except SmsError as error:
        return CheckRow("send", False, f"to {mask_number(to)}: {error}")
    ids = ", ".join(receipt.provider_message_ids)
    status = f", status {receipt.status}" if receipt.status else ""
    return CheckRow("send", True, f"accepted for {mask_number(to)}: message id(s) {ids}{status}")
