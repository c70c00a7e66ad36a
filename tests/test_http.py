"""The shared HTTP layer: retries, vendor throttling, account budgets, auth, SSRF, redaction."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
import respx

from synchub.errors import (
    AuthError,
    ConfigError,
    FatalRunError,
    QuotaExhausted,
    RateLimited,
    RetryableError,
)
from synchub.http import (
    ApiSession,
    HttpClientFactory,
    LimiterRegistry,
    OAuthToken,
    RateLimitPolicy,
    RequestRejected,
    TokenGrant,
    build_client,
    mask_url,
)
from synchub_hubspot import HubSpotPolicy
from synchub_mailchimp import MailchimpPolicy
from synchub_shopify import ShopifyPolicy

HUBSPOT = ("api.hubapi.com",)
MAILCHIMP = (".api.mailchimp.com",)
SHOPIFY = (".myshopify.com",)
HS = "https://api.hubapi.com"


class FakeTime:
    """Monotonic clock, wall clock and sleep that only move when something sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.start = datetime(2026, 11, 23, 15, 30, tzinfo=timezone.utc)
        self.sleeps: list[float] = []
        self.events: list[str] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.events.append(f"sleep {seconds:g}")
        self.t += seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def registry() -> LimiterRegistry:
    return LimiterRegistry()


def session(
    ft: FakeTime,
    registry: LimiterRegistry,
    *,
    token: str = "pat-na1-aaaa-1111",
    base_url: str = HS,
    allowed=HUBSPOT,
    transport=None,
    policy=None,
    **kw,
) -> ApiSession:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = build_client(base_url, allowed_hosts=allowed, headers=headers, transport=transport)
    return ApiSession(
        client,
        policy=policy or HubSpotPolicy(rate=None),
        registry=registry,
        sleep=ft.sleep,
        clock=ft.clock,
        now=ft.now,
        rng=random.Random(7),
        **kw,
    )


# --------------------------------------------------------------------------- retries


@respx.mock
def test_429_burst_then_success_honours_retry_after_seconds_and_date(ft, registry):
    s = session(ft, registry)
    date = format_datetime(ft.now() + timedelta(seconds=2 + 5), usegmt=True)  # after the first wait
    route = respx.get(f"{HS}/crm/v3/objects/contacts").mock(
        side_effect=[
            httpx.Response(
                429, headers={"Retry-After": "2"}, json={"policyName": "TEN_SECONDLY_ROLLING"}
            ),
            httpx.Response(429, headers={"Retry-After": date}),
            httpx.Response(200, json={"results": []}),
        ]
    )
    r = s.get("/crm/v3/objects/contacts")
    assert r.status_code == 200
    assert route.call_count == 3
    assert ft.sleeps == [2.0, 5.0]
    assert s.retry_count == 2
    assert s.throttle_count == 2


@respx.mock
def test_5xx_retried_with_exponential_backoff_and_jitter(ft, registry):
    s = session(ft, registry, backoff_base=1.0)
    route = respx.get(f"{HS}/x").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(502),
            httpx.Response(500),
            httpx.Response(200),
        ]
    )
    assert s.get("/x").status_code == 200
    assert route.call_count == 4
    assert len(ft.sleeps) == 3
    for n, wait in enumerate(ft.sleeps):
        ceiling = 2.0**n
        assert ceiling / 2 <= wait <= ceiling
    assert s.retry_count == 3


@respx.mock
def test_5xx_on_post_is_not_resent_unless_idempotent(ft, registry):
    s = session(ft, registry)
    route = respx.post(f"{HS}/create").mock(return_value=httpx.Response(500))
    with pytest.raises(RetryableError):
        s.post("/create", json={"a": 1})
    assert route.call_count == 1

    search = respx.post(f"{HS}/search").mock(side_effect=[httpx.Response(500), httpx.Response(200)])
    assert s.post("/search", json={}, idempotent=True).status_code == 200
    assert search.call_count == 2


