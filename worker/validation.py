"""Recipient validation: turn phone numbers as people type them into E.164, or say why not.

Every number a job names goes through :func:`normalize_number` before anything is sent. It
accepts the usual decorations (spaces, dashes, dots, parentheses, a ``tel:`` prefix, a ``+``
or ``00`` international prefix), refuses anything else, and asks ``phonenumbers`` whether
the number exists and what kind of line it is. Numbers we must not text (premium-rate,
toll-free, landlines, ... unless allowed) are refused with a reason a person can act on.

Refusals are :class:`~gateways.errors.InvalidRecipient` errors; their message shows the
number masked. A bad ``default_region`` or ``allowed_types`` is a configuration mistake and
raises :class:`ValueError` instead.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import get_args

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberType, ValidationResult

from config.settings import DEFAULT_ALLOWED_NUMBER_TYPES, NumberType
from gateways.errors import InvalidRecipient

__all__ = [
    "NormalizedRecipients",
    "known_region",
    "normalize_number",
    "normalize_numbers",
    "number_region",
]

_TEL_PREFIX = "tel:"
_CACHED_NUMBERS = 8192  # distinct (input, region, types) answers kept per process
_SEPARATORS = frozenset("-.()")
_NUMBER_TYPE_NAMES: frozenset[str] = frozenset(get_args(NumberType))

# phonenumbers reports types as ints; the settings name them by their PhoneNumberType names.
_TYPE_NAME_BY_CODE: dict[int, NumberType] = {
    getattr(PhoneNumberType, name): name for name in get_args(NumberType)
}

_TYPE_LABELS: dict[NumberType, str] = {
    "FIXED_LINE": "fixed-line (landline)",
    "MOBILE": "mobile",
    "FIXED_LINE_OR_MOBILE": "fixed-line or mobile",
    "TOLL_FREE": "toll-free",
    "PREMIUM_RATE": "premium-rate",
    "SHARED_COST": "shared-cost",
    "VOIP": "VoIP",
    "PERSONAL_NUMBER": "personal",
    "PAGER": "pager",
    "UAN": "UAN",
    "VOICEMAIL": "voicemail",
    "UNKNOWN": "unknown-type",
}

# Every input reaching phonenumbers is digits with an optional leading "+", so NOT_A_NUMBER
# can only mean "too few digits to be a number": the letters and symbols it would otherwise
# complain about were refused earlier, with their own reason.
_PARSE_ERROR_REASONS: dict[int, str] = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    NumberParseException.NOT_A_NUMBER: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_LONG: "too long",
}

# is_possible_number_with_reason results: (reason, detail); a region goes between the two.
_POSSIBILITY_REASONS: dict[int, tuple[str, str]] = {
    ValidationResult.TOO_SHORT: ("too short", ""),
    ValidationResult.TOO_LONG: ("too long", ""),
    ValidationResult.INVALID_LENGTH: ("invalid length", ""),
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: ("too short", " (local number without area code)"),
}


@dataclass(frozen=True, slots=True)
class NormalizedRecipients:
    """The outcome of validating a list of recipients.

    Attributes:
        valid: The accepted numbers in E.164, each once, in the order first seen.
        invalid: One error per refused input; each error's ``field`` names its position,
            e.g. ``phone_numbers[2]``.
    """

    valid: tuple[str, ...]
    invalid: tuple[InvalidRecipient, ...]


class _Refused(Exception):
    """Internal: one step refused the number; carries the reason only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Cleaned:
    """The digits of an input, and whether it said it was international (``+`` or ``00``)."""

    digits: str
    international: bool


