"""Recipient validation: E.164 out, or a refusal that says exactly why.

Every example below was checked against the phonenumbers metadata (its number type and
validity), so a failure after a phonenumbers upgrade may mean the metadata moved.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_ALLOWED_NUMBER_TYPES, NumberType
from gateways.errors import InvalidRecipient
from gateways.redaction import mask_number
from worker.validation import (
    NormalizedRecipients,
    normalize_number,
    normalize_numbers,
    number_region,
)

ACCEPTED = [
    # The origin's examples: bare international digits.
    pytest.param("18588123169", None, "+18588123169", id="origin-us-bare"),
    pytest.param("447079692712", None, "+447079692712", id="origin-gb-bare"),
    pytest.param("923225867987", None, "+923225867987", id="origin-pk-bare"),
    pytest.param("+18588123169", None, "+18588123169", id="origin-us-plus"),
    pytest.param("+447079692712", None, "+447079692712", id="origin-gb-plus"),
    pytest.param("+923225867987", None, "+923225867987", id="origin-pk-plus"),
    pytest.param("0018588123169", None, "+18588123169", id="origin-us-00"),
    pytest.param("00447079692712", None, "+447079692712", id="origin-gb-00"),
    pytest.param("00923225867987", None, "+923225867987", id="origin-pk-00"),
    # Decorations.
    pytest.param("+1 858 812 3169", None, "+18588123169", id="spaces"),
    pytest.param("+1-858-812-3169", None, "+18588123169", id="dashes"),
    pytest.param("44.7079.692712", None, "+447079692712", id="dots"),
    pytest.param("+1 (858) 812-3169", None, "+18588123169", id="parentheses"),
    pytest.param("(+44) 7911 123456", None, "+447911123456", id="plus-in-parentheses"),
    pytest.param("+44 (0) 7911 123456", None, "+447911123456", id="gb-bracketed-trunk-zero"),
    pytest.param("  +92 322 5867987\t", None, "+923225867987", id="surrounding-whitespace"),
    pytest.param("tel:+447079692712", None, "+447079692712", id="tel-plus"),
    pytest.param("tel:18588123169", None, "+18588123169", id="tel-bare"),
    pytest.param("TEL:0092-322-5867987", None, "+923225867987", id="tel-upper-00"),
    pytest.param("+٤٤٧٩١١١٢٣٤٥٦", None, "+447911123456", id="arabic-indic-digits"),
    # National formats with a default region.
    pytest.param("07911 123456", "GB", "+447911123456", id="gb-mobile-national"),
    pytest.param("07400 123456", "gb", "+447400123456", id="gb-mobile-lowercase-region"),
    pytest.param("(858) 812-3169", "US", "+18588123169", id="us-national"),
    pytest.param("01512 3456789", "DE", "+4915123456789", id="de-mobile-national"),
    pytest.param("06 12 34 56 78", "FR", "+33612345678", id="fr-mobile-national"),
    pytest.param("011 44 7911 123456", "US", "+447911123456", id="us-idd-011"),
    # Bare digits without trunk 0: not valid internationally, valid in the default region.
    pytest.param("8588123169", "US", "+18588123169", id="us-bare-national"),
    pytest.param("7911123456", "GB", "+447911123456", id="gb-bare-national"),
    # Bare digits valid internationally win over the default region.
    pytest.param("447079692712", "US", "+447079692712", id="international-first"),
    # International input ignores the default region.
    pytest.param("+33 6 12 34 56 78", "GB", "+33612345678", id="plus-ignores-region"),
    # Allowed by default: personal (UK 070), pager (UK 076), VoIP (UK 056).
    pytest.param("+44 70 1234 5678", None, "+447012345678", id="gb-personal-number"),
    pytest.param("+44 7623 456789", None, "+447623456789", id="gb-pager"),
    pytest.param("+44 56 1234 5678", None, "+445612345678", id="gb-voip"),
]


@pytest.mark.parametrize(("raw", "region", "expected"), ACCEPTED)
def test_accepted_numbers_come_back_in_e164(raw: str, region: str | None, expected: str) -> None:
    # Given a number as typed (and maybe a default region)
    # When it is normalised
    result = normalize_number(raw, region)
    # Then it comes back in E.164
    assert result == expected


REFUSED = [
    # Empty and malformed input.
    pytest.param("", None, "empty", id="empty"),
    pytest.param("   \t ", None, "empty", id="whitespace-only"),
    pytest.param("+44 79II 123456", None, "not a number (contains letters)", id="vanity-letters"),
    pytest.param("call me", None, "not a number (contains letters)", id="words"),
    pytest.param("+44 7911 123456 ext 2", None, "not a number (contains letters)", id="ext"),
    pytest.param("+44#7911123456", None, "not a number (contains '#')", id="symbol"),
    pytest.param("44/7911/123456", None, "not a number (contains '/')", id="slash"),
    pytest.param(
        "+44\x1b7911", None, "not a number (contains an unprintable character)", id="control"
    ),
    pytest.param(
        "+44+7911123456", None, "not a number ('+' is only allowed at the start)", id="second-plus"
    ),
    pytest.param(
        "44 +7911123456", None, "not a number ('+' is only allowed at the start)", id="late-plus"
    ),
    pytest.param("tel:", None, "not a number (no digits)", id="tel-only"),
    pytest.param("( - )", None, "not a number (no digits)", id="separators-only"),
    # National number without a region to read it in.
    pytest.param(
        "07911 123456",
        None,
        "looks like a national number (leading 0) but no default region is set",
        id="trunk-zero-without-region",
    ),
    # Length and existence.
    pytest.param("+44 12", None, "too short", id="too-short"),
    pytest.param("+44", None, "too short", id="country-code-only"),
    pytest.param("+44 7911 1234567", None, "too long", id="too-long"),
    pytest.param("+1 858 812 316", None, "too short", id="us-too-short"),
    pytest.param("+999 123456789", None, "unknown country calling code", id="unknown-cc"),
    pytest.param("8588123169", None, "unknown country calling code", id="bare-national-no-region"),
    pytest.param("+1 123 456 7890", None, "invalid number for region US", id="us-invalid"),
    pytest.param("+44 1111 111111", None, "invalid number for region GB", id="gb-invalid"),
    pytest.param(
        "+44 7946 0018", None, "too short (local number without area code)", id="local-only"
    ),
    pytest.param("07911 12345", "GB", "invalid for region GB", id="gb-national-invalid"),
    pytest.param(
        "0791", "GB", "too short for region GB (local number without area code)", id="gb-short"
    ),
    pytest.param(
        "858812316",
        "US",
        "too short for region US (as an international number: unknown country calling code)",
        id="bare-invalid-both-ways",
    ),
    # Line types refused by default.
    pytest.param("+44 909 8790000", None, "premium-rate numbers are not allowed", id="premium"),
    pytest.param("09098790000", "GB", "premium-rate numbers are not allowed", id="premium-gb-nat"),
    pytest.param("+1 800 234 5678", None, "toll-free numbers are not allowed", id="toll-free-us"),
    pytest.param("0800 123 4567", "GB", "toll-free numbers are not allowed", id="toll-free-gb"),
    pytest.param("+800 1234 5678", None, "toll-free numbers are not allowed", id="toll-free-800"),
    pytest.param("+49 180 1234567", None, "shared-cost numbers are not allowed", id="shared-de"),
    pytest.param("+34 901 123 456", None, "shared-cost numbers are not allowed", id="shared-es"),
    pytest.param("+44 55 1234 5678", None, "UAN numbers are not allowed", id="uan-gb"),
    pytest.param("+49 1779 91234567", None, "voicemail numbers are not allowed", id="voicemail"),
    pytest.param(
        "+44 20 7946 0018", None, "fixed-line (landline) numbers are not allowed", id="gb-landline"
    ),
    pytest.param(
        "+49 30 123456", None, "fixed-line (landline) numbers are not allowed", id="de-landline"
    ),
    pytest.param(
        "2079460018", "GB", "fixed-line (landline) numbers are not allowed", id="gb-bare-landline"
    ),
]


@pytest.mark.parametrize(("raw", "region", "reason"), REFUSED)
def test_refused_numbers_say_why(raw: str, region: str | None, reason: str) -> None:
    # Given a number we must not send to
    # When it is normalised
    with pytest.raises(InvalidRecipient) as caught:
        normalize_number(raw, region)
    # Then the error names the exact reason and keeps the input
    assert caught.value.reason == reason
    assert caught.value.raw == raw


ALLOWED_TYPES = [
    pytest.param(
        "+44 20 7946 0018",
        DEFAULT_ALLOWED_NUMBER_TYPES | {"FIXED_LINE"},
        "+442079460018",
        None,
        id="fixed-line-admitted",
    ),
    pytest.param("+44 909 8790000", {"PREMIUM_RATE"}, "+449098790000", None, id="premium-admitted"),
    pytest.param(
        "+447079692712",
        {"MOBILE"},
        None,
        "personal numbers are not allowed",
        id="personal-refused-mobile-only",
    ),
    pytest.param(
        "+18588123169",
        ["MOBILE"],
        None,
        "fixed-line or mobile numbers are not allowed",
        id="ambiguous-refused-mobile-only",
    ),
    pytest.param("+923225867987", (), None, "mobile numbers are not allowed", id="nothing-allowed"),
]


@pytest.mark.parametrize(("raw", "allowed", "expected", "reason"), ALLOWED_TYPES)
def test_allowed_types_are_configurable(
    raw: str, allowed: frozenset[NumberType], expected: str | None, reason: str | None
) -> None:
    # Given a number and a configured set of allowed line types
    if expected is not None:
        # When normalised / Then a type in the set is admitted
        assert normalize_number(raw, allowed_types=allowed) == expected
        return
    # When normalised / Then a type outside the set is refused, naming the type
    with pytest.raises(InvalidRecipient) as caught:
        normalize_number(raw, allowed_types=allowed)
    assert caught.value.reason == reason


def test_error_message_masks_the_number() -> None:
    # Given a refused number that is otherwise a real one
    raw = "+44 20 7946 0018"
    # When it is normalised
    with pytest.raises(InvalidRecipient) as caught:
        normalize_number(raw)
    # Then the message holds the reason and the masked number, never the digits in full
    message = str(caught.value)
    assert "fixed-line (landline) numbers are not allowed" in message
    assert mask_number(raw) in message
    assert raw not in message
    assert "442079460018" not in message
    assert "2079460018" not in message
    assert caught.value.raw == raw
    assert caught.value.problems[0].field == "phone_numbers"


def test_error_message_masks_a_trunk_zero_number() -> None:
    # Given a national number without a region
    raw = "07911123456"
    # When it is normalised / Then the full digits appear nowhere in the message
    with pytest.raises(InvalidRecipient) as caught:
        normalize_number(raw)
    assert "7911123456" not in str(caught.value)
    assert "447911123456" not in str(caught.value)
    assert mask_number(raw) in str(caught.value)


@pytest.mark.parametrize(
    "region",
    [
        pytest.param("XX", id="unknown-code"),
        pytest.param("", id="empty"),
        pytest.param("GBR", id="three-letters"),
        pytest.param("001", id="non-geographic"),
    ],
)
def test_unknown_default_region_is_a_config_error(region: str) -> None:
    # Given a region phonenumbers does not know / When used / Then ValueError, not a refusal
    with pytest.raises(ValueError, match="unknown region"):
        normalize_number("+447911123456", region)
    with pytest.raises(ValueError, match="unknown region"):
        normalize_numbers(["+447911123456"], region)


def test_unknown_allowed_type_is_a_config_error() -> None:
    # Given a type name that is not a phonenumbers type / When used / Then ValueError
    bogus: frozenset[NumberType] = frozenset({"MOBILE", "CELL"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown number types"):
        normalize_number("+447911123456", allowed_types=bogus)


def test_many_numbers_collapse_duplicates_and_keep_every_refusal() -> None:
    # Given one mobile in three spellings, two other numbers and two bad ones
    raws = [
        "+447911123456",
        "+18588123169",
        "00447911123456",
        "call me",
        "07911 123456",
        "+44 909 8790000",
        "18588123169",
    ]
    # When normalised together with GB as the default region
    result = normalize_numbers(raws, "GB")
    # Then each number appears once, in first-seen order
    assert result.valid == ("+447911123456", "+18588123169")
    # And each refusal names its position in the input, its reason and its raw input
    assert [error.problems[0].field for error in result.invalid] == [
        "phone_numbers[3]",
        "phone_numbers[5]",
    ]
    assert [error.reason for error in result.invalid] == [
        "not a number (contains letters)",
        "premium-rate numbers are not allowed",
    ]
    assert [error.raw for error in result.invalid] == ["call me", "+44 909 8790000"]
    assert "phone_numbers[5] (+44********0000): premium-rate" in str(result.invalid[1])


def test_many_numbers_accept_any_iterable_and_nothing() -> None:
    # Given a generator and an empty list / When normalised / Then both work
    generated = normalize_numbers(number for number in ["18588123169", "+1 858 812 3169"])
    assert generated == NormalizedRecipients(valid=("+18588123169",), invalid=())
    assert normalize_numbers([]) == NormalizedRecipients(valid=(), invalid=())


def test_many_numbers_refuse_a_single_string() -> None:
    # Given one number passed where a list belongs / When normalised / Then TypeError
    with pytest.raises(TypeError, match="not a single string"):
        normalize_numbers("+447911123456")


@pytest.mark.parametrize(
    ("e164", "region"),
    [
        pytest.param("+18588123169", "US", id="us"),
        pytest.param("+447079692712", "GB", id="gb"),
        pytest.param("+923225867987", "PK", id="pk"),
        pytest.param("+447911123456", "GG", id="guernsey-in-plus-44"),
        pytest.param("+80012345678", None, id="non-geographic"),
        pytest.param("+4412", None, id="invalid"),
        pytest.param("447079692712", None, id="not-e164"),
        pytest.param("nonsense", None, id="not-a-number"),
    ],
)
def test_number_region(e164: str, region: str | None) -> None:
    # Given an E.164 number / When asked its region / Then the ISO code, or None
    assert number_region(e164) == region


@settings(deadline=None, database=None, max_examples=200)
@given(
    raw=st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\A(tel:)?(\+|00)?[0-9 ()\-.]{0,20}\Z"),
    ),
    region=st.sampled_from([None, "GB", "US", "DE"]),
)
def test_any_input_is_e164_or_a_refusal_without_digits(raw: str, region: str | None) -> None:
    # Given any text / When normalised
    try:
        result = normalize_number(raw, region)
    except InvalidRecipient as error:
        # Then a refusal's reason never repeats a run of the number's digits
        assert re.search(r"\d{4,}", error.reason) is None
        return
    # Then an accepted number is E.164 and normalising it again changes nothing
    assert result.startswith("+")
    assert result[1:].isascii()
    assert result[1:].isdigit()
    assert len(result) <= 16
    assert normalize_number(result) == result


def test_repeated_inputs_get_the_same_answers_as_the_first_time() -> None:
    # Answers are cached per process: the same input gives the same E.164, or the same
    # refusal (raised every time), and another region or type set is a different question.
    for _ in range(3):
        assert normalize_number("07911 123456", "GB") == "+447911123456"
        with pytest.raises(InvalidRecipient, match="no default region"):
            normalize_number("07911 123456")
        with pytest.raises(InvalidRecipient, match="mobile numbers are not allowed"):
            normalize_number("07911 123456", "GB", allowed_types=["FIXED_LINE"])
