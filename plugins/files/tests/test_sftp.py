"""The files connector on a real SFTP server (asyncssh on loopback, see sftp_server.py):
logins, host-key trust, exactly-once files, uploads in progress, dropped connections,
atomic export, path confinement and a 100 MB file in bounded memory."""

from __future__ import annotations

import logging
import os
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import sqlalchemy as sa

from plugins.files.tests.sftp_server import SftpServer
from synchub.connector import ConnectionContext, Record, Rejected
from synchub.store import rejected_t, source_t
from synchub_files import CsvReadStream, FilesConnector, FilesSettings, FileStreamSettings
from synchub_files.fs import FileChanged, FileInfo, PathEscapeError
from synchub_files.sftp import SftpFileSystem, SftpSettings, host_key_algorithms
from tests.helpers import hub_for, rows, write_config, write_people_mapping

PEOPLE = "id;email;first;last\n1;anna@example.org;Anna;Huber\n2;jorg@example.org;Jörg;Weiß\n3;m@example.org;=1+2;Mallory\n"

MAPPINGS = {
    "people_out": """\
        description: golden people as CSV
        entity: person
        direction: out
        fields:
          Vorname: first_name
          Nachname: last_name
          E-Mail: emails.0
        """,
}


def _sftp_block(server: SftpServer, **over: object) -> str:
    s = {
        "host": server.host, "port": server.port, "username": server.username,
        "password": "${SFTP_PASSWORD}", "known_hosts": server.host_key_line, "retries": 2, "timeout": 10,
    }
    s.update(over)
    return "{" + ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in s.items() if v is not None) + "}"


def _config(tmp_path: Path, store_url: str, server: SftpServer, stream: str = "", out: bool = False,
            batch: int = 2, **sftp: object) -> Path:
    stream = stream or '{pattern: "in/*.csv", primary_key: id}'
    body = f"""\
        defaults: {{batch_size: {batch}}}
        match:
          person: {{keys: [email], fuzzy: false}}
        connections:
          remote:
            connector: files
            settings: {{path: /, sftp: {_sftp_block(server, **sftp)}}}
            streams:
              people: {{mapping: people, settings: {stream}}}
        """
    if out:
        body = body.rstrip(" ") + f"""\
          export:
            connector: files
            direction: out
            settings: {{path: out, sftp: {_sftp_block(server, **sftp)}}}
            streams:
              people: {{mapping: people_out, settings: {{file: kunden.csv, dialect: excel-de-cp1252}}}}
        """
    cfg = write_config(tmp_path, textwrap.dedent(body), store_url)
    write_people_mapping(tmp_path / "mappings")
    for name, text in MAPPINGS.items():
        (tmp_path / "mappings" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return cfg


def _env(server: SftpServer, **extra: str) -> dict[str, str]:
    return {"SFTP_PASSWORD": server.password, **extra}


def _put(server: SftpServer, rel: str, data: str | bytes) -> Path:
    path = server.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _sources(hub) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r["source_id"] for r in rows(hub.store, source_t))


