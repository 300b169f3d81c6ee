"""Third-party gateway plugins: the example package ``examples/acme-sms``, end to end.

The example is not pip-installed into the test environment. Each test puts its source
directory on ``sys.path`` together with a ``*.dist-info`` record holding its entry point,
which is exactly what ``importlib.metadata`` finds for an installed package.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from gateways import testing
from gateways.base import SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    UnknownGateway,
)
from gateways.models import GatewayAccount, OutboundSms
from gateways.registry import discover, gateway_names, load_gateway
from worker.cli import EXIT_CONFIG, EXIT_OK, main

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "acme-sms"

Register = Callable[..., Path]


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Register:
    """Make a distribution visible to ``importlib.metadata``, as installing it would.

    ``register("acme-sms", {"acme": "acme_sms:AcmeGateway"}, modules={...})`` writes
    ``acme_sms-0.1.0.dist-info/{METADATA,entry_points.txt}`` (and any extra modules) into a
    fresh directory and puts it on ``sys.path``.
    """
    counter = iter(range(1000))

    def _register(
        dist: str, entries: dict[str, str], *, modules: dict[str, str] | None = None
    ) -> Path:
        root = tmp_path / f"site{next(counter)}"
        info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n", encoding="utf-8"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
        (info / "entry_points.txt").write_text(f"[smsgw.gateways]\n{lines}", encoding="utf-8")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        # syspath_prepend also invalidates importlib's caches, metadata ones included.
        monkeypatch.syspath_prepend(str(root))
        return root

    return _register


@pytest.fixture
def acme(register: Register, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin, "installed": its source on the path, its entry point registered."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    register("acme-sms", {"acme": "acme_sms:AcmeGateway"})
    return importlib.import_module("acme_sms")


@pytest.fixture
async def fake_acme(acme: ModuleType) -> AsyncIterator[tuple[Any, str]]:
    """The example's fake ACME server on a loopback port: (fake, base URL)."""
    fake = importlib.import_module("acme_sms.fake_server").FakeAcme()
    async with fake.serve() as url:
        yield fake, url


def acme_account(url: str, api_key: str, **fields: Any) -> GatewayAccount:
    return GatewayAccount(name="acme-main", gateway="acme", url=url, password=api_key, **fields)


# --- discovery --------------------------------------------------------------------------


def test_example_pyproject_declares_the_entry_point() -> None:
    # Given the example's packaging / Then it registers acme -> AcmeGateway and needs smsgw
    text = (EXAMPLE_DIR / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."smsgw.gateways"]' in text
    assert 'acme = "acme_sms:AcmeGateway"' in text
    assert 'dependencies = ["smsgw"]' in text


def test_registered_plugin_is_discovered_next_to_the_built_ins(acme: ModuleType) -> None:
    # Given the example registered / When names are listed / Then acme is among them
    names = gateway_names()
    assert "acme" in names and "vonage" in names
    entry = discover()["acme"]
    assert entry.target == "acme_sms:AcmeGateway"
    assert entry.distribution == "acme-sms"


def test_plugin_is_not_discovered_unless_registered() -> None:
    assert "acme" not in gateway_names()


def test_load_gateway_returns_the_plugin_class(acme: ModuleType) -> None:
    cls = load_gateway("acme")
    assert cls is acme.AcmeGateway
    assert issubclass(cls, SmsGateway)
    assert cls.metadata.name == "acme"


async def test_a_real_send_through_the_loaded_plugin(
    fake_acme: tuple[Any, str], http_session: aiohttp.ClientSession
) -> None:
    # Given the class as the worker gets it: by name, from the registry
    fake, url = fake_acme
    cls = load_gateway("acme")
    gateway = cls(
        acme_account(url, fake.api_key, sender="ACME", options={"priority": "high"}),
        http_session,
    )
    # When a UCS-2 piece is sent
    text = "Код: 123456 ✓"
    receipt = await gateway.send(OutboundSms(to="+447700900123", text=text, client_ref="job-1:0"))
    # Then the fake ACME server received exactly it, and the receipt carries its id
    (message,) = fake.messages
    assert receipt.provider_message_ids == (message.id,)
    assert receipt.segments == 1 and receipt.status == "queued"
    assert (message.to, message.text, message.sender) == ("+447700900123", text, "ACME")
    assert (message.reference, message.priority) == ("job-1:0", "high")


# --- the example's own behaviour, so it cannot rot ---------------------------------------


