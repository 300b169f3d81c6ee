"""A campaign's recipient file, read as a stream, and its message template.

A file is CSV (a header row, then one recipient a row) or JSONL (one JSON object a line),
chosen by its suffix (``.csv``; ``.jsonl`` / ``.ndjson``). One column holds the phone
number (:data:`PHONE_COLUMNS`); every other column is a per-recipient variable the
template may use as ``{column}``: ``{name}`` and ``{link}`` are rendered at enqueue time,
``{code}`` is the recipient's secret (a temporary code), which stays out of the stored
text and is encrypted like an access code.

Rows are read one at a time (the file is never held in memory) and each is checked on its
own: a bad row becomes an :class:`InvalidRow` with its line number and the reason, never
an exception that stops the others. Reasons never quote a code, and numbers in them are
masked.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import phonenumbers

from config.settings import NumberType
from gateways.encoding import GSM7_BASIC, SINGLE_CAPACITY
from gateways.errors import InvalidMessage
from gateways.redaction import mask_number
from worker.models import CODE_PLACEHOLDER
from worker.segmentation import estimate
from worker.validation import normalize_number

__all__ = [
    "CODE_FIELD",
    "PHONE_COLUMNS",
    "CampaignFileError",
    "InvalidRow",
    "RecipientRow",
    "RowChecker",
    "Template",
    "file_digest",
    "read_rows",
]

CODE_FIELD: Final = "code"
# Accepted names of the phone-number column (case-insensitive), in order of preference.
PHONE_COLUMNS: Final = ("phone", "phone_number", "phonenumber", "mobile", "msisdn", "number", "to")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_CODE_LENGTH = 64
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class CampaignFileError(ValueError):
    """The file or template cannot be used at all (no phone column, unknown placeholder...)."""


@dataclass(frozen=True, slots=True)
class RecipientRow:
    """A valid row: one recipient and the text it will get.

    Attributes:
        line: The row's line number in the file (1 is the first line).
        e164: The number in E.164.
        text: The rendered text; ``{code}`` still marks where the code goes.
        code: The recipient's secret code, or ``None``. Never print or store it in clear.
        pieces: Pieces the text is dispatched as.
        segments: SMS segments it is billed as.
        encoding: ``GSM-7`` or ``UCS-2``.
    """

    line: int
    e164: str
    text: str
    code: str | None
    pieces: int
    segments: int
    encoding: str

    def __repr__(self) -> str:  # the code is a secret
        return f"RecipientRow(line={self.line}, e164={mask_number(self.e164)!r}, ...)"


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A refused row: where it is and why (the number masked, never a code)."""

    line: int
    number: str  # masked
    reason: str


class Template:
    """The campaign text with ``{placeholders}`` filled per recipient.

    Args:
        text: E.g. ``"Hello {name}, reset your password: {link} (code {code})"``.

    Raises:
        CampaignFileError: The text is empty.
    """

    def __init__(self, text: str) -> None:
        if not text.strip():
            raise CampaignFileError("the template is empty")
        self.text = text
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))

    @property
    def variables(self) -> tuple[str, ...]:
        """Placeholders rendered from the file (every one but ``{code}``)."""
        return tuple(f for f in self.fields if f != CODE_FIELD)

    @property
    def uses_code(self) -> bool:
        """Whether the text carries a per-recipient secret code."""
        return CODE_FIELD in self.fields

    def check_columns(self, columns: Collection[str]) -> None:
        """Refuse a placeholder the file has no column for.

        Raises:
            CampaignFileError: Naming each unknown placeholder and the columns there are.
        """
        have = {c.lower() for c in columns}
        unknown = [f for f in self.fields if f.lower() not in have]
        if unknown:
            names = ", ".join("{" + f + "}" for f in unknown)
            raise CampaignFileError(
                f"the template uses {names}, but the file has no such column "
                f"(its columns: {', '.join(sorted(columns)) or 'none'})"
            )

    def render(self, values: dict[str, str]) -> str:
        """The text with every variable but ``{code}`` filled in (values by lower-case name)."""
        return _PLACEHOLDER.sub(
            lambda m: m.group(0) if m.group(1) == CODE_FIELD else values[m.group(1).lower()],
            self.text,
        )


