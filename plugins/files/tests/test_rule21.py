"""RELIABILITY 21: malformed, oversized or wrongly encoded CSV. Each row that cannot be used is
rejected on its own, naming file, line and reason; the rest lands; nothing is lost silently.

The scenarios are the ones a new user met with realistic exports: one bad byte early in a UTF-8
file, an unclosed quote on row 2, two people with the same customer number in one file, the
leftovers of an export killed mid-write, and a mapped column missing from a file's header.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from plugins.files.tests.sftp_server import SftpServer
from synchub.connector import Checkpoint, ConnectionContext, OutRecord, Record, Rejected
from synchub_files import CsvReadStream, FilesConnector, FilesSettings, FileStreamSettings
from synchub_files.csvio import CsvRow, CsvRowError, sniff_and_iter
from synchub_files.sftp import SftpFileSystem, SftpSettings

NAMES = ["Jörg", "Müller", "Weiß", "Köhler", "Süß", "Bäcker", "Öztürk", "Grün"]


def _connector(base: Path, name: str = "files", **streams: dict) -> FilesConnector:
    ctx = ConnectionContext(
        name=name, settings=FilesSettings(path="data"),
        stream_settings={k: FileStreamSettings(**v) for k, v in streams.items()},
        base_dir=base, log=logging.getLogger("test"),
    )
    return FilesConnector(ctx)


def _read(connector: FilesConnector, stream: str = "people") -> tuple[list[Record], list[Rejected]]:
    items = list(connector.streams()[stream].read(None))
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Rejected)]


def _put(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _utf8_people(count: int, start: int = 1) -> str:
    return "".join(f"{i};{NAMES[i % len(NAMES)]};Köln\r\n" for i in range(start, start + count))


def _ascii_people(count: int, start: int = 1) -> str:
    return "".join(f"{i};Kunde {i};Berlin\r\n" for i in range(start, start + count))


# --------------------------------------------------------------------------------------------
# Encoding: decided per file, from the whole file
# --------------------------------------------------------------------------------------------


def test_one_bad_byte_early_in_a_utf8_file_rejects_that_row_and_keeps_utf8(tmp_path: Path) -> None:
    """The user's file: UTF-8 throughout, one row pasted from a cp1252 tool within the first
    64 KB. Before, the whole file decoded as cp1252 (every Jörg became JÃ¶rg) and nothing was
    rejected."""
    body = _utf8_people(3).encode() + "4;Zoë Müller;Köln\r\n".encode("cp1252") + _utf8_people(40, 5).encode()
    _put(tmp_path, "kunden.csv", b"id;name;city\r\n" + body)
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [r.ref for r in rejected] == ["kunden.csv:5"]
    reason = rejected[0].reason
    assert "not valid UTF-8" in reason and "0xEB" in reason  # 'ë' in cp1252, the first bad byte
    assert "offset 4" in reason  # bytes into the row before it: "4;Zo"
    assert "Zo" not in reason and "Müller" not in reason  # no personal data in the reason
    assert len(records) == 43
    assert {r.data["city"] for r in records} == {"Köln"}
    assert records[0].data["name"] == "Müller" and all("Ã" not in r.data["name"] for r in records)
    assert "Jörg" in {r.data["name"] for r in records}


def test_after_a_bad_row_far_into_a_file_utf8_rows_still_decode_as_utf8(tmp_path: Path) -> None:
    """ASCII for more than the head, then one cp1252 row, then UTF-8 rows: before, decoding
    switched to cp1252 at the bad byte and never switched back, garbling every later name."""
    head = "id;name;city\r\n" + _ascii_people(4000)
    assert len(head) > 64 * 1024
    tail = _utf8_people(30, 4002).encode()
    _put(tmp_path, "kunden.csv", head.encode() + "4001;Müller;Köln\r\n".encode("cp1252") + tail)
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [r.ref for r in rejected] == ["kunden.csv:4002"]
    assert "not valid UTF-8" in rejected[0].reason
    assert len(records) == 4030
    assert [r.data["name"] for r in records[-30:]] == [NAMES[i % len(NAMES)] for i in range(4002, 4032)]


def test_a_genuine_cp1252_file_is_read_as_cp1252_even_with_a_byte_pair_valid_in_utf8(tmp_path: Path) -> None:
    """German Excel, cp1252: 'ß' followed by a typographic quote is the byte pair DF 93, valid
    UTF-8 by accident. The file is still cp1252, and that row lands as written."""
    rows = "".join(f"{i};{NAMES[i % len(NAMES)]};Köln\r\n" for i in range(1, 30))
    rows += "30;„Groß“ & Söhne;Düsseldorf\r\n"
    _put(tmp_path, "shop.csv", ("id;name;city\r\n" + rows).encode("cp1252"))
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert rejected == []
    assert records[-1].data == {"id": "30", "name": "„Groß“ & Söhne", "city": "Düsseldorf"}
    assert records[0].data["name"] == "Müller"


def test_a_cp1252_file_whose_first_umlaut_comes_late_is_cp1252_from_the_start(tmp_path: Path) -> None:
    head = "id;name;city\r\n" + _ascii_people(4000)
    tail = "".join(f"{i};{NAMES[i % len(NAMES)]};Köln\r\n" for i in range(4001, 4010))
    _put(tmp_path, "alt.csv", head.encode() + tail.encode("cp1252"))
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert rejected == [] and len(records) == 4009
    assert records[-1].data["name"] == NAMES[4009 % len(NAMES)] and records[-1].data["city"] == "Köln"


def test_utf8_text_inside_a_cp1252_file_is_rejected_not_garbled(tmp_path: Path) -> None:
    """Never mix encodings silently: a row pasted as UTF-8 into a cp1252 file would read as
    'JÃ¶rg'. It is rejected, naming the bytes; the cp1252 rows land."""
    cp = "".join(f"{i};{NAMES[i % len(NAMES)]};Köln\r\n" for i in range(1, 20)).encode("cp1252")
    _put(tmp_path, "shop.csv", b"id;name;city\r\n" + cp + "20;Jörg Weiß;Köln\r\n".encode())
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [r.ref for r in rejected] == ["shop.csv:21"]
    assert "UTF-8" in rejected[0].reason and "cp1252" in rejected[0].reason
    assert "C3 B6" in rejected[0].reason and "Jörg" not in rejected[0].reason
    assert len(records) == 19 and all("Ã" not in r.data["name"] for r in records)


def test_an_explicit_encoding_still_wins(tmp_path: Path) -> None:
    cp = "".join(f"{i};{NAMES[i % len(NAMES)]};Köln\r\n" for i in range(1, 5)).encode("cp1252")
    _put(tmp_path, "shop.csv", b"id;name;city\r\n" + cp + "5;Jörg;Köln\r\n".encode())
    c = _connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id", "encoding": "cp1252"})
    records, rejected = _read(c)
    assert rejected == [] and records[-1].data["name"] == "JÃ¶rg"  # as told


def test_bom_and_pure_ascii_files(tmp_path: Path) -> None:
    # A BOM says UTF-8: a bad row in it is rejected, the rest lands.
    bom = b"\xef\xbb\xbf" + b"id;name\r\n" + "1;Jörg\r\n".encode() + b"2;M\xfcller\r\n" + "3;Zoë\r\n".encode()
    _put(tmp_path, "bom.csv", bom)
    _put(tmp_path, "plain.csv", b"id;name\r\n7;Anna\r\n8;Bo\r\n")
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [r.ref for r in rejected] == ["bom.csv:3"] and "0xFC" in rejected[0].reason
    assert [(r.ref, r.data["name"]) for r in records] == [
        ("bom.csv:2", "Jörg"), ("bom.csv:4", "Zoë"), ("plain.csv:2", "Anna"), ("plain.csv:3", "Bo")]


# --------------------------------------------------------------------------------------------
# Unterminated quotes
# --------------------------------------------------------------------------------------------


def test_an_unclosed_quote_rejects_its_line_and_every_later_row_lands(tmp_path: Path) -> None:
    """Row 2 opens a quote it never closes. Before, rows 3-9 went into one reject with it."""
    data = (
        "id;name;note\r\n"
        '1;Anna;"first line\r\nsecond line"\r\n'  # a legitimate multi-line note: lines 2-3
        '2;"Bernd;kein Ende\r\n'                   # line 4: the quote is never closed
        "3;Clara;x\r\n4;Dieter;y\r\n5;Emil;z\r\n"
        '6;Frieda;"a; quoted; note"\r\n'            # line 8: its quote would close line 4's
        "7;Gustav;w\r\n"
        '8;Heidi;"notes\r\nover\r\nthree lines"\r\n'  # lines 10-12, legitimate
        "9;Ida;v\r\n"
    )
    _put(tmp_path, "kunden.csv", data.encode())
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [(r.ref, "unterminated" in r.reason or "unclosed" in r.reason) for r in rejected] == [
        ("kunden.csv:4", True)]
    assert rejected[0].raw == '2;"Bernd;kein Ende'
    assert [(r.ref, r.data["id"]) for r in records] == [
        ("kunden.csv:2", "1"), ("kunden.csv:5", "3"), ("kunden.csv:6", "4"), ("kunden.csv:7", "5"),
        ("kunden.csv:8", "6"), ("kunden.csv:9", "7"), ("kunden.csv:10", "8"), ("kunden.csv:13", "9")]
    assert records[0].data["note"] == "first line\r\nsecond line"
    assert records[4].data["note"] == "a; quoted; note"
    assert records[6].data["note"] == "notes\r\nover\r\nthree lines"


def test_an_unclosed_quote_near_the_end_loses_no_later_row(tmp_path: Path) -> None:
    data = "id;name;city\n1;Anna;Wien\n2;\"Bernd;Graz\n3;Clara;Linz\n4;Dora;Wels\n"
    _put(tmp_path, "k.csv", data.encode())
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"}))
    assert [r.ref for r in rejected] == ["k.csv:3"] and "unterminated" in rejected[0].reason
    assert [r.data["id"] for r in records] == ["1", "3", "4"]


def test_an_unclosed_quote_followed_by_more_than_the_record_limit_still_loses_no_row() -> None:
    """The swallowed text is longer than the record limit: the rows in it are read again."""
    rows = "".join(f"{i};Kunde {i};Berlin\n" for i in range(3, 400))
    data = ('id;name;city\n1;Anna;Wien\n2;"Bernd;Graz\n' + rows + '400;"Quoted";Ulm\n').encode()
    items = list(sniff_and_iter(io.BytesIO(data), source="k.csv", max_record_chars=2000))
    errors = [i for i in items if isinstance(i, CsvRowError)]
    assert [(e.line, "unterminated" in e.reason) for e in errors] == [(3, True)]
    assert [i.values["id"] for i in items if isinstance(i, CsvRow)] == ["1", *map(str, range(3, 401))]


# --------------------------------------------------------------------------------------------
# Duplicate primary keys within one file
# --------------------------------------------------------------------------------------------


def test_two_rows_with_one_primary_key_in_one_file_keep_the_first_and_reject_the_second(tmp_path: Path) -> None:
    _put(tmp_path, "kunden.csv", (
        b"Kundennr;Vorname\nK-1;Anna\nK-2;Bernd\nK-3;Clara\nK-1;Dora\nK-2;Emil\nK-4;Frieda\n"))
    _put(tmp_path, "kunden_neu.csv", b"Kundennr;Vorname\nK-1;Anna-Maria\n")  # a newer export
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": "Kundennr"}))
    assert [(r.ref, r.data["Vorname"]) for r in records] == [
        ("kunden.csv:2", "Anna"), ("kunden.csv:3", "Bernd"), ("kunden.csv:4", "Clara"),
        ("kunden.csv:7", "Frieda"), ("kunden_neu.csv:2", "Anna-Maria")]
    assert [r.ref for r in rejected] == ["kunden.csv:5", "kunden.csv:6"]
    assert "K-1" in rejected[0].reason and "line 2" in rejected[0].reason and "kunden.csv" in rejected[0].reason
    assert "K-2" in rejected[1].reason and "line 3" in rejected[1].reason
    assert rejected[0].raw is not None and "Dora" in rejected[0].raw  # the lost person can be found


def test_composite_primary_keys_and_empty_keys(tmp_path: Path) -> None:
    _put(tmp_path, "k.csv", b"a;b;n\nx;1;A\nx;2;B\nx;1;C\n;;D\n;;E\n")
    records, rejected = _read(_connector(tmp_path, people={"pattern": "*.csv", "primary_key": ["a", "b"]}))
    assert [r.data["n"] for r in records] == ["A", "B", "D", "E"]  # empty keys: the engine rejects them
    assert [r.ref for r in rejected] == ["k.csv:4"] and "line 2" in rejected[0].reason


def test_the_key_index_stays_small_for_many_rows() -> None:
    from synchub_files import FirstLines

    index = FirstLines()
    tracemalloc.start()
    try:
        for i in range(100_000):
            assert index.first(f"K-{i}", i + 2) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.first("K-12345", 999_999) == 12_347 and len(index) == 100_000
    assert peak < 100_000 * 50, f"{peak / 100_000:.0f} bytes a key"  # a dict of the keys: 100 and more


# --------------------------------------------------------------------------------------------
# Leftovers of a killed export
# --------------------------------------------------------------------------------------------

_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from synchub_files.fs import LocalFileSystem
    from synchub_files.sftp import SftpFileSystem, SftpSettings

    kind, base, target = sys.argv[1:4]
    if kind == "local":
        fs = LocalFileSystem(Path(base))
    else:
        host, port, user, known = sys.argv[4:8]
        fs = SftpFileSystem(SftpSettings(host=host, port=int(port), username=user,
                                         password=os.environ["SFTP_PASSWORD"], known_hosts=known), base, Path("."))
    try:
        from synchub_files import part_tag
        writing = fs.write_atomic(target, tag=part_tag("export"))
    except ImportError:  # the code before temporary names carried their connection
        writing = fs.write_atomic(target)
    with writing as fh:
        fh.write("Vorname;Nachname\\r\\nJörg;Weiß\\r\\n".encode() * 1000)
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-export: no cleanup runs
""")


