"""Campaign files: streaming CSV/JSONL rows with line numbers, templates, per-row checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.settings import DEFAULT_ALLOWED_NUMBER_TYPES
from worker.campaign_file import (
    CampaignFileError,
    InvalidRow,
    RecipientRow,
    RowChecker,
    Template,
    csv_columns,
    file_digest,
    read_rows,
)

SECRET = "Qv7!k29x"  # a code: must never show up in a reason or a repr


def checker(template: str, **overrides: object) -> RowChecker:
    options: dict[str, object] = {
        "max_length": 160,
        "max_parts": 10,
        "default_region": None,
        "allowed_types": DEFAULT_ALLOWED_NUMBER_TYPES,
    }
    options.update(overrides)
    return RowChecker(Template(template), **options)  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_template_fields_and_render_keep_the_code_placeholder() -> None:
    template = Template("Hi {name}, reset at {link}; code {code}. {name}!")

    assert template.fields == ("name", "link", "code")
    assert template.variables == ("name", "link")
    assert template.uses_code
    rendered = template.render({"name": "Ann", "link": "https://x/1"})
    assert rendered == "Hi Ann, reset at https://x/1; code {code}. Ann!"


def test_unknown_placeholder_is_named_with_the_columns_there_are() -> None:
    template = Template("Hi {nmae}, {link} {code}")

    with pytest.raises(CampaignFileError) as error:
        template.check_columns(["phone", "name", "link", "code"])

    assert "{nmae}" in str(error.value)
    assert "code, link, name, phone" in str(error.value)


def test_empty_template_is_refused() -> None:
    with pytest.raises(CampaignFileError, match="empty"):
        Template("   ")


def test_csv_rows_carry_their_physical_line_numbers(tmp_path: Path) -> None:
    # A quoted field over two lines, a blank line and a too-wide row
    path = write(
        tmp_path,
        "r.csv",
        'Phone,Name\n+447400000001,"Ann\nSmith"\n\n+447400000002,Bob\n+447400000003,C,extra\n',
    )

    rows = list(read_rows(path))

    assert rows[0] == (2, {"phone": "+447400000001", "name": "Ann\nSmith"})
    assert rows[1] == (5, {"phone": "+447400000002", "name": "Bob"})
    assert rows[2] == (6, "3 columns, the header has 2")


def test_csv_without_a_phone_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "name,link\nAnn,x\n")

    with pytest.raises(CampaignFileError, match="no phone number column"):
        csv_columns(path)


def test_jsonl_rows_and_unreadable_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"Phone": 447400000001, "name": "Ann", "code": 12345}),
        "",
        "{not json",
        "[1, 2]",
        json.dumps({"phone": "+447400000002", "name": {"first": "B"}}),
    ]
    path = write(tmp_path, "r.jsonl", "\n".join(lines) + "\n")

    rows = list(read_rows(path))

    assert rows[0] == (1, {"phone": "447400000001", "name": "Ann", "code": "12345"})
    assert rows[1][0] == 3 and "not JSON" in str(rows[1][1])
    assert rows[2] == (4, "a JSON list, not an object")
    assert rows[3] == (5, "'name' is not a text or a number")


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "r.txt", "phone\n1\n")

    with pytest.raises(CampaignFileError, match=r"\.csv"):
        list(read_rows(path))


def test_valid_row_is_rendered_priced_and_its_code_kept_apart() -> None:
    check = checker("Hello {name}, your temporary code is {code}")

    row = check.check(7, {"phone": "447400000001", "name": "Ann", "code": SECRET})

    assert isinstance(row, RecipientRow)
    assert (row.line, row.e164) == (7, "+447400000001")
    assert row.text == "Hello Ann, your temporary code is {code}"
    assert row.code == SECRET
    assert (row.pieces, row.segments, row.encoding) == (1, 1, "GSM-7")
    assert SECRET not in repr(row)
    assert "447400000001" not in repr(row)


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"name": "Ann", "code": "1"}, "no phone number"),
        ({"phone": "12", "name": "Ann", "code": "1"}, "phone number: too short"),
        ({"phone": "+447400000001", "code": "1"}, "{name}: the column 'name' is empty"),
        ({"phone": "+447400000001", "name": "A {code}", "code": "1"}, "must not contain {code}"),
        ({"phone": "+447400000001", "name": "Ann"}, "{code}: the column 'code' is empty"),
        ({"phone": "+447400000001", "name": "Ann", "code": "Qv7 k29x"}, "whitespace"),
        ({"phone": "+447400000001", "name": "Ann", "code": "x" * 65}, "longer than 64"),
    ],
)
def test_invalid_rows_say_why(columns: dict[str, str], reason: str) -> None:
    row = checker("Hi {name} {code}").check(3, columns)

    assert isinstance(row, InvalidRow)
    assert row.line == 3
    assert reason in row.reason
    assert "Qv7" not in row.reason
    assert "447400000001" not in row.number  # masked


def test_too_many_segments_is_a_row_problem() -> None:
    check = checker("{name}", max_parts=2)

    row = check.check(2, {"phone": "+447400000001", "name": "word " * 100})

    assert isinstance(row, InvalidRow)
    assert "more than max_parts 2" in row.reason


def test_ucs2_text_is_priced_as_ucs2() -> None:
    row = checker("Здравствуйте, {name}").check(2, {"phone": "+447400000001", "name": "Анна"})

    assert isinstance(row, RecipientRow)
    assert row.encoding == "UCS-2"


def test_file_digest_changes_with_the_content(tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", "phone\n+447400000001\n")
    same = write(tmp_path, "b.csv", "phone\n+447400000001\n")
    other = write(tmp_path, "c.csv", "phone\n+447400000002\n")

    assert file_digest(first) == file_digest(same) != file_digest(other)


def test_the_fast_number_path_agrees_with_normalize_number() -> None:
    # The campaign checker accepts clean +digits numbers on a shorter path; everything it
    # does not accept goes to normalize_number. Across numbers of many countries and types
    # (mobiles, landlines, premium, invalid), whatever it accepts must be normalize_number's
    # answer.
    import random

    from gateways.errors import InvalidRecipient
    from worker.campaign_file import _fast_e164
    from worker.validation import normalize_number

    rng = random.Random(6)
    numbers = [f"+{rng.randint(1, 999)}{rng.randint(10**5, 10**12)}" for _ in range(3000)]
    numbers += [f"+44{rng.choice('1235789')}{rng.randint(10**8, 10**9 - 1)}" for _ in range(3000)]
    numbers += [f"+1{rng.randint(2 * 10**9, 10**10 - 1)}" for _ in range(2000)]
    accepted = 0
    for number in numbers:
        fast = _fast_e164(number, DEFAULT_ALLOWED_NUMBER_TYPES)
        if fast is None:
            continue
        accepted += 1
        try:
            slow: str | None = normalize_number(number, None, DEFAULT_ALLOWED_NUMBER_TYPES)
        except InvalidRecipient:
            slow = None
        assert fast == slow, number
    assert accepted > 500  # the fast path is taken, and refusals are left to the slow one
    assert _fast_e164("+449098790000", DEFAULT_ALLOWED_NUMBER_TYPES) is None  # premium


def test_a_file_that_stops_being_readable_is_refused_with_where(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    good = b"".join(b"+4474%08d,Ann\n" % n for n in range(5000))
    path.write_bytes(b"phone,name\n" + good + b"+447400000002,\xff\xfe\n")

    with pytest.raises(CampaignFileError, match=r"r\.csv: unreadable .*not UTF-8"):
        list(read_rows(path))
