"""The domain models: origin aliases, redaction of the code, every problem at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from config.settings import Settings
from gateways.errors import InvalidMessage
from worker.models import (
    DeliveryStatus,
    RecipientResult,
    SendSmsMessageResult,
    ShortMessage,
)

CODE = "918273"
ORIGIN_JSON = {
    "AccessCode": CODE,
    "MaxLength": 160,
    "Message": "Your verification code is",
    "PhoneNumbers": ["18588123169", "447079692712", "923225867987"],
    "ReferenceId": "ref-1",
}


def test_origin_pascal_case_names_are_accepted(settings: Settings) -> None:
    # Given the JSON a producer of the origin posts / When parsed
    message = ShortMessage.model_validate(ORIGIN_JSON)
    # Then every field lands on its Python name
    assert message.message == "Your verification code is"
    assert message.phone_numbers == ["18588123169", "447079692712", "923225867987"]
    assert message.reference_id == "ref-1"
    assert message.max_length == 160
    assert message.access_code is not None
    assert message.access_code.get_secret_value() == CODE


def test_python_names_are_accepted_too(settings: Settings) -> None:
    message = ShortMessage(message="hi", phone_numbers=["+447911123456"], max_length=70)
    assert message.max_length == 70


def test_max_length_defaults_to_the_settings_value() -> None:
    from config.settings import override_settings

    with override_settings(max_length=140):
        assert ShortMessage(message="hi").max_length == 140


def test_unknown_fields_are_refused_by_name(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="PhoneNumber"):
        ShortMessage.model_validate({"Message": "x", "PhoneNumber": ["+447911123456"]})


def test_single_number_and_integer_inputs_are_coerced(settings: Settings) -> None:
    message = ShortMessage.model_validate(
        {"Message": "x", "PhoneNumbers": 447079692712, "AccessCode": 1234}
    )
    assert message.phone_numbers == ["447079692712"]
    assert message.access_code is not None
    assert message.access_code.get_secret_value() == "1234"


@pytest.mark.parametrize(
    "show",
    [repr, str, lambda m: str(m.model_dump()), lambda m: m.model_dump_json(), lambda m: f"{m}"],
    ids=["repr", "str", "dump", "dump_json", "format"],
)
def test_the_access_code_never_shows_in_clear(settings: Settings, show: object) -> None:
    # Given a message with a code
    message = ShortMessage.model_validate(ORIGIN_JSON)
    # When it is shown in any of the ways a log or a store would
    shown = show(message)  # type: ignore[operator]
    # Then the code is not there
    assert CODE not in shown
    assert "**********" in shown


def test_render_places_the_code(settings: Settings) -> None:
    with_placeholder = ShortMessage(message="Code {code}; expires in 5 min", access_code=CODE)
    appended = ShortMessage(message="Your code is", access_code=CODE)
    no_code = ShortMessage(message="Your password was reset")
    assert with_placeholder.render() == f"Code {CODE}; expires in 5 min"
    assert appended.render() == f"Your code is {CODE}"
    assert no_code.render() == "Your password was reset"


def test_the_origin_example_validates(settings: Settings) -> None:
    # Given the origin's example job / When validated
    check = ShortMessage.model_validate(ORIGIN_JSON).validate()
    # Then all three numbers are normalised and the cost is one piece of one segment
    assert check.ok
    assert check.recipients == ("+18588123169", "+447079692712", "+923225867987")
    assert check.estimate is not None
    assert check.estimate.piece_count == 1 and check.estimate.total_segments == 1


def test_every_problem_is_reported_at_once(settings: Settings) -> None:
    # Given a job wrong in many ways at once
    message = ShortMessage(
        message="   ",
        access_code="12 34",
        phone_numbers=["+44 909 879 0000", "call me", "+447911123456"],
        reference_id=" ",
    )
    # When validated
    with pytest.raises(InvalidMessage) as caught:
        message.validate()
    # Then each problem names its field (and recipient) and the reason
    problems = {(p.field, p.reason) for p in caught.value.problems}
    assert ("message", "must not be empty") in problems
    assert ("access_code", "must not contain whitespace") in problems
    assert ("reference_id", "must not be blank when given") in problems
    assert ("phone_numbers[0]", "premium-rate numbers are not allowed") in problems
    assert any(field == "phone_numbers[1]" for field, _ in problems)
    assert len(caught.value.problems) == 5
    # And the valid recipient is not among them, and no number is shown in clear
    assert "7911123456" not in str(caught.value)


def test_check_keeps_valid_recipients_beside_refused_ones(settings: Settings) -> None:
    check = ShortMessage(
        message="hello", phone_numbers=["+447911123456", "12", "00447911123456"]
    ).check()
    assert not check.ok
    assert check.recipients == ("+447911123456",)
    assert [error.reason for error in check.rejected] == ["too short"]
    assert check.problems == ()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"message": "x"}, ("phone_numbers", "at least one phone number is required")),
        (
            {"message": "Code {code}", "phone_numbers": ["+447911123456"]},
            ("access_code", "the message has a {code} placeholder but no code"),
        ),
        (
            {"message": "x", "access_code": "", "phone_numbers": ["+447911123456"]},
            ("access_code", "must not be blank"),
        ),
        (
            {"message": "x", "access_code": "9" * 65, "phone_numbers": ["+447911123456"]},
            ("access_code", "longer than 64 characters"),
        ),
    ],
    ids=["no-numbers", "placeholder-without-code", "blank-code", "long-code"],
)
def test_single_rule_violations(
    settings: Settings, fields: dict[str, object], expected: tuple[str, str]
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        ShortMessage.model_validate(fields).validate()
    assert [(p.field, p.reason) for p in caught.value.problems] == [expected]


def test_max_parts_caps_the_total_segments(settings: Settings) -> None:
    # Given a text needing 3 segments in one piece of up to 459 septets
    message = ShortMessage(message="a" * 400, phone_numbers=["+447911123456"], max_length=459)
    assert message.validate(max_parts=3).estimate is not None
    # When the cap is 2 / Then it is refused with the count
    with pytest.raises(InvalidMessage, match="needs 3 SMS segments in 1 piece"):
        message.validate(max_parts=2)


def test_a_code_longer_than_max_length_is_refused_without_showing_it(settings: Settings) -> None:
    message = ShortMessage(
        message="{code}", access_code="ABCDEFGHIJ", phone_numbers=["+447911123456"], max_length=5
    )
    with pytest.raises(InvalidMessage) as caught:
        message.validate()
    assert caught.value.problems[0].field == "max_length"
    assert "ABCDEFGHIJ" not in str(caught.value)


def test_expiry_is_the_earlier_of_ttl_and_deadline(settings: Settings) -> None:
    enqueued = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    deadline = enqueued + timedelta(minutes=10)
    message = ShortMessage(message="x", ttl_s=60, expires_at=deadline)
    assert message.expiry(enqueued) == enqueued + timedelta(seconds=60)
    assert not message.is_expired(enqueued, now=enqueued + timedelta(seconds=59))
    assert message.is_expired(enqueued, now=enqueued + timedelta(seconds=60))
    assert ShortMessage(message="x").expiry(enqueued) is None


def test_naive_deadlines_are_refused(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="ExpiresAt"):
        ShortMessage.model_validate({"Message": "x", "ExpiresAt": "2026-01-01T12:00:00"})


def test_delivery_status_finality() -> None:
    assert not DeliveryStatus.QUEUED.is_final
    assert not DeliveryStatus.RETRYING.is_final
    assert DeliveryStatus.SENT.is_final
    assert DeliveryStatus.UNKNOWN.is_final


def test_result_round_trips_through_json_without_the_code(settings: Settings) -> None:
    # Given a final result for the origin's example
    message = ShortMessage.model_validate(ORIGIN_JSON)
    result = SendSmsMessageResult(
        job_id="job-1",
        success=True,
        message=message,
        recipients=[
            RecipientResult(
                phone_number="+18588123169",
                status=DeliveryStatus.SENT,
                provider_message_ids=["m-1"],
                pieces=1,
                segments=1,
                attempts=1,
            )
        ],
    )
    # When stored as JSON and read back
    stored = result.model_dump_json()
    loaded = SendSmsMessageResult.model_validate_json(stored)
    # Then nothing is lost but the code, which never reached the store
    assert CODE not in stored
    assert json.loads(stored)["message"]["access_code"] == "**********"
    assert loaded.recipients == result.recipients
    assert loaded.segments == 1