def _kill_mid_export(*args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, *args], env={**os.environ, **(env or {})},
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")


def _export(base: Path, name: str = "export") -> FilesConnector:
    ctx = ConnectionContext(name=name, settings=FilesSettings(path="out"),
                            stream_settings={"customers": FileStreamSettings(file="kunden.csv")},
                            base_dir=base, log=logging.getLogger("test"))
    return FilesConnector(ctx)


def test_a_killed_export_leaves_a_part_file_that_the_next_write_removes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _kill_mid_export("local", str(out), "kunden.csv")
    leftovers = [p.name for p in out.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".kunden.csv.") and leftovers[0].endswith(".part")
    # Not ours to touch: other targets' temporary files, other connections', a user's files,
    # and an old-style temporary file that is still fresh (a writer may own it).
    keep = [".other.csv.abcdefgh.part", ".kunden.csv.part", "kunden.csv.part", ".kunden.csv.notes",
            ".kunden.csv.0123456789ab", ".kunden.csv.zz9kq2mn.part"]
    for name in keep:
        (out / name).write_text("x", encoding="utf-8")
    # An old-style leftover (before the names carried the connection), hours old: stale.
    stale = out / ".kunden.csv.k2j4h5g6.part"
    stale.write_text("Jörg", encoding="utf-8")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    stream = _export(tmp_path).streams()["customers"]
    results = list(stream.write(iter([OutRecord("g1", {"Vorname": "Anna"})]), ["Vorname"]))
    assert [r.ok for r in results] == [True]
    assert sorted(p.name for p in out.iterdir()) == sorted(["kunden.csv", *keep])


