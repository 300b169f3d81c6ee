"""The conformance kit: what every gateway adapter must do, checked the same way for all.

smsgw runs it over every registered gateway (``tests/test_conformance.py``); a plugin runs it
against itself. Each ``check_*`` function raises :class:`ConformanceError` (an
``AssertionError``, so pytest reports it as a failed assertion) saying what is wrong.

=============================  ==========================================================
check                          what it proves
=============================  ==========================================================
:func:`check_metadata`         name, description, URL, field names, capabilities, docstring
:func:`check_options_schema`   ``Options`` forbids unknown keys and its JSON schema renders
:func:`check_required_fields`  each required field, left empty, is refused by name
:func:`check_clone_independence`  ``clone()`` changes the copy only
:func:`check_no_secrets`       no secret in reprs or in the errors you hand it
:func:`check_unreachable`      a refused connection is a ``TransientGatewayError``
:func:`check_timeout`          a request that gets no answer is ``OutcomeUnknown``
:func:`check_proxy_refusal`    a proxy's 407 (plain HTTP and CONNECT) is ``AccountRejected``
:func:`check_failures_hold_no_secrets`  the three failures above, through
                               :func:`check_no_secrets` (causes and contexts included)
:func:`check_diagnostics`      the three ``test_*`` checks answer a reason and never raise
:func:`check_send_outcomes`    success, transient and permanent sends (needs your fake
                               provider: you arrange the faults)
=============================  ==========================================================

The server-free checks come ready-made as test methods in :class:`GatewayConformance`.
A plugin's test module, in full::

    from gateways.models import GatewayAccount
    from gateways.testing import GatewayConformance

    from acme_sms import AcmeGateway


    class TestAcmeConformance(GatewayConformance):
        gateway_class = AcmeGateway

        def valid_account(self) -> GatewayAccount:
            return GatewayAccount(name="t", gateway="acme", user_id="key", password="s3cret-k")

Then, in an async test against your fake provider (here ``acme_fake``), the send mapping::

    await check_send_outcomes(
        AcmeGateway(account, http_session),
        success_sms=OutboundSms(to="+447700900123", text="hello"),
        transient_trigger=lambda gateway: acme_fake.fail_next(),  # async: answers 500 next
        permanent_trigger=wrong_password,  # async: returns gateway.clone(password="wrong")
        permanent_error=AccountRejected,
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel

from gateways.base import GENERIC_FIELDS, Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    TransientGatewayError,
)
from gateways.http import Timeouts, basic_auth_header
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt

__all__ = [
    "ConformanceError",
    "GatewayConformance",
    "SendOutcomes",
    "Trigger",
    "check_clone_independence",
    "check_diagnostics",
    "check_failures_hold_no_secrets",
    "check_metadata",
    "check_no_secrets",
    "check_options_schema",
    "check_proxy_refusal",
    "check_required_fields",
    "check_send_outcomes",
    "check_timeout",
    "check_unreachable",
    "cut_off",
    "expect_send_error",
    "refusing_proxy",
    "silent_url",
    "unreachable_url",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_MAX_UDH_SEGMENTS = 255  # a concatenation header counts parts in one byte
_SECRET_FIELDS: tuple[Literal["password", "proxy_password"], ...] = ("password", "proxy_password")
_DEFAULT_SMS_TEXT = "conformance check"
# For check_timeout: long enough for a loopback connect, short enough to keep tests fast.
_SILENT_TIMEOUTS = Timeouts(connect_s=0.3, total_s=0.3, connect_attempts=1, deadline_s=1.0)
_PROXY_USER = "conformance-proxy-user"
_PROXY_PASSWORD = "conformance-proxy-secret-5e8b"  # used when the account has no proxy password
_PROXY_REFUSAL = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="conformance"\r\n'
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)

Trigger = Callable[[SmsGateway], Awaitable[SmsGateway | None]]
"""Arranges a fault before a send: given the gateway under test, it tells the fake provider
what to do (fail the next request, say) and returns the gateway to send with, or ``None``
for the same one. Returning ``gateway.clone(password="wrong")`` provokes an auth failure."""


class ConformanceError(AssertionError):
    """A gateway breaks the adapter contract; the message says how."""


def _fail(cls: type[SmsGateway] | SmsGateway, problem: str) -> ConformanceError:
    gateway_cls = cls if isinstance(cls, type) else type(cls)
    meta = getattr(gateway_cls, "metadata", None)
    name = getattr(meta, "name", None) or gateway_cls.__name__
    return ConformanceError(f"{name}: {problem}")


# --- static checks ------------------------------------------------------------------------


def check_metadata(cls: type[SmsGateway]) -> None:
    """Check the class and its ``metadata`` are complete and consistent.

    Proves: a concrete ``SmsGateway`` subclass with async ``send``/``test_credentials``;
    a lower-case name (and aliases) without spaces; a description; an http(s) default URL
    without credentials or query when set, else ``url_required``; ``field_names`` keyed by
    generic fields with non-empty names; sane capabilities; a class docstring naming every
    required field.

    Raises:
        ConformanceError: The first problem found.
    """
    if not (isinstance(cls, type) and issubclass(cls, SmsGateway)):
        raise ConformanceError(f"{cls!r} is not a subclass of SmsGateway")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise _fail(cls, f"the class is abstract; implement {missing}")
    for method in ("send", "test_credentials", "test_connection", "test_proxy"):
        if not inspect.iscoroutinefunction(getattr(cls, method)):
            raise _fail(cls, f"{method} must be an async method")
    meta = getattr(cls, "metadata", None)
    if not isinstance(meta, GatewayMetadata):
        raise _fail(cls, "metadata must be a GatewayMetadata")
    _check_names(cls, meta)
    _check_default_url(cls, meta)
    _check_field_names(cls, meta)
    _check_capabilities(cls, meta.capabilities)
    doc = cls.__dict__.get("__doc__") or ""  # its own, not the inherited one
    if not doc.strip():
        raise _fail(cls, "the class needs a docstring mapping the account fields")
    undocumented = [field for field in meta.required_fields() if field not in doc]
    if undocumented:
        raise _fail(cls, f"the class docstring does not mention required field(s) {undocumented}")


def _check_names(cls: type[SmsGateway], meta: GatewayMetadata) -> None:
    for name in (meta.name, *meta.aliases):
        if not _NAME_RE.match(name):
            raise _fail(cls, f"name {name!r} must be lower-case letters, digits, '-' or '_'")
    if meta.name in meta.aliases or len(set(meta.aliases)) != len(meta.aliases):
        raise _fail(cls, "aliases must be distinct and differ from the name")
    if not meta.description.strip():
        raise _fail(cls, "the description is empty")


def _check_field_names(cls: type[SmsGateway], meta: GatewayMetadata) -> None:
    unknown = sorted(set(meta.field_names) - set(GENERIC_FIELDS))
    if unknown:
        raise _fail(cls, f"field_names has non-generic keys {unknown}; use {GENERIC_FIELDS}")
    blank = sorted(key for key, label in meta.field_names.items() if not label.strip())
    if blank:
        raise _fail(cls, f"field_names gives empty provider names for {blank}")


def _check_default_url(cls: type[SmsGateway], meta: GatewayMetadata) -> None:
    if meta.url is None:
        if not meta.url_required:
            raise _fail(cls, "without a default url, url_required must be True")
        return
    parts = urlsplit(meta.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(cls, f"default url {meta.url!r} is not an http(s) URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise _fail(cls, "the default url must hold no credentials, query or fragment")


def _check_capabilities(cls: type[SmsGateway], capabilities: Capabilities) -> None:
    if not isinstance(capabilities, Capabilities):
        raise _fail(cls, "capabilities must be a Capabilities")
    if not 1 <= capabilities.max_segments <= _MAX_UDH_SEGMENTS:
        raise _fail(cls, f"max_segments must be 1..{_MAX_UDH_SEGMENTS}")
    rate = capabilities.default_rate_per_s
    if not (math.isfinite(rate) and rate > 0):
        raise _fail(cls, f"default_rate_per_s must be a finite positive rate, got {rate}")


def check_options_schema(cls: type[SmsGateway]) -> dict[str, Any]:
    """Check ``Options`` is a pydantic model that forbids unknown keys and renders a schema.

    Returns:
        The JSON schema (what ``smsgw gateways describe`` prints).

    Raises:
        ConformanceError: ``Options`` is not a model, accepts unknown keys, or its schema
            does not render as JSON.
    """
    options = cls.Options
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise _fail(cls, "Options must be a pydantic BaseModel subclass")
    if options.model_config.get("extra") != "forbid":
        raise _fail(cls, 'Options must forbid unknown keys: model_config extra="forbid"')
    try:
        schema = options.model_json_schema()
        json.dumps(schema)
    except Exception as error:  # any failure here is the finding itself
        raise _fail(cls, f"the Options JSON schema does not render: {error!r}") from error
    if schema.get("type") != "object":
        raise _fail(cls, "the Options schema must describe an object")
    return schema


def check_required_fields(cls: type[SmsGateway], valid_account: GatewayAccount) -> None:
    """Check ``valid_account`` passes and each required field, emptied, is refused by name.

    Each required field is removed (``None``) and, for text fields, blanked (``"  "``) one
    at a time; all of them removed together must be refused naming every one; an account
    for another gateway type must be refused too.

    Raises:
        ConformanceError: A check failed.
    """
    try:
        cls.check_account(valid_account)
    except ConfigurationError as error:
        raise _fail(cls, f"the valid account is refused: {error}") from error
    required = cls.metadata.required_fields()
    fields = valid_account.model_dump()
    for name in required:
        blanks: list[Any] = [None] if name == "proxy_port" else [None, "  "]
        for blank in blanks:
            account = GatewayAccount.model_validate({**fields, name: blank})
            _expect_refused(cls, account, [name], f"{name}={blank!r}")
    if required:
        account = GatewayAccount.model_validate({**fields, **dict.fromkeys(required)})
        _expect_refused(cls, account, list(required), "every required field empty")
    other = GatewayAccount.model_validate({**fields, "gateway": "not-" + cls.metadata.name})
    _expect_refused(cls, other, [], "an account of another gateway type")


def _expect_refused(
    cls: type[SmsGateway], account: GatewayAccount, names: list[str], what: str
) -> None:
    try:
        cls.check_account(account)
    except ConfigurationError as error:
        unnamed = [name for name in names if name not in str(error)]
        if unnamed:
            raise _fail(cls, f"with {what}, the error does not name {unnamed}: {error}") from None
        return
    raise _fail(cls, f"check_account accepted an account with {what}")


# --- instance checks ----------------------------------------------------------------------


def check_clone_independence(gateway: SmsGateway, *, sender: str = "+15005550009") -> None:
    """Check ``gateway.clone(sender=...)`` changes the clone only.

    Raises:
        ConformanceError: The clone shares or changes the original's account, or differs
            otherwise (type, session, timeouts, other fields).
    """
    if gateway.account.sender == sender:
        raise ValueError(f"pick a sender other than the account's own ({sender!r})")
    before = gateway.account.model_dump()
    clone = gateway.clone(sender=sender)
    if type(clone) is not type(gateway) or clone is gateway:
        raise _fail(gateway, "clone() must return a new adapter of the same type")
    if clone.account is gateway.account:
        raise _fail(gateway, "clone() must not share the account object")
    if clone.account.sender != sender or clone.sender != sender:
        raise _fail(gateway, "clone(sender=...) did not change the clone's sender")
    if gateway.account.model_dump() != before:
        raise _fail(gateway, "clone(sender=...) changed the original account")
    if clone.account.model_dump() != {**before, "sender": sender}:
        raise _fail(gateway, "clone() changed account fields it was not asked to")
    if clone.session is not gateway.session:
        raise _fail(gateway, "clone() must share the caller's session")
    if clone.timeouts != gateway.timeouts:
        raise _fail(gateway, "clone() must keep the timeouts")


def _secret_values(account: GatewayAccount) -> list[str]:
    values = [value for name in _SECRET_FIELDS if (value := account.secret(name))]
    proxy_password = account.secret("proxy_password")
    if account.proxy_username and proxy_password:
        # The Proxy-Authorization credential as it travels (aiohttp's errors quote headers).
        values.append(_basic_token(account.proxy_username, proxy_password))
    return values


def _basic_token(user: str, password: str) -> str:
    return basic_auth_header(user, password).removeprefix("Basic ")


def _exception_texts(error: BaseException) -> Iterator[str]:
    """str and repr of the error and of every cause and context behind it.

    Both links are followed, even a context hidden by ``raise ... from None``: a traceback
    printer may not show it, but a logger or an error tracker can still reach it.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def check_no_secrets(
    gateway: SmsGateway, secrets: Iterable[str] = (), *, errors: Iterable[BaseException] = ()
) -> None:
    """Check no secret shows in the adapter's reprs or in ``errors``.

    Args:
        gateway: The adapter under test; its account's password and proxy password (and
            the proxy's Basic credential, as a header carries it) are always checked,
            besides ``secrets``.
        secrets: More values that must never show (a wrong password you tried, a token).
            Use distinctive values: a short common one would match by chance.
        errors: Errors the adapter raised (from a failed send, ``check_account``...):
            their ``str``/``repr``, and those of their causes, are checked.

    Raises:
        ConformanceError: A secret shows somewhere; the message says where, not what.
    """
    values = [s for s in {*secrets, *_secret_values(gateway.account)} if s]
    places: dict[str, str] = {
        "repr(gateway)": repr(gateway),
        "str(gateway)": str(gateway),
        "repr(gateway.account)": repr(gateway.account),
        "str(gateway.account)": str(gateway.account),
        "gateway.account JSON": gateway.account.model_dump_json(),
        "repr(gateway.options)": repr(gateway.options),
    }
    for index, error in enumerate(errors):
        for number, text in enumerate(_exception_texts(error)):
            places[f"error #{index} ({type(error).__name__}) text #{number}"] = text
    for place, text in places.items():
        if any(secret in text for secret in values):
            raise _fail(gateway, f"a secret shows in {place}")


