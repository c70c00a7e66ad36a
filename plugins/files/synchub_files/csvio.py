"""Streaming CSV reading and writing for real-world customer exports.

Customer files come from German Excel (``;`` delimiter, cp1252 or UTF-8 with
BOM), newsletter and CRM exports (``,``, UTF-8), shop systems (tabs, pipes)
and hand-edited files.  This module reads them with bounded memory from a
binary stream that may only be read once, front to back (an SFTP download,
an HTTP body), and writes CSV that spreadsheet programs open correctly.

Reading
-------
1. :func:`detect_dialect` guesses encoding and delimiter from the first chunk
   of the file (see :data:`HEAD_SIZE`).  Callers that can afford a second,
   separate pass over the file should decide the encoding with
   :func:`scan_encoding` instead (from the whole file, in bounded memory) and
   pass it on; the files connector always does.
2. :func:`iter_rows` decodes the stream incrementally and yields one
   :class:`CsvRow` per record, or a :class:`CsvRowError` for a record that
   cannot be used.  Problems that make the whole file unusable raise
   :class:`CsvFileError`.
3. :func:`sniff_and_iter` combines both for one-pass streams.

Decoding policy when a later chunk does not match the encoding (with an
encoding from :func:`scan_encoding` only the second case arises):

* If the encoding was *guessed* as UTF-8 and everything before the bad byte
  was plain ASCII, the file is almost certainly a legacy Windows export whose
  first non-ASCII character came late.  Decoding switches to cp1252 (or
  latin-1 if cp1252 cannot decode the bytes) for the rest of the stream.  As
  all earlier bytes were ASCII, earlier rows decode identically in either
  encoding, so the switch loses nothing.  An :class:`EncodingFallback` is
  logged and passed to ``on_fallback``; from then on a record holding text
  that is valid UTF-8 (it would read ``Ã¶``) is rejected, as with
  ``check_utf8_lookalikes``, so the encodings are never mixed silently.
* Otherwise (the encoding was given explicitly, came from a BOM, or real
  UTF-8 text was already seen) each record that contains undecodable bytes
  becomes a :class:`CsvRowError`; all other records are read normally.

Memory: the reader holds one read chunk, the current partial line and the
current record.  A record is capped at ``max_record_chars`` decoded
characters.  A longer record that is an unterminated quote (see
:func:`iter_rows`) costs only its first line: the lines held up to the cap are
read again.  Any other longer record (an oversized field) is reported and
skipped to its end without being held in memory.

Writing
-------
:func:`write_rows` streams rows to a binary stream with formula-injection
escaping (see :func:`escape_formula`).  :data:`EXCEL_DE` and
:data:`EXCEL_DE_CP1252` are presets for German Excel.
"""

from __future__ import annotations

import codecs
import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO, cast

__all__ = [
    "EXCEL_DE",
    "EXCEL_DE_CP1252",
    "HEAD_SIZE",
    "CsvDialect",
    "CsvEncodeError",
    "CsvFileError",
    "CsvRow",
    "CsvRowError",
    "CsvWriteOptions",
    "EncodingFallback",
    "EncodingScan",
    "detect_dialect",
    "escape_formula",
    "iter_rows",
    "prescan_encoding",
    "read_header",
    "scan_encoding",
    "sniff_and_iter",
    "write_rows",
]

logger = logging.getLogger(__name__)

#: Number of bytes :func:`sniff_and_iter` reads for dialect detection.
HEAD_SIZE = 64 * 1024

_READ_CHUNK = 256 * 1024
_WRITE_CHUNK = 64 * 1024
_RAW_LIMIT = 2048
_SNIFF_RECORDS = 50
#: Candidate delimiters, in tie-break order.
_DELIMITERS = (";", "\t", ",", "|")
#: Bytes that have no mapping in Python's cp1252 codec.
_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_NON_ASCII_BYTES = bytes(range(0x80, 0x100))
#: Characters that ``str.splitlines`` treats as line breaks but CSV does not.
_EXTRA_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
#: Markers left by lenient decoding: surrogate escapes and U+FFFD.
_UNDECODABLE_RE = re.compile("[\udc80-\udcff\ufffd]")
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is encoded and delimited.

    ``encoding_guessed`` is set by :func:`detect_dialect` when the encoding
    was sniffed rather than given or taken from a BOM; only then may
    :func:`iter_rows` switch from UTF-8 to cp1252 mid-stream.
    """

    delimiter: str
    encoding: str
    quotechar: str = '"'
    has_bom: bool = False
    encoding_guessed: bool = False

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in "\r\n":
            raise ValueError(f"delimiter must be one character, not {self.delimiter!r}")
        if len(self.quotechar) != 1 or self.quotechar in "\r\n":
            raise ValueError(f"quotechar must be one character, not {self.quotechar!r}")
        if self.delimiter == self.quotechar:
            raise ValueError("delimiter and quotechar must differ")


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data record.

    ``line`` is the 1-based physical line on which the record starts (the
    header is line 1 unless blank lines precede it).  ``values`` maps header
    names to the field text with surrounding whitespace stripped.
    """

    line: int
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class CsvRowError:
    """A record that could not be read; reading continues after it.

    ``raw`` is the start of the offending text (at most 2 KiB when encoded
    as UTF-8; undecodable bytes shown as ``\\xNN``) for a reject log.
    """

    line: int
    reason: str
    raw: str | None


@dataclass(frozen=True, slots=True)
class EncodingFallback:
    """Reported when decoding switches from guessed UTF-8 to a legacy encoding.

    ``line`` is the physical line holding the first byte that is not UTF-8.
    """

    source: str
    line: int
    from_encoding: str
    to_encoding: str


