"""The HTTP layer every SaaS connector shares: one client per connection, retries, rate limits.

The core builds the ``httpx.Client`` of a connection with :func:`build_client` (or a
:class:`HttpClientFactory`); connectors never build their own. A connector sends requests through
an :class:`ApiSession`, which

* retries 429, 5xx, timeouts and connection errors with exponential backoff and jitter (tenacity),
  honouring ``Retry-After`` and what the vendor's :class:`RateLimitPolicy` reads from the response;
* raises :class:`~synchub.errors.QuotaExhausted` when an account-wide daily quota is spent,
  :class:`~synchub.errors.AuthError` on 401 (after at most one token refresh) and
  :class:`RequestRejected` on any other 4xx;
* takes a token from the rate-limit budget of the API *account* before each request, so every
  connection that uses the same credentials shares one budget and one concurrency cap.

A request whose outcome is unknown (read timeout, 5xx) is only sent again when it is idempotent:
GET/HEAD/OPTIONS/PUT/DELETE, or any request sent with ``idempotent=True``. Otherwise the
:class:`~synchub.errors.RetryableError` is raised at once and the caller decides.

Secrets never appear in clear text: credential headers and configured secret values are
registered with :func:`synchub.redact.register_secret`, every exception message goes through
:func:`~synchub.redact.redact`, and URLs are logged with secret query parameters masked.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import tenacity

from synchub.errors import (
    AuthError,
    ConfigError,
    FatalRunError,
    QuotaExhausted,
    RateLimited,
    RetryableError,
)
from synchub.redact import MASK, looks_secret, redact, register_secret

log = logging.getLogger("synchub.http")

Sleep = Callable[[float], None]
Clock = Callable[[], float]
Now = Callable[[], datetime]

#: Query parameters whose values are masked in logs and error messages.
SECRET_PARAMS = frozenset(
    {"hapikey", "access_token", "apikey", "api_key", "token", "refresh_token", "client_secret"}
)
#: Headers whose values are credentials.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-shopify-access-token", "x-api-key", "private-app"}
)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BODY_EXCERPT = 300


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RequestRejected(FatalRunError):
    """The API refused the request (a 4xx other than 401/429): sending it again will not help.

    ``status`` is the HTTP status, ``body`` a short, redacted excerpt of the response body.
    A connector that writes single records may turn this into a record-level rejection.
    """

    def __init__(self, message: str, *, status: int, body: str = ""):
        self.status = status
        self.body = body
        super().__init__(message)


# --------------------------------------------------------------------------- URLs and secrets


def mask_url(url: httpx.URL | str) -> str:
    """``url`` with the values of secret query parameters replaced by ``***`` (then redacted)."""
    try:
        u = httpx.URL(str(url))
    except Exception:
        return redact(url)
    if u.query:
        params = [
            (k, MASK if k.lower() in SECRET_PARAMS or looks_secret(k) else v)
            for k, v in u.params.multi_items()
        ]
        u = u.copy_with(params=params)
    if u.userinfo:
        u = u.copy_with(username=None, password=None)
    return redact(str(u))


def account_key(*parts: str | None) -> str:
    """A stable key for an API account derived from its credentials, never the credentials."""
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _register_header_secret(name: str, value: str) -> None:
    if name.lower() in SECRET_HEADERS or looks_secret(name):
        register_secret(value)
        scheme, _, rest = value.partition(" ")
        if rest and scheme.lower() in {"bearer", "basic", "token"}:
            register_secret(rest.strip())


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """True when ``host`` matches an entry: ``api.hubapi.com`` matches itself and its subdomains,
    ``.api.mailchimp.com`` matches subdomains only."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("."):
            if host.endswith(entry) and len(host) > len(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def check_base_url(
    base_url: str, allowed_hosts: Iterable[str], *, allow_any_host: bool = False
) -> None:
    """Refuse a base URL that is not HTTPS on an allowed host (SSRF), unless explicitly allowed."""
    try:
        u = httpx.URL(base_url)
    except Exception as exc:
        raise ConfigError(f"invalid base URL {mask_url(base_url)!r}: {redact(exc)}") from None
    if not u.host:
        raise ConfigError(f"base URL {mask_url(base_url)!r} has no host")
    if allow_any_host:
        return
    if u.scheme != "https":
        raise ConfigError(
            f"base URL {mask_url(base_url)!r} must use https (set allow_any_host to override)"
        )
    allowed = list(allowed_hosts)
    if not host_allowed(u.host, allowed):
        raise ConfigError(
            f"base URL host {u.host!r} is not one of {', '.join(allowed) or '(none)'}; "
            "set allow_any_host explicitly to use another host"
        )


# --------------------------------------------------------------------------- client factory


def _timeout(timeout: float | httpx.Timeout, connect_timeout: float) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(connect_timeout, timeout))


