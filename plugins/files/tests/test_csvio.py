"""Tests for synchub_files.csvio: dialect detection, streaming reads, writes."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

try:
    import synchub_files.csvio  # noqa: F401  (installed package)
except ImportError:  # source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synchub_files.csvio import (
    EXCEL_DE,
    EXCEL_DE_CP1252,
    CsvDialect,
    CsvEncodeError,
    CsvFileError,
    CsvRow,
    CsvRowError,
    CsvWriteOptions,
    EncodingFallback,
    detect_dialect,
    escape_formula,
    iter_rows,
    prescan_encoding,
    read_header,
    scan_encoding,
    sniff_and_iter,
    write_rows,
)

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


class OnePassStream:
    """A binary stream that can only be read front to back, like an SFTP body.

    ``step`` limits the bytes returned per read() to provoke chunk
    boundaries in awkward places.
    """

    def __init__(self, data: bytes, step: int | None = None) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        if self._step is not None:
            size = min(size, self._step)
        return self._buf.read(size)

    def seek(self, *args: object) -> int:
        raise AssertionError("seek() called on a one-pass stream")

    def tell(self) -> int:
        raise AssertionError("tell() called on a one-pass stream")

    def peek(self, *args: object) -> bytes:
        raise AssertionError("peek() called on a one-pass stream")


def read_all(data: bytes, *, step: int | None = None, **kw: object) -> list[CsvRow | CsvRowError]:
    return list(sniff_and_iter(OnePassStream(data, step), source="test.csv", **kw))


def rows_of(items: list[CsvRow | CsvRowError]) -> list[dict[str, str]]:
    assert all(isinstance(item, CsvRow) for item in items), items
    return [item.values for item in items]  # type: ignore[union-attr]


def lines_of(items: list[CsvRow | CsvRowError]) -> list[tuple[str, int]]:
    return [(type(item).__name__, item.line) for item in items]


@pytest.fixture
def default_field_limit():
    """Run with csv's default field size limit and restore the previous one."""
    previous = csv.field_size_limit()
    csv.field_size_limit(131072)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


# --------------------------------------------------------------------------
# Encoding detection
# --------------------------------------------------------------------------


def test_utf8_without_bom() -> None:
    data = "Name,Ort\nJürgen,Köln\nZoë,Paris\n".encode()
    dialect = detect_dialect(data)
    assert dialect == CsvDialect(
        delimiter=",", encoding="utf-8", has_bom=False, encoding_guessed=True
    )
    assert rows_of(read_all(data)) == [
        {"Name": "Jürgen", "Ort": "Köln"},
        {"Name": "Zoë", "Ort": "Paris"},
    ]


def test_utf8_with_bom() -> None:
    data = codecs.BOM_UTF8 + '"Name";"Ort"\r\nJürgen;Köln\r\n'.encode()
    dialect = detect_dialect(data)
    assert (dialect.encoding, dialect.has_bom, dialect.delimiter) == ("utf-8-sig", True, ";")
    assert rows_of(read_all(data)) == [{"Name": "Jürgen", "Ort": "Köln"}]


def test_explicit_utf8_on_bom_file_strips_stray_bom() -> None:
    data = codecs.BOM_UTF8 + '"Name";Ort\r\nJürgen;Köln\r\n'.encode()
    items = read_all(data, encoding="utf-8")
    assert rows_of(items) == [{"Name": "Jürgen", "Ort": "Köln"}]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_bom(codec: str) -> None:
    bom = codecs.BOM_UTF16_LE if codec.endswith("le") else codecs.BOM_UTF16_BE
    data = bom + "Name\tOrt\r\nJürgen\tKöln\r\n".encode(codec)
    dialect = detect_dialect(data)
    assert (dialect.encoding, dialect.has_bom, dialect.delimiter) == ("utf-16", True, "\t")
    assert rows_of(read_all(data)) == [{"Name": "Jürgen", "Ort": "Köln"}]


def test_cp1252_umlauts_euro_sharp_s() -> None:
    data = "Name;Strasse;Betrag\r\nMüller;Straße;1.234,50 €\r\n".encode("cp1252")
    dialect = detect_dialect(data)
    assert (dialect.encoding, dialect.delimiter) == ("cp1252", ";")
    assert rows_of(read_all(data)) == [
        {"Name": "Müller", "Strasse": "Straße", "Betrag": "1.234,50 €"}
    ]


def test_latin1_when_cp1252_cannot_decode() -> None:
    # 0x8D is undefined in cp1252; 0xFC is 'ü' in latin-1.
    data = b"Name;Ort\nA\x8dB;M\xfcnchen\n"
    dialect = detect_dialect(data)
    assert dialect.encoding == "latin-1"
    assert rows_of(read_all(data)) == [{"Name": "A\x8dB", "Ort": "München"}]