class CsvFileError(ValueError):
    """The whole file cannot be read (empty, bad header, unknown encoding...).

    The message starts with the ``source`` name, also kept as ``.source``.
    """

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class CsvEncodeError(ValueError):
    """A value cannot be written in the chosen output encoding.

    ``row`` is 0 for the header, else the 1-based data row; ``column`` is the
    column name.
    """

    def __init__(self, row: int, column: str | None, message: str) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------


def detect_dialect(
    head: bytes, *, encoding: str | None = None, delimiter: str | None = None
) -> CsvDialect:
    """Guess encoding and delimiter from the first bytes of a file.

    Encoding: a UTF-8 BOM gives ``'utf-8-sig'``, a UTF-16 BOM ``'utf-16'``;
    otherwise ``'utf-8'`` if ``head`` is valid UTF-8 (a multi-byte character
    cut off at the end of ``head`` is allowed), else ``'cp1252'``, or
    ``'latin-1'`` when ``head`` holds a byte cp1252 leaves undefined.

    Delimiter: each of ``; \\t , |`` is tried by parsing the first records
    with :mod:`csv` (so quoted delimiters and quoted line breaks are not
    counted).  A candidate needs at least two header fields; the one for
    which most records have the header's field count wins, ties going to the
    earlier candidate in that order.  A single-column file gives ``','``.

    Explicit ``encoding`` / ``delimiter`` arguments are used as given.
    """
    has_bom = head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    guessed = encoding is None
    if encoding is None:
        encoding = _detect_encoding(head)
    else:
        _lookup_encoding(encoding)
    if delimiter is None:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        text = decoder.decode(head, False)
        delimiter = _detect_delimiter(text.lstrip("\ufeff"), '"')
    return CsvDialect(
        delimiter=delimiter,
        encoding=encoding,
        has_bom=has_bom,
        encoding_guessed=guessed,
    )


@dataclass(frozen=True)
class EncodingScan:
    """What :func:`scan_encoding` found in a whole file, and the encoding it decided on.

    ``utf8_chars`` counts characters of two or more bytes that are valid UTF-8,
    ``invalid_bytes`` the bytes that are not part of any valid UTF-8 sequence.
    """

    encoding: str
    why: str
    size: int = 0
    utf8_chars: int = 0
    invalid_bytes: int = 0

    @property
    def legacy(self) -> bool:
        """The file is read in a single-byte Windows/ISO encoding."""
        return self.encoding in ("cp1252", "latin-1")

    @property
    def may_hold_utf8(self) -> bool:
        """A legacy file in which some bytes also form valid UTF-8: rows that look like UTF-8
        text must be checked (see ``check_utf8_lookalikes`` of :func:`iter_rows`)."""
        return self.legacy and self.utf8_chars > 0


def scan_encoding(stream: BinaryIO, *, chunk_size: int = 1024 * 1024) -> EncodingScan:
    """Decide a file's encoding from all of it, reading it once front to back.

    * A BOM decides: UTF-8 (``'utf-8-sig'``) or UTF-16; the rest is not read.
    * No byte that is invalid UTF-8 (this includes pure ASCII): ``'utf-8'``.
    * Otherwise valid multi-byte UTF-8 characters and invalid bytes are counted
      over the whole file. At least as many valid characters as invalid bytes:
      ``'utf-8'`` (the rows holding the invalid bytes are then rejected one by
      one). Fewer: the file is a legacy Windows export, ``'cp1252'`` (or
      ``'latin-1'`` when it holds a byte cp1252 leaves undefined). A cp1252
      text rarely forms valid UTF-8 by accident (``ß`` before a typographic
      quote does), so a real cp1252 file has next to no valid UTF-8 and a real
      UTF-8 file next to no invalid bytes; a file in between mixes encodings,
      and the majority decides which rows are rejected.

    Memory use is one chunk; the stream is left where reading stopped.
    """
    first = _read_exactly(stream, 4)
    if first.startswith(codecs.BOM_UTF8):
        return EncodingScan("utf-8-sig", "UTF-8 byte order mark")
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return EncodingScan("utf-16", "UTF-16 byte order mark")
    size = len(first)
    valid = invalid = 0
    undefined = False
    carry = first
    while True:
        chunk = _read_chunk(stream, chunk_size)
        size += len(chunk)
        data = carry + chunk if carry else chunk
        if chunk:
            cut = _utf8_cut(data)
            data, carry = data[:cut], data[cut:]
        else:
            carry = b""
        if data and not data.isascii():
            text = data.decode("utf-8", "surrogateescape")
            # Each invalid byte became one lone surrogate, which UTF-8 cannot encode.
            bad = len(data) - len(text.encode("utf-8", "ignore"))
            ascii_bytes = len(data.translate(None, _NON_ASCII_BYTES))
            valid += len(text) - bad - ascii_bytes
            invalid += bad
            if bad and not undefined:
                undefined = any(b in data for b in _CP1252_UNDEFINED)
        if not chunk:
            break
    if invalid == 0:
        encoding, why = "utf-8", "valid UTF-8" if valid else "plain ASCII"
    elif valid >= invalid:
        encoding = "utf-8"
        why = f"{valid} valid UTF-8 characters, {invalid} invalid byte(s)"
    else:
        encoding = "latin-1" if undefined else "cp1252"
        why = f"{invalid} bytes not valid UTF-8, {valid} valid UTF-8 characters"
    return EncodingScan(encoding, why, size, valid, invalid)


def _utf8_cut(data: bytes) -> int:
    """Where to cut ``data`` so that no UTF-8 sequence is split: before a lead byte near the
    end whose continuation bytes may still follow in the next chunk."""
    end = len(data)
    i = end
    while i > 0 and end - i < 3 and 0x80 <= data[i - 1] <= 0xBF:
        i -= 1
    if i > 0 and data[i - 1] >= 0xC0:
        return i - 1
    return end


