"""The small file-system interface the files connector works through.

:class:`LocalFileSystem` is the local disk; :class:`~synchub_files.sftp.SftpFileSystem` provides
the same methods over SSH.
Every path is relative to the connection's base folder and may not leave it: ``..``, absolute
paths and symlinks pointing outside are refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tempfile
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
    def write_atomic(self, path: str) -> AbstractContextManager[BinaryIO]: ...
    def move(self, path: str, dest: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def describe(self, path: str) -> str: ...
    def close(self) -> None: ...


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
    def write_atomic(self, path: str) -> Iterator[BinaryIO]:
        """Write to a temporary file beside ``path`` and rename it into place when complete."""
        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
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

    def exists(self, path: str) -> bool:
        return self._resolve(path).exists()

    def describe(self, path: str) -> str:
        return str(self._resolve(path))
