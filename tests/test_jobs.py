"""Stored jobs: the documented format, encryption of the code, redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from worker.crypto import Cipher, DecryptionFailed, generate_key
from worker.jobs import JobRecord
from worker.models import ShortMessage

CODE = "551177"


def test_round_trip_keeps_everything_and_encrypts_the_code() -> None:
    cipher = Cipher([generate_key()])
    message = ShortMessage(
        message="Code {code}", access_code=CODE, phone_numbers=["+447400123456"], ttl_s=60
    )
    record = JobRecord.create(message, cipher, lane="otp", identity_store="corp")
    stored = record.model_dump_json()
    assert CODE not in stored
    data = json.loads(stored)
    assert set(data) == {
        "version", "id", "lane", "account", "identity_store", "enqueued_at", "message",
        "access_code_enc", "campaign",
    }  # fmt: skip
    assert "access_code" not in data["message"]
    loaded = JobRecord.model_validate_json(stored)
    assert loaded.short_message(cipher).render() == f"Code {CODE}"
    assert loaded.redacted_message().access_code is not None
    assert CODE not in loaded.redacted_message().model_dump_json()


def test_another_key_cannot_read_the_code() -> None:
    record = JobRecord.create(
        ShortMessage(message="x", access_code=CODE), Cipher([generate_key()]), lane="otp"
    )
    with pytest.raises(DecryptionFailed, match="producers and workers must share one key"):
        record.short_message(Cipher([generate_key()]))


def test_rotation_reads_old_tokens_with_the_second_key() -> None:
    old, new = generate_key(), generate_key()
    record = JobRecord.create(
        ShortMessage(message="x", access_code=CODE), Cipher([old]), lane="otp"
    )
    assert record.short_message(Cipher([new, old])).access_code.get_secret_value() == CODE  # type: ignore[union-attr]


def test_malformed_records_are_refused_without_echoing_input() -> None:
    with pytest.raises(ValidationError) as caught:
        JobRecord.model_validate(
            {"id": "not-hex", "lane": "otp", "enqueued_at": datetime.now(UTC), "message": {},
             "access_code_enc": CODE, "extra": CODE}
        )  # fmt: skip
    assert "id" in str(caught.value) and "extra" in str(caught.value)
    assert CODE not in str(caught.value)
