"""Self-tests of the loopback SFTP test server (``sftp_server.py``), driven by a paramiko client."""

from __future__ import annotations

import io
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest
from paramiko.hostkeys import HostKeyEntry

from plugins.files.tests.sftp_server import SftpServer

MB = 1024 * 1024


@contextmanager
def sftp(server: SftpServer, **auth: object) -> Iterator[tuple[paramiko.Transport, paramiko.SFTPClient]]:
    """A paramiko SFTP session; logs in with ``auth`` (default: the server's password)."""
    if not auth:
        auth = {"password": server.password}
    auth.setdefault("username", server.username)
    transport = paramiko.Transport((server.host, server.port))
    try:
        transport.connect(**auth)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        with client:
            yield transport, client
    finally:
        transport.close()


def read_sequentially(client: paramiko.SFTPClient, path: str) -> bytes:
    """Read a remote file one request at a time (no prefetch thread)."""
    out = bytearray()
    with client.open(path, "rb") as f:
        while chunk := f.read(32768):
            out += chunk
    return bytes(out)


# -- authentication ---------------------------------------------------------------------------


def test_password_login_lists_and_reads_a_file(sftp_server: SftpServer) -> None:
    (sftp_server.root / "sub").mkdir()
    (sftp_server.root / "sub" / "people.csv").write_bytes(b"id,name\n1,Anna\n")
    with sftp(sftp_server) as (_, client):
        assert client.listdir("/") == ["sub"]
        assert client.listdir("/sub") == ["people.csv"]
        assert client.normalize(".") == "/"
        with client.open("/sub/people.csv") as f:
            assert f.read() == b"id,name\n1,Anna\n"
    assert sftp_server.connections == 1
    assert sftp_server.logins == 1
    assert sftp_server.opens == {"/sub/people.csv": 1}
    assert sftp_server.bytes_read == {"/sub/people.csv": 15}


def test_login_with_the_plain_key(sftp_server: SftpServer) -> None:
    key = paramiko.PKey.from_path(sftp_server.client_key_path)
    assert isinstance(key, paramiko.Ed25519Key)
    (sftp_server.root / "a.txt").write_text("a")
    with sftp(sftp_server, pkey=key) as (transport, client):
        assert transport.is_authenticated()
        assert client.listdir("/") == ["a.txt"]


def test_login_with_the_encrypted_key(sftp_server: SftpServer) -> None:
    path = sftp_server.client_key_encrypted_path
    assert b"BEGIN OPENSSH PRIVATE KEY" in path.read_bytes()
    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.Ed25519Key.from_private_key_file(str(path))
    key = paramiko.Ed25519Key.from_private_key_file(str(path), password=sftp_server.key_passphrase)
    assert key.get_base64() != paramiko.PKey.from_path(sftp_server.client_key_path).get_base64()
    # paramiko 5.1: PKey.from_path() hands the password to cryptography, which wants bytes (a
    # str raises TypeError despite the `str` annotation).
    assert paramiko.PKey.from_path(path, password=sftp_server.key_passphrase.encode()) == key
    with sftp(sftp_server, pkey=key) as (transport, client):
        assert transport.is_authenticated()
        assert client.listdir("/") == []


@pytest.mark.parametrize("auth", ["wrong password", "wrong user", "unknown key", "logins disabled"])
def test_failed_login_raises_authentication_exception(sftp_server: SftpServer, auth: str) -> None:
    kwargs: dict[str, object] = {"username": sftp_server.username, "password": sftp_server.password}
    if auth == "wrong password":
        kwargs["password"] = sftp_server.password + "x"
    elif auth == "wrong user":
        kwargs["username"] = "root"
    elif auth == "unknown key":
        kwargs = {"username": sftp_server.username, "pkey": paramiko.ECDSAKey.generate()}
    else:
        sftp_server.set_logins_allowed(False)
    with pytest.raises(paramiko.AuthenticationException), sftp(sftp_server, **kwargs):
        pass
    assert sftp_server.logins == 0
    sftp_server.set_logins_allowed(True)
    with sftp(sftp_server) as (transport, _):
        assert transport.is_authenticated()


