"""A real SFTP server on loopback for tests, built on asyncssh's server (not a mock).

``SftpServer`` runs an asyncssh SSH server with the SFTP subsystem on ``127.0.0.1:<free port>``
in a background thread with its own asyncio event loop, so synchronous (paramiko) client code
under test can talk to it from the test's thread::

    server = SftpServer(root=tmp_path / "root", workdir=tmp_path / "keys").start()
    try:
        ...  # connect to server.host:server.port as server.username
    finally:
        server.stop()

Authentication
    * password: ``username`` / ``password`` (a random password per server);
    * public key: the public halves of ``client_key_path`` (OpenSSH ed25519, no passphrase) and of
      ``client_key_encrypted_path`` (a second ed25519 key, encrypted with ``key_passphrase``) are
      authorized;
    * ``set_logins_allowed(False)`` makes every further login fail (right user and secret or not).

Key material (host key, a second "other" host key, both client keys) is written to ``workdir`` the
first time and re-used by every later ``SftpServer`` with the same ``workdir``; the conftest
fixtures use one session-wide ``workdir`` so the keys are generated once per session.

Files and symlinks
    The SFTP session is "chrooted" to ``root`` with asyncssh's own ``SFTPServer(chroot=...)``: the
    client sees ``root`` as ``/``. File data is streamed straight from disk per SFTP read request
    (asyncssh's normal behaviour); nothing is buffered beyond that, so 100 MB files are fine.
    Rename (plain ``rename``, which refuses to overwrite) and ``posix-rename@openssh.com`` (which
    overwrites) are asyncssh's.

    asyncssh's chroot is only a path *mapping*: client paths are normalised and joined onto
    ``root``; the operating system then resolves symlinks as usual. For a symlink created on disk
    inside ``root`` (``os.symlink``) that points *outside* ``root``:

    * ``lstat`` and directory listings report it as a symlink (``S_ISLNK``) with the link's own
      attributes;
    * ``stat``, ``open`` / ``read`` *follow* it: the client can read the file outside ``root``
      (asyncssh documents this: "pre-existing links inside the chroot which point outside of it
      will be followed");
    * ``realpath`` (paramiko ``normalize``) of the link fails with "no such file"
      (``SFTPNoSuchFile``), because the resolved path cannot be mapped back into the chroot;
    * ``readlink`` of an *absolute* target outside ``root`` fails the same way. A *relative* target
      is resolved by asyncssh with ``os.path.realpath`` against the server *process's current
      directory* (not the link's directory), so ``readlink`` of a relative link usually fails with
      "no such file" too, even when the target is inside ``root`` - an asyncssh quirk, not fixed here;
    * ``symlink`` requests from the client cannot create links that point outside ``root``.

Faults (``server.faults``, a mutable :class:`Faults`; change it at any time from the test thread)
    * drop: once a client has read more than ``drop_after_bytes`` bytes through one open handle of a
      file whose basename matches ``drop_pattern`` (fnmatch), the whole SSH connection is aborted
      (the TCP transport is closed at once, without an SSH disconnect message, like a network cut;
      the read that crosses the limit gets no answer). ``drop_times`` counts down per drop.
    * grow: on the first read request with an offset > 0 through an open handle of a file whose
      basename matches ``grow_pattern``, ``grow_bytes`` is appended to the real file on disk before
      the read is served (an upload still in progress). ``grow_times`` counts down per growth.

Counters for assertions: ``connections`` (accepted SSH connections), ``logins`` (successful
authentications), ``bytes_read`` / ``bytes_written`` (client path -> bytes served / received),
``opens`` (client path -> number of opens), ``drops`` and ``grows`` (client paths, in order),
``live_connections`` (SSH connections open right now).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import asyncssh

__all__ = ["Faults", "SftpServer"]

_START_TIMEOUT = 10.0


@dataclass
class Faults:
    """Faults the server injects; mutable at test time (see the module docstring)."""

    # Drop the whole SSH connection (abort the transport, like a network cut) once a client has
    # read more than `drop_after_bytes` bytes of a file whose name matches `drop_pattern` (fnmatch
    # on the basename). `drop_times` = how many times to do so (decremented each time; 0 = no more).
    drop_pattern: str | None = None
    drop_after_bytes: int = 0
    drop_times: int = 0
    # While a client reads a file whose basename matches `grow_pattern`, append `grow_bytes` to the
    # real file on disk on the first read past offset 0 (an upload still in progress).
    # `grow_times` like above.
    grow_pattern: str | None = None
    grow_bytes: bytes = b""
    grow_times: int = 0


def _key_file(path: Path, passphrase: str | None = None) -> asyncssh.SSHKey:
    """Load the OpenSSH ed25519 private key at ``path``, or create it (and ``path.pub``)."""
    if path.exists():
        return asyncssh.read_private_key(str(path), passphrase)
    return _new_key_file(path, passphrase)


def _public_key_of(path: Path, passphrase: str | None = None) -> asyncssh.SSHKey:
    """The public half of the key at ``path`` (from ``path.pub``, no decryption); created if new."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return asyncssh.read_public_key(str(pub))
    return _new_key_file(path, passphrase)