def test_utf8_multibyte_char_cut_at_end_of_head() -> None:
    full = ("Name;Ort\n" + "Müller;Köln\n" * 10).encode()
    cut = full.index("ö".encode()) + 1  # in the middle of 'ö'
    assert detect_dialect(full[:cut]).encoding == "utf-8"


def test_explicit_arguments_override_detection() -> None:
    data = "a;b\n1;2\n".encode("cp1252")
    dialect = detect_dialect(data, encoding="latin-1", delimiter="|")
    assert dialect == CsvDialect(delimiter="|", encoding="latin-1", encoding_guessed=False)


def test_prescan_encoding() -> None:
    late_cp1252 = b"a;b\n" + b"x;y\n" * 40000 + "Müller;Köln\n".encode("cp1252")
    assert prescan_encoding(OnePassStream(late_cp1252, step=4096)) == "cp1252"
    assert prescan_encoding(io.BytesIO("a;b\nÄ;ö\n".encode())) == "utf-8"
    assert prescan_encoding(io.BytesIO(codecs.BOM_UTF8 + b"a\n")) == "utf-8-sig"
    assert prescan_encoding(io.BytesIO(b"a;b\n" * 1000 + b"\x8d;\xfc\n")) == "latin-1"


# --------------------------------------------------------------------------
# Delimiter detection
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # German Excel: decimal commas must not win over ';'
        ("Kundennr;Name;Umsatz\n1;Müller;1.234,50\n2;Schmidt;99,00\n3;Lehmann;0\n", ";"),
        # Mailchimp-style ',' with a ';' inside quotes
        ('Email,First Name,Tags\na@x.de,Anna,"vip;newsletter"\nb@y.de,Bernd,\n', ","),
        ("id\tname\tcity\n1\tAnna\tBerlin, Mitte\n2\tBernd\tKöln\n", "\t"),
        ("id|name|city\n1|Anna|Berlin\n2|Bernd|Köln\n", "|"),
    ],
)
def test_delimiter_detected(text: str, expected: str) -> None:
    assert detect_dialect(text.encode()).delimiter == expected


def test_delimiter_ignores_quoted_delimiters_and_line_breaks() -> None:
    text = 'id,note,city\n1,"a;b;c\nd;e;f\ng;h",Berlin\n2,"x;y",Köln\n3,plain,Bonn\n'
    assert detect_dialect(text.encode()).delimiter == ","


def test_delimiter_tie_break_order() -> None:
    # Both candidates have a consistent count: ';' beats '\t' beats ',' beats '|'.
    assert detect_dialect(b"a;b,c\n1;2,3\n").delimiter == ";"
    assert detect_dialect(b"a\tb,c\n1\t2,3\n").delimiter == "\t"
    assert detect_dialect(b"a|b,c\n1|2,3\n").delimiter == ","


def test_delimiter_majority_wins_over_broken_rows() -> None:
    text = "a;b;c\n1;2;3\n4;5\n6;7;8\n9;10;11\n"
    assert detect_dialect(text.encode()).delimiter == ";"


def test_single_column_file_uses_comma() -> None:
    assert detect_dialect(b"email\na@example.com\nb@example.com\n").delimiter == ","
    assert rows_of(read_all(b"email\na@example.com\n")) == [{"email": "a@example.com"}]


# --------------------------------------------------------------------------
# Records, line numbers, line endings
# --------------------------------------------------------------------------


@pytest.mark.parametrize("nl", ["\r\n", "\n", "\r"], ids=["CRLF", "LF", "CR"])
def test_quoted_delimiter_and_line_breaks_keep_line_numbers(nl: str) -> None:
    text = nl.join(
        [
            "id;note;city",
            '1;"Hinterhaus; 2. OG";Berlin',
            f'2;"Zeile 1{nl}Zeile 2{nl}Zeile 3";Köln',
            "3;plain;Bonn",
            "",
            '4;"say ""hi""";Essen',
            "",
        ]
    )
    items = read_all(text.encode())
    assert lines_of(items) == [("CsvRow", 2), ("CsvRow", 3), ("CsvRow", 6), ("CsvRow", 8)]
    assert rows_of(items) == [
        {"id": "1", "note": "Hinterhaus; 2. OG", "city": "Berlin"},
        {"id": "2", "note": f"Zeile 1{nl}Zeile 2{nl}Zeile 3", "city": "Köln"},
        {"id": "3", "note": "plain", "city": "Bonn"},
        {"id": "4", "note": 'say "hi"', "city": "Essen"},
    ]