def normalize_number(
    raw: str,
    default_region: str | None = None,
    allowed_types: Collection[NumberType] = DEFAULT_ALLOWED_NUMBER_TYPES,
) -> str:
    """Validate one phone number and return it in E.164.

    Numbers with ``+`` or ``00`` are international. Bare digits are tried as international
    first (``447911123456``); only when that is not a valid number, and a default region
    is set, are they read as a national number of that region. A leading trunk ``0``
    (``07911 123456``) always means a national number and needs the default region.

    Args:
        raw: The number as given; may hold spaces, dashes, dots, parentheses, ``tel:``.
        default_region: ISO 3166 code (``GB``) for numbers in national format, or None.
        allowed_types: The ``phonenumbers`` line types we may send to.

    Returns:
        The number in E.164, e.g. ``+447911123456``.

    Raises:
        InvalidRecipient: The number is malformed, does not exist, or is of a refused
            type; ``reason`` says which.
        ValueError: ``default_region`` or a name in ``allowed_types`` is unknown.
    """
    e164, reason = _normalized(raw, _check_region(default_region), _check_types(allowed_types))
    if e164 is None:
        raise InvalidRecipient(raw, reason or "not a valid number")
    return e164


@lru_cache(maxsize=_CACHED_NUMBERS)
def _normalized(
    raw: str, region: str | None, allowed: frozenset[NumberType]
) -> tuple[str, None] | tuple[None, str]:
    """E.164 or the refusal's reason; cached per process (bulk sends repeat the same inputs).

    The answer depends only on the arguments and the phonenumbers metadata, so a cached
    answer is the one a fresh parse would give.
    """
    try:
        number = _parse(_clean(raw), region)
        _check_type(number, allowed)
    except _Refused as refused:
        return None, refused.reason
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


def normalize_numbers(
    raws: Iterable[str],
    default_region: str | None = None,
    allowed_types: Collection[NumberType] = DEFAULT_ALLOWED_NUMBER_TYPES,
) -> NormalizedRecipients:
    """Validate many numbers, keeping every refusal instead of stopping at the first.

    Args:
        raws: The numbers as given, in order.
        default_region: As for :func:`normalize_number`.
        allowed_types: As for :func:`normalize_number`.

    Returns:
        The accepted E.164 numbers (duplicates after normalisation collapsed, first-seen
        order kept) and one :class:`InvalidRecipient` per refused input, whose ``field`` is
        ``phone_numbers[<index in raws>]``.

    Raises:
        TypeError: ``raws`` is a single string rather than a collection of them.
        ValueError: ``default_region`` or a name in ``allowed_types`` is unknown.
    """
    if isinstance(raws, str):
        raise TypeError("raws must be an iterable of numbers, not a single string")
    region = _check_region(default_region)
    allowed = _check_types(allowed_types)
    valid: dict[str, None] = {}
    invalid: list[InvalidRecipient] = []
    for index, raw in enumerate(raws):
        try:
            valid.setdefault(normalize_number(raw, region, allowed))
        except InvalidRecipient as error:
            invalid.append(InvalidRecipient(raw, error.reason, field=f"phone_numbers[{index}]"))
    return NormalizedRecipients(valid=tuple(valid), invalid=tuple(invalid))


def number_region(e164: str) -> str | None:
    """The ISO 3166 region of a valid E.164 number, for country allow-lists.

    Args:
        e164: A number in E.164, e.g. ``+18588123169``.

    Returns:
        The region code (``US``), or None when the number is not valid E.164 or belongs to
        no country (non-geographic numbers such as ``+800``).
    """
    try:
        number = phonenumbers.parse(e164, None, keep_raw_input=False)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    region = phonenumbers.region_code_for_number(number)
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def known_region(region: str) -> str | None:
    """``region`` trimmed and upper-cased when it is a region phonenumbers knows, else None."""
    code = region.strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def _check_region(region: str | None) -> str | None:
    """Return the region upper-cased, or raise ValueError when phonenumbers does not know it."""
    if region is None:
        return None
    code = known_region(region)
    if code is None:
        raise ValueError(f"unknown region {region!r}")
    return code


def _check_types(allowed_types: Collection[NumberType]) -> frozenset[NumberType]:
    """Return the allowed types as a set, or raise ValueError on a name that is no type."""
    unknown = sorted(str(name) for name in allowed_types if name not in _NUMBER_TYPE_NAMES)
    if unknown:
        raise ValueError(f"unknown number types {unknown!r}")
    return frozenset(allowed_types)


