"""The standard connector test suite, in the manner of singer-sdk's: one line gives a connector
the common checks.

::

    # plugins/myconn/tests/test_standard.py
    from synchub.testing import ConnectorChecks

    class TestMyConnector(ConnectorChecks):
        @pytest.fixture
        def harness(self, tmp_path):
            return MyHarness(tmp_path)   # a ConnectorHarness: builds the connector and its data

A :class:`ConnectorHarness` knows how to build the connector for a test and how to make the
source hold some records, more records, and one bad record among good ones. The checks then
verify what every connector must guarantee:

* its settings models refuse unknown keys and publish a JSON schema;
* every record it reads has its stream's primary key;
* checkpoints come after the records they cover, and resuming from the last checkpoint reads
  nothing old (at-least-once: old records may come again only from the last open group);
* new records after a completed run are read on the next run, resumed from the saved state;
* a bad record is rejected on its own (a ``Rejected`` item or a record the mapping rejects),
  the records around it still arrive.

HTTP connectors use :class:`HttpConnectorChecks` with an :class:`HttpConnectorHarness` and get
the checks of their transport on top: 429 and 5xx are retried and the read completes, a 401 is
reported as an :class:`~synchub.errors.AuthError` (not retried forever), and every fault the test
queued was actually requested (a mock nobody called proves nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from synchub.connector import Checkpoint, Connector, ReadItem, Record, Rejected, Stream
from synchub.errors import AuthError
from synchub.http import HttpClientFactory, LimiterRegistry


def fake_server_http(transport: Any, clock: Any) -> HttpClientFactory:
    """An :class:`HttpClientFactory` for a connector under test against an in-memory fake API:
    requests go to ``transport``; ``clock()`` is the fake's time in epoch ms and
    ``clock.advance(ms)`` moves it, so retries and rate limits wait on the fake's clock instead
    of sleeping, and budgets are not shared with other tests."""
    return HttpClientFactory(
        transport=transport,
        sleep=lambda s: clock.advance(s * 1000),
        clock=lambda: clock() / 1000,  # the limiters see their own sleeps
        registry=LimiterRegistry(),
    )


class ConnectorHarness:
    """What a connector's tests provide to :class:`ConnectorChecks`."""

    #: Name of the stream the checks read.
    stream: str = ""

    def connector(self) -> Connector:
        raise NotImplementedError

    def add_records(self, n: int) -> None:
        """Make the source hold ``n`` more valid records (new ones, not changes)."""
        raise NotImplementedError

    def add_bad_record_between_good_ones(self) -> int:
        """Add two valid records with one unreadable record between them; return how many
        valid records were added (2)."""
        raise NotImplementedError

    def settings_examples(self) -> dict[str, Any]:
        """Valid connection settings, used to check that an unknown key is refused."""
        raise NotImplementedError


def read_all(stream: Stream, state: dict[str, Any] | None) -> tuple[list[Record], list[Rejected], list[Checkpoint], list[ReadItem]]:
    items = list(stream.read(state))
    return (
        [i for i in items if isinstance(i, Record)],
        [i for i in items if isinstance(i, Rejected)],
        [i for i in items if isinstance(i, Checkpoint)],
        items,
    )


def _key(stream: Stream, record: Record) -> str:
    return "|".join(str(record.data.get(k)) for k in stream.primary_key)


