"""The files connector: CSV files in a folder on the local disk or on an SFTP server.

Inbound, a stream reads every file matching ``pattern``; each file is remembered by path,
size, modification time and content hash, so an unchanged file is never read twice and a
changed one is read again whole (unchanged rows cost nothing: the engine upserts by content hash).
A file still being written is left for the next run: one that matches ``ignore`` (``*.part``,
hidden files), lacks its ``ready_marker``, is younger than ``stable_seconds``, or changes while
it is read. After its rows are committed a file can be moved to ``archive``. A run that breaks
off inside a file reads it again whole next time; the rows that already landed come out unchanged.
Each file's encoding is decided from all of it (:func:`~synchub_files.csvio.scan_encoding`) unless
``encoding`` is set; a row that cannot be used is rejected with file, line and reason, and so is
a later row repeating the primary key of an earlier row of the same file (the first one lands).
Outbound, a stream writes one CSV file as a snapshot of the golden records, atomically
(a temporary name, renamed when complete); what a killed write left is removed at the next one.

    connections:
      shop:
        connector: files
        settings: {path: ../demo/data}
        streams:
          customers:
            mapping: shop_kunden
            settings: {pattern: "shop_kunden*.csv", primary_key: [Kundennr]}
"""

from __future__ import annotations

import codecs
import fnmatch
import io
import json
import logging
import posixpath
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synchub.connector import (
    Checkpoint,
    CheckResult,
    Connector,
    ConnectorSettings,
    OutRecord,
    ReadItem,
    Reconcile,
    Record,
    Rejected,
    Stream,
    StreamSettings,
    WriteResult,
)
from synchub.errors import FatalRunError, RecordError
from synchub.plugins import hookimpl
from synchub.prepare import primary_key
from synchub_files.csvio import (
    EXCEL_DE,
    CsvEncodeError,
    CsvFileError,
    CsvRowError,
    CsvWriteOptions,
    detect_dialect,
    iter_rows,
    read_header,
    scan_encoding,
    write_rows,
)
from synchub_files.fs import (
    FileChanged,
    FileInfo,
    FileSystem,
    LocalFileSystem,
    PathEscapeError,
    check_relative,
    part_tag,
)
from synchub_files.keyindex import FirstLines
from synchub_files.sftp import SftpFileSystem, SftpSettings

__all__ = [
    "CsvReadStream",
    "CsvWriteStream",
    "FileStreamSettings",
    "FilesConnector",
    "FilesSettings",
    "FirstLines",
    "part_tag",
]

_HEAD = 64 * 1024
#: A file read this soon after its modification time is hashed again on the next run.
_RECENT_SECONDS = 2.0
#: ``check`` reads the headers of at most this many files per stream (the newest).
_CHECK_FILES = 20


class FilesSettings(ConnectorSettings):
    path: str = Field(description="Base folder. Local: relative paths start at the config file's folder; "
                                  "SFTP: a folder on the server (relative to the login folder).")
    max_file_bytes: int = Field(default=2 * 1024**3, ge=1, description="Larger files are rejected whole.")
    sftp: SftpSettings | None = Field(default=None, description="Read and write on this SFTP server instead of the local disk.")