def test_last_line_without_terminator() -> None:
    items = read_all(b"a,b\r\n1,2\r\n3,4")
    assert lines_of(items) == [("CsvRow", 2), ("CsvRow", 3)]
    assert rows_of(items)[-1] == {"a": "3", "b": "4"}


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 4096])
def test_tiny_reads_give_same_result(step: int) -> None:
    text = (
        "Kundennr;Name;Notiz\r\n"
        '1;Jürgen Groß;"zwei\r\nZeilen"\r\n'
        "\r\n"
        "2;Zoë 😀;€ 5\r\n"
        "3;Ana;x\r"
        "4;Bo;y\n"
    )
    data = text.encode()
    # Directly (every read is short) and through sniff_and_iter with a head
    # that ends mid-file (head replayed, then short reads).
    direct = list(iter_rows(OnePassStream(data, step), detect_dialect(data), source="t.csv"))
    sniffed = read_all(data, step=step, head_size=20)
    assert direct == sniffed
    items = direct
    assert lines_of(items) == [("CsvRow", 2), ("CsvRow", 5), ("CsvRow", 6), ("CsvRow", 7)]
    assert rows_of(items) == [
        {"Kundennr": "1", "Name": "Jürgen Groß", "Notiz": "zwei\r\nZeilen"},
        {"Kundennr": "2", "Name": "Zoë 😀", "Notiz": "€ 5"},
        {"Kundennr": "3", "Name": "Ana", "Notiz": "x"},
        {"Kundennr": "4", "Name": "Bo", "Notiz": "y"},
    ]


def test_values_stripped_but_not_interpreted() -> None:
    data = b"id;plz;wert;formel\n 7 ;  01067\t; 1.234,50 ;'=SUM(A1)\n"
    assert rows_of(read_all(data)) == [
        {"id": "7", "plz": "01067", "wert": "1.234,50", "formel": "'=SUM(A1)"}
    ]


def test_blank_lines_and_delimiter_only_rows_are_skipped() -> None:
    data = b"\r\na;b;c\r\n\r\n1;2;3\r\n;;\r\n  \r\n4;5;6\r\n"
    items = read_all(data)
    assert lines_of(items) == [("CsvRow", 4), ("CsvRow", 7)]


def test_header_names_cleaned() -> None:
    data = b" Name ;;Ort;\n1;2;3;4\n"
    assert rows_of(read_all(data)) == [{"Name": "1", "column_2": "2", "Ort": "3", "column_4": "4"}]


# --------------------------------------------------------------------------
# Broken rows
# --------------------------------------------------------------------------


def test_wrong_field_counts_rejected() -> None:
    data = b"a;b;c\n1;2;3\n4;5\n6;7;8;9\n10;11;12\n"
    items = read_all(data)
    assert lines_of(items) == [
        ("CsvRow", 2),
        ("CsvRowError", 3),
        ("CsvRowError", 4),
        ("CsvRow", 5),
    ]
    assert items[1] == CsvRowError(3, "expected 3 fields, got 2", "4;5")
    assert items[2] == CsvRowError(4, "expected 3 fields, got 4", "6;7;8;9")


def test_wrong_field_counts_padded_when_not_strict() -> None:
    data = b"a;b;c\n4;5\n6;7;8;9\n"
    assert rows_of(read_all(data, strict_columns=False)) == [
        {"a": "4", "b": "5", "c": ""},
        {"a": "6", "b": "7", "c": "8"},
    ]


def test_unterminated_quote_at_end_of_file() -> None:
    # The line with the open quote is rejected alone; the line after it is read again as a row.
    data = b'a;b\n1;2\n3;"open\nstill open\n'
    items = read_all(data)
    assert lines_of(items) == [("CsvRow", 2), ("CsvRowError", 3), ("CsvRowError", 4)]
    error = items[1]
    assert isinstance(error, CsvRowError)
    assert "unterminated" in error.reason
    assert error.raw == '3;"open'
    assert items[2] == CsvRowError(4, "expected 2 fields, got 1", "still open")


@pytest.mark.parametrize("step", [None, 1, 3])
def test_nul_byte_rejects_row_and_reading_continues(step: int | None) -> None:
    data = b"a;b\n1;x\x00y\n2;ok\n"
    dialect = detect_dialect(data)
    items = list(iter_rows(OnePassStream(data, step), dialect, source="t.csv"))
    assert items == [
        CsvRowError(2, "row contains NUL byte(s)", "1;x\\x00y"),
        CsvRow(3, {"a": "2", "b": "ok"}),
    ]


