"""The files connector passes the standard connector checks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from synchub.connector import ConnectionContext
from synchub.testing import ConnectorChecks, ConnectorHarness
from synchub_files import FilesConnector, FilesSettings, FileStreamSettings


class FilesHarness(ConnectorHarness):
    stream = "people"

    def __init__(self, base: Path):
        self.base = base
        (base / "data").mkdir()
        self.files = 0
        self.next_id = 1

    def connector(self) -> FilesConnector:
        return FilesConnector(ConnectionContext(
            name="files", settings=FilesSettings(path="data"),
            stream_settings={"people": FileStreamSettings(pattern="people*.csv", primary_key=["id"])},
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

    def settings_examples(self) -> dict:
        return {"path": "data"}


class TestFilesConnector(ConnectorChecks):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> FilesHarness:
        return FilesHarness(tmp_path)