def _new_key_file(path: Path, passphrase: str | None) -> asyncssh.SSHKey:
    """A new ed25519 key, written to ``path`` (OpenSSH format) and ``path.pub``.

    An encrypted key is written the way ``ssh-keygen`` does: bcrypt KDF, aes256-ctr, 16 rounds."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="synchub-tests")
    if passphrase is None:
        data = key.export_private_key("openssh")
    else:
        data = key.export_private_key("openssh", passphrase=passphrase, cipher_name="aes256-ctr",
                                      rounds=16, ignore_few_rounds=True)
    path.with_name(path.name + ".pub").write_text(_public_line(key) + "\n")
    # Written under a temporary name and renamed: a reader never sees half a key.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return key


def _public_line(key: asyncssh.SSHKey) -> str:
    """``"ssh-ed25519 AAAA..."`` (no comment)."""
    algorithm, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {blob}"


class _Handle:
    """Per open file: where it is, what has been read through it, which faults fired."""

    __slots__ = ("client_path", "grown", "local_path", "name", "read")

    def __init__(self, client_path: str, local_path: str) -> None:
        self.client_path = client_path
        self.local_path = local_path
        self.name = PurePosixPath(client_path).name
        self.read = 0
        self.grown = False


class _SshServer(asyncssh.SSHServer):
    """Authentication: one user, password or one of the authorized public keys."""

    def __init__(self, owner: SftpServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connection_made(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connection_lost(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        owner = self._owner
        return (owner._logins_allowed and username == owner.username
                and secrets.compare_digest(password.encode(), owner.password.encode()))

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # asyncssh checks the client's signature itself once this says the key would do.
        owner = self._owner
        return (owner._logins_allowed and username == owner.username
                and key.public_data in owner._authorized_blobs)

    def auth_completed(self) -> None:
        self._owner._count_login()


class _FaultySftp(asyncssh.SFTPServer):
    """asyncssh's chrooted SFTP server plus the faults of ``owner.faults``."""

    def __init__(self, chan: asyncssh.SSHServerChannel, owner: SftpServer) -> None:
        super().__init__(chan, chroot=os.fsencode(owner.root))
        self._owner = owner
        self._handles: dict[int, _Handle] = {}
        self._dropped = False

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        file_obj = super().open(path, pflags, attrs)
        local_path = self.map_path(path)
        client_path = os.fsdecode(self.reverse_map_path(local_path))
        self._handles[id(file_obj)] = _Handle(client_path, os.fsdecode(local_path))
        self._owner._count("opens", client_path, 1)
        return file_obj

    def close(self, file_obj: object) -> None:
        self._handles.pop(id(file_obj), None)
        super().close(file_obj)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if self._dropped:  # requests that were already in the pipe when the connection was cut
            raise asyncssh.SFTPConnectionLost("connection dropped by the test server")
        handle = self._handles.get(id(file_obj))
        if handle is None:  # not opened through `open` (cannot happen with SFTPv3 clients)
            return super().read(file_obj, offset, size)
        owner = self._owner
        if offset > 0 and not handle.grown:
            grow = owner._take_grow(handle.name)
            if grow is not None:
                handle.grown = True
                with open(handle.local_path, "ab") as f:
                    f.write(grow)
                owner._record("grows", handle.client_path)
        data = super().read(file_obj, offset, size)
        if owner._take_drop(handle.name, handle.read + len(data)):
            owner._record("drops", handle.client_path)
            self._dropped = True
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("connection dropped by the test server")
        handle.read += len(data)
        owner._count("bytes_read", handle.client_path, len(data))
        return data

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        written = super().write(file_obj, offset, data)
        handle = self._handles.get(id(file_obj))
        if handle is not None:
            self._owner._count("bytes_written", handle.client_path, written)
        return written


class SftpServer:
    """Runs an asyncssh SSH server with SFTP subsystem on 127.0.0.1:<free port> in a background
    thread with its own asyncio loop. See the module docstring for auth, symlinks and faults."""

    host: str
    port: int
    root: Path
    username: str
    password: str
    host_key_line: str
    client_key_path: Path
    client_key_encrypted_path: Path
    key_passphrase: str
    faults: Faults

    def __init__(self, root: Path, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.username = "sync"
        self.password = secrets.token_urlsafe(16)
        self.faults = Faults()
        self.host_key_line = ""

        self.key_passphrase = "correct horse battery staple"
        self.client_key_path = self.workdir / "client_ed25519"
        self.client_key_encrypted_path = self.workdir / "client_ed25519_encrypted"
        self._host_key = _key_file(self.workdir / "host_ed25519")
        self._other_host_key = _key_file(self.workdir / "other_host_ed25519")
        self._authorized_blobs = {
            _public_key_of(self.client_key_path).public_data,
            _public_key_of(self.client_key_encrypted_path, self.key_passphrase).public_data,
        }

        self._lock = threading.Lock()
        self._logins_allowed = True
        self.connections = 0
        self.logins = 0
        self.bytes_read: dict[str, int] = {}
        self.bytes_written: dict[str, int] = {}
        self.opens: dict[str, int] = {}
        self.drops: list[str] = []
        self.grows: list[str] = []
        self._live: set[asyncssh.SSHServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SftpServer:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="sftp-test-server", daemon=True)
        self._thread.start()
        ready.wait(_START_TIMEOUT)
        try:
            self._acceptor = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(_START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.port = self._acceptor.get_port()
        self.host_key_line = self._known_hosts_line(self._host_key)
        return self

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            self.host, 0,
            server_factory=lambda: _SshServer(self),
            server_host_keys=[self._host_key],
            sftp_factory=lambda chan: _FaultySftp(chan, self),
            allow_scp=False,
            # no shell, exec or port forwarding: SFTP only
            process_factory=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=30,
        )

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._acceptor is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_START_TIMEOUT)
            except Exception:
                pass
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        self._loop = self._thread = self._acceptor = None

    async def _shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        await self._acceptor.wait_closed()
        with self._lock:
            live = list(self._live)
        for conn in live:
            conn.abort()
        if live:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in live)), 2)

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- known_hosts -----------------------------------------------------------------------------

    def _known_hosts_line(self, key: asyncssh.SSHKey) -> str:
        return f"[{self.host}]:{self.port} {_public_line(key)}"

    def other_host_key_line(self) -> str:
        """A known_hosts line for the same host/port but a DIFFERENT key ("changed host key")."""
        return self._known_hosts_line(self._other_host_key)

    # -- test controls and counters --------------------------------------------------------------

    def set_logins_allowed(self, ok: bool) -> None:
        """False: every further authentication attempt fails (existing sessions stay)."""
        self._logins_allowed = bool(ok)

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._live)

    def _connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        with self._lock:
            self.connections += 1
            self._live.add(conn)

    def _connection_lost(self, conn: asyncssh.SSHServerConnection) -> None:
        with self._lock:
            self._live.discard(conn)

    def _count_login(self) -> None:
        with self._lock:
            self.logins += 1

    def _count(self, what: str, client_path: str, n: int) -> None:
        with self._lock:
            counts = getattr(self, what)
            counts[client_path] = counts.get(client_path, 0) + n

    def _record(self, what: str, client_path: str) -> None:
        with self._lock:
            getattr(self, what).append(client_path)

    def _take_drop(self, name: str, read_after: int) -> bool:
        """True (and one drop used up) if reading up to ``read_after`` bytes must drop."""
        with self._lock:
            f = self.faults
            if (f.drop_times > 0 and f.drop_pattern is not None
                    and read_after > f.drop_after_bytes and fnmatch.fnmatch(name, f.drop_pattern)):
                f.drop_times -= 1
                return True
            return False

    def _take_grow(self, name: str) -> bytes | None:
        """The bytes to append (and one growth used up) if the file must grow now."""
        with self._lock:
            f = self.faults
            if f.grow_times > 0 and f.grow_pattern is not None and fnmatch.fnmatch(name, f.grow_pattern):
                f.grow_times -= 1
                return f.grow_bytes
            return None