def build_client(
    base_url: str,
    *,
    allowed_hosts: Iterable[str],
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    auth: tuple[str, str] | httpx.Auth | None = None,
    timeout: float | httpx.Timeout = 30.0,
    connect_timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    allow_any_host: bool = False,
    secrets: Iterable[str] = (),
) -> httpx.Client:
    """Build the one ``httpx.Client`` of a connection.

    ``auth`` is HTTP Basic (user, key), as Mailchimp uses it, or an ``httpx.Auth`` such as the
    authenticators of :mod:`synchub.kit.auth` (which register their own secrets). Credential
    headers, secret-looking query parameters, the Basic password and every value in ``secrets``
    are registered for redaction. Redirects are not followed (a redirect could lead off the
    allowed hosts).
    """
    check_base_url(base_url, allowed_hosts, allow_any_host=allow_any_host)
    for value in secrets:
        register_secret(value)
    headers = dict(headers or {})
    for name, value in headers.items():
        _register_header_secret(name, value)
    for name, value in (params or {}).items():
        if name.lower() in SECRET_PARAMS or looks_secret(name):
            register_secret(value)
    if isinstance(auth, tuple):
        register_secret(auth[1])
        register_secret(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        params=params,
        auth=auth,
        timeout=_timeout(timeout, connect_timeout),
        transport=transport,
        follow_redirects=False,
    )


@dataclass
class HttpClientFactory:
    """Defaults the core applies to every client and session it builds.

    Plugins and tests swap ``transport`` (e.g. a mock server), ``sleep``/``clock`` (no real
    waiting in tests) and ``registry`` (budgets shared only within a test).
    """

    allowed_hosts: tuple[str, ...] = ()
    timeout: float | httpx.Timeout = 30.0
    connect_timeout: float = 10.0
    transport: httpx.BaseTransport | None = None
    allow_any_host: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    sleep: Sleep = time.sleep
    clock: Clock = time.monotonic
    registry: LimiterRegistry | None = None
    #: Every session this factory built (a connection's own copy: its runs' API figures).
    sessions: list[ApiSession] = field(default_factory=list)

    def api_stats(self) -> dict[str, int]:
        """Requests, retries and throttled responses of the sessions built so far."""
        return {
            "calls": sum(s.request_count for s in self.sessions),
            "retries": sum(s.retry_count for s in self.sessions),
            "throttled": sum(s.throttle_count for s in self.sessions),
        }

    def build(self, base_url: str, **overrides: Any) -> httpx.Client:
        kw: dict[str, Any] = {
            "allowed_hosts": self.allowed_hosts,
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "transport": self.transport,
            "allow_any_host": self.allow_any_host,
        }
        kw.update(overrides)
        kw["headers"] = {**self.headers, **(overrides.get("headers") or {})}
        kw["allow_any_host"] = bool(kw["allow_any_host"] or self.allow_any_host)
        return build_client(base_url, **kw)

    def session(self, client: httpx.Client, **kw: Any) -> ApiSession:
        """An :class:`ApiSession` on ``client`` with this factory's sleep, clock and registry."""
        kw.setdefault("sleep", self.sleep)
        kw.setdefault("clock", self.clock)
        kw.setdefault("registry", self.registry)
        kw.setdefault("allow_any_host", self.allow_any_host)
        session = ApiSession(client, **kw)
        self.sessions.append(session)
        return session


# --------------------------------------------------------------------------- account budgets


