"""The files connector passes the standard connector checks."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import pytest

from synchub.connector import ConnectionContext, OutRecord, Record, WriteResult
from synchub.testing import ConnectorChecks, ConnectorHarness
from synchub_files import FilesConnector, FilesSettings, FileStreamSettings


class FilesHarness(ConnectorHarness):
    stream = "people"
    write_stream = "export"

    def __init__(self, base: Path):
        self.base = base
        (base / "data").mkdir()
        self.files = 0
        self.next_id = 1

    def connector(self) -> FilesConnector:
        return FilesConnector(ConnectionContext(
            name="files", settings=FilesSettings(path="data"),
            stream_settings={"people": FileStreamSettings(pattern="people*.csv", primary_key=["id"]),
                             "export": FileStreamSettings(file="export.csv", out_delimiter=";")},
            base_dir=self.base, log=logging.getLogger("test"),
        ))

    def _write(self, lines: list[str]) -> None:
        self.files += 1
        path = self.base / "data" / f"people{self.files:03d}.csv"
        path.write_text("id;name\n" + "".join(lines), encoding="utf-8")

    def add_records(self, n: int) -> None:
        lines = [f"{self.next_id + i};Person {self.next_id + i}\n" for i in range(n)]
        self.next_id += n
        self._write(lines)

    def add_bad_record_between_good_ones(self) -> int:
        a, b = self.next_id, self.next_id + 1
        self.next_id += 2
        self._write([f"{a};Ann\n", "broken;row;with;too;many;fields\n", f"{b};Bo\n"])
        return 2

    # A file is read whole, so the records of one file share its "cursor value" (its version).
    def add_records_sharing_cursor(self, n: int) -> None:
        self.add_records(n)

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        # More rows in the file that held ``record``: a new version of that file.
        assert record.ref is not None
        path = self.base / "data" / record.ref.rsplit(":", 1)[0]
        with open(path, "a", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(f"{self.next_id + i};Late {self.next_id + i}\n")
        self.next_id += n
        return n

    def settings_examples(self) -> dict:
        return {"path": "data"}

    # writes: the export stream replaces export.csv (a snapshot: no per-record refusal)
    def records_to_write(self, n: int) -> list[OutRecord]:
        first, self.next_id = self.next_id, self.next_id + n
        return [OutRecord(f"g{i}", {"id": str(i), "name": f"Written {i}"}) for i in range(first, first + n)]

    def record_to_refuse(self) -> None:
        return None

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        path = self.base / "data" / "export.csv"
        if not path.exists():
            return None
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return next((row for row in csv.DictReader(fh, delimiter=";") if row["id"] == out.data["id"]), None)


class TestFilesConnector(ConnectorChecks):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> FilesHarness:
        return FilesHarness(tmp_path)
