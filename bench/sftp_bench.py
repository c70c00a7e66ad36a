"""SFTP download and parse: MB/s and memory for one big CSV on a real SFTP server on loopback.

Starts the asyncssh SFTP server the tests use (on 127.0.0.1), writes a CSV of the requested
size into its folder, then reads it through the files connector's SFTP stream exactly as a sync
does: download spooled to a temporary file while hashed, then parsed row by row. Prints the time
of the download+hash and of the whole read, and the Python heap peak (tracemalloc, measured in a
second pass, since tracing slows parsing) and the process's peak RSS.

    .venv/bin/python bench/sftp_bench.py --mb 100 500
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.files.tests.sftp_server import SftpServer  # noqa: E402
from synchub.connector import Record  # noqa: E402
from synchub_files import CsvReadStream, FileStreamSettings  # noqa: E402
from synchub_files.sftp import SftpFileSystem, SftpSettings  # noqa: E402

NOTES = "Kundin seit 2019, bevorzugt Lieferung an die Packstation; Rückfragen bitte per E-Mail. " * 4


def write_csv(path: Path, megabytes: int) -> int:
    target = megabytes * 1024 * 1024
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("Kundennr;E-Mail;Vorname;Nachname;Straße;PLZ;Ort;Notiz\r\n")
        while fh.tell() < target:
            for _ in range(1000):
                fh.write(f"{rows};kunde{rows}@example.de;Jörg;Müller-Weiß;Hauptstraße {rows % 200};80331;München;\"{NOTES}\"\r\n")
                rows += 1
    return rows


def read_all(server: SftpServer, traced: bool) -> tuple[int, float, float, int]:
    settings = SftpSettings(host=server.host, port=server.port, username=server.username,
                            password=server.password, known_hosts=server.host_key_line)
    fs = SftpFileSystem(settings, "/", Path("."))
    stream = CsvReadStream("bench", fs, FileStreamSettings(pattern="*.csv", primary_key=["Kundennr"]),
                           4 * 1024**3, logging.getLogger("bench"))
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    (info,) = fs.list("*.csv")
    with fs.snapshot(info):
        downloaded = time.perf_counter() - started
    records = sum(1 for item in stream.read(None) if isinstance(item, Record))
    total = time.perf_counter() - started - downloaded  # the stream downloads again itself
    peak = 0
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    fs.close()
    return records, downloaded, total, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[100])
    args = ap.parse_args()
    print(f"{'size':>8} {'rows':>9} {'download+hash':>14} {'MB/s':>7} {'stream read':>11} {'MB/s':>7} "
          f"{'heap peak':>10} {'RSS peak':>9}")
    for mb in args.mb:
        with tempfile.TemporaryDirectory() as tmp:
            server = SftpServer(Path(tmp) / "root", Path(tmp) / "keys").start()
            try:
                rows = write_csv(server.root / "kunden.csv", mb)
                size = (server.root / "kunden.csv").stat().st_size / 1024**2
                records, down, total, _ = read_all(server, traced=False)
                assert records == rows, (records, rows)
                _, _, _, peak = read_all(server, traced=True)
            finally:
                server.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{size:7.0f}M {rows:>9,} {down:13.1f}s {size / down:7.1f} {total:10.1f}s {size / total:7.1f} "
              f"{peak / 1024**2:9.1f}M {rss:8.0f}M", flush=True)


if __name__ == "__main__":
    main()
