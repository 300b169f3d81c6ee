"""Pieces: the origin's ``max_length`` rule, and what a message costs. Pure, no I/O.

A *piece* is what the origin's ``max_length`` rule produces (:func:`split_pieces`): each
piece is dispatched as a message of its own. A *segment* is one carrier SMS
(:func:`segment`, from :mod:`gateways.encoding`, re-exported here): a piece longer than one
SMS is delivered, and billed, as several concatenated segments. :func:`estimate` combines
both and :func:`check_segment_limit` enforces ``max_parts``. Estimates carry counts only,
never text, so they may be logged even though the pieces contain an access code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateways.encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MULTIPART_CAPACITY,
    SINGLE_CAPACITY,
    Encoding,
    Segmentation,
    char_units,
    encoding_of,
    segment,
    unit_cost,
    units,
)
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
    cost = unit_cost(encoding)
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