def test_oversized_field_in_middle_then_rows_continue() -> None:
    data = (
        "id;text;tail\n1;ok;a\n2;" + "z" * 5000 + ";b\n3;" + "ä" * 400 + ";c\n4;fine;d\n"
    ).encode()
    items = read_all(data, max_field_bytes=1000)
    assert lines_of(items) == [
        ("CsvRow", 2),
        ("CsvRowError", 3),
        ("CsvRow", 4),
        ("CsvRow", 5),
    ]
    error = items[1]
    assert isinstance(error, CsvRowError)
    assert error.reason == "field 'text' is 5000 bytes, limit is 1000"
    assert error.raw is not None and len(error.raw.encode()) <= 2048
    # 'ä' is 2 bytes in UTF-8: 400 of them (800 bytes) are within the limit ...
    assert items[2].values["text"] == "ä" * 400  # type: ignore[union-attr]
    # ... 600 of them (1200 bytes) are not.
    data = ("id;text\n1;" + "ä" * 600 + "\n2;x\n").encode()
    assert lines_of(read_all(data, max_field_bytes=1000)) == [("CsvRowError", 2), ("CsvRow", 3)]


def test_oversized_multiline_field_skipped_to_its_end(default_field_limit: None) -> None:
    big = "\r\n".join(["y" * 100] * 200)  # 200 physical lines
    data = f'id;text;tail\r\n1;ok;a\r\n2;"{big}";b\r\n3;fine;c\r\n'.encode()
    items = read_all(data, max_field_bytes=1000, max_record_chars=5000)
    assert lines_of(items) == [("CsvRow", 2), ("CsvRowError", 3), ("CsvRow", 203)]
    assert items[2].values == {"id": "3", "text": "fine", "tail": "c"}  # type: ignore[union-attr]
    assert "longer than 5000 characters" in items[1].reason  # type: ignore[union-attr]


@pytest.mark.parametrize("step", [None, 100_000])
def test_overlong_line_larger_than_read_chunk(step: int | None) -> None:
    data = (
        "id;text;tail\n1;ok;a\n2;" + "q" * 700_000 + ";b\n"
        '3;"' + "r" * 700_000 + '\nstill quoted";c\n'
        "4;fine;d\n"
    ).encode()
    items = read_all(data, step=step, max_field_bytes=1000, max_record_chars=10_000)
    assert lines_of(items) == [
        ("CsvRow", 2),
        ("CsvRowError", 3),
        ("CsvRowError", 4),
        ("CsvRow", 6),
    ]
    assert items[3].values == {"id": "4", "text": "fine", "tail": "d"}  # type: ignore[union-attr]
    for error in items[1:3]:
        assert isinstance(error, CsvRowError)
        assert error.raw is not None and 0 < len(error.raw.encode()) <= 2048


def test_fields_above_csv_default_limit_with_defaults(default_field_limit: None) -> None:
    data = ("id;text\n1;" + "a" * 200_000 + "\n2;" + "b" * 1_500_000 + "\n3;c\n").encode()
    items = read_all(data)
    assert lines_of(items) == [("CsvRow", 2), ("CsvRowError", 3), ("CsvRow", 4)]
    assert len(items[0].values["text"]) == 200_000  # type: ignore[union-attr]
    assert items[1].reason == "field 'text' is 1500000 bytes, limit is 1048576"  # type: ignore[union-attr]
    # The global limit was raised just enough for the record cap, not lowered later.
    assert csv.field_size_limit() == 4 * 1_048_576 + 1


def test_global_field_limit_never_lowered() -> None:
    previous = csv.field_size_limit()
    csv.field_size_limit(50_000_000)
    try:
        data = ("id;text\n1;" + "z" * 200 + "\n2;ok\n").encode()
        items = read_all(data, max_field_bytes=100)
        assert lines_of(items) == [("CsvRowError", 2), ("CsvRow", 3)]
        assert csv.field_size_limit() == 50_000_000
    finally:
        csv.field_size_limit(previous)


def test_raw_is_truncated_to_2_kib() -> None:
    data = ("a;b\n" + "€" * 3000 + "\n").encode()
    items = read_all(data)
    error = items[0]
    assert isinstance(error, CsvRowError)
    assert error.reason == "expected 2 fields, got 1"
    assert error.raw is not None
    assert 2040 <= len(error.raw.encode()) <= 2048


# --------------------------------------------------------------------------
# Whole-file problems
# --------------------------------------------------------------------------


def test_duplicate_header_names() -> None:
    with pytest.raises(CsvFileError) as info:
        read_all(b"Email;Name;email;Name\n1;2;3;4\n")
    message = str(info.value)
    assert message.startswith("test.csv: ")
    assert "'Name'" in message and "'Email'" not in message


def test_duplicate_header_after_cleaning() -> None:
    with pytest.raises(CsvFileError, match="'Ort'"):
        read_all(b"Ort; Ort \n1;2\n")


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [(b"", None), (b"\r\n\r\n", None), (b" \n\t\n", None), (b" \n;;\n", ";")],
    ids=["zero-bytes", "blank-lines", "whitespace", "delimiters-only"],
)
def test_empty_file(data: bytes, delimiter: str | None) -> None:
    with pytest.raises(CsvFileError, match=r"^test\.csv: .*empty"):
        read_all(data, delimiter=delimiter)


