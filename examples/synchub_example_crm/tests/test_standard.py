"""The Example CRM connector passes the standard connector checks, HTTP checks included."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fake_crm import FakeCrm, parse_ms
from synchub_example_crm import CrmConnector, CrmSettings

from synchub.connector import ConnectionContext, OutRecord, Record, StreamSettings, WriteResult
from synchub.http import HttpClientFactory
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness, fake_server_http

#: The round trip's mappings: the person's e-mail, and the CRM's single name field kept whole (an
#: out mapping takes one canonical field per destination field, so the name goes back as it came).
IN_MAPPING = """\
entity: person
direction: in
observed_at: {path: updated_at, transform: parse_datetime}
fields:
  emails: email
  first_name: {path: name, transform: split_name, args: {part: first}}
  last_name: {path: name, transform: split_name, args: {part: last}}
  custom.example_crm_name: name
"""
OUT_MAPPING = """\
entity: person
direction: out
fields:
  email: emails.0
  name: custom.example_crm_name
"""


class CrmHarness(HttpConnectorHarness):
    stream = "persons"
    page_size = 3
    connector_class: type[CrmConnector] = CrmConnector
    in_mapping = IN_MAPPING
    out_mapping = OUT_MAPPING

    def __init__(self, fake: FakeCrm):
        self.fake = fake
        self.n = 0

    def connection_settings(self, token: str | None = None) -> dict[str, Any]:
        return {"token": token or self.fake.token, "page_size": self.page_size}

    def http(self) -> HttpClientFactory:
        return fake_server_http(self.fake.transport, self.fake.clock)

    def connector(self, token: str | None = None) -> CrmConnector:
        settings = CrmSettings.model_validate(self.connection_settings(token))
        return self.connector_class(ConnectionContext(
            name="crm", settings=settings, stream_settings={"persons": StreamSettings()},
            base_dir=Path("."), log=logging.getLogger("test.example_crm"), http=self.http(),
        ))

    def _person(self, **kw: Any) -> int:
        self.n += 1
        return self.fake.add_person(f"person{self.n}@example.com", f"Person {self.n}", **kw)

    # Each new record a second later; the clock stays at the last one's time, so more records can
    # change in that same tick.
    def add_records(self, n: int) -> None:
        for _ in range(n):
            self.fake.clock.advance(1000)
            self._person()

    def add_records_sharing_cursor(self, n: int) -> None:
        self.fake.clock.advance(1000)
        for _ in range(n):
            self._person()

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        at = parse_ms(record.data["updated_at"])
        if at < self.fake.clock():
            return 0  # that tick is over
        for _ in range(n):
            self._person(updated_ms=at)
        return n

    def add_bad_record_between_good_ones(self) -> int:
        self.add_records(1)
        self.fake.clock.advance(1000)
        self._person(broken=True)
        self.add_records(1)
        return 2

    def settings_examples(self) -> dict:
        return {"token": "secret"}

    # writes: two persons the CRM holds (PUT) and one new (POST)
    def records_to_write(self, n: int) -> list[OutRecord]:
        out = []
        for i in range(n):
            known = str(self._person()) if i < n - 1 else None
            data = {"email": f"written{self.n}@example.com", "name": f"Written {self.n}"}
            out.append(OutRecord(golden_id=f"g{self.n}", data=data, external_id=known))
            self.n += 1
        return out

    def record_to_refuse(self) -> OutRecord:
        known = str(self._person())
        return OutRecord(golden_id=f"g{self.n}", data={"email": "no-at-sign", "name": "Bad"}, external_id=known)

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        pid = (result and result.external_id) or out.external_id
        person = self.fake.persons.get(int(pid)) if pid else None
        return {"email": person.email, "name": person.name} if person else None

    # transport
    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(n, status, headers)

    def unused_faults(self) -> int:
        return self.fake.unused_faults()

    def requests_sent(self) -> int:
        return len(self.fake.requests)

    def writes_seen(self) -> int:
        return sum(1 for r in self.fake.requests if r.method in ("POST", "PUT", "PATCH", "DELETE"))

    def connector_with_rejected_credentials(self) -> CrmConnector:
        return self.connector(token="wrong-token")


class TestExampleCrm(HttpConnectorChecks):
    @pytest.fixture
    def harness(self) -> CrmHarness:
        return CrmHarness(FakeCrm())
