"""The files connector: per-file state, atomic export, path confinement, size limit."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from synchub.connector import Checkpoint, ConnectionContext, OutRecord, Record, Rejected
from synchub_files import FilesConnector, FilesSettings, FileStreamSettings
from synchub_files.fs import LocalFileSystem, PathEscapeError


def _connector(base: Path, **streams: dict) -> FilesConnector:
    ctx = ConnectionContext(
        name="files", settings=FilesSettings(path="data"),
        stream_settings={k: FileStreamSettings(**v) for k, v in streams.items()},
        base_dir=base, log=logging.getLogger("test"),
    )
    return FilesConnector(ctx)


def _read(connector: FilesConnector, stream: str, state: dict | None):
    items = list(connector.streams()[stream].read(state))
    records = [i for i in items if isinstance(i, Record)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    checkpoints = [i for i in items if isinstance(i, Checkpoint)]
    return records, rejected, checkpoints


def test_each_file_version_is_read_once_and_checkpointed_after_its_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_bytes("id;name\r\n1;Jörg\r\n".encode("cp1252"))
    (data / "b.csv").write_text("id,name\n2,Anna\n3,\"Multi\nline\"\n", encoding="utf-8-sig")
    c = _connector(tmp_path, people={"pattern": "*.csv", "primary_key": "id"})
    items = list(c.streams()["people"].read(None))
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["Record", "Checkpoint", "Record", "Record", "Checkpoint"]
    records = [i for i in items if isinstance(i, Record)]
    assert [r.data["name"] for r in records] == ["Jörg", "Anna", "Multi\nline"]
    assert [r.ref for r in records] == ["a.csv:2", "b.csv:2", "b.csv:3"]
    state = items[-1].state
    assert set(state["files"]) == {"a.csv", "b.csv"} and len(state["files"]["a.csv"]["sha256"]) == 64

    assert _read(c, "people", state)[0] == []  # nothing changed: nothing read
    os.utime(data / "a.csv", (1, 1))  # touched, same content: not read again, state refreshed
    records, _, cps = _read(c, "people", state)
    assert records == [] and cps[-1].state["files"]["a.csv"]["mtime"] == 1
    (data / "a.csv").write_bytes("id;name\r\n1;Jörg\r\n4;Ümit\r\n".encode("cp1252"))
    records, _, _ = _read(c, "people", cps[-1].state)
    assert [r.data["id"] for r in records] == ["1", "4"]  # changed file: read again whole


def test_broken_rows_are_rejected_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("id;name;city\n1;A;B\n2;C\n3;D;E\n", encoding="utf-8")
    c = _connector(tmp_path, people={"pattern": "x.csv", "primary_key": ["id"]})
    records, rejected, _ = _read(c, "people", None)
    assert [r.data["id"] for r in records] == ["1", "3"]
    assert [(r.ref, "fields" in r.reason) for r in rejected] == [("x.csv:3", True)]


def test_oversized_file_is_rejected_whole_and_not_again(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.csv").write_text("id\n" + "1\n" * 100, encoding="utf-8")
    ctx = ConnectionContext(name="f", settings=FilesSettings(path="data", max_file_bytes=50),
                            stream_settings={"s": FileStreamSettings(pattern="*.csv", primary_key=["id"])},
                            base_dir=tmp_path, log=logging.getLogger("t"))
    c = FilesConnector(ctx)
    records, rejected, cps = _read(c, "s", None)
    assert records == [] and "over the limit of 50" in rejected[0].reason
    assert _read(c, "s", cps[-1].state)[1] == []


def test_export_is_atomic_escapes_formulas_and_uses_the_dialect(tmp_path: Path) -> None:
    c = _connector(tmp_path, out={"file": "sub/out.csv", "dialect": "excel-de"})
    stream = c.streams()["out"]
    assert stream.write_mode == "snapshot" and not stream.target_exists()
    recs = [OutRecord("g1", {"Name": "Müller", "Formel": "=HYPERLINK(\"x\")", "Telefon": "+4930123"}),
            OutRecord("g2", {"Name": "Ørsted"})]
    results = list(stream.write(iter(recs), ["Name", "Formel", "Telefon"]))
    assert [r.ok for r in results] == [True, True]
    raw = (tmp_path / "data" / "sub" / "out.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert text.splitlines()[0] == "Name;Formel;Telefon"
    assert "'=HYPERLINK" in text and "'+4930123" in text
    assert [p.name for p in (tmp_path / "data" / "sub").iterdir()] == ["out.csv"]  # no temp file left


def test_a_failed_export_leaves_the_previous_file(tmp_path: Path) -> None:
    c = _connector(tmp_path, out={"file": "out.csv"})
    stream = c.streams()["out"]
    list(stream.write(iter([OutRecord("g1", {"a": "old"})]), ["a"]))

    def broken():
        yield OutRecord("g1", {"a": "new"})
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        list(stream.write(broken(), ["a"]))
    assert (tmp_path / "data" / "out.csv").read_text(encoding="utf-8").splitlines() == ["a", "old"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["out.csv"]


@pytest.mark.parametrize("bad", ["../x.csv", "/etc/passwd", "a/../../x.csv"])
def test_paths_cannot_leave_the_base_folder(tmp_path: Path, bad: str) -> None:
    fs = LocalFileSystem(tmp_path)
    with pytest.raises(PathEscapeError):
        fs.open_read(bad)
    with pytest.raises(ValueError):
        FileStreamSettings(pattern=bad, primary_key=["id"])


def test_symlink_out_of_the_base_folder_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (tmp_path / "secret.csv").write_text("id\n1\n", encoding="utf-8")
    (base / "link.csv").symlink_to(tmp_path / "secret.csv")
    fs = LocalFileSystem(base)
    assert fs.list("*.csv") == []
    with pytest.raises(PathEscapeError):
        fs.open_read("link.csv")


def test_settings_need_pattern_or_file() -> None:
    with pytest.raises(ValueError, match="exactly one of pattern"):
        FileStreamSettings()
    with pytest.raises(ValueError, match="needs primary_key"):
        FileStreamSettings(pattern="*.csv")
