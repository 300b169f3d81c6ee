"""Encryption keys: configured, rotated, generated for development, refused in production."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from config.settings import Settings
from gateways.errors import ConfigurationError
from worker.crypto import Cipher, DecryptionFailed, generate_key, load_cipher


def test_configured_keys_encrypt_with_the_first_and_decrypt_with_any() -> None:
    old, new = generate_key(), generate_key()
    token = Cipher([old]).encrypt("s3cret")
    cipher = load_cipher(Settings(secret_key=f"{new},{old}"))  # type: ignore[arg-type]
    assert cipher.decrypt(token) == "s3cret"
    assert Cipher([new]).decrypt(cipher.encrypt("x")) == "x"


def test_a_bad_key_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match="smsgw keys generate"):
        Cipher(["not-a-key"])


def test_a_damaged_token_fails_clearly() -> None:
    with pytest.raises(DecryptionFailed):
        Cipher([generate_key()]).decrypt("gAAAAAgarbage")


def test_production_without_a_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SMSGW_SECRET_KEY is not set"):
        load_cipher(Settings(environment="production"), dev_key_file=tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_development_generates_one_private_key_and_reuses_it(tmp_path: Path) -> None:
    key_file = tmp_path / ".smsgw" / "secret.key"
    first = load_cipher(Settings(environment="development"), dev_key_file=key_file)
    second = load_cipher(Settings(environment="development"), dev_key_file=key_file)
    assert second.decrypt(first.encrypt("x")) == "x"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]