@respx.mock
def test_timeouts_and_connection_errors_retried(ft, registry):
    s = session(ft, registry)
    route = respx.get(f"{HS}/slow").mock(
        side_effect=[
            httpx.ReadTimeout("read timed out"),
            httpx.ConnectError("refused"),
            httpx.Response(200),
        ]
    )
    assert s.get("/slow").status_code == 200
    assert route.call_count == 3
    assert s.retry_count == 2

    # a POST whose connection was never made is safe to send again; a read timeout is not
    post = respx.post(f"{HS}/w").mock(side_effect=[httpx.ConnectTimeout("t"), httpx.Response(201)])
    assert s.post("/w").status_code == 201
    assert post.call_count == 2
    post2 = respx.post(f"{HS}/w2").mock(side_effect=[httpx.ReadTimeout("t"), httpx.Response(201)])
    with pytest.raises(RetryableError, match="outcome unknown"):
        s.post("/w2")
    assert post2.call_count == 1


@respx.mock
def test_retries_give_up_after_max_attempts_and_max_total_wait(ft, registry):
    s = session(ft, registry, max_attempts=3)
    route = respx.get(f"{HS}/busy").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "1"})
    )
    with pytest.raises(RateLimited):
        s.get("/busy")
    assert route.call_count == 3
    assert ft.sleeps == [1.0, 1.0]

    assert s.limiter.pause_remaining() == 1.0  # the last Retry-After holds for the whole account
    ft.sleeps.clear()
    ft.t += 5
    s2 = session(ft, registry, max_total_wait=60)
    route2 = respx.get(f"{HS}/later").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    with pytest.raises(RateLimited) as info:
        s2.get("/later")
    assert info.value.retry_after == 3600
    assert route2.call_count == 1
    assert ft.sleeps == []
    # the account stays paused: the next request does not even go out, and does not sleep an hour
    with pytest.raises(RateLimited):
        s.get("/busy")
    assert route.call_count == 3
    assert ft.sleeps == []


# --------------------------------------------------------------------------- auth


@respx.mock
def test_401_is_auth_error_without_retry(ft, registry):
    s = session(ft, registry)
    route = respx.get(f"{HS}/me").mock(
        return_value=httpx.Response(401, json={"message": "expired"})
    )
    with pytest.raises(AuthError):
        s.get("/me")
    assert route.call_count == 1
    assert ft.sleeps == []


@respx.mock
def test_401_with_refresh_retries_once_with_the_new_token(ft, registry):
    calls: list[str | None] = []

    def refresh(refresh_token):
        calls.append(refresh_token)
        return TokenGrant(f"access-new-{len(calls)}", "refresh-2222", ft.now() + timedelta(hours=1))

    token = OAuthToken(
        "access-old-0000",
        refresh_token="refresh-1111",
        expires_at=ft.now() + timedelta(hours=1),
        refresh=refresh,
        now=ft.now,
    )
    client = build_client(HS, allowed_hosts=HUBSPOT)
    s = ApiSession(
        client,
        policy=HubSpotPolicy(rate=None),
        token=token,
        registry=registry,
        sleep=ft.sleep,
        clock=ft.clock,
        now=ft.now,
    )
    route = respx.get(f"{HS}/me").mock(side_effect=[httpx.Response(401), httpx.Response(200)])
    assert s.get("/me").status_code == 200
    sent = [c.request.headers["Authorization"] for c in route.calls]
    assert sent == ["Bearer access-old-0000", "Bearer access-new-1"]
    assert calls == ["refresh-1111"]
    assert s.retry_count == 1

    # still 401 after the refresh: authentication problem, one refresh only
    route.side_effect = None
    route.return_value = httpx.Response(401)
    with pytest.raises(AuthError):
        s.get("/me")
    assert route.call_count == 4
    assert len(calls) == 2


def test_oauth_token_refreshes_ahead_of_expiry(ft):
    grants = iter([TokenGrant("second-token", None, ft.now() + timedelta(hours=1))])
    token = OAuthToken(
        "first-token",
        refresh_token="rt-123456",
        expires_at=ft.now() + timedelta(minutes=6),
        refresh=lambda rt: next(grants),
        margin=timedelta(minutes=5),
        now=ft.now,
    )
    assert token.get() == "first-token"
    ft.sleep(61)  # now 4m59s before expiry: inside the margin
    assert token.get() == "second-token"
    assert token.refresh_token == "rt-123456"  # kept when the grant has none
    assert "first-token" not in repr(token) and "second-token" not in repr(token)