class ConnectorChecks:
    """Mix into a test class and provide a ``harness`` fixture returning a :class:`ConnectorHarness`."""

    @pytest.fixture
    def harness(self) -> Iterator[ConnectorHarness]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a 'harness' fixture")

    def test_settings_refuse_unknown_keys(self, harness: ConnectorHarness) -> None:
        cls = type(harness.connector())
        good = harness.settings_examples()
        cls.Settings.model_validate(good)
        with pytest.raises(ValidationError):
            cls.Settings.model_validate({**good, "no_such_setting_xyz": 1})
        for model in (cls.Settings, cls.StreamSettings):
            assert issubclass(model, BaseModel)
            assert model.model_json_schema()["type"] == "object"

    def test_records_have_primary_keys(self, harness: ConnectorHarness) -> None:
        harness.add_records(5)
        stream = harness.connector().streams()[harness.stream]
        assert stream.primary_key, "a readable stream must name its primary key"
        records, _rej, _cps, _ = read_all(stream, None)
        assert len(records) == 5
        for r in records:
            for k in stream.primary_key:
                assert r.data.get(k) not in (None, ""), f"record {r.ref} lacks primary key field {k!r}"

    def test_checkpoints_follow_their_records_and_resume_reads_nothing_old(self, harness: ConnectorHarness) -> None:
        harness.add_records(6)
        stream = harness.connector().streams()[harness.stream]
        _records, _rej, cps, items = read_all(stream, None)
        assert cps, "a stream must checkpoint at least at the end of a read"
        assert isinstance(items[-1], Checkpoint), "the last item of a complete read is a checkpoint"
        again, _rej, _cps, _ = read_all(stream, cps[-1].state)
        assert again == [], "resuming from the final state re-read old records"
        # every intermediate checkpoint is a valid place to resume: nothing before it comes again
        seen: list[str] = []
        for item in items:
            if isinstance(item, Record):
                seen.append(_key(stream, item))
            elif isinstance(item, Checkpoint):
                resumed, _r, _c, _ = read_all(stream, item.state)
                assert not set(seen) & {_key(stream, r) for r in resumed}, "a checkpoint was saved before its records"

    def test_second_run_reads_only_new_records(self, harness: ConnectorHarness) -> None:
        harness.add_records(3)
        stream = harness.connector().streams()[harness.stream]
        first, _rej, cps, _ = read_all(stream, None)
        harness.add_records(2)
        stream = harness.connector().streams()[harness.stream]
        second, _rej, cps2, _ = read_all(stream, cps[-1].state)
        old = {_key(stream, r) for r in first}
        new = [r for r in second if _key(stream, r) not in old]
        assert len(new) == 2, "the records added after the first run were not read"
        assert cps2, "the second run must checkpoint too"
        assert read_all(stream, cps2[-1].state)[0] == []

    def test_a_bad_record_is_rejected_alone(self, harness: ConnectorHarness) -> None:
        good = harness.add_bad_record_between_good_ones()
        stream = harness.connector().streams()[harness.stream]
        records, rejected, _cps, _ = read_all(stream, None)
        assert len(records) == good, "the good records around a bad one must still arrive"
        assert len(rejected) == 1 and rejected[0].reason and rejected[0].ref


class HttpConnectorHarness(ConnectorHarness):
    """A harness for connectors that talk HTTP through :mod:`synchub.http`: it can make the
    server answer the next requests with an error."""

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        """The next ``n`` requests the connector sends get ``status`` (with ``headers``)."""
        raise NotImplementedError

    def unused_faults(self) -> int:
        """How many queued failures were never requested."""
        raise NotImplementedError

    def requests_sent(self) -> int:
        """How many requests reached the server so far."""
        raise NotImplementedError


class HttpConnectorChecks(ConnectorChecks):
    """:class:`ConnectorChecks` plus the transport checks every API connector must pass."""

    def _read_with_fault(self, harness: HttpConnectorHarness, status: int, n: int,
                         headers: dict[str, str] | None = None) -> list[Record]:
        harness.add_records(3)
        stream = harness.connector().streams()[harness.stream]
        before = harness.requests_sent()
        harness.fail_next(n, status, headers)
        records, _rej, cps, _ = read_all(stream, None)
        assert harness.unused_faults() == 0, "the queued failures were not all requested"
        assert harness.requests_sent() - before > n, "the failed request was not sent again"
        assert cps, "a read that recovered must still checkpoint"
        return records

    def test_429_is_retried(self, harness: HttpConnectorHarness) -> None:
        records = self._read_with_fault(harness, 429, 2, {"Retry-After": "0"})
        assert len(records) == 3

    def test_5xx_is_retried(self, harness: HttpConnectorHarness) -> None:
        records = self._read_with_fault(harness, 503, 1)
        assert len(records) == 3

    def test_401_is_an_auth_error(self, harness: HttpConnectorHarness) -> None:
        harness.add_records(1)
        stream = harness.connector().streams()[harness.stream]
        harness.fail_next(50, 401)
        before = harness.requests_sent()
        with pytest.raises(AuthError):
            read_all(stream, None)
        assert harness.requests_sent() - before <= 2, "a 401 must not be retried (at most one token refresh)"