def prescan_encoding(stream: BinaryIO, *, chunk_size: int = 1024 * 1024) -> str:
    """The encoding :func:`scan_encoding` decides on for a (separately opened) stream."""
    return scan_encoding(stream, chunk_size=chunk_size).encoding


def _detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, False)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    if any(b in head for b in _CP1252_UNDEFINED):
        return "latin-1"
    return "cp1252"


def _lookup_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


def _detect_delimiter(text: str, quotechar: str) -> str:
    lines = _split_lines(text)
    if len(lines) > 1 and not lines[-1].endswith(("\n", "\r")):
        lines.pop()  # probably cut off by the end of the head
    best, best_score = ",", 0.0
    for candidate in _DELIMITERS:
        counts = _field_counts(lines, candidate, quotechar)
        if not counts or counts[0] < 2:
            continue
        score = counts.count(counts[0]) / len(counts)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _field_counts(lines: list[str], delimiter: str, quotechar: str) -> list[int]:
    """Field count of each non-blank record among the first ones in ``lines``."""
    exhausted = False

    def feed() -> Iterator[str]:
        nonlocal exhausted
        yield from lines
        exhausted = True

    reader = csv.reader(
        feed(), delimiter=delimiter, quotechar=quotechar, skipinitialspace=True, strict=False
    )
    counts: list[int] = []
    try:
        for row in reader:
            if exhausted:
                break  # record ended only by end of text: unterminated quote
            if any(field.strip() for field in row):
                counts.append(len(row))
                if len(counts) >= _SNIFF_RECORDS:
                    break
    except csv.Error:
        pass
    return counts


def _split_lines(text: str) -> list[str]:
    """Split on ``\\r\\n``, ``\\r`` and ``\\n`` only, keeping the terminators."""
    if any(ch in text for ch in _EXTRA_BREAKS):
        return _LINE_RE.findall(text)
    return text.splitlines(True)


def _merge_markers(a: re.Pattern[str] | None, b: re.Pattern[str] | None) -> re.Pattern[str] | None:
    """Combine the undecodable-marker patterns of two pieces of text."""
    if a is None or a is b:
        return b
    if b is None:
        return a
    return _UNDECODABLE_RE


def _count_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lookalike_pattern(encoding: str) -> re.Pattern[str] | None:
    """Text in a single-byte ``encoding`` whose bytes are UTF-8 for a character a customer
    file plausibly holds: Latin-1 and Latin Extended-A letters (lead bytes C2-C5: ä ö ü ß é ł
    ş), Greek and Cyrillic (CE-D1), and any three- or four-byte character (€, typographic
    quotes, emoji). Decoded as cp1252 these read 'Ã¶', 'â‚¬': mojibake, never German text.
    Lead bytes C6-CD and D2-DF are left out: in cp1252 they are capitals and 'ß', which real
    text does put before a typographic quote or a no-break space. Matches are verified with
    :func:`_is_utf8`. None for multi-byte encodings."""
    name = codecs.lookup(encoding).name
    if name not in ("cp1252", "latin-1", "iso8859-1", "iso8859-15"):
        return None

    def chars(low: int, high: int) -> str:
        text = "".join(bytes([b]).decode(name, "ignore") for b in range(low, high + 1))
        return "".join(re.escape(c) for c in text)

    cont = f"[{chars(0x80, 0xBF)}]"
    return re.compile(
        f"[{chars(0xC2, 0xC5)}{chars(0xCE, 0xD1)}]{cont}|[{chars(0xE0, 0xEF)}]{cont}{{2}}"
        f"|[{chars(0xF0, 0xF4)}]{cont}{{3}}"
    )


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


class _RecordTooLarge(Exception):
    """Raised by the line feeder through ``csv.reader`` to abort a record."""


