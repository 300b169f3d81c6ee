"""Tests for worker.segmentation: encodings, unit counts, segments, pieces and cost estimates."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateways.errors import InvalidMessage, TooManySegments
from worker.segmentation import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MULTIPART_CAPACITY,
    SINGLE_CAPACITY,
    CostEstimate,
    PieceCost,
    Segmentation,
    char_units,
    check_segment_limit,
    encoding_of,
    estimate,
    segment,
    split_pieces,
    units,
)

EURO = "\u20ac"
GRIN = "\U0001f600"  # an astral character: a surrogate pair in UTF-16
C_CEDILLA_UPPER = "\u00c7"
C_CEDILLA_LOWER = "\u00e7"
CYRILLIC_SHORT_I = "\u0439"
CODE = "739184"

EXTENSION_CHARS = ["\x0c", "^", "{", "}", "\\", "[", "~", "]", "|", EURO]
NOT_GSM = {
    "esc": "\x1b",
    "nbsp": "\u00a0",
    "tab": "\t",
    "left-double-quote": "\u201c",
    "right-double-quote": "\u201d",
    "left-single-quote": "\u2018",
    "right-single-quote": "\u2019",
    "en-dash": "\u2013",
    "em-dash": "\u2014",
    "c-cedilla-lower": C_CEDILLA_LOWER,
}


def count_overlapping(haystack: str, needle: str) -> int:
    """Count occurrences of needle in haystack, overlapping ones included."""
    count = 0
    found = haystack.find(needle)
    while found != -1:
        count += 1
        found = haystack.find(needle, found + 1)
    return count


# --- alphabet tables -------------------------------------------------------------------------


def test_basic_table_has_127_characters() -> None:
    # Given the GSM 03.38 default alphabet without ESC / Then it has 127 members
    assert len(GSM7_BASIC) == 127
    assert "\x1b" not in GSM7_BASIC
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize("ch", EXTENSION_CHARS, ids=[f"U+{ord(c):04X}" for c in EXTENSION_CHARS])
def test_extension_character_is_gsm_and_costs_two(ch: str) -> None:
    # Given one extension-table character / When measured / Then it is GSM-7 at 2 septets
    assert ch in GSM7_EXTENSION
    assert encoding_of(f"a{ch}b") == "GSM-7"
    assert char_units(ch, "GSM-7") == 2
    assert units(f"a{ch}b") == 4
    assert char_units(ch, "UCS-2") == 1


def test_upper_c_cedilla_is_gsm_but_lower_is_not() -> None:
    assert encoding_of(C_CEDILLA_UPPER) == "GSM-7"
    assert encoding_of(C_CEDILLA_LOWER) == "UCS-2"


@pytest.mark.parametrize("ch", list(NOT_GSM.values()), ids=list(NOT_GSM))
def test_non_gsm_character_forces_ucs2(ch: str) -> None:
    # Given a GSM text with one look-alike character / Then the whole text is UCS-2
    text = f"Your code is {ch}123"
    assert encoding_of(text) == "UCS-2"
    assert units(text) == len(text)
    with pytest.raises(ValueError, match="not in the GSM-7 alphabet"):
        char_units(ch, "GSM-7")


@pytest.mark.parametrize(
    ("text", "expected_encoding", "expected_units"),
    [
        ("", "GSM-7", 0),
        ("hello", "GSM-7", 5),
        ("\r\n", "GSM-7", 2),
        ("line1\r\nline2\n", "GSM-7", 13),
        (f"5{EURO}", "GSM-7", 3),
        (f"hi {GRIN}", "UCS-2", 5),
        (f"{CYRILLIC_SHORT_I}{GRIN}{EURO}", "UCS-2", 4),
    ],
    ids=["empty", "plain", "crlf", "crlf-in-text", "euro", "emoji", "mixed-ucs2"],
)
def test_encoding_and_units(text: str, expected_encoding: str, expected_units: int) -> None:
    assert encoding_of(text) == expected_encoding
    assert units(text) == expected_units


def test_crlf_cost_one_septet_each() -> None:
    assert char_units("\r", "GSM-7") == 1
    assert char_units("\n", "GSM-7") == 1


def test_char_units_counts_surrogate_pairs() -> None:
    assert char_units(GRIN, "UCS-2") == 2
    assert char_units("\uffff", "UCS-2") == 1
    assert char_units(CYRILLIC_SHORT_I, "UCS-2") == 1


def test_char_units_rejects_more_than_one_character() -> None:
    with pytest.raises(ValueError, match="one character"):
        char_units("ab", "GSM-7")


def test_units_refuses_gsm_count_of_non_gsm_text() -> None:
    with pytest.raises(ValueError, match="U\\+00E7"):
        units(f"fa{C_CEDILLA_LOWER}ade", "GSM-7")


def test_capacities() -> None:
    assert SINGLE_CAPACITY == {"GSM-7": 160, "UCS-2": 70}
    assert MULTIPART_CAPACITY == {"GSM-7": 153, "UCS-2": 67}


# --- segment() boundaries ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected_part_units"),
    [
        (1, [1]),
        (160, [160]),
        (161, [153, 8]),
        (153 * 2, [153, 153]),
        (153 * 2 + 1, [153, 153, 1]),
        (153 * 3, [153, 153, 153]),
        (153 * 3 + 1, [153, 153, 153, 1]),
    ],
    ids=["1", "160", "161", "153x2", "153x2+1", "153x3", "153x3+1"],
)
def test_gsm_segment_boundaries(length: int, expected_part_units: list[int]) -> None:
    # Given a GSM-7 text of `length` septets / When segmented / Then parts fill 160 or 153
    text = "a" * length
    result = segment(text)
    assert result.encoding == "GSM-7"
    assert result.units == length
    assert [units(part) for part in result.parts] == expected_part_units
    assert result.segments == len(expected_part_units)
    assert "".join(result.parts) == text


@pytest.mark.parametrize(
    ("length", "expected_part_units"),
    [
        (70, [70]),
        (71, [67, 4]),
        (67 * 2, [67, 67]),
        (67 * 2 + 1, [67, 67, 1]),
        (67 * 3, [67, 67, 67]),
        (67 * 3 + 1, [67, 67, 67, 1]),
    ],
    ids=["70", "71", "67x2", "67x2+1", "67x3", "67x3+1"],
)
def test_ucs2_segment_boundaries(length: int, expected_part_units: list[int]) -> None:
    # Given a UCS-2 text of `length` units / When segmented / Then parts fill 70 or 67
    text = CYRILLIC_SHORT_I * length
    result = segment(text)
    assert result.encoding == "UCS-2"
    assert result.units == length
    assert [units(part) for part in result.parts] == expected_part_units
    assert result.segments == len(expected_part_units)


def test_empty_text_has_no_segments() -> None:
    assert segment("") == Segmentation(encoding="GSM-7", units=0, parts=())
    assert segment("").segments == 0


def test_escape_pair_is_not_split_across_parts() -> None:
    # Given 152 septets then a 2-septet euro that would straddle septet 153
    text = "a" * 152 + EURO + "b" * 20
    # When segmented
    result = segment(text)
    # Then the euro moves wholly to part 2
    assert result.units == 174
    assert result.parts == ("a" * 152, EURO + "b" * 20)
    assert [units(part, "GSM-7") for part in result.parts] == [152, 22]


def test_surrogate_pair_is_not_split_across_parts() -> None:
    # Given 66 UCS-2 units then an emoji that would occupy units 67-68
    text = CYRILLIC_SHORT_I * 66 + GRIN + CYRILLIC_SHORT_I * 10
    # When segmented
    result = segment(text)
    # Then the emoji starts part 2
    assert result.encoding == "UCS-2"
    assert result.units == 78
    assert result.parts == (CYRILLIC_SHORT_I * 66, GRIN + CYRILLIC_SHORT_I * 10)
    assert [units(part, "UCS-2") for part in result.parts] == [66, 12]


def test_159_chars_and_a_euro_need_two_segments() -> None:
    result = segment("a" * 159 + EURO)
    assert result.units == 161
    assert result.segments == 2
    assert result.parts == ("a" * 153, "a" * 6 + EURO)


def test_euro_that_just_fits_a_single_sms() -> None:
    assert segment("a" * 158 + EURO).segments == 1


# --- split_pieces() -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "max_length", "expected"),
    [
        ("Your login code is 123456", 160, ["Your login code is 123456"]),
        ("  padded fits  ", 160, ["  padded fits  "]),
        ("hello world foo", 11, ["hello world", "foo"]),
        ("hello world foo", 8, ["hello", "world", "foo"]),
        ("aaa bbb   ccc", 9, ["aaa bbb", "ccc"]),
        ("aaa\n\nbbb ccc ddd", 11, ["aaa\n\nbbb", "ccc ddd"]),
        ("  aaa bbb ccc  ", 7, ["aaa bbb", "ccc"]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
        ("hi abcdefghij", 4, ["hi", "abcd", "efgh", "ij"]),
        ("a b", 1, ["a", "b"]),
        ("", 10, []),
        (" \n\t ", 2, []),
    ],
    ids=[
        "fits-unchanged",
        "fits-keeps-padding",
        "word-boundary",
        "word-boundaries",
        "whitespace-run-dropped",
        "newlines-kept-inside",
        "outer-whitespace-stripped",
        "long-word-hard-cut",
        "word-then-hard-cut",
        "max-length-one",
        "empty",
        "whitespace-only",
    ],
)
def test_split_pieces_table(text: str, max_length: int, expected: list[str]) -> None:
    assert split_pieces(text, max_length) == expected


def test_extension_char_counts_two_towards_max_length() -> None:
    # Given a GSM text where the euro makes the first word 5 septets / When split at 4
    pieces = split_pieces(f"ab{EURO}c de", 4)
    # Then the euro is never split from its escape and each piece fits 4 septets
    assert pieces == ["ab" + EURO, "c de"]
    assert [units(piece, "GSM-7") for piece in pieces] == [4, 4]


def test_emoji_counts_two_towards_max_length() -> None:
    # Given a UCS-2 text / When cut where the emoji would straddle the limit
    pieces = split_pieces(f"ab{GRIN}cd", 3)
    # Then the emoji moves wholly to the next piece
    assert pieces == ["ab", GRIN + "c", "d"]
    assert [units(piece, "UCS-2") for piece in pieces] == [2, 3, 1]


def test_access_code_across_natural_cut_stays_whole() -> None:
    # Given a code glued to a word so the 12-septet limit falls inside it
    text = f"Your code:{CODE} thanks"
    # When split
    pieces = split_pieces(text, 12, keep_whole=[CODE])
    # Then the cut moves back to the word boundary before the code's word
    assert pieces == ["Your", f"code:{CODE}", "thanks"]
    assert sum(count_overlapping(piece, CODE) for piece in pieces) == 1


def test_access_code_hard_cut_moves_to_code_start() -> None:
    # Given no whitespace before the code / When the limit falls inside it
    pieces = split_pieces(f"abcd{CODE}xy", 8, keep_whole=[CODE])
    # Then the cut moves back to exactly the start of the code
    assert pieces == ["abcd", f"{CODE}xy"]


def test_every_occurrence_of_access_code_is_protected() -> None:
    text = f"{CODE} {CODE} {CODE}"
    pieces = split_pieces(text, 9, keep_whole=[CODE, ""])
    assert pieces == [CODE, CODE, CODE]


def test_code_longer_than_max_length_is_refused_without_revealing_it() -> None:
    # Given a max_length shorter than the code
    text = f"{CODE} is your code, keep it safe"
    # When split / Then InvalidMessage names max_length and never quotes the code
    with pytest.raises(InvalidMessage) as caught:
        split_pieces(text, 4, keep_whole=[CODE])
    assert CODE not in str(caught.value)
    assert [problem.field for problem in caught.value.problems] == ["max_length"]
    assert "access code (6 characters)" in str(caught.value)
    assert "max_length 4" in str(caught.value)


def test_max_length_below_one_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="must be at least 1"):
        split_pieces("hello", 0)


def test_two_unit_character_longer_than_max_length_is_refused() -> None:
    with pytest.raises(InvalidMessage, match=re.escape("one character of the text (2 septets)")):
        split_pieces(f"{EURO}{EURO}", 1)


# --- estimate() and check_segment_limit() ------------------------------------------------


def test_estimate_counts_pieces_and_segments() -> None:
    # Given a text split into a long GSM piece and a short one
    text = "a" * 200 + " " + "b" * 10
    # When estimated with pieces of up to 200 septets
    result = estimate(text, 200)
    # Then the first piece is billed as 2 segments and the second as 1
    assert result == CostEstimate(
        encoding="GSM-7",
        pieces=(
            PieceCost(encoding="GSM-7", units=200, segments=2),
            PieceCost(encoding="GSM-7", units=10, segments=1),
        ),
    )
    assert result.piece_count == 2
    assert result.total_segments == 3


def test_estimate_bills_each_piece_in_its_own_encoding() -> None:
    # Given a UCS-2 text whose first piece is pure GSM
    text = "hello " + CYRILLIC_SHORT_I
    result = estimate(text, 5)
    assert result.encoding == "UCS-2"
    assert [piece.encoding for piece in result.pieces] == ["GSM-7", "UCS-2"]


def test_estimate_of_empty_text() -> None:
    result = estimate("", 160)
    assert result.piece_count == 0
    assert result.total_segments == 0


def test_check_segment_limit() -> None:
    # Given a text that needs 3 segments
    result = estimate("a" * 400, 1000)
    assert result.total_segments == 3
    # When the limit is 3 / Then it passes; when 2 / Then TooManySegments
    check_segment_limit(result, 3)
    with pytest.raises(TooManySegments) as caught:
        check_segment_limit(result, 2)
    assert caught.value.segments == 3
    assert caught.value.limit == 2


# --- properties ---------------------------------------------------------------------------

MIXED_ALPHABET = st.sampled_from(
    sorted("abcXYZ019@£$Ç.,!?\r\n")
    + EXTENSION_CHARS
    + [" ", " ", " ", "\n", "\t", C_CEDILLA_LOWER, CYRILLIC_SHORT_I, "\u00a0", GRIN, "\U0001f680"]
)
MIXED_TEXT = st.text(alphabet=MIXED_ALPHABET, max_size=600)
ANY_TEXT = st.one_of(MIXED_TEXT, st.text(max_size=400))


def assert_pieces_cover_text(text: str, pieces: list[str], max_length: int) -> None:
    """Each piece fits, and the pieces appear in order separated only by whitespace."""
    encoding = encoding_of(text)
    position = 0
    for piece in pieces:
        assert piece
        assert units(piece, encoding) <= max_length
        found = text.find(piece, position)
        assert found != -1
        assert text[position:found].strip() == ""
        position = found + len(piece)
    assert text[position:].strip() == ""


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_segment_properties(text: str) -> None:
    # When any text is segmented
    result = segment(text)
    # Then the parts rebuild it, each fits its capacity and the units add up
    assert "".join(result.parts) == text
    assert result.units == units(text)
    assert sum(units(part, result.encoding) for part in result.parts) == result.units
    single = result.units <= SINGLE_CAPACITY[result.encoding]
    capacity = SINGLE_CAPACITY if single else MULTIPART_CAPACITY
    assert all(units(part, result.encoding) <= capacity[result.encoding] for part in result.parts)
    if text:
        assert (result.segments == 1) == single
        assert all(result.parts)
    else:
        assert result.segments == 0


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT, max_length=st.integers(min_value=2, max_value=200))
def test_split_pieces_properties(text: str, max_length: int) -> None:
    # When any text is split with a max_length that fits any single character
    pieces = split_pieces(text, max_length)
    # Then pieces are non-empty, fit, and only whitespace is lost between them
    assert_pieces_cover_text(text, pieces, max_length)
    if units(text) <= max_length and text.strip():
        assert pieces == [text]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    text=MIXED_TEXT,
    code=st.sampled_from(["739184", "50261", "8341720", "AB12"]),
)
def test_split_pieces_keeps_access_codes_whole(data: st.DataObject, text: str, code: str) -> None:
    # Given a text with the code inserted once or more at arbitrary positions
    positions = data.draw(
        st.lists(st.integers(min_value=0, max_value=len(text)), min_size=1, max_size=3)
    )
    for position in sorted(positions, reverse=True):
        text = text[:position] + code + text[position:]
    if units(text) <= 9:
        text += " and some more words"  # long enough to need a cut at max_length >= 8
    # And a max_length that fits the code but not the whole text (drawn, never filtered)
    max_length = data.draw(st.integers(min_value=8, max_value=min(120, units(text) - 1)))
    # When split
    pieces = split_pieces(text, max_length, keep_whole=[code])
    # Then every occurrence of the code survives intact in exactly one piece
    assert_pieces_cover_text(text, pieces, max_length)
    in_pieces = sum(count_overlapping(piece, code) for piece in pieces)
    assert in_pieces == count_overlapping(text, code)


@settings(max_examples=200, deadline=None)
@given(text=MIXED_TEXT, max_length=st.integers(min_value=2, max_value=400))
def test_estimate_matches_pieces(text: str, max_length: int) -> None:
    result = estimate(text, max_length)
    pieces = split_pieces(text, max_length)
    assert result.piece_count == len(pieces)
    assert result.total_segments == sum(segment(piece).segments for piece in pieces)
