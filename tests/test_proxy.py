"""Account proxies, against a real HTTP proxy (proxy.py with basic auth) in a subprocess.

Sends go through the example plugin (``examples/acme-sms``) to its fake ACME server; the
proxy's own access log proves a request passed through it. HTTPS goes through a CONNECT
tunnel to the sandbox in TLS mode.
"""

from __future__ import annotations

import base64
import importlib
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from gateways.errors import AccountRejected, GatewayError, TransientGatewayError
from gateways.http import GatewayHttp, Timeouts
from gateways.models import GatewayAccount, OutboundSms, ProxySettings
from gateways.sandbox import SandboxServer, TlsFiles, self_signed_certificate
from tests.proxy_server import ProxyServer, free_port

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "acme-sms"
PROXY_USER = "smsgw-proxy-user"
PROXY_PASSWORD = "Pr0xy-S3cret-7731"
WRONG_PASSWORD = "Wr0ng-Pr0xy-Pw-4410"
FAST = Timeouts(connect_s=2, total_s=5, connect_attempts=2, deadline_s=5)


@pytest.fixture(scope="session")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    """One proxy.py for the session, requiring PROXY_USER / PROXY_PASSWORD."""
    with ProxyServer(
        tmp_path_factory.mktemp("proxy"), username=PROXY_USER, password=PROXY_PASSWORD
    ) as server:
        yield server


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin package, importable from its source directory."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    return importlib.import_module("acme_sms")


@pytest.fixture
async def fake_acme(acme: ModuleType) -> AsyncIterator[tuple[Any, str]]:
    """The plugin's fake ACME server on a loopback port: (fake, base URL)."""
    fake = importlib.import_module("acme_sms.fake_server").FakeAcme()
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_sandbox(tls_files: TlsFiles) -> Iterator[SandboxServer]:
    """The sandbox serving HTTPS with the self-signed certificate."""
    with SandboxServer(tls=tls_files) as server:
        yield server


def account(url: str, api_key: str, **proxy: Any) -> GatewayAccount:
    return GatewayAccount(name="proxied", gateway="acme", url=url, password=api_key, **proxy)


def proxy_fields(port: int, password: str = PROXY_PASSWORD, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "proxy_host_name": "127.0.0.1",
        "proxy_port": port,
        "proxy_username": PROXY_USER,
        "proxy_password": password,
    }
    return {**fields, **extra}


def assert_no_secret(*texts: str) -> None:
    """Neither proxy password appears, in clear or inside a Basic credential."""
    forbidden = [PROXY_PASSWORD, WRONG_PASSWORD]
    forbidden += [
        base64.b64encode(f"{PROXY_USER}:{pw}".encode()).decode()
        for pw in (PROXY_PASSWORD, WRONG_PASSWORD)
    ]
    for text in texts:
        for secret in forbidden:
            assert secret not in text, f"a proxy credential leaked into: {text!r}"


def full_text(error: BaseException) -> str:
    """The error with its whole cause chain, as a log line would show it."""
    return "".join(traceback.format_exception(error))


async def test_send_goes_through_the_proxy(
    proxy: ProxyServer, acme: ModuleType, fake_acme: tuple[Any, str]
) -> None:
    # Given an account with the proxy fields filled in
    fake, url = fake_acme
    log_start = proxy.log_size()
    async with aiohttp.ClientSession() as session:
        gateway = acme.AcmeGateway(account(url, fake.api_key, **proxy_fields(proxy.port)), session)
        # When a message is sent
        receipt = await gateway.send(OutboundSms(to="+447700900123", text="Your code is 123456"))
    # Then the provider got it
    assert receipt.provider_message_ids == (fake.messages[0].id,)
    # And the proxy logged forwarding exactly that request (it logs when the connection
    # closes, hence after the session)
    path = f"POST {url.removeprefix('http://')}/v1/messages"
    line = proxy.wait_for_log(path, after=log_start)
    assert "201" in line