class AccountLimiter:
    """The shared budget of one API account: a token bucket, a pause, a quota stop, a concurrency cap.

    Thread-safe. ``rate`` requests per second refill a bucket of ``burst``; a waiting caller
    reserves its token before sleeping, so concurrent callers queue fairly.
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        burst: int | None = None,
        max_concurrent: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ):
        self.rate = rate
        self.capacity = float(burst or 1)
        self.max_concurrent = max_concurrent
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._last = clock()
        self._paused_until = 0.0
        self.quota_resume_at: datetime | None = None
        self._sem = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None

    def reserve(self) -> float:
        """Take one request from the budget; return how long the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._paused_until - now)
            if self.rate:
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                self._tokens -= 1.0
                if self._tokens < 0:
                    wait = max(wait, -self._tokens / self.rate)
            return wait

    def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause_remaining(self) -> float:
        """Seconds left of the account's current pause."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def pause_for(self, seconds: float) -> None:
        """Nobody on this account sends anything for ``seconds`` from now."""
        if seconds <= 0:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def exhaust(self, resume_at: datetime) -> None:
        """The account's quota is spent until ``resume_at``."""
        with self._lock:
            if self.quota_resume_at is None or resume_at > self.quota_resume_at:
                self.quota_resume_at = resume_at

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the account's concurrent connections while a request is in flight."""
        if self._sem is None:
            yield
            return
        with self._sem:
            yield


class LimiterRegistry:
    """Process-wide: one :class:`AccountLimiter` per (vendor, account key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], AccountLimiter] = {}

    def get(self, vendor: str, key: str, factory: Callable[[], AccountLimiter]) -> AccountLimiter:
        with self._lock:
            limiter = self._limiters.get((vendor, key))
            if limiter is None:
                limiter = self._limiters[(vendor, key)] = factory()
            return limiter

    def clear(self) -> None:
        with self._lock:
            self._limiters.clear()


default_registry = LimiterRegistry()


# --------------------------------------------------------------------------- response helpers


def response_json(response: httpx.Response) -> Any:
    """The response body as JSON (None if it is not), parsed once however often it is asked.

    Policies and connectors read the same body several times (throttle checks, the connector's
    own parsing); the parsed value is cached on the response."""
    cached = response.__dict__.get("_synchub_json", _UNPARSED)
    if cached is not _UNPARSED:
        return cached
    try:
        parsed = response.json()
    except (ValueError, UnicodeDecodeError):
        parsed = None
    response.__dict__["_synchub_json"] = parsed
    return parsed


_json = response_json  # the name used before it was public
_UNPARSED = object()


def json_object(response: httpx.Response, vendor: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The JSON object a successful response carries. A body that is not one (a proxy's error
    page, a cut-off answer) is a transient fault: :class:`RetryableError`. With ``empty_ok``, an
    empty body (204 No Content) is ``{}``."""
    if empty_ok and (response.status_code == 204 or not response.content):
        return {}
    body = response_json(response)
    if body is None:
        raise RetryableError(f"{vendor} answered HTTP {response.status_code} without JSON")
    if not isinstance(body, dict):
        raise RetryableError(f"{vendor} answered HTTP {response.status_code} with unexpected JSON")
    return body


def header_number(response: httpx.Response, name: str) -> float | None:
    """A numeric response header (rate-limit counters), None when absent or not a number."""
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


_header_number = header_number


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def next_midnight(now: datetime, tz: tzinfo = timezone.utc) -> datetime:
    """The next midnight after ``now`` in ``tz`` (when a daily quota resets)."""
    local = now.astimezone(tz)
    return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------- the policy interface