# --------------------------------------------------------------------------- rejections and quotas


@respx.mock
def test_400_is_request_rejected_with_status_and_body(ft, registry):
    s = session(ft, registry)
    route = respx.post(f"{HS}/crm/v3/objects/contacts").mock(
        return_value=httpx.Response(
            400, json={"message": "Property values were not valid", "x": "y" * 2000}
        )
    )
    with pytest.raises(RequestRejected) as info:
        s.post("/crm/v3/objects/contacts", json={})
    assert isinstance(info.value, FatalRunError)
    assert info.value.status == 400
    assert "Property values were not valid" in info.value.body
    assert len(info.value.body) < 400
    assert "HTTP 400" in str(info.value)
    assert route.call_count == 1


@respx.mock
def test_daily_quota_429_raises_quota_exhausted_and_stops_the_account(ft, registry):
    s = session(ft, registry)
    route = respx.get(f"{HS}/c").mock(
        return_value=httpx.Response(
            429, json={"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY"}
        )
    )
    with pytest.raises(QuotaExhausted) as info:
        s.get("/c")
    assert info.value.resume_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert route.call_count == 1
    assert ft.sleeps == []

    # another connection on the same portal does not even send
    other = session(ft, registry)
    with pytest.raises(QuotaExhausted):
        other.get("/c")
    assert route.call_count == 1


@respx.mock
def test_hubspot_headers_near_exhaustion_pause_before_next_request(ft, registry):
    s = session(ft, registry)

    def handler(request):
        ft.events.append("send")
        return httpx.Response(
            200,
            json={},
            headers={
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "3",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Daily-Remaining": "5000",
            },
        )

    respx.get(f"{HS}/c").mock(side_effect=handler)
    s.get("/c")
    s.get("/c")
    assert ft.events == ["send", "sleep 10", "send"]
    assert s.retry_count == 0


@respx.mock
def test_hubspot_plenty_remaining_means_no_pause(ft, registry):
    s = session(ft, registry)
    respx.get(f"{HS}/c").mock(
        return_value=httpx.Response(
            200,
            headers={
                "X-HubSpot-RateLimit-Max": "100",
                "X-HubSpot-RateLimit-Remaining": "60",
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            },
        )
    )
    s.get("/c")
    s.get("/c")
    assert ft.sleeps == []


@respx.mock
def test_hubspot_daily_remaining_zero_stops_before_the_next_request(ft, registry):
    s = session(ft, registry)
    route = respx.get(f"{HS}/c").mock(
        return_value=httpx.Response(200, headers={"X-HubSpot-RateLimit-Daily-Remaining": "0"})
    )
    assert s.get("/c").status_code == 200
    with pytest.raises(QuotaExhausted) as info:
        s.get("/c")
    assert info.value.resume_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert route.call_count == 1
    ft.t += 9 * 3600  # past midnight: the quota is back
    assert s.get("/c").status_code == 200
    assert route.call_count == 2


@respx.mock
def test_shopify_rest_call_limit_header_pauses_when_the_bucket_is_nearly_full(ft, registry):
    shop = "https://demo.myshopify.com/admin/api/2025-01"
    client = build_client(shop, allowed_hosts=SHOPIFY)
    s = ApiSession(
        client,
        policy=ShopifyPolicy(),
        registry=registry,
        sleep=ft.sleep,
        clock=ft.clock,
        now=ft.now,
    )
    respx.get(f"{shop}/customers.json").mock(
        side_effect=[
            httpx.Response(200, headers={"X-Shopify-Shop-Api-Call-Limit": "20/40"}),
            httpx.Response(200, headers={"X-Shopify-Shop-Api-Call-Limit": "39/40"}),
            httpx.Response(200),
            httpx.Response(200),
        ]
    )
    s.get("/customers.json")
    s.get("/customers.json")
    assert ft.sleeps == []
    s.get("/customers.json")  # 1 slot left, reserve 2: drain one request at 2/s first
    assert ft.sleeps == [pytest.approx(0.5)]


