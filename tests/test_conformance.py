"""Every registered gateway through the conformance kit; the built-ins also against the sandbox.

Registered names come from the ``smsgw.gateways`` entry points (aliases included), so an
installed plugin is checked too. Classes load inside the tests, so one broken adapter
fails its own tests, not the collection.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import pytest

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    TransientGatewayError,
)
from gateways.http import Timeouts
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt
from gateways.registry import discover
from gateways.sandbox import DEFAULT_ACCOUNTS, Faults, SandboxServer
from gateways.sandbox.webhook import SANDBOX_OPTIONS
from gateways.testing import (
    ConformanceError,
    check_clone_independence,
    check_diagnostics,
    check_failures_hold_no_secrets,
    check_metadata,
    check_no_secrets,
    check_options_schema,
    check_required_fields,
    check_send_outcomes,
    check_timeout,
    cut_off,
)

ENTRIES = discover()
NAMES = sorted(ENTRIES)

# Which generic fields each built-in's sandbox default account fills (gateways.sandbox.state).
SANDBOX_FIELDS: dict[str, tuple[str, ...]] = {
    "vonage": ("user_id", "password"),
    "twilio": ("account_id", "password"),
    "clickatell": ("password",),
    "clickatell-http": ("account_id", "user_id", "password"),
    "redoxygen": ("account_id", "user_id", "password"),
    "bulletin": ("user_id", "password"),
    "webhook": ("password",),
}
SANDBOX_EXTRAS: dict[str, dict[str, Any]] = {
    "twilio": {"sender": "+15005550006"},  # Twilio's magic "valid From" test number
    "webhook": {"options": SANDBOX_OPTIONS},
}
SANDBOX_NAMES = [name for name in NAMES if name in SANDBOX_FIELDS]

# For plugins the sandbox does not know: every required field gets a dummy value.
DUMMY_FIELDS: dict[str, Any] = {
    "account_id": "conformance-account",
    "user_id": "conformance-user",
    "password": "conformance-secret-7f3a",
    "url": "http://127.0.0.1:9",
    "sender": "+15005550006",
    "proxy_domain": "proxy.invalid",
    "proxy_host_name": "proxy.invalid",
    "proxy_port": 3128,
    "proxy_username": "conformance-proxy-user",
    "proxy_password": "conformance-proxy-secret-9c1e",
}
OFFLINE_URL = "http://127.0.0.1:9"  # for checks that never connect
WRONG_PASSWORD = "wrong-conformance-secret-41d2"
SMS = OutboundSms(to="+447700900123", text="conformance check 1234", client_ref="conf-1/1")


def load(name: str) -> type[SmsGateway]:
    return ENTRIES[name].load()


def sandbox_account(
    cls: type[SmsGateway], url: str, *, gateway: str | None = None
) -> GatewayAccount:
    """The built-in's sandbox default account, in the adapter's field mapping.

    A required field the sandbox does not check (Vonage's sender, say) gets a dummy value.
    """
    provider = cls.metadata.name
    default = next(a for a in DEFAULT_ACCOUNTS if a.provider == provider)
    fields: dict[str, Any] = {name: getattr(default, name) for name in SANDBOX_FIELDS[provider]}
    fields.update(SANDBOX_EXTRAS.get(provider, {}))
    for name in cls.metadata.required_fields():
        fields.setdefault(name, DUMMY_FIELDS[name])
    return GatewayAccount.model_validate(
        {**fields, "name": "conformance", "gateway": gateway or provider, "url": url}
    )


def valid_account(name: str, cls: type[SmsGateway]) -> GatewayAccount:
    """An account ``cls`` accepts, registered under ``name`` (which may be an alias)."""
    if cls.metadata.name in SANDBOX_FIELDS:
        return sandbox_account(cls, OFFLINE_URL, gateway=name)
    required = {field: DUMMY_FIELDS[field] for field in cls.metadata.required_fields()}
    return GatewayAccount.model_validate(
        {**required, "name": "conformance", "gateway": name, "url": OFFLINE_URL}
    )


# --- every registered name ----------------------------------------------------------------


def test_the_built_ins_are_registered() -> None:
    # Given the installed entry points / Then every built-in (and the nexmo alias) is there
    assert set(SANDBOX_FIELDS) | {"nexmo"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_loads_under_its_own_name_or_alias(name: str) -> None:
    # Given a registered name / When its class loads
    cls = load(name)
    # Then the class calls itself by that name or lists it as an alias
    assert name == cls.metadata.name or name in cls.metadata.aliases


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(name: str) -> None:
    check_metadata(load(name))


@pytest.mark.parametrize("name", NAMES)
def test_options_schema_renders(name: str) -> None:
    schema = check_options_schema(load(name))
    assert schema["type"] == "object"


@pytest.mark.parametrize("name", NAMES)
def test_required_fields_are_enforced(name: str) -> None:
    cls = load(name)
    check_required_fields(cls, valid_account(name, cls))


@pytest.mark.parametrize("name", NAMES)
async def test_clone_changes_the_clone_only(name: str, http_session: aiohttp.ClientSession) -> None:
    cls = load(name)
    check_clone_independence(cls(valid_account(name, cls), http_session))


@pytest.mark.parametrize("name", NAMES)
async def test_no_secret_in_reprs_errors_or_check_reasons(
    name: str, http_session: aiohttp.ClientSession
) -> None:
    # Given an adapter with its credentials
    cls = load(name)
    account = valid_account(name, cls)
    gateway = cls(account, http_session)
    # When a send cannot connect, times out after connecting, meets a proxy's 407 (plain and
    # CONNECT), the checks run against a closed port, and required fields are missing
    errors: list[BaseException] = [*await check_failures_hold_no_secrets(gateway, SMS)]
    assert [type(error) for error in errors[1:]] == [
        OutcomeUnknown,
        AccountRejected,
        AccountRejected,
    ]
    results = await check_diagnostics(cut_off(gateway))
    required = cls.metadata.required_fields()
    if required:
        fields = {**account.model_dump(), required[0]: None}
        with pytest.raises(ConfigurationError) as missing:
            cls(GatewayAccount.model_validate(fields), http_session)
        errors.append(missing.value)
    # Then no secret (nor the message text) shows anywhere, and nothing claimed success
    check_no_secrets(gateway, [SMS.text], errors=errors)
    assert not results["test_connection"]
    assert not results["test_credentials"]
    secret = account.secret("password")
    for result in results.values():
        assert not secret or secret not in result.reason


# --- built-ins against the sandbox ------------------------------------------------------


@pytest.mark.parametrize("name", SANDBOX_NAMES)
async def test_sandbox_send_outcomes(
    name: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the built-in on its sandbox default account
    cls = load(name)
    gateway = cls(sandbox_account(cls, sandbox.url), http_session)

    async def fail_next(_gateway: SmsGateway) -> None:
        sandbox.state.set_faults(name, "*", Faults(error_next=1))

    async def wrong_password(target: SmsGateway) -> SmsGateway:
        return target.clone(password=WRONG_PASSWORD)

    # When it sends, then sends into a 5xx, then with a wrong password
    outcomes = await check_send_outcomes(
        gateway,
        success_sms=SMS,
        transient_trigger=fail_next,
        permanent_trigger=wrong_password,
        permanent_error=AccountRejected,
    )
    # Then the success reached the inbox, and the failures hold no secret
    [message] = sandbox.state.messages(provider=name)
    assert (message.to.lstrip("+"), message.text) == ("447700900123", SMS.text)
    assert set(outcomes.receipt.provider_message_ids) <= {*message.message_ids} or all(
        ref.startswith(f"{name}:") for ref in outcomes.receipt.provider_message_ids
    )
    check_no_secrets(
        gateway,
        [WRONG_PASSWORD, SMS.text],
        errors=[outcomes.transient, outcomes.permanent],
    )


@pytest.mark.parametrize("fault", ["accept_then_drop_next", "accept_then_hang_next"])
@pytest.mark.parametrize("name", SANDBOX_NAMES)
async def test_accepted_but_unanswered_is_outcome_unknown(
    name: str, fault: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the provider takes the next message, then drops the connection (or hangs past
    # the adapter's timeout) instead of answering
    cls = load(name)
    gateway = cls(sandbox_account(cls, sandbox.url), http_session, timeouts=Timeouts(total_s=0.5))
    sandbox.state.set_faults(name, "*", Faults.model_validate({fault: 1, "hang_s": 2}))
    # When it sends
    with pytest.raises(OutcomeUnknown) as caught:
        await gateway.send(SMS)
    # Then the adapter cannot know, and says so, while the message is in fact on its way
    [message] = sandbox.state.messages(provider=name)
    assert message.text == SMS.text
    assert caught.value.request_sent
    check_no_secrets(gateway, [SMS.text], errors=[caught.value])
    # And the fault was used up: the next send gets its answer
    assert (await gateway.send(SMS)).provider_message_ids


@pytest.mark.parametrize("name", SANDBOX_NAMES)
async def test_sandbox_diagnostics(
    name: str, sandbox: SandboxServer, http_session: aiohttp.ClientSession
) -> None:
    # Given the built-in on its sandbox account, and a copy with a wrong password
    cls = load(name)
    gateway = cls(sandbox_account(cls, sandbox.url), http_session)
    # When its checks run
    good = await check_diagnostics(gateway)
    bad = await check_diagnostics(gateway.clone(password=WRONG_PASSWORD))
    # Then the host answers, good credentials pass (or the check says it cannot tell),
    # wrong ones never pass, no proxy means a skipped proxy check, and nothing was sent
    assert good["test_connection"], good["test_connection"].reason
    assert good["test_credentials"] or good["test_credentials"].skipped
    assert not bad["test_credentials"], bad["test_credentials"].reason
    assert good["test_proxy"].skipped
    assert sandbox.state.messages() == []


# --- the kit itself catches broken adapters ---------------------------------------------


class _Good(SmsGateway):
    """A well-behaved test adapter.

    account field   meaning
    -------------   -------
    user_id         user
    password        secret
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name="good",
        description="a test adapter",
        url="https://api.example.com",
        user_id_required=True,
        password_required=True,
        field_names={"user_id": "user", "password": "secret"},
        capabilities=Capabilities(),
    )

    async def send(self, sms: OutboundSms) -> SendReceipt:
        raise NotImplementedError

    async def test_credentials(self) -> CheckResult:
        return CheckResult(False, "not checked", skipped=True)


