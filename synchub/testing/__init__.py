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
source hold records: new ones, a group sharing one cursor value, records changed at a cursor
value that was read already, one bad record among good ones; and, for streams that write, records
to write, one the destination refuses, and what the destination holds afterwards. The checks then
verify what every connector must guarantee:

* its settings models refuse unknown keys and publish a JSON schema;
* every record it reads has its stream's primary key;
* checkpoints come after the records they cover, and resuming from one reads nothing old (at
  most the records sharing the cursor value of the last record before it, a group the read could
  not know was complete);
* resuming from *every* checkpoint a read emits loses nothing: the records before the checkpoint
  plus a fresh read from its state hold every record, including records added afterwards at the
  cursor value of the last record before it (an edit landing in the same clock tick);
* a group of records sharing one cursor value, larger than a page, is read completely, on a first
  read and on a resume, and wherever the read checkpoints inside or around it;
* new records after a completed run are read on the next run, resumed from the saved state;
* a bad record is rejected on its own (a ``Rejected`` item or a record the mapping rejects),
  the records around it still arrive;
* ``write`` lands: the destination (the connector's own fake) holds the values written, each
  record gets exactly one :class:`~synchub.connector.WriteResult` (with the destination's id for
  ``upsert`` streams), a refused record is ``ok=False`` and the others still land, and ``plan``
  changes nothing. Read-only streams (``can_write`` False) skip these checks, saying so;
* a round trip through the hub writes nothing back: a :class:`~synchub.engine.Hub` with one
  two-way connection of the connector (the harness's in and out mappings, its settings and its
  fake's HTTP transport, a SQLite store of its own) syncs twice while the source gains records,
  and the destination gets no write for the records it delivered itself (issue 21: echo
  suppression; the harness counts the fake's write requests). Streams that cannot both read and
  write skip it, saying so.

HTTP connectors use :class:`HttpConnectorChecks` with an :class:`HttpConnectorHarness` and get
the checks of their transport on top: 429 and 5xx are retried and the read completes, a 401 is
reported as an :class:`~synchub.errors.AuthError` (not retried forever), every fault the test
queued was actually requested (a mock nobody called proves nothing), and ``check()`` sends a
request and fails when the server refuses the credential.

A check never skips because a harness lacks a method: the method's ``NotImplementedError`` fails
the test. Checks skip, with the reason, only for what the connector cannot do (a read-only stream
has no write path; a snapshot export that replaces its file whole has no per-record refusal; a
stream that only reads or only writes has no round trip).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ValidationError

from synchub.connector import (
    Checkpoint,
    Connector,
    OutRecord,
    ReadItem,
    Record,
    Rejected,
    Stream,
    WriteResult,
)
from synchub.errors import AuthError
from synchub.http import HttpClientFactory, LimiterRegistry

if TYPE_CHECKING:
    from synchub.engine import Hub, RunSummary


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

    # -- cursors ------------------------------------------------------------------------------

    #: The page size the harness configures its connector with (0: the stream does not page).
    #: Keep it small (2-5) so that a few records span pages; the tie checks make a group of
    #: ``2 * page_size + 1`` records share one cursor value.
    page_size: int = 0

    def add_records_sharing_cursor(self, n: int) -> None:
        """Make the source hold ``n`` new valid records that all share one cursor value (one
        update time, as a bulk edit leaves them), later than every record it holds."""
        raise NotImplementedError

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        """Make the source hold ``n`` new valid records whose cursor value equals ``record``'s,
        as if they changed in the same clock tick right after a read delivered ``record``.
        Return how many were added: 0 when the source's clock has moved past that value, so
        nothing can change at it any more (the check then has nothing to add there)."""
        raise NotImplementedError

    # -- writes -------------------------------------------------------------------------------

    #: The stream the write checks use (default: :attr:`stream`).
    write_stream: str = ""

    def records_to_write(self, n: int) -> list[OutRecord]:
        """``n`` records the destination accepts, in the shape of the stream's out mapping, each
        with its own ``golden_id`` and values the destination does not hold yet. A record is new
        (``external_id`` None) or names a record the harness put in the destination first; give
        both kinds when the stream creates and updates, so both requests are checked."""
        raise NotImplementedError

    def record_to_refuse(self) -> OutRecord | None:
        """One record the destination refuses (an invalid value, or one its fake is told to
        refuse). None only for a snapshot stream, which has no per-record refusal."""
        raise NotImplementedError

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        """What the destination holds now for ``out`` (``result`` is the write's answer for it,
        None before a write), in the shape of ``out.data``: the fields the harness can read back,
        at least one; None when it holds no such record. The check compares them with
        ``out.data``."""
        raise NotImplementedError

    # -- round trips through the hub --------------------------------------------------------------

    #: The mapping that reads :attr:`stream` into the hub, and the one that writes the hub's records
    #: back to it: each the name of a mapping the hub finds (one an installed plugin ships, or one
    #: in :attr:`mapping_paths`), or the mapping's YAML text.
    in_mapping: str = ""
    out_mapping: str = ""
    #: Folders (or files) holding the mappings :attr:`in_mapping` and :attr:`out_mapping` name,
    #: besides those of installed plugins (e.g. the package's own ``mappings`` folder).
    mapping_paths: tuple[Path, ...] = ()

    def connection_settings(self) -> dict[str, Any]:
        """The connection's ``settings`` as a config file gives them: the same values
        :meth:`connector` builds its connector with (credentials of the fake included)."""
        raise NotImplementedError

    def stream_settings(self) -> dict[str, Any]:
        """The ``settings`` of :attr:`stream` in a config file, the same :meth:`connector` uses
        (page size, no settle time or lookback, ...)."""
        return {}

    def http(self) -> HttpClientFactory | None:
        """The HTTP client factory the hub gives the connector: the same transport (the fake)
        and clock :meth:`connector` uses. None for connectors that send no HTTP requests."""
        return None

    def writes_seen(self) -> int:
        """How many write requests (creates, updates, deletes: anything but reads) the
        destination has received so far."""
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


#: The connection :func:`round_trip_hub` configures.
ROUND_TRIP_CONNECTION = "under_test"


@contextmanager
def round_trip_hub(harness: ConnectorHarness, folder: Path | None = None) -> Iterator[Hub]:
    """A :class:`~synchub.engine.Hub` with one connection, ``direction: both``, of the harness's
    connector: :attr:`~ConnectorHarness.stream` is read with the harness's in mapping and written
    with its out mapping, the settings are the harness's, the HTTP client is the harness's (its
    fake), and the store is a SQLite file in ``folder`` (a temporary folder, removed afterwards,
    when None). The config goes through :func:`synchub.config.load_config` like a user's.

    The connector class is the one :meth:`ConnectorHarness.connector` builds, whether or not it
    is installed as a plugin (so a copy under test is what the hub runs)."""
    from synchub.config import load_config
    from synchub.engine import Hub

    if folder is None:
        with tempfile.TemporaryDirectory(prefix="synchub-round-trip-") as tmp:
            with round_trip_hub(harness, Path(tmp)) as hub:
                yield hub
        return
    cls = type(harness.connector())
    mappings = folder / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)

    def mapping(text: str, direction: str) -> str:
        if not text.strip():
            raise NotImplementedError(f"the harness names no {direction} mapping ({direction}_mapping)")
        if "\n" not in text.strip():
            return text.strip()  # a name
        name = f"round_trip_{direction}"
        (mappings / f"{name}.yaml").write_text(text, encoding="utf-8")
        return name

    stream = {"mapping": mapping(harness.in_mapping, "in"), "write_mapping": mapping(harness.out_mapping, "out"),
              "settings": harness.stream_settings()}
    config = {
        "store": f"sqlite:///{folder / 'store.db'}",
        "mappings_dir": [str(mappings), *(str(Path(p).resolve()) for p in harness.mapping_paths)],
        "connections": {ROUND_TRIP_CONNECTION: {
            "connector": cls.name, "direction": "both", "settings": harness.connection_settings(),
            "streams": {harness.stream: stream},
        }},
    }
    path = folder / "synchub.yaml"
    path.write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")  # JSON is YAML
    hub = Hub(load_config(path, environ={}, check_plugins=False), http=harness.http())
    hub.connectors = {**hub.connectors, cls.name: cls}
    hub.store.upgrade()
    try:
        yield hub
    finally:
        hub.store.dispose()


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
        # every intermediate checkpoint is a valid place to resume: nothing before it comes again,
        # except the records sharing the cursor value of the last one (a group the read could not
        # know was complete: at-least-once)
        seen: list[str] = []
        group: set[str] = set()
        group_value: Any = object()
        for item in items:
            if isinstance(item, Record):
                seen.append(_key(stream, item))
                if stream.cursor_field:  # without one, no record may come again
                    value = item.data.get(stream.cursor_field)
                    if value != group_value:
                        group, group_value = set(), value
                    group.add(_key(stream, item))
            elif isinstance(item, Checkpoint):
                resumed, _r, _c, _ = read_all(stream, item.state)
                again = (set(seen) - group) & {_key(stream, r) for r in resumed}
                assert not again, f"resuming from {item.state!r} reads {sorted(again)} again: a checkpoint was saved before its records"

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

    # -- resuming from every checkpoint --------------------------------------------------------

    @staticmethod
    def _fresh(harness: ConnectorHarness) -> Stream:
        """The stream of a new connector: every read here is a run of its own."""
        return harness.connector().streams()[harness.stream]

    def _assert_resume_from_every_checkpoint_loses_nothing(
        self, harness: ConnectorHarness, start: dict[str, Any] | None, what: str
    ) -> set[str]:
        """Read from ``start``; then, for each checkpoint of that read in turn, add a record at
        the cursor value of the last record before it and resume from its state in a new run.
        The records before the checkpoint and the resumed read must hold every record of the
        first read and the records just added. Returns the keys the first read delivered."""
        stream = self._fresh(harness)
        _records, _rej, cps, items = read_all(stream, start)
        assert cps, f"{what}: a read must checkpoint at least at its end"
        everything = {_key(stream, i) for i in items if isinstance(i, Record)}
        before: set[str] = set()
        last: Record | None = None
        known_new: set[str] = set()
        number = 0
        for item in items:
            if isinstance(item, Record):
                before.add(_key(stream, item))
                last = item
                continue
            if not isinstance(item, Checkpoint):
                continue
            number += 1
            added = harness.add_records_at_cursor(last, 1) if last is not None else 0
            resumed = {_key(stream, r) for r in read_all(self._fresh(harness), item.state)[0]}
            lost = everything - before - resumed
            assert not lost, (
                f"{what}: resuming from checkpoint {number} of {len(cps)} ({item.state!r}) loses "
                f"{sorted(lost)}: the read yielded them after this checkpoint, but a read resumed "
                "from it does not (a checkpoint saved before its records, or inside a group of "
                "records sharing one cursor value?)"
            )
            fresh = resumed - everything - known_new
            assert len(fresh) >= added, (
                f"{what}: resuming from checkpoint {number} of {len(cps)} ({item.state!r}) misses "
                f"{added - len(fresh)} record(s) changed after it at the cursor value of the last "
                f"record before it ({last.ref if last else None}); a cursor that treats its own "
                "value as done needs a tie-breaker (e.g. (updated_at, id)) or must re-read that value"
            )
            known_new |= fresh
        return everything

    def test_resuming_from_every_checkpoint_loses_nothing(self, harness: ConnectorHarness) -> None:
        harness.add_records(2 * harness.page_size + 2 if harness.page_size else 6)
        self._assert_resume_from_every_checkpoint_loses_nothing(harness, None, "first read")

    def test_records_sharing_a_cursor_value_are_all_read(self, harness: ConnectorHarness) -> None:
        n = 2 * harness.page_size + 1 if harness.page_size else 5
        harness.add_records(1)
        harness.add_records_sharing_cursor(n)
        stream = self._fresh(harness)
        records, _rej, _cps, _ = read_all(stream, None)
        keys = {_key(stream, r) for r in records}
        assert len(keys) == n + 1, (
            f"a first read delivered {len(keys)} of {n + 1} records, {n} of them sharing one cursor "
            f"value across page boundaries (page size {harness.page_size})"
        )
        self._assert_resume_from_every_checkpoint_loses_nothing(harness, None, "records sharing a cursor value")

    def test_records_sharing_a_cursor_value_are_all_read_on_resume(self, harness: ConnectorHarness) -> None:
        n = 2 * harness.page_size + 1 if harness.page_size else 5
        harness.add_records(2)
        stream = self._fresh(harness)
        first, _rej, cps, _ = read_all(stream, None)
        old = {_key(stream, r) for r in first}
        harness.add_records_sharing_cursor(n)
        second, _rej, _cps, _ = read_all(self._fresh(harness), cps[-1].state)
        new = {_key(stream, r) for r in second} - old
        assert len(new) == n, (
            f"a resumed read delivered {len(new)} of the {n} new records sharing one cursor value "
            f"(page size {harness.page_size})"
        )
        self._assert_resume_from_every_checkpoint_loses_nothing(harness, cps[-1].state, "resumed read of a group")

    # -- writing -------------------------------------------------------------------------------

    @staticmethod
    def _writable(harness: ConnectorHarness) -> str:
        name = harness.write_stream or harness.stream
        stream = harness.connector().streams()[name]
        if not stream.can_write:
            pytest.skip(f"stream {name!r} is read-only (can_write is False): no write path to check")
        return name

    @staticmethod
    def _fields(records: list[OutRecord]) -> list[str]:
        return list(dict.fromkeys(k for r in records for k in r.data))

    @staticmethod
    def _results(stream: Stream, batch: list[OutRecord], results: list[WriteResult]) -> dict[str, WriteResult]:
        by: dict[str, WriteResult] = {}
        for res in results:
            assert isinstance(res, WriteResult), f"write() yielded {res!r}, not a WriteResult"
            assert res.golden_id not in by, f"write() answered twice for {res.golden_id}"
            by[res.golden_id] = res
        asked = {r.golden_id for r in batch}
        assert set(by) == asked, (
            f"write() must answer once per record: no result for {sorted(asked - set(by))}, "
            f"results for records not written {sorted(set(by) - asked)}"
        )
        return by

    @staticmethod
    def _assert_held(harness: ConnectorHarness, stream: Stream, out: OutRecord, res: WriteResult) -> None:
        assert res.ok, f"the write of {out.golden_id} failed: {res.error}"
        if stream.write_mode == "upsert":
            assert res.external_id, f"the write of {out.golden_id} returned no external_id (the destination's id)"
        held = harness.held(out, res)
        assert held is not None, f"the destination holds nothing for {out.golden_id} after an ok write"
        compared = set(held) & set(out.data)
        assert compared, f"the harness reads back none of the written fields {sorted(out.data)}"
        wrong = {k: (out.data[k], held[k]) for k in compared if held[k] != out.data[k]}
        assert not wrong, (
            f"the destination does not hold what was written for {out.golden_id} "
            f"(field: (written, held)): {wrong}"
        )

    def test_writes_land_with_one_result_per_record(self, harness: ConnectorHarness) -> None:
        name = self._writable(harness)
        batch = harness.records_to_write(3)
        assert len(batch) == 3 and len({r.golden_id for r in batch}) == 3
        stream = harness.connector().streams()[name]
        for out in batch:
            held = harness.held(out, None)
            assert held is None or any(held.get(k, out.data[k]) != out.data[k] for k in out.data), (
                f"the destination holds {out.golden_id}'s values before the write: the check would prove nothing")
        results = list(stream.write(batch, self._fields(batch)))
        by = self._results(stream, batch, results)
        for out in batch:
            self._assert_held(harness, stream, out, by[out.golden_id])
            if out.external_id and stream.write_mode == "upsert":
                assert by[out.golden_id].external_id == out.external_id, (
                    f"writing {out.golden_id} to {out.external_id} answered with another record "
                    f"({by[out.golden_id].external_id}): an update must change the record it names")

    def test_a_refused_record_fails_alone(self, harness: ConnectorHarness) -> None:
        name = self._writable(harness)
        stream = harness.connector().streams()[name]
        refused = harness.record_to_refuse()
        if refused is None:
            if stream.write_mode == "snapshot":
                pytest.skip(f"stream {name!r} replaces its destination whole (snapshot): no per-record refusal")
            raise AssertionError("the harness gave no record to refuse (only snapshot streams may)")
        good = harness.records_to_write(2)
        batch = [good[0], refused, good[1]]
        by = self._results(stream, batch, list(stream.write(batch, self._fields(batch))))
        res = by[refused.golden_id]
        assert not res.ok and res.error, f"a record the destination refuses was reported ok: {res!r}"
        for out in good:
            self._assert_held(harness, stream, out, by[out.golden_id])

    def test_plan_writes_nothing(self, harness: ConnectorHarness) -> None:
        name = self._writable(harness)
        batch = harness.records_to_write(2)
        stream = harness.connector().streams()[name]
        before = [harness.held(out, None) for out in batch]
        planned = list(stream.plan(batch, self._fields(batch)))
        assert sorted(p.golden_id for p in planned) == sorted(r.golden_id for r in batch), \
            "plan() must answer once per record"
        assert [harness.held(out, None) for out in batch] == before, "plan() changed the destination"

    # -- a round trip through the hub --------------------------------------------------------

    @staticmethod
    def _synced(hub: Hub, what: str) -> tuple[Any, Any]:
        """One ``hub.sync()``: every run must succeed; the counts of the stream's pull and push."""
        runs: list[RunSummary] = hub.sync()
        failed = [(r.connection, r.direction, r.status, r.error) for r in runs if r.status != "succeeded"]
        assert not failed, f"{what}: a run of the hub did not succeed: {failed}"
        pulls = [r for r in runs if r.direction == "in"]
        pushes = [r for r in runs if r.direction == "out"]
        assert len(pulls) == 1 and len(pushes) == 1, f"{what}: the hub ran {[(r.connection, r.direction) for r in runs]}"
        return pulls[0].totals(), pushes[0].totals()

    def test_a_round_trip_through_the_hub_writes_nothing_back(self, harness: ConnectorHarness) -> None:
        name = harness.stream
        stream = harness.connector().streams()[name]
        if not stream.can_read:
            pytest.skip(f"stream {name!r} cannot be read (write-only): nothing it delivers could come back to it")
        if not stream.can_write:
            pytest.skip(f"stream {name!r} is read-only (can_write is False): nothing can be written back to it")
        if stream.write_mode == "snapshot":
            pytest.skip(f"stream {name!r} is replaced whole (snapshot): it is rewritten when any record changes")

        def assert_no_writes(before: int, what: str) -> None:
            got = harness.writes_seen() - before
            assert got == 0, (
                f"{what}: the destination got {got} write request(s), but it holds every value the "
                "hub has: it delivered them itself. Values a destination delivered must never be "
                "written back to it unchanged (echo suppression: OutRecord.previous, external_id)")

        with round_trip_hub(harness) as hub:
            before = harness.writes_seen()
            harness.add_records(3)
            pulled, pushed = self._synced(hub, "first sync")
            assert_no_writes(before, "first sync, 3 records read from the destination")
            assert pulled.read >= 3 and pulled.rejected == 0, (
                f"first sync: the hub read {pulled.read} record(s) and rejected {pulled.rejected} "
                "of the 3 the source holds (does the in mapping fit what the stream delivers?)")
            assert pushed.unchanged == 3 and pushed.written == 0, (
                f"first sync: the push took {pushed.unchanged} of the 3 records for what the destination "
                f"holds already ({pushed.written} written, {pushed.skipped} skipped, {pushed.write_rejected} "
                "refused): does the out mapping write the fields the in mapping reads?")
            before = harness.writes_seen()
            harness.add_records(2)
            pulled, pushed = self._synced(hub, "second sync")
            assert_no_writes(before, "second sync, 2 more records read, 3 unchanged")
            assert pulled.read >= 2 and pushed.unchanged == 2 and pushed.written == 0, (
                f"second sync: read {pulled.read}, the push took {pushed.unchanged} of the 2 new records "
                f"for what the destination holds ({pushed.written} written)")


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

    def connector_with_rejected_credentials(self) -> Connector:
        """The connector built with a credential the server refuses (a wrong token or key)."""
        raise NotImplementedError

    def http(self) -> HttpClientFactory | None:
        """The HTTP client factory for the hub's connector: the fake's transport and clock, as
        :meth:`connector` uses (e.g. :func:`fake_server_http`)."""
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

    def test_check_sends_a_request(self, harness: HttpConnectorHarness) -> None:
        before = harness.requests_sent()
        result = harness.connector().check()
        assert harness.requests_sent() > before, "check() sent no request, so it cannot know that the credentials work"
        assert result.ok, f"check() failed against a server that accepts the credentials: {result.lines}"

    def test_check_fails_with_a_rejected_credential(self, harness: HttpConnectorHarness) -> None:
        connector = harness.connector_with_rejected_credentials()
        before = harness.requests_sent()
        try:
            result = connector.check()
        except AuthError:
            return
        assert harness.requests_sent() > before, "check() sent no request"
        assert not result.ok, f"check() said ok with a credential the server refuses: {result.lines}"