# --------------------------------------------------------------------------- shared budgets


@respx.mock
def test_sessions_with_the_same_token_share_one_budget(ft, registry):
    respx.get(f"{HS}/c").mock(return_value=httpx.Response(200))
    policy = HubSpotPolicy(rate=1.0, burst=1)
    a = session(ft, registry, token="pat-same-1234", policy=policy)
    b = session(ft, registry, token="pat-same-1234", policy=policy)
    assert a.limiter is b.limiter
    a.get("/c")
    b.get("/c")
    assert ft.sleeps == [pytest.approx(1.0)]

    ft.sleeps.clear()
    ft.t += 10  # bucket full again
    c = session(ft, registry, token="pat-other-5678", policy=policy)
    assert c.limiter is not a.limiter
    a.get("/c")
    c.get("/c")
    assert ft.sleeps == []
    assert "pat-same-1234" not in a.account


def test_concurrency_cap_per_account_under_threads(registry):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(handler)
    policy = MailchimpPolicy(max_concurrent=3)

    def mk(key: str) -> ApiSession:
        client = build_client(
            "https://us21.api.mailchimp.com/3.0",
            allowed_hosts=MAILCHIMP,
            auth=("anystring", key),
            transport=transport,
        )
        return ApiSession(client, policy=policy, registry=registry)

    sessions = [mk("mc-key-abcdef-us21"), mk("mc-key-abcdef-us21")]
    assert sessions[0].limiter is sessions[1].limiter
    threads = [threading.Thread(target=sessions[i % 2].get, args=("/lists",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 3

    # a different API key has its own 3 connections
    other = mk("mc-key-zzzzzz-us21")
    assert other.limiter is not sessions[0].limiter


@respx.mock
def test_mailchimp_bare_403_is_throttling_but_json_403_is_not(ft, registry):
    mc = "https://us21.api.mailchimp.com/3.0"
    s = session(ft, registry, token="", base_url=mc, allowed=MAILCHIMP, policy=MailchimpPolicy())
    route = respx.get(f"{mc}/lists").mock(
        side_effect=[
            httpx.Response(403, text="<html>Forbidden</html>"),
            httpx.Response(429, text=""),
            httpx.Response(200, json={}),
        ]
    )
    assert s.get("/lists").status_code == 200
    assert route.call_count == 3
    assert s.throttle_count == 2

    respx.get(f"{mc}/ping").mock(
        return_value=httpx.Response(403, json={"title": "API Key Invalid", "status": 403})
    )
    with pytest.raises(RequestRejected) as info:
        s.get("/ping")
    assert info.value.status == 403


@respx.mock
def test_shopify_throttled_200_is_retried_after_restore_time(ft, registry):
    shop = "https://demo.myshopify.com/admin/api/2025-01"
    client = build_client(
        shop, allowed_hosts=SHOPIFY, headers={"X-Shopify-Access-Token": "shpat_secret_999"}
    )
    s = ApiSession(
        client,
        policy=ShopifyPolicy(rate=None),
        registry=registry,
        sleep=ft.sleep,
        clock=ft.clock,
        now=ft.now,
    )
    throttled = {
        "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {
            "cost": {
                "requestedQueryCost": 202,
                "actualQueryCost": None,
                "throttleStatus": {
                    "maximumAvailable": 2000,
                    "currentlyAvailable": 2,
                    "restoreRate": 100,
                },
            }
        },
    }
    route = respx.post(f"{shop}/graphql.json").mock(
        side_effect=[
            httpx.Response(200, json=throttled),
            httpx.Response(200, json={"data": {"customers": {}}}),
        ]
    )
    r = s.post(
        "/graphql.json",
        json={"query": "{ customers(first: 10) { nodes { id } } }"},
        idempotent=True,
    )
    assert r.json() == {"data": {"customers": {}}}
    assert route.call_count == 2
    assert ft.sleeps == [pytest.approx(2.01)]  # (202 - 2 + 1 spare point) / 100


@respx.mock
def test_custom_is_throttled_hook(ft, registry):
    s = session(
        ft, registry, policy=RateLimitPolicy(), is_throttled=lambda r: r.json().get("busy") is True
    )
    route = respx.get(f"{HS}/c").mock(
        side_effect=[
            httpx.Response(200, json={"busy": True}),
            httpx.Response(200, json={"busy": False}),
        ]
    )
    assert s.get("/c").json() == {"busy": False}
    assert route.call_count == 2
    assert len(ft.sleeps) == 1


# --------------------------------------------------------------------------- hosts and clients


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com",
        "https://api.hubapi.com.evil.com",
        "https://xapi.hubapi.com",
        "http://api.hubapi.com",
        "https://169.254.169.254/latest",
    ],
)
def test_base_url_outside_the_allow_list_is_refused(url):
    with pytest.raises(ConfigError):
        build_client(url, allowed_hosts=HUBSPOT)