async def test_proxy_domain_is_the_host_when_proxy_host_name_is_empty(
    proxy: ProxyServer, acme: ModuleType, fake_acme: tuple[Any, str]
) -> None:
    # Given only proxy_domain names the proxy host
    fake, url = fake_acme
    fields = proxy_fields(proxy.port, proxy_host_name="", proxy_domain="127.0.0.1")
    settings = account(url, fake.api_key, **fields).proxy
    assert settings is not None and settings.host == "127.0.0.1"
    log_start = proxy.log_size()
    async with aiohttp.ClientSession() as session:
        gateway = acme.AcmeGateway(account(url, fake.api_key, **fields), session)
        # When a message is sent
        await gateway.send(OutboundSms(to="+447700900124", text="hello"))
    # Then it went through the proxy on that host
    proxy.wait_for_log(f"POST {url.removeprefix('http://')}/v1/messages", after=log_start)
    assert [m.to for m in fake.messages] == ["+447700900124"]


async def test_test_proxy_succeeds_with_the_right_password(
    proxy: ProxyServer, acme: ModuleType, fake_acme: tuple[Any, str], http_session: Any
) -> None:
    # Given a proxied account with the right credentials
    fake, url = fake_acme
    gateway = acme.AcmeGateway(account(url, fake.api_key, **proxy_fields(proxy.port)), http_session)
    # When the proxy is tested
    result = await gateway.test_proxy()
    # Then it passes and says it went through the proxy
    assert result.ok, result.reason
    assert not result.skipped
    assert f"through proxy 127.0.0.1:{proxy.port}" in result.reason
    assert_no_secret(result.reason, repr(result))


async def test_test_proxy_without_a_proxy_is_skipped(
    acme: ModuleType, fake_acme: tuple[Any, str], http_session: Any
) -> None:
    fake, url = fake_acme
    result = await acme.AcmeGateway(account(url, fake.api_key), http_session).test_proxy()
    assert result.ok and result.skipped
    assert "no proxy configured" in result.reason


async def test_wrong_proxy_password_is_reported_plainly(
    proxy: ProxyServer, acme: ModuleType, fake_acme: tuple[Any, str], http_session: Any
) -> None:
    # Given a proxied account with a wrong proxy password
    fake, url = fake_acme
    fields = proxy_fields(proxy.port, password=WRONG_PASSWORD)
    gateway = acme.AcmeGateway(account(url, fake.api_key, **fields), http_session)
    # When the proxy is tested / Then it fails, saying why
    result = await gateway.test_proxy()
    assert not result.ok
    assert result.reason == "the proxy refused our credentials (HTTP 407)"
    # And a send fails as a rejected account, not as something to retry
    with pytest.raises(AccountRejected) as caught:
        await gateway.send(OutboundSms(to="+447700900123", text="hello"))
    assert str(caught.value) == "acme: the proxy refused our credentials (HTTP 407)"
    assert caught.value.http_status == 407
    # And the provider never saw it
    assert fake.messages == []
    assert_no_secret(result.reason, repr(result), full_text(caught.value))


async def test_dead_proxy_is_reported_as_unreachable(
    acme: ModuleType, fake_acme: tuple[Any, str], http_session: Any
) -> None:
    # Given a proxy port where nothing listens
    fake, url = fake_acme
    fields = proxy_fields(free_port())
    gateway = acme.AcmeGateway(account(url, fake.api_key, **fields), http_session, timeouts=FAST)
    # When the proxy is tested / Then it fails, saying the proxy is unreachable
    result = await gateway.test_proxy()
    assert not result.ok
    assert result.reason.startswith("the proxy is unreachable"), result.reason
    # And a send fails as transient, certainly not sent
    with pytest.raises(TransientGatewayError) as caught:
        await gateway.send(OutboundSms(to="+447700900123", text="hello"))
    assert "the proxy is unreachable" in str(caught.value)
    assert caught.value.request_sent is False
    assert fake.messages == []
    assert_no_secret(result.reason, full_text(caught.value))