def unreachable_url() -> str:
    """An http URL on loopback where nothing listens (a port just freed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def cut_off(gateway: SmsGateway) -> SmsGateway:
    """A copy of ``gateway`` on :func:`unreachable_url`, with a short connect-retry budget."""
    fast = Timeouts(connect_s=1.0, total_s=2.0, connect_attempts=2, deadline_s=2.0)
    return _moved(gateway, timeouts=fast, url=unreachable_url())


def _moved(gateway: SmsGateway, *, timeouts: Timeouts, **changes: Any) -> SmsGateway:
    """A copy of ``gateway`` with account ``changes`` (secrets kept) and ``timeouts``."""
    fields = {**gateway.account.model_dump(), **changes}
    return type(gateway)(GatewayAccount.model_validate(fields), gateway.session, timeouts=timeouts)


@contextlib.contextmanager
def silent_url() -> Iterator[str]:
    """An http URL on loopback that takes connections but never answers, while open.

    The socket listens but never accepts: the kernel completes the handshake, so the
    request goes out, and no reply ever comes back.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept()ed
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.asynccontextmanager
async def refusing_proxy() -> AsyncIterator[int]:
    """A loopback HTTP proxy that answers every request (CONNECT included) with a 407.

    Yields:
        Its port.
    """

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            # Read the body too: closing with unread bytes would reset the connection
            # before the client reads the 407.
            length = re.search(rb"\ncontent-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            elif b"chunked" in head:
                await reader.readuntil(b"0\r\n\r\n")
            writer.write(_PROXY_REFUSAL)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def expect_send_error(
    gateway: SmsGateway, sms: OutboundSms, expected: type[GatewayError] = GatewayError
) -> GatewayError:
    """Send ``sms`` and return the error, which must be an ``expected``.

    Raises:
        ConformanceError: The send succeeded, or raised something else.
    """
    try:
        receipt = await gateway.send(sms)
    except expected as error:
        return error
    except Exception as error:  # the wrong kind of failure is the finding
        raise _fail(
            gateway,
            f"send raised {type(error).__name__} ({error}), expected {expected.__name__}",
        ) from error
    raise _fail(gateway, f"send succeeded ({receipt}), expected {expected.__name__}")


async def check_unreachable(
    gateway: SmsGateway, sms: OutboundSms | None = None
) -> TransientGatewayError:
    """Check a send to a host that refuses connections is a ``TransientGatewayError``.

    The adapter is cloned onto :func:`unreachable_url` with a fast retry budget.

    Returns:
        The error, for :func:`check_no_secrets`.
    """
    sms = sms or OutboundSms(to="+447700900123", text=_DEFAULT_SMS_TEXT)
    error = await expect_send_error(cut_off(gateway), sms, TransientGatewayError)
    assert isinstance(error, TransientGatewayError)  # narrowed for mypy
    return error


async def check_timeout(gateway: SmsGateway, sms: OutboundSms | None = None) -> OutcomeUnknown:
    """Check a send whose request goes out but gets no answer is ``OutcomeUnknown``.

    The adapter is cloned onto :func:`silent_url` with a 0.3 s request timeout: the
    provider may have taken the message, so the error must say the outcome is unknown.

    Returns:
        The error, for :func:`check_no_secrets`.
    """
    sms = sms or OutboundSms(to="+447700900123", text=_DEFAULT_SMS_TEXT)
    with silent_url() as url:
        target = _moved(gateway, timeouts=_SILENT_TIMEOUTS, url=url)
        error = await expect_send_error(target, sms, OutcomeUnknown)
    assert isinstance(error, OutcomeUnknown)  # narrowed for mypy
    return error


async def check_proxy_refusal(
    gateway: SmsGateway, sms: OutboundSms | None = None
) -> list[AccountRejected]:
    """Check a proxy's 407 is ``AccountRejected``, for a plain HTTP and an HTTPS provider URL.

    The adapter is cloned behind :func:`refusing_proxy` with proxy credentials (its own
    proxy password when it has one): a plain ``http`` request gets the 407 as its reply,
    an ``https`` one as the answer to its ``CONNECT``.

    Returns:
        Both errors, for :func:`check_no_secrets`.
    """
    sms = sms or OutboundSms(to="+447700900123", text=_DEFAULT_SMS_TEXT)
    fast = Timeouts(connect_s=1.0, total_s=2.0, connect_attempts=1, deadline_s=2.0)
    errors: list[AccountRejected] = []
    async with refusing_proxy() as port:
        for scheme in ("http", "https"):
            target = _moved(
                gateway,
                timeouts=fast,
                url=f"{scheme}://{urlsplit(unreachable_url()).netloc}",
                proxy_host_name="127.0.0.1",
                proxy_domain=None,
                proxy_port=port,
                proxy_username=gateway.account.proxy_username or _PROXY_USER,
                proxy_password=gateway.account.secret("proxy_password") or _PROXY_PASSWORD,
            )
            error = await expect_send_error(target, sms, AccountRejected)
            assert isinstance(error, AccountRejected)  # narrowed for mypy
            errors.append(error)
    return errors


async def check_failures_hold_no_secrets(
    gateway: SmsGateway, sms: OutboundSms | None = None, secrets: Iterable[str] = ()
) -> list[GatewayError]:
    """Provoke the failures a send meets on the network and check none shows a secret.

    Runs :func:`check_unreachable`, :func:`check_timeout` and :func:`check_proxy_refusal`,
    then :func:`check_no_secrets` over their errors (``str``, ``repr``, causes and
    contexts) with the account's password, the proxy password used, the message text and
    ``secrets``.

    Returns:
        The errors, for further checks.
    """
    sms = sms or OutboundSms(to="+447700900123", text=_DEFAULT_SMS_TEXT)
    errors: list[GatewayError] = [
        await check_unreachable(gateway, sms),
        await check_timeout(gateway, sms),
        *await check_proxy_refusal(gateway, sms),
    ]
    proxy_user = gateway.account.proxy_username or _PROXY_USER
    proxy_password = gateway.account.secret("proxy_password") or _PROXY_PASSWORD
    check_no_secrets(
        gateway,
        [*secrets, sms.text, proxy_password, _basic_token(proxy_user, proxy_password)],
        errors=errors,
    )
    return errors


async def check_diagnostics(gateway: SmsGateway) -> dict[str, CheckResult]:
    """Run ``test_connection``, ``test_credentials`` and ``test_proxy``.

    Each must return a :class:`CheckResult` with a reason, and never raise.

    Returns:
        The results by method name, for the caller to judge ok/not ok.
    """
    results: dict[str, CheckResult] = {}
    for method in ("test_connection", "test_credentials", "test_proxy"):
        try:
            result = await getattr(gateway, method)()
        except Exception as error:  # a raising check is the finding
            raise _fail(gateway, f"{method} raised {type(error).__name__}: {error}") from error
        if not isinstance(result, CheckResult):
            raise _fail(gateway, f"{method} returned {type(result).__name__}, not CheckResult")
        if not result.reason.strip():
            raise _fail(gateway, f"{method} gave no reason")
        results[method] = result
    return results


# --- send outcomes (needs a provider double) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SendOutcomes:
    """What :func:`check_send_outcomes` saw, for further checks (secrets, fields)."""

    receipt: SendReceipt
    transient: TransientGatewayError
    permanent: PermanentGatewayError


async def check_send_outcomes(
    gateway: SmsGateway,
    *,
    success_sms: OutboundSms,
    transient_trigger: Trigger,
    permanent_trigger: Trigger,
    permanent_error: type[PermanentGatewayError] = PermanentGatewayError,
) -> SendOutcomes:
    """Check a success, a transient failure and a permanent failure map as the contract says.

    1. ``success_sms`` is sent: the receipt must hold at least one non-empty message id.
    2. ``transient_trigger`` arranges a retryable fault (a 5xx, say); the next send must
       raise :class:`TransientGatewayError`.
    3. ``permanent_trigger`` arranges a permanent one (wrong credentials, say); the next
       send must raise ``permanent_error``.

    Args:
        gateway: The adapter under test, pointed at a provider double.
        success_sms: A message the provider double accepts.
        transient_trigger: See :data:`Trigger`.
        permanent_trigger: See :data:`Trigger`.
        permanent_error: The permanent class expected (``AccountRejected`` for bad
            credentials).

    Raises:
        ConformanceError: An outcome is not as expected.
    """
    receipt = await gateway.send(success_sms)
    if not isinstance(receipt, SendReceipt):
        raise _fail(gateway, f"send returned {type(receipt).__name__}, not SendReceipt")
    ids = receipt.provider_message_ids
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise _fail(gateway, f"a receipt needs non-empty string message ids, got {ids!r}")
    if receipt.segments is not None and receipt.segments < 1:
        raise _fail(gateway, f"receipt segments must be None or >= 1, got {receipt.segments}")
    target = await transient_trigger(gateway) or gateway
    transient = await expect_send_error(target, success_sms, TransientGatewayError)
    target = await permanent_trigger(gateway) or gateway
    permanent = await expect_send_error(target, success_sms, permanent_error)
    for error in (transient, permanent):
        if error.gateway != gateway.metadata.name:
            raise _fail(gateway, f"{type(error).__name__}.gateway is {error.gateway!r}")
    assert isinstance(transient, TransientGatewayError)  # narrowed for mypy
    assert isinstance(permanent, PermanentGatewayError)
    return SendOutcomes(receipt, transient, permanent)


# --- pytest helper ------------------------------------------------------------------------


class GatewayConformance:
    """Server-free conformance tests; subclass as ``TestXxx`` so pytest collects them.

    Set ``gateway_class`` and implement :meth:`valid_account`. The tests need no pytest
    plugin: the async ones run on their own event loop.
    """

    gateway_class: ClassVar[type[SmsGateway]]

    def valid_account(self) -> GatewayAccount:
        """An account ``gateway_class`` accepts (no server is contacted)."""
        raise NotImplementedError("return an account your gateway accepts")

    def test_conformance_metadata(self) -> None:
        check_metadata(self.gateway_class)

    def test_conformance_options_schema(self) -> None:
        check_options_schema(self.gateway_class)

    def test_conformance_required_fields(self) -> None:
        check_required_fields(self.gateway_class, self.valid_account())

    def test_conformance_clone_independence(self) -> None:
        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                check_clone_independence(self.gateway_class(self.valid_account(), session))

        asyncio.run(run())

    def test_conformance_no_secrets(self) -> None:
        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                gateway = self.gateway_class(self.valid_account(), session)
                await check_failures_hold_no_secrets(gateway)
                results = await check_diagnostics(cut_off(gateway))
                if results["test_connection"]:
                    raise _fail(gateway, "test_connection passed against a closed port")
                check_no_secrets(gateway)
                for result in results.values():
                    if any(secret in result.reason for secret in _secret_values(gateway.account)):
                        raise _fail(gateway, "a secret shows in a check's reason")

        asyncio.run(run())
