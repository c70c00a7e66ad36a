"""The incremental cursor of a stream: where the last run got to, and when it is safe to say so.

A stream that reads "everything changed since last time" sorts by a cursor value (a
modification time, a sequence number) and saves the value it has read through. Two things make
that harder than it looks, and :class:`IncrementalCursor` handles both:

* **Ties.** Many records may share one cursor value (a bulk update). A checkpoint saved in the
  middle of such a group, resumed with ``value > saved``, loses the rest of the group; resumed
  with ``value >= saved``, it re-reads all of it, forever if the group is larger than a run.
  The cursor is therefore the pair *(value, id)*: ``id=None`` means "every record with this
  value is done"; an id means "done up to this id", which a source that sorts ties by id can
  resume from. :meth:`IncrementalCursor.observe` offers a checkpoint only where a group ends.
* **Late records.** Search indexes and replicas show some changes late, with a value already
  behind the cursor. ``lookback`` re-reads that much before the saved value on every run; the
  saved position never moves back because of it.

Typical use in a stream's ``read``::

    cursor = IncrementalCursor(state, lookback=timedelta(minutes=5))
    for rec in api_records(since=cursor.query_from()):
        state = cursor.observe(rec["updatedAt"], rec["id"])
        if state is not None:
            yield Checkpoint(state)
        yield Record(rec)
    yield Checkpoint(cursor.finish())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import total_ordering
from typing import Any


def _id_key(ident: Any) -> tuple[int, Any]:
    """Ids compare as numbers when they are numbers ("9" < "10"), else as text."""
    if isinstance(ident, bool):
        return 1, str(ident)
    if isinstance(ident, (int, float)):
        return 0, ident
    text = str(ident)
    try:
        return 0, int(text)
    except ValueError:
        return 1, text


def _comparable(value: Any) -> Any:
    """Naive datetimes are taken as UTC, so saved and read values always compare."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@total_ordering
@dataclass(frozen=True)
class CursorPosition:
    """A place in ``(value, id)`` order. ``id=None``: after every record with ``value``."""

    value: Any
    id: Any = None

    def _key(self) -> tuple[Any, int, tuple[int, Any]]:
        if self.id is None:
            return _comparable(self.value), 1, (0, 0)
        return _comparable(self.value), 0, _id_key(self.id)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, CursorPosition):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CursorPosition):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def group_done(self) -> bool:
        """True when every record with this value is behind the position."""
        return self.id is None


def parse_value(value: Any) -> Any:
    """Default reading of a saved value: ISO-8601 text becomes an aware datetime, the rest
    stays as it is (numbers, opaque text)."""
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return value


def dump_value(value: Any) -> Any:
    """Default writing of a value into the state: datetimes as ISO-8601 text (UTC)."""
    if isinstance(value, datetime):
        value = _comparable(value)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return value


class CursorOrderError(ValueError):
    """Records arrived out of cursor order: checkpoints would be wrong, so the read stops."""