def test_header_only() -> None:
    assert read_all(b"a;b;c\r\n") == []
    assert read_all(b"a;b;c") == []


def test_too_many_columns() -> None:
    with pytest.raises(CsvFileError, match="more than the limit of 3"):
        read_all(b"a;b;c;d\n1;2;3;4\n", max_columns=3)


def test_undecodable_header_with_explicit_encoding() -> None:
    with pytest.raises(CsvFileError, match="header"):
        read_all(b"N\xe4me;x\n1;2\n", encoding="utf-8")


def test_text_stream_rejected() -> None:
    dialect = CsvDialect(delimiter=";", encoding="utf-8")
    with pytest.raises(TypeError, match="binary"):
        list(iter_rows(io.StringIO("a;b\n"), dialect, source="x.csv"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Encoding surprises after the head
# --------------------------------------------------------------------------


def _ascii_rows(count: int, start: int = 1) -> str:
    return "".join(f"{i};Kunde {i};Berlin\r\n" for i in range(start, start + count))


def test_late_cp1252_byte_in_guessed_utf8_file_falls_back() -> None:
    head = "id;name;city\r\n" + _ascii_rows(4000)
    assert len(head) > 64 * 1024
    data = head.encode() + "4001;Müller;Köln\r\n".encode("cp1252") + _ascii_rows(2, 4002).encode()
    events: list[EncodingFallback] = []
    items = read_all(data, step=10_000, on_fallback=events.append)
    assert len(items) == 4003
    values = rows_of(items)
    assert values[4000] == {"id": "4001", "name": "Müller", "city": "Köln"}
    assert values[-1] == {"id": "4003", "name": "Kunde 4003", "city": "Berlin"}
    assert items[4000].line == 4002
    assert events == [EncodingFallback("test.csv", 4002, "utf-8", "cp1252")]


def test_late_bad_byte_after_real_utf8_rejects_only_that_row() -> None:
    data = (
        "id;name\r\n1;Jürgen\r\n".encode()
        + _ascii_rows(4000, 2).encode()
        + "4002;Müller\r\n".encode("cp1252")
        + "4003;Zoë\r\n".encode()
    )
    items = list(sniff_and_iter(io.BytesIO(data), source="t.csv", strict_columns=False))
    errors = [item for item in items if isinstance(item, CsvRowError)]
    assert errors == [
        CsvRowError(4003, "bytes not valid UTF-8: 0xFC at offset 6 of the row", "4002;M\\xfcller")
    ]
    assert items[-1] == CsvRow(4004, {"id": "4003", "name": "Zoë"})
    assert len(items) == 4003


@pytest.mark.parametrize("step", [None, 1, 5])
def test_explicit_utf8_never_falls_back(step: int | None) -> None:
    data = b"id;name;city\n" + _ascii_rows(10).encode() + b"11;M\xfcller;x\n12;ok;y\n"
    events: list[EncodingFallback] = []
    dialect = detect_dialect(data, encoding="utf-8")
    stream = OnePassStream(data, step)
    items = list(iter_rows(stream, dialect, source="t.csv", on_fallback=events.append))
    assert events == []
    assert lines_of(items)[-3:] == [("CsvRow", 11), ("CsvRowError", 12), ("CsvRow", 13)]
    assert items[-2] == CsvRowError(
        12, "bytes not valid UTF-8: 0xFC at offset 4 of the row", "11;M\\xfcller;x"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"id;name\n1;Anna\n", "utf-8"),  # pure ASCII
        ("id;name\n1;Jörg\n".encode(), "utf-8"),
        ("id;name\n1;Jörg\n".encode("cp1252"), "cp1252"),
        (codecs.BOM_UTF8 + "id;name\n1;Jörg\n".encode("cp1252"), "utf-8-sig"),  # a BOM decides
        ("a\n".encode("utf-16"), "utf-16"),
        (b"a;b\n" * 1000 + b"\x8d;\xfc\n", "latin-1"),
        # Majorities: 3 valid characters against 1 bad byte, and 1 against 3.
        ("a\nÄÖÜ\n".encode() + b"\xfc\n", "utf-8"),
        ("a\nÄ\n".encode() + "äöü\n".encode("cp1252"), "cp1252"),
        ("a\nÄ\n".encode() + b"\xfc\n", "utf-8"),  # a tie stays UTF-8: its rejects are exact
        ("a\nGroß“\n".encode("cp1252"), "utf-8"),  # only 'ß“' (DF 93), valid UTF-8 by accident
        ("a\nGroß“ Müller Köln\n".encode("cp1252"), "cp1252"),
    ],
)
def test_scan_encoding_decides_from_the_whole_file(data: bytes, expected: str) -> None:
    assert scan_encoding(io.BytesIO(data)).encoding == expected


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 4096])
def test_scan_encoding_counts_characters_split_across_chunks(chunk_size: int) -> None:
    data = ("id;name\n" + "1;Jörg € 😀 Weiß\n" * 50).encode() + b"2;M\xfcller\n"
    scan = scan_encoding(OnePassStream(data, step=chunk_size), chunk_size=chunk_size)
    assert (scan.encoding, scan.utf8_chars, scan.invalid_bytes, scan.size) == ("utf-8", 200, 1, len(data))