def test_a_part_file_of_another_connection_writing_the_same_file_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ours_then_theirs = _export(tmp_path, "erp_export")  # another connection, same folder and file
    _kill_mid_export("local", str(out), "kunden.csv")   # the killed writer was connection "export"
    (theirs,) = [p.name for p in out.iterdir()]
    list(ours_then_theirs.streams()["customers"].write(iter([OutRecord("g1", {"a": "1"})]), ["a"]))
    assert sorted(p.name for p in out.iterdir()) == sorted(["kunden.csv", theirs])
    list(_export(tmp_path, "export").streams()["customers"].write(iter([OutRecord("g1", {"a": "1"})]), ["a"]))
    assert [p.name for p in out.iterdir()] == ["kunden.csv"]


def test_leftovers_are_removed_only_by_a_run_that_holds_the_connection_lock(tmp_path: Path, store_url: str) -> None:
    from synchub.engine import AlreadyRunning
    from synchub.locks import connection_lock
    from tests.helpers import hub_for, write_config

    cfg = write_config(tmp_path, """\
        connections:
          export:
            connector: files
            direction: out
            entity: person
            settings: {path: out}
            streams:
              customers: {mapping: export_customers, settings: {file: kunden.csv}}
        """, store_url)
    out = tmp_path / "out"
    out.mkdir()
    _kill_mid_export("local", str(out), "kunden.csv")
    (leftover,) = [p.name for p in out.iterdir()]
    hub = hub_for(cfg)
    with connection_lock(hub.store, "export") as lock:  # another worker is exporting right now
        assert lock is not None
        with pytest.raises(AlreadyRunning):
            hub.sync(["export"])
        assert [p.name for p in out.iterdir()] == [leftover]
    (summary,) = hub.sync(["export"])
    assert summary.status == "succeeded", summary.error
    assert [p.name for p in out.iterdir()] == ["kunden.csv"]


