"""Authenticators: ``httpx.Auth`` classes a connector hands to the client the core builds.

::

    client = context.http.build(base_url, allowed_hosts=HOSTS, auth=BearerAuth(token))

* :class:`ApiKeyHeaderAuth` -- an API key in a header (``X-API-Key: ...``, or with a prefix);
* :class:`ApiKeyQueryAuth` -- an API key as a query parameter (``?api_key=...``);
* :class:`BearerAuth` -- ``Authorization: Bearer <token>``;
* :class:`BasicAuth` -- HTTP Basic (user, password or API key);
* :class:`OAuth2RefreshAuth` -- OAuth 2 refresh-token flow: fetches an access token from the
  token endpoint, refreshes it ``margin`` before it expires and once after a 401 (not in a
  loop), thread-safe (concurrent requests that find the token stale cause one refresh).

Every secret is registered with :func:`synchub.redact.register_secret` when it is known, so it
is masked in logs and errors; ``repr`` never shows one. Each authenticator offers
``account_fingerprint()``: a stable key of its credential that never reveals it, which
:class:`~synchub.http.ApiSession` uses to share one rate budget among the connections of one
account.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Generator, Iterable
from datetime import datetime, timedelta, timezone

import httpx

from synchub.errors import AuthError
from synchub.http import OAuthToken, TokenGrant, account_key
from synchub.redact import MASK, redact, register_secret

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ApiKeyHeaderAuth(httpx.Auth):
    """Sends ``key`` in the header ``header`` (``prefix`` + space before it, when given)."""

    def __init__(self, key: str, *, header: str = "X-API-Key", prefix: str | None = None):
        if not key:
            raise ValueError("an API key is required")
        self.header = header
        self._value = f"{prefix} {key}" if prefix else key
        self._key = key
        register_secret(key)
        register_secret(self._value)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._value
        yield request

    def account_fingerprint(self) -> str:
        return account_key(self._key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(header={self.header!r}, key={MASK!r})"


class BearerAuth(ApiKeyHeaderAuth):
    """``Authorization: Bearer <token>`` (a personal or private-app token that never changes;
    for tokens that expire see :class:`OAuth2RefreshAuth`)."""

    def __init__(self, token: str):
        super().__init__(token, header="Authorization", prefix="Bearer")


class ApiKeyQueryAuth(httpx.Auth):
    """Sends ``key`` as the query parameter ``param`` of every request.

    Keys in URLs end up in proxy and server logs; use a header when the API allows one. URLs
    synchub logs go through :func:`~synchub.http.mask_url`, and the key is registered as a secret.
    """

    def __init__(self, key: str, *, param: str = "api_key"):
        if not key:
            raise ValueError("an API key is required")
        self.param = param
        self._key = key
        register_secret(key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_merge_params({self.param: self._key})
        yield request

    def account_fingerprint(self) -> str:
        return account_key(self._key)

    def __repr__(self) -> str:
        return f"ApiKeyQueryAuth(param={self.param!r}, key={MASK!r})"


class BasicAuth(httpx.BasicAuth):
    """HTTP Basic: ``username`` and ``password`` (often an API key with any user name, as
    Mailchimp takes it). The password and the encoded header are registered as secrets."""

    def __init__(self, username: str, password: str):
        super().__init__(username, password)
        self.username = username
        self._password = password
        register_secret(password)
        register_secret(base64.b64encode(f"{username}:{password}".encode()).decode())

    def account_fingerprint(self) -> str:
        return account_key(self.username, self._password)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={MASK!r})"


# --------------------------------------------------------------------------- OAuth 2


def refresh_token_grant(
    client: httpx.Client,
    token_url: str,
    *,
    client_id: str,
    client_secret: str | None,
    refresh_token: str,
    scopes: Iterable[str] | None = None,
    now: Callable[[], datetime] = _utcnow,
    vendor: str = "OAuth",
) -> TokenGrant:
    """One refresh-token grant (RFC 6749 section 6): POST the form to ``token_url`` with
    ``client`` and return the new tokens. A refused or broken answer is an
    :class:`~synchub.errors.AuthError` (``vendor`` names the API in its message); the error
    text is redacted. A grant without a new refresh token keeps the old one
    (:class:`~synchub.http.OAuthToken` does so)."""
    form = {"grant_type": "refresh_token", "client_id": client_id}
    if client_secret is not None:
        form["client_secret"] = client_secret
        register_secret(client_secret)
    form["refresh_token"] = refresh_token
    register_secret(refresh_token)
    if scopes:
        form["scope"] = " ".join(scopes)
    try:
        response = client.post(token_url, data=form)
    except httpx.HTTPError as exc:
        raise AuthError(f"{vendor} token refresh failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise AuthError(
            f"{vendor} token refresh refused (HTTP {response.status_code}): {redact(response.text[:300])}"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not body.get("access_token"):
        raise AuthError(f"{vendor} token refresh answered without an access token")
    register_secret(str(body["access_token"]))
    if body.get("refresh_token"):
        register_secret(str(body["refresh_token"]))
    expires = body.get("expires_in")
    return TokenGrant(
        access_token=str(body["access_token"]),
        refresh_token=body.get("refresh_token"),
        expires_at=now() + timedelta(seconds=int(expires)) if expires else None,
    )


class OAuth2RefreshAuth(httpx.Auth):
    """OAuth 2 with a refresh token: ``Authorization: Bearer <access token>``, refreshed at the
    token endpoint ``token_url``.

    Without an ``access_token`` the first request fetches one. The token is refreshed ``margin``
    before ``expires_at``, and once when the API answers 401 (the request is then sent once
    more; a second 401 is returned to the caller, which reports the credentials as rejected).
    Threads that find the same stale token cause one refresh; a thread whose 401 came with a
    token another thread has already replaced uses the new one without refreshing again.

    ``client`` sends the token requests (default: a client of its own, without redirects);
    ``on_refresh`` receives each :class:`~synchub.http.TokenGrant`, e.g. to store a rotated
    refresh token. Synchronous clients only.
    """

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | None,
        refresh_token: str,
        access_token: str | None = None,
        expires_at: datetime | None = None,
        scopes: Iterable[str] | None = None,
        margin: timedelta = timedelta(minutes=5),
        client: httpx.Client | None = None,
        now: Callable[[], datetime] = _utcnow,
        on_refresh: Callable[[TokenGrant], None] | None = None,
        vendor: str = "OAuth",
    ):
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._first_refresh_token = refresh_token
        self.scopes = list(scopes or [])
        self._client = client
        self._client_lock = threading.Lock()
        self._now = now
        self._on_refresh = on_refresh
        self.vendor = vendor
        if client_secret:
            register_secret(client_secret)
        self.token = OAuthToken(
            access_token or "",
            refresh_token=refresh_token,
            # No current token: take it as expired, so the first request refreshes.
            expires_at=expires_at if access_token else EPOCH,
            refresh=self._refresh,
            margin=margin,
            now=now,
        )

    @property
    def refresh_count(self) -> int:
        """Refreshes done so far."""
        return self.token.refresh_count

    def _token_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=30.0, follow_redirects=False)
            return self._client

    def _refresh(self, refresh_token: str | None) -> TokenGrant:
        grant = refresh_token_grant(
            self._token_client(),
            self.token_url,
            client_id=self.client_id,
            client_secret=self._client_secret,
            refresh_token=refresh_token or self._first_refresh_token,
            scopes=self.scopes,
            now=self._now,
            vendor=self.vendor,
        )
        if self._on_refresh is not None:
            self._on_refresh(grant)
        return grant

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        access = self.token.get()
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code == 401:
            # Once: a token refreshed a moment ago that is refused again is not a stale token.
            renewed = self.token.refresh_after_401(access)
            request.headers["Authorization"] = f"Bearer {renewed}"
            yield request

    def account_fingerprint(self) -> str:
        return account_key(self.client_id, self._first_refresh_token)

    def __repr__(self) -> str:
        return f"OAuth2RefreshAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, tokens={MASK!r})"


__all__ = [
    "ApiKeyHeaderAuth",
    "ApiKeyQueryAuth",
    "BasicAuth",
    "BearerAuth",
    "OAuth2RefreshAuth",
    "refresh_token_grant",
]
