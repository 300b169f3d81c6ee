"""How a text is counted, cut into pieces and billed as SMS segments. Pure functions, no I/O.

Encodings
    An SMS body is either **GSM-7** or **UCS-2**. GSM-7 packs each character of the GSM 03.38
    default alphabet into one 7-bit *septet*; the ten characters of its extension table
    (``€``, ``[``, ``]``, ``{``, ``}``, ``\\``, ``^``, ``~``, ``|`` and form feed) are sent as an
    escape plus the character, so they cost two septets. A text with any other character
    (``ç``, a tab, a non-breaking space, typographic quotes, Cyrillic, emoji, ...) must be sent as
    UCS-2, i.e. UTF-16 code units: one unit per character of the Basic Multilingual Plane, two
    (a surrogate pair) for a character beyond it such as most emoji. Nothing is ever
    transliterated: one such character switches the whole text to UCS-2.

Capacity
    One SMS holds 160 septets or 70 UCS-2 units. A longer text travels as a concatenated SMS
    whose parts each lose room to the concatenation header: 153 septets or 67 units per part.
    A part never ends in the middle of an escape pair or a surrogate pair; the character moves
    wholly to the next part.

Pieces and segments
    A *piece* is what the origin's ``max_length`` rule produces (:func:`split_pieces`): each
    piece is dispatched as a message of its own. A *segment* is one carrier SMS
    (:func:`segment`): a piece longer than one SMS is delivered, and billed, as several
    concatenated segments. :func:`estimate` combines both and :func:`check_segment_limit`
    enforces the account's ``max_parts``. Estimates carry counts only, never text, so they may
    be logged even though the pieces contain an access code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from gateways.errors import InvalidMessage, Problem, TooManySegments

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "MULTIPART_CAPACITY",
    "SINGLE_CAPACITY",
    "CostEstimate",
    "Encoding",
    "PieceCost",
    "Segmentation",
    "char_units",
    "check_segment_limit",
    "encoding_of",
    "estimate",
    "segment",
    "split_pieces",
    "units",
]

Encoding = Literal["GSM-7", "UCS-2"]
"""The two SMS data codings smsgw sends with."""

GSM7_BASIC: Final[frozenset[str]] = frozenset(
    # GSM 03.38 default alphabet in table order, 0x00-0x7F, without ESC (0x1B).
    "@£$¥èéùìòÇ\nØø\rÅå"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039eÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The 127 characters of the GSM 03.38 default alphabet; each costs one septet."""

GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\x0c^{}\\[~]|€")
"""The 10 characters of the default extension table; each costs two septets (ESC + char)."""

_GSM7_ALL: Final[frozenset[str]] = GSM7_BASIC | GSM7_EXTENSION

SINGLE_CAPACITY: Final[dict[Encoding, int]] = {"GSM-7": 160, "UCS-2": 70}
"""Units that fit in one SMS that is not concatenated."""

MULTIPART_CAPACITY: Final[dict[Encoding, int]] = {"GSM-7": 153, "UCS-2": 67}
"""Units that fit in each part of a concatenated SMS (the rest goes to the header)."""

_BMP_MAX: Final = 0xFFFF


def encoding_of(text: str) -> Encoding:
    """Return the encoding a text must be sent in.

    Args:
        text: The message text.

    Returns:
        ``"GSM-7"`` when every character is in the default alphabet or its extension table
        (the empty text included), otherwise ``"UCS-2"``.
    """
    return "GSM-7" if _GSM7_ALL.issuperset(text) else "UCS-2"


def char_units(ch: str, encoding: Encoding) -> int:
    """Return what one character costs in an encoding.

    Args:
        ch: Exactly one character (one code point).
        encoding: The encoding of the text the character belongs to.

    Returns:
        GSM-7: 1 septet for the default alphabet, 2 for the extension table.
        UCS-2: 1 UTF-16 code unit inside the BMP, 2 (a surrogate pair) beyond it.

    Raises:
        ValueError: ``ch`` is not a single character, or is not GSM-7 when ``encoding`` is.
    """
    if len(ch) != 1:
        raise ValueError(f"expected one character, got a string of length {len(ch)}")
    if encoding == "UCS-2":
        return 2 if ord(ch) > _BMP_MAX else 1
    if ch in GSM7_BASIC:
        return 1
    if ch in GSM7_EXTENSION:
        return 2
    raise ValueError(f"U+{ord(ch):04X} is not in the GSM-7 alphabet")


def _cost_function(encoding: Encoding) -> Callable[[str], int]:
    """Return a fast per-character cost for characters already known to fit ``encoding``."""
    if encoding == "GSM-7":
        return lambda ch: 2 if ch in GSM7_EXTENSION else 1
    return lambda ch: 2 if ord(ch) > _BMP_MAX else 1