def _sftp_settings(server: SftpServer) -> SftpSettings:
    return SftpSettings(host=server.host, port=server.port, username=server.username, password=server.password,
                        known_hosts=server.host_key_line)


def test_a_killed_sftp_export_leaves_a_part_file_that_the_next_write_removes(sftp_server: SftpServer) -> None:
    (sftp_server.root / "out").mkdir()
    _kill_mid_export("sftp", "/out", "kunden.csv", sftp_server.host, str(sftp_server.port), sftp_server.username,
                     sftp_server.host_key_line, env={"SFTP_PASSWORD": sftp_server.password})
    out = sftp_server.root / "out"
    (leftover,) = [p.name for p in out.iterdir()]
    assert leftover.startswith(".kunden.csv.") and leftover.endswith(".part")
    (out / ".other.csv.0123456789ab.part").write_text("x", encoding="utf-8")
    fresh_old_style = out / ".kunden.csv.0123456789ab.part"
    fresh_old_style.write_text("x", encoding="utf-8")
    stale_old_style = out / ".kunden.csv.ba9876543210.part"
    stale_old_style.write_text("Jörg", encoding="utf-8")
    os.utime(stale_old_style, (time.time() - 7200, time.time() - 7200))

    ctx = ConnectionContext(name="export", settings=FilesSettings(path="/out", sftp=_sftp_settings(sftp_server)),
                            stream_settings={"customers": FileStreamSettings(file="kunden.csv")},
                            base_dir=Path("."), log=logging.getLogger("test"))
    c = FilesConnector(ctx)
    try:
        list(c.streams()["customers"].write(iter([OutRecord("g1", {"Vorname": "Anna"})]), ["Vorname"]))
    finally:
        c.close()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["kunden.csv", ".other.csv.0123456789ab.part", ".kunden.csv.0123456789ab.part"])


