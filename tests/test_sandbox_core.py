"""The sandbox around the providers: its control API over real HTTP, its state, TLS mode."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateways.sandbox import (
    DEFAULT_ACCOUNTS,
    Faults,
    SandboxAccount,
    SandboxServer,
    SandboxState,
    self_signed_certificate,
)
from gateways.sandbox import server as server_module
from gateways.sandbox.state import InboxMessage


def record(state: SandboxState, provider: str, to: str, text: str = "hello") -> InboxMessage:
    return state.record(
        provider=provider, account="sandbox", sender="ACME", to=to, text=text, message_ids=["m1"]
    )


# --- control API ------------------------------------------------------------------------


async def test_health(sandbox: SandboxServer, http_session: aiohttp.ClientSession) -> None:
    async with http_session.get(f"{sandbox.url}/_sandbox/health") as response:
        assert response.status == 200
        assert await response.json() == {"ok": True}


async def test_messages_are_listed_and_filtered(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given three messages: two providers, two recipients, one of them old
    old = record(sandbox.state, "vonage", "447700900001", "old one")
    old.received_at = 1_000.0
    record(sandbox.state, "vonage", "447700900002", "Grüße €")
    record(sandbox.state, "twilio", "+447700900001", "from twilio")
    url = f"{sandbox.url}/_sandbox/messages"

    async def texts(**query: str) -> list[str]:
        async with http_session.get(url, params=query) as response:
            assert response.status == 200
            return [m["text"] for m in (await response.json())["messages"]]

    # When listed without a filter / Then all, oldest first, with every field
    async with http_session.get(url) as response:
        messages = (await response.json())["messages"]
    assert [m["text"] for m in messages] == ["old one", "Grüße €", "from twilio"]
    assert messages[1] | {"received_at": 0, "id": 0} == {
        "id": 0, "provider": "vonage", "account": "sandbox", "sender": "ACME",
        "to": "447700900002", "text": "Grüße €", "encoding": "GSM-7", "segments": 1,
        "message_ids": ["m1"], "received_at": 0,
    }  # fmt: skip
    # And each filter narrows the list; "to" matches with or without the plus
    assert await texts(provider="vonage") == ["old one", "Grüße €"]
    assert await texts(to="+447700900001") == ["old one", "from twilio"]
    assert await texts(to="447700900001", provider="twilio") == ["from twilio"]
    assert await texts(since="2000") == ["Grüße €", "from twilio"]
    assert await texts(provider="clickatell") == []


async def test_bad_since_is_a_400(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(f"{sandbox.url}/_sandbox/messages?since=yesterday") as response:
        assert response.status == 400
        assert "Unix timestamp" in await response.text()


async def test_delete_messages_empties_the_inbox(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    record(sandbox.state, "vonage", "447700900001")
    async with http_session.delete(f"{sandbox.url}/_sandbox/messages") as response:
        assert response.status == 204
    assert sandbox.state.messages() == []


async def test_faults_can_be_set_listed_and_cleared(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/_sandbox/faults"
    # When a fault is PUT for one provider
    body = {"provider": "vonage", "error_next": 2, "number_errors": {"447700900999": "6"}}
    async with http_session.put(url, json=body) as response:
        assert response.status == 200
        echoed = await response.json()
    # Then it is echoed with its defaults, listed, and in force in the state
    assert echoed["provider"] == "vonage" and echoed["account"] == "*"
    assert echoed["error_next"] == 2 and echoed["hang_s"] == 30.0
    async with http_session.get(url) as response:
        (listed,) = (await response.json())["faults"]
    assert listed == echoed
    faults = sandbox.state.faults_for("vonage", "sandbox")
    assert faults is not None and faults.number_errors == {"447700900999": "6"}
    # When cleared / Then none remain
    async with http_session.delete(url) as response:
        assert response.status == 204
    async with http_session.get(url) as response:
        assert (await response.json())["faults"] == []


@pytest.mark.parametrize(
    "body",
    [{"error_share": 2}, {"drop_next": -1}, {"provider": "vonage", "explode": True}],
    ids=["share-over-1", "negative-counter", "unknown-field"],
)
async def test_invalid_faults_are_a_400(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession, body: dict[str, object]
) -> None:
    async with http_session.put(f"{sandbox.url}/_sandbox/faults", json=body) as response:
        assert response.status == 400
    assert sandbox.state.list_faults() == []


async def test_stats_count_per_provider_and_account(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given two requests, one accepted, one auth failure
    sandbox.state.count("vonage", "sandbox", "requests")
    sandbox.state.count("vonage", "sandbox", "requests")
    record(sandbox.state, "vonage", "447700900001")
    sandbox.state.count("vonage", "?", "auth_failures")
    # When the stats are read
    async with http_session.get(f"{sandbox.url}/_sandbox/stats") as response:
        stats = (await response.json())["stats"]
    # Then each pair has its counters
    by_key = {(s["provider"], s["account"]): s for s in stats}
    assert by_key[("vonage", "sandbox")] == {
        "provider": "vonage", "account": "sandbox",
        "requests": 2, "accepted": 1, "throttled": 0, "auth_failures": 0, "faults": 0,
    }  # fmt: skip
    assert by_key[("vonage", "?")]["auth_failures"] == 1


async def test_accounts_list_masks_passwords(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(f"{sandbox.url}/_sandbox/accounts") as response:
        text = await response.text()
        accounts = (await response.json())["accounts"]
    # Then every default account is listed, none with its password
    assert {(a["provider"], a["name"]) for a in accounts} == {
        (a.provider, a.name) for a in DEFAULT_ACCOUNTS
    }
    assert all(a["password"] == "***" for a in accounts)
    for account in DEFAULT_ACCOUNTS:
        assert account.password and account.password not in text
    vonage = next(a for a in accounts if a["provider"] == "vonage")
    assert vonage["user_id"] == "sandbox1"


async def test_accounts_can_be_added(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    body: dict[str, object] = {"provider": "vonage", "name": "slow", "user_id": "k2"}
    body |= {"password": "s2", "rate_per_s": 2}
    async with http_session.post(f"{sandbox.url}/_sandbox/accounts", json=body) as response:
        assert response.status == 201
        assert await response.json() == {"provider": "vonage", "name": "slow"}
    found = sandbox.state.find_account("vonage", user_id="k2", password="s2")
    assert found is not None and found.rate_per_s == 2
    # And a bad one is refused
    bad = {"provider": "vonage", "name": "x", "rate_per_s": 0}
    async with http_session.post(f"{sandbox.url}/_sandbox/accounts", json=bad) as response:
        assert response.status == 400


async def test_reset_empties_everything_but_accounts(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given an inbox, faults, counters and an extra account
    record(sandbox.state, "vonage", "447700900001")
    sandbox.state.set_faults("vonage", "*", Faults(error_next=1))
    sandbox.state.add_account(SandboxAccount(provider="vonage", name="extra", user_id="x"))
    # When reset
    async with http_session.post(f"{sandbox.url}/_sandbox/reset") as response:
        assert response.status == 204
    # Then only the accounts remain
    assert sandbox.state.messages() == []
    assert sandbox.state.list_faults() == []
    assert sandbox.state.stats() == []
    assert sandbox.state.find_account("vonage", name="extra") is not None


async def test_inbox_page_shows_messages_escaped(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given a message whose text is markup
    record(sandbox.state, "vonage", "447700900001", "<script>alert('x')</script> & co")
    # When the inbox page is fetched
    async with http_session.get(f"{sandbox.url}/_sandbox/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    # Then it lists the message, as text, never as markup
    assert "1 message(s)" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "<script>" not in page
    assert "447700900001" in page


# --- SandboxState -------------------------------------------------------------------------


def test_take_token_allows_a_burst_of_the_rate_then_says_when() -> None:
    # Given an account limited to 5 requests per second
    state = SandboxState()
    account = SandboxAccount(provider="vonage", name="slow", rate_per_s=5)
    # When 10 requests arrive at once
    answers = [state.take_token(account) for _ in range(10)]
    # Then about one second's worth pass and the rest are told to wait a fraction of a second
    allowed = [a for a in answers if a is None]
    waits = [a for a in answers if a is not None]
    assert len(allowed) == 5
    assert all(0 < wait <= 0.2 + 1e-6 for wait in waits)
    (stats,) = state.stats()
    assert stats["throttled"] == 5
    # And the bucket refills at the rate
    time.sleep(0.25)
    assert state.take_token(account) is None


def test_take_token_without_a_rate_never_throttles() -> None:
    state = SandboxState()
    account = SandboxAccount(provider="vonage", name="free")
    assert all(state.take_token(account) is None for _ in range(1000))


def test_decide_fault_next_counters_count_down_in_order() -> None:
    state = SandboxState(seed=1)
    faults = Faults(error_next=2, hang_next=1, drop_next=1)
    decisions = [state.decide_fault(faults) for _ in range(5)]
    assert decisions == ["drop", "hang", "error", "error", "proceed"]
    assert (faults.drop_next, faults.hang_next, faults.error_next) == (0, 0, 0)


def test_decide_after_accept_counters_count_down_in_order() -> None:
    state = SandboxState()
    faults = Faults(accept_then_drop_next=1, accept_then_hang_next=2)
    decisions = [state.decide_after_accept(faults) for _ in range(4)]
    assert decisions == ["drop", "hang", "hang", "answer"]
    assert (faults.accept_then_drop_next, faults.accept_then_hang_next) == (0, 0)
    # And the request-level faults are a separate matter
    assert state.decide_fault(faults) == "proceed"


async def test_accept_then_drop_records_the_message_and_answers_nothing(
    sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the fault set through the control API, as a tester at a terminal would
    body = {"provider": "webhook", "accept_then_drop_next": 1}
    async with http_session.put(f"{sandbox.url}/_sandbox/faults", json=body) as response:
        assert (await response.json())["accept_then_drop_next"] == 1
    # When a message is sent to the simulator
    url = f"{sandbox.url}/_sandbox/webhook/messages"
    headers = {"Authorization": "Bearer sandbox-token"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http_session.post(url, json={"to": "+447700900123", "text": "hi"}, headers=headers)
    # Then it is in the inbox, counted as accepted and as a fault
    [message] = sandbox.state.messages(provider="webhook")
    assert message.text == "hi"
    [stats] = sandbox.state.stats()
    assert (stats["accepted"], stats["faults"]) == (1, 1)


def test_decide_fault_shares_are_drawn() -> None:
    state = SandboxState(seed=7)
    assert {state.decide_fault(Faults(error_share=1.0)) for _ in range(20)} == {"error"}
    assert {state.decide_fault(Faults(drop_share=1.0)) for _ in range(20)} == {"drop"}
    half = [state.decide_fault(Faults(error_share=0.5)) for _ in range(400)]
    assert 120 < half.count("error") < 280
    assert set(half) == {"error", "proceed"}


def test_faults_for_prefers_the_most_specific_setting() -> None:
    state = SandboxState()
    everywhere, provider_wide, one_account = (Faults(latency_ms=n) for n in (1, 2, 3))
    assert state.faults_for("vonage", "sandbox") is None
    state.set_faults("*", "*", everywhere)
    assert state.faults_for("vonage", "sandbox") is everywhere
    state.set_faults("vonage", "*", provider_wide)
    assert state.faults_for("vonage", "sandbox") is provider_wide
    assert state.faults_for("twilio", "sandbox") is everywhere
    state.set_faults("vonage", "sandbox", one_account)
    assert state.faults_for("vonage", "sandbox") is one_account
    assert state.faults_for("vonage", "other") is provider_wide
    # Clearing one level uncovers the next
    state.set_faults("vonage", "sandbox", None)
    assert state.faults_for("vonage", "sandbox") is provider_wide


def test_record_computes_encoding_and_segments() -> None:
    state = SandboxState()
    long_ucs2 = record(state, "vonage", "447700900001", "Ж" * 71)
    assert (long_ucs2.encoding, long_ucs2.segments) == ("UCS-2", 2)
    gsm = record(state, "vonage", "447700900001", "a" * 160)
    assert (gsm.encoding, gsm.segments) == ("GSM-7", 1)
    assert [m.id for m in state.messages()] == [long_ucs2.id, gsm.id]


def test_load_accounts_from_yaml(tmp_path: Path) -> None:
    # Given a YAML list and a YAML mapping with an "accounts" key
    listed = tmp_path / "list.yaml"
    listed.write_text(
        "- provider: vonage\n  name: a\n  user_id: k\n  password: s\n  rate_per_s: 3\n"
        "- {provider: twilio, name: b, account_id: AC1, password: t}\n",
        encoding="utf-8",
    )
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text("accounts:\n  - {provider: webhook, name: c, password: tok}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    # When loaded / Then each becomes SandboxAccounts
    accounts = SandboxState.load_accounts(listed)
    assert [(a.provider, a.name, a.rate_per_s) for a in accounts] == [
        ("vonage", "a", 3.0),
        ("twilio", "b", None),
    ]
    assert SandboxState.load_accounts(mapped)[0].password == "tok"
    assert SandboxState.load_accounts(empty) == []
    # And a state built from them accepts exactly those
    state = SandboxState(accounts)
    assert state.find_account("vonage", user_id="k", password="s") is not None
    assert state.find_account("vonage", user_id="sandbox1") is None


def test_load_accounts_refuses_unknown_shapes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {provider: vonage, name: a, rate_per_s: -1}\n")
    with pytest.raises(ValueError, match="rate_per_s"):
        SandboxState.load_accounts(bad)


# --- TLS ------------------------------------------------------------------------------------


async def test_tls_mode_serves_https_to_a_client_that_trusts_it(tmp_path: Path) -> None:
    # Given the sandbox with a freshly generated self-signed certificate
    tls = self_signed_certificate(tmp_path)
    with SandboxServer(tls=tls) as server:
        assert server.url.startswith("https://127.0.0.1:")
        # When a client that trusts the certificate asks / Then it answers over HTTPS
        connector = aiohttp.TCPConnector(ssl=tls.client_context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{server.url}/_sandbox/health") as response,
        ):
            assert await response.json() == {"ok": True}
        # And a client that does not trust it is refused: the TLS is real
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{server.url}/_sandbox/health")


def test_self_signed_certificate_is_reused(tmp_path: Path) -> None:
    first = self_signed_certificate(tmp_path)
    pem = first.certificate.read_bytes()
    second = self_signed_certificate(tmp_path)
    assert second == first and second.certificate.read_bytes() == pem
    assert first.key.stat().st_mode & 0o077 == 0, "the private key is private"


def test_self_signed_certificate_files_are_written_whole(tmp_path: Path) -> None:
    # Given no certificate yet / When one is made
    files = self_signed_certificate(tmp_path / "tls")
    # Then exactly the two files exist (no temporary left behind), the key private
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "sandbox-cert.pem",
        "sandbox-key.pem",
    ]
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert files.certificate.stat().st_mode & 0o777 == 0o644
    # And they load as a pair
    assert isinstance(files.server_context(), ssl.SSLContext)


def test_a_start_failure_of_any_kind_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an app that cannot be built (not an OSError: a bug, say)
    def broken(state: SandboxState | None = None) -> web.Application:
        raise RuntimeError("provider module broken")

    monkeypatch.setattr(server_module, "build_app", broken)
    started = time.monotonic()
    # When the server starts / Then start() says why, without waiting for its start timeout
    with pytest.raises(RuntimeError, match="failed to start: provider module broken"):
        SandboxServer().start()
    assert time.monotonic() - started < 5
