"""Account resolution from settings: explicit > identity store > default."""

from __future__ import annotations

import pytest

from config.settings import Settings
from gateways.errors import ConfigurationError
from worker.accounts import NoAccount, SettingsAccounts

ACCOUNTS = [
    {"name": "a", "gateway": "vonage", "user_id": "k", "password": "secret-a", "sender": "x"},
    {"name": "b", "gateway": "twilio", "account_id": "AC" + "0" * 32, "password": "secret-b"},
]


def directory(**values: object) -> SettingsAccounts:
    return SettingsAccounts(Settings.model_validate({"accounts": ACCOUNTS, **values}))


async def test_explicit_account_wins() -> None:
    resolved = await directory(default_account="a").resolve("b", None)
    assert resolved.account.name == "b"


async def test_identity_store_link_and_its_region() -> None:
    accounts = directory(
        default_account="a", identity_stores={"corp": {"account": "b", "default_region": "GB"}}
    )
    resolved = await accounts.resolve(None, "corp")
    assert (resolved.account.name, resolved.default_region) == ("b", "GB")


async def test_default_account_and_default_region() -> None:
    resolved = await directory(default_account="a", default_region="us").resolve(None, None)
    assert (resolved.account.name, resolved.default_region) == ("a", "US")


@pytest.mark.parametrize(
    ("values", "account", "store", "message"),
    [
        ({}, None, None, "the job names none, no default is set"),
        ({}, "zzz", None, "gateway account 'zzz' does not exist"),
        ({}, None, "nope", "identity store 'nope' is not known"),
        ({"identity_stores": {"corp": {}}}, None, "corp", "identity store 'corp' links no account"),
    ],
)
async def test_nothing_applies_names_what_was_missing(
    values: dict[str, object], account: str | None, store: str | None, message: str
) -> None:
    with pytest.raises(NoAccount, match=message):
        await directory(**values).resolve(account, store)


def test_a_broken_account_names_its_index_not_its_secret() -> None:
    broken = [{"name": "c", "gateway": "vonage", "password": "secret-c", "url": "ftp://x"}]
    with pytest.raises(
        ConfigurationError, match=r"SMSGW_ACCOUNTS\[0\] is not a valid account"
    ) as caught:
        SettingsAccounts(Settings.model_validate({"accounts": broken}))
    assert "secret-c" not in str(caught.value)
    assert "secret-a" not in repr(Settings.model_validate({"accounts": ACCOUNTS}))