# --------------------------------------------------------------------------------------------
# Encoding over SFTP: the spooled download is scanned whole too
# --------------------------------------------------------------------------------------------


def test_sftp_file_with_a_bad_byte_early_stays_utf8(sftp_server: SftpServer) -> None:
    body = _utf8_people(3).encode() + b"4;M\xfcller;K\xf6ln\r\n" + _utf8_people(20, 5).encode()
    (sftp_server.root / "kunden.csv").write_bytes(b"id;name;city\r\n" + body)
    fs = SftpFileSystem(_sftp_settings(sftp_server), "/", Path("."))
    stream = CsvReadStream("people", fs, FileStreamSettings(pattern="*.csv", primary_key=["id"]), 2**30,
                           logging.getLogger("test"))
    try:
        items = list(stream.read(None))
    finally:
        fs.close()
    rejected = [i for i in items if isinstance(i, Rejected)]
    records = [i for i in items if isinstance(i, Record)]
    assert [r.ref for r in rejected] == ["kunden.csv:5"] and "0xFC" in rejected[0].reason
    assert len(records) == 23 and records[0].data["name"] == "Müller" and records[6].data["name"] == "Jörg"
    assert isinstance(items[-1], Checkpoint)


# --------------------------------------------------------------------------------------------
# check: mapped source columns missing from a file's header
# --------------------------------------------------------------------------------------------