class _LineFeeder:
    """Iterator of physical lines for ``csv.reader``.

    Decodes the binary stream chunk by chunk and hands out lines with their
    terminators, so that the reader's record boundaries and our line count
    agree.  It also keeps the bookkeeping of the record being parsed (its
    lines, size and problems) for :func:`iter_rows`.

    Unlike a generator it can raise :class:`_RecordTooLarge` and still be
    iterated afterwards; ``csv.reader`` resets itself after the exception.
    """

    def __init__(
        self,
        stream: BinaryIO,
        dialect: CsvDialect,
        *,
        source: str,
        max_record_chars: int,
        on_fallback: Callable[[EncodingFallback], None] | None,
        check_utf8_lookalikes: bool = False,
    ) -> None:
        self._stream = stream
        self._source = source
        self._encoding = dialect.encoding
        self._decoder = codecs.getincrementaldecoder(dialect.encoding)()
        canonical = codecs.lookup(dialect.encoding).name
        self._may_fall_back = dialect.encoding_guessed and canonical == "utf-8"
        self._ascii_so_far = True
        self._quote = dialect.quotechar
        self._limit = max_record_chars
        self._on_fallback = on_fallback
        self._started = False
        self._eof = False
        self._lines: list[str] = []
        self._pos = 0
        # Per-line checks for the current batch of lines: NUL characters, and
        # the markers lenient decoding left for undecodable bytes.
        self._check = False
        self._check_nul = False
        self._bad_re: re.Pattern[str] | None = None
        # Every marker pattern seen so far, for lines handed out a second time.
        self._seen_bad_re: re.Pattern[str] | None = None
        # In a legacy (single-byte) file: characters that together are valid UTF-8.
        self._lookalike_re = _lookalike_pattern(canonical) if check_utf8_lookalikes else None
        self._carry = ""  # partial last line of the decoded text
        self._carry_nul = False
        self._carry_bad_re: re.Pattern[str] | None = None
        self._nul_in_bytes = not canonical.startswith(("utf-16", "utf-32"))
        self._lines_split = 0
        # Over-long line handling: text discarded so far, and whether the
        # rest of that physical line still has to be dropped.
        self._overflow = False
        self._overflow_mid_line = False
        self._overflow_parity = 0
        self._overflow_sample = ""
        # Bookkeeping of the record being parsed, read by iter_rows.
        self.lineno = 0
        self.rec_lines: list[str] = []
        self.rec_chars = 0
        self.rec_problem: str | None = None
        self.exhausted = False

    @property
    def line_overflow(self) -> bool:
        """The record is too large because one physical line is (its text was not kept)."""
        return self._overflow

    @property
    def encoding(self) -> str:
        """Encoding currently used for decoding."""
        return self._encoding

    def __iter__(self) -> _LineFeeder:
        return self

    def __next__(self) -> str:
        if self._pos >= len(self._lines):
            self._fill()
            if self._overflow:
                raise _RecordTooLarge()
            if self._pos >= len(self._lines):
                self.exhausted = True
                raise StopIteration
        line = self._lines[self._pos]
        self._pos += 1
        self.lineno += 1
        self.rec_lines.append(line)
        self.rec_chars += len(line)
        if self._check:
            line = self._inspect(line)
        if self.rec_chars > self._limit:
            raise _RecordTooLarge()
        return line

    def _inspect(self, line: str) -> str:
        original = line
        if self._check_nul and "\x00" in line:
            self.rec_problem = self.rec_problem or "row contains NUL byte(s)"
            line = line.replace("\x00", "")
        if self.rec_problem is None and self._bad_re is not None:
            found = self._bad_re.search(original)
            if found is not None:
                self.rec_problem = self._invalid_bytes_reason(original, found)
        if self.rec_problem is None and self._lookalike_re is not None:
            for found in self._lookalike_re.finditer(original):
                data = found.group().encode(self._encoding)
                if _is_utf8(data):
                    self.rec_problem = (
                        f"looks like UTF-8 text (bytes {data.hex(' ').upper()} at offset "
                        f"{self._offset(original, found.start())} of the row) in a file read as "
                        f"{self._encoding}; fix the file or set encoding"
                    )
                    break
        return line

    def _offset(self, line: str, index: int) -> int:
        """Bytes from the start of the record to ``line[index]`` (``line`` is its last line)."""
        encoding = "utf-8" if self._encoding == "utf-8-sig" else self._encoding
        before = "".join(self.rec_lines[:-1]) + line[:index]
        return len(before.encode(encoding, "surrogateescape"))

    def _invalid_bytes_reason(self, line: str, found: re.Match[str]) -> str:
        name = "UTF-8" if codecs.lookup(self._encoding).name in ("utf-8", "utf-8-sig") else self._encoding
        if self._bad_re is not _SURROGATE_RE:  # replaced, not escaped: the bytes are unknown
            return f"row contains bytes that are not valid {self._encoding}"
        count = len(_SURROGATE_RE.findall(line))
        more = f" ({count} such bytes in the line)" if count > 1 else ""
        byte = ord(found.group()) - 0xDC00
        return (
            f"bytes not valid {name}: 0x{byte:02X} at offset "
            f"{self._offset(line, found.start())} of the row{more}"
        )

    def refeed(self, lines: list[str], lineno: int) -> None:
        """Hand ``lines`` out again, as the lines after physical line ``lineno``."""
        self._lines = lines + self._lines[self._pos :]
        self._pos = 0
        self.lineno = lineno
        self.exhausted = False
        self.rec_problem = None
        self._check = True
        self._check_nul = True
        self._bad_re = self._seen_bad_re

    # -- reading and decoding ------------------------------------------------

    def _fill(self) -> None:
        """Load the next batch of complete lines, or note EOF / overflow."""
        self._lines = []
        self._pos = 0
        while not self._eof:
            data = self._stream.read(_READ_CHUNK)
            if data is None:
                raise OSError(f"{self._source}: non-blocking stream returned no data")
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"{self._source}: stream must be binary, got {type(data).__name__}")
            final = not data
            if final:
                self._eof = True
            text, bad_re = self._decode(data, final)
            if not self._started and text:
                self._started = True
                if text.startswith("\ufeff"):  # BOM left by an explicit 'utf-8'
                    text = text[1:]
            # In ASCII-compatible encodings a NUL byte is a NUL character;
            # searching the bytes is much faster than searching the text.
            nul = b"\x00" in data if self._nul_in_bytes else "\x00" in text
            if self._carry:
                text = self._carry + text
                nul = nul or self._carry_nul
                bad_re = _merge_markers(bad_re, self._carry_bad_re)
            lines = _split_lines(text) if text else []
            self._carry = ""
            if lines and not final and not lines[-1].endswith("\n"):
                # A partial last line, or one ending in '\r' that may be the
                # first half of '\r\n', waits for the next chunk.
                self._carry = lines.pop()
                self._carry_nul = nul
                self._carry_bad_re = bad_re
            self._lines_split += len(lines)
            if self._overflow_mid_line and (lines or final):
                # The first line is the rest of the over-long one.
                if lines:
                    self._discard(lines[0])
                    self._pos = 1
                self.lineno += 1
                self._overflow_mid_line = False
            if self._pos < len(lines) or (self._overflow and not self._overflow_mid_line):
                # Hand out these lines (a finished over-long line is reported
                # first).  A carry over the limit is dealt with on the next
                # call, once these lines have been consumed.
                self._lines = lines
                self._check_nul = nul
                self._bad_re = bad_re
                if bad_re is not None:
                    self._seen_bad_re = _merge_markers(self._seen_bad_re, bad_re)
                self._check = nul or bad_re is not None or self._lookalike_re is not None
                return
            if len(self._carry) > self._limit:
                self._discard_carry()

    def _discard_carry(self) -> None:
        carry = self._carry
        keep = "\r" if carry.endswith("\r") else ""
        self._discard(carry[: len(carry) - len(keep)])
        self._carry = keep
        self._overflow_mid_line = True

    def _discard(self, text: str) -> None:
        if not self._overflow:
            self._overflow = True
            self._overflow_parity = 0
            self._overflow_sample = text[:_RAW_LIMIT]
        self._overflow_parity ^= text.count(self._quote) & 1

    def _decode(self, data: bytes, final: bool) -> tuple[str, re.Pattern[str] | None]:
        """Decode a chunk.

        Returns the text and, if it holds undecodable bytes, a pattern that
        finds the markers lenient decoding put in their place.
        """
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            return self._decode_lenient(data, final, exc)
        if self._ascii_so_far and not text.isascii():
            self._ascii_so_far = False
        return text, None

    def _decode_lenient(
        self, data: bytes, final: bool, exc: UnicodeDecodeError
    ) -> tuple[str, re.Pattern[str] | None]:
        # The failed call left the decoder state untouched.
        pending = self._decoder.getstate()[0]
        whole = pending + data
        if self._may_fall_back and self._ascii_so_far and whole[: exc.start].isascii():
            return self._fall_back(whole, final, exc.start), None
        self._ascii_so_far = False
        decoder = self._decoder
        try:
            decoder.errors = "surrogateescape"
            try:
                return decoder.decode(data, final), _SURROGATE_RE
            except UnicodeDecodeError:  # e.g. UTF-16: bytes below 0x80
                decoder.errors = "replace"
                return decoder.decode(data, final), _UNDECODABLE_RE
        finally:
            decoder.errors = "strict"

    def _fall_back(self, whole: bytes, final: bool, bad_at: int) -> str:
        target = "latin-1" if any(b in whole for b in _CP1252_UNDEFINED) else "cp1252"
        decoder = codecs.getincrementaldecoder(target)()
        text = decoder.decode(whole, final)
        line = (
            self._lines_split
            + _count_breaks(self._carry)
            + _count_breaks(whole[:bad_at].decode("ascii"))
            + 1
        )
        event = EncodingFallback(self._source, line, self._encoding, target)
        logger.warning(
            "%s: line %d is not valid UTF-8 although the start of the file was; "
            "decoding the rest as %s",
            self._source,
            line,
            target,
        )
        self._decoder = decoder
        self._encoding = target
        self._may_fall_back = False
        self._ascii_so_far = False
        # All that came before was ASCII, so nothing was mixed so far; from here on, text that
        # is valid UTF-8 must not be read as cp1252 silently.
        self._lookalike_re = _lookalike_pattern(target)
        if self._on_fallback is not None:
            self._on_fallback(event)
        return text

    # -- record bookkeeping ---------------------------------------------------

    def skip_record(self) -> None:
        """After :class:`_RecordTooLarge`, drop input up to the record's end.

        The end is the first line end at which the record has an even number
        of quote characters, i.e. no quoted field is open.
        """
        parity = 0
        for line in self.rec_lines:
            parity ^= line.count(self._quote) & 1
        while True:
            if self._overflow:
                parity ^= self._overflow_parity
                self.rec_lines.append(self._overflow_sample)
                self._overflow = False
            if not parity:
                return
            if self._pos >= len(self._lines):
                self._fill()
                if self._overflow:
                    continue
                if self._pos >= len(self._lines):
                    return  # unterminated quote up to EOF
            line = self._lines[self._pos]
            self._pos += 1
            self.lineno += 1
            parity ^= line.count(self._quote) & 1

    def raw(self) -> str | None:
        """The start of the current record's text for a reject log."""
        parts: list[str] = []
        size = 0
        for line in self.rec_lines:
            parts.append(line)
            size += len(line)
            if size >= _RAW_LIMIT:
                break
        if not parts:
            return None
        text = "".join(parts)[:_RAW_LIMIT].rstrip("\r\n")
        text = _SURROGATE_RE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
        text = text.replace("\x00", "\\x00")
        encoded = text.encode("utf-8", "replace")
        if len(encoded) > _RAW_LIMIT:
            text = encoded[:_RAW_LIMIT].decode("utf-8", "ignore")
        return text


