"""An in-memory Example CRM for the connector's tests, behind an ``httpx.MockTransport``.

The API it serves (every request needs ``Authorization: Bearer <token>``, else 401):

* ``GET /me``: who the token belongs to.
* ``GET /persons?updated_since=<ISO time>&limit=<n>``: persons changed at or after that time
  (inclusive), oldest first, ties by id, at most ``limit`` (1-100) a page; ``{"persons": [...],
  "next_cursor": "..." | null}``. ``GET /persons?cursor=<next_cursor>`` is the next page: the
  cursor is a position (update time, id), so records changed meanwhile move to the end and
  nothing shifts.
* ``POST /persons`` creates a person from ``{"email", "name"}``; ``PUT /persons/{id}`` replaces
  a person's fields. Both answer with the person; an address without ``@`` is a 422.

Times are ISO 8601 with milliseconds. ``fake.clock()`` is the time in epoch milliseconds; it
moves only when a test moves it (``fake.clock.advance(ms)``) or a client sleeps on it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class FakeClock:
    def __init__(self, ms: int = START_MS):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: float) -> int:
        self.ms += int(ms)
        return self.ms


@dataclass
class Person:
    id: int
    email: str
    name: str
    updated_ms: int
    broken: bool = False  # answered with an unreadable updated_at

    def render(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name,
                "updated_at": "last tuesday" if self.broken else iso(self.updated_ms)}


@dataclass
class FakeCrm:
    token: str = "crm-test-token"
    clock: FakeClock = field(default_factory=FakeClock)
    persons: dict[int, Person] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Queued failures: [remaining, status, headers]
    faults: list[list[Any]] = field(default_factory=list)
    next_id: int = 1

    # -- what tests use --------------------------------------------------------------------------

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_person(self, email: str, name: str = "", *, updated_ms: int | None = None, broken: bool = False) -> int:
        person = Person(self.next_id, email, name, self.clock() if updated_ms is None else updated_ms, broken)
        self.persons[person.id] = person
        self.next_id += 1
        return person.id

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.faults.append([n, status, headers or {}])

    def unused_faults(self) -> int:
        return sum(f[0] for f in self.faults)

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fault in self.faults:
            if fault[0] > 0:
                fault[0] -= 1
                return httpx.Response(fault[1], headers=fault[2], json={"error": f"injected {fault[1]}"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"error": "invalid token"})
        path, method = request.url.path, request.method
        if path == "/v1/me" and method == "GET":
            return httpx.Response(200, json={"id": "u1", "name": "Test User"})
        if path == "/v1/persons" and method == "GET":
            return self._list(request.url.params)
        if path == "/v1/persons" and method == "POST":
            return self._save(None, json.loads(request.content))
        if path.startswith("/v1/persons/") and method == "PUT":
            pid = path.rsplit("/", 1)[1]
            if not pid.isdigit() or int(pid) not in self.persons:
                return httpx.Response(404, json={"error": f"no person {pid}"})
            return self._save(self.persons[int(pid)], json.loads(request.content))
        if path.startswith("/v1/persons"):
            return httpx.Response(405, json={"error": f"{method} is not allowed on {path}"})
        return httpx.Response(404, json={"error": f"no such endpoint {path}"})

    def _list(self, params: httpx.QueryParams) -> httpx.Response:
        if "cursor" in params:
            since, after = json.loads(base64.urlsafe_b64decode(params["cursor"]))
            limit = after.pop()
        else:
            since = parse_ms(params["updated_since"]) if "updated_since" in params else None
            after, limit = None, int(params.get("limit", 100))
        if not 1 <= limit <= 100:
            return httpx.Response(400, json={"error": "limit is 1 to 100"})
        matching = sorted((p for p in self.persons.values() if since is None or p.updated_ms >= since),
                          key=lambda p: (p.updated_ms, p.id))
        if after is not None:
            matching = [p for p in matching if (p.updated_ms, p.id) > tuple(after)]
        page = matching[:limit]
        cursor = None
        if len(matching) > limit:
            last = page[-1]
            cursor = base64.urlsafe_b64encode(json.dumps([since, [last.updated_ms, last.id, limit]]).encode()).decode()
        return httpx.Response(200, json={"persons": [p.render() for p in page], "next_cursor": cursor})

    def _save(self, person: Person | None, body: dict[str, Any]) -> httpx.Response:
        email = str(body.get("email") or "")
        if "@" not in email:
            return httpx.Response(422, json={"error": f"email {email!r} is invalid"})
        if person is None:
            person = self.persons[self.add_person(email)]
        person.email, person.name, person.updated_ms = email, str(body.get("name") or ""), self.clock()
        return httpx.Response(200, json=person.render())