class FileStreamSettings(StreamSettings):
    # inbound
    pattern: str | None = Field(default=None, description="Glob of files to read, relative to path.")
    primary_key: list[str] = Field(default_factory=list, description="Column(s) that identify a row.")
    encoding: str | None = Field(default=None, description="Default: decided per file from the whole file "
                                                          "(BOM; UTF-8 unless most non-ASCII bytes are not; else cp1252).")
    delimiter: str | None = Field(default=None, description="Default: sniffed among ; , tab |.")
    strict_columns: bool = True
    ignore: list[str] = Field(
        default_factory=lambda: [".*", "*/.*", "*.part", "*.tmp", "*.filepart", "*.partial", "*~"],
        description="Globs of files never read: uploads in progress and hidden files.")
    ready_marker: str | None = Field(
        default=None, description="Read a file only once a marker file beside it exists, e.g. '.done' for x.csv.done.")
    stable_seconds: float = Field(
        default=0, ge=0, description="Leave files modified less than this long ago for the next run.")
    archive: str | None = Field(default=None, description="After a file's rows are committed, move it into this folder.")
    snapshot: bool = Field(
        default=False, description="Each file is a full export of the stream: a record the hub holds that a newer "
                                   "file lacks was deleted at the source (within max_delete_share).")
    # outbound
    file: str | None = Field(default=None, description="File to write, relative to path.")
    dialect: Literal["default", "excel-de", "excel-de-cp1252"] = "default"
    out_delimiter: str | None = None
    out_encoding: str | None = None
    escape_formulas: bool = True

    @field_validator("primary_key", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("encoding", "out_encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown encoding {v!r}") from None
        return v

    @field_validator("pattern", "file", "archive")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_relative(v)
            except PathEscapeError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _in_or_out(self) -> FileStreamSettings:
        if (self.pattern is None) == (self.file is None):
            raise ValueError("a files stream needs exactly one of pattern (to read) or file (to write)")
        if self.pattern is not None and not self.primary_key:
            raise ValueError("a stream that reads files needs primary_key (the column(s) that identify a row)")
        if self.ready_marker is not None and ("/" in self.ready_marker or not self.ready_marker.strip()):
            raise ValueError("ready_marker is a suffix such as '.done', not a path")
        return self

    def write_options(self) -> CsvWriteOptions:
        base = {"default": CsvWriteOptions(), "excel-de": EXCEL_DE,
                "excel-de-cp1252": CsvWriteOptions(delimiter=";", encoding="cp1252")}[self.dialect]
        return CsvWriteOptions(
            delimiter=self.out_delimiter or base.delimiter,
            encoding=self.out_encoding or base.encoding,
            bom=base.bom if not self.out_encoding else False,
            line_terminator=base.line_terminator,
            escape_formulas=self.escape_formulas,
        )


class _Listing:
    """The primary keys of one snapshot file, for the hub to tell which records it lacks."""

    def __init__(self, as_of: datetime):
        self.as_of = as_of
        self.ids: set[str] = set()
        self.unreadable = 0

    def reconcile(self, path: str, log: Any) -> Iterator[ReadItem]:
        if self.unreadable:
            # A row the hub could not read may be a record it holds: no deletions from this file.
            log.warning("%s: %d unreadable row(s); no deletions are taken from this snapshot", path, self.unreadable)
            return
        yield Reconcile(ids=self.ids, as_of=self.as_of)


class CsvReadStream(Stream):
    """Reads rows of every file matching the pattern, once per file version."""

    def __init__(self, name: str, fs: FileSystem, settings: FileStreamSettings, max_bytes: int,
                 log: Any = None):
        self.name = name
        self.log = log or logging.getLogger("synchub.connector.files")
        self.fs = fs
        self.settings = settings
        self.max_bytes = max_bytes
        self.primary_key = tuple(settings.primary_key)
        self.cursor_field = None

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        assert self.settings.pattern is not None
        seen: dict[str, Any] = dict((state or {}).get("files", {}))
        listed = self.fs.list(self.settings.pattern)
        names = {f.path for f in listed}
        marker = self.settings.ready_marker
        # The markers in one listing (x.csv.done beside x.csv), not one lookup per file.
        markers = {f.path for f in self.fs.list(self.settings.pattern + marker)} if marker else set()
        # With an archive, files leave the folder by design: the ones no longer there are
        # forgotten, so the state stays small. (Without one, a file missing from one listing, say
        # an unreadable folder, must not be read again later over newer data: it stays.)
        gone = [path for path in seen if path not in names] if self.settings.archive else []
        for path in gone:
            del seen[path]
        # Snapshots: only the newest file of a listing (and never one older than the last that
        # did) may say what the source no longer holds; an older export read late would delete
        # what a newer one brought.
        snap: dict[str, Any] = {"last": (state or {}).get("snapshot_mtime")}
        ours = [(f.mtime, f.path) for f in listed if self._ours(f)]
        newest = max(ours) if ours else None
        if self.settings.snapshot:  # oldest export first, so the newest one has the last word
            listed = sorted(listed, key=lambda f: (f.mtime, f.path))

        def checkpoint() -> Checkpoint:
            extra = {"snapshot_mtime": snap["last"]} if snap["last"] is not None else {}
            return Checkpoint({"files": dict(seen), **extra})

        for info in listed:
            if not self._ready(info, markers):
                continue
            prev = seen.get(info.path)
            if prev and prev.get("size") == info.size and prev.get("mtime") == info.mtime:
                if prev.get("rejected") or not (self.settings.archive or prev.get("recheck")):
                    continue  # this version was read (or rejected whole) before
                # Still here although it should have been archived: a crash came between the
                # commit and the move, or a new file arrived with the same name, size and time.
                # The hash below tells which.
            version: dict[str, Any] = {"size": info.size, "mtime": info.mtime}
            if info.size > self.max_bytes:
                yield Rejected(ref=info.path, reason=f"file is {info.size} bytes, over the limit of {self.max_bytes}")
                seen[info.path] = {**version, "rejected": "too large"}
                yield checkpoint()
                continue
            try:
                with self.fs.snapshot(info) as (fh, digest):
                    version["sha256"] = digest
                    if not (prev and prev.get("sha256") == digest):  # else touched, not changed
                        observed = datetime.fromtimestamp(info.mtime, tz=timezone.utc)
                        listing = None
                        if self.settings.snapshot:
                            if (info.mtime, info.path) == newest and (snap["last"] is None or info.mtime >= snap["last"]):
                                listing = _Listing(datetime.now(timezone.utc))
                            else:
                                self.log.warning("%s: not the newest export of the stream; its rows are read, but "
                                                 "deletions come only from the newest file", info.path)
                        yield from self._rows(fh, info.path, observed, listing)
                        if listing is not None:
                            reconciled = list(listing.reconcile(info.path, self.log))
                            yield from reconciled
                            if reconciled:
                                snap["last"] = info.mtime
            except FileChanged as exc:
                self.log.info("leaving %s for the next run: %s", info.path, exc)
                continue
            except FileNotFoundError:
                self.log.info("%s vanished before it was read", info.path)
                continue
            if info.mtime >= time.time() - _RECENT_SECONDS:
                # Read in the second it was written: a rewrite of the same size within that
                # second keeps size and time (SFTP times are whole seconds). Hash it next time.
                version["recheck"] = True
            seen[info.path] = version
            yield checkpoint()
            # Only now, with its rows committed and the file remembered, may it leave the folder.
            self._archive(info.path)
        if gone:
            yield checkpoint()

    def _ours(self, info: FileInfo) -> bool:
        """False for files the stream never reads: ignored, archived, ready markers."""
        s = self.settings
        base = posixpath.basename(info.path)
        if any(fnmatch.fnmatchcase(info.path, g) or fnmatch.fnmatchcase(base, g) for g in s.ignore):
            return False
        if s.archive and (info.path + "/").startswith(s.archive.rstrip("/") + "/"):
            return False
        return not (s.ready_marker and info.path.endswith(s.ready_marker))

    def _ready(self, info: FileInfo, markers: set[str]) -> bool:
        """False for files still being written (or not ours to read), which wait for a later run."""
        s = self.settings
        if not self._ours(info):
            return False
        if s.ready_marker:
            if info.path + s.ready_marker not in markers:
                self.log.info("leaving %s for the next run: no %s marker yet", info.path, s.ready_marker)
                return False
        if s.stable_seconds and time.time() - info.mtime < s.stable_seconds:
            self.log.info("leaving %s for the next run: modified less than %ss ago", info.path, s.stable_seconds)
            return False
        return True

    def _archive(self, path: str) -> None:
        s = self.settings
        if not s.archive:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = posixpath.join(s.archive, posixpath.basename(path))
        try:
            try:
                self.fs.move(path, dest)
            except FileExistsError:  # an earlier file of the same name is archived already
                dest = posixpath.join(s.archive, f"{stamp}-{posixpath.basename(path)}")
                self.fs.move(path, dest)
            if s.ready_marker and self.fs.exists(path + s.ready_marker):
                try:
                    self.fs.move(path + s.ready_marker, dest + s.ready_marker)
                except FileExistsError:
                    pass
        except OSError as exc:  # it stays; the next run sees it unchanged and tries again
            self.log.warning("could not archive %s: %s", path, exc)
        else:
            self.log.info("archived %s to %s", path, dest)

    def _rows(self, fh: Any, path: str, observed: datetime, listing: _Listing | None = None) -> Iterator[ReadItem]:
        """The rows of one file (``fh``: seekable, at offset 0).

        Unless the stream sets ``encoding``, a first pass decides it from the whole file, so one
        bad byte early cannot turn a UTF-8 file into cp1252 and a late one cannot switch
        encodings halfway: rows that do not fit the file's encoding are rejected one by one.
        A row whose primary key an earlier row of this file already had is rejected, naming that
        line; the first row stays (the only choice that streams: it may be committed already)."""
        encoding = self.settings.encoding
        lookalikes = False
        if encoding is None:
            scan = scan_encoding(fh)
            fh.seek(0)
            encoding, lookalikes = scan.encoding, scan.may_hold_utf8
            if scan.invalid_bytes and not scan.legacy:
                self.log.warning("%s: read as UTF-8 (%s); rows holding the invalid bytes are rejected", path, scan.why)
            elif lookalikes:
                self.log.warning("%s: read as %s (%s); rows that look like UTF-8 are rejected", path, encoding, scan.why)
            else:
                self.log.debug("%s: read as %s (%s)", path, encoding, scan.why)
        head = fh.read(_HEAD)
        fh.seek(0)
        pk = self.primary_key
        firsts = FirstLines()
        try:
            dialect = detect_dialect(head, encoding=encoding, delimiter=self.settings.delimiter)
            for row in iter_rows(fh, dialect, source=path, strict_columns=self.settings.strict_columns,
                                 check_utf8_lookalikes=lookalikes):
                ref = f"{path}:{row.line}"
                if isinstance(row, CsvRowError):
                    if listing is not None:
                        listing.unreadable += 1
                    yield Rejected(ref=ref, reason=row.reason, raw=row.raw)
                    continue
                if len(pk) == 1:
                    key = row.values.get(pk[0])
                else:  # joined as the engine joins it: exactly the rows that would overwrite each other
                    parts = [row.values.get(f) for f in pk]
                    key = "|".join(parts) if all(parts) else None  # type: ignore[arg-type]
                if listing is not None:
                    try:  # the id the hub keeps the record under
                        listing.ids.add(primary_key(row.values, pk))
                    except RecordError:
                        pass
                if key:  # an empty key is the engine's to reject
                    first = firsts.first(key, row.line)
                    if first is not None:
                        yield Rejected(ref=ref, reason=_duplicate_reason(pk, key, first, path),
                                       raw=json.dumps(row.values, ensure_ascii=False)[:4000],
                                       field=pk[0] if len(pk) == 1 else None)
                        continue
                yield Record(row.values, ref=ref, observed_at=observed)
        except CsvFileError as exc:
            if listing is not None:
                listing.unreadable += 1
            yield Rejected(ref=path, reason=str(exc))

    def header_problems(self, reads: list[tuple[str, str]]) -> list[str]:
        """For ``check``: the columns of ``reads`` (column, what reads it) and the primary key
        that the headers of the stream's files lack, one line each."""
        assert self.settings.pattern is not None
        wanted: dict[str, list[str]] = {}
        for column, use in [*reads, *((c, "") for c in self.primary_key)]:
            wanted.setdefault(column, []).append(use)
        files = [f for f in self.fs.list(self.settings.pattern) if self._ours(f)]
        files.sort(key=lambda f: (f.mtime, f.path), reverse=True)
        lines = []
        if len(files) > _CHECK_FILES:
            lines.append(f"{self.name}: checked the headers of the {_CHECK_FILES} newest of {len(files)} files")
        for info in sorted(files[:_CHECK_FILES], key=lambda f: f.path):
            try:
                header = set(self._header(info.path))
            except (CsvFileError, OSError) as exc:
                lines.append(f"warning: {self.name}: cannot read the header of {info.path}: {exc}")
                continue
            for column, uses in wanted.items():
                if column not in header:
                    mapped = [u for u in uses if u]
                    what = f"mapped to {', '.join(mapped)}" if mapped else "the primary key"
                    lines.append(f"warning: {self.name}: {info.path} has no column {column!r} ({what})")
        return lines

    def _header(self, path: str) -> list[str]:
        with self.fs.open_read(path) as fh:
            head = fh.read(_HEAD)
        # The encoding rule of a read, applied to the head (whole lines: no character cut off).
        whole = head[: head.rfind(b"\n") + 1] or head
        encoding = self.settings.encoding or scan_encoding(io.BytesIO(whole)).encoding
        dialect = detect_dialect(head, encoding=encoding, delimiter=self.settings.delimiter)
        return read_header(io.BytesIO(head), dialect, source=path)


def _duplicate_reason(pk: tuple[str, ...], key: str, first: int, path: str) -> str:
    shown = key if len(key) <= 80 else key[:77] + "..."
    where = f"line {first}" if first else "an earlier line"
    names = ", ".join(pk)
    return (f"duplicate primary key ({names}): {shown} is already on {where} of {path}; "
            "the first row with a key is kept, later ones are rejected")


class CsvWriteStream(Stream):
    """Writes the golden records as one CSV file, replaced atomically on every change."""

    write_mode = "snapshot"

    def __init__(self, name: str, fs: FileSystem, settings: FileStreamSettings, tag: str = "",
                 log: Any = None):
        self.name = name
        self.fs = fs
        self.settings = settings
        #: Marks this connection's temporary files (:func:`~synchub_files.fs.part_tag`).
        self.tag = tag
        self.log = log or logging.getLogger("synchub.connector.files")

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        """Replace the file. The engine calls this under the connection's run lock, so no other
        write of this connection runs: what a killed one left beside the file is removed first."""
        assert self.settings.file is not None
        removed = self.fs.remove_stale_parts(self.settings.file, tag=self.tag)
        if removed:
            self.log.warning("removed %d temporary file(s) an interrupted export left beside %s: %s",
                             len(removed), self.settings.file, ", ".join(removed))
        results: list[WriteResult] = []

        def rows() -> Iterator[dict[str, Any]]:
            for rec in records:
                results.append(WriteResult(rec.golden_id, ok=True))
                yield rec.data

        try:
            with self.fs.write_atomic(self.settings.file, tag=self.tag) as fh:
                write_rows(fh, fields, rows(), self.settings.write_options())
        except CsvEncodeError as exc:  # the old file stays as it was
            raise FatalRunError(f"cannot write {self.settings.file}: {exc}") from None
        yield from results

    def target_exists(self) -> bool:
        assert self.settings.file is not None
        return self.fs.exists(self.settings.file)

    def describe_target(self) -> str | None:
        assert self.settings.file is not None
        return self.fs.describe(self.settings.file)


class FilesConnector(Connector):
    """CSV files in a local folder or on an SFTP server."""

    name = "files"
    Settings = FilesSettings
    StreamSettings = FileStreamSettings
    _fs: FileSystem | None = None

    def filesystem(self) -> FileSystem:
        if self._fs is None:
            settings: FilesSettings = self.settings  # type: ignore[assignment]
            if settings.sftp is not None:
                self._fs = SftpFileSystem(settings.sftp, settings.path, self.context.base_dir)
            else:
                self._fs = LocalFileSystem(self.context.base_dir / settings.path)
        return self._fs

    def stats(self) -> dict[str, int]:
        reconnects = getattr(self._fs, "connects", 0) - 1
        return {"retries": reconnects} if reconnects > 0 else {}

    def close(self) -> None:
        if self._fs is not None:
            self._fs.close()
            self._fs = None

    def streams(self) -> dict[str, Stream]:
        fs = self.filesystem()
        settings: FilesSettings = self.settings  # type: ignore[assignment]
        out: dict[str, Stream] = {}
        for name, ss in self.context.stream_settings.items():
            assert isinstance(ss, FileStreamSettings)
            if ss.pattern is not None:
                out[name] = CsvReadStream(name, fs, ss, settings.max_file_bytes, self.context.log)
            else:
                out[name] = CsvWriteStream(name, fs, ss, part_tag(self.context.name), self.context.log)
        return out

    def check(self) -> CheckResult:
        fs = self.filesystem()
        lines, ok = [], True
        for name, stream in self.streams().items():
            if isinstance(stream, CsvReadStream):
                try:
                    files = fs.list(stream.settings.pattern or "")
                    lines.append(f"{name}: read {len(files)} file(s) matching {stream.settings.pattern}")
                except OSError as exc:
                    ok = False
                    lines.append(f"{name}: cannot list files: {exc}")
            else:
                lines.append(f"{name}: write {stream.describe_target()}")
        return CheckResult(ok, lines)

    def check_mapped_fields(self, reads: dict[str, list[tuple[str, str]]]) -> list[str]:
        """Warn about each column a stream's mapping reads (``reads``: stream -> (column, field
        it fills)) or its primary key names that a matching file's header lacks."""
        lines = []
        for name, stream in self.streams().items():
            if not isinstance(stream, CsvReadStream):
                continue
            try:
                lines.extend(stream.header_problems(reads.get(name, [])))
            except OSError as exc:
                lines.append(f"warning: {name}: cannot list files: {exc}")
        return lines


@hookimpl
def register_connectors() -> list[type[Connector]]:
    return [FilesConnector]