def iter_rows(
    stream: BinaryIO,
    dialect: CsvDialect,
    *,
    source: str,
    max_field_bytes: int = 1_048_576,
    max_columns: int = 1000,
    strict_columns: bool = True,
    max_record_chars: int | None = None,
    on_fallback: Callable[[EncodingFallback], None] | None = None,
    check_utf8_lookalikes: bool = False,
) -> Iterator[CsvRow | CsvRowError]:
    """Read records from a binary stream, front to back, in one pass.

    The first non-blank record is the header.  Header names are stripped of
    whitespace and a stray BOM; an empty name becomes ``column_<n>``
    (1-based); duplicate names raise :class:`CsvFileError`.

    Each later record yields a :class:`CsvRow` (values stripped of
    surrounding whitespace, otherwise untouched) or a :class:`CsvRowError`
    when it

    * has a different number of fields than the header (only with
      ``strict_columns``; otherwise short rows are padded with ``''`` and
      long rows truncated),
    * has a field longer than ``max_field_bytes`` (counted as UTF-8),
    * is longer than ``max_record_chars`` decoded characters (default
      ``max(4 * max_field_bytes, 1 MiB)``); input is then skipped up to the
      end of that record without holding it in memory,
    * contains NUL bytes or bytes that are invalid in the encoding (the
      reason names the first such byte in hex and its offset in the row, not
      the row's text; see the module docstring for the UTF-8 to cp1252
      fallback),
    * with ``check_utf8_lookalikes`` (for a cp1252 or latin-1 file in which
      :func:`scan_encoding` found valid UTF-8): holds characters whose bytes
      are UTF-8 for a letter or symbol, i.e. would read as ``Ã¶``,
    * starts a quoted field that is not closed properly (see below).

    An unterminated quote: a quoted field opened on line *n* that runs to
    the end of the file, or whose record ends malformed (wrong field count,
    text after the closing quote, over the record limit) while the line after
    *n* reads as the start of a row (the header's width, or fewer fields
    ending in a quoted field of its own). Line *n* alone is
    rejected and reading goes on at line *n + 1*, so the rows the open quote
    swallowed land one by one (each failing one is rejected on its own line).
    A legitimately quoted field with line breaks is unaffected.

    Blank lines and records whose fields are all empty (``;;;`` lines from
    Excel) are skipped silently.  Reading always continues with the next
    record.

    ``csv.field_size_limit()`` is process-wide; it is raised to
    ``max_record_chars + 1`` if lower, never lowered, and the field limit is
    enforced here instead.

    Raises :class:`CsvFileError` for an empty file, an unreadable or
    invalid header, more than ``max_columns`` header fields, or an unknown
    encoding.
    """
    if max_field_bytes < 1 or max_columns < 1:
        raise ValueError("max_field_bytes and max_columns must be positive")
    if max_record_chars is None:
        max_record_chars = max(4 * max_field_bytes, 1024 * 1024)
    elif max_record_chars < 1:
        raise ValueError("max_record_chars must be positive")
    feeder = _new_feeder(stream, dialect, source, max_record_chars, on_fallback, check_utf8_lookalikes)
    return _iter_records(
        feeder,
        dialect,
        source=source,
        max_field_bytes=max_field_bytes,
        max_columns=max_columns,
        strict_columns=strict_columns,
        max_record_chars=max_record_chars,
    )


