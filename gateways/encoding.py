"""What a text costs on the air: GSM-7 / UCS-2 detection and carrier SMS segments.

Pure functions, no I/O. Adapters and the provider sandbox need these facts as much as the
worker does, so they live here; the worker's piece planner (:mod:`worker.segmentation`)
builds on them.

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "MULTIPART_CAPACITY",
    "SINGLE_CAPACITY",
    "Encoding",
    "Segmentation",
    "char_units",
    "encoding_of",
    "segment",
    "unit_cost",
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


def unit_cost(encoding: Encoding) -> Callable[[str], int]:
    """A fast per-character cost, for characters already known to fit ``encoding``."""
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
    cost = unit_cost(encoding)
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
    cost = unit_cost(encoding)
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
