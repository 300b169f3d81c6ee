"""The gateway registry: built-ins through entry points, the enabled list, lookups.

Plugins, duplicates and broken registrations are in ``test_plugins.py``.
"""

from __future__ import annotations

import pytest

from gateways.base import SmsGateway
from gateways.errors import UnknownGateway
from gateways.registry import ENTRY_POINT_GROUP, discover, gateway_names, load_gateway

BUILT_INS = {
    "vonage": "gateways.vonage:VonageGateway",
    "nexmo": "gateways.vonage:VonageGateway",
    "clickatell": "gateways.clickatell:ClickatellGateway",
    "clickatell-http": "gateways.clickatell_http:ClickatellHttpGateway",
    "redoxygen": "gateways.redoxygen:RedOxygenGateway",
    "bulletin": "gateways.bulletin:BulletinGateway",
    "twilio": "gateways.twilio:TwilioGateway",
    "webhook": "gateways.webhook:WebhookGateway",
}


def test_every_built_in_is_discovered_from_smsgw_itself() -> None:
    # Given smsgw's own entry points / When discovering
    found = discover()
    # Then every built-in is there, declared by the smsgw distribution, without importing it
    assert ENTRY_POINT_GROUP == "smsgw.gateways"
    for name, target in BUILT_INS.items():
        assert name in found, f"{name} is not registered"
        assert found[name].target == target
        assert found[name].distribution == "smsgw"


def test_gateway_names_are_sorted_and_complete() -> None:
    names = gateway_names()
    assert names == sorted(names)
    assert set(BUILT_INS) <= set(names)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_each_built_in_loads_under_its_own_name(name: str) -> None:
    # When the registered class is loaded (the rest of its contract: test_conformance.py)
    cls = load_gateway(name)
    # Then it is a gateway that answers to the name it is registered under
    assert issubclass(cls, SmsGateway)
    assert name == cls.metadata.name or name in cls.metadata.aliases
    assert f"{cls.__module__}:{cls.__qualname__}" == BUILT_INS[name]


def test_nexmo_is_an_alias_of_vonage() -> None:
    assert load_gateway("nexmo") is load_gateway("vonage")
    assert "nexmo" in load_gateway("vonage").metadata.aliases


def test_enabled_limits_the_names() -> None:
    # Given only two gateways enabled (plus one that is not installed)
    enabled = {"vonage", "twilio", "not-installed"}
    # Then only the installed, enabled ones are listed
    assert gateway_names(enabled) == ["twilio", "vonage"]
    assert gateway_names(set()) == []


def test_installed_but_not_enabled_says_so() -> None:
    # Given twilio is installed but not in the enabled list
    assert "twilio" in gateway_names()
    # When it is asked for / Then the error says it exists but is off
    with pytest.raises(UnknownGateway) as caught:
        load_gateway("twilio", enabled={"vonage"})
    assert str(caught.value) == "gateway 'twilio' is installed but not enabled"
    assert caught.value.name == "twilio" and caught.value.suggestion is None


def test_enabled_gateway_loads() -> None:
    assert load_gateway("vonage", enabled={"vonage"}).metadata.name == "vonage"


def test_suggestions_come_only_from_enabled_names() -> None:
    # Given only vonage enabled, a typo of it is suggested
    with pytest.raises(UnknownGateway, match="did you mean 'vonage'"):
        load_gateway("vonag", enabled={"vonage"})
    # But a typo of a disabled gateway suggests nothing it could not load
    with pytest.raises(UnknownGateway) as caught:
        load_gateway("twillio", enabled={"vonage"})
    assert caught.value.suggestion is None


def test_unknown_name_without_a_close_match() -> None:
    with pytest.raises(UnknownGateway) as caught:
        load_gateway("carrier-pigeon")
    assert str(caught.value) == "unknown gateway 'carrier-pigeon'"
    assert caught.value.suggestion is None


def test_typo_of_a_built_in_is_suggested() -> None:
    with pytest.raises(UnknownGateway, match=r"unknown gateway 'clickatel'; did you mean"):
        load_gateway("clickatel")