def _new_feeder(
    stream: BinaryIO,
    dialect: CsvDialect,
    source: str,
    max_record_chars: int,
    on_fallback: Callable[[EncodingFallback], None] | None,
    check_utf8_lookalikes: bool,
) -> _LineFeeder:
    try:
        codecs.lookup(dialect.encoding)
    except LookupError:
        raise CsvFileError(source, f"unknown encoding {dialect.encoding!r}") from None
    if csv.field_size_limit() <= max_record_chars:
        csv.field_size_limit(max_record_chars + 1)
    return _LineFeeder(
        stream,
        dialect,
        source=source,
        max_record_chars=max_record_chars,
        on_fallback=on_fallback,
        check_utf8_lookalikes=check_utf8_lookalikes,
    )


def read_header(
    stream: BinaryIO, dialect: CsvDialect, *, source: str, max_columns: int = 1000
) -> list[str]:
    """The column names of a file's header (cleaned as :func:`iter_rows` cleans them),
    reading no further than the header. Raises :class:`CsvFileError` like :func:`iter_rows`."""
    limit = 1024 * 1024
    feeder = _new_feeder(stream, dialect, source, limit, None, False)
    header: list[str] = []
    for _ in _iter_records(
        feeder,
        dialect,
        source=source,
        max_field_bytes=limit,
        max_columns=max_columns,
        strict_columns=False,
        max_record_chars=limit,
        header_only=header,
    ):
        pass
    return header


def _iter_records(
    feeder: _LineFeeder,
    dialect: CsvDialect,
    *,
    source: str,
    max_field_bytes: int,
    max_columns: int,
    strict_columns: bool,
    max_record_chars: int,
    header_only: list[str] | None = None,
) -> Iterator[CsvRow | CsvRowError]:
    reader = _csv_reader(feeder, dialect, strict=False)
    next_record = reader.__next__
    # A field can only exceed the byte limit if the record has more than a
    # quarter of that many characters (UTF-8 uses at most 4 bytes each).
    size_check_from = max_field_bytes // 4
    header: list[str] | None = None
    width = 0
    while True:
        start = feeder.lineno + 1
        feeder.rec_lines = []
        feeder.rec_chars = 0
        problem: str | None = None
        fields: list[str] = []
        too_large = False
        try:
            fields = next_record()
        except StopIteration:
            break
        except _RecordTooLarge:
            too_large = True
        except csv.Error as exc:
            problem = f"malformed CSV: {exc}"
        if (
            header is not None
            and len(feeder.rec_lines) > 1
            and not (too_large and feeder.line_overflow)
            and _unterminated(feeder, fields, width, dialect, too_large or problem is not None)
        ):
            # Line ``start`` opened a quote that swallowed the lines after it: reject that
            # line alone and read the others again.
            rest = feeder.rec_lines[1:]
            del feeder.rec_lines[1:]
            yield CsvRowError(
                start,
                "unterminated quote: a quoted field opened on this line is not closed "
                "properly; the lines after it are read as rows again",
                feeder.raw(),
            )
            feeder.refeed(rest, start)
            continue
        if too_large:
            feeder.skip_record()
            problem = (
                f"record longer than {max_record_chars} characters "
                f"(oversized field or unbalanced quote); lines {start}-{feeder.lineno} skipped"
            )
        if problem is None:
            if feeder.rec_problem is not None:
                problem = feeder.rec_problem
            elif feeder.exhausted:
                problem = "unterminated quoted field: no closing quote before end of file"
        if problem is not None:
            feeder.rec_problem = None
            if header is None:
                raise CsvFileError(source, f"cannot read header (line {start}): {problem}")
            yield CsvRowError(start, problem, feeder.raw())
            continue
        values = list(map(str.strip, fields))
        if not any(values):
            continue  # blank line or only delimiters
        if header is None:
            header = _make_header(values, source=source, line=start, max_columns=max_columns)
            width = len(header)
            if header_only is not None:
                header_only.extend(header)
                return
            continue
        if len(values) != width:
            if strict_columns:
                yield CsvRowError(
                    start, f"expected {width} fields, got {len(values)}", feeder.raw()
                )
                continue
            if len(values) < width:
                values.extend([""] * (width - len(values)))
            else:
                del values[width:]
        if feeder.rec_chars > size_check_from:
            oversized = _oversized_field(header, fields, max_field_bytes, size_check_from)
            if oversized is not None:
                yield CsvRowError(start, oversized, feeder.raw())
                continue
        yield CsvRow(start, dict(zip(header, values, strict=True)))
    if header is None:
        raise CsvFileError(source, "file is empty (no header row)")


