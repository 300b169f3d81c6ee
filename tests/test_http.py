"""GatewayHttp against small local servers: retries, timeouts, error mapping, probes."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateways.errors import (
    AccountRejected,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    TransientGatewayError,
)
from gateways.http import GatewayHttp, HttpReply, Timeouts, error_for_status, parse_retry_after
from gateways.sandbox.server import self_signed_certificate
from tests.proxy_server import free_port

FAST = Timeouts(connect_s=1, total_s=2, connect_attempts=3, deadline_s=5)

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on loopback in this loop: ``url = await serve(app, port=0)``."""
    runners: list[web.AppRunner] = []

    async def _serve(app: web.Application, port: int = 0) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield _serve
    for runner in runners:
        await runner.cleanup()


def counted(http: GatewayHttp, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the attempts ``http`` makes (each real request, retries included)."""
    attempts: list[int] = []
    original = http._request_once

    async def attempt(*args: Any, **kwargs: Any) -> HttpReply:
        attempts.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(http, "_request_once", attempt)
    return attempts


def app_with(method: str, path: str, handler: Callable[..., Awaitable[web.StreamResponse]]):
    app = web.Application()
    app.router.add_route(method, path, handler)
    return app


def every_text(error: BaseException) -> list[str]:
    """str and repr of the error and of everything chained to it, hidden contexts included."""
    texts: list[str] = []
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def saturated_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener whose accept queue is full: a new connect hangs (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the handshake completes in the kernel
            filler.connect(listener.getsockname())
        fillers.append(filler)
    return listener, fillers


# --- requests ------------------------------------------------------------------------------


async def test_request_sends_params_form_json_and_headers(
    serve: Serve, http_session: aiohttp.ClientSession
) -> None:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append(
            {
                "query": dict(request.query),
                "body": body,
                "type": request.content_type,
                "x": request.headers.get("X-T"),
            }
        )
        return web.json_response({"ok": True}, headers={"X-Reply": "yes"})

    url = await serve(app_with("POST", "/send", echo))
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    # When a form POST and a JSON POST are made
    form = await http.request(
        "POST", f"{url}/send", params={"a": "1"}, data={"to": "447700900123", "text": "hé"},
        headers={"X-T": "v"},
    )  # fmt: skip
    as_json = await http.request("POST", f"{url}/send", json_body={"k": [1, 2]})
    # Then both arrived as sent, and the replies are read in full
    assert seen[0] == {
        "query": {"a": "1"},
        "body": "to=447700900123&text=h%C3%A9",
        "type": "application/x-www-form-urlencoded",
        "x": "v",
    }
    assert json.loads(seen[1]["body"]) == {"k": [1, 2]}
    assert seen[1]["type"] == "application/json"
    assert form.status == 200 and form.json() == {"ok": True}
    assert form.headers["X-Reply"] == "yes"
    assert as_json.json() == {"ok": True}
    # And the caller's session stays open: it is shared, not ours to close
    assert not http_session.closed


async def test_redirects_are_not_followed(
    serve: Serve, http_session: aiohttp.ClientSession
) -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    url = await serve(app_with("POST", "/send", moved))
    reply = await GatewayHttp(http_session, gateway="t").request("POST", f"{url}/send")
    assert reply.status == 302
    assert reply.headers["Location"] == "/elsewhere"


# --- connection failures -------------------------------------------------------------------


async def test_refused_connection_is_retried_then_transient_and_unsent(
    http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a port where nothing listens, and a URL carrying a password (legacy APIs do)
    port = free_port()
    http = GatewayHttp(http_session, gateway="legacy", timeouts=FAST)
    attempts = counted(http, monkeypatch)
    # When requested
    with pytest.raises(TransientGatewayError) as caught:
        await http.request("GET", f"http://127.0.0.1:{port}/send?user=u&password=Hunter2Secret")
    # Then every connect attempt was made, and the error says it never left
    assert len(attempts) == FAST.connect_attempts
    error = caught.value
    assert error.request_sent is False and error.gateway == "legacy"
    assert str(error) == f"legacy: cannot connect to 127.0.0.1:{port} (ConnectionRefusedError)"
    # And the message names the host only: no query string, no password
    assert "Hunter2Secret" not in str(error) and "?" not in str(error)


async def test_connect_retries_stop_at_the_deadline(
    http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given many attempts allowed but a short deadline for all of them
    timeouts = Timeouts(connect_s=1, total_s=2, connect_attempts=50, deadline_s=0.3)
    http = GatewayHttp(http_session, gateway="t", timeouts=timeouts)
    attempts = counted(http, monkeypatch)
    started = time.monotonic()
    with pytest.raises(TransientGatewayError):
        await http.request("GET", f"http://127.0.0.1:{free_port()}/")
    # Then it retried, but gave up near the deadline
    assert 2 <= len(attempts) < 50
    assert time.monotonic() - started < 3


async def test_a_retry_reaches_a_server_that_came_up(
    serve: Serve, http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a provider that starts listening only after our first attempt was refused
    port = free_port()
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    original = http._request_once
    attempts: list[str] = []

    async def attempt(*args: Any, **kwargs: Any) -> HttpReply:
        try:
            reply = await original(*args, **kwargs)
        except TransientGatewayError:
            attempts.append("refused")
            if len(attempts) == 1:
                await serve(app_with("GET", "/", ok), port=port)
            raise
        attempts.append("answered")
        return reply

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="up")

    monkeypatch.setattr(http, "_request_once", attempt)
    # When requested / Then the retry got through
    reply = await http.request("GET", f"http://127.0.0.1:{port}/")
    assert reply.text == "up"
    assert attempts == ["refused", "answered"]


async def test_total_timeout_is_transient_maybe_sent_and_not_retried(
    serve: Serve, http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a provider that takes longer than our total timeout
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    url = await serve(app_with("POST", "/send", slow))
    timeouts = Timeouts(connect_s=1, total_s=0.3, connect_attempts=3, deadline_s=5)
    http = GatewayHttp(http_session, gateway="t", timeouts=timeouts)
    attempts = counted(http, monkeypatch)
    # When requested
    with pytest.raises(OutcomeUnknown) as caught:
        await http.request("POST", f"{url}/send?password=Hunter2Secret", data={"a": "b"})
    # Then it may have been accepted, so it is not retried here
    host = url.removeprefix("http://")
    assert str(caught.value) == (
        f"t: {host} did not answer in time; the message may have been accepted"
    )
    assert caught.value.request_sent is True
    assert len(attempts) == 1
    # And nothing chained to it names the URL's password (hidden contexts included)
    assert caught.value.__cause__ is None
    assert not any("Hunter2Secret" in text for text in every_text(caught.value))


async def test_connect_timeout_error_holds_no_secret_from_the_url(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a host whose accept queue is full (so connecting hangs), and a password in the URL
    listener, fillers = saturated_listener()
    port = listener.getsockname()[1]
    timeouts = Timeouts(connect_s=0.3, total_s=5, connect_attempts=2, deadline_s=2)
    http = GatewayHttp(http_session, gateway="legacy", timeouts=timeouts)
    try:
        # When requested
        with pytest.raises(TransientGatewayError) as caught:
            await http.request("GET", f"http://127.0.0.1:{port}/send?password=Hunter2Secret")
    finally:
        for sock in (listener, *fillers):
            sock.close()
    # Then it is a connect timeout, never sent, named by host only
    error = caught.value
    assert type(error) is TransientGatewayError and error.request_sent is False
    assert str(error) == f"legacy: connecting to 127.0.0.1:{port} timed out"
    # And nothing chained to it holds the password, not even a suppressed context (loggers
    # and error trackers can reach one)
    assert error.__cause__ is None
    assert not any("Hunter2Secret" in text for text in every_text(error))


async def test_read_timeout_error_holds_no_secret_from_the_url(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given a host that takes the connection and never answers, and a password in the URL
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: the request goes out, no reply comes
        port = listener.getsockname()[1]
        timeouts = Timeouts(connect_s=1, total_s=0.3, connect_attempts=3, deadline_s=2)
        http = GatewayHttp(http_session, gateway="legacy", timeouts=timeouts)
        # When requested
        with pytest.raises(OutcomeUnknown) as caught:
            await http.request("POST", f"http://127.0.0.1:{port}/send?password=Hunter2Secret")
    # Then the outcome is unknown, and no text chained to it holds the password
    assert caught.value.request_sent is True and caught.value.__cause__ is None
    assert not any("Hunter2Secret" in text for text in every_text(caught.value))


async def test_connection_closed_mid_request_is_transient_and_not_retried(
    http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server that reads the POST and hangs up without answering
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    attempts = counted(http, monkeypatch)
    try:
        with pytest.raises(OutcomeUnknown) as caught:
            await http.request("POST", f"http://127.0.0.1:{port}/send", data={"to": "1"})
    finally:
        server.close()
        await server.wait_closed()
    assert str(caught.value) == (
        f"t: 127.0.0.1:{port} closed the connection before answering (ServerDisconnectedError)"
    )
    assert caught.value.request_sent is True
    assert caught.value.__cause__ is None
    assert len(attempts) == 1


# --- requests that cannot be built or trusted --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999/send?password=Hunter2Secret",  # port out of range
        "http:///send?password=Hunter2Secret",  # no host
        "/send?password=Hunter2Secret",  # not absolute
        "http://[::1/send?password=Hunter2Secret",
        "ftp://127.0.0.1/send?password=Hunter2Secret",
    ],
    ids=["bad-port", "no-host", "relative", "broken-ipv6-host", "not-http"],
)
async def test_a_url_that_cannot_be_requested_rejects_the_account(
    http_session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    # Given a URL the client cannot even send to
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    attempts = counted(http, monkeypatch)
    # When requested
    with pytest.raises(AccountRejected) as caught:
        await http.request("POST", url)
    # Then the account's URL is to blame: never sent, not retried, no URL or cause shown
    error = caught.value
    assert error.request_sent is False and len(attempts) == 1
    assert str(error).startswith("t: the request could not be built (")
    assert str(error).endswith("); check the account's URL")
    assert error.__cause__ is None
    assert not any("Hunter2Secret" in text for text in every_text(error))


async def test_an_untrusted_certificate_is_reported_as_tls(
    http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given an HTTPS provider whose certificate nobody signed
    files = self_signed_certificate(tmp_path)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runner = web.AppRunner(app_with("GET", "/", ok), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=files.server_context()).start()
    port = runner.addresses[0][1]
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    try:
        # When requested
        with pytest.raises(AccountRejected) as caught:
            await http.request("GET", f"https://127.0.0.1:{port}/?token=Hunter2Secret")
    finally:
        await runner.cleanup()
    # Then TLS failed with that host: the URL or the certificate is to fix, nothing was sent
    error = caught.value
    assert str(error).startswith(f"t: TLS with 127.0.0.1:{port} failed (")
    assert error.request_sent is False and error.__cause__ is None
    assert not any("Hunter2Secret" in text for text in every_text(error))


# --- error_for_status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (401, AccountRejected, "prov: provider answered HTTP 401"),
        (403, AccountRejected, "prov: provider answered HTTP 403"),
        (407, AccountRejected, "prov: the proxy refused our credentials (HTTP 407)"),
        (408, TransientGatewayError, "prov: provider answered HTTP 408"),
        (500, TransientGatewayError, "prov: provider answered HTTP 500"),
        (503, TransientGatewayError, "prov: provider answered HTTP 503"),
        (400, PermanentGatewayError, "prov: provider answered HTTP 400"),
        (404, PermanentGatewayError, "prov: provider answered HTTP 404"),
    ],
)
def test_error_for_status(status: int, kind: type[GatewayError], message: str) -> None:
    error = error_for_status(HttpReply(status, {}, b"<html>oops</html>"), "prov")
    assert type(error) is kind
    assert str(error) == message
    assert error.http_status == status and error.gateway == "prov"


def test_error_for_status_names_what_was_called() -> None:
    error = error_for_status(HttpReply(502, {}, b""), "prov", what="balance endpoint")
    assert str(error) == "prov: balance endpoint answered HTTP 502"


def test_429_with_retry_after_seconds() -> None:
    error = error_for_status(HttpReply(429, {"Retry-After": "7"}, b""), "prov")
    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 7.0 and error.http_status == 429


def test_429_with_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = error_for_status(HttpReply(429, {"Retry-After": when}, b""), "prov")
    assert isinstance(error, RateLimited)
    assert 27 <= error.retry_after_s <= 30


def test_429_without_retry_after_waits_the_default() -> None:
    error = error_for_status(HttpReply(429, {}, b""), "prov")
    assert isinstance(error, RateLimited) and error.retry_after_s == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1.0),
        ("", 1.0),
        ("  ", 1.0),
        ("5", 5.0),
        (" 2.5 ", 2.5),
        # A floor of 0.1 s: "now" must not become a busy retry loop.
        ("0", 0.1),
        ("-3", 0.1),
        ("0.05", 0.1),
        ("soon", 1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.1),  # a date in the past: go (almost) now
    ],
)
def test_parse_retry_after(value: str | None, expected: float) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_default_and_future_date() -> None:
    assert parse_retry_after("garbage", default_s=4.0) == 4.0
    assert parse_retry_after(None, default_s=0.5) == 0.5
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 117 <= parse_retry_after(future) <= 120


# --- HttpReply -------------------------------------------------------------------------------


def test_http_reply_json_and_text() -> None:
    assert HttpReply(200, {}, b'{"a": 1}').json() == {"a": 1}
    assert HttpReply(200, {}, b"<html>not json</html>").json() is None
    assert HttpReply(200, {}, b"").json() is None
    assert HttpReply(200, {}, b"\xff\xfe bad utf-8").json() is None
    assert HttpReply(200, {}, "héllo".encode()).text == "héllo"
    assert HttpReply(200, {}, b"ok \xff").text == "ok \ufffd"
    assert "body" not in repr(HttpReply(200, {}, b"secret-ish body"))


# --- probe -----------------------------------------------------------------------------------


async def test_probe_reports_what_answered(
    serve: Serve, http_session: aiohttp.ClientSession
) -> None:
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    url = await serve(app_with("GET", "/{code}", status))
    host = url.removeprefix("http://")
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    # Any HTTP answer proves the host is reachable, even an error status
    found = await http.probe(f"{url}/404")
    assert found.ok and found.reason == f"{host} answered HTTP 404"
    assert (await http.probe(f"{url}/502")).ok
    # Through a proxy, a gateway error means the proxy could not reach the host
    through = await http.probe(f"{url}/502", through_proxy_only=True)
    assert not through.ok
    assert through.reason == f"the proxy accepted us but could not reach {host} (HTTP 502)"
    # And a 407 is the proxy refusing our credentials
    refused = await http.probe(f"{url}/407")
    assert not refused.ok and refused.reason == "the proxy refused our credentials (HTTP 407)"


async def test_probe_of_a_closed_port_fails_with_the_reason(
    http_session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    http = GatewayHttp(http_session, gateway="t", timeouts=FAST)
    result = await http.probe(f"http://127.0.0.1:{port}/?token=Hunter2Secret")
    assert not result.ok
    assert result.reason == f"cannot connect to 127.0.0.1:{port} (ConnectionRefusedError)"