def units(text: str, encoding: Encoding | None = None) -> int:
    """Return the total cost of a text: septets for GSM-7, UTF-16 code units for UCS-2.

    Args:
        text: The text to measure.
        encoding: The encoding to count in; defaults to :func:`encoding_of` the text.

    Raises:
        ValueError: ``encoding`` is ``"GSM-7"`` but the text has a character outside GSM-7.
    """
    if encoding is None:
        encoding = encoding_of(text)
    elif encoding == "GSM-7" and encoding_of(text) != "GSM-7":
        bad = next(ch for ch in text if ch not in _GSM7_ALL)
        raise ValueError(f"U+{ord(bad):04X} is not in the GSM-7 alphabet")
    cost = _cost_function(encoding)
    return sum(map(cost, text))


@dataclass(frozen=True)
class Segmentation:
    """How one message travels as carrier SMS segments.

    Attributes:
        encoding: The encoding of the whole text.
        units: Total septets (GSM-7) or UTF-16 code units (UCS-2) of the text.
        parts: The text of each segment, in order; ``"".join(parts)`` is the text. A tuple so
            the value stays immutable. The empty text has no parts.
    """

    encoding: Encoding
    units: int
    parts: tuple[str, ...]

    @property
    def segments(self) -> int:
        """Number of carrier SMS segments (0 for the empty text)."""
        return len(self.parts)


def segment(text: str) -> Segmentation:
    """Split a text into the carrier SMS segments it is sent (and billed) as.

    A text within the single-SMS capacity (160 septets / 70 units) is one part; the empty text
    is zero parts. A longer text is filled greedily, in order, into parts of the multipart
    capacity (153 septets / 67 units); a character that does not fit in what is left of a part
    starts the next one, so escape pairs and surrogate pairs are never split.

    Args:
        text: The message (or piece) text.

    Returns:
        The encoding, the total units and the parts.
    """
    encoding = encoding_of(text)
    cost = _cost_function(encoding)
    total = sum(map(cost, text))
    if total == 0:
        return Segmentation(encoding=encoding, units=0, parts=())
    if total <= SINGLE_CAPACITY[encoding]:
        return Segmentation(encoding=encoding, units=total, parts=(text,))
    capacity = MULTIPART_CAPACITY[encoding]
    parts: list[str] = []
    start = 0
    used = 0
    for index, ch in enumerate(text):
        units_of_ch = cost(ch)
        if used + units_of_ch > capacity:
            parts.append(text[start:index])
            start = index
            used = 0
        used += units_of_ch
    parts.append(text[start:])
    return Segmentation(encoding=encoding, units=total, parts=tuple(parts))


def _protected_mask(text: str, keep_whole: Iterable[str]) -> bytearray:
    """Mark every position where a cut would fall strictly inside a protected span.

    ``mask[c]`` is 1 when cutting before ``text[c]`` would split an occurrence of one of the
    ``keep_whole`` strings (each stripped of surrounding whitespace; empty ones ignored).
    Every occurrence counts, overlapping ones included, which merges overlapping spans.
    """
    mask = bytearray(len(text) + 1)
    for needle in {value.strip() for value in keep_whole}:
        if not needle:
            continue
        found = text.find(needle)
        while found != -1:
            mask[found + 1 : found + len(needle)] = b"\x01" * (len(needle) - 1)
            found = text.find(needle, found + 1)
    return mask


def _too_short(
    max_length: int, text: str, start: int, mask: bytearray, encoding: Encoding
) -> Problem:
    """Explain why nothing from ``start`` fits in ``max_length``, without quoting the text."""
    label = "septets" if encoding == "GSM-7" else "UTF-16 code units"
    if not mask[start + 1]:
        cost = char_units(text[start], encoding)
        reason = (
            f"max_length {max_length} is shorter than one character of the text ({cost} {label})"
        )
        return Problem(field="max_length", reason=reason)
    end = start + 1
    while mask[end]:
        end += 1
    span_units = units(text[start:end], encoding)
    if span_units == end - start:
        label = "characters"
    reason = (
        f"max_length {max_length} is shorter than the access code ({span_units} {label}); "
        "the code cannot be split"
    )
    return Problem(field="max_length", reason=reason)


def _choose_cut(text: str, start: int, limit: int, mask: bytearray) -> int:
    """Pick where the piece starting at ``start`` ends, given it may reach ``limit`` at most.

    Prefers the last word boundary in ``(start, limit]`` that is not inside a protected span,
    then the last position that is not inside one (a hard cut). Returns ``start`` when there
    is no admissible cut at all.
    """
    fallback = start
    for cut in range(limit, start, -1):
        if mask[cut]:
            continue
        if text[cut - 1].isspace() or text[cut].isspace():
            return cut
        if fallback == start:
            fallback = cut
    return fallback