def _unterminated(
    feeder: _LineFeeder, fields: list[str], width: int, dialect: CsvDialect, failed: bool
) -> bool:
    """Whether a record spanning several physical lines is really an unterminated quote on
    its first line rather than a quoted field with line breaks.

    Certain when the quote runs to the end of the file. Likely when the record ends broken
    (``failed``: too large or unparsable; a field count other than ``width``; text after a
    closing quote) and the second line reads by itself as a row of ``width`` fields: the
    swallowed text is rows. A broken record whose second line is not a row (a long note) is
    rejected whole, as before."""
    if feeder.exhausted:
        return True
    lines = feeder.rec_lines
    broken = failed or len(fields) != width or not _strict_single_record(lines, dialect)
    return broken and _row_of_width(lines[1:], width, dialect)


def _csv_reader(lines: Iterable[str], dialect: CsvDialect, *, strict: bool) -> Iterator[list[str]]:
    """The csv module's reader for ``dialect``; ``strict`` makes a stray quote an error."""
    return csv.reader(
        lines,
        delimiter=dialect.delimiter,
        quotechar=dialect.quotechar,
        doublequote=True,
        skipinitialspace=True,
        strict=strict,
    )


def _strict_single_record(lines: list[str], dialect: CsvDialect) -> bool:
    """``lines`` are one well-formed record (no text after a closing quote)."""
    try:
        records = list(_csv_reader(lines, dialect, strict=True))
    except csv.Error:
        return False
    return len(records) == 1


def _row_of_width(lines: list[str], width: int, dialect: CsvDialect) -> bool:
    """The first non-blank record of ``lines`` is well formed and has ``width`` fields, or it
    opens a quoted field of its own that ``lines`` do not close, as the ``width`` fields or
    fewer (but two or more) it has so far: the start of a row with a multi-line field."""
    exhausted = False

    def feed() -> Iterator[str]:
        nonlocal exhausted
        yield from lines
        exhausted = True

    try:
        for row in _csv_reader(feed(), dialect, strict=True):
            if any(field.strip() for field in row):
                return len(row) == width
    except csv.Error:
        if not exhausted:
            return False
        for row in _csv_reader(lines, dialect, strict=False):
            if any(field.strip() for field in row):
                return 2 <= len(row) <= width
    return False


def _make_header(values: list[str], *, source: str, line: int, max_columns: int) -> list[str]:
    if len(values) > max_columns:
        raise CsvFileError(
            source, f"header has {len(values)} columns, more than the limit of {max_columns}"
        )
    names = []
    for index, value in enumerate(values, start=1):
        name = value.lstrip("\ufeff").strip()
        names.append(name or f"column_{index}")
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        listed = ", ".join(repr(name) for name in duplicates)
        raise CsvFileError(source, f"duplicate column names in header (line {line}): {listed}")
    return names


def _oversized_field(
    header: list[str], fields: list[str], max_field_bytes: int, check_from: int
) -> str | None:
    for name, field in zip(header, fields, strict=False):
        if len(field) > check_from:
            size = len(field.encode("utf-8", "surrogatepass"))
            if size > max_field_bytes:
                return f"field {name!r} is {size} bytes, limit is {max_field_bytes}"
    return None