async def test_stopping_the_proxy_stops_the_sends(
    tmp_path: Path, acme: ModuleType, fake_acme: tuple[Any, str], http_session: Any
) -> None:
    # Given an account that sends fine through a proxy of its own
    fake, url = fake_acme
    with ProxyServer(tmp_path, username=PROXY_USER, password=PROXY_PASSWORD) as own:
        proxied = account(url, fake.api_key, **proxy_fields(own.port))
        async with aiohttp.ClientSession() as session:
            await acme.AcmeGateway(proxied, session).send(
                OutboundSms(to="+447700900123", text="first")
            )
    # When the proxy is gone / Then the account cannot send: it never goes direct
    gateway = acme.AcmeGateway(proxied, http_session, timeouts=FAST)
    with pytest.raises(TransientGatewayError, match="the proxy is unreachable"):
        await gateway.send(OutboundSms(to="+447700900123", text="second"))
    assert [m.text for m in fake.messages] == ["first"]


def test_reprs_never_show_the_proxy_password() -> None:
    # Given an account with a proxy password
    acct = GatewayAccount(name="a", gateway="acme", password="api-key-1", **proxy_fields(3128))
    settings = acct.proxy
    assert isinstance(settings, ProxySettings)
    # When shown in every way a log line or a debugger would
    shown = [
        repr(acct), str(acct), repr(settings), str(settings), settings.url,
        acct.model_dump_json(), repr(acct.model_dump()), repr(settings.model_dump()),
    ]  # fmt: skip
    # Then the password never appears, but the user and host do
    assert_no_secret(*shown)
    assert f"{PROXY_USER}:***@127.0.0.1:3128" in repr(settings)
    # And the adapter can still read it when it must
    assert acct.secret("proxy_password") == PROXY_PASSWORD


async def test_https_goes_through_a_connect_tunnel(
    proxy: ProxyServer, tls_sandbox: SandboxServer, tls_files: TlsFiles
) -> None:
    # Given the sandbox on HTTPS, and a client that trusts its certificate
    settings = GatewayAccount(name="t", gateway="acme", **proxy_fields(proxy.port)).proxy
    log_start = proxy.log_size()
    connector = aiohttp.TCPConnector(ssl=tls_files.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        http = GatewayHttp(session, gateway="acme", proxy=settings, timeouts=FAST)
        # When it GETs through the proxy
        reply = await http.request("GET", f"{tls_sandbox.url}/_sandbox/health")
    # Then the TLS conversation reached the sandbox through a tunnel the proxy opened
    assert reply.status == 200 and reply.json() == {"ok": True}
    proxy.wait_for_log(f"CONNECT {tls_sandbox.host}:{tls_sandbox.port}", after=log_start)


async def test_https_tunnel_with_a_wrong_password_is_refused(
    proxy: ProxyServer, tls_sandbox: SandboxServer, tls_files: TlsFiles
) -> None:
    # Given the wrong proxy password, over HTTPS (the proxy answers the CONNECT itself)
    fields = proxy_fields(proxy.port, password=WRONG_PASSWORD)
    settings = GatewayAccount(name="t", gateway="acme", **fields).proxy
    connector = aiohttp.TCPConnector(ssl=tls_files.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        http = GatewayHttp(session, gateway="acme", proxy=settings, timeouts=FAST)
        # When the proxy is probed / Then the check says the credentials were refused
        result = await http.probe(tls_sandbox.url, through_proxy_only=True)
        assert not result.ok
        assert result.reason == "the proxy refused our credentials (HTTP 407)"
        # And a request raises AccountRejected without retrying or leaking the credential
        with pytest.raises(AccountRejected) as caught:
            await http.request("GET", f"{tls_sandbox.url}/_sandbox/health")
    error: GatewayError = caught.value
    assert error.http_status == 407 and error.request_sent is False
    assert_no_secret(result.reason, full_text(error))
    # And aiohttp's error (its request_info holds the Proxy-Authorization header) is chained
    # nowhere, not even as a suppressed context (loggers and error trackers can reach one)
    assert error.__cause__ is None
    assert_no_secret(*every_text(error))


def every_text(error: BaseException) -> list[str]:
    """str and repr of the error and of every cause and context, suppressed ones included."""
    texts: list[str] = []
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) not in seen:
            seen.add(id(current))
            texts += [str(current), repr(current)]
            pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts
