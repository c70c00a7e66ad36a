"""SFTP for the files connector: the same :class:`~synchub_files.fs.FileSystem` over SSH (paramiko).

Trust comes from config, never from the network: the server's host key must match a line of
``known_hosts`` (inline) or ``known_hosts_file``; an unknown or changed key is refused with the
key's fingerprint in the message, never accepted silently. The client offers only the key types
the known-hosts entries hold, so a server that has several keys shows the one we know.

Reads are spooled to a local temporary file while hashed, so a connection dropped mid-download
never hands half a file to the parser: the download resumes where it broke off on a new
connection (``retries`` times), and the file is parsed only when it arrived whole and unchanged.
Writes go to a hidden ``.part`` file beside the target and are renamed over it when complete;
the leftovers of a killed write are removed at the connection's next write (see
:mod:`synchub_files.fs`).
Every path stays inside the base folder: ``..`` and absolute paths are refused before anything
is sent, and the server's ``realpath`` of each file (which follows symlinks) must lie inside the
base folder's.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import posixpath
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from synchub.errors import FatalRunError
from synchub_files.fs import (
    LEGACY_PART_AGE,
    FileChanged,
    FileInfo,
    PathEscapeError,
    check_relative,
    part_prefix,
    removable_part,
    stale_part,
)

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("synchub.connector.files.sftp")

_REQUEST = 32 * 1024  # the largest read every SFTP server answers whole
_WINDOW = 4 * 1024 * 1024  # bytes requested at once during a download


class SftpSettings(BaseModel):
    """Where and how to log in. Secrets come from ``${ENV}`` or a key file, never inline."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    key_file: str | None = Field(default=None, description="Private key (OpenSSH or PEM); relative to the config folder.")
    key_passphrase: SecretStr | None = None
    known_hosts: str | None = Field(default=None, description="known_hosts line(s) for the server.")
    known_hosts_file: str | None = Field(default=None, description="A known_hosts file; relative to the config folder.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds for connect, login and each request.")
    retries: int = Field(default=3, ge=0, le=20, description="Reconnects when a connection drops mid-transfer.")

    @model_validator(mode="after")
    def _auth_and_trust(self) -> SftpSettings:
        if self.password is None and self.key_file is None:
            raise ValueError("sftp needs password (from ${ENV}) or key_file to log in")
        if self.known_hosts is None and self.known_hosts_file is None:
            raise ValueError(
                "sftp needs known_hosts (the server's host key line) or known_hosts_file: "
                "host keys are verified, never accepted blindly"
            )
        return self

    def endpoint(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form of a key's fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_algorithms(offered: Iterable[str], known: Iterable[str]) -> list[str]:
    """The host key algorithms of ``offered`` that verify against keys of the ``known`` types.
    An RSA key (``ssh-rsa`` in known_hosts) is also signed with SHA-2 (``rsa-sha2-256/512``),
    which is what current servers use; ``ssh-rsa`` alone would ask for SHA-1 signatures."""
    names = set(known)
    if "ssh-rsa" in names:
        names |= {"rsa-sha2-256", "rsa-sha2-512"}
    return [t for t in offered if t in names]


class SftpFileSystem:
    """Files under one base folder on an SFTP server; connects on first use."""

    def __init__(self, settings: SftpSettings, base: str, config_dir: Path):
        self.settings = settings
        self.base = base or "."
        self.config_dir = config_dir
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._base_real: str | None = None
        self.connects = 0

    # ----- connection -----------------------------------------------------------------------

    def _local_path(self, name: str) -> Path:
        """A file of this machine named in the config: ``~`` expanded, relative to the config."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.config_dir / path

    def _known_keys(self) -> paramiko.HostKeys:
        import paramiko

        keys = paramiko.HostKeys()
        s = self.settings
        if s.known_hosts_file:
            path = self._local_path(s.known_hosts_file)
            try:
                keys.load(str(path))
            except OSError as exc:
                raise FatalRunError(f"cannot read known_hosts_file {path}: {exc.strerror or exc}") from None
        for n, line in enumerate((s.known_hosts or "").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, n)
            except Exception:  # paramiko raises several kinds for a broken line
                entry = None
            if entry is None or entry.key is None:
                raise FatalRunError(f"known_hosts line {n} is not a valid host key line")
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        return keys

    def _load_key(self) -> paramiko.PKey:
        import paramiko

        s = self.settings
        assert s.key_file is not None
        path = self._local_path(s.key_file)
        passphrase = s.key_passphrase.get_secret_value().encode() if s.key_passphrase else None
        try:
            return paramiko.PKey.from_path(path, password=passphrase)
        except FileNotFoundError:
            raise FatalRunError(f"SFTP key_file {path} does not exist") from None
        except paramiko.PasswordRequiredException:
            raise FatalRunError(f"SFTP key_file {path} is encrypted: set key_passphrase") from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise FatalRunError(f"cannot load SFTP key_file {path} ({type(exc).__name__}; wrong passphrase?)") from None

    def connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        import paramiko

        s = self.settings
        where = f"{s.username}@{s.host}:{s.port}"
        known = self._known_keys()
        expected = known.lookup(s.endpoint()) or {}
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.timeout)
        except OSError as exc:
            raise OSError(f"cannot reach SFTP server {s.host}:{s.port}: {exc.strerror or exc}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = s.timeout
            transport.auth_timeout = s.timeout
            if expected:
                # Ask for a key type we can verify (a server usually has several).
                opts = transport.get_security_options()
                known_types = host_key_algorithms(opts.key_types, expected)
                if known_types:
                    opts.key_types = known_types
            try:
                transport.start_client(timeout=s.timeout)
            except paramiko.SSHException as exc:
                raise OSError(f"SSH handshake with {s.host}:{s.port} failed: {exc}") from None
            key = transport.get_remote_server_key()
            self._verify_host_key(key, expected)
            self._login(transport, where)
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise OSError(f"{where}: the server refused the SFTP subsystem")
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(s.timeout)
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(30)  # NAT boxes drop silent SSH sessions
        self._transport, self._sftp = transport, sftp
        self.connects += 1
        try:
            # Resolved like any path that may not exist yet (an export creates it): from its
            # deepest existing folder, whose realpath follows symlinks.
            start = "/" if self.base.startswith("/") else sftp.normalize(".")
            self._base_real = self._realpath(sftp, posixpath.normpath(posixpath.join(start, self.base)), must_exist=False)
        except (OSError, PathEscapeError) as exc:
            self.close()
            raise OSError(f"SFTP folder {self.base!r} on {s.host} is not accessible: {exc}") from None
        return sftp

    def _verify_host_key(self, key: paramiko.PKey, expected: dict[str, Any]) -> None:
        s = self.settings
        host = s.endpoint()
        if not expected:
            raise FatalRunError(
                f"SFTP host {host} presented a {key.get_name()} host key {fingerprint(key)} that is not in "
                f"known_hosts: refusing to connect. Check the fingerprint with the server's admin, then add "
                f"the server's line (ssh-keyscan -p {s.port} {s.host}) to the connection's known_hosts."
            )
        known = expected.get(key.get_name())
        if known is None or known.asbytes() != key.asbytes():
            listed = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in expected.values())
            raise FatalRunError(
                f"SFTP host {host} presented a {key.get_name()} host key {fingerprint(key)} that does NOT match "
                f"known_hosts ({listed}): refusing to connect. The server's key changed, or someone is "
                f"intercepting the connection; update known_hosts only after checking with the server's admin."
            )

    def _login(self, transport: paramiko.Transport, where: str) -> None:
        import paramiko

        s = self.settings
        problems = []
        if s.key_file:
            try:
                transport.auth_publickey(s.username, self._load_key())
            except paramiko.AuthenticationException:
                problems.append("key refused")
            else:
                return
        if s.password is not None:
            try:
                transport.auth_password(s.username, s.password.get_secret_value())
            except paramiko.AuthenticationException:
                problems.append("password refused")
            else:
                return
        raise FatalRunError(f"SFTP login as {where} failed ({', '.join(problems)}): check username and credentials")

    def close(self) -> None:
        if self._sftp is not None:
            with suppress(Exception):
                self._sftp.close()
        if self._transport is not None:
            with suppress(Exception):
                self._transport.close()
        self._sftp = self._transport = None

    def _retrying(self, what: str, fn: Any) -> Any:
        """Run ``fn(sftp)``; when the connection drops (or cannot be made), reconnect and try
        again, ``retries`` times. A server's answer (no such file, permission denied) is raised."""
        import paramiko

        attempt = 0
        while True:
            try:
                return fn(self.connect())
            except (FatalRunError, FileNotFoundError, PermissionError, FileExistsError, FileChanged):
                raise  # answers, not a broken connection
            except (paramiko.SSHException, EOFError, OSError) as exc:
                timed_out = isinstance(exc, (socket.timeout, TimeoutError))
                if self._alive() and not timed_out and not isinstance(exc, (paramiko.SSHException, EOFError)):
                    raise OSError(f"SFTP {what} on {self.settings.host}: {exc}") from None  # the server's answer
                attempt += 1
                if attempt > self.settings.retries:
                    raise OSError(f"SFTP connection to {self.settings.host} dropped during {what}; "
                                  f"gave up after {attempt} attempt(s): {type(exc).__name__}") from None
                log.warning("SFTP connection dropped during %s (%s); reconnecting (%d/%d)",
                            what, type(exc).__name__, attempt, self.settings.retries)
                self.close()  # a timed-out session may still look alive: never reuse it
                time.sleep(min(2.0 ** attempt * 0.25, 10.0))

    def _alive(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    # ----- paths ------------------------------------------------------------------------------

    def _full(self, path: str) -> str:
        rel = check_relative(path)
        assert self._base_real is not None
        return posixpath.normpath(posixpath.join(self._base_real, rel.as_posix()))

    def _inside(self, real: str) -> bool:
        base = self._base_real or ""
        return real == base or real.startswith(base.rstrip("/") + "/")

    def _confined(self, sftp: paramiko.SFTPClient, path: str, *, must_exist: bool = True) -> str:
        """The full remote path of ``path``, after checking the server's realpath stays inside.

        For a path that may not exist yet (a file to write, a folder to create), the realpath
        of its deepest existing ancestor is taken and the rest appended, so a symlinked folder on
        the way cannot lead out. Any other error than "no such file" refuses the path."""
        full = self._full(path)
        real = self._realpath(sftp, full, must_exist=must_exist)
        if not self._inside(real):
            raise PathEscapeError(f"path {path!r} leads outside the SFTP folder {self.base!r} (symlink?)")
        return full

    def _realpath(self, sftp: paramiko.SFTPClient, full: str, *, must_exist: bool) -> str:
        import paramiko

        rest: list[str] = []
        current = full
        while True:
            try:
                real = sftp.normalize(current)
                break
            except (TimeoutError, EOFError, paramiko.SSHException):
                raise  # the connection, not the path: _retrying decides
            except OSError as exc:
                if not self._alive():
                    raise
                # Only a path that is really not there (lstat says so) may be walked up from:
                # a symlink whose target the server will not resolve (outside a chroot, say)
                # exists, and is refused. Some servers answer a missing path with a bare failure.
                if current in ("/", "") or self._exists(sftp, current, lstat=True):
                    raise PathEscapeError(f"cannot resolve {current!r} on the SFTP server ({exc}); refusing it") from None
                if must_exist:
                    raise FileNotFoundError(errno.ENOENT, f"{current} does not exist on the SFTP server") from None
                current, name = posixpath.split(current)
                rest.insert(0, name)
        return posixpath.join(real, *rest) if rest else real

    # ----- FileSystem -------------------------------------------------------------------------

    def list(self, pattern: str) -> list[FileInfo]:
        import fnmatch

        check_relative(pattern)

        def walk(sftp: paramiko.SFTPClient) -> list[FileInfo]:
            out: list[FileInfo] = []
            assert self._base_real is not None
            todo = [""]
            while todo:
                rel_dir = todo.pop()
                folder = posixpath.join(self._base_real, rel_dir) if rel_dir else self._base_real
                try:
                    entries = sftp.listdir_attr(folder)
                except FileNotFoundError:
                    if rel_dir:
                        continue  # removed while we listed
                    raise FileNotFoundError(f"SFTP folder {self.base!r} on {self.settings.host} does not exist") from None
                for attr in sorted(entries, key=lambda a: a.filename):
                    rel = f"{rel_dir}/{attr.filename}" if rel_dir else attr.filename
                    mode = attr.st_mode or 0
                    if stat.S_ISLNK(mode):
                        try:
                            self._confined(sftp, rel)
                            attr = sftp.stat(self._full(rel))
                        except (PathEscapeError, OSError):
                            log.warning("skipping %s: a symlink leading outside the SFTP folder", rel)
                            continue
                        mode = attr.st_mode or 0
                        if stat.S_ISDIR(mode):
                            continue  # symlinked folders are not followed (loops)
                    if stat.S_ISDIR(mode):
                        todo.append(rel)
                    elif stat.S_ISREG(mode) and fnmatch.fnmatchcase(rel, pattern):
                        out.append(FileInfo(rel, attr.st_size or 0, float(attr.st_mtime or 0)))
            return sorted(out, key=lambda f: f.path)

        return self._retrying(f"listing {pattern}", walk)

    def stat(self, path: str) -> FileInfo | None:
        def one(sftp: paramiko.SFTPClient) -> FileInfo | None:
            try:
                full = self._confined(sftp, path)
                attr = sftp.stat(full)
            except FileNotFoundError:
                return None
            return FileInfo(path, attr.st_size or 0, float(attr.st_mtime or 0))

        return self._retrying(f"stat of {path}", one)

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    @contextmanager
    def snapshot(self, info: FileInfo) -> Iterator[tuple[BinaryIO, str]]:
        """A local copy of the file as listed in ``info`` (at offset 0) and its SHA-256.

        The download is spooled to a temporary file while hashed; a dropped connection resumes
        at the byte where it broke off. :class:`FileChanged` when the file's size or time moved
        while it was downloaded (still being written): nothing of it is parsed then.
        """
        with tempfile.TemporaryFile(prefix="synchub-sftp-") as spool:
            h = hashlib.sha256()

            def fetch(sftp: paramiko.SFTPClient) -> None:
                full = self._confined(sftp, info.path)
                with sftp.open(full, "rb") as remote:
                    if (remote.stat().st_size or 0) < info.size:  # reading past the end would hang
                        raise FileChanged(f"{info.path} shrank since it was listed (being rewritten?)")
                    # Requests of 32 KiB, a window of them in flight at once (readv pipelines
                    # them): one at a time, each waits a round trip. The window bounds memory.
                    while (offset := spool.tell()) < info.size:
                        end = min(offset + _WINDOW, info.size)
                        chunks = [(o, min(_REQUEST, end - o)) for o in range(offset, end, _REQUEST)]
                        got = 0
                        for data in remote.readv(chunks):
                            spool.write(data)
                            h.update(data)
                            got += len(data)
                        if got < end - offset:
                            break  # shorter than listed: the size check below leaves it for later

            self._retrying(f"download of {info.path}", fetch)
            after = self.stat(info.path)
            size = spool.tell()
            if after is None or size != info.size or after.size != info.size or after.mtime != info.mtime:
                raise FileChanged(f"{info.path} changed while it was downloaded (still being written?)")
            spool.seek(0)
            yield spool, h.hexdigest()

    def open_read(self, path: str) -> BinaryIO:
        sftp = self.connect()
        return sftp.open(self._confined(sftp, path), "rb")  # type: ignore[return-value]

    @contextmanager
    def write_atomic(self, path: str, *, tag: str = "") -> Iterator[BinaryIO]:
        """Upload to a hidden ``.part`` file beside ``path``, then rename it over ``path``.
        On any failure the old file stays as it was and the ``.part`` file is removed.
        ``tag`` (:func:`~synchub_files.fs.part_tag`) marks the ``.part`` file as the writing
        connection's."""
        import paramiko

        sftp = self.connect()
        tmp = None
        try:
            target = self._confined(sftp, path, must_exist=False)
            folder, name = posixpath.split(target)
            self._makedirs(sftp, folder)
            tmp = posixpath.join(folder, f"{part_prefix(name, tag)}{uuid.uuid4().hex[:12]}.part")
            with sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                yield fh  # type: ignore[misc]
            self._replace(sftp, tmp, target)
        except BaseException as exc:
            if tmp is not None and self._alive():
                with suppress(Exception):
                    sftp.remove(tmp)
            if isinstance(exc, (paramiko.SSHException, EOFError)):
                raise OSError(f"SFTP upload of {path} to {self.settings.host} broke off: {type(exc).__name__}") from None
            raise

    def remove_stale_parts(self, path: str, *, tag: str, legacy_age: float = LEGACY_PART_AGE) -> list[str]:
        """Remove what killed uploads of ``path`` by the connection ``tag`` left beside it (see
        :meth:`synchub_files.fs.LocalFileSystem.remove_stale_parts`); return their names. Call it
        only while holding the connection's run lock. (``legacy_age`` is measured against the
        server's modification times: mind clock skew.)"""

        def sweep(sftp: paramiko.SFTPClient) -> list[str]:
            target = self._confined(sftp, path, must_exist=False)
            folder, name = posixpath.split(target)
            try:
                entries = sftp.listdir_attr(folder)
            except FileNotFoundError:
                return []
            exists = self._exists(sftp, target)
            removed = []
            for attr in entries:
                if stale_part(attr.filename, name, tag) is None or not stat.S_ISREG(attr.st_mode or 0):
                    continue  # listdir_attr does not follow symlinks: a link is never removed
                if not removable_part(attr.filename, name, tag, mtime=float(attr.st_mtime or 0),
                                      target_exists=exists, legacy_age=legacy_age):
                    continue
                try:
                    sftp.remove(posixpath.join(folder, attr.filename))
                except FileNotFoundError:
                    continue
                removed.append(attr.filename)
            return sorted(removed)

        return self._retrying(f"cleanup beside {path}", sweep)

    def move(self, path: str, dest: str) -> str:
        """Move ``path`` to ``dest`` (both inside the base folder); returns where it went."""

        def mv(sftp: paramiko.SFTPClient) -> str:
            src = self._confined(sftp, path)
            target = self._confined(sftp, dest, must_exist=False)
            self._makedirs(sftp, posixpath.dirname(target))
            try:
                sftp.stat(target)
            except FileNotFoundError:
                sftp.rename(src, target)  # plain SFTP rename refuses to overwrite: wanted here
                return dest
            raise FileExistsError(f"{dest} exists")

        return self._retrying(f"move of {path}", mv)

    def describe(self, path: str) -> str:
        s = self.settings
        return f"sftp://{s.username}@{s.host}:{s.port}/{posixpath.join(self.base, path).lstrip('/')}"

    # ----- helpers ----------------------------------------------------------------------------

    def _makedirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        missing = []
        while folder and not self._exists(sftp, folder):
            missing.append(folder)
            folder = posixpath.dirname(folder)
        for f in reversed(missing):
            real = self._realpath(sftp, f, must_exist=False)
            # Inside the base folder, or the base folder itself and the folders above it that do
            # not exist yet (the first export creates its folder).
            if not (self._inside(real) or (self._base_real or "").startswith(real.rstrip("/") + "/")):
                raise PathEscapeError(f"folder {f!r} is outside the SFTP folder {self.base!r}")
            sftp.mkdir(f)

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str, *, lstat: bool = False) -> bool:
        try:
            (sftp.lstat if lstat else sftp.stat)(path)
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def _replace(sftp: paramiko.SFTPClient, tmp: str, target: str) -> None:
        try:
            sftp.posix_rename(tmp, target)  # atomic replace (OpenSSH extension)
            return
        except OSError as exc:
            if exc.errno is not None:
                raise  # no such file, permission denied: the fallback would fail the same way
            # A bare failure: most likely a server without posix-rename (it answers "operation
            # unsupported" in its own words); the fallback below is safe for any other cause.
        # A server without posix-rename: SFTP's rename does not overwrite. The old file is moved
        # aside first and only removed once the new one is in place (or put back if that fails).
        aside = f"{tmp}.old"
        try:
            sftp.rename(target, aside)
        except FileNotFoundError:
            aside = ""
        try:
            sftp.rename(tmp, target)
        except BaseException:
            if aside:
                with suppress(Exception):
                    sftp.rename(aside, target)
            raise
        if aside:
            with suppress(Exception):
                sftp.remove(aside)