GOOD_ACCOUNT = GatewayAccount(name="t", gateway="good", user_id="u", password="p-secret-1")


def _variant(**metadata: Any) -> type[SmsGateway]:
    fields = {**_Good.metadata.model_dump(), **metadata}
    return type(
        "Variant", (_Good,), {"metadata": GatewayMetadata(**fields), "__doc__": _Good.__doc__}
    )


def test_kit_accepts_a_good_adapter() -> None:
    check_metadata(_Good)
    check_options_schema(_Good)
    check_required_fields(_Good, GOOD_ACCOUNT)


@pytest.mark.parametrize(
    ("variant", "problem"),
    [
        (_variant(description=" "), "description is empty"),
        (_variant(name="Good SMS"), "must be lower-case"),
        (_variant(url="ftp://example.com"), "not an http(s) URL"),
        (_variant(url=None), "url_required must be True"),
        (_variant(field_names={"api_key": "key"}), "non-generic keys ['api_key']"),
        (_variant(capabilities=Capabilities(max_segments=300)), "max_segments"),
        (_variant(account_id_required=True), "docstring does not mention required"),
        (type("NoDoc", (_Good,), {}), "needs a docstring"),
    ],
)
def test_kit_rejects_bad_metadata(variant: type[SmsGateway], problem: str) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_metadata(variant)
    assert problem in str(caught.value)


