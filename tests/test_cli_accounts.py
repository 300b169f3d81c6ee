"""``smsgw accounts|stores|keys rotate`` against real Redis, the sandbox and a real proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner, Result

from config.settings import Settings, override_settings
from gateways.sandbox import SandboxServer
from tests.proxy_server import ProxyServer
from worker.cli import main
from worker.cli_output import (
    EXIT_CONFIG,
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
)
from worker.crypto import Cipher, generate_key
from worker.jobs import JobRecord
from worker.keys import accounts_key, job_key
from worker.models import ShortMessage

SANDBOX_SECRET = "sandbox-secret"  # the sandbox's documented Vonage password
WRONG_SECRET = "Wrong!secret-3310"
PROXY_USER = "cli-proxy-user"
PROXY_PASSWORD = "Cli!Proxy-pw-8812"
KEY = generate_key()
TO = "+447400123456"


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Iterator[Settings]:
    """Settings pointing the CLI at the test database, with a key."""
    with override_settings(state_redis_url=redis_url, secret_key=KEY) as settings:
        yield settings


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    with ProxyServer(
        tmp_path_factory.mktemp("proxy"), username=PROXY_USER, password=PROXY_PASSWORD
    ) as server:
        yield server


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env)


def create_vonage(
    sandbox: SandboxServer, name: str = "main", secret: str = SANDBOX_SECRET, *extra: str
) -> Result:
    return run(
        "accounts", "create", name, "--gateway", "vonage", "--url", sandbox.url,
        "--user-id", "sandbox1", "--sender", "Acme", "--password-stdin", *extra,
        stdin=secret + "\n",
    )  # fmt: skip


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SANDBOX_SECRET, WRONG_SECRET, PROXY_PASSWORD):
            assert secret not in text, f"a secret was printed: {text!r}"


def test_create_show_list_modify_delete(cli: Settings, sandbox: SandboxServer) -> None:
    # Given an account created with its password on stdin
    created = create_vonage(sandbox)
    assert created.exit_code == EXIT_OK, created.output
    # When shown and listed as JSON / Then the password is masked everywhere
    shown = run("accounts", "show", "main", "--json")
    listed = run("accounts", "list", "--json")
    table = run("accounts", "show", "main")
    assert shown.exit_code == listed.exit_code == table.exit_code == EXIT_OK
    payload = json.loads(shown.stdout)
    assert (payload["password"], payload["source"], payload["sender"]) == (
        "********",
        "stored",
        "Acme",
    )
    assert [row["name"] for row in json.loads(listed.stdout)] == ["main"]
    assert_no_secret(created.output, shown.output, listed.output, table.output)
    # When modified / Then the change shows, and the password stayed
    modified = run("accounts", "modify", "main", "--sender", "Other", "--countries", "gb,ie")
    assert modified.exit_code == EXIT_OK, modified.output
    payload = json.loads(run("accounts", "show", "main", "--json").stdout)
    assert (payload["sender"], payload["countries"]) == ("Other", ["GB", "IE"])
    assert run("accounts", "test", "main", "--credentials").exit_code == EXIT_OK
    # When deleted / Then it is gone
    assert run("accounts", "delete", "main").exit_code == EXIT_OK
    missing = run("accounts", "show", "main")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "gateway account 'main' does not exist" in missing.stderr


def test_missing_required_fields_are_named_in_one_error(cli: Settings) -> None:
    result = run("accounts", "create", "tw", "--gateway", "twilio")
    assert result.exit_code == EXIT_INVALID
    assert "missing required field(s): account_id (Account SID), password (Auth Token" in (
        result.stderr
    )
    typo = run("accounts", "create", "x", "--gateway", "clickatel")
    assert typo.exit_code == EXIT_INVALID
    assert "did you mean 'clickatell'" in typo.stderr


def test_a_password_in_argv_warns_and_an_env_variable_is_read(
    cli: Settings, sandbox: SandboxServer, redis_client: redis.Redis
) -> None:
    argv = run(
        "accounts", "create", "a", "--gateway", "vonage", "--user-id", "k", "--sender", "s",
        "--password", "Argv!secret-1",
    )  # fmt: skip
    assert argv.exit_code == EXIT_OK
    assert "shell history" in argv.stderr
    from_env = run(
        "accounts", "create", "b", "--gateway", "vonage", "--user-id", "k", "--sender", "s",
        "--password-env", "MY_VONAGE_SECRET", env={"MY_VONAGE_SECRET": "Env!secret-2"},
    )  # fmt: skip
    assert from_env.exit_code == EXIT_OK, from_env.output
    unset = run(
        "accounts", "create", "c", "--gateway", "vonage", "--user-id", "k", "--sender", "s",
        "--password-env", "NOT_SET_ANYWHERE_4411",
    )  # fmt: skip
    assert unset.exit_code == 2
    assert "NOT_SET_ANYWHERE_4411 is not set" in unset.output
    stored = " ".join(redis_client.hvals(accounts_key()))
    assert "Argv!secret-1" not in stored and "Env!secret-2" not in stored


def test_without_a_key_secrets_are_refused_with_the_hint(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with override_settings(state_redis_url=redis_url, secret_key=None, environment="production"):
        result = run(
            "accounts", "create", "a", "--gateway", "vonage", "--user-id", "k", "--sender",
            "s", "--password-stdin", stdin="pw\n",
        )  # fmt: skip
    assert result.exit_code == EXIT_CONFIG
    assert "smsgw keys generate" in result.stderr
    assert redis_client.hlen(accounts_key()) == 0


def test_default_stores_links_and_delete_protection(cli: Settings, sandbox: SandboxServer) -> None:
    assert create_vonage(sandbox, "main", SANDBOX_SECRET, "--default").exit_code == EXIT_OK
    assert create_vonage(sandbox, "spare").exit_code == EXIT_OK
    # A store created after the default links to it
    created = run("stores", "create", "corp", "--region", "gb", "--json")
    assert json.loads(created.stdout) == {
        "name": "corp", "account": "main", "default_region": "GB", "source": "stored"
    }  # fmt: skip
    # Deleting a linked account is refused, naming the store
    refused = run("accounts", "delete", "main", "--force")
    assert refused.exit_code == EXIT_CONFLICT
    assert "linked to identity store(s) corp" in refused.stderr
    # Relinking frees it; as the default it still needs --force, which warns
    assert run("stores", "link", "corp", "spare").exit_code == EXIT_OK
    assert json.loads(run("stores", "show", "corp", "--json").stdout)["resolves_to"] == "spare"
    default = run("accounts", "delete", "main")
    assert default.exit_code == EXIT_CONFLICT
    assert "choose another default first" in default.stderr
    forced = run("accounts", "delete", "main", "--force")
    assert forced.exit_code == EXIT_OK
    assert "was the default account" in forced.stderr
    assert json.loads(run("accounts", "default", "--json").stdout) == {"default": None}
    # Unlinking leaves the store without an account (no default now)
    assert run("stores", "unlink", "corp").exit_code == EXIT_OK
    shown = json.loads(run("stores", "show", "corp", "--json").stdout)
    assert shown["resolves_to"] is None
    assert "links no account and no default is set" in shown["problem"]
    region = run("stores", "region", "corp", "de", "--json")
    assert json.loads(region.stdout)["default_region"] == "DE"
    unknown = run("stores", "region", "corp", "XX")
    assert unknown.exit_code == EXIT_INVALID and "not an ISO 3166 region" in unknown.stderr
    assert run("stores", "region", "corp", "--clear").exit_code == EXIT_OK
    assert json.loads(run("stores", "show", "corp", "--json").stdout)["default_region"] is None
    assert run("stores", "delete", "corp").exit_code == EXIT_OK
    assert json.loads(run("stores", "list", "--json").stdout) == []


# --- accounts test -------------------------------------------------------------------------


def test_all_checks_pass_against_the_sandbox(cli: Settings, sandbox: SandboxServer) -> None:
    create_vonage(sandbox)
    result = run("accounts", "test", "main")
    assert result.exit_code == EXIT_OK, result.output
    for check in ("connection", "credentials", "proxy"):
        assert check in result.stdout
    assert "balance endpoint answered" in result.stdout
    payload = json.loads(run("accounts", "test", "main", "--json").stdout)
    assert payload["ok"] is True
    verdicts = {row["check"]: (row["ok"], row["skipped"]) for row in payload["checks"]}
    assert verdicts == {
        "connection": (True, False), "credentials": (True, False), "proxy": (True, True)
    }  # fmt: skip


def test_a_real_test_message_is_sent_and_the_answer_reported(
    cli: Settings, sandbox: SandboxServer
) -> None:
    create_vonage(sandbox)
    result = run("accounts", "test", "main", "--to", "+44 7400 123456", "--json")
    assert result.exit_code == EXIT_OK, result.output
    [row] = json.loads(result.stdout)["checks"]
    [message] = sandbox.state.messages(provider="vonage")
    assert message.to == TO.lstrip("+")
    assert "test message from gateway account main" in message.text
    assert row["check"] == "send" and row["ok"] is True
    assert message.message_ids[0] in row["reason"]
    bad = run("accounts", "test", "main", "--to", "12345")
    assert bad.exit_code == 2
    assert "international format" in bad.output
    # An account limited to other countries refuses the test recipient before sending
    assert run("accounts", "modify", "main", "--countries", "DE").exit_code == EXIT_OK
    outside = run("accounts", "test", "main", "--to", TO)
    assert outside.exit_code == 2
    assert "a number of GB; account 'main' sends only to DE" in outside.output
    assert len(sandbox.state.messages(provider="vonage")) == 1


def test_bad_credentials_fail_with_the_providers_reason(
    cli: Settings, sandbox: SandboxServer
) -> None:
    create_vonage(sandbox, "main", WRONG_SECRET)
    result = run("accounts", "test", "main")
    assert result.exit_code == EXIT_INVALID
    assert "fail" in result.stdout
    payload = json.loads(run("accounts", "test", "main", "--credentials", "--json").stdout)
    [row] = payload["checks"]
    assert row["ok"] is False and "refused" in row["reason"]
    send = json.loads(run("accounts", "test", "main", "--to", TO, "--json").stdout)
    assert send["ok"] is False
    assert sandbox.state.messages(provider="vonage") == []
    assert_no_secret(result.output, json.dumps(payload), json.dumps(send))


def test_a_bad_proxy_password_fails_the_proxy_check(
    cli: Settings, sandbox: SandboxServer, proxy: ProxyServer
) -> None:
    # Given an account behind a proxy, first with the right proxy password
    proxied = (
        "--proxy-host", "127.0.0.1", "--proxy-port", str(proxy.port),
        "--proxy-username", PROXY_USER, "--proxy-password-env", "PROXY_PW",
    )  # fmt: skip
    created = CliRunner().invoke(
        main,
        ["accounts", "create", "px", "--gateway", "vonage", "--url", sandbox.url,
         "--user-id", "sandbox1", "--sender", "Acme", "--password-env", "VONAGE_PW", *proxied],
        env={"VONAGE_PW": SANDBOX_SECRET, "PROXY_PW": PROXY_PASSWORD},
    )  # fmt: skip
    assert created.exit_code == EXIT_OK, created.output
    good = run("accounts", "test", "px", "--proxy", "--json")
    assert json.loads(good.stdout)["checks"][0]["ok"] is True, good.output
    # When the proxy password is wrong / Then the proxy check fails and says why
    changed = run(
        "accounts", "modify", "px", "--proxy-password-env", "PROXY_PW",
        env={"PROXY_PW": WRONG_SECRET},
    )  # fmt: skip
    assert changed.exit_code == EXIT_OK, changed.output
    result = run("accounts", "test", "px")
    assert result.exit_code == EXIT_INVALID
    payload = json.loads(run("accounts", "test", "px", "--proxy", "--json").stdout)
    [row] = payload["checks"]
    assert row == {
        "check": "proxy",
        "ok": False,
        "reason": "the proxy refused our credentials (HTTP 407)",
        "skipped": False,
    }
    assert_no_secret(result.output, good.output)


# --- import / export / rotate --------------------------------------------------------------


def test_import_export_round_trip_through_the_cli(
    cli: Settings, sandbox: SandboxServer, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Given the example file, its secrets in environment variables
    example = Path(__file__).resolve().parents[1] / "config" / "accounts.example.yaml"
    env = example_environment()
    first = run("accounts", "import", str(example), "--json", env=env)
    assert first.exit_code == EXIT_OK, first.output
    report = json.loads(first.stdout)
    assert set(report["accounts"].values()) == {"created"}
    # When imported again / Then nothing changes
    again = json.loads(run("accounts", "import", str(example), "--json", env=env).stdout)
    assert set(again["accounts"].values()) | set(again["identity_stores"].values()) == {"unchanged"}
    # When exported / Then secrets are references, and the hint names the variables
    exported = run("accounts", "export")
    assert exported.exit_code == EXIT_OK
    assert "${SMSGW_ACCOUNT_" in exported.stdout
    assert_no_secret(exported.output)
    for secret in env.values():
        assert secret not in exported.output
    document: dict[str, Any] = yaml.safe_load(exported.stdout)
    assert json.loads(run("accounts", "export", "--json").stdout) == document
    assert len(document["accounts"]) == len(report["accounts"])
    # And the export re-imports into an empty store with those variables set
    before = json.loads(run("accounts", "list", "--json").stdout)
    redis_client.flushdb()
    path = tmp_path / "export.yaml"
    path.write_text(exported.stdout)
    variables = {
        f"SMSGW_ACCOUNT_{a['name'].upper().replace('-', '_')}_{field.upper()}": "x-" + a["name"]
        for a in document["accounts"]
        for field in ("password", "proxy_password")
        if field in a
    }
    restored = run("accounts", "import", str(path), env=variables)
    assert restored.exit_code == EXIT_OK, restored.output
    assert json.loads(run("accounts", "list", "--json").stdout) == before


def example_environment() -> dict[str, str]:
    example = Path(__file__).resolve().parents[1] / "config" / "accounts.example.yaml"
    text = example.read_text()
    names = sorted(set(__import__("re").findall(r"\$\{([A-Z0-9_]+)\}", text)))
    return {name: f"Example!{index}-secret" for index, name in enumerate(names)}


def test_missing_variable_on_import_is_named(cli: Settings, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "accounts:\n  - name: main\n    gateway: vonage\n    user_id: k\n    sender: s\n"
        "    password: ${NOT_SET_5512}\n"
    )
    result = run("accounts", "import", str(path))
    assert result.exit_code == EXIT_INVALID
    assert "account 'main', field password: environment variable NOT_SET_5512" in result.stderr


def test_a_file_that_is_not_yaml_is_refused_without_printing_its_lines(
    cli: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(f'accounts:\n  - name: main\n    password: "{WRONG_SECRET}\n')
    result = run("accounts", "import", str(path))
    assert result.exit_code == EXIT_INVALID
    assert "not valid YAML (found unexpected end of stream, line 4, column 1)" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_keys_rotate_re_encrypts_and_the_old_key_can_go(
    redis_url: str, redis_client: redis.Redis, sandbox: SandboxServer
) -> None:
    old, new = generate_key(), generate_key()
    with override_settings(state_redis_url=redis_url, secret_key=old):
        assert create_vonage(sandbox).exit_code == EXIT_OK
    token = redis_client.hget(accounts_key(), "main")
    message = ShortMessage(message="Code {code}", access_code="4711", phone_numbers=[TO])
    job = JobRecord.create(message, Cipher([old]), lane="otp")
    redis_client.set(job_key(job.id), job.model_dump_json(), ex=600)
    with override_settings(state_redis_url=redis_url, secret_key=f"{new},{old}"):
        rotated = run("keys", "rotate", "--json")
    assert rotated.exit_code == EXIT_OK, rotated.output
    assert json.loads(rotated.stdout) == {"rotated": 1, "jobs_rotated": 1, "jobs_unreadable": 0}
    stored_job = JobRecord.model_validate_json(redis_client.get(job_key(job.id)) or "")
    assert stored_job.short_message(Cipher([new])).access_code is not None
    assert redis_client.hget(accounts_key(), "main") != token
    with override_settings(state_redis_url=redis_url, secret_key=new):
        assert run("accounts", "test", "main", "--credentials").exit_code == EXIT_OK
    with override_settings(state_redis_url=redis_url, secret_key=old):
        wrong = run("accounts", "show", "main")
    assert wrong.exit_code == EXIT_CONFIG
    assert "SMSGW_SECRET_KEY differs" in wrong.stderr


def test_provider_options_are_validated_by_the_type(cli: Settings) -> None:
    base = (
        "accounts", "create", "tw", "--gateway", "twilio", "--account-id", "AC" + "0" * 32,
        "--password-stdin",
    )  # fmt: skip
    bad = run(*base, "--option", "messaging_service_sid=nope", stdin="Tw!token-8812\n")
    assert bad.exit_code == EXIT_INVALID
    assert "options.messaging_service_sid" in bad.stderr
    sid = "MG" + "a" * 32
    good = run(*base, "--option", f"messaging_service_sid={sid}", "--json", stdin="Tw!token-8812\n")
    assert good.exit_code == EXIT_OK, good.output
    assert json.loads(good.stdout)["account"]["options"] == {"messaging_service_sid": sid}
    assert "Tw!token-8812" not in good.output


def test_link_with_a_bad_region_links_nothing(cli: Settings, sandbox: SandboxServer) -> None:
    assert create_vonage(sandbox, "main").exit_code == EXIT_OK
    assert create_vonage(sandbox, "spare").exit_code == EXIT_OK
    assert run("stores", "create", "corp", "--account", "main").exit_code == EXIT_OK
    refused = run("stores", "link", "corp", "spare", "--region", "XX")
    assert refused.exit_code == EXIT_INVALID and "not an ISO 3166 region" in refused.stderr
    assert json.loads(run("stores", "show", "corp", "--json").stdout)["account"] == "main"
    linked = run("stores", "link", "corp", "spare", "--region", "ie", "--json")
    assert (json.loads(linked.stdout)["account"], json.loads(linked.stdout)["default_region"]) == (
        "spare",
        "IE",
    )


def test_a_non_geographic_test_number_is_named_as_such(
    cli: Settings, sandbox: SandboxServer, redis_url: str
) -> None:
    # Given an account limited to GB, and toll-free numbers allowed as recipients
    with override_settings(
        state_redis_url=redis_url,
        secret_key=KEY,
        allowed_number_types=frozenset({"MOBILE", "TOLL_FREE"}),
    ):
        create_vonage(sandbox, "main", SANDBOX_SECRET, "--countries", "GB")
        # When tested with an international freephone number (+800, no country)
        outside = run("accounts", "test", "main", "--to", "+80012345678")
    # Then it is refused as a number of no known country (not "a number of 001")
    assert outside.exit_code == 2
    assert "a number of no known country; account 'main' sends only to GB" in outside.output
    assert sandbox.state.messages(provider="vonage") == []