class RowChecker:
    """Turns one row's columns into a :class:`RecipientRow` or an :class:`InvalidRow`.

    Args:
        template: The campaign text.
        max_length: The most units a dispatched piece may hold (as ``ShortMessage.max_length``).
        max_parts: The most SMS segments one recipient's text may need.
        default_region: Region for numbers in national format.
        allowed_types: Number types that may receive messages.
    """

    def __init__(
        self,
        template: Template,
        *,
        max_length: int,
        max_parts: int,
        default_region: str | None,
        allowed_types: frozenset[NumberType],
    ) -> None:
        self.template = template
        self.max_length = max_length
        self.max_parts = max_parts
        self.region = default_region
        self.allowed = allowed_types
        self._cost_cache: dict[tuple[str, int], tuple[int, int, str]] = {}
        self._single_gsm7 = min(max_length, SINGLE_CAPACITY["GSM-7"])

    def check(self, line: int, row: dict[str, str]) -> RecipientRow | InvalidRow:
        """Check one row (keys lower-cased, values stripped text)."""
        raw = _phone_of(row)
        if not raw:
            return InvalidRow(line, "", "no phone number")
        shown = mask_number(raw)
        e164 = _fast_e164(raw, self.allowed)
        if e164 is None:
            try:
                e164 = normalize_number(raw, self.region, self.allowed)
            except InvalidMessage as error:
                return InvalidRow(line, shown, f"phone number: {getattr(error, 'reason', error)}")
        values: dict[str, str] = {}
        for name in self.template.variables:
            value = row.get(name.lower(), "")
            if not value:
                return InvalidRow(line, shown, f"{{{name}}}: the column {name!r} is empty")
            if CODE_PLACEHOLDER in value:
                return InvalidRow(line, shown, f"{{{name}}}: must not contain {CODE_PLACEHOLDER}")
            values[name.lower()] = value
        code: str | None = None
        if self.template.uses_code:
            code = row.get(CODE_FIELD, "")
            problem = _code_problem(code)
            if problem:
                return InvalidRow(line, shown, f"{{code}}: {problem}")
        text = self.template.render(values)
        cost = self._cost(text, code)
        if isinstance(cost, str):
            return InvalidRow(line, shown, f"message: {cost}")
        pieces, segments, encoding = cost
        return RecipientRow(line, e164, text, code, pieces, segments, encoding)

    def check_chunk(
        self, rows: list[tuple[int, dict[str, str] | str]]
    ) -> list[RecipientRow | InvalidRow]:
        """:meth:`check` for each row of a chunk (an unreadable row is refused as it is)."""
        return [
            self.check(line, row) if isinstance(row, dict) else InvalidRow(line, "", row)
            for line, row in rows
        ]

    def _cost(self, text: str, code: str | None) -> tuple[int, int, str] | str:
        # Recipients of one campaign mostly share a text shape: cache by text and code length
        # (a code is never part of the key, and digits cost the same whatever they are).
        key = (text, len(code) if code else -1)
        cached = self._cost_cache.get(key)
        if cached is not None:
            return cached
        rendered = text.replace(CODE_PLACEHOLDER, code) if code else text
        if (
            len(rendered) <= self._single_gsm7
            and rendered.strip()
            and GSM7_BASIC.issuperset(rendered)
        ):
            return 1, 1, "GSM-7"  # the common case, without the splitter: one plain SMS
        try:
            cost = estimate(rendered, self.max_length, keep_whole=(code,) if code else ())
        except InvalidMessage as error:
            return "; ".join(p.reason for p in error.problems)
        if cost.total_segments > self.max_parts:
            return (
                f"the text needs {cost.total_segments} SMS segments in {cost.piece_count} "
                f"piece(s), more than max_parts {self.max_parts}"
            )
        answer = (cost.piece_count, cost.total_segments, cost.encoding)
        if code is None or code.isdigit():
            if len(self._cost_cache) > 4096:
                self._cost_cache.clear()
            self._cost_cache[key] = answer
        return answer