def test_kit_rejects_unenforced_required_fields() -> None:
    # Given an adapter whose check_account lets anything through
    class Lax(_Good):
        """user_id password"""

        @classmethod
        def check_account(cls, account: GatewayAccount) -> None:
            return None

    # When checked / Then the kit says which field went unenforced
    with pytest.raises(ConformanceError, match="accepted an account with user_id=None"):
        check_required_fields(Lax, GOOD_ACCOUNT)


async def test_kit_rejects_leaks_and_shared_state(http_session: aiohttp.ClientSession) -> None:
    # Given an adapter whose repr shows its secret, and one whose clone keeps the account
    class Leaky(_Good):
        """user_id password"""

        def __repr__(self) -> str:
            return f"<Leaky {self.account.secret('password')}>"

    class Sticky(_Good):
        """user_id password"""

        def clone(self, **changes: Any) -> Any:
            clone = type(self)(self.account, self.session)
            clone.account = self.account
            return clone

    # When checked / Then both are caught
    with pytest.raises(ConformanceError, match=r"a secret shows in repr\(gateway\)"):
        check_no_secrets(Leaky(GOOD_ACCOUNT, http_session))
    leaky_error = GatewayError("good: refused p-secret-1", gateway="good")
    with pytest.raises(ConformanceError, match="error #0"):
        check_no_secrets(_Good(GOOD_ACCOUNT, http_session), errors=[leaky_error])
    with pytest.raises(ConformanceError, match="must not share the account"):
        check_clone_independence(Sticky(GOOD_ACCOUNT, http_session))


