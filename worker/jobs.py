"""The stored job: what a producer enqueued, kept in Redis under its id.

A job is JSON at ``sms:job:{id}`` (the format other-language producers write; see the
README). The access code never sits there in clear: it is the Fernet token
``access_code_enc``. Task messages carry only the job id.

Format::

    {
      "version": 1,
      "id": "3f1c...",                      # 32 hex characters
      "lane": "otp",                        # otp | default | bulk
      "account": null,                      # explicit gateway account name, or null
      "identity_store": "corp-ad",          # the producer's identity store, or null
      "enqueued_at": "2026-11-24T12:00:00Z",
      "message": {                          # ShortMessage, Python names, no access_code
        "message": "Your code is {code}", "phone_numbers": ["+447911123456"],
        "reference_id": "login-123", "max_length": 160, "ttl_s": 300, "expires_at": null
      },
      "access_code_enc": "gAAAAAB...",      # Fernet token of the code, or null
      "campaign": null                      # the campaign id of a campaign's job, or absent
    }
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr

from worker.crypto import Cipher
from worker.models import ShortMessage

__all__ = ["JOB_FORMAT_VERSION", "JobRecord", "new_job_id"]

JOB_FORMAT_VERSION: Final = 1


def new_job_id() -> str:
    """A fresh job id (also the Celery task id)."""
    return uuid.uuid4().hex


class JobRecord(BaseModel):
    """A job as stored; :meth:`short_message` gives the message back with its code."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    version: Literal[1] = JOB_FORMAT_VERSION
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    lane: str = Field(min_length=1)
    account: str | None = None
    identity_store: str | None = None
    enqueued_at: AwareDatetime
    message: dict[str, Any]
    access_code_enc: str | None = None
    campaign: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    @classmethod
    def create(
        cls,
        message: ShortMessage,
        cipher: Cipher,
        *,
        lane: str,
        account: str | None = None,
        identity_store: str | None = None,
        job_id: str | None = None,
        enqueued_at: datetime | None = None,
    ) -> JobRecord:
        """A new job for ``message``, its access code encrypted with ``cipher``."""
        code = message.access_code.get_secret_value() if message.access_code else None
        return cls(
            id=job_id or new_job_id(),
            lane=lane,
            account=account,
            identity_store=identity_store,
            enqueued_at=enqueued_at or datetime.now(UTC),
            message=message.model_dump(mode="json", exclude={"access_code"}),
            access_code_enc=cipher.encrypt(code) if code is not None else None,
        )

    def short_message(self, cipher: Cipher) -> ShortMessage:
        """The message with its access code decrypted.

        Raises:
            DecryptionFailed: The code was encrypted with another key.
            pydantic.ValidationError: The stored message is not a valid ShortMessage.
        """
        code = cipher.decrypt(self.access_code_enc) if self.access_code_enc else None
        fields = dict(self.message)
        if code is not None:
            fields["access_code"] = SecretStr(code)
        return ShortMessage.model_validate(fields)

    def redacted_message(self) -> ShortMessage:
        """The message without decrypting anything; the code shows as redacted when present."""
        fields = dict(self.message)
        if self.access_code_enc:
            fields["access_code"] = SecretStr("redacted")
        return ShortMessage.model_validate(fields)