async def test_plugin_maps_acme_errors_onto_the_error_tree(
    fake_acme: tuple[Any, str], http_session: aiohttp.ClientSession
) -> None:
    fake, url = fake_acme
    gateway = load_gateway("acme")(acme_account(url, fake.api_key), http_session)
    sms = OutboundSms(to="+447700900123", text="hello")
    # Given a throttle / Then RateLimited with the provider's Retry-After
    fake.throttle_next, fake.retry_after_s = 1, 3
    with pytest.raises(RateLimited) as throttled:
        await gateway.send(sms)
    assert throttled.value.retry_after_s == 3.0
    assert throttled.value.provider_code == "throttled"
    # Given an internal error / Then transient
    fake.fail_next = 1
    with pytest.raises(TransientGatewayError, match=r"acme: internal \(internal error\)"):
        await gateway.send(sms)
    # Given a refused recipient / Then that recipient only
    fake.recipient_errors["+447700900999"] = "recipient_opted_out"
    with pytest.raises(RecipientRejected) as refused:
        await gateway.send(OutboundSms(to="+447700900999", text="hello"))
    assert refused.value.http_status == 422
    # Given a wrong key / Then the account, without the key in the message
    with pytest.raises(AccountRejected) as rejected:
        await gateway.clone(password="wrong-key-5521").send(sms)
    assert "wrong-key-5521" not in str(rejected.value)
    assert fake.messages == []


async def test_plugin_unknown_error_code_is_permanent_and_named(
    fake_acme: tuple[Any, str], http_session: aiohttp.ClientSession
) -> None:
    # Given ACME answers with a code the plugin's table does not know
    fake, url = fake_acme
    fake.recipient_errors["+447700900123"] = "quota_exceeded"
    gateway = load_gateway("acme")(acme_account(url, fake.api_key), http_session)
    # When sending / Then it is permanent (never retried blindly) and names the code
    with pytest.raises(PermanentGatewayError) as caught:
        await gateway.send(OutboundSms(to="+447700900123", text="hello"))
    assert type(caught.value) is PermanentGatewayError
    assert str(caught.value) == "acme: unknown code quota_exceeded (HTTP 400)"
    assert caught.value.provider_code == "quota_exceeded"


