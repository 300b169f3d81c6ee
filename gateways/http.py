"""Provider HTTP calls: the shared session, proxy, timeouts, short retries and error mapping.

This is the only module that knows aiohttp's exceptions. Every adapter request goes through
:meth:`GatewayHttp.request`, which

* uses the caller's shared ``aiohttp.ClientSession`` (one per worker process, never one per
  send) with explicit timeouts;
* routes through the account's HTTP proxy (basic auth) when one is set;
* retries with tenacity only when the request certainly never reached the provider
  (connection refused, connect timeout, proxy unreachable), within a total deadline; every
  other failure is left to the worker's retry policy, which may know the part was sent;
* translates aiohttp errors into :mod:`gateways.errors`, with messages that name the host
  but never a URL's query string (legacy APIs carry passwords there).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from gateways.errors import (
    AccountRejected,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    TransientGatewayError,
)
from gateways.models import CheckResult, ProxySettings

__all__ = [
    "GatewayHttp",
    "HttpReply",
    "Timeouts",
    "basic_auth_header",
    "error_for_status",
    "parse_retry_after",
]

_DEFAULT_RETRY_AFTER_S = 1.0
_MIN_RETRY_AFTER_S = 0.1  # "Retry-After: 0" must not turn into a busy retry loop


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts and the short connect-retry budget of provider calls.

    Attributes:
        connect_s: Time to open a connection (through the proxy when there is one).
        total_s: Time for one whole request, connect to last byte.
        connect_attempts: Attempts when the connection cannot be opened at all.
        deadline_s: Bound on all attempts of one request together.
    """

    connect_s: float = 5.0
    total_s: float = 15.0
    connect_attempts: int = 3
    deadline_s: float = 20.0

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """The aiohttp form of these timeouts."""
        return aiohttp.ClientTimeout(total=self.total_s, sock_connect=self.connect_s)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A provider's reply, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    reason: str = ""
    """The status line's text (some providers put their error message there)."""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def basic_auth_header(user: str, password: str) -> str:
    """The value of an HTTP Basic ``Authorization`` (or ``Proxy-Authorization``) header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def parse_retry_after(value: str | None, default_s: float = _DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return default_s
    value = value.strip()
    try:
        return max(_MIN_RETRY_AFTER_S, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default_s
    return max(_MIN_RETRY_AFTER_S, moment.timestamp() - time.time())


def error_for_status(reply: HttpReply, gateway: str, what: str | None = None) -> GatewayError:
    """The generic error for a non-success HTTP status, for adapters without a better table.

    401/403 reject the account, 407 means the proxy refused our credentials, 429 is a
    throttle (``Retry-After`` honoured), 408 and 5xx are transient, other 4xx permanent.
    """
    status = reply.status
    detail = f"{gateway}: {what or 'provider'} answered HTTP {status}"
    if status == 429:
        return RateLimited(
            detail,
            gateway=gateway,
            http_status=status,
            retry_after_s=parse_retry_after(reply.headers.get("Retry-After")),
        )
    if status == 407:
        return AccountRejected(
            f"{gateway}: the proxy refused our credentials (HTTP 407)",
            gateway=gateway,
            http_status=status,
        )
    if status in (401, 403):
        return AccountRejected(detail, gateway=gateway, http_status=status)
    if status == 408 or status >= 500:
        return TransientGatewayError(detail, gateway=gateway, http_status=status)
    return PermanentGatewayError(detail, gateway=gateway, http_status=status)


def _where(url: str) -> str:
    try:
        host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    except ValueError:  # e.g. a broken IPv6 literal
        return "(invalid host)"
    return host or "(no host)"


def _translate(exc: BaseException, gateway: str, host: str) -> GatewayError:
    """The error-tree error for an aiohttp (or timeout) failure; names the host only."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        # Checked first: certificate errors are also ValueErrors (ssl's own hierarchy).
        return AccountRejected(
            f"{gateway}: TLS with {host} failed ({kind}); check the URL and the certificate",
            gateway=gateway,
            request_sent=False,
        )
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return AccountRejected(
            f"{gateway}: the request could not be built ({kind}); check the account's URL",
            gateway=gateway,
            request_sent=False,
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return TransientGatewayError(
            f"{gateway}: the proxy is unreachable ({kind})", gateway=gateway, request_sent=False
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        if exc.status == 407:
            return AccountRejected(
                f"{gateway}: the proxy refused our credentials (HTTP 407)",
                gateway=gateway,
                http_status=407,
                request_sent=False,
            )
        return TransientGatewayError(
            f"{gateway}: the proxy could not open a tunnel to {host} (HTTP {exc.status})",
            gateway=gateway,
            http_status=exc.status,
            request_sent=False,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransientGatewayError(
            f"{gateway}: connecting to {host} timed out", gateway=gateway, request_sent=False
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = type(exc.os_error).__name__
        return TransientGatewayError(
            f"{gateway}: cannot connect to {host} ({reason})", gateway=gateway, request_sent=False
        )
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return OutcomeUnknown(
            f"{gateway}: {host} did not answer in time; the message may have been accepted",
            gateway=gateway,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return OutcomeUnknown(
            f"{gateway}: {host} closed the connection before answering ({kind})",
            gateway=gateway,
        )
    return OutcomeUnknown(f"{gateway}: request to {host} failed ({kind})", gateway=gateway)


def _never_reached_provider(error: BaseException) -> bool:
    return isinstance(error, TransientGatewayError) and not error.request_sent


class GatewayHttp:
    """HTTP for one adapter: a shared session, a proxy, timeouts and the error mapping.

    Args:
        session: The caller's shared session.
        gateway: The gateway name, for error messages and attributes.
        proxy: The account's proxy, if any.
        timeouts: Timeouts and connect-retry budget.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        gateway: str,
        proxy: ProxySettings | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.session = session
        self.gateway = gateway
        self.proxy = proxy
        self.timeouts = timeouts or Timeouts()

    def _proxy_kwargs(self, url: str, headers: Mapping[str, str] | None) -> dict[str, Any]:
        """aiohttp arguments for the account's proxy, with its credentials where they belong.

        aiohttp sends ``proxy_headers`` only on a CONNECT (``https`` targets). A plain
        ``http`` request goes to the proxy as it is, so the credentials must ride in that
        request's own headers; never for ``https``, where they would cross the tunnel to
        the provider.
        """
        if self.proxy is None:
            return {"headers": headers}
        kwargs: dict[str, Any] = {"proxy": self.proxy.url, "headers": headers}
        if self.proxy.username:
            password = self.proxy.password.get_secret_value() if self.proxy.password else ""
            credentials = {"Proxy-Authorization": basic_auth_header(self.proxy.username, password)}
            if urlsplit(url).scheme == "https":
                kwargs["proxy_headers"] = credentials
            else:
                kwargs["headers"] = {**(headers or {}), **credentials}
        return kwargs

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | str | bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """Make one provider request and read the whole reply.

        Connection failures (the request never left) are retried briefly; anything after
        the request may have reached the provider is raised at once.

        Raises:
            TransientGatewayError: The request failed; ``request_sent`` says whether it may
                have reached the provider.
            AccountRejected: The proxy refused our credentials.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(_never_reached_provider),
            stop=stop_after_attempt(self.timeouts.connect_attempts)
            | stop_after_delay(self.timeouts.deadline_s),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._request_once(
                    method, url, params=params, data=data, json_body=json_body,
                    headers=headers,
                )  # fmt: skip
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _request_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        data: Mapping[str, str] | str | bytes | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> HttpReply:
        try:
            async with self.session.request(
                method,
                url,
                params=params,
                data=data,
                json=json_body,
                timeout=self.timeouts.client_timeout(),
                allow_redirects=False,
                **self._proxy_kwargs(url, headers),
            ) as response:
                body = await response.read()
                reply = HttpReply(
                    response.status, dict(response.headers), body, reason=response.reason or ""
                )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = _translate(exc, self.gateway, _where(url))
        else:
            return reply
        # Raised outside the except block, so the aiohttp error is neither the cause nor the
        # context: its text and repr can hold the URL's query string and proxy credentials.
        raise error

    async def probe(self, url: str, *, through_proxy_only: bool = False) -> CheckResult:
        """GET ``url`` and report whether the host (and the proxy) answered.

        Any HTTP reply from the host proves the connection; for a proxy check, a 407 or a
        proxy connection failure is a failure and anything else proves the proxy works.
        """
        host = _where(url)
        via = f" through proxy {self.proxy.host}:{self.proxy.port}" if self.proxy else ""
        try:
            reply = await self.request("GET", url)
        except AccountRejected as error:
            return CheckResult(False, str(error).removeprefix(f"{self.gateway}: "))
        except TransientGatewayError as error:
            return CheckResult(False, str(error).removeprefix(f"{self.gateway}: "))
        if reply.status == 407:
            return CheckResult(False, "the proxy refused our credentials (HTTP 407)")
        if through_proxy_only and reply.status in (502, 503, 504):
            return CheckResult(
                False,
                f"the proxy accepted us but could not reach {host} (HTTP {reply.status})",
            )
        return CheckResult(True, f"{host} answered HTTP {reply.status}{via}")