def test_check_names_mapped_columns_a_file_lacks(tmp_path: Path) -> None:
    _put(tmp_path, "kunden_1.csv", "Kundennr;Nachname;Straße;E-Mail\nK-1;Weiß;Hauptstr. 1;a@b.de\n".encode("cp1252"))
    _put(tmp_path, "kunden_2.csv", "Kundennr;Vorname;Nachname;Straße;E-Mail\nK-1;Jörg;Weiß;x;a@b.de\n".encode())
    c = _connector(tmp_path, people={"pattern": "kunden_*.csv", "primary_key": "Kundennr"})
    reads = {"people": [("Vorname", "first_name"), ("Nachname", "last_name"), ("Straße", "address.street"),
                        ("Telefon", "phones")]}
    lines = c.check_mapped_fields(reads)
    assert sorted(lines) == sorted([
        "warning: people: kunden_1.csv has no column 'Vorname' (mapped to first_name)",
        "warning: people: kunden_1.csv has no column 'Telefon' (mapped to phones)",
        "warning: people: kunden_2.csv has no column 'Telefon' (mapped to phones)",
    ])
    assert c.check().ok


def test_check_of_a_hub_connection_warns_about_missing_columns(tmp_path: Path, store_url: str) -> None:
    from tests.helpers import hub_for, write_config, write_people_mapping

    cfg = write_config(tmp_path, """\
        connections:
          shop:
            connector: files
            settings: {path: data}
            streams:
              people: {mapping: people, settings: {pattern: "*.csv", primary_key: id}}
        """, store_url, kunden__csv="id;email;last\n1;a@example.org;Huber\n")
    write_people_mapping(tmp_path / "mappings")
    hub = hub_for(cfg)
    result = hub.check("shop")
    assert result.ok
    assert "warning: people: kunden.csv has no column 'first' (mapped to first_name)" in result.lines
    assert not any("'email'" in line or "'last'" in line for line in result.lines)


def test_check_warns_when_the_primary_key_column_is_missing(tmp_path: Path) -> None:
    _put(tmp_path, "k.csv", b"Nr;Name\n1;A\n")
    c = _connector(tmp_path, people={"pattern": "*.csv", "primary_key": "Kundennr"})
    assert c.check_mapped_fields({"people": []}) == [
        "warning: people: k.csv has no column 'Kundennr' (the primary key)"]