@pytest.mark.parametrize("body", [{}, {"id": ""}, "not json"], ids=["no-id", "empty", "text"])
async def test_plugin_success_without_an_id_is_outcome_unknown(
    acme: ModuleType, http_session: aiohttp.ClientSession, body: Any
) -> None:
    # Given an ACME that answers 201 without a usable message id
    async def accept(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=201, text=body)
        return web.json_response(body, status=201)

    app = web.Application()
    app.router.add_post("/v1/messages", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    gateway = load_gateway("acme")(acme_account(url, "key-1"), http_session)
    try:
        # When sending / Then the outcome is unknown: it may have been sent
        with pytest.raises(OutcomeUnknown, match="without a message id"):
            await gateway.send(OutboundSms(to="+447700900123", text="hello"))
    finally:
        await runner.cleanup()


async def test_plugin_test_credentials(
    fake_acme: tuple[Any, str], http_session: aiohttp.ClientSession
) -> None:
    fake, url = fake_acme
    gateway = load_gateway("acme")(acme_account(url, fake.api_key), http_session)
    good = await gateway.test_credentials()
    assert good.ok and good.reason == "balance endpoint answered: 12.50 EUR"
    bad = await gateway.clone(password="nope-8812").test_credentials()
    assert not bad.ok
    assert bad.reason == "unauthorized (API key refused)"


def test_plugin_account_validation_names_the_missing_field(acme: ModuleType) -> None:
    cls = load_gateway("acme")
    missing = r"missing required field\(s\): password \(API key\)"
    with pytest.raises(ConfigurationError, match=missing):
        cls.check_account(GatewayAccount(name="x", gateway="acme"))
    with pytest.raises(ConfigurationError, match=r"options\.priority"):
        cls.check_account(acme_account("http://x.test", "k", options={"priority": "urgent"}))


async def test_plugin_passes_the_conformance_kit(
    fake_acme: tuple[Any, str], http_session: aiohttp.ClientSession
) -> None:
    # Given the plugin as a plugin author would test it: against its own fake server
    fake, url = fake_acme
    cls = load_gateway("acme")
    account = acme_account(url, fake.api_key, sender="ACME")
    gateway = cls(account, http_session)
    # When every check of smsgw's conformance kit runs / Then none finds a problem
    testing.check_metadata(cls)
    testing.check_options_schema(cls)
    testing.check_required_fields(cls, account)
    testing.check_clone_independence(gateway)
    unreachable = await testing.check_unreachable(gateway)
    results = await testing.check_diagnostics(gateway)
    assert results["test_connection"].ok and results["test_credentials"].ok

    async def fail_next(gw: SmsGateway) -> None:
        fake.fail_next = 1

    async def wrong_key(gw: SmsGateway) -> SmsGateway:
        return gw.clone(password="wrong-key-0042")

    outcomes = await testing.check_send_outcomes(
        gateway,
        success_sms=OutboundSms(to="+447700900123", text="conformance"),
        transient_trigger=fail_next,
        permanent_trigger=wrong_key,
        permanent_error=AccountRejected,
    )
    testing.check_no_secrets(
        gateway,
        ["wrong-key-0042"],
        errors=[unreachable, outcomes.transient, outcomes.permanent],
    )
    failures = await testing.check_failures_hold_no_secrets(gateway)
    assert [type(error).__name__ for error in failures] == [
        "TransientGatewayError",
        "OutcomeUnknown",
        "AccountRejected",
        "AccountRejected",
    ]


# --- the CLI sees it --------------------------------------------------------------------


def test_cli_lists_the_plugin(acme: ModuleType) -> None:
    # Given the example registered / When `smsgw gateways list` runs
    runner = CliRunner()
    result = runner.invoke(main, ["gateways", "list"], env={"COLUMNS": "200"})
    # Then the table shows its name, description and distribution
    assert result.exit_code == EXIT_OK, result.output
    line = next(line for line in result.output.splitlines() if " acme " in f" {line} ")
    assert "ACME SMS (example plugin)" in line and "acme-sms" in line
    # And the JSON form says the same, with no load error
    rows = json.loads(runner.invoke(main, ["gateways", "list", "--json"]).output)
    (row,) = [row for row in rows if row["name"] == "acme"]
    assert row["description"] == "ACME SMS (example plugin)"
    assert row["source"] == "acme-sms" and row["error"] is None


def test_cli_describes_the_plugin(acme: ModuleType) -> None:
    # Given the example registered / When `smsgw gateways describe acme` runs
    runner = CliRunner()
    result = runner.invoke(main, ["gateways", "describe", "acme"], env={"COLUMNS": "200"})
    # Then it shows metadata, required fields and the field mapping
    assert result.exit_code == EXIT_OK, result.output
    out = result.output
    assert "acme: ACME SMS (example plugin)" in out
    assert "https://api.acme-sms.example" in out
    password_row = next(line for line in out.splitlines() if "password" in line)
    assert "API key" in password_row and "yes" in password_row
    sender_row = next(line for line in out.splitlines() if " sender " in line)
    assert "from" in sender_row and "yes" not in sender_row
    # And the JSON form is complete
    info = json.loads(runner.invoke(main, ["gateways", "describe", "acme", "--json"]).output)
    assert info["required_fields"] == ["password"]
    assert info["field_names"]["password"] == "API key"
    assert info["class"] == "acme_sms:AcmeGateway"
    assert info["capabilities"]["max_segments"] == 6
    assert set(info["options"]) == {"priority"}


def test_cli_describe_of_a_typo_suggests_the_plugin(acme: ModuleType) -> None:
    result = CliRunner().invoke(main, ["gateways", "describe", "acmee"], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_CONFIG
    assert "did you mean 'acme'" in result.output


# --- broken registrations fail loudly ------------------------------------------------------


def test_two_distributions_registering_one_name_is_an_error(
    acme: ModuleType, register: Register
) -> None:
    # Given a second distribution claiming "acme" for another class
    register("acme-fork", {"acme": "acme_fork:ForkGateway"})
    # When discovering / Then it refuses, naming both sides
    with pytest.raises(ConfigurationError) as caught:
        discover()
    message = str(caught.value)
    assert "'acme' is registered twice" in message
    assert "acme_sms:AcmeGateway (from acme-sms)" in message
    assert "acme_fork:ForkGateway (from acme-fork)" in message
    # And nothing loads silently either
    with pytest.raises(ConfigurationError, match="registered twice"):
        load_gateway("vonage")


def test_the_same_target_from_two_records_is_not_a_conflict(
    acme: ModuleType, register: Register
) -> None:
    # Given the same class under the same name twice (an editable and a normal install)
    register("acme-sms-copy", {"acme": "acme_sms:AcmeGateway"})
    # Then discovery keeps one
    assert gateway_names().count("acme") == 1
    assert load_gateway("acme") is acme.AcmeGateway


def test_entry_point_that_is_not_a_gateway_is_refused(register: Register) -> None:
    register(
        "not-a-gateway",
        {"plain": "plain_plugin:Plain"},
        modules={"plain_plugin": "class Plain:\n    pass\n"},
    )
    # Discovery does not import, so listing still works
    assert "plain" in gateway_names()
    with pytest.raises(ConfigurationError, match="is not a subclass of SmsGateway"):
        load_gateway("plain")


def test_entry_point_name_must_match_metadata(acme: ModuleType, register: Register) -> None:
    # Given the example's class registered under a name it does not answer to
    register("acme-misnamed", {"acme2": "acme_sms:AcmeGateway"})
    # Then loading it says what it calls itself and how to fix it
    with pytest.raises(ConfigurationError) as caught:
        load_gateway("acme2")
    assert "calls itself 'acme'" in str(caught.value)
    assert "add 'acme2' to its aliases" in str(caught.value)


def test_entry_point_alias_declared_in_metadata_loads(register: Register) -> None:
    register(
        "aliased",
        {"beta": "aliased_plugin:Alpha", "alpha": "aliased_plugin:Alpha"},
        modules={
            "aliased_plugin": """
                from typing import ClassVar
                from gateways.base import GatewayMetadata, SmsGateway

                class Alpha(SmsGateway):
                    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
                        name="alpha", description="Alpha", aliases=("beta",)
                    )

                    async def send(self, sms):
                        raise NotImplementedError

                    async def test_credentials(self):
                        raise NotImplementedError
            """
        },
    )
    assert load_gateway("beta") is load_gateway("alpha")


def test_entry_point_that_cannot_import_fails_on_load_not_on_list(register: Register) -> None:
    register("ghost", {"ghost": "ghost_plugin_does_not_exist:Ghost"})
    assert "ghost" in gateway_names()
    with pytest.raises(
        ConfigurationError,
        match=r"gateway 'ghost' \(ghost_plugin_does_not_exist:Ghost\) cannot be imported",
    ):
        load_gateway("ghost")


def test_unknown_name_suggests_the_plugin(acme: ModuleType) -> None:
    with pytest.raises(UnknownGateway) as caught:
        load_gateway("acmee")
    assert caught.value.suggestion == "acme"
    assert str(caught.value) == "unknown gateway 'acmee'; did you mean 'acme'?"


async def test_the_pipeline_sends_through_the_plugin(
    fake_acme: tuple[Any, str],
    http_session: aiohttp.ClientSession,
    async_redis: Any,
) -> None:
    # Given an account of the plugin's type, and a job stored as the producer stores it
    from config.settings import override_settings
    from worker.accounts import SettingsAccounts
    from worker.crypto import Cipher, generate_key
    from worker.dispatch import Dispatcher, Finished
    from worker.jobs import JobRecord
    from worker.keys import job_key
    from worker.models import ShortMessage

    fake, url = fake_acme
    account = acme_account(url, fake.api_key, sender="ACME").model_dump(mode="json")
    account["password"] = fake.api_key
    cipher = Cipher([generate_key()])
    with override_settings(accounts=[account], default_account="acme-main") as settings:
        dispatcher = Dispatcher(
            redis=async_redis,
            session=http_session,
            settings=settings,
            accounts=SettingsAccounts(settings),
            cipher=cipher,
        )
        record = JobRecord.create(
            ShortMessage(
                message="Code {code}", access_code="246810", phone_numbers=["447400123456"]
            ),
            cipher,
            lane="otp",
        )
        await async_redis.set(job_key(record.id), record.model_dump_json())
        # When the pipeline dispatches it
        outcome = await dispatcher.dispatch(record.id)
        await dispatcher.aclose()
    # Then the plugin carried it: the fake ACME server has the message, the result its id
    assert isinstance(outcome, Finished)
    (message,) = fake.messages
    assert (message.to, message.text) == ("+447400123456", "Code 246810")
    assert outcome.result.success and outcome.result.gateway == "acme"
    assert outcome.result.recipients[0].provider_message_ids == [message.id]