def split_pieces(text: str, max_length: int, keep_whole: Iterable[str] = ()) -> list[str]:
    """Apply the origin's ``max_length`` rule: cut a text into separately dispatched pieces.

    ``max_length`` counts in the units of the whole text's encoding: septets for a GSM-7 text
    (an extension character counts 2), UTF-16 code units for a UCS-2 text (an emoji counts 2).
    So the default of 160 means one piece fits one GSM SMS.

    * A text that fits is returned unchanged as the only piece; a text that is empty or only
      whitespace gives no pieces (validation rejects those before this is called).
    * Otherwise each piece is the longest run that fits, cut back to just after the last
      whitespace in it when the cut would fall inside a word; a single word longer than
      ``max_length`` is hard-cut at the limit. The whitespace run at each cut is dropped, and
      the leading and trailing whitespace of the whole text too; whitespace elsewhere,
      newlines included, is kept verbatim.
    * No cut falls inside an occurrence of a ``keep_whole`` string (the access code; matched
      after stripping its surrounding whitespace). Such a cut moves back to the last word
      boundary before the occurrence, or to the start of the occurrence.

    Args:
        text: The message text.
        max_length: The most units one piece may hold; at least 1.
        keep_whole: Strings that must never be cut.

    Returns:
        The non-empty pieces, in order, each at most ``max_length`` units.

    Raises:
        InvalidMessage: ``max_length`` is below 1, or cannot hold an access code (or a single
            two-unit character). The reason never quotes the code.
    """
    if max_length < 1:
        raise InvalidMessage([Problem(field="max_length", reason="must be at least 1")])
    if not text or text.isspace():
        return []
    encoding = encoding_of(text)
    cost = _cost_function(encoding)
    if sum(map(cost, text)) <= max_length:
        return [text]

    mask = _protected_mask(text, keep_whole)
    end = len(text.rstrip())
    start = len(text) - len(text.lstrip())
    pieces: list[str] = []
    while start < end:
        limit = start
        used = 0
        while limit < end and used + cost(text[limit]) <= max_length:
            used += cost(text[limit])
            limit += 1
        cut = end if limit == end else _choose_cut(text, start, limit, mask)
        if cut == start:
            raise InvalidMessage([_too_short(max_length, text, start, mask, encoding)])
        piece_end = cut
        while text[piece_end - 1].isspace():
            piece_end -= 1
        pieces.append(text[start:piece_end])
        start = cut
        while start < end and text[start].isspace():
            start += 1
    return pieces


@dataclass(frozen=True)
class PieceCost:
    """What one piece costs. Holds no text: estimates may be logged, pieces hold the code.

    Attributes:
        encoding: The piece's own encoding (a GSM-only piece of a UCS-2 text is GSM-7).
        units: The piece's units in that encoding.
        segments: Carrier SMS segments the piece is billed as.
    """

    encoding: Encoding
    units: int
    segments: int


@dataclass(frozen=True)
class CostEstimate:
    """What a whole message costs once cut into pieces and segments.

    Attributes:
        encoding: The encoding of the whole text.
        pieces: The cost of each piece, in order.
    """

    encoding: Encoding
    pieces: tuple[PieceCost, ...]

    @property
    def piece_count(self) -> int:
        """Number of separately dispatched pieces."""
        return len(self.pieces)

    @property
    def total_segments(self) -> int:
        """Carrier SMS segments over all pieces: what the message is billed as."""
        return sum(piece.segments for piece in self.pieces)


def estimate(text: str, max_length: int, keep_whole: Iterable[str] = ()) -> CostEstimate:
    """Estimate the pieces and segments a text will be sent as.

    Args:
        text: The message text.
        max_length: The origin's piece length, as in :func:`split_pieces`.
        keep_whole: Strings that must never be cut, as in :func:`split_pieces`.

    Returns:
        The whole text's encoding and, per piece, its encoding, units and segment count.

    Raises:
        InvalidMessage: As :func:`split_pieces`.
    """
    costs = []
    for piece in split_pieces(text, max_length, keep_whole):
        segmentation = segment(piece)
        costs.append(
            PieceCost(
                encoding=segmentation.encoding,
                units=segmentation.units,
                segments=segmentation.segments,
            )
        )
    return CostEstimate(encoding=encoding_of(text), pieces=tuple(costs))


def check_segment_limit(estimate: CostEstimate, max_parts: int) -> None:
    """Refuse a message that needs more carrier segments than allowed.

    Args:
        estimate: The message's cost estimate.
        max_parts: The most segments the message may use in total.

    Raises:
        TooManySegments: ``estimate.total_segments`` exceeds ``max_parts``.
    """
    if estimate.total_segments > max_parts:
        raise TooManySegments(estimate.total_segments, max_parts)