_E164_INPUT = re.compile(r"^\+[1-9]\d{6,14}$")
_TYPE_NAMES: dict[int, str] = {
    getattr(phonenumbers.PhoneNumberType, name): name
    for name in ("MOBILE", "FIXED_LINE_OR_MOBILE", "PERSONAL_NUMBER", "PAGER", "VOIP",
                 "FIXED_LINE", "TOLL_FREE", "PREMIUM_RATE", "SHARED_COST", "UAN", "VOICEMAIL")
}  # fmt: skip


def _fast_e164(raw: str, allowed: frozenset[NumberType]) -> str | None:
    """E.164 for a clean ``+digits`` input of an allowed type, or ``None`` to ask
    :func:`normalize_number` (every refusal, and every other input format, goes there).

    Half the cost of the general path, which matters at 100,000 rows: a number whose type
    is known is valid (``number_type`` finds its region and matches its pattern), so the
    separate possibility and validity checks are not needed to accept it.
    """
    if not _E164_INPUT.match(raw):
        return None
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    if _TYPE_NAMES.get(phonenumbers.number_type(number)) not in allowed:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _code_problem(code: str) -> str | None:
    if not code:
        return "the column 'code' is empty"
    if any(ch.isspace() for ch in code):
        return "must not contain whitespace"
    if len(code) > _MAX_CODE_LENGTH:
        return f"longer than {_MAX_CODE_LENGTH} characters"
    return None


def _phone_of(row: dict[str, str]) -> str:
    for name in PHONE_COLUMNS:
        value = row.get(name)
        if value:
            return value
    return ""


def file_format(path: Path) -> str:
    """``csv`` or ``jsonl``, from the suffix.

    Raises:
        CampaignFileError: Another suffix.
    """
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise CampaignFileError(
            f"{path.name}: unknown file type; use .csv (with a header row) or .jsonl"
        )
    return kind


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV file, lower-cased.

    Raises:
        CampaignFileError: No header, or no phone column in it, or not UTF-8.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error):
        raise CampaignFileError(f"{path.name}: the header is not UTF-8 CSV") from None
    columns = [c.strip().lower() for c in header or [] if c.strip()]
    if not columns:
        raise CampaignFileError(f"{path.name}: empty file, or no header row")
    if not any(name in columns for name in PHONE_COLUMNS):
        raise CampaignFileError(
            f"{path.name}: no phone number column; name one of {', '.join(PHONE_COLUMNS)}"
        )
    return columns


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    """Each data row as (line number, lower-cased columns), or (line number, why unreadable).

    Streams: one row in memory at a time. Blank lines are skipped.

    Raises:
        CampaignFileError: Unknown suffix, a CSV without a usable header, or a file that
            cannot be read on (not UTF-8, a CSV field beyond the csv module's limit).
    """
    kind = file_format(path)
    rows = 0
    try:
        if kind == "csv":
            csv_columns(path)
            for item in _csv_rows(path):
                rows += 1
                yield item
        else:
            for item in _jsonl_rows(path):
                rows += 1
                yield item
    except (UnicodeDecodeError, csv.Error) as error:
        what = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else str(error)
        raise CampaignFileError(
            f"{path.name}: unreadable after {rows} row(s): {what}; nothing after it was read"
        ) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [c.strip().lower() for c in next(reader)]
        width = len(header)
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > width:
                yield start, f"{len(cells)} columns, the header has {width}"
                continue
            yield start, {name: cell.strip() for name, cell in zip(header, cells, strict=False)}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError as error:
                yield line, f"not JSON ({error.msg} at column {error.colno})"
                continue
            if not isinstance(value, dict):
                yield line, f"a JSON {type(value).__name__}, not an object"
                continue
            row: dict[str, str] = {}
            bad = [k for k, v in value.items() if isinstance(v, dict | list)]
            if bad:
                yield line, f"{bad[0]!r} is not a text or a number"
                continue
            for key, item in value.items():
                row[str(key).strip().lower()] = "" if item is None else str(item).strip()
            yield line, row


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (read in blocks): the same file is the same campaign."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