# -- host key ---------------------------------------------------------------------------------


def test_host_key_line_is_the_key_the_server_presents(sftp_server: SftpServer) -> None:
    entry = HostKeyEntry.from_line(sftp_server.host_key_line)
    other = HostKeyEntry.from_line(sftp_server.other_host_key_line())
    assert entry is not None and other is not None
    assert entry.hostnames == other.hostnames == [f"[127.0.0.1]:{sftp_server.port}"]
    assert entry.key.get_name() == other.key.get_name() == "ssh-ed25519"

    with sftp(sftp_server) as (transport, _):
        presented = transport.get_remote_server_key()
    assert presented == entry.key
    assert presented != other.key

    # The way a client checks it: a HostKeys file with the line.
    known = paramiko.HostKeys()
    known.add(entry.hostnames[0], entry.key.get_name(), entry.key)
    assert known.check(f"[127.0.0.1]:{sftp_server.port}", presented)
    changed = paramiko.HostKeys()
    changed.add(other.hostnames[0], other.key.get_name(), other.key)
    assert not changed.check(f"[127.0.0.1]:{sftp_server.port}", presented)


# -- faults -----------------------------------------------------------------------------------


def test_drop_fault_cuts_the_connection_once(sftp_server: SftpServer) -> None:
    content = os.urandom(MB)
    (sftp_server.root / "big.csv").write_bytes(content)
    (sftp_server.root / "small.txt").write_bytes(content)
    sftp_server.faults.drop_pattern = "*.csv"
    sftp_server.faults.drop_after_bytes = 100_000
    sftp_server.faults.drop_times = 1

    with sftp(sftp_server) as (transport, client):
        assert read_sequentially(client, "/small.txt") == content  # pattern does not match
        # paramiko reports the cut as SSHException("Server connection dropped: ").
        with pytest.raises(paramiko.SSHException, match="connection dropped"):
            read_sequentially(client, "/big.csv")
        assert not transport.is_active()
    assert sftp_server.drops == ["/big.csv"]
    assert sftp_server.faults.drop_times == 0
    assert sftp_server.bytes_read["/big.csv"] <= 100_000

    with sftp(sftp_server) as (_, client):
        assert read_sequentially(client, "/big.csv") == content
    assert sftp_server.connections == 2
    assert sftp_server.drops == ["/big.csv"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_drop_fault_with_prefetching_get(sftp_server: SftpServer, tmp_path: Path) -> None:
    # SFTPClient.get() prefetches in a thread; that thread may die with EOFError (paramiko
    # prints it), the calling thread sees SSHException.
    content = os.urandom(MB)
    (sftp_server.root / "big.csv").write_bytes(content)
    sftp_server.faults.drop_pattern = "big.*"
    sftp_server.faults.drop_after_bytes = 100_000
    sftp_server.faults.drop_times = 2
    for _ in range(2):
        with sftp(sftp_server) as (_, client), pytest.raises(paramiko.SSHException):
            client.getfo("/big.csv", io.BytesIO())
    with sftp(sftp_server) as (_, client):
        client.get("/big.csv", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == content
    assert sftp_server.drops == ["/big.csv", "/big.csv"]


def test_grow_fault_appends_while_the_file_is_read(sftp_server: SftpServer) -> None:
    path = sftp_server.root / "upload.csv"
    content = b"x" * 200_000
    path.write_bytes(content)
    sftp_server.faults.grow_pattern = "*.csv"
    sftp_server.faults.grow_bytes = b"more,rows\n" * 10
    sftp_server.faults.grow_times = 1
    with sftp(sftp_server) as (_, client):
        assert client.stat("/upload.csv").st_size == 200_000
        with client.open("/upload.csv") as f:
            assert f.read(1000) == content[:1000]
            assert path.stat().st_size == 200_000  # only reads past offset 0 grow it
            f.seek(150_000)
            assert f.read(1000) == content[150_000:151_000]
            assert path.stat().st_size == 200_100
        assert read_sequentially(client, "/upload.csv") == content + b"more,rows\n" * 10
    assert path.stat().st_size == 200_100  # grow_times was 1
    assert sftp_server.grows == ["/upload.csv"]
    assert sftp_server.faults.grow_times == 0


# -- file system behaviour --------------------------------------------------------------------


def test_symlinks_pointing_outside_the_root(sftp_server: SftpServer) -> None:
    outside = sftp_server.root.parent / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_bytes(b"secret")
    (sftp_server.root / "inside.csv").write_bytes(b"inside")
    os.symlink(outside / "secret.csv", sftp_server.root / "abs.csv")
    os.symlink("../outside/secret.csv", sftp_server.root / "rel.csv")
    os.symlink(sftp_server.root / "inside.csv", sftp_server.root / "in.csv")
    with sftp(sftp_server) as (_, client):
        listing = {a.filename: stat.S_ISLNK(a.st_mode or 0) for a in client.listdir_attr("/")}
        assert listing == {"abs.csv": True, "rel.csv": True, "in.csv": True, "inside.csv": False}
        for name in ("/abs.csv", "/rel.csv"):
            assert stat.S_ISLNK(client.lstat(name).st_mode or 0)
            # asyncssh's chroot is a path mapping: the OS follows the link out of the root.
            assert client.stat(name).st_size == 6
            with client.open(name) as f:
                assert f.read() == b"secret"
            # ... but the resolved path cannot be mapped back: "no such file".
            with pytest.raises(FileNotFoundError):
                client.normalize(name)
            with pytest.raises(FileNotFoundError):
                client.readlink(name)
        assert client.readlink("/in.csv") == "/inside.csv"
        assert client.normalize("/in.csv") == "/inside.csv"
        # A link the client makes is kept inside the root.
        client.symlink("../outside/secret.csv", "/made.csv")
    assert os.readlink(sftp_server.root / "made.csv") == "outside/secret.csv"


def test_rename_and_posix_rename(sftp_server: SftpServer) -> None:
    (sftp_server.root / "a.tmp").write_bytes(b"a")
    (sftp_server.root / "b.csv").write_bytes(b"b")
    with sftp(sftp_server) as (_, client):
        with pytest.raises(OSError):  # plain SFTP rename does not overwrite
            client.rename("/a.tmp", "/b.csv")
        client.posix_rename("/a.tmp", "/b.csv")
        client.rename("/b.csv", "/c.csv")
        client.putfo(io.BytesIO(b"upload"), "/up.csv")
    assert sorted(p.name for p in sftp_server.root.iterdir()) == ["c.csv", "up.csv"]
    assert (sftp_server.root / "c.csv").read_bytes() == b"a"
    assert (sftp_server.root / "up.csv").read_bytes() == b"upload"
    assert sftp_server.bytes_written == {"/up.csv": 6}


@pytest.mark.slow
def test_100_mb_file_streams(sftp_server: SftpServer, tmp_path: Path) -> None:
    path = sftp_server.root / "huge.bin"
    with path.open("wb") as f:  # sparse: cheap to create
        f.seek(100 * MB - 5)
        f.write(b"last!")
    with sftp(sftp_server) as (_, client):
        client.get("/huge.bin", str(tmp_path / "huge.bin"))
    copy = tmp_path / "huge.bin"
    assert copy.stat().st_size == 100 * MB
    with copy.open("rb") as f:
        f.seek(100 * MB - 5)
        assert f.read() == b"last!"
    assert sftp_server.bytes_read == {"/huge.bin": 100 * MB}


def test_stop_ends_open_sessions_and_the_listener(tmp_path: Path, sftp_keys_dir: Path) -> None:
    server = SftpServer(tmp_path / "root", sftp_keys_dir).start()
    port = server.port
    assert port > 0
    with sftp(server) as (transport, client):
        assert client.listdir("/") == []
        server.stop()
        deadline = time.monotonic() + 5
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not transport.is_active()
    with pytest.raises(OSError):  # nobody listens any more
        socket.create_connection((server.host, port), timeout=2).close()
    server.stop()  # idempotent