def test_scan_encoding_reads_a_large_file_in_bounded_memory() -> None:
    block = ("1;Jörg;Köln\n" * 10_000).encode("cp1252")
    stream = OnePassStream(block * 100)  # 12 MB
    tracemalloc.start()
    try:
        scan = scan_encoding(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scan.encoding == "cp1252" and scan.invalid_bytes == 2_000_000
    assert peak < 8 * 1024 * 1024


def test_one_pass_fallback_rejects_utf8_text_after_it() -> None:
    """Without a scan (a one-pass stream), guessed UTF-8 still falls back to cp1252 when all
    before the bad byte was ASCII; UTF-8 text after the switch is rejected, not garbled."""
    data = (
        ("id;name;city\r\n" + _ascii_rows(4000)).encode()
        + "4001;Müller;Köln\r\n".encode("cp1252")
        + "4002;Jörg;Köln\r\n".encode()
        + "4003;Weiß;Köln\r\n".encode("cp1252")
    )
    items = read_all(data, step=10_000)
    errors = [item for item in items if isinstance(item, CsvRowError)]
    assert [(e.line, "C3 B6" in e.reason, "cp1252" in e.reason) for e in errors] == [(4003, True, True)]
    assert rows_of(items[-1:]) == [{"id": "4003", "name": "Weiß", "city": "Köln"}]


@pytest.mark.parametrize("step", [None, 1, 7])
def test_unterminated_quote_rereads_the_lines_after_it(step: int | None) -> None:
    data = (
        b'id;name;note\r\n1;"Anna;x\r\n2;Bernd;"Notiz\r\nzweite Zeile"\r\n3;Clara;y\r\n'
        b'4;Dora;"a ""quoted"" word"\r\n'
    )
    items = read_all(data, step=step)
    assert lines_of(items) == [("CsvRowError", 2), ("CsvRow", 3), ("CsvRow", 5), ("CsvRow", 6)]
    assert items[1].values["note"] == "Notiz\r\nzweite Zeile"  # type: ignore[union-attr]
    assert items[3].values["note"] == 'a "quoted" word'  # type: ignore[union-attr]


def test_a_broken_multiline_note_is_still_rejected_whole() -> None:
    # The record is broken (4 fields), but the line after the quote is note text, not a row.
    data = b'id;name;note\n1;Anna;"Notiz\nmehr Text";extra\n2;Bernd;x\n'
    items = read_all(data)
    assert lines_of(items) == [("CsvRowError", 2), ("CsvRow", 4)]
    assert items[0].reason == "expected 3 fields, got 4"  # type: ignore[union-attr]


def test_read_header_reads_only_the_header() -> None:
    data = "\r\n\ufeffKundennr; Straße ;;E-Mail\r\n" + "1;x;y;z\r\n"
    dialect = detect_dialect(data.encode("cp1252", "ignore"))
    assert read_header(io.BytesIO(data.encode("cp1252", "ignore")), dialect, source="h.csv") == [
        "Kundennr", "Straße", "column_3", "E-Mail"]
    with pytest.raises(CsvFileError, match="empty"):
        read_header(io.BytesIO(b""), dialect, source="h.csv")


def test_utf16_broken_surrogate_rejects_only_that_row() -> None:
    good = "id\tname\r\n1\tAnna\r\n".encode("utf-16-le")
    bad = "2\t".encode("utf-16-le") + b"\x00\xd8" + "x\r\n".encode("utf-16-le")
    tail = "3\tZoë\r\n".encode("utf-16-le")
    items = read_all(codecs.BOM_UTF16_LE + good + bad + tail)
    assert lines_of(items) == [("CsvRow", 2), ("CsvRowError", 3), ("CsvRow", 4)]
    assert items[1].reason == "row contains bytes that are not valid utf-16"  # type: ignore[union-attr]
    assert items[2].values == {"id": "3", "name": "Zoë"}  # type: ignore[union-attr]


def test_replacement_char_in_clean_text_is_kept() -> None:
    # U+FFFD that is really in the file is data, even next to a NUL row.
    data = "a;b\n1;x\x00\n2;Gr\ufffd\n".encode()
    items = read_all(data)
    assert items == [
        CsvRowError(2, "row contains NUL byte(s)", "1;x\\x00"),
        CsvRow(3, {"a": "2", "b": "Gr\ufffd"}),
    ]


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["=SUM(A1)", "+49 30 123", "-5", "@cmd", "\tx", "\rx"])
def test_escape_formula_dangerous(value: str) -> None:
    assert escape_formula(value) == "'" + value


