"""Worker logging: plain or JSON, job id and lane on every line, numbers masked, secrets gone."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker import logs
from worker.logs import configure_logging, job_context, mask_numbers, redact, scrub_secrets

NUMBER = "+447911123456"
CODE = "Zx!4729q"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """Root logging through a fresh smsgw handler into a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream, logging.getLogger("smsgw.test")
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"sent to {NUMBER}", "sent to +44******3456"),
        ("typed as 07911 123456", "typed as 079*****3456"),
        ("digits 447079692712 only", "digits 447*****2712 only"),
        ("call 858-812-3169 now", "call 858*****3169 now"),
    ],
)
def test_phone_numbers_are_masked_however_written(text: str, expected: str) -> None:
    assert mask_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "job 3f1c2a4b5c6d7e8f90123456789abcde done",  # ids glued to letters
        "at 2026-11-24 12:00:00",  # dates
        "from 192.168.100.200:6379",  # addresses
        "retry in 1.234567890s",  # durations
        "Task sms.send[9f86d081884c7d659a2feaa0c55ad015] succeeded in 0.0123s",
    ],
)
def test_what_is_not_a_phone_number_stays(text: str) -> None:
    assert mask_numbers(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password=hunter2x", "hunter2x"),
        ("token: abc123def", "abc123def"),
        (f'{{"access_code": "{CODE}"}}', CODE),
        (f"AccessCode={CODE}", CODE),
        ("SMSGW_SECRET_KEY=c2VjcmV0LWtleQ", "c2VjcmV0LWtleQ"),
        ("x-api-secret: s3cr3t-v4lue", "s3cr3t-v4lue"),
        ("redis://:r3dis-pw@redis:6379/0", "r3dis-pw"),
        ("http://user:pr0xy-pw@proxy:3128", "pr0xy-pw"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "eyJhbGciOiJIUzI1NiJ9"),
        ("stored gAAAAABnX1c2dGhpcyBpcyBub3QgYSByZWFsIHRva2Vu==", "gAAAAABnX1c2dGhp"),
    ],
)
def test_anything_that_looks_like_a_secret_is_scrubbed(text: str, secret: str) -> None:
    scrubbed = scrub_secrets(text)
    assert secret not in scrubbed
    assert "***" in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "code=482913",
        "otp: 482913",
        "Your code is 482913",
        "To=%2B447911123456&Body=Your+code+482913",
        f"provider said no (code {CODE!r})",
        '{"code": "482913", "lane": "otp"}',
        "verification_code=482913",
        "smsCode=482913",
        "pin: 4829",
        "passcode 482913",
    ],
)
def test_one_time_codes_are_scrubbed_however_written(text: str) -> None:
    scrubbed = redact(text)
    assert "482913" not in scrubbed and CODE not in scrubbed and "4829" not in scrubbed
    assert "***" in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "status_code=429",
        "error_code: 1234",
        "statusCode=4001",
        "HTTP status code 503",
        "twilio: code 21211 (invalid To number)",
        "twilio: unknown code 30007 (HTTP 400)",
        "vonage: HTTP 400 (code 1234, throttled)",
        "lane otp: 1 queued message(s) and no worker consumes it",
    ],
)
def test_status_and_error_codes_stay_readable(text: str) -> None:
    assert redact(text) == text


def test_a_url_encoded_number_is_masked() -> None:
    assert redact("To=%2B447911123456&From=smsgw") == "To=%2B447*****3456&From=smsgw"


def test_scrubbing_keeps_the_shape_of_the_line() -> None:
    assert scrub_secrets("user=alice password=hunter2x lane=otp") == (
        "user=alice password=*** lane=otp"
    )
    assert redact("redis://:pw@redis:6379/0 for +447911123456") == (
        "redis://:***@redis:6379/0 for +44******3456"
    )
    # A closing parenthesis after a scrubbed value stays
    assert redact(f"(code {CODE!r}, token={CODE})") == "(code '***', token=***)"


def test_json_lines_carry_job_and_lane_and_nothing_in_clear(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, log = captured
    configure_logging(fmt="json", stream=stream)
    # When lines are logged inside and outside a job, one with an exception
    with job_context("a" * 32, "otp"):
        log.info("sending to %s with password=%s", NUMBER, "hunter2x")
        try:
            raise ValueError(f"provider said no to {NUMBER} (code {CODE!r}, token={CODE})")
        except ValueError:
            log.exception("failed")
    log.warning("outside any job")
    # Then every line is one JSON object with the job and lane (null outside a job)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in lines] == [
        "sending to +44******3456 with password=***",
        "failed",
        "outside any job",
    ]
    assert [(e["job_id"], e["lane"]) for e in lines] == [("a" * 32, "otp")] * 2 + [(None, None)]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "smsgw.test"
    assert "ValueError" in lines[1]["exception"]
    text = stream.getvalue()
    assert "7911123456" not in text and "hunter2x" not in text and "token=***" in text
    assert CODE not in text  # the exception's text names the code: gone from "exception"


def test_plain_lines_show_lane_and_job(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = captured
    configure_logging(fmt="plain", stream=stream)
    with job_context("b" * 32, "bulk"):
        log.info("to %s", NUMBER)
    log.info("idle")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(f"smsgw.test [bulk {'b' * 32}] to +44******3456")
    assert second.endswith("smsgw.test [- -] idle")


def test_configuring_twice_keeps_one_handler(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = captured
    configure_logging(fmt="plain", stream=io.StringIO())
    configure_logging(fmt="json", stream=stream)
    log.info("once")
    assert len(stream.getvalue().splitlines()) == 1


async def test_each_asyncio_task_keeps_its_own_job(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    # Given jobs dispatched concurrently on one loop, as a bulk batch is
    stream, log = captured
    configure_logging(fmt="json", stream=stream)

    async def job(job_id: str) -> None:
        logs.bind(job_id=job_id, lane="bulk")
        await asyncio.sleep(0.01)
        log.info("done")

    await asyncio.gather(*(job(f"{n:032x}") for n in range(5)))
    # Then each line names its own job, and the context outside them is untouched
    seen = sorted(json.loads(line)["job_id"] for line in stream.getvalue().splitlines())
    assert seen == [f"{n:032x}" for n in range(5)]
    log.info("after")
    assert json.loads(stream.getvalue().splitlines()[-1])["job_id"] is None