def test_allow_list_matching_and_explicit_override():
    build_client("https://api.hubapi.com", allowed_hosts=HUBSPOT)
    build_client("https://us21.api.mailchimp.com/3.0", allowed_hosts=MAILCHIMP)
    with pytest.raises(ConfigError):
        # a leading dot means subdomains only
        build_client("https://api.mailchimp.com", allowed_hosts=MAILCHIMP)
    client = build_client("http://127.0.0.1:4010", allowed_hosts=HUBSPOT, allow_any_host=True)
    assert client.base_url.host == "127.0.0.1"


@respx.mock
def test_absolute_url_to_another_host_is_refused(ft, registry):
    s = session(ft, registry)
    with pytest.raises(ConfigError):
        s.get("https://attacker.example.com/steal")
    route = respx.get(f"{HS}/crm/v3/objects/contacts").mock(return_value=httpx.Response(200))
    s.get(f"{HS}/crm/v3/objects/contacts?after=2")  # a paging link on the same host is fine
    assert route.call_count == 1


def test_factory_timeout_and_injected_transport():
    seen = []
    transport = httpx.MockTransport(lambda r: seen.append(r.url.path) or httpx.Response(200))
    factory = HttpClientFactory(
        allowed_hosts=MAILCHIMP,
        timeout=120.0,
        transport=transport,
        headers={"User-Agent": "synchub"},
    )
    client = factory.build(
        "https://us21.api.mailchimp.com/3.0", headers={"Accept": "application/json"}
    )
    assert client.timeout.read == 120.0
    assert client.timeout.connect == 10.0
    assert client.headers["User-Agent"] == "synchub"
    client.get("/ping")
    assert seen == ["/3.0/ping"]
    with pytest.raises(ConfigError):
        factory.build("https://example.org")


# --------------------------------------------------------------------------- secrets


def test_mask_url_hides_secret_query_parameters():
    masked = mask_url(
        "https://api.hubapi.com/c?hapikey=hk-plain-1&limit=10&access_token=at-plain-2&apikey=ak3"
    )
    assert "hk-plain-1" not in masked and "at-plain-2" not in masked and "ak3" not in masked
    assert "limit=10" in masked


@respx.mock
def test_secrets_absent_from_errors_reprs_and_logs(ft, registry, caplog):
    token = "pat-na1-topsecret-42"
    hapikey = "hapikey-value-9999"
    s = session(ft, registry, token=token)
    respx.get(f"{HS}/c").mock(
        side_effect=[
            httpx.Response(503, text=f"upstream saw Bearer {token}"),
            httpx.Response(400, json={"message": f"bad token {token}"}),
        ]
    )
    caplog.set_level(logging.DEBUG, logger="synchub.http")
    with pytest.raises(RequestRejected) as info:
        s.get("/c", params={"hapikey": hapikey, "limit": 5})
    texts = [str(info.value), repr(info.value), info.value.body, repr(s)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("retry 1" in r.getMessage() for r in caplog.records)  # the retry was logged
    for text in texts:
        assert token not in text
        assert hapikey not in text
        assert "Authorization" not in text