class _PrefixedStream:
    """A read-only stream that returns ``prefix`` first, then ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                data = bytes(self._prefix) + self._stream.read()
                self._prefix = memoryview(b"")
                return data
            data = bytes(self._prefix[:size])
            self._prefix = self._prefix[size:]
            return data
        return self._stream.read(size)

    def readable(self) -> bool:
        return True


def _read_chunk(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if data is None:
        raise OSError("non-blocking stream returned no data")
    return bytes(data)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at EOF (streams may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        data = _read_chunk(stream, remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def sniff_and_iter(
    stream: BinaryIO,
    *,
    source: str,
    encoding: str | None = None,
    delimiter: str | None = None,
    head_size: int = HEAD_SIZE,
    **kw: Any,
) -> Iterator[CsvRow | CsvRowError]:
    """Detect the dialect from the stream's head, then read all records.

    The head is read eagerly and replayed in front of the rest of the
    stream, so one-pass streams need no seeking.  ``kw`` is passed on to
    :func:`iter_rows`.
    """
    head = _read_exactly(stream, head_size)
    dialect = detect_dialect(head, encoding=encoding, delimiter=delimiter)
    logger.debug("%s: detected %s", source, dialect)
    stream_with_head = cast(BinaryIO, _PrefixedStream(head, stream))
    return iter_rows(stream_with_head, dialect, source=source, **kw)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL}
_BOM_ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-32")


@dataclass(frozen=True)
class CsvWriteOptions:
    """Output format for :func:`write_rows`.

    ``quoting`` is ``'minimal'`` (quote only where needed) or ``'all'``.
    ``bom`` writes a UTF-8 BOM; it is only allowed for Unicode encodings
    (``'utf-8-sig'`` and ``'utf-16'`` always write one).
    """

    delimiter: str = ","
    encoding: str = "utf-8"
    bom: bool = False
    quoting: str = "minimal"
    line_terminator: str = "\r\n"
    escape_formulas: bool = True

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(f"invalid delimiter {self.delimiter!r}")
        if self.quoting not in _QUOTING:
            raise ValueError(f"quoting must be one of {sorted(_QUOTING)}, not {self.quoting!r}")
        if self.line_terminator not in ("\r\n", "\n", "\r"):
            raise ValueError(f"invalid line terminator {self.line_terminator!r}")
        name = _lookup_encoding(self.encoding)
        if self.bom and name not in _BOM_ENCODINGS:
            raise ValueError(f"a BOM cannot be written in {self.encoding!r}")


#: German Excel: ``;`` delimiter, UTF-8 with BOM (Excel needs the BOM to
#: recognise UTF-8).
EXCEL_DE = CsvWriteOptions(delimiter=";", encoding="utf-8", bom=True)
#: German Excel, legacy Windows encoding.
EXCEL_DE_CP1252 = CsvWriteOptions(delimiter=";", encoding="cp1252")


def escape_formula(value: str) -> str:
    """Neutralise spreadsheet formula injection (OWASP "CSV injection").

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading ``'`` so spreadsheet programs show it as text.
    """
    if value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _is_plain_number(value: object) -> bool:
    """True for exact ``int``, finite ``float`` and finite ``Decimal`` values."""
    if type(value) is int:
        return True
    if isinstance(value, float):
        return type(value) is float and math.isfinite(value)
    if isinstance(value, Decimal):
        return type(value) is Decimal and value.is_finite()
    return False


def _cell(value: object, escape: bool) -> str:
    if value is None:
        return ""
    if type(value) is str:
        text = value
    elif _is_plain_number(value):
        # str() of an int, finite float or finite Decimal holds only digits,
        # sign, '.', 'e' and 'E': it cannot carry a formula.
        return str(value)
    else:
        text = str(value)
    return escape_formula(text) if escape else text


class _LastLine:
    """Write target for ``csv.writer`` that keeps the last written row."""

    __slots__ = ("text",)

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


class _ChunkedWriter:
    """Collects bytes and writes them to the stream in chunks."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self._size += len(data)
            if self._size >= _WRITE_CHUNK:
                self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        written = self._stream.write(data)
        # Buffered streams write everything; many file-likes return None.
        # Raw streams may write less and report how much.
        if written is not None and written < len(data):
            view = memoryview(data)[written:]
            while view:
                written = self._stream.write(view)
                if not written:
                    raise OSError("stream accepted no data")
                view = view[written:]


def write_rows(
    stream: BinaryIO,
    columns: list[str],
    rows: Iterable[Mapping[str, object]],
    options: CsvWriteOptions,
) -> int:
    """Write a header and rows to a binary stream; return the data row count.

    Cells come from ``row.get(column)``: ``None`` and missing keys become
    empty cells, other values are converted with ``str()``.  With
    ``options.escape_formulas`` every text cell, header included, goes
    through :func:`escape_formula`; values of type ``int``, finite ``float``
    and finite ``Decimal`` are written unescaped, since their text cannot
    be a formula.

    Output is encoded row by row and written in chunks of about 64 KiB; the
    stream is neither flushed nor closed.  A value the encoding cannot
    represent raises :class:`CsvEncodeError` naming row and column; rows
    before it have been written.
    """
    capture = _LastLine()
    writer = csv.writer(
        capture,
        delimiter=options.delimiter,
        quotechar='"',
        doublequote=True,
        quoting=_QUOTING[options.quoting],
        # Always '\r\n' so fields holding '\r' or '\n' get quoted; the
        # requested terminator replaces it below.
        lineterminator="\r\n",
    )
    encoder = codecs.getincrementalencoder(options.encoding)()
    out = _ChunkedWriter(stream)
    if options.bom and codecs.lookup(options.encoding).name == "utf-8":
        out.write(codecs.BOM_UTF8)
    terminator = options.line_terminator
    escape = options.escape_formulas

    def emit(cells: list[str], row_number: int) -> None:
        writer.writerow(cells)
        text = capture.text
        if terminator != "\r\n":
            text = text[:-2] + terminator
        try:
            data = encoder.encode(text)
        except UnicodeEncodeError as exc:
            out.flush()
            raise _encode_error(exc, columns, cells, row_number, options.encoding) from None
        out.write(data)

    emit([_cell(name, escape) for name in columns], 0)
    count = 0
    for row in rows:
        count += 1
        emit([_cell(row.get(name), escape) for name in columns], count)
    out.write(encoder.encode("", True))
    out.flush()
    return count


def _encode_error(
    exc: UnicodeEncodeError, columns: list[str], cells: list[str], row: int, encoding: str
) -> CsvEncodeError:
    where = "header" if row == 0 else f"row {row}"
    for name, cell in zip(columns, cells, strict=True):
        try:
            cell.encode(encoding)
        except UnicodeEncodeError as cell_exc:
            bad = cell_exc.object[cell_exc.start : cell_exc.end]
            return CsvEncodeError(
                row, name, f"{where}, column {name!r}: {bad!r} cannot be encoded in {encoding}"
            )
    bad = exc.object[exc.start : exc.end]
    return CsvEncodeError(row, None, f"{where}: {bad!r} cannot be encoded in {encoding}")