@pytest.mark.parametrize("value", ["", "abc", "49 30 123", "5", " =x", "'=x", "a=b"])
def test_escape_formula_harmless(value: str) -> None:
    assert escape_formula(value) == value


def write_to_bytes(
    columns: list[str], rows: list[dict[str, object]], options: CsvWriteOptions
) -> bytes:
    out = io.BytesIO()
    count = write_rows(out, columns, rows, options)
    assert count == len(rows)
    assert not out.closed
    return out.getvalue()


def test_write_escapes_every_text_cell() -> None:
    rows: list[dict[str, object]] = [
        {"a": "=SUM(A1)", "b": "+49 30 123", "c": "-5"},
        {"a": "@cmd", "b": "\tx", "c": "ok"},
    ]
    data = write_to_bytes(["a", "b", "=c"], [{**r, "=c": r["c"]} for r in rows], CsvWriteOptions())
    assert data.decode() == ("a,b,'=c\r\n'=SUM(A1),'+49 30 123,'-5\r\n'@cmd,'\tx,ok\r\n")
    plain = write_to_bytes(["a"], [{"a": "=1+1"}], CsvWriteOptions(escape_formulas=False))
    assert plain == b"a\r\n=1+1\r\n"


def test_write_value_conversion() -> None:
    rows: list[dict[str, object]] = [
        {
            "s": "-5",
            "i": -5,
            "d": Decimal("-1.50"),
            "f": -2.5,
            "n": None,
            "dt": dt.date(2024, 1, 31),
        },
        {"s": "x", "i": float("-inf")},
    ]
    data = write_to_bytes(["s", "i", "d", "f", "n", "dt"], rows, CsvWriteOptions())
    assert data.decode().split("\r\n") == [
        "s,i,d,f,n,dt",
        "'-5,-5,-1.50,-2.5,,2024-01-31",
        "x,'-inf,,,,",
        "",
    ]


def test_write_quoting_and_terminators() -> None:
    rows: list[dict[str, object]] = [{"a": "x;y", "b": 'say "hi"', "c": "1\r2"}]
    data = write_to_bytes(
        ["a", "b", "c"], rows, CsvWriteOptions(delimiter=";", line_terminator="\n")
    )
    assert data == b'a;b;c\n"x;y";"say ""hi""";"1\r2"\n'
    data = write_to_bytes(["a"], [{"a": "x"}], CsvWriteOptions(quoting="all"))
    assert data == b'"a"\r\n"x"\r\n'


def test_round_trip_excel_de() -> None:
    columns = ["Kundennr", "Name", "Straße", "Notiz", "Betrag"]
    rows: list[dict[str, object]] = [
        {
            "Kundennr": "0042",
            "Name": "Müller",
            "Straße": "Hauptstr. 1",
            "Notiz": 'sagt "Hallo"; tschüss',
            "Betrag": "1.234,50 €",
        },
        {
            "Kundennr": "0043",
            "Name": "Zoë 😀",
            "Straße": "Zeile 1\r\nZeile 2",
            "Notiz": "",
            "Betrag": "=SUM(A1)",
        },
    ]
    data = write_to_bytes(columns, rows, EXCEL_DE)
    assert data.startswith(codecs.BOM_UTF8 + "Kundennr;Name;Straße".encode())
    dialect = detect_dialect(data[: 64 * 1024])
    assert (dialect.encoding, dialect.delimiter) == ("utf-8-sig", ";")
    items = read_all(data)
    assert lines_of(items) == [("CsvRow", 2), ("CsvRow", 3)]
    expected = [{k: str(v) for k, v in row.items()} for row in rows]
    expected[1]["Betrag"] = "'=SUM(A1)"
    assert rows_of(items) == expected


def test_round_trip_excel_de_cp1252() -> None:
    rows: list[dict[str, object]] = [{"Name": "Groß", "Betrag": "1.234,50 €"}]
    data = write_to_bytes(["Name", "Betrag"], rows, EXCEL_DE_CP1252)
    assert data == "Name;Betrag\r\nGroß;1.234,50 €\r\n".encode("cp1252")
    assert rows_of(read_all(data)) == [{"Name": "Groß", "Betrag": "1.234,50 €"}]


