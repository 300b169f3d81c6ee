"""Settings: environment, .env, validation, secrets and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import (
    DEFAULT_ALLOWED_NUMBER_TYPES,
    Settings,
    get_settings,
    override_settings,
    reload_settings,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings must come from what each test sets, not from the developer's shell or .env.
    for name in ("SMSGW_DEFAULT_REGION", "SMSGW_MAX_LENGTH", "SMSGW_LANES__OTP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = Settings()
    assert settings.max_length == 160
    assert settings.max_parts == 10
    assert settings.default_region is None
    assert settings.allowed_number_types == DEFAULT_ALLOWED_NUMBER_TYPES
    assert settings.lanes.names() == ("otp", "default", "bulk")


def test_environment_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSGW_DEFAULT_REGION", "gb")
    monkeypatch.setenv("SMSGW_MAX_LENGTH", "70")
    monkeypatch.setenv("SMSGW_LANES__OTP", "codes")
    monkeypatch.setenv("SMSGW_ALLOWED_NUMBER_TYPES", '["MOBILE", "FIXED_LINE"]')
    settings = Settings()
    assert settings.default_region == "GB"
    assert settings.max_length == 70
    assert settings.lanes.otp == "codes"
    assert settings.allowed_number_types == {"MOBILE", "FIXED_LINE"}


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SMSGW_MAX_PARTS=4\nSMSGW_SECRET_KEY=s3cr3t-value\n")
    settings = Settings()
    assert settings.max_parts == 4
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "s3cr3t-value"


def test_secrets_do_not_show_in_repr() -> None:
    settings = Settings(
        secret_key="s3cr3t-value",  # type: ignore[arg-type]
        broker_url="redis://:hunter2@redis:6379/0",  # type: ignore[arg-type]
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "s3cr3t-value" not in shown
    assert "hunter2" not in shown


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_region", "GBR", "two-letter ISO 3166 region code"),
        ("max_length", 0, "greater than or equal to 1"),
        ("allowed_number_types", ["MOBILE", "CARRIER_PIGEON"], "Input should be 'FIXED_LINE'"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({field: value})
    assert field in str(caught.value)
    assert message in str(caught.value)


def test_a_validation_error_never_echoes_the_input() -> None:
    # Given a value that may be a secret typed into the wrong field
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"max_length": "hunter2-not-a-number"})
    # Then the error names the field and the rule, not the value
    assert "max_length" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)


def test_accounts_do_not_show_in_repr() -> None:
    # Given an account with its password, as raw settings hold them
    account = {"name": "main", "gateway": "vonage", "password": "pw-s3cr3t-9f3a"}
    settings = Settings(accounts=[account])
    # Then neither repr nor str shows it (the accounts field is left out entirely)
    assert settings.accounts == [account]
    assert "pw-s3cr3t-9f3a" not in repr(settings) + str(settings)


def test_get_settings_is_cached_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    first = reload_settings()
    assert get_settings() is first
    with override_settings(max_length=70) as inner:
        assert get_settings() is inner
        assert get_settings().max_length == 70
    assert get_settings() is first
    monkeypatch.setenv("SMSGW_MAX_LENGTH", "99")
    assert get_settings().max_length == 160  # cached until reloaded
    assert reload_settings().max_length == 99
    monkeypatch.delenv("SMSGW_MAX_LENGTH")
    reload_settings()
