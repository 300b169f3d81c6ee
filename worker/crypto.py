"""Encryption of secrets at rest (access codes in stored jobs): Fernet from ``cryptography``.

``SMSGW_SECRET_KEY`` holds one Fernet key, or several separated by commas: the first
encrypts, all decrypt (so keys can be rotated). In development, without a key, one is
generated once under ``.smsgw/secret.key`` so a local stack works out of the box; in
production a missing key is a configuration error that says how to make one.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from config.settings import Settings
from gateways.errors import ConfigurationError

__all__ = ["DEV_KEY_FILE", "Cipher", "DecryptionFailed", "generate_key", "load_cipher"]

DEV_KEY_FILE = Path(".smsgw") / "secret.key"


class DecryptionFailed(ConfigurationError):
    """A stored secret could not be decrypted with the configured key(s)."""


def generate_key() -> str:
    """A new random Fernet key (URL-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


class Cipher:
    """Encrypts and decrypts short secrets with the configured Fernet key(s)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigurationError("no encryption key given")
        try:
            self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
        except ValueError:
            raise ConfigurationError(
                "SMSGW_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes); "
                "generate one with `smsgw keys generate`"
            ) from None

    def encrypt(self, secret: str) -> str:
        """The token for ``secret`` (random each time)."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the first key (it may have been made with any key).

        Raises:
            DecryptionFailed: No configured key opens ``token``.
        """
        try:
            return self._fernet.rotate(token.encode()).decode("ascii")
        except InvalidToken:
            raise DecryptionFailed(
                "a stored secret cannot be decrypted with any key of SMSGW_SECRET_KEY; "
                "keep the old key after the new one until `smsgw keys rotate` has run"
            ) from None

    def decrypt(self, token: str) -> str:
        """The secret behind ``token``.

        Raises:
            DecryptionFailed: The token was made with another key, or is damaged.
        """
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise DecryptionFailed(
                "a stored secret cannot be decrypted: SMSGW_SECRET_KEY differs from the key "
                "it was encrypted with (producers and workers must share one key)"
            ) from None


def load_cipher(settings: Settings, *, dev_key_file: Path = DEV_KEY_FILE) -> Cipher:
    """The cipher for ``settings``.

    Raises:
        ConfigurationError: No key is set outside development.
    """
    if settings.secret_key is not None:
        keys = [k for k in settings.secret_key.get_secret_value().split(",") if k.strip()]
        return Cipher(keys)
    if settings.environment != "development":
        raise ConfigurationError(
            "SMSGW_SECRET_KEY is not set; access codes cannot be stored encrypted. "
            "Generate a key with `smsgw keys generate` and give the same one to producers "
            "and workers"
        )
    if not dev_key_file.exists():
        _create_dev_key(dev_key_file)
    return Cipher([dev_key_file.read_text().strip()])


def _create_dev_key(path: Path) -> None:
    # Written to a private temporary file, then linked into place: processes starting at
    # the same moment all end up reading the one key that won, never a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(generate_key())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