class IncrementalCursor:
    """Keeps a stream's position ``(value, id)`` while it reads, and its saved state.

    ``state`` is what the last run saved (``{value_key: ..., id_key: ...}``, or None);
    ``start`` is where a first run starts (None: from the beginning). ``lookback`` (a
    ``timedelta`` for time values, a number for numeric ones) is subtracted from the saved value
    for the query, never from the saved position.

    Values read from the state and passed to :meth:`observe` go through ``parse`` (default:
    ISO-8601 text becomes a datetime), values written to the state through ``dump``.

    ``ties_ordered``: the source sorts records with equal values by id and can resume inside a
    group (``value = v and id > last``); then :meth:`state` may stop inside a group. Otherwise
    (the default, and the safe choice) a state names only complete groups.

    :meth:`observe` each record *before* yielding it; a returned state is a checkpoint to yield
    before that record. :meth:`finish` is the state after a complete read.
    """

    def __init__(
        self,
        state: Mapping[str, Any] | None = None,
        *,
        value_key: str = "value",
        id_key: str = "id",
        start: Any = None,
        lookback: timedelta | float | int | None = None,
        ties_ordered: bool = False,
        parse: Callable[[Any], Any] = parse_value,
        dump: Callable[[Any], Any] = dump_value,
    ):
        self.value_key = value_key
        self.id_key = id_key
        self.lookback = lookback
        self.ties_ordered = ties_ordered
        self._parse = parse
        self._dump = dump
        self.saved: CursorPosition | None = None
        if state and state.get(value_key) is not None:
            self.saved = CursorPosition(parse(state[value_key]), state.get(id_key))
        self.start = start
        #: The furthest position whose records are all read (never behind ``saved``).
        self.done: CursorPosition | None = self.saved
        #: The last record observed, and how many records share its value so far.
        self.last: CursorPosition | None = None
        self._before_last: CursorPosition | None = None
        self.pending = 0

    # -- where to read from

    def query_from(self) -> Any:
        """The value to ask the source for records *from* (inclusive): the saved value minus
        the lookback, or ``start`` on a first run (None: everything)."""
        if self.saved is None:
            return self.start
        value = self.saved.value
        if self.lookback:
            value = _comparable(value) - self.lookback
        return value

    def resume_after(self) -> CursorPosition | None:
        """The saved position, for keyset sources (``(value, id) > position``)."""
        return self.saved

    def already_read(self, value: Any, ident: Any) -> bool:
        """True for a record at or before the saved position: a re-read (of the lookback, or
        of a ``>=`` query's first group) that a stream may skip."""
        return self.saved is not None and CursorPosition(self._parse(value), ident) <= self.saved

    # -- while reading

    def observe(self, value: Any, ident: Any = None) -> dict[str, Any] | None:
        """Record that the record ``(value, ident)`` is about to be yielded.

        Returns a state when the records observed before it close a group of equal values:
        yield ``Checkpoint(state)`` before the record. Never returns a state inside a group.
        Raises :class:`CursorOrderError` when values go backwards (the source did not sort).
        """
        if value is None:
            raise CursorOrderError("a record without a cursor value cannot be placed")
        value = self._parse(value)
        here = CursorPosition(value, ident)
        previous = self.last
        if previous is not None:
            if _comparable(value) < _comparable(previous.value):
                raise CursorOrderError(f"cursor went back from {previous.value!r} to {value!r}")
            if (
                self.ties_ordered
                and _comparable(value) == _comparable(previous.value)
                and ident is not None
                and previous.id is not None
                and _id_key(ident) < _id_key(previous.id)
            ):
                raise CursorOrderError(
                    f"ids of equal values out of order: {ident!r} after {previous.id!r}"
                )
        self.last = here
        self._before_last = previous
        if previous is not None and _comparable(value) > _comparable(previous.value):
            self.pending = 1
            closed = CursorPosition(previous.value)
            if self.done is None or closed > self.done:
                self.done = closed
                return self._state(self.done)
            return None
        self.pending += 1
        return None

    def state(self) -> dict[str, Any] | None:
        """The state safe to save now, for the records observed so far minus the last one
        (which the caller may not have yielded yet): the last complete group, or with
        ``ties_ordered`` the last record before the current one. None: nothing to save yet."""
        best = self.done
        before = self._before_last
        if self.ties_ordered and before is not None and before.id is not None:
            # The source resumes inside a group by id: done up to the record before the last.
            if best is None or before > best:
                best = before
        return None if best is None else self._state(best)

    def finish(self) -> dict[str, Any] | None:
        """The state after a complete read: the last group is done. None when nothing was
        ever read or saved."""
        if self.last is not None:
            closed = CursorPosition(self.last.value)
            if self.done is None or closed > self.done:
                self.done = closed
        return None if self.done is None else self._state(self.done)

    def _state(self, position: CursorPosition) -> dict[str, Any]:
        return {self.value_key: self._dump(position.value), self.id_key: position.id}

    def __repr__(self) -> str:
        return f"IncrementalCursor(saved={self.saved!r}, done={self.done!r}, last={self.last!r})"


def merge_states(
    a: Mapping[str, Any] | None,
    b: Mapping[str, Any] | None,
    *,
    value_key: str = "value",
    id_key: str = "id",
    parse: Callable[[Any], Any] = parse_value,
) -> dict[str, Any] | None:
    """The later of two cursor states (e.g. two workers' checkpoints): a cursor only moves on.
    Keys other than the cursor's come from the later state."""
    if not a or a.get(value_key) is None:
        return dict(b) if b else None
    if not b or b.get(value_key) is None:
        return dict(a)
    pa = CursorPosition(parse(a[value_key]), a.get(id_key))
    pb = CursorPosition(parse(b[value_key]), b.get(id_key))
    return dict(b) if pb > pa else dict(a)


__all__ = [
    "CursorOrderError",
    "CursorPosition",
    "IncrementalCursor",
    "dump_value",
    "merge_states",
    "parse_value",
]
