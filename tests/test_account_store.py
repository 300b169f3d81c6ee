"""The account store in real Redis: CRUD, validation, encryption at rest, rotation, links,
resolution order, delete protection, import/export and the workers' versioned cache."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from config.settings import Settings
from gateways.base import GENERIC_FIELDS
from gateways.errors import AccountRejected
from gateways.models import GatewayAccount
from gateways.registry import gateway_names, load_gateway
from tests.harness import database_text
from worker.account_cache import CachedAccounts
from worker.account_io import (
    AccountsFile,
    export_document,
    import_document,
    load_document,
    referenced_variables,
)
from worker.account_status import AccountStatusRecorder
from worker.account_store import (
    AccountConflict,
    AccountNotFound,
    AccountStore,
    AccountUnreadable,
    IdentityStore,
    InvalidAccount,
    SecretsNeedKey,
)
from worker.accounts import NoAccount
from worker.crypto import Cipher, generate_key
from worker.keys import account_statuses_key, accounts_key, accounts_version_key

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "acme-sms"
PASSWORD = "Vn!secret-4471"
PROXY_PASSWORD = "Px!secret-9902"
KEY = generate_key()


def vonage(name: str = "main", **changes: Any) -> GatewayAccount:
    fields: dict[str, Any] = {
        "name": name,
        "gateway": "vonage",
        "user_id": "key-1",
        "password": PASSWORD,
        "sender": "Acme",
    }
    return GatewayAccount.model_validate({**fields, **changes})


def make_store(client: Redis, cipher: Cipher | None = None, **settings: Any) -> AccountStore:
    return AccountStore(client, Settings.model_validate(settings), cipher)


@pytest.fixture
async def store(async_redis: Redis) -> AsyncIterator[AccountStore]:
    yield make_store(async_redis, Cipher([KEY]))


# --- CRUD ----------------------------------------------------------------------------------


async def test_account_round_trip(store: AccountStore) -> None:
    # Given a created account
    created = vonage(proxy_host_name="proxy.local", proxy_password=PROXY_PASSWORD, rate_per_s=5)
    await store.create(created)
    # When read back, modified, and read again
    view = await store.view()
    assert view.account("main") == created
    assert view.account("main").secret("proxy_password") == PROXY_PASSWORD
    modified = await store.modify("main", {"sender": "Other", "countries": ["ie", "gb"]})
    # Then the change is kept and everything else is as it was
    again = (await store.view()).account("main")
    assert again == modified
    assert (again.sender, again.countries, again.rate_per_s) == ("Other", ("GB", "IE"), 5)
    assert again.secret("password") == PASSWORD
    # And delete removes it
    assert await store.delete("main") == []
    with pytest.raises(AccountNotFound, match="'main' does not exist"):
        (await store.view()).account("main")


async def test_names_are_unique_and_accounts_cannot_be_renamed(store: AccountStore) -> None:
    await store.create(vonage())
    with pytest.raises(AccountConflict, match="'main' already exists"):
        await store.create(vonage(sender="Other"))
    with pytest.raises(InvalidAccount, match="cannot be renamed"):
        await store.modify("main", {"name": "other"})
    with pytest.raises(AccountNotFound):
        await store.modify("nope", {"sender": "x"})


async def test_identity_store_round_trip(store: AccountStore) -> None:
    await store.create(vonage())
    await store.create(vonage("second"))
    created = await store.create_store("corp", account="main", default_region="gb")
    assert (created.account, created.default_region) == ("main", "GB")
    await store.link("corp", "second")
    assert (await store.view()).store("corp") == created.__class__("corp", "second", "GB")
    await store.link("corp", None)
    assert (await store.view()).linked_stores("second") == []
    await store.delete_store("corp")
    assert (await store.view()).stores() == []
    with pytest.raises(AccountNotFound, match="identity store 'corp' does not exist"):
        await store.link("corp", "main")
    with pytest.raises(AccountNotFound, match="gateway account 'ghost'"):
        await store.create_store("x", account="ghost")
    with pytest.raises(InvalidAccount, match="not an ISO 3166 region"):
        await store.create_store("y", default_region="XX")


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("gateway", gateway_names())
async def test_every_missing_required_field_is_named_at_once(
    store: AccountStore, gateway: str
) -> None:
    # Given an account of a type with only its name and type
    meta = load_gateway(gateway).metadata
    required = meta.required_fields()
    if not required:
        pytest.skip(f"{gateway} requires no field")
    # When it is created / Then one error names every required field, with the provider's name
    with pytest.raises(InvalidAccount) as caught:
        await store.create(GatewayAccount(name="bare", gateway=gateway))
    message = str(caught.value)
    for field in required:
        assert meta.label(field) in message
    assert [f for f in GENERIC_FIELDS if f not in required and f"{f} (" in message] == []
    assert await store.redis.hlen(accounts_key()) == 0


async def test_a_plugin_type_is_validated_too(
    store: AccountStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the example plugin installed (its entry point visible to importlib.metadata)
    acme = install_acme(tmp_path, monkeypatch)
    # When an ACME account lacks its API key / Then it is named; with it, the account is kept
    with pytest.raises(InvalidAccount, match=r"missing required field\(s\): password \(API key\)"):
        await store.create(GatewayAccount(name="acme-1", gateway="acme"))
    with pytest.raises(InvalidAccount, match=r"options\.priority"):
        await store.create(
            GatewayAccount(name="acme-1", gateway="acme", password="k", options={"priority": 9})
        )
    await store.create(GatewayAccount(name="acme-1", gateway="acme", password="k"))
    assert (await store.view()).account("acme-1").gateway == acme.AcmeGateway.metadata.name


def install_acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    info = tmp_path / "acme_sms-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sms\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[smsgw.gateways]\nacme = acme_sms:AcmeGateway\n")
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("acme_sms")


async def test_unknown_type_and_country_are_refused(store: AccountStore) -> None:
    with pytest.raises(InvalidAccount, match="did you mean 'vonage'"):
        await store.create(vonage(gateway="vonnage"))
    with pytest.raises(InvalidAccount, match="unknown country code"):
        await store.create(vonage(countries=["GB", "ZZ"]))


# --- encryption ----------------------------------------------------------------------------


async def test_secrets_are_encrypted_at_rest(
    store: AccountStore, redis_client: redis.Redis, redis_url: str
) -> None:
    # Given an account with a password and a proxy password
    await store.create(vonage(proxy_host_name="p", proxy_password=PROXY_PASSWORD))
    # Then no Redis key or value holds either in clear
    dump = database_text(redis_url)
    assert "key-1" in dump  # the scan sees the account
    assert PASSWORD not in dump and PROXY_PASSWORD not in dump
    stored = json.loads(redis_client.hget(accounts_key(), "main") or "{}")
    assert set(stored["secrets"]) == {"password", "proxy_password"}
    assert "password" not in stored["fields"]


async def test_a_wrong_key_fails_clearly(async_redis: Redis, store: AccountStore) -> None:
    await store.create(vonage())
    other = make_store(async_redis, Cipher([generate_key()]))
    with pytest.raises(AccountUnreadable, match=r"'main'.*SMSGW_SECRET_KEY differs") as caught:
        (await other.view()).account("main")
    assert PASSWORD not in str(caught.value)
    # And a job resolving it fails permanently with that reason (NoAccount), not a crash
    with pytest.raises(NoAccount, match="differs"):
        await CachedAccounts(other).resolve("main", None)


async def test_without_a_key_secrets_are_refused_with_the_hint(async_redis: Redis) -> None:
    keyless = make_store(async_redis, None)
    with pytest.raises(SecretsNeedKey, match="smsgw keys generate"):
        await keyless.create(vonage())
    await keyless.create(GatewayAccount(name="open", gateway="webhook", url="http://x.test"))
    assert (await keyless.view()).account("open").password is None


async def test_rotation_re_encrypts_every_secret(async_redis: Redis, store: AccountStore) -> None:
    # Given two accounts encrypted with the old key
    await store.create(vonage(proxy_host_name="p", proxy_password=PROXY_PASSWORD))
    await store.create(vonage("second"))
    before = await async_redis.hgetall(accounts_key())
    # When the new key is put first and the secrets rotated
    new = generate_key()
    rotated = await make_store(async_redis, Cipher([new, KEY])).rotate()
    # Then every secret was re-encrypted and opens with the new key alone
    assert rotated == 3
    after = await async_redis.hgetall(accounts_key())
    assert all(before[name] != after[name] for name in before)
    view = await make_store(async_redis, Cipher([new])).view()
    assert view.account("main").secret("proxy_password") == PROXY_PASSWORD
    assert view.account("second").secret("password") == PASSWORD
    # And with a key list that cannot open them, rotation changes nothing and says why
    with pytest.raises(AccountUnreadable, match="none of the keys"):
        await make_store(async_redis, Cipher([generate_key()])).rotate()
    assert await async_redis.hgetall(accounts_key()) == after


# --- default, links, resolution, delete protection -----------------------------------------


async def test_default_links_itself_to_stores_created_after_it(store: AccountStore) -> None:
    await store.create(vonage())
    before = await store.create_store("early")
    await store.set_default("main")
    after = await store.create_store("late")
    explicit = await store.create_store("other", account="main")
    assert (before.account, after.account, explicit.account) == (None, "main", "main")
    with pytest.raises(AccountNotFound):
        await store.set_default("ghost")


async def test_resolution_order(store: AccountStore) -> None:
    for name in ("explicit", "linked", "fallback"):
        await store.create(vonage(name))
    await store.create_store("corp", account="linked", default_region="DE")
    await store.create_store("bare")
    view = await store.view()
    # No default yet: the store's link, then nothing
    assert view.resolve("explicit", "corp").account.name == "explicit"
    resolved = view.resolve(None, "corp")
    assert (resolved.account.name, resolved.default_region) == ("linked", "DE")
    with pytest.raises(NoAccount, match="identity store 'bare' links no account and no default"):
        view.resolve(None, "bare")
    with pytest.raises(NoAccount, match="the job names none, no default is set"):
        view.resolve(None, None)
    with pytest.raises(NoAccount, match="identity store 'ghost' is not known"):
        view.resolve(None, "ghost")
    with pytest.raises(NoAccount, match="gateway account 'ghost' does not exist"):
        view.resolve("ghost", None)
    # With a default: it serves unlinked stores and jobs naming nothing
    await store.set_default("fallback")
    view = await store.view()
    assert view.resolve(None, "bare").account.name == "fallback"
    assert view.resolve(None, None).account.name == "fallback"
    assert view.resolve(None, "corp").account.name == "linked"


async def test_delete_is_refused_while_linked_and_for_the_default(store: AccountStore) -> None:
    await store.create(vonage())
    await store.create(vonage("spare"))
    await store.create_store("corp", account="main")
    await store.create_store("lab", account="main")
    with pytest.raises(AccountConflict, match="linked to identity store\\(s\\) corp, lab"):
        await store.delete("main", force=True)
    await store.set_default("spare")
    with pytest.raises(AccountConflict, match="is the default account; choose another"):
        await store.delete("spare")
    [warning] = await store.delete("spare", force=True)
    assert "now fail until a default is set" in warning
    view = await store.view()
    assert view.default is None
    assert "main" in view.account_names()


async def test_provisioned_accounts_are_visible_and_read_only(async_redis: Redis) -> None:
    provisioned = {
        "accounts": [vonage("env-acct").model_dump(mode="json") | {"password": PASSWORD}],
        "identity_stores": {"env-store": {"account": "env-acct"}},
        "default_account": "env-acct",
    }
    store = make_store(async_redis, Cipher([KEY]), **provisioned)
    view = await store.view()
    assert view.account_names() == {"env-acct": "environment"}
    assert view.resolve(None, None).account.name == "env-acct"
    with pytest.raises(AccountConflict, match="already exists \\(environment\\)"):
        await store.create(vonage("env-acct"))
    with pytest.raises(AccountConflict, match="change the environment instead"):
        await store.modify("env-acct", {"sender": "x"})
    with pytest.raises(AccountConflict, match="change the environment instead"):
        await store.delete("env-acct")
    with pytest.raises(AccountConflict, match="read-only"):
        await store.link("env-store", None)
    # A stored default wins over SMSGW_DEFAULT_ACCOUNT, and stores may link either kind
    await store.create(vonage("stored"))
    await store.set_default("stored")
    assert (await store.view()).resolve(None, None).account.name == "stored"
    assert (await store.create_store("mixed", account="env-acct")).account == "env-acct"


# --- import / export -----------------------------------------------------------------------


def example_document() -> AccountsFile:
    return AccountsFile.model_validate(
        {
            "default": "main",
            "accounts": [
                {
                    "name": "main",
                    "gateway": "vonage",
                    "user_id": "key-1",
                    "password": "${TEST_MAIN_PASSWORD}",
                    "sender": "Acme",
                    "countries": ["GB"],
                    "bulk_share": 0.5,
                },
                {
                    "name": "proxied",
                    "gateway": "twilio",
                    "account_id": "AC" + "1" * 32,
                    "password": "${TEST_TWILIO_TOKEN}",
                    "sender": "+15005550006",
                    "proxy_host_name": "proxy.local",
                    "proxy_password": "${TEST_PROXY_PASSWORD}",
                },
            ],
            "identity_stores": [
                {"name": "corp", "account": "proxied", "default_region": "GB"},
                {"name": "lab"},
            ],
        }
    )


ENVIRON = {
    "TEST_MAIN_PASSWORD": PASSWORD,
    "TEST_TWILIO_TOKEN": "tw-token-5521",
    "TEST_PROXY_PASSWORD": PROXY_PASSWORD,
}


async def test_import_is_idempotent_and_export_round_trips(
    async_redis: Redis, store: AccountStore
) -> None:
    # Given a file with references to the environment
    first = await import_document(store, example_document(), ENVIRON)
    assert first.accounts == {"main": "created", "proxied": "created"}
    assert first.stores == {"corp": "created", "lab": "created"}
    assert first.default == "created"
    # When imported again / Then nothing changes, and the version did not move
    version = await store.version()
    again = await import_document(store, example_document(), ENVIRON)
    assert not again.changed
    assert set(again.accounts.values()) == set(again.stores.values()) == {"unchanged"}
    assert await store.version() == version
    # When exported / Then no secret is in clear: each is a reference
    exported = export_document(await store.view())
    text = json.dumps(exported)
    assert PASSWORD not in text and PROXY_PASSWORD not in text and "tw-token-5521" not in text
    assert exported["accounts"][0]["password"] == "${SMSGW_ACCOUNT_MAIN_PASSWORD}"
    assert exported["accounts"][1]["proxy_password"] == "${SMSGW_ACCOUNT_PROXIED_PROXY_PASSWORD}"
    # And importing the export into an empty store, with those variables set, restores it
    before = await store.view()
    await async_redis.flushdb()
    restored_env = {
        "SMSGW_ACCOUNT_MAIN_PASSWORD": PASSWORD,
        "SMSGW_ACCOUNT_PROXIED_PASSWORD": "tw-token-5521",
        "SMSGW_ACCOUNT_PROXIED_PROXY_PASSWORD": PROXY_PASSWORD,
    }
    await import_document(store, AccountsFile.model_validate(exported), restored_env)
    after = await store.view()
    assert {n: after.account(n) for n in after.account_names()} == {
        n: before.account(n) for n in before.account_names()
    }
    assert after.stores() == before.stores()
    assert after.default == "main"
    without = export_document(after, omit_secrets=True)
    assert all("password" not in a and "proxy_password" not in a for a in without["accounts"])


async def test_import_with_a_missing_variable_names_it_and_writes_nothing(
    store: AccountStore,
) -> None:
    environ = {k: v for k, v in ENVIRON.items() if k != "TEST_PROXY_PASSWORD"}
    with pytest.raises(
        InvalidAccount,
        match="account 'proxied', field proxy_password: environment variable "
        "TEST_PROXY_PASSWORD is not set",
    ):
        await import_document(store, example_document(), environ)
    assert (await store.view()).account_names() == {}


async def test_import_refuses_links_to_unknown_accounts(store: AccountStore) -> None:
    document = AccountsFile.model_validate({"identity_stores": [{"name": "x", "account": "nope"}]})
    with pytest.raises(AccountNotFound, match="identity store 'x': gateway account 'nope'"):
        await import_document(store, document, {})


# --- the workers' cache --------------------------------------------------------------------


async def test_cache_rechecks_the_version_at_most_every_refresh(store: AccountStore) -> None:
    # Given a cache with a clock the test moves
    now = [0.0]
    cache = CachedAccounts(store, refresh_s=1.0, clock=lambda: now[0])
    await store.create(vonage())
    assert (await cache.resolve("main", None)).account.sender == "Acme"
    # When the account changes / Then the old view is used until the refresh interval passed
    await store.modify("main", {"sender": "Changed"})
    now[0] = 0.5
    assert (await cache.resolve("main", None)).account.sender == "Acme"
    now[0] = 1.6
    assert (await cache.resolve("main", None)).account.sender == "Changed"
    # And without a change, later checks read only the version, never the snapshot again
    reloads = cache.reloads
    for step in range(2, 6):
        now[0] = step * 1.1
        await cache.resolve("main", None)
    assert cache.reloads == reloads == 2


async def test_every_change_bumps_the_version(store: AccountStore, async_redis: Redis) -> None:
    await store.create(vonage())
    versions = [await async_redis.get(accounts_version_key())]
    await store.set_default("main")
    versions.append(await async_redis.get(accounts_version_key()))
    await store.create_store("corp")
    versions.append(await async_redis.get(accounts_version_key()))
    await store.modify("main", {"sender": "x"})
    versions.append(await async_redis.get(accounts_version_key()))
    numbers = [int(v) for v in versions]
    assert numbers == sorted(set(numbers)) and numbers[-1] - numbers[0] == 3


async def test_a_miss_rechecks_at_once_before_failing(store: AccountStore) -> None:
    # Given a cache that has just read the (empty) store
    cache = CachedAccounts(store, refresh_s=3600)
    with pytest.raises(NoAccount):
        await cache.resolve("main", None)
    # When the account is created a moment later / Then the next job finds it at once
    await store.create(vonage())
    assert (await cache.resolve("main", None)).account.name == "main"
    # And a job naming a store that exists nowhere still fails, after one re-check
    with pytest.raises(NoAccount, match="identity store 'ghost' is not known"):
        await cache.resolve(None, "ghost")


async def test_concurrent_delete_and_link_never_leave_a_dangling_link(
    store: AccountStore,
) -> None:
    # Given, round after round, an account that one operator deletes while another links a
    # new identity store to it, at the same moment
    for round_ in range(30):
        await store.create(vonage("contested"))
        deleted, linked = await asyncio.gather(
            store.delete("contested"),
            store.create_store(f"s{round_}", account="contested"),
            return_exceptions=True,
        )
        view = await store.view()
        exists = "contested" in view.account_names()
        link = view.store(f"s{round_}")
        # Then exactly one of them won, and no store links to a missing account
        if exists:
            assert isinstance(deleted, AccountConflict) and link is not None
            await store.delete_store(f"s{round_}")
            await store.delete("contested")
        else:
            assert deleted == [] and isinstance(linked, AccountNotFound) and link is None


async def test_import_names_typos_and_warns_about_secrets_in_clear(store: AccountStore) -> None:
    typo = AccountsFile.model_validate(
        {"accounts": [{"name": "main", "gateway": "vonage", "user_id": "k", "pasword": "x"}]}
    )
    with pytest.raises(InvalidAccount, match="account 'main': unknown field\\(s\\) pasword"):
        await import_document(store, typo, {})
    clear = AccountsFile.model_validate(
        {"accounts": [vonage().model_dump(mode="json") | {"password": PASSWORD}]}
    )
    report = await import_document(store, clear, {})
    assert report.accounts == {"main": "created"}
    [warning] = report.warnings
    assert "password is written in clear" in warning
    assert "${SMSGW_ACCOUNT_MAIN_PASSWORD}" in warning
    assert PASSWORD not in warning


# --- read-modify-write, atomic import, the effective default -------------------------------


async def test_concurrent_modifications_of_different_fields_are_all_kept(
    store: AccountStore,
) -> None:
    # Given an account two operators change at the same moment, each a different field
    await store.create(vonage())
    for round_ in range(20):
        await asyncio.gather(
            store.modify("main", {"sender": f"S{round_}"}),
            store.modify("main", {"rate_per_s": round_ + 1}),
            store.modify("main", {"password": f"pw-{round_}"}),
        )
        # Then no change overwrote another with the value it had read before
        account = (await store.view()).account("main")
        assert (account.sender, account.rate_per_s) == (f"S{round_}", round_ + 1)
        assert account.secret("password") == f"pw-{round_}"


def two_accounts_and(**extra: Any) -> AccountsFile:
    return AccountsFile.model_validate(
        {
            "accounts": [
                vonage("a1").model_dump(mode="json") | {"password": PASSWORD},
                *extra.pop("accounts", []),
            ],
            **extra,
        }
    )


async def test_an_import_that_fails_late_writes_nothing(async_redis: Redis) -> None:
    # Given SMSGW_ACCOUNTS provisions "env-acct"
    provisioned = [vonage("env-acct").model_dump(mode="json") | {"password": PASSWORD}]
    store = make_store(async_redis, Cipher([KEY]), accounts=provisioned)
    # When a file holds a valid account, then a store with a bad region / Then nothing is kept
    bad_region = two_accounts_and(identity_stores=[{"name": "s", "default_region": "XX"}])
    with pytest.raises(InvalidAccount, match=r"identity store 's'.*'XX' is not an ISO 3166"):
        await import_document(store, bad_region, {})
    # When a valid account comes before one named like a provisioned account / Then the same
    clash = two_accounts_and(
        accounts=[vonage("env-acct").model_dump(mode="json") | {"password": PASSWORD}]
    )
    with pytest.raises(AccountConflict, match="'env-acct' comes from SMSGW_ACCOUNTS"):
        await import_document(store, clash, {})
    assert await async_redis.keys("*") == []


async def test_an_import_is_one_change_for_the_workers(store: AccountStore) -> None:
    await store.create(vonage("seed"))
    version = int(await store.version() or 0)
    report = await import_document(store, example_document(), ENVIRON)
    assert report.changed and int(await store.version() or 0) == version + 1


async def test_the_environment_default_cannot_be_deleted(async_redis: Redis) -> None:
    # Given SMSGW_DEFAULT_ACCOUNT names a stored account
    store = make_store(async_redis, Cipher([KEY]), default_account="main")
    await store.create(vonage())
    await store.create(vonage("spare"))
    # When it is deleted, even with --force / Then it is refused: it can't be cleared here
    for force in (False, True):
        with pytest.raises(AccountConflict, match="SMSGW_DEFAULT_ACCOUNT names it"):
            await store.delete("main", force=force)
    assert "main" in (await store.view()).account_names()
    # And while a stored default overrides it, it is still refused (the fallback would dangle)
    await store.set_default("spare")
    with pytest.raises(AccountConflict, match="SMSGW_DEFAULT_ACCOUNT names it"):
        await store.delete("main")
    # And deleting the stored default falls back to the environment's, and says so
    [warning] = await store.delete("spare", force=True)
    assert "now use 'main' (SMSGW_DEFAULT_ACCOUNT)" in warning


async def test_link_with_a_bad_region_changes_nothing(store: AccountStore) -> None:
    await store.create(vonage())
    await store.create(vonage("second"))
    await store.create_store("corp", account="main", default_region="GB")
    with pytest.raises(InvalidAccount, match="'XX' is not an ISO 3166"):
        await store.link("corp", "second", default_region="XX")
    assert (await store.view()).store("corp") == IdentityStore("corp", "main", "GB")
    linked = await store.link("corp", "second", default_region="de")
    assert linked == IdentityStore("corp", "second", "DE")
    assert (await store.link("corp", "main")).default_region == "DE"


# --- a lost key: repair by replacing the secrets, backups without the key -------------------


async def test_an_account_the_key_cannot_open_can_be_repaired(async_redis: Redis) -> None:
    # Given an account written with a key that is lost
    await make_store(async_redis, Cipher([generate_key()])).create(
        vonage(proxy_host_name="p", proxy_password=PROXY_PASSWORD)
    )
    store = make_store(async_redis, Cipher([KEY]))
    # When modified without replacing every secret / Then it is refused, saying why
    with pytest.raises(AccountUnreadable, match="cannot be decrypted"):
        await store.modify("main", {"password": "new-pw"})
    # When every secret is replaced / Then it is readable again with the other fields kept
    repaired = await store.modify("main", {"password": "new-pw", "proxy_password": "new-px"})
    again = (await store.view()).account("main")
    assert again == repaired and (again.sender, again.proxy_host_name) == ("Acme", "p")
    assert again.secret("proxy_password") == "new-px"
    # And a re-import over an unreadable account replaces it ("updated")
    lost = make_store(async_redis, Cipher([generate_key()]))
    await lost.modify("main", {"password": "x", "proxy_password": "y"})
    report = await import_document(store, two_accounts_and(), {})
    assert report.accounts == {"a1": "created"}
    document = AccountsFile.model_validate(
        {"accounts": [vonage().model_dump(mode="json") | {"password": PASSWORD}]}
    )
    assert (await import_document(store, document, {})).accounts == {"main": "updated"}
    assert (await store.view()).account("main").secret("password") == PASSWORD


async def test_export_needs_no_key(async_redis: Redis, store: AccountStore) -> None:
    await store.create(vonage(proxy_host_name="p", proxy_password=PROXY_PASSWORD))
    await store.create(GatewayAccount(name="open", gateway="webhook", url="http://x.test"))
    for cipher in (None, Cipher([generate_key()])):
        exported = export_document(await make_store(async_redis, cipher).view())
        main, open_ = exported["accounts"]
        assert main["password"] == "${SMSGW_ACCOUNT_MAIN_PASSWORD}"
        assert main["proxy_password"] == "${SMSGW_ACCOUNT_MAIN_PROXY_PASSWORD}"
        assert main["sender"] == "Acme" and "password" not in open_


async def test_export_gives_accounts_with_similar_names_their_own_variables(
    async_redis: Redis, store: AccountStore
) -> None:
    # Given accounts whose names differ only in punctuation or case
    names = ["main-vonage", "main.vonage", "Main_Vonage", "other"]
    for index, name in enumerate(names):
        await store.create(vonage(name, password=f"pw-{index}"))
    # When exported / Then each secret has its own variable, and the names stay readable
    exported = export_document(await store.view())
    variables = {a["name"]: a["password"][2:-1] for a in exported["accounts"]}
    assert len(set(variables.values())) == len(names)
    assert variables["other"] == "SMSGW_ACCOUNT_OTHER_PASSWORD"
    assert all(
        v.startswith("SMSGW_ACCOUNT_MAIN_VONAGE_") for n, v in variables.items() if "ain" in n
    )
    assert referenced_variables(exported) == sorted(variables.values())
    # And the export, imported with those variables, gives each account its own password
    await async_redis.flushdb()
    environ = {variables[name]: f"pw-{index}" for index, name in enumerate(names)}
    await import_document(store, AccountsFile.model_validate(exported), environ)
    view = await store.view()
    assert [view.account(n).secret("password") for n in names] == [f"pw-{i}" for i in range(4)]


def test_a_yaml_error_never_shows_the_offending_line(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text('accounts:\n  - name: main\n    password: "Sup3rS3cret\n')
    with pytest.raises(InvalidAccount, match=r"not valid YAML.*line \d+, column \d+") as caught:
        load_document(path)
    assert "Sup3rS3cret" not in str(caught.value)


async def test_a_changed_or_deleted_account_loses_its_failing_health_verdict(
    async_redis: Redis, store: AccountStore
) -> None:
    # Given an account whose provider refused its credentials (health shows it failing)
    await store.create(vonage())
    recorder = AccountStatusRecorder(async_redis)
    await recorder.failing("main", AccountRejected("bad credentials", gateway="vonage"))
    await recorder.failing("other", AccountRejected("bad credentials", gateway="vonage"))
    assert await async_redis.hexists(account_statuses_key(), "main")
    # When the operator fixes the account, the verdict about the old settings goes
    await store.modify("main", {"password": "new-secret"})
    assert not await async_redis.hexists(account_statuses_key(), "main")
    # And a deleted account leaves no verdict behind for health to report
    await recorder.failing("main", AccountRejected("bad credentials", gateway="vonage"))
    await store.delete("main")
    assert not await async_redis.hexists(account_statuses_key(), "main")
    # And other accounts' verdicts stay
    assert await async_redis.hexists(account_statuses_key(), "other")