def _clean(raw: str) -> _Cleaned:
    """Strip decorations, keeping the digits; refuse anything that is not a number."""
    text = raw.strip()
    if not text:
        raise _Refused("empty")
    if text[:4].lower() == _TEL_PREFIX:
        text = text[4:]
    plus = False
    digits: list[str] = []
    for char in text:
        if char.isdecimal():
            digits.append(str(int(char)))  # other scripts' digits become ASCII
        elif char == "+" and not plus and not digits:
            plus = True
        elif char.isspace() or char in _SEPARATORS:
            continue
        elif char.isalpha():
            raise _Refused("not a number (contains letters)")
        elif char == "+":
            raise _Refused("not a number ('+' is only allowed at the start)")
        elif char.isprintable():
            raise _Refused(f"not a number (contains {char!r})")
        else:
            raise _Refused("not a number (contains an unprintable character)")
    number = "".join(digits)
    if not number:
        raise _Refused("not a number (no digits)")
    if not plus and number.startswith("00"):
        return _Cleaned(digits=number[2:], international=True)
    return _Cleaned(digits=number, international=plus)


def _parse(cleaned: _Cleaned, region: str | None) -> PhoneNumber:
    """Read the digits as international or national, as the rules say; return a valid number."""
    if cleaned.international:
        return _valid_or_refuse(_attempt_international(cleaned.digits))
    if cleaned.digits.startswith("0"):
        if region is None:
            raise _Refused("looks like a national number (leading 0) but no default region is set")
        return _valid_or_refuse(_attempt_national(cleaned.digits, region))
    international = _attempt_international(cleaned.digits)
    if isinstance(international, PhoneNumber) or region is None:
        return _valid_or_refuse(international)
    national = _attempt_national(cleaned.digits, region)
    if isinstance(national, PhoneNumber):
        return national
    raise _Refused(f"{national} (as an international number: {international})")


def _valid_or_refuse(attempt: PhoneNumber | str) -> PhoneNumber:
    """Pass a valid number through; turn a reason into a refusal."""
    if isinstance(attempt, str):
        raise _Refused(attempt)
    return attempt


def _attempt_international(digits: str) -> PhoneNumber | str:
    """Parse ``+digits``; return the number when valid, else the reason it is not."""
    try:
        number = phonenumbers.parse("+" + digits, None, keep_raw_input=False)
    except NumberParseException as error:
        return _PARSE_ERROR_REASONS.get(error.error_type, "not a number")
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility == ValidationResult.INVALID_COUNTRY_CODE:
        return f"unknown country calling code +{number.country_code}"
    if possibility != ValidationResult.IS_POSSIBLE:
        reason, detail = _POSSIBILITY_REASONS.get(possibility, ("not a valid number", ""))
        return reason + detail
    if phonenumbers.is_valid_number(number):
        return number
    region = phonenumbers.region_code_for_number(number)
    if region not in phonenumbers.SUPPORTED_REGIONS:
        region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    if region in phonenumbers.SUPPORTED_REGIONS:
        return f"invalid number for region {region}"
    return "not a valid number"


def _attempt_national(digits: str, region: str) -> PhoneNumber | str:
    """Parse digits as a national number of ``region``; return it when valid, else why not."""
    try:
        number = phonenumbers.parse(digits, region, keep_raw_input=False)
    except NumberParseException as error:
        reason = _PARSE_ERROR_REASONS.get(error.error_type, "not a number")
        return f"{reason} for region {region}"
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != ValidationResult.IS_POSSIBLE:
        reason, detail = _POSSIBILITY_REASONS.get(possibility, ("not a valid number", ""))
        return f"{reason} for region {region}{detail}"
    if phonenumbers.is_valid_number(number):
        return number
    return f"invalid for region {region}"


def _check_type(number: PhoneNumber, allowed: frozenset[NumberType]) -> None:
    """Refuse the number when its line type is not among ``allowed``."""
    name = _TYPE_NAME_BY_CODE.get(phonenumbers.number_type(number), "UNKNOWN")
    if name in allowed:
        return
    if name == "UNKNOWN":
        raise _Refused("numbers of unknown type are not allowed")
    raise _Refused(f"{_TYPE_LABELS[name]} numbers are not allowed")
