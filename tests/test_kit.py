"""Helpers for connector authors (synchub.kit): paginators, the incremental cursor, authenticators.

Every HTTP exchange goes through ``httpx.MockTransport``: the helpers are tested the way a
connector uses them, through a client (and, where it matters, an ``ApiSession``)."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import pytest

from synchub.errors import AuthError
from synchub.http import ApiSession, LimiterRegistry, RateLimitPolicy, account_key, build_client
from synchub.kit import (
    ApiKeyHeaderAuth,
    ApiKeyQueryAuth,
    BasicAuth,
    BearerAuth,
    CursorOrderError,
    CursorPaginator,
    CursorPosition,
    IncrementalCursor,
    LinkHeaderPaginator,
    OAuth2RefreshAuth,
    OffsetPaginator,
    PaginationError,
    SearchAfterPaginator,
    SearchPage,
    SearchRequest,
    merge_states,
    next_link,
    parse_link_header,
)
from synchub.redact import redact

BASE = "https://api.example.com"


def client(handler) -> httpx.Client:
    return httpx.Client(base_url=BASE, transport=httpx.MockTransport(handler))


def params_of(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params.multi_items())


# --------------------------------------------------------------------------- offset paging


def test_offset_paginator_reads_to_total_and_keeps_the_callers_params():
    data = [{"id": i} for i in range(7)]
    seen: list[dict[str, str]] = []

    def handler(request):
        p = params_of(request)
        seen.append(p)
        off, count = int(p["offset"]), int(p["count"])
        return httpx.Response(200, json={"members": data[off : off + count], "total_items": len(data)})

    pager = OffsetPaginator(items_key="members", page_size=3, limit_param="count", total_key="total_items")
    pages = list(pager.pages(client(handler), "/lists/x/members", {"status": "subscribed"}))
    assert [p.offset for p in pages] == [0, 3, 6]
    assert [x["id"] for p in pages for x in p.items] == list(range(7))
    assert len(seen) == 3, "no request after the total is reached"
    assert list(seen[0]) == ["status", "count", "offset"]


def test_offset_paginator_without_total_stops_at_an_empty_last_page():
    data = list(range(6))  # two full pages: only an empty third page tells the end
    calls = []

    def handler(request):
        off = int(params_of(request)["offset"])
        calls.append(off)
        return httpx.Response(200, json={"results": data[off : off + 3]})

    items = list(OffsetPaginator(page_size=3).items(client(handler), "/things"))
    assert items == data
    assert calls == [0, 3, 6]


def test_offset_paginator_stops_at_a_short_page_without_total():
    def handler(request):
        off = int(params_of(request)["offset"])
        return httpx.Response(200, json={"results": list(range(5))[off : off + 3]})

    assert list(OffsetPaginator(page_size=3).items(client(handler), "/t")) == [0, 1, 2, 3, 4]


def test_offset_paginator_steps_back_when_the_total_shrinks():
    """Two items leave the result set after the first page: the ones after them moved up, so
    the next page is asked from two places earlier and nothing is skipped."""
    rows = [f"r{i}" for i in range(8)]
    state = {"calls": 0}

    def handler(request):
        state["calls"] += 1
        if state["calls"] == 2:
            del rows[0:2]  # r0, r1 changed meanwhile and left the window
        off = int(params_of(request)["offset"])
        return httpx.Response(200, json={"results": rows[off : off + 3], "total_items": len(rows)})

    pager = OffsetPaginator(page_size=3, total_key="total_items", step_back_on_shrink=True)
    got = list(pager.items(client(handler), "/m"))
    assert set(got) >= {f"r{i}" for i in range(2, 8)}, "nobody skipped"
    assert got[:3] == ["r0", "r1", "r2"]


def test_offset_paginator_through_an_api_session():
    def handler(request):
        off = int(params_of(request)["offset"])
        return httpx.Response(200, json={"results": list(range(4))[off : off + 2], "total": 4})

    c = build_client(BASE, allowed_hosts=("api.example.com",), transport=httpx.MockTransport(handler))
    s = ApiSession(c, registry=LimiterRegistry(), sleep=lambda _: None)
    pager = OffsetPaginator(page_size=2, total_key="total")
    assert list(pager.items(s, "/x")) == [0, 1, 2, 3]
    assert s.request_count == 2


# --------------------------------------------------------------------------- cursor paging


def test_cursor_paginator_follows_after_and_crosses_an_empty_page():
    pages = {
        None: {"results": [1, 2], "paging": {"next": {"after": "a"}}},
        "a": {"results": [], "paging": {"next": {"after": "b"}}},  # filtered page: go on
        "b": {"results": [3]},
    }
    seen = []

    def handler(request):
        p = params_of(request)
        seen.append(p)
        return httpx.Response(200, json=pages[p.get("after")])

    params = {"archived": "true", "limit": 100}
    items = list(CursorPaginator().items(client(handler), "/crm/v3/objects/contacts", params))
    assert items == [1, 2, 3]
    assert seen[0] == {"archived": "true", "limit": "100"}
    assert list(seen[1]) == ["archived", "limit", "after"]


def test_cursor_paginator_refuses_a_repeated_cursor():
    def handler(request):
        return httpx.Response(200, json={"data": [1], "next": "same"})

    pager = CursorPaginator(items_key="data", next_cursor="next", cursor_param="cursor")
    with pytest.raises(PaginationError):
        list(pager.items(client(handler), "/loop"))


def test_cursor_paginator_with_a_function_and_page_size():
    def handler(request):
        p = params_of(request)
        assert p["page_size"] == "2"
        n = int(p.get("page", "0"))
        return httpx.Response(200, json={"items": [n], "more": n < 2})

    pager = CursorPaginator(
        items_key="items",
        next_cursor=lambda body: body["items"][0] + 1 if body["more"] else None,
        cursor_param="page",
        page_size=2,
        limit_param="page_size",
    )
    assert list(pager.items(client(handler), "/p")) == [0, 1, 2]


# --------------------------------------------------------------------------- Link header


def test_parse_link_header_several_links_rels_and_quoted_params():
    value = (
        '<https://api.example.com/items?page=2&per_page=50>; rel="next"; title="Page, two; of \\"many\\"", '
        '<https://api.example.com/items?page=9>; REL="last  prev" ; type=application/json,'
        "</items?page=1&a=1,2>; rel=first; hreflang=de; title*=UTF-8'de'n%C3%A4chste, "
        "garbage without brackets, <https://x.test/y>; rel=next; rel=ignored"
    )
    links = parse_link_header(value)
    assert [link.url for link in links] == [
        "https://api.example.com/items?page=2&per_page=50",
        "https://api.example.com/items?page=9",
        "/items?page=1&a=1,2",
        "https://x.test/y",
    ]
    assert links[0].rels == {"next"}
    assert links[0].params["title"] == 'Page, two; of "many"'
    assert links[1].rels == {"last", "prev"}
    assert links[1].params["type"] == "application/json"
    assert links[2].rels == {"first"} and links[2].params["title"] == "nächste"
    assert links[3].params["rel"] == "next", "only the first rel counts"
    assert parse_link_header("") == [] and parse_link_header(None) == []


def test_next_link_resolves_relative_urls_across_several_headers():
    request = httpx.Request("GET", "https://api.example.com/v1/items?page=1")
    response = httpx.Response(
        200,
        headers=[("Link", '</v1/items?page=3>; rel="last"'), ("Link", '<items?page=2>; rel="prev next"')],
        request=request,
    )
    assert next_link(response) == "https://api.example.com/v1/items?page=2"
    assert next_link(response, "LAST") == "https://api.example.com/v1/items?page=3"
    assert next_link(response, "first") is None


def test_link_header_paginator_follows_next_and_stops_without_it():
    calls = []

    def handler(request):
        calls.append(str(request.url))
        page = int(request.url.params.get("page", "1"))
        links = [f'<{BASE}/items?page={page + 1}&per_page=2>; rel="next"'] if page < 3 else []
        links.append(f'<{BASE}/items?page=3&per_page=2>; rel="last"')
        body = [] if page == 3 else [page * 10, page * 10 + 1]  # the last page is empty
        return httpx.Response(200, json=body, headers={"Link": ", ".join(links)})

    pager = LinkHeaderPaginator(page_size=2, limit_param="per_page")
    assert list(pager.items(client(handler), "/items", {"sort": "id"})) == [10, 11, 20, 21]
    assert calls == [
        f"{BASE}/items?sort=id&per_page=2",
        f"{BASE}/items?page=2&per_page=2",
        f"{BASE}/items?page=3&per_page=2",
    ]


def test_link_header_paginator_refuses_a_link_to_a_page_already_read():
    def handler(request):
        return httpx.Response(200, json=[1], headers={"Link": f'<{BASE}/items?page=1>; rel="next"'})

    with pytest.raises(PaginationError):
        list(LinkHeaderPaginator().items(client(handler), "/items?page=1"))


def test_link_header_paginator_next_link_to_another_host_is_refused_by_the_session():
    def handler(request):
        return httpx.Response(200, json=[1], headers={"Link": '<https://evil.test/x>; rel="next"'})

    c = build_client(BASE, allowed_hosts=("api.example.com",), transport=httpx.MockTransport(handler))
    s = ApiSession(c, registry=LimiterRegistry(), sleep=lambda _: None)
    from synchub.errors import ConfigError

    with pytest.raises(ConfigError):
        list(LinkHeaderPaginator().items(s, "/items"))


# --------------------------------------------------------------------------- search-after


class FakeSearch:
    """A search endpoint sorted by (updatedAt, id) whose page token is an offset and whose
    result window is capped, like HubSpot's CRM search.

    ``strict``: it filters by the whole key (``(ts, id) > after``); otherwise only by value
    (``ts >= after.ts``), as many APIs can."""

    def __init__(self, rows, *, window=10, strict=True):
        self.rows = sorted(rows)
        self.window = window
        self.strict = strict
        self.requests: list[SearchRequest] = []

    def __call__(self, req: SearchRequest) -> SearchPage:
        self.requests.append(req)
        if req.after is None:
            hits = self.rows
        elif self.strict:
            hits = [r for r in self.rows if r > req.after]
        else:
            hits = [r for r in self.rows if r[0] >= req.after[0]]
        offset = int(req.token or 0)
        assert offset + req.page_size <= self.window, "asked past the result window"
        page = hits[offset : offset + req.page_size]
        more = offset + req.page_size < len(hits)
        return SearchPage([{"ts": t, "id": i} for t, i in page], str(offset + req.page_size) if more else None)


def key(item):
    return item["ts"], item["id"]


def test_search_after_restarts_before_the_window_cap_and_reads_everything_once():
    rows = [(t // 4, t) for t in range(37)]  # groups of 4 equal timestamps
    search = FakeSearch(rows, window=10)
    pager = SearchAfterPaginator(search, key=key, page_size=3, window=10)
    got = [key(x) for x in pager.items()]
    assert got == sorted(rows)
    assert pager.queries > 3
    starts = [r for r in search.requests if r.token is None]
    assert len(starts) == pager.queries and all(r.after is not None for r in starts[1:])


def test_search_after_a_tie_group_spanning_pages_and_queries_on_a_value_only_filter():
    """Ten records share one timestamp; the API filters ``ts >= after`` only. The id breaks
    the tie: restarts skip what was read and nobody is lost or read twice."""
    rows = [(1, 1), (1, 2)] + [(5, i) for i in range(10, 20)] + [(7, 30), (8, 31)]
    search = FakeSearch(rows, window=12, strict=False)
    pager = SearchAfterPaginator(search, key=key, page_size=4, window=12)
    got = [key(x) for x in pager.items()]
    assert got == sorted(rows)
    assert pager.skipped > 0


def test_search_after_refuses_to_loop_when_a_tie_group_fills_the_window():
    rows = [(5, i) for i in range(30)]
    pager = SearchAfterPaginator(FakeSearch(rows, window=6, strict=False), key=key, page_size=3, window=6)
    with pytest.raises(PaginationError):
        list(pager.items())


def test_search_after_starts_after_a_saved_key_and_stops_at_an_empty_last_page():
    rows = [(1, 1), (2, 2), (3, 3)]
    search = FakeSearch(rows, window=100)
    pager = SearchAfterPaginator(search, key=key, page_size=2, window=100, start=(1, 1))
    assert [key(x) for x in pager.items()] == [(2, 2), (3, 3)]
    assert search.requests[0].after == (1, 1)


# --------------------------------------------------------------------------- incremental cursor


def read(cursor, records):
    """What a stream yields: records and checkpoints, in order."""
    out = []
    for value, ident in records:
        state = cursor.observe(value, ident)
        if state is not None:
            out.append(("cp", state["value"], state["id"]))
        out.append(("rec", value, ident))
    final = cursor.finish()
    out.append(("cp", final["value"], final["id"]))
    return out


def test_cursor_checkpoints_only_between_groups_of_equal_values():
    out = read(IncrementalCursor(), [(1, "a"), (2, "b"), (2, "c"), (2, "d"), (3, "e")])
    assert out == [
        ("rec", 1, "a"),
        ("cp", 1, None),
        ("rec", 2, "b"),
        ("rec", 2, "c"),
        ("rec", 2, "d"),
        ("cp", 2, None),
        ("rec", 3, "e"),
        ("cp", 3, None),
    ]


def test_cursor_tie_group_spanning_pages_is_never_split_by_a_checkpoint():
    cursor = IncrementalCursor()
    page1, page2 = [(10, 1), (20, 2), (20, 3)], [(20, 4), (20, 5), (30, 6)]
    states = [cursor.observe(v, i) for v, i in page1]
    # End of page 1, inside the group of 20: the safe state is still "all of 10".
    assert cursor.state() == {"value": 10, "id": None}
    states += [cursor.observe(v, i) for v, i in page2]
    assert [s for s in states if s] == [{"value": 10, "id": None}, {"value": 20, "id": None}]
    # Resuming from any state offered reads nothing twice and loses nothing of the group.
    resumed = IncrementalCursor({"value": 10, "id": None})
    rest = [(v, i) for v, i in page1 + page2 if not resumed.already_read(v, i)]
    assert rest == [(20, 2), (20, 3), (20, 4), (20, 5), (30, 6)]


def test_cursor_ties_ordered_may_stop_inside_a_group_by_id():
    cursor = IncrementalCursor(ties_ordered=True)
    for v, i in [(1, "9"), (2, "9"), (2, "10"), (2, "11")]:
        cursor.observe(v, i)
    # Ids compare as numbers: "10" after "9". Done through (2, "10"); (2, "11") not yet yielded.
    assert cursor.state() == {"value": 2, "id": "10"}
    with pytest.raises(CursorOrderError):
        cursor.observe(2, "3")


def test_cursor_lookback_rereads_but_never_moves_the_saved_position_back():
    saved = {"value": "2026-03-01T12:00:00Z", "id": None}
    cursor = IncrementalCursor(saved, lookback=timedelta(minutes=5))
    assert cursor.query_from() == datetime(2026, 3, 1, 11, 55, tzinfo=timezone.utc)
    t = datetime(2026, 3, 1, 11, 56, tzinfo=timezone.utc)
    # Re-read records of the lookback window close groups behind the saved position: no
    # checkpoint moves back.
    assert cursor.observe(t, "1") is None
    assert cursor.already_read(t, "1")
    assert cursor.observe(t + timedelta(minutes=1), "2") is None
    later = datetime(2026, 3, 1, 12, 3, tzinfo=timezone.utc)
    assert cursor.observe(later, "3") is None
    assert cursor.state() == saved
    assert not cursor.already_read(later, "3")
    assert cursor.finish() == {"value": "2026-03-01T12:03:00Z", "id": None}


def test_cursor_numeric_lookback_start_and_first_run():
    assert IncrementalCursor(start=100).query_from() == 100
    assert IncrementalCursor().query_from() is None
    assert IncrementalCursor({"ts": 5000, "id": "7"}, value_key="ts", lookback=300).query_from() == 4700
    cursor = IncrementalCursor({"ts": 5000, "id": "7"}, value_key="ts")
    assert cursor.resume_after() == CursorPosition(5000, "7")
    assert cursor.finish() == {"ts": 5000, "id": "7"}, "nothing read: the saved state stays"
    assert IncrementalCursor().finish() is None


def test_cursor_refuses_values_out_of_order():
    cursor = IncrementalCursor()
    cursor.observe(5, "a")
    with pytest.raises(CursorOrderError):
        cursor.observe(4, "b")
    with pytest.raises(CursorOrderError):
        cursor.observe(None, "c")


def test_cursor_positions_compare_and_states_merge():
    assert CursorPosition(1, "9") < CursorPosition(1, "10") < CursorPosition(1) < CursorPosition(2, "1")
    assert CursorPosition(1, "abc") > CursorPosition(1, "99"), "text ids after numeric ones"
    naive, aware = datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert CursorPosition(naive) == CursorPosition(aware)
    a = {"value": "2026-01-01T00:00:00Z", "id": "5", "swept_at": "x"}
    b = {"value": "2026-01-01T00:00:00Z", "id": None}
    assert merge_states(a, b) == b
    assert merge_states(b, a) == b
    assert merge_states(None, a) == a and merge_states(a, {}) == a
    assert merge_states(None, None) is None


# --------------------------------------------------------------------------- simple authenticators


def echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"headers": dict(request.headers), "params": params_of(request)})


def test_api_key_in_a_header_and_bearer_and_masked_repr():
    c = httpx.Client(base_url=BASE, transport=httpx.MockTransport(echo), auth=ApiKeyHeaderAuth("k-123456", header="X-Api-Key"))
    assert c.get("/x").json()["headers"]["x-api-key"] == "k-123456"
    prefixed = ApiKeyHeaderAuth("k-abcdef", header="Authorization", prefix="Token")
    c = httpx.Client(base_url=BASE, transport=httpx.MockTransport(echo), auth=prefixed)
    assert c.get("/x").json()["headers"]["authorization"] == "Token k-abcdef"
    bearer = BearerAuth("tok-987654")
    c = httpx.Client(base_url=BASE, transport=httpx.MockTransport(echo), auth=bearer)
    assert c.get("/x").json()["headers"]["authorization"] == "Bearer tok-987654"
    assert "tok-987654" not in repr(bearer) and "k-123456" not in repr(ApiKeyHeaderAuth("k-123456"))
    assert redact("sent tok-987654") == "sent ***"
    with pytest.raises(ValueError):
        BearerAuth("")


def test_api_key_in_the_query_keeps_other_params():
    auth = ApiKeyQueryAuth("qk-55555555", param="apikey")
    c = httpx.Client(base_url=BASE, transport=httpx.MockTransport(echo), auth=auth)
    assert c.get("/x", params={"page": 2}).json()["params"] == {"page": "2", "apikey": "qk-55555555"}
    assert "qk-55555555" not in repr(auth)
    assert redact(f"{BASE}/x?apikey=qk-55555555") == f"{BASE}/x?apikey=***"


def test_basic_auth_header_secrets_and_account_fingerprint():
    auth = BasicAuth("synchub", "key-0123456789-us6")
    c = build_client(BASE, allowed_hosts=("api.example.com",), transport=httpx.MockTransport(echo), auth=auth)
    header = c.get("/x").json()["headers"]["authorization"]
    assert header == httpx.BasicAuth("synchub", "key-0123456789-us6")._auth_header
    assert redact(header) == "Basic ***"
    assert "key-0123456789-us6" not in repr(auth)
    s = ApiSession(c, registry=LimiterRegistry(), sleep=lambda _: None)
    assert s.account == auth.account_fingerprint() == account_key("synchub", "key-0123456789-us6")
    other = ApiSession(
        build_client(BASE, allowed_hosts=("api.example.com",), auth=BearerAuth("tok-aaaabbbb")),
        registry=LimiterRegistry(),
    )
    assert other.account == account_key("tok-aaaabbbb") != s.account


# --------------------------------------------------------------------------- OAuth 2 refresh


class TokenServer:
    """A token endpoint and an API on one mock transport. The API accepts only the current
    access token; ``reject_all`` makes it refuse every token (revoked app)."""

    def __init__(self, *, expires_in=3600, delay=0.0, rotate=True):
        self.expires_in = expires_in
        self.delay = delay
        self.rotate = rotate
        self.issued = 0
        self.current: str | None = None
        self.refresh_token = "rt-initial-0000"
        self.forms: list[dict[str, list[str]]] = []
        self.api_calls: list[str | None] = []
        self.reject_all = False
        self.refuse_refresh = False
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = parse_qs(request.content.decode())
            with self.lock:
                self.forms.append(form)
            if self.delay:
                time.sleep(self.delay)
            if self.refuse_refresh or form["refresh_token"] != [self.refresh_token]:
                return httpx.Response(400, json={"error": "invalid_grant", "echo": form["refresh_token"][0]})
            with self.lock:
                self.issued += 1
                self.current = f"at-{self.issued:04d}-secret"
                body = {"access_token": self.current, "expires_in": self.expires_in, "token_type": "bearer"}
                if self.rotate:
                    self.refresh_token = f"rt-rotated-{self.issued:04d}"
                    body["refresh_token"] = self.refresh_token
            return httpx.Response(200, json=body)
        auth = request.headers.get("authorization")
        with self.lock:
            self.api_calls.append(auth)
        if self.reject_all or auth != f"Bearer {self.current}":
            return httpx.Response(401, json={"message": "expired"})
        return httpx.Response(200, json={"ok": True})


class Clock:
    def __init__(self):
        self.t = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.t


def oauth(server: TokenServer, clock: Clock | None = None, **kw) -> tuple[httpx.Client, OAuth2RefreshAuth]:
    transport = httpx.MockTransport(server)
    auth = OAuth2RefreshAuth(
        f"{BASE}/oauth/token",
        client_id="client-1",
        client_secret="cs-topsecret-42",
        refresh_token=server.refresh_token,
        client=httpx.Client(transport=transport),
        now=clock or Clock(),
        **kw,
    )
    return httpx.Client(base_url=BASE, transport=transport, auth=auth), auth


def test_oauth_first_request_fetches_a_token_and_rotated_refresh_tokens_are_kept():
    server = TokenServer()
    grants = []
    c, auth = oauth(server, on_refresh=grants.append)
    assert c.get("/api").status_code == 200
    assert server.forms[0] == {
        "grant_type": ["refresh_token"],
        "client_id": ["client-1"],
        "client_secret": ["cs-topsecret-42"],
        "refresh_token": ["rt-initial-0000"],
    }
    assert [g.refresh_token for g in grants] == ["rt-rotated-0001"]
    assert c.get("/api").status_code == 200 and auth.refresh_count == 1


def test_oauth_refreshes_before_expiry():
    server, clock = TokenServer(expires_in=600), Clock()
    c, auth = oauth(server, clock)
    c.get("/api")
    clock.t += timedelta(minutes=4)
    c.get("/api")
    assert auth.refresh_count == 1
    clock.t += timedelta(minutes=2)  # 4 minutes left: inside the 5-minute margin
    c.get("/api")
    assert auth.refresh_count == 2
    assert server.forms[1]["refresh_token"] == ["rt-rotated-0001"], "the rotated refresh token is used"
    assert all(call == "Bearer at-0001-secret" for call in server.api_calls[:2])


def test_oauth_refreshes_once_on_401_and_does_not_loop():
    server = TokenServer()
    c, auth = oauth(server, access_token="at-stale-but-unexpired", expires_at=Clock()() + timedelta(hours=1))
    assert c.get("/api").status_code == 200
    assert auth.refresh_count == 1
    assert server.api_calls == ["Bearer at-stale-but-unexpired", "Bearer at-0001-secret"]

    server.reject_all = True  # the app was revoked: a fresh token is refused too
    server.api_calls.clear()
    response = c.get("/api")
    assert response.status_code == 401
    assert auth.refresh_count == 2, "one refresh for this request, not a loop"
    assert len(server.api_calls) == 2


def test_oauth_401_through_an_api_session_is_an_auth_error_after_one_refresh():
    server = TokenServer()
    server.reject_all = True
    transport = httpx.MockTransport(server)
    auth = OAuth2RefreshAuth(
        f"{BASE}/oauth/token",
        client_id="client-1",
        client_secret="cs-topsecret-42",
        refresh_token=server.refresh_token,
        client=httpx.Client(transport=transport),
    )
    c = build_client(BASE, allowed_hosts=("api.example.com",), transport=transport, auth=auth)
    s = ApiSession(c, registry=LimiterRegistry(), sleep=lambda _: None, rng=random.Random(1))
    with pytest.raises(AuthError):
        s.get("/api")
    assert auth.refresh_count == 2  # the first token, and one refresh after the 401
    assert s.account == auth.account_fingerprint()


def test_oauth_refused_refresh_is_an_auth_error_without_secrets():
    server = TokenServer()
    server.refuse_refresh = True
    c, _ = oauth(server)
    with pytest.raises(AuthError) as err:
        c.get("/api")
    assert "refused (HTTP 400)" in str(err.value)
    assert "rt-initial-0000" not in str(err.value) and "cs-topsecret-42" not in str(err.value)


def test_oauth_concurrent_requests_with_a_stale_token_refresh_once():
    server = TokenServer(delay=0.05)
    c, auth = oauth(server)
    barrier = threading.Barrier(8)
    statuses = []

    def worker():
        barrier.wait()
        statuses.append(c.get("/api").status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert auth.refresh_count == 1 and len(server.forms) == 1


def test_oauth_concurrent_401s_refresh_once():
    """Eight requests sent with the same token that the API no longer takes: one refresh, the
    others reuse its result."""
    server = TokenServer(delay=0.05)
    c, auth = oauth(server, access_token="at-revoked-000", expires_at=Clock()() + timedelta(hours=1))
    barrier = threading.Barrier(8)
    statuses = []

    def worker():
        barrier.wait()
        statuses.append(c.get("/api").status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert auth.refresh_count == 1


def test_oauth_tokens_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    server = TokenServer()
    c, auth = oauth(server, access_token="at-stale-1234567", expires_at=Clock()() + timedelta(hours=1))
    assert c.get("/api").status_code == 200
    secrets = ("at-stale-1234567", "at-0001-secret", "rt-rotated-0001", "rt-initial-0000", "cs-topsecret-42")
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in repr(auth)
        assert redact(f"x {secret} y") == "x *** y", "registered as a secret"


# --------------------------------------------------------------------------- the policy interface


def test_vendor_policies_live_in_their_plugins_with_deprecated_aliases():
    import synchub.http
    from synchub_hubspot import HubSpotPolicy
    from synchub_mailchimp import MailchimpPolicy
    from synchub_shopify import ShopifyPolicy

    for cls in (HubSpotPolicy, MailchimpPolicy, ShopifyPolicy):
        assert issubclass(cls, RateLimitPolicy)
        with pytest.warns(DeprecationWarning, match=cls.__name__):
            assert getattr(synchub.http, cls.__name__) is cls
        assert cls.__name__ not in synchub.http.__all__
    with pytest.raises(AttributeError):
        synchub.http.NoSuchPolicy  # noqa: B018


def test_kit_exports_are_complete():
    import synchub.kit
    from synchub.kit import auth, cursor, paging

    public = {n for m in (auth, cursor, paging) for n in m.__all__}
    assert set(synchub.kit.__all__) <= public
    for name in synchub.kit.__all__:
        assert getattr(synchub.kit, name).__doc__, name


# --------------------------------------------------------------------------- the README example


def _readme_example() -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("### Helpers for connector authors", 1)[1]
    (block,) = re.findall(r"```py\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    return block


def test_readme_helpers_example_reads_resumes_and_checkpoints_between_groups():
    from synchub.connector import Checkpoint, Record

    contacts = [
        {"id": 1, "updated_at": "2026-01-01T10:00:00Z"},
        {"id": 2, "updated_at": "2026-01-01T10:00:05Z"},
        {"id": 3, "updated_at": "2026-01-01T10:00:05Z"},  # a tie across the page boundary
        {"id": 4, "updated_at": "2026-01-01T10:00:09Z"},
    ]
    requests = []

    def handler(request):
        p = params_of(request)
        requests.append(p)
        since = p.get("updated_since")
        rows = [c for c in contacts if since is None or datetime.fromisoformat(c["updated_at"]) >= datetime.fromisoformat(since)]
        start = int(p.get("cursor", "0"))
        body = {"contacts": rows[start : start + 2]}
        if start + 2 < len(rows):
            body["next_cursor"] = str(start + 2)
        return httpx.Response(200, json=body)

    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    items = list(namespace["read_contacts"](client(handler), None))
    kinds = [("cp", i.state["updated_at"]) if isinstance(i, Checkpoint) else ("rec", i.data["id"]) for i in items]
    assert kinds == [
        ("rec", 1),
        ("cp", "2026-01-01T10:00:00Z"),
        ("rec", 2),
        ("rec", 3),
        ("cp", "2026-01-01T10:00:05Z"),
        ("rec", 4),
        ("cp", "2026-01-01T10:00:09Z"),
    ]
    assert all(isinstance(i, (Record, Checkpoint)) for i in items)
    final = items[-1].state
    again = list(namespace["read_contacts"](client(handler), final))
    assert requests[-1]["updated_since"] == "2026-01-01T09:55:09+00:00", "five minutes of lookback"
    assert len([i for i in again if isinstance(i, Record)]) == 4, "the lookback window is read again"
    assert [i.state for i in again if isinstance(i, Checkpoint)] == [final], \
        "a lookback re-read never moves the cursor back"


# ----- erasure ---------------------------------------------------------------------------------


def test_erase_each_keeps_a_failure_with_its_target_and_stops_when_told() -> None:
    from synchub.connector import ErasureResult, ErasureTarget
    from synchub.kit.erasure import Failure, erase_each

    targets = [ErasureTarget("g", str(i), [f"p{i}@example.org"]) for i in range(4)]
    asked: list[str] = []

    def one(t: ErasureTarget) -> ErasureResult:
        asked.append(t.external_id or "")
        if t.external_id == "1":
            raise ValueError(f"odd answer for {t.emails[0]}")
        if t.external_id == "2":
            raise PermissionError("token refused")
        return ErasureResult(t, "confirmed")

    def failure(exc: Exception, t: ErasureTarget) -> Failure:
        return Failure(str(exc), retryable=False, stop=isinstance(exc, PermissionError))

    results = list(erase_each(targets, one, failure))
    assert [r.status for r in results] == ["confirmed", "failed", "failed", "failed"]
    assert asked == ["0", "1", "2"]  # after the refused token, nothing more is sent
    assert results[1].detail == "odd answer for <e-mail>" and results[1].retryable is False
    assert results[3].detail == "token refused" and results[3].retryable is True  # asked again next run