async def test_kit_finds_a_secret_in_a_hidden_context(http_session: aiohttp.ClientSession) -> None:
    # Given an error raised `from None` while handling one that quotes the secret
    try:
        try:
            raise ValueError("https://api.example.com/send?key=p-secret-1")
        except ValueError:
            raise GatewayError("good: refused", gateway="good") from None
    except GatewayError as error:
        hidden = error
    assert hidden.__suppress_context__ and hidden.__cause__ is None
    # When checked / Then the kit still finds it: loggers and error trackers can reach it
    with pytest.raises(ConformanceError, match="error #0"):
        check_no_secrets(_Good(GOOD_ACCOUNT, http_session), errors=[hidden])


async def test_kit_rejects_a_timeout_reported_as_plainly_transient(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given an adapter that turns every failure into a plain "retry later"
    class Blunt(_Good):
        """user_id password"""

        async def send(self, sms: OutboundSms) -> SendReceipt:
            try:
                await self.http.request("POST", f"{self.base_url}/send")
            except GatewayError:
                raise TransientGatewayError("good: failed", gateway="good") from None
            return SendReceipt(provider_message_ids=("x",))

    # When its timeout is checked / Then the kit says the outcome must be unknown
    with pytest.raises(ConformanceError, match="expected OutcomeUnknown"):
        await check_timeout(Blunt(GOOD_ACCOUNT, http_session), SMS)


async def test_kit_rejects_a_send_that_succeeds_when_it_should_fail(
    http_session: aiohttp.ClientSession,
) -> None:
    # Given an adapter that claims success without calling anyone
    class Liar(_Good):
        """user_id password"""

        async def send(self, sms: OutboundSms) -> SendReceipt:
            return SendReceipt(provider_message_ids=("fake",))

    async def nothing(_gateway: SmsGateway) -> None:
        return None

    # When its outcomes are checked / Then the missing transient failure is reported
    with pytest.raises(ConformanceError, match="send succeeded"):
        await check_send_outcomes(
            Liar(GOOD_ACCOUNT, http_session, timeouts=Timeouts()),
            success_sms=SMS,
            transient_trigger=nothing,
            permanent_trigger=nothing,
        )