def test_password_login_reads_each_file_once_and_exports_atomically(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    hub = hub_for(_config(tmp_path, store_url, sftp_server, out=True), _env(sftp_server))
    first = {(s.connection, s.direction): s for s in hub.sync()}
    assert first[("remote", "in")].status == "succeeded", first[("remote", "in")].error
    assert _sources(hub) == ["1", "2", "3"]
    assert first[("export", "out")].status == "succeeded", first[("export", "out")].error
    exported = (sftp_server.root / "out" / "kunden.csv").read_bytes().decode("cp1252")
    assert exported.splitlines()[0] == "Vorname;Nachname;E-Mail"
    assert "Jörg;Weiß;jorg@example.org" in exported
    assert "'=1+2;Mallory;" in exported  # formula injection neutralised
    assert [p.name for p in (sftp_server.root / "out").iterdir()] == ["kunden.csv"]  # no .part left
    assert first[("export", "out")].targets["people"].startswith("sftp://sync@127.0.0.1:")
    # Touched (new mtime) but the same bytes: hashed, not parsed.
    os.utime(sftp_server.root / "in" / "people.csv", (1_700_000_000, 1_700_000_000))
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    # Then it is remembered by path, size, time and hash: not even opened again.
    opens = sum(sftp_server.opens.values())
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    assert sum(sftp_server.opens.values()) == opens


def test_key_login_with_an_encrypted_key_from_env(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    cfg = _config(tmp_path, store_url, sftp_server, password=None,
                  key_file=str(sftp_server.client_key_encrypted_path), key_passphrase="${KEY_PASS}")
    hub = hub_for(cfg, {"KEY_PASS": sftp_server.key_passphrase})
    summary = hub.sync(["remote"])[0]
    assert summary.status == "succeeded", summary.error
    assert _sources(hub) == ["1", "2", "3"]


def test_wrong_password_fails_the_run_clearly_without_the_password(tmp_path: Path, store_url: str,
                                                                    sftp_server: SftpServer, caplog: pytest.LogCaptureFixture) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    wrong = "Wr0ng-" + sftp_server.password
    hub = hub_for(_config(tmp_path, store_url, sftp_server), {"SFTP_PASSWORD": wrong})
    with caplog.at_level(logging.DEBUG):
        summary = hub.sync(["remote"])[0]
    assert summary.status == "failed"
    assert "SFTP login as sync@127.0.0.1" in summary.error and "password refused" in summary.error
    assert wrong not in summary.error and wrong not in caplog.text
    assert wrong not in str(hub.store.get_run(summary.run_id))
    assert _sources(hub) == []


def test_unknown_host_key_is_refused_with_its_fingerprint(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    stranger = f"[otherhost]:{sftp_server.port} " + sftp_server.host_key_line.split(" ", 1)[1]
    hub = hub_for(_config(tmp_path, store_url, sftp_server, known_hosts=stranger), _env(sftp_server))
    summary = hub.sync(["remote"])[0]
    assert summary.status == "failed"
    assert "not in known_hosts: refusing to connect" in summary.error and "SHA256:" in summary.error
    assert sftp_server.logins == 0  # no credentials were sent to the untrusted host
    assert _sources(hub) == []


def test_changed_host_key_is_refused(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    hub = hub_for(_config(tmp_path, store_url, sftp_server, known_hosts=sftp_server.other_host_key_line()), _env(sftp_server))
    summary = hub.sync(["remote"])[0]
    assert summary.status == "failed"
    assert "does NOT match known_hosts" in summary.error
    assert sftp_server.logins == 0


def test_only_host_key_algorithms_known_hosts_can_verify_are_offered() -> None:
    offered = ["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    assert host_key_algorithms(offered, ["ssh-ed25519"]) == ["ssh-ed25519"]
    assert host_key_algorithms(offered, ["ssh-rsa"]) == ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    assert host_key_algorithms(offered, ["ecdsa-sha2-nistp256", "ssh-ed25519"]) == ["ssh-ed25519", "ecdsa-sha2-nistp256"]


def test_settings_demand_host_key_trust_and_credentials() -> None:
    with pytest.raises(ValueError, match="known_hosts"):
        SftpSettings(host="h", username="u", password="p")
    with pytest.raises(ValueError, match=r"password .* or key_file"):
        SftpSettings(host="h", username="u", known_hosts="h ssh-ed25519 AAAA")


# paramiko's readv prefetch thread dies with EOFError when the connection is cut under it; the
# download itself sees the drop and resumes (or fails) as the test checks.
_PREFETCH_THREAD = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@_PREFETCH_THREAD
def test_a_dropped_download_resumes_on_a_new_connection(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    big = "id;email;first;last\n" + "".join(f"{i};p{i}@example.org;F{i};L{i}\n" for i in range(4000))
    _put(sftp_server, "in/people.csv", big)
    sftp_server.faults.drop_pattern, sftp_server.faults.drop_after_bytes, sftp_server.faults.drop_times = "people.csv", 40_000, 1
    hub = hub_for(_config(tmp_path, store_url, sftp_server, batch=1000), _env(sftp_server))
    summary = hub.sync(["remote"])[0]
    assert sftp_server.drops == ["/in/people.csv"]
    assert summary.status == "succeeded", summary.error
    assert len(_sources(hub)) == 4000
    assert hub.store.get_run(summary.run_id)["retries"] == 1  # the reconnect is in the run history


@_PREFETCH_THREAD
def test_a_download_that_keeps_dropping_fails_whole_and_the_next_run_lands_it_once(tmp_path: Path, store_url: str,
                                                                                    sftp_server: SftpServer) -> None:
    big = "id;email;first;last\n" + "".join(f"{i};p{i}@example.org;F{i};L{i}\n" for i in range(3000))
    _put(sftp_server, "in/a.csv", "id;email;first;last\n9001;a@example.org;A;A\n")
    _put(sftp_server, "in/people.csv", big)
    sftp_server.faults.drop_pattern, sftp_server.faults.drop_after_bytes, sftp_server.faults.drop_times = "people.csv", 30_000, 10
    hub = hub_for(_config(tmp_path, store_url, sftp_server, batch=1000), _env(sftp_server))
    failed = hub.sync(["remote"])[0]
    assert failed.status == "failed" and "dropped during download of in/people.csv" in failed.error
    assert _sources(hub) == ["9001"]  # the complete file landed, nothing of the broken one
    assert set(hub.store.get_state("remote", "people")["files"]) == {"in/a.csv"}
    sftp_server.faults.drop_times = 0
    ok = hub.sync(["remote"])[0]
    assert ok.status == "succeeded" and ok.streams["people"].read == 3000
    assert len(_sources(hub)) == 3001


def test_files_still_being_uploaded_wait_for_the_next_run(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv.part", PEOPLE)  # an upload in progress under a temporary name
    _put(sftp_server, "in/.hidden.csv", PEOPLE)
    hub = hub_for(_config(tmp_path, store_url, sftp_server), _env(sftp_server))
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    (sftp_server.root / "in" / "people.csv.part").rename(sftp_server.root / "in" / "people.csv")
    assert hub.sync(["remote"])[0].streams["people"].read == 3


def test_a_file_growing_during_the_download_is_left_then_read_once_complete(tmp_path: Path, store_url: str,
                                                                           sftp_server: SftpServer) -> None:
    head = "id;email;first;last\n" + "".join(f"{i};p{i}@example.org;F{i};L{i}\n" for i in range(3000))
    _put(sftp_server, "in/people.csv", head)
    sftp_server.faults.grow_pattern, sftp_server.faults.grow_times = "people.csv", 1
    sftp_server.faults.grow_bytes = b"3000;late@example.org;Late;Comer\n"
    hub = hub_for(_config(tmp_path, store_url, sftp_server, batch=1000), _env(sftp_server))
    first = hub.sync(["remote"])[0]
    assert sftp_server.grows == ["/in/people.csv"]
    assert first.status == "succeeded" and first.streams["people"].read == 0  # not processed half
    assert hub.store.get_state("remote", "people") in (None, {}, {"files": {}})
    second = hub.sync(["remote"])[0]
    assert second.streams["people"].read == 3001 and len(_sources(hub)) == 3001


def test_ready_marker_and_stable_seconds(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    hub = hub_for(_config(tmp_path, store_url, sftp_server, stream='{pattern: "in/*.csv", primary_key: id, ready_marker: ".done"}'),
                  _env(sftp_server))
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    _put(sftp_server, "in/people.csv.done", "")
    assert hub.sync(["remote"])[0].streams["people"].read == 3

    tmp2 = tmp_path / "second"
    tmp2.mkdir()
    _put(sftp_server, "in2/people.csv", PEOPLE)
    hub2 = hub_for(_config(tmp2, store_url.replace("store.db", "store2.db") if "sqlite" in store_url else store_url, sftp_server,
                           stream='{pattern: "in2/*.csv", primary_key: id, stable_seconds: 3600}'), _env(sftp_server))
    assert hub2.sync(["remote"])[0].streams["people"].read == 0  # written just now
    old = 1_700_000_000
    os.utime(sftp_server.root / "in2" / "people.csv", (old, old))
    assert hub2.sync(["remote"])[0].streams["people"].read == 3


def test_archive_moves_files_after_commit_even_after_a_crash(tmp_path: Path, store_url: str, sftp_server: SftpServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    _put(sftp_server, "in/more.csv", "id;email;first;last\n4;x@example.org;X;Y\n")
    _put(sftp_server, "in/done/people.csv", "an older file of the same name")
    cfg = _config(tmp_path, store_url, sftp_server, stream='{pattern: "in/*.csv", primary_key: id, archive: in/done}')
    hub = hub_for(cfg, _env(sftp_server))
    # The first move fails (the process dies there, say): the data is committed, the file stays.
    real_move = SftpFileSystem.move
    calls = {"n": 0}

    def flaky(self: SftpFileSystem, path: str, dest: str) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("simulated crash before the move")
        return real_move(self, path, dest)

    monkeypatch.setattr(SftpFileSystem, "move", flaky)
    first = hub.sync(["remote"])[0]
    assert first.status == "succeeded" and first.streams["people"].read == 4
    left = sorted(p.name for p in (sftp_server.root / "in").glob("*.csv"))
    assert len(left) == 1  # one was archived, one stayed
    second = hub.sync(["remote"])[0]
    assert second.streams["people"].read == 0  # not read again, only archived
    assert sorted(p.name for p in (sftp_server.root / "in").glob("*.csv")) == []
    archived = sorted(p.name for p in (sftp_server.root / "in" / "done").iterdir())
    assert "more.csv" in archived and "people.csv" in archived and len(archived) == 3  # the older one kept
    assert len(_sources(hub)) == 4


def test_symlinks_out_of_the_base_folder_are_neither_listed_nor_read(tmp_path: Path, store_url: str,
                                                                    sftp_server: SftpServer) -> None:
    outside = sftp_server.root.parent / "secret.csv"
    outside.write_text("id;email;first;last\n666;secret@example.org;Top;Secret\n", encoding="utf-8")
    (sftp_server.root / "in").mkdir()
    os.symlink(outside, sftp_server.root / "in" / "leak.csv")
    _put(sftp_server, "in/people.csv", PEOPLE)
    hub = hub_for(_config(tmp_path, store_url, sftp_server), _env(sftp_server))
    summary = hub.sync(["remote"])[0]
    assert summary.status == "succeeded"
    assert "666" not in _sources(hub) and len(_sources(hub)) == 3
    fs = _fs(sftp_server)
    with pytest.raises((PathEscapeError, FileNotFoundError)):
        fs.open_read("in/leak.csv")
    with pytest.raises(PathEscapeError):
        fs.open_read("../secret.csv")
    with pytest.raises(PathEscapeError):
        fs.move("in/people.csv", "/tmp/x.csv")
    fs.close()


def test_writes_through_a_symlinked_folder_out_of_the_base_are_refused(sftp_server: SftpServer) -> None:
    outside = sftp_server.root.parent / "elsewhere"
    outside.mkdir()
    os.symlink(outside, sftp_server.root / "link")
    fs = _fs(sftp_server)
    with pytest.raises(PathEscapeError):
        with fs.write_atomic("link/kunden.csv") as fh:
            fh.write(b"x")
    with pytest.raises(PathEscapeError):
        with fs.write_atomic("link/new/deeper/kunden.csv") as fh:
            fh.write(b"x")
    _put(sftp_server, "people.csv", PEOPLE)
    with pytest.raises(PathEscapeError):
        fs.move("people.csv", "link/people.csv")
    assert list(outside.iterdir()) == []
    # Folders that do not exist yet are created, inside.
    with fs.write_atomic("a/b/c/kunden.csv") as fh:
        fh.write(b"ok")
    assert (sftp_server.root / "a" / "b" / "c" / "kunden.csv").read_bytes() == b"ok"
    fs.close()


def test_archive_mode_reads_a_new_file_with_an_old_name_size_and_time(tmp_path: Path, store_url: str,
                                                                      sftp_server: SftpServer) -> None:
    first = "id;email;first;last\n1;anna@example.org;Anna;Huber\n"
    second = "id;email;first;last\n2;bert@example.org;Bert;Huber\n"  # same length
    path = _put(sftp_server, "in/daily.csv", first)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    hub = hub_for(_config(tmp_path, store_url, sftp_server, stream='{pattern: "in/*.csv", primary_key: id, archive: done}'),
                  _env(sftp_server))
    assert hub.sync(["remote"])[0].streams["people"].read == 1
    path = _put(sftp_server, "in/daily.csv", second)  # tomorrow's file: same name, size and time
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert hub.sync(["remote"])[0].streams["people"].read == 1
    assert _sources(hub) == ["1", "2"]
    assert len(list((sftp_server.root / "done").iterdir())) == 2
    # Archived files are forgotten once gone from the folder: the state does not grow.
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    assert hub.store.get_state("remote", "people") == {"files": {}}


def _fs(server: SftpServer, base: str = "/") -> SftpFileSystem:
    settings = SftpSettings(host=server.host, port=server.port, username=server.username, password=server.password,
                            known_hosts=server.host_key_line)
    return SftpFileSystem(settings, base, Path("."))


def test_a_base_folder_inside_the_server(sftp_server: SftpServer) -> None:
    _put(sftp_server, "exports/crm/people.csv", PEOPLE)
    _put(sftp_server, "exports/other.csv", PEOPLE)
    fs = _fs(sftp_server, "/exports/crm")
    assert [f.path for f in fs.list("*.csv")] == ["people.csv"]
    with pytest.raises(PathEscapeError):
        fs.open_read("../other.csv")
    with fs.write_atomic("sub/new.csv") as fh:
        fh.write(b"a;b\n")
    assert (sftp_server.root / "exports" / "crm" / "sub" / "new.csv").read_bytes() == b"a;b\n"
    fs.close()


@pytest.mark.slow
def test_a_100_mb_file_streams_in_bounded_memory(sftp_server: SftpServer) -> None:
    notes = "x" * 960
    row_count = 100 * 1024 * 1024 // 990 + 1  # rows of 994 bytes
    path = sftp_server.root / "big.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("id;email;notes\n")
        for i in range(row_count):
            fh.write(f"{i:09d};p{i:09d}@example.org;{notes}\n")
    size = path.stat().st_size
    assert size >= 100 * 1024 * 1024
    fs = _fs(sftp_server)
    ctx = ConnectionContext(name="big", settings=FilesSettings(path="/"), stream_settings={},
                            base_dir=Path("."), log=logging.getLogger("test"))
    stream = CsvReadStream("big", fs, FileStreamSettings(pattern="big.csv", primary_key=["id"]), 2 * 1024**3, ctx.log)
    tracemalloc.start()
    try:
        records = rejected = 0
        for item in stream.read(None):
            if isinstance(item, Record):
                records += 1
            elif isinstance(item, Rejected):
                rejected += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        fs.close()
    assert records == row_count and rejected == 0
    assert sftp_server.bytes_read["/big.csv"] == size
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"


def test_check_reports_the_remote_listing(sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE)
    settings = FilesSettings(path="/", sftp=SftpSettings(host=sftp_server.host, port=sftp_server.port,
                                                         username=sftp_server.username, password=sftp_server.password,
                                                         known_hosts=sftp_server.host_key_line))
    ctx = ConnectionContext(name="remote", settings=settings,
                            stream_settings={"people": FileStreamSettings(pattern="in/*.csv", primary_key=["id"])},
                            base_dir=Path("."), log=logging.getLogger("test"))
    c = FilesConnector(ctx)
    result = c.check()
    c.close()
    assert result.ok and result.lines == ["people: read 1 file(s) matching in/*.csv"]


def test_rejected_rows_name_the_remote_file_and_line(tmp_path: Path, store_url: str, sftp_server: SftpServer) -> None:
    _put(sftp_server, "in/people.csv", PEOPLE + '4;"broken\n')
    hub = hub_for(_config(tmp_path, store_url, sftp_server), _env(sftp_server))
    summary = hub.sync(["remote"])[0]
    assert summary.status == "partial"
    refs = [r["ref"] for r in rows(hub.store, rejected_t)]
    assert refs and all(r.startswith("in/people.csv:") for r in refs)
    with hub.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(source_t)).scalar() == 3


def test_a_rewrite_within_the_second_it_was_read_is_not_missed(tmp_path: Path, store_url: str,
                                                               sftp_server: SftpServer) -> None:
    """SFTP times are whole seconds: a file rewritten with the same size in the second it was
    read keeps size and time. It was read so soon after writing that it is hashed next time."""
    path = _put(sftp_server, "in/people.csv", PEOPLE)
    stamp = int(path.stat().st_mtime)
    hub = hub_for(_config(tmp_path, store_url, sftp_server), _env(sftp_server))
    assert hub.sync(["remote"])[0].streams["people"].read == 3
    path.write_text(PEOPLE.replace("Anna", "Anne"), encoding="utf-8")  # same size
    os.utime(path, (stamp, stamp))
    again = hub.sync(["remote"])[0]
    assert again.streams["people"].read == 3 and again.streams["people"].updated == 1
    # Read long after it was written, the size-and-time shortcut holds again (no download).
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert hub.sync(["remote"])[0].streams["people"].read == 0  # hashed: the same bytes
    opens = sum(sftp_server.opens.values())
    assert hub.sync(["remote"])[0].streams["people"].read == 0
    assert sum(sftp_server.opens.values()) == opens


def test_a_file_that_shrank_after_listing_is_left_at_once(sftp_server: SftpServer) -> None:
    path = _put(sftp_server, "a.csv", PEOPLE * 100)
    fs = _fs(sftp_server)
    (info,) = fs.list("*.csv")
    path.write_text(PEOPLE, encoding="utf-8")  # rewritten from the start by its producer
    started = time.monotonic()
    with pytest.raises(FileChanged, match="shrank"):
        with fs.snapshot(info):
            pass
    assert time.monotonic() - started < 5  # not a read past the end waiting for the timeout
    fs.close()


def test_file_info_is_what_the_stream_remembers(sftp_server: SftpServer) -> None:
    _put(sftp_server, "a.csv", "id\n1\n")
    fs = _fs(sftp_server)
    (info,) = fs.list("*.csv")
    assert isinstance(info, FileInfo) and info.size == 5
    assert info.mtime == (sftp_server.root / "a.csv").stat().st_mtime // 1  # SFTP v3 times are whole seconds
    fs.close()
