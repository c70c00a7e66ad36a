"""Helpers for connector authors: paginators, an incremental cursor, authenticators.

Everything here is optional and built on the core's HTTP layer (:mod:`synchub.http`): a
paginator sends its requests through the connection's :class:`~synchub.http.ApiSession`, an
authenticator is an ``httpx.Auth`` handed to the client the core builds. The built-in connectors
use them where their APIs fit.

* :mod:`synchub.kit.paging` -- :class:`OffsetPaginator`, :class:`CursorPaginator`,
  :class:`LinkHeaderPaginator` (with :func:`parse_link_header`), :class:`SearchAfterPaginator`;
* :mod:`synchub.kit.cursor` -- :class:`IncrementalCursor`: ``(value, id)`` positions, lookback,
  checkpoints only between groups of equal values, state in and out;
* :mod:`synchub.kit.auth` -- :class:`ApiKeyHeaderAuth`, :class:`ApiKeyQueryAuth`,
  :class:`BearerAuth`, :class:`BasicAuth`, :class:`OAuth2RefreshAuth`;
* :mod:`synchub.kit.erasure` -- :func:`erase_each` and :func:`scrub` for ``Stream.erase``.

Rate limits are not here: a vendor's limits are a :class:`synchub.http.RateLimitPolicy`
subclass in its plugin (see ``synchub_hubspot.HubSpotPolicy``).
"""

from __future__ import annotations

from synchub.kit.auth import (
    ApiKeyHeaderAuth,
    ApiKeyQueryAuth,
    BasicAuth,
    BearerAuth,
    OAuth2RefreshAuth,
    refresh_token_grant,
)
from synchub.kit.cursor import (
    CursorOrderError,
    CursorPosition,
    IncrementalCursor,
    merge_states,
)
from synchub.kit.paging import (
    CursorPaginator,
    Link,
    LinkHeaderPaginator,
    OffsetPaginator,
    Page,
    PaginationError,
    SearchAfterPaginator,
    SearchPage,
    SearchRequest,
    next_link,
    parse_link_header,
)

__all__ = [
    "ApiKeyHeaderAuth",
    "ApiKeyQueryAuth",
    "BasicAuth",
    "BearerAuth",
    "CursorOrderError",
    "CursorPaginator",
    "CursorPosition",
    "IncrementalCursor",
    "Link",
    "LinkHeaderPaginator",
    "OAuth2RefreshAuth",
    "OffsetPaginator",
    "Page",
    "PaginationError",
    "SearchAfterPaginator",
    "SearchPage",
    "SearchRequest",
    "merge_states",
    "next_link",
    "parse_link_header",
    "refresh_token_grant",
]