class RateLimitPolicy:
    """The core's interface to a vendor's rate limiting; the default reads only ``Retry-After``.

    An :class:`ApiSession` holds one policy and asks it, for every response:

    * :meth:`observe` -- learn from any response (remaining-budget headers, a GraphQL cost) and
      pause the whole account early through the :class:`AccountLimiter`;
    * :meth:`is_throttled` -- whether a *successful* status says "throttled" in its body;
    * :meth:`quota_resume_at` -- for a 429: when an account-wide quota that is spent resets
      (the session then raises :class:`~synchub.errors.QuotaExhausted`);
    * :meth:`throttle_wait` -- for a throttled response: how long to wait before trying again.

    Class attributes size the account's budget (:meth:`new_limiter`): ``rate``/``burst`` for a
    client-side token bucket, ``max_concurrent`` for a cap on requests in flight, and
    ``bare_error_is_throttle`` when a 403/429 without a JSON body means "slow down". ``vendor``
    names the budget: sessions with the same vendor and account share one limiter.

    Vendor policies live in their plugins (``synchub_hubspot.HubSpotPolicy``,
    ``synchub_mailchimp.MailchimpPolicy``, ``synchub_shopify.ShopifyPolicy``); a third-party
    connector subclasses this class the same way.
    """

    vendor = "generic"
    #: Requests per second and bucket size of the account budget (None: no client-side bucket).
    rate: float | None = None
    burst: int | None = None
    #: Simultaneous requests per account (None: no cap).
    max_concurrent: int | None = None
    #: A 403/429 without a JSON body means "slow down", not "credentials revoked" (Mailchimp).
    bare_error_is_throttle = False

    def new_limiter(self, clock: Clock, sleep: Sleep) -> AccountLimiter:
        """The budget of a new account (called once per vendor and account)."""
        return AccountLimiter(
            rate=self.rate,
            burst=self.burst,
            max_concurrent=self.max_concurrent,
            clock=clock,
            sleep=sleep,
        )

    def observe(self, response: httpx.Response, limiter: AccountLimiter, now: datetime) -> None:
        """Learn from any response (e.g. remaining-budget headers) and pause the account early."""

    def is_throttled(self, response: httpx.Response) -> bool:
        """A successful status whose body says the request was throttled."""
        return False

    def quota_resume_at(self, response: httpx.Response, now: datetime) -> datetime | None:
        """For a 429: when the response says an account-wide quota is spent, when it resets."""
        return None

    def throttle_wait(self, response: httpx.Response, now: datetime) -> float | None:
        """Seconds to wait after a throttled response (None: the session's backoff decides)."""
        return parse_retry_after(response.headers.get("Retry-After"), now)


#: Deprecated names of the vendor policies, which moved into their plugins.
_MOVED_POLICIES = {
    "HubSpotPolicy": "synchub_hubspot",
    "MailchimpPolicy": "synchub_mailchimp",
    "ShopifyPolicy": "synchub_shopify",
}


