"""The SFTP client against a real OpenSSH sshd (internal-sftp, no chroot): host keys, key login,
exactly-once reads, atomic export with posix-rename, and symlinks out of the base folder on a
server whose realpath follows them for real."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import pytest

from synchub.connector import Checkpoint, Record
from synchub.errors import FatalRunError
from synchub.store import source_t
from synchub_files import CsvReadStream, FileStreamSettings
from synchub_files.fs import PathEscapeError
from synchub_files.sftp import SftpFileSystem, SftpSettings
from tests.helpers import hub_for, rows, write_config, write_people_mapping

PEOPLE = "id;email;first;last\n1;anna@example.org;Anna;Huber\n2;jorg@example.org;Jörg;Weiß\n"


def _fs(server: dict, base: Path, **over: object) -> SftpFileSystem:
    settings = SftpSettings(**{"host": server["host"], "port": server["port"], "username": server["username"],
                               "key_file": str(server["key_file"]), "known_hosts": server["known_hosts"], **over})
    return SftpFileSystem(settings, str(base), Path("."))


def test_unknown_host_key_is_refused_by_fingerprint(openssh_server: dict) -> None:
    fs = _fs(openssh_server, openssh_server["root"], known_hosts=openssh_server["other_known_hosts"])
    with pytest.raises(FatalRunError, match="does NOT match known_hosts"):
        fs.list("*.csv")


def test_read_once_then_archive_and_export_atomically(tmp_path: Path, store_url: str, openssh_server: dict) -> None:
    base = openssh_server["root"]
    (base / "in").mkdir()
    (base / "in" / "people.csv").write_text(PEOPLE, encoding="utf-8")
    sftp = (f"{{host: {openssh_server['host']}, port: {openssh_server['port']}, username: {openssh_server['username']}, "
            f"key_file: '{openssh_server['key_file']}', known_hosts: '{openssh_server['known_hosts']}'}}")
    cfg = write_config(tmp_path, textwrap.dedent(f"""\
        match:
          person: {{keys: [email], fuzzy: false}}
        connections:
          remote:
            connector: files
            settings: {{path: '{base}', sftp: {sftp}}}
            streams:
              people: {{mapping: people, settings: {{pattern: "in/*.csv", primary_key: id, archive: in/done}}}}
          export:
            connector: files
            direction: out
            settings: {{path: '{base}/out', sftp: {sftp}}}
            streams:
              people: {{mapping: people_out, settings: {{file: nested/kunden.csv, dialect: excel-de}}}}
        """), store_url)
    write_people_mapping(tmp_path / "mappings")
    (tmp_path / "mappings" / "people_out.yaml").write_text(
        "entity: person\ndirection: out\nfields:\n  Vorname: first_name\n  E-Mail: emails.0\n", encoding="utf-8")
    hub = hub_for(cfg)
    first = {(s.connection, s.direction): s for s in hub.sync()}
    assert first[("remote", "in")].status == "succeeded", first[("remote", "in")].error
    assert first[("export", "out")].status == "succeeded", first[("export", "out")].error
    assert sorted(r["source_id"] for r in rows(hub.store, source_t)) == ["1", "2"]
    assert not (base / "in" / "people.csv").exists() and (base / "in" / "done" / "people.csv").exists()
    out = base / "out" / "nested"
    assert [p.name for p in out.iterdir()] == ["kunden.csv"]  # the .part file was renamed over it
    assert "Jörg;jorg@example.org" in (out / "kunden.csv").read_text(encoding="utf-8-sig")
    # The export is replaced in place on the next change (posix-rename over the old file).
    (base / "in" / "more.csv").write_text("id;email;first;last\n3;cara@example.org;Cara;Roth\n", encoding="utf-8")
    again = {(s.connection, s.direction): s for s in hub.sync()}
    assert again[("remote", "in")].streams["people"].read == 1
    assert "cara@example.org" in (out / "kunden.csv").read_text(encoding="utf-8-sig")
    assert [p.name for p in out.iterdir()] == ["kunden.csv"]


def test_symlinks_out_of_the_base_are_skipped_and_refused(openssh_server: dict) -> None:
    base = openssh_server["root"] / "exchange"
    base.mkdir()
    outside = openssh_server["root"] / "secret"
    outside.mkdir()
    (outside / "payroll.csv").write_text("id;email\n666;boss@example.org\n", encoding="utf-8")
    os.symlink(outside / "payroll.csv", base / "payroll.csv")
    os.symlink(outside, base / "linked")
    (base / "people.csv").write_text(PEOPLE, encoding="utf-8")
    os.symlink(base / "people.csv", base / "alias.csv")  # inside: fine
    fs = _fs(openssh_server, base)
    assert [f.path for f in fs.list("*.csv")] == ["alias.csv", "people.csv"]
    stream = CsvReadStream("p", fs, FileStreamSettings(pattern="*.csv", primary_key=["id"]), 10**9, logging.getLogger("t"))
    items = list(stream.read(None))
    assert [i.data["id"] for i in items if isinstance(i, Record)] == ["1", "2", "1", "2"]
    assert isinstance(items[-1], Checkpoint)
    with pytest.raises(PathEscapeError):
        fs.open_read("payroll.csv")
    for target in ("linked/x.csv", "linked/new/deeper/x.csv"):
        with pytest.raises(PathEscapeError):
            with fs.write_atomic(target) as fh:
                fh.write(b"x")
    with pytest.raises(PathEscapeError):
        fs.move("people.csv", "linked/people.csv")
    assert sorted(p.name for p in outside.iterdir()) == ["payroll.csv"]
    # New folders inside are created (OpenSSH answers realpath of a missing path with an error).
    with fs.write_atomic("a/b/c.csv") as fh:
        fh.write(b"ok")
    assert (base / "a" / "b" / "c.csv").read_bytes() == b"ok"
    fs.close()


def test_an_export_folder_that_does_not_exist_yet_is_created_through_a_symlinked_parent(openssh_server: dict) -> None:
    root = openssh_server["root"]
    (root / "real").mkdir()
    os.symlink(root / "real", root / "link")
    fs = _fs(openssh_server, root / "link" / "exp" / "crm")  # two levels missing below a symlink
    with fs.write_atomic("kunden.csv") as fh:
        fh.write(b"ok")
    assert (root / "real" / "exp" / "crm" / "kunden.csv").read_bytes() == b"ok"
    assert [f.path for f in fs.list("*.csv")] == ["kunden.csv"]
    fs.close()
