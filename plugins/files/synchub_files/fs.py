"""The small file-system interface the files connector works through.

:class:`LocalFileSystem` is the local disk; :class:`~synchub_files.sftp.SftpFileSystem` provides
the same methods over SSH.
Every path is relative to the connection's base folder and may not leave it: ``..``, absolute
paths and symlinks pointing outside are refused.

Writes go to a hidden temporary file beside the target, ``.<name>.<tag>-<random>.part``, renamed
over the target when complete. ``tag`` names the connection that writes (:func:`part_tag`), so
the leftovers of one of its runs that was killed mid-write can be told from files that another
writer owns: :meth:`LocalFileSystem.remove_stale_parts` removes them at the connection's next
write, which runs under its run lock (no other run of it can be writing then).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat as stat_
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol


class PathEscapeError(ValueError):
    """A path would leave the configured base folder."""


class FileChanged(OSError):
    """The file changed while it was read (still being written): leave it for the next run."""


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the base folder, '/'-separated
    size: int
    mtime: float


_CHUNK = 1024 * 1024


class FileSystem(Protocol):
    def list(self, pattern: str) -> list[FileInfo]: ...
    def stat(self, path: str) -> FileInfo | None: ...
    def snapshot(self, info: FileInfo) -> AbstractContextManager[tuple[BinaryIO, str]]: ...
    def open_read(self, path: str) -> BinaryIO: ...
    def write_atomic(self, path: str, *, tag: str = "") -> AbstractContextManager[BinaryIO]: ...
    def remove_stale_parts(self, path: str, *, tag: str, legacy_age: float = ...) -> list[str]: ...
    def move(self, path: str, dest: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def describe(self, path: str) -> str: ...
    def close(self) -> None: ...


#: A temporary file of the old naming (no connection tag) is only removed once it has not been
#: modified for this long: no writer pauses that long in the middle of a file.
LEGACY_PART_AGE = 3600.0


def part_tag(connection: str) -> str:
    """The part of a temporary file's name that says which connection writes it."""
    return hashlib.sha256(connection.encode("utf-8")).hexdigest()[:8]


def part_prefix(name: str, tag: str) -> str:
    """Start of the temporary name of a file ``name`` written by the connection ``tag``."""
    return f".{name}.{tag}-" if tag else f".{name}."


def stale_part(filename: str, name: str, tag: str) -> str | None:
    """Whether ``filename`` is a temporary file of a write of ``name``: ``'ours'`` when the
    connection tagged ``tag`` wrote it, ``'legacy'`` for the untagged names of earlier versions
    (``.<name>.<8 random>.part`` locally, ``.<name>.<12 hex>.part`` over SFTP), else None.
    A ``.old`` suffix marks the previous target moved aside by an SFTP upload (see
    :meth:`~synchub_files.sftp.SftpFileSystem._replace`)."""
    base = re.escape(f".{name}.")
    if tag and re.fullmatch(f"{base}{re.escape(tag)}-[a-z0-9_]{{8,12}}\\.part(?:\\.old)?", filename):
        return "ours"
    if re.fullmatch(f"{base}(?:[a-z0-9_]{{8}}|[0-9a-f]{{12}})\\.part(?:\\.old)?", filename):
        return "legacy"
    return None


def removable_part(filename: str, name: str, tag: str, *, mtime: float, target_exists: bool,
                   legacy_age: float) -> bool:
    """Whether a temporary file left beside the target ``name`` may be removed now."""
    kind = stale_part(filename, name, tag)
    if kind is None:
        return False
    if filename.endswith(".old") and not target_exists:
        return False  # the previous export, moved aside: until a new one is in place, keep it
    return kind == "ours" or time.time() - mtime >= legacy_age


def check_relative(path: str) -> PurePosixPath:
    """Refuse absolute paths and ``..`` components before touching any file system."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        raise PathEscapeError(f"path {path!r} must be relative to the connection's folder")
    if any(part == ".." for part in p.parts):
        raise PathEscapeError(f"path {path!r} may not contain '..'")
    return p


class LocalFileSystem:
    """Files under one base folder on the local disk."""

    def __init__(self, base: Path):
        self.base = base.resolve()

    def _resolve(self, path: str) -> Path:
        rel = check_relative(path)
        full = (self.base / rel).resolve()
        if full != self.base and self.base not in full.parents:
            raise PathEscapeError(f"path {path!r} leads outside {self.base} (symlink?)")
        return full

    def list(self, pattern: str) -> list[FileInfo]:
        check_relative(pattern)
        if not self.base.is_dir():
            raise FileNotFoundError(f"folder {self.base} does not exist")
        out = []
        for root, dirs, files in os.walk(self.base):
            dirs.sort()
            for name in sorted(files):
                full = Path(root) / name
                rel = full.relative_to(self.base).as_posix()
                if not fnmatch.fnmatchcase(rel, pattern):
                    continue
                try:
                    resolved = self._resolve(rel)
                except PathEscapeError:
                    continue  # a symlink out of the base folder is not ours to read
                st = resolved.stat()
                out.append(FileInfo(rel, st.st_size, st.st_mtime))
        return out

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = self._resolve(path).stat()
        except FileNotFoundError:
            return None
        return FileInfo(path, st.st_size, st.st_mtime)

    @contextmanager
    def snapshot(self, info: FileInfo) -> Iterator[tuple[BinaryIO, str]]:
        """The file open at offset 0 with its SHA-256; :class:`FileChanged` if it is no longer
        the version ``info`` lists (a writer is still at it)."""
        with open(self._resolve(info.path), "rb") as fh:
            h = hashlib.sha256()
            size = 0
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
            after = self.stat(info.path)
            if size != info.size or after is None or (after.size, after.mtime) != (info.size, info.mtime):
                raise FileChanged(f"{info.path} changed while it was read (still being written?)")
            fh.seek(0)
            yield fh, h.hexdigest()

    def open_read(self, path: str) -> BinaryIO:
        return open(self._resolve(path), "rb")

    def move(self, path: str, dest: str) -> str:
        src, target = self._resolve(path), self._resolve(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExistsError(f"{dest} exists")
        os.rename(src, target)
        return dest

    def close(self) -> None:
        pass

    @contextmanager
    def write_atomic(self, path: str, *, tag: str = "") -> Iterator[BinaryIO]:
        """Write to a temporary file beside ``path`` and rename it into place when complete.
        ``tag`` (:func:`part_tag`) marks the temporary file as the writing connection's."""
        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=part_prefix(target.name, tag), suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def remove_stale_parts(self, path: str, *, tag: str, legacy_age: float = LEGACY_PART_AGE) -> list[str]:
        """Remove what killed writes of ``path`` by the connection ``tag`` left beside it, and
        untagged leftovers of earlier versions not modified for ``legacy_age`` seconds (see
        :func:`stale_part`); return their names. Call it only while holding the connection's
        run lock. Symlinks and anything but regular files are left alone."""
        target = self._resolve(path)
        try:
            entries = list(os.scandir(target.parent))
        except FileNotFoundError:
            return []
        exists = target.exists()
        removed = []
        for entry in entries:
            if stale_part(entry.name, target.name, tag) is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat_.S_ISREG(st.st_mode) or not removable_part(
                        entry.name, target.name, tag, mtime=st.st_mtime, target_exists=exists,
                        legacy_age=legacy_age):
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(entry.name)
        return sorted(removed)

    def exists(self, path: str) -> bool:
        return self._resolve(path).exists()

    def describe(self, path: str) -> str:
        return str(self._resolve(path))
