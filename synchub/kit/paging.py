"""Paginators: walk a collection page by page and know when it ends.

Each paginator sends its requests through anything with ``get(url, params=...)`` returning an
``httpx.Response``: a connector's :class:`~synchub.http.ApiSession` (retries, rate budget,
redaction) or, in tests, a plain ``httpx.Client``. The page styles APIs use:

* :class:`OffsetPaginator` -- ``offset`` + page size, optionally a total count in the body
  (Mailchimp's ``offset``/``count``/``total_items``);
* :class:`CursorPaginator` -- an opaque token from the body names the next page (HubSpot's
  ``paging.next.after``);
* :class:`LinkHeaderPaginator` -- the ``Link`` header's ``rel="next"`` URL (RFC 8288; GitHub,
  Shopify REST, many others). :func:`parse_link_header` is usable on its own;
* :class:`SearchAfterPaginator` -- keyset paging over a search endpoint sorted by
  ``(value, id)`` whose result window is capped (HubSpot search: 10,000): before the cap, a new
  query starts after the last key read.

A paginator never loops: an API that hands out the same cursor or link twice, or a search that
makes no progress, raises :class:`PaginationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import httpx

from synchub.errors import FatalRunError
from synchub.http import json_object, response_json

Parse = Callable[[httpx.Response], Any]


class PaginationError(FatalRunError):
    """The API's paging does not make progress (a repeated cursor, a search stuck in place):
    going on would loop, so the run stops. What was read before stays committed."""


class Getter(Protocol):
    """What a paginator sends its requests through (``ApiSession`` and ``httpx.Client`` fit)."""

    def get(self, url: str, **kw: Any) -> httpx.Response: ...


@dataclass
class Page:
    """One page: the response, its parsed body, the items it carries.

    ``offset`` is the position of the first item in the collection, where the paginator knows
    it (offset paging); ``number`` counts the pages yielded, from 0.
    """

    response: httpx.Response | None
    body: Any
    items: list[Any]
    number: int
    offset: int | None = None


def dig(body: Any, path: str | None) -> Any:
    """The value at a dotted ``path`` (``"paging.next.after"``) in nested dicts, or None.
    An empty or None path is the body itself."""
    if not path:
        return body
    value = body
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _default_parse(response: httpx.Response) -> Any:
    return json_object(response, "API", empty_ok=True)


@dataclass
class _Base:
    #: Where the items are in the body: a dotted path, or None when the body is the list.
    items_key: str | None = "results"
    #: Turns a response into its body (default: the JSON object; a connector passes its own,
    #: e.g. one that names the vendor in errors).
    parse: Parse | None = None

    def _parse(self, response: httpx.Response) -> Any:
        return (self.parse or _default_parse)(response)

    def _items(self, body: Any) -> list[Any]:
        items = dig(body, self.items_key)
        return list(items) if isinstance(items, list) else []

    def pages(
        self, session: Getter, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        raise NotImplementedError

    def items(
        self, session: Getter, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[Any]:
        """Every item of every page, in order."""
        for page in self.pages(session, path, params):
            yield from page.items


@dataclass
class OffsetPaginator(_Base):
    """Pages by position: ``{limit_param: page_size, offset_param: offset}`` on each request.

    The collection ends at an empty page, at ``total_key`` (a count in the body, when given) or,
    without a total, at a page shorter than ``page_size``. ``page_size=None`` sends no size
    (pass it in ``params`` yourself); then the end needs a total or an empty page.

    ``step_back_on_shrink``: when the total falls while paging (items left the result set, so
    the ones after them moved up), the page is asked again from ``offset - shrink`` instead of
    being used, so nothing is skipped (a few items are read twice). For result sets sorted by
    modification time, where a changed item leaves the window.
    """

    page_size: int | None = 100
    offset_param: str = "offset"
    limit_param: str = "limit"
    total_key: str | None = None
    step_back_on_shrink: bool = False
    start: int = 0

    def pages(
        self, session: Getter, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        base = dict(params or {})
        if self.page_size is not None:
            base[self.limit_param] = self.page_size
        offset, total, number = self.start, None, 0
        while True:
            response = session.get(path, params={**base, self.offset_param: offset})
            body = self._parse(response)
            items = self._items(body)
            now_total = None
            if self.total_key is not None:
                now_total = int(dig(body, self.total_key) or 0)
                if self.step_back_on_shrink and total is not None and now_total < total:
                    offset = max(0, offset - (total - now_total))
                    total = now_total
                    continue
                total = now_total
            if items:
                yield Page(response, body, items, number, offset)
                number += 1
            offset += len(items)
            if not items:
                return
            if total is not None:
                if offset >= total:
                    return
            elif self.page_size is not None and len(items) < self.page_size:
                return


@dataclass
class CursorPaginator(_Base):
    """Pages by an opaque token: the body names the next page's cursor (``next_cursor``, a
    dotted path or a function of the body), sent as ``cursor_param`` on the next request.

    The collection ends when there is no next cursor. A page may be empty and still name a next
    cursor (the paginator follows it); a cursor handed out twice raises :class:`PaginationError`.
    """

    next_cursor: str | Callable[[Any], Any] = "paging.next.after"
    cursor_param: str = "after"
    page_size: int | None = None
    limit_param: str = "limit"
    start_cursor: str | None = None

    def _next(self, body: Any) -> str | None:
        value = (
            self.next_cursor(body) if callable(self.next_cursor) else dig(body, self.next_cursor)
        )
        return None if value in (None, "") else str(value)

    def pages(
        self, session: Getter, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        base = dict(params or {})
        if self.page_size is not None:
            base[self.limit_param] = self.page_size
        cursor, seen, number = self.start_cursor, set(), 0
        while True:
            query = {**base, self.cursor_param: cursor} if cursor else base
            response = session.get(path, params=query)
            body = self._parse(response)
            items = self._items(body)
            if items:
                yield Page(response, body, items, number)
                number += 1
            cursor = self._next(body)
            if cursor is None:
                return
            if cursor in seen:
                raise PaginationError(
                    f"{path}: the API handed out the cursor of a page already read"
                )
            seen.add(cursor)


# --------------------------------------------------------------------------- Link headers


@dataclass(frozen=True)
class Link:
    """One link of a ``Link`` header: its target and its parameters (names lower-cased)."""

    url: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def rels(self) -> frozenset[str]:
        """The relation types (``rel="next last"`` is two), lower-cased."""
        return frozenset(self.params.get("rel", "").lower().split())


_TOKEN_END = frozenset(' \t;,="')


def parse_link_header(value: str | None) -> list[Link]:
    """The links of a ``Link`` header value (RFC 8288), in order.

    Handles several links, several relation types in one ``rel``, quoted parameter values
    (with commas, semicolons and backslash escapes), parameters without a value, ``title*``-style
    RFC 8187 values, and commas inside the ``<...>`` target. Only the first occurrence of a
    parameter counts. A malformed link is skipped up to the next comma.
    """
    links: list[Link] = []
    if not value:
        return links
    text, i, n = value, 0, len(value)

    def skip_ws(j: int) -> int:
        while j < n and text[j] in " \t":
            j += 1
        return j

    while i < n:
        i = skip_ws(i)
        if i < n and text[i] == ",":
            i += 1
            continue
        if i >= n:
            break
        if text[i] != "<":
            comma = text.find(",", i)
            i = n if comma < 0 else comma + 1
            continue
        close = text.find(">", i)
        if close < 0:
            break
        url = text[i + 1 : close].strip()
        i = close + 1
        params: dict[str, str] = {}
        while True:
            i = skip_ws(i)
            if i >= n or text[i] != ";":
                break
            i = skip_ws(i + 1)
            start = i
            while i < n and text[i] not in _TOKEN_END:
                i += 1
            name = text[start:i].lower()
            i = skip_ws(i)
            param_value = ""
            if i < n and text[i] == "=":
                i = skip_ws(i + 1)
                if i < n and text[i] == '"':
                    i += 1
                    chars: list[str] = []
                    while i < n and text[i] != '"':
                        if text[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(text[i])
                        i += 1
                    i += 1  # the closing quote
                    param_value = "".join(chars)
                else:
                    start = i
                    while i < n and text[i] not in " \t;,":
                        i += 1
                    param_value = text[start:i]
            if name.endswith("*"):  # RFC 8187: charset'lang'percent-encoded
                name = name[:-1]
                charset, _, rest = param_value.partition("'")
                _, _, encoded = rest.partition("'")
                try:
                    param_value = unquote(encoded, encoding=charset or "utf-8", errors="strict")
                except (LookupError, UnicodeDecodeError):
                    param_value = encoded
            if name and name not in params:
                params[name] = param_value
        links.append(Link(url, params))
        # Anything up to the next comma that is not a parameter is ignored.
        i = skip_ws(i)
        if i < n and text[i] != ",":
            comma = text.find(",", i)
            i = n if comma < 0 else comma
    return links


def next_link(response: httpx.Response, rel: str = "next") -> str | None:
    """The absolute URL of the first link with relation ``rel`` in the response's ``Link``
    headers (several headers count as one list), resolved against the request URL."""
    rel = rel.lower()
    for header in response.headers.get_list("link"):
        for link in parse_link_header(header):
            if rel in link.rels:
                return str(response.request.url.join(link.url))
    return None


@dataclass
class LinkHeaderPaginator(_Base):
    """Pages by the ``Link`` header: the first request carries ``params`` (and the page size),
    each next request is the ``rel="next"`` URL as given (it carries its own query). The
    collection ends when there is no next link; a link to a page already read raises
    :class:`PaginationError`. Items default to the body itself (``items_key=None``)."""

    items_key: str | None = None
    page_size: int | None = None
    limit_param: str = "limit"
    rel: str = "next"

    def _parse(self, response: httpx.Response) -> Any:
        return (self.parse or _parse_list_or_object)(response)

    def pages(
        self, session: Getter, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        query = dict(params or {})
        if self.page_size is not None:
            query[self.limit_param] = self.page_size
        response = session.get(path, params=query)
        seen = {str(response.request.url)}
        number = 0
        while True:
            body = self._parse(response)
            items = self._items(body)
            if items:
                yield Page(response, body, items, number)
                number += 1
            url = next_link(response, self.rel)
            if url is None:
                return
            if url in seen:
                raise PaginationError(f"{path}: the next link points at a page already read")
            seen.add(url)
            response = session.get(url)


def _parse_list_or_object(response: httpx.Response) -> Any:
    """Link-header APIs often answer with a bare JSON list."""
    if response.status_code == 204 or not response.content:
        return []
    body = response_json(response)
    return body if isinstance(body, list) else json_object(response, "API")


# --------------------------------------------------------------------------- search-after


@dataclass(frozen=True)
class SearchRequest:
    """What :class:`SearchAfterPaginator` asks its ``search`` function for.

    ``after`` is the key ``(value, id)`` of the last record read (None: from the start): return
    records sorted by that key, after it. ``token`` is the API's page token inside the current
    query (None: its first page)."""

    after: tuple[Any, ...] | None
    token: str | None
    page_size: int


@dataclass
class SearchPage:
    """What a ``search`` function returns: the records and the next page token (None: last)."""

    items: list[Any]
    next_token: str | None = None


@dataclass
class SearchAfterPaginator:
    """Keyset paging over a search endpoint whose result window is capped.

    ``search(SearchRequest)`` sends one query page and returns a :class:`SearchPage`; it must
    sort by ``key`` (e.g. ``(updatedAt, id)``) and filter to records after ``request.after``.
    Pages are followed by the API's token until the next one would pass ``window`` results; then
    a new query starts after the last key read, so the cap is never reached. The ``id`` in the
    key breaks ties: a group of records sharing one value that spans pages or queries is read
    whole and once. If the API can only filter by value (``>=``), the records it returns again
    (key not after the last one read) are dropped here; should a whole window hold nothing new
    (a tie group larger than the window on such an API), that is a :class:`PaginationError`
    rather than a loop.
    """

    search: Callable[[SearchRequest], SearchPage]
    key: Callable[[Any], tuple[Any, ...]]
    page_size: int = 100
    window: int = 10_000
    start: tuple[Any, ...] | None = None
    #: Queries started and records dropped as not after the last key (for logs and tests).
    queries: int = field(default=0, init=False)
    skipped: int = field(default=0, init=False)

    def pages(self) -> Iterator[list[Any]]:
        """The records, a page at a time (pages with nothing new are not yielded)."""
        after = self.start
        last = after  # the key of the last record yielded
        while True:  # one query
            self.queries += 1
            token: str | None = None
            in_query = 0
            restart_from = after
            while True:
                page = self.search(SearchRequest(after, token, self.page_size))
                fresh = []
                for item in page.items:
                    k = self.key(item)
                    if last is not None and k <= last:
                        # Read already (a ">=" filter, a page that overlaps the last one) or
                        # behind the position: never yielded twice, never moves the key back.
                        self.skipped += 1
                        continue
                    fresh.append(item)
                    last = k
                if fresh:
                    yield fresh
                in_query += len(page.items)
                if not page.next_token or not page.items:
                    return
                if in_query + self.page_size > self.window:
                    if last is None or last == restart_from:
                        raise PaginationError(
                            f"search made no progress past {restart_from!r} in {in_query} results"
                        )
                    after = last
                    break
                token = page.next_token

    def items(self) -> Iterator[Any]:
        """Every record, in key order."""
        for page in self.pages():
            yield from page


__all__ = [
    "CursorPaginator",
    "Getter",
    "Link",
    "LinkHeaderPaginator",
    "OffsetPaginator",
    "Page",
    "PaginationError",
    "SearchAfterPaginator",
    "SearchPage",
    "SearchRequest",
    "dig",
    "next_link",
    "parse_link_header",
]