def __getattr__(name: str) -> Any:
    """Deprecated aliases: ``synchub.http.HubSpotPolicy`` and friends live in their plugins now."""
    module = _MOVED_POLICIES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(
        f"synchub.http.{name} moved to {module}.{name}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- OAuth tokens


@dataclass
class TokenGrant:
    """What a refresh callback returns."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None


class OAuthToken:
    """An access token that refreshes itself ``margin`` before expiry and after a 401.

    ``refresh`` is called with the current refresh token and returns a :class:`TokenGrant`.
    Thread-safe: concurrent callers that saw the same stale token cause one refresh only.
    """

    def __init__(
        self,
        access_token: str,
        *,
        refresh_token: str | None = None,
        expires_at: datetime | None = None,
        refresh: Callable[[str | None], TokenGrant] | None = None,
        margin: timedelta = timedelta(minutes=5),
        now: Now = _utcnow,
    ):
        self._lock = threading.Lock()
        self._refresh = refresh
        self.margin = margin
        self._now = now
        self.refresh_count = 0
        self.refresh_token: str | None = None
        self._set(TokenGrant(access_token, refresh_token, expires_at))

    def _set(self, grant: TokenGrant) -> None:
        register_secret(grant.access_token)
        if grant.refresh_token:  # a grant without one keeps the current refresh token
            register_secret(grant.refresh_token)
            self.refresh_token = grant.refresh_token
        self.access_token = grant.access_token
        self.expires_at = grant.expires_at

    @property
    def can_refresh(self) -> bool:
        return self._refresh is not None

    def _stale(self) -> bool:
        return self.expires_at is not None and self._now() >= self.expires_at - self.margin

    def get(self) -> str:
        """The access token, refreshed first when it expires within ``margin``."""
        with self._lock:
            if self._stale() and self._refresh is not None:
                self._do_refresh()
            return self.access_token

    def refresh_after_401(self, rejected: str) -> str:
        """Refresh because ``rejected`` got a 401, unless another thread already did."""
        with self._lock:
            if self._refresh is None:
                raise AuthError("access token rejected and no refresh is configured")
            if self.access_token == rejected:
                self._do_refresh()
            return self.access_token

    def _do_refresh(self) -> None:
        assert self._refresh is not None
        try:
            grant = self._refresh(self.refresh_token)
        except AuthError:
            raise
        except Exception as exc:
            raise AuthError(f"token refresh failed: {redact(exc)}") from None
        self.refresh_count += 1
        self._set(grant)

    def __repr__(self) -> str:
        return f"OAuthToken(access_token={MASK!r}, expires_at={self.expires_at!r})"


# --------------------------------------------------------------------------- the session


class _UnknownOutcome(RetryableError):
    """Transient, but the request may have been processed: resend only if idempotent."""


class ApiSession:
    """Sends a connection's requests with retries, account budgets and redaction.

    ``account`` identifies the API account the budget is shared by (e.g. :func:`account_key`
    of the token, or the portal/shop id); by default it is derived from the credentials.
    ``sleep``, ``clock`` (monotonic) and ``now`` (UTC wall clock) are injectable for tests.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        policy: RateLimitPolicy | None = None,
        account: str | None = None,
        token: OAuthToken | None = None,
        registry: LimiterRegistry | None = None,
        is_throttled: Callable[[httpx.Response], bool] | None = None,
        max_attempts: int = 5,
        max_total_wait: float = 300.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        allow_any_host: bool = False,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        now: Now = _utcnow,
        rng: random.Random | None = None,
    ):
        self.client = client
        self.policy = policy or RateLimitPolicy()
        self.token = token
        self._is_throttled = is_throttled or self.policy.is_throttled
        self.max_attempts = max_attempts
        self.max_total_wait = max_total_wait
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.allow_any_host = allow_any_host
        self._sleep = sleep
        self._now = now
        self._rng = rng or random.Random()
        #: Requests sent (each attempt counts), retries and throttled responses: run history
        #: and ``/metrics`` report them per connection.
        self.request_count = 0
        self.retry_count = 0
        self.throttle_count = 0
        self.total_wait = 0.0
        self.account = account or self._derive_account()
        self.limiter = (registry or default_registry).get(
            self.policy.vendor, self.account, lambda: self.policy.new_limiter(clock, sleep)
        )

    def _derive_account(self) -> str:
        if self.token is not None:
            return account_key(self.token.refresh_token or self.token.access_token)
        for name in ("authorization", "x-shopify-access-token", "private-app", "x-api-key"):
            if name in self.client.headers:
                return account_key(self.client.headers[name])
        auth = self.client.auth
        fingerprint = getattr(auth, "account_fingerprint", None)
        if callable(fingerprint):  # the authenticators of synchub.kit.auth
            return str(fingerprint())
        if isinstance(auth, httpx.BasicAuth):
            return account_key(auth._auth_header)
        # No credentials we can see: a budget of its own.
        return f"session-{id(self)}"

    def __repr__(self) -> str:
        return f"ApiSession(vendor={self.policy.vendor!r}, base_url={mask_url(self.client.base_url)!r})"

    # -- public ---------------------------------------------------------------------------

    def request(
        self, method: str, url: str, *, idempotent: bool | None = None, **kw: Any
    ) -> httpx.Response:
        """Send a request; return the successful (or 3xx) response, or raise a synchub error.

        ``kw`` is passed to ``httpx.Client.request`` (params, json, headers, ...).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        self._check_url(url)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: (
                    isinstance(e, RetryableError)
                    and (idempotent or not isinstance(e, _UnknownOutcome))
                )
            ),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep,
            before_sleep=lambda rs: self._before_sleep(method, url, rs),
            reraise=True,
        )
        return retrying(self._attempt, method, url, kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def close(self) -> None:
        self.client.close()

    # -- one attempt ----------------------------------------------------------------------

    def _check_url(self, url: str) -> None:
        target = httpx.URL(url)
        if (
            target.is_absolute_url
            and not self.allow_any_host
            and target.host != self.client.base_url.host
        ):
            raise ConfigError(f"refusing to send to {target.host!r}: not the connection's host")

    def _attempt(self, method: str, url: str, kw: dict[str, Any]) -> httpx.Response:
        refreshed = False
        while True:
            now = self._now()
            resume = self.limiter.quota_resume_at
            if resume is not None and now < resume:
                raise QuotaExhausted(
                    f"{self.policy.vendor} quota spent until {resume.isoformat()}", resume_at=resume
                )
            paused = self.limiter.pause_remaining()
            if paused > self.max_total_wait:
                raise RateLimited(
                    f"{self.policy.vendor} account paused for {paused:.0f}s more",
                    retry_after=paused,
                )
            waited = self.limiter.acquire()
            self.total_wait += waited
            access = self.token.get() if self.token is not None else None
            headers = dict(kw.get("headers") or {})
            if access is not None:
                headers["Authorization"] = f"Bearer {access}"
            send_kw = {**kw, "headers": headers}
            self.request_count += 1
            try:
                with self.limiter.slot():
                    response = self.client.request(method, url, **send_kw)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise RetryableError(
                    f"{method} {mask_url(url)}: {type(exc).__name__}: {redact(exc)}"
                ) from None
            except httpx.TransportError as exc:  # read/write timeouts, dropped connections
                raise _UnknownOutcome(
                    f"{method} {mask_url(url)}: {type(exc).__name__} (outcome unknown): {redact(exc)}"
                ) from None
            now = self._now()
            self.policy.observe(response, self.limiter, now)
            log.debug("%s %s -> %d", method, mask_url(response.request.url), response.status_code)
            if response.status_code == 401:
                if self.token is not None and self.token.can_refresh and not refreshed:
                    refreshed = True
                    self.retry_count += 1
                    log.info("%s %s: 401, refreshing the access token once", method, mask_url(url))
                    self.token.refresh_after_401(access or "")
                    continue
                raise AuthError(self._describe(method, response, "credentials rejected"))
            return self._classify(method, response, now)

    def _classify(self, method: str, response: httpx.Response, now: datetime) -> httpx.Response:
        status = response.status_code
        body = response_json(response)
        bare = body is None
        throttled = status == 429 or (status == 403 and bare and self.policy.bare_error_is_throttle)
        if status == 429:
            resume = self.policy.quota_resume_at(response, now)
            if resume is not None:
                self.limiter.exhaust(resume)
                raise QuotaExhausted(
                    self._describe(method, response, f"quota spent until {resume.isoformat()}"),
                    resume_at=resume,
                )
        if throttled or (status < 300 and self._is_throttled(response)):
            self.throttle_count += 1
            wait = self.policy.throttle_wait(response, now)
            if wait is not None:
                self.limiter.pause_for(wait)
            raise RateLimited(self._describe(method, response, "throttled"), retry_after=wait)
        if status >= 500:
            raise _UnknownOutcome(self._describe(method, response, "server error"))
        if status >= 400:
            raise RequestRejected(
                self._describe(method, response, "rejected"),
                status=status,
                body=self._excerpt(response),
            )
        return response

    @staticmethod
    def _excerpt(response: httpx.Response) -> str:
        try:
            text = response.text
        except Exception:
            return ""
        text = " ".join(text.split())
        if len(text) > BODY_EXCERPT:
            text = text[:BODY_EXCERPT] + "..."
        return redact(text)

    def _describe(self, method: str, response: httpx.Response, what: str) -> str:
        excerpt = self._excerpt(response)
        tail = f": {excerpt}" if excerpt else ""
        return redact(
            f"{method} {mask_url(response.request.url)} {what} (HTTP {response.status_code}){tail}"
        )

    # -- tenacity hooks -------------------------------------------------------------------

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (rs.attempt_number - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _stop(self, rs: tenacity.RetryCallState) -> bool:
        if rs.attempt_number >= self.max_attempts:
            return True
        return rs.idle_for + rs.upcoming_sleep > self.max_total_wait

    def _before_sleep(self, method: str, url: str, rs: tenacity.RetryCallState) -> None:
        self.retry_count += 1
        self.total_wait += rs.upcoming_sleep
        exc = rs.outcome.exception() if rs.outcome else None
        log.warning(
            "%s %s failed (%s), retry %d in %.2fs",
            method,
            mask_url(url),
            redact(exc),
            rs.attempt_number,
            rs.upcoming_sleep,
        )


__all__ = [
    "AccountLimiter",
    "ApiSession",
    "HttpClientFactory",
    "LimiterRegistry",
    "OAuthToken",
    "RateLimitPolicy",
    "RequestRejected",
    "TokenGrant",
    "account_key",
    "build_client",
    "check_base_url",
    "default_registry",
    "header_number",
    "host_allowed",
    "json_object",
    "mask_url",
    "next_midnight",
    "parse_retry_after",
    "response_json",
]