def test_cp1252_unencodable_value_names_row_and_column() -> None:
    out = io.BytesIO()
    rows: list[dict[str, object]] = [
        {"Name": "Groß", "Notiz": "ok"},
        {"Name": "Anna", "Notiz": "✓ erledigt"},
    ]
    with pytest.raises(CsvEncodeError) as info:
        write_rows(out, ["Name", "Notiz"], rows, EXCEL_DE_CP1252)
    assert (info.value.row, info.value.column) == (2, "Notiz")
    assert (
        "row 2" in str(info.value) and "'Notiz'" in str(info.value) and "cp1252" in str(info.value)
    )
    assert out.getvalue() == "Name;Notiz\r\nGroß;ok\r\n".encode("cp1252")


def test_write_options_validated() -> None:
    with pytest.raises(ValueError, match="BOM"):
        CsvWriteOptions(encoding="cp1252", bom=True)
    with pytest.raises(ValueError, match="quoting"):
        CsvWriteOptions(quoting="sometimes")
    with pytest.raises(ValueError, match="encoding"):
        CsvWriteOptions(encoding="no-such-codec")


class RecordingStream:
    """Write-only binary sink that records each write()."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sizes.append(len(data))
        return len(data)

    def close(self) -> None:
        self.closed = True


def test_write_streams_in_chunks() -> None:
    sink = RecordingStream()

    def rows():
        for i in range(50_000):
            yield {"id": i, "name": f"Kunde {i}", "city": "Berlin"}

    count = write_rows(sink, ["id", "name", "city"], rows(), CsvWriteOptions())  # type: ignore[arg-type]
    assert count == 50_000
    assert len(sink.sizes) > 10
    assert max(sink.sizes) < 64 * 1024 + 100
    assert not sink.closed


class ShortWriteStream:
    """Raw-style sink: accepts at most ``limit`` bytes per write(), or reports nothing."""

    def __init__(self, limit: int | None) -> None:
        self.data = bytearray()
        self._limit = limit

    def write(self, data: bytes) -> int | None:
        if self._limit is None:
            self.data += data
            return None
        taken = bytes(data[: self._limit])
        self.data += taken
        return len(taken)


@pytest.mark.parametrize("limit", [None, 1000])
def test_write_handles_short_writes_and_none(limit: int | None) -> None:
    rows = [{"id": i, "name": f"Kunde {i} Groß"} for i in range(5000)]
    expected = io.BytesIO()
    write_rows(expected, ["id", "name"], rows, EXCEL_DE)
    sink = ShortWriteStream(limit)
    assert write_rows(sink, ["id", "name"], rows, EXCEL_DE) == 5000  # type: ignore[arg-type]
    assert bytes(sink.data) == expected.getvalue()


# --------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------


def _write_big_file(path: Path, target_bytes: int) -> int:
    """Stream a customer export of about ``target_bytes`` to ``path``."""
    header = (
        "Kundennr;Anrede;Vorname;Nachname;Straße;PLZ;Ort;E-Mail;Telefon;"
        "Geburtsdatum;Umsatz;Notiz\r\n"
    )
    # A long quoted, multi-line note (as in shop exports) keeps the row count,
    # and so the run time under tracemalloc, moderate: about 25,000 rows.
    note = (
        '"Lieferung bitte beim Nachbarn; Tür hinten links, ""Klingel defekt""\r\n'
        + "Rückruf erwünscht zwischen 9 und 17 Uhr, Rechnung per Post an die Firma. " * 24
        + '\r\nEnde der Notiz"'
    )
    rows = 0
    with path.open("wb") as fh:
        written = fh.write(header.encode())
        while written < target_bytes:
            block = []
            for _ in range(2000):
                rows += 1
                block.append(
                    f"{rows};Frau;Jürgen-Anna;Müller-Lüdenscheidt;Hauptstraße {rows % 300}a;"
                    f"{10000 + rows % 89999:05d};Köln;kunde{rows}@example.de;+49 221 {rows};"
                    f"{1 + rows % 28:02d}.0{1 + rows % 9}.1970;{rows % 9999},50 €;{note}\r\n"
                )
            written += fh.write("".join(block).encode())
    return rows


@pytest.mark.slow
def test_memory_bounded_on_50_mb_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    expected_rows = _write_big_file(path, 50 * 1024 * 1024)
    assert path.stat().st_size >= 50 * 1024 * 1024
    started = time.perf_counter()
    tracemalloc.start()
    try:
        count = 0
        with path.open("rb") as fh:
            for item in sniff_and_iter(fh, source=str(path)):
                assert isinstance(item, CsvRow)
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == expected_rows
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert time.perf_counter() - started < 60  # generous: the aim is < 10 s
