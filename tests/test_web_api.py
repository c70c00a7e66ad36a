"""The console's REST API (issue 19) on the demo store, on both backends: every route's
authentication and role from one table, sessions with CSRF, the login rate limit, security
headers, bulk decisions audited with the user, what roles without personal data see, split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from synchub import accounts
from synchub import store as st
from synchub.config import load_config
from synchub.engine import Hub
from synchub.web.api import COOKIE, CSRF_HEADER, ROUTES, SECURITY_HEADERS, create_app
from tests.helpers import web_server

PASSWORD = "a long enough password"


@pytest.fixture
def hub(demo_dir: Path, store_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    h = Hub(load_config(demo_dir / "config" / "demo.yaml"))
    h.store.upgrade()
    h.sync()  # 82 customers, 4 open conflicts, 3 rejected rows
    for role in accounts.ROLES:
        accounts.add_user(h.store, role, role, PASSWORD)
    yield h
    h.store.dispose()


@pytest.fixture
def client(hub: Hub) -> TestClient:
    return TestClient(create_app(hub))


def _token(hub: Hub, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {accounts.add_token(hub.store, role, 'test')}"}


def _login(client: TestClient, name: str) -> str:
    r = client.post("/api/v1/session", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert COOKIE in r.cookies
    return str(r.json()["csrf_token"])


def _path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", template)


#: A request body each route accepts far enough to get past validation.
BODIES: dict[str, Any] = {
    "/api/v1/decisions": {"ids": [999999], "action": "dismiss"},
    "/api/v1/customers/{customer_id}/split": {},
    "/api/v1/users": {"name": "zed", "role": "viewer", "password": PASSWORD},
    "/api/v1/users/{name}": {"language": "de"},
    "/api/v1/session": {"name": "nobody", "password": "x"},
    "/api/v1/connections/{name}/runs": None,
    "/api/v1/customers/{customer_id}/erase": {"confirm": True},
}
QUERIES = {"/api/v1/customers": {"q": "Müller"}}


def test_every_route_is_in_the_table_and_checks_login_and_role(client: TestClient, hub: Hub) -> None:
    app_routes = {(m, r.path) for r in client.app.routes if r.path.startswith("/api/v1/") and r.path != "/api/v1/openapi.json"
                  for m in getattr(r, "methods", ()) if m != "HEAD"}
    assert app_routes == set(ROUTES), "a route without a permission in the table"
    tokens = {role: _token(hub, role) for role in accounts.ROLES}
    checked = 0
    for (method, template), permission in sorted(ROUTES.items()):
        if permission is None:
            continue
        path, kwargs = _path(template), {"params": QUERIES.get(template, {})}
        if method in ("POST", "PATCH", "PUT") and BODIES[template] is not None:
            kwargs["json"] = BODIES[template]
        anonymous = client.request(method, path, **kwargs)
        assert anonymous.status_code == 401, (method, template, anonymous.status_code)
        for role, headers in tokens.items():
            if (method, template) in (("PATCH", "/api/v1/users/{name}"), ("DELETE", "/api/v1/session")):
                kwargs = {**kwargs, "json": BODIES.get(template)} if method == "PATCH" else kwargs
            r = client.request(method, path.replace("/users/1", f"/users/{role}"), headers=headers, **kwargs)
            allowed = role in accounts.PERMISSIONS[permission]
            if allowed:
                assert r.status_code not in (401, 403), (method, template, role, r.status_code, r.text)
            else:
                assert r.status_code == 403 and permission in r.json()["detail"], (method, template, role, r.status_code)
            checked += 1
    assert checked >= 4 * 12


def test_login_sets_a_strict_http_only_cookie_and_state_changes_need_the_csrf_token(client: TestClient, hub: Hub) -> None:
    r = client.post("/api/v1/session", json={"name": "steward", "password": PASSWORD})
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    csrf = r.json()["csrf_token"]
    assert r.json()["permissions"] == ["read", "read_personal", "review", "run", "segments"]
    assert client.get("/api/v1/me").json()["name"] == "steward"
    body = {"ids": [1], "action": "dismiss"}
    refused = client.post("/api/v1/decisions", json=body)
    assert refused.status_code == 403 and CSRF_HEADER in refused.json()["detail"]
    refused = client.post("/api/v1/decisions", json=body, headers={CSRF_HEADER: "0" * 64})
    assert refused.status_code == 403
    open_before = hub.store.list_conflicts("open")
    ok = client.post("/api/v1/decisions", json={"ids": [open_before[0]["id"]], "action": "dismiss"},
                     headers={CSRF_HEADER: csrf})
    assert ok.status_code == 200 and ok.json()[0]["ok"], ok.text
    assert client.delete("/api/v1/session", headers={CSRF_HEADER: csrf}).status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_wrong_passwords_are_rate_limited_with_retry_after(client: TestClient) -> None:
    for _ in range(accounts.MAX_FAILURES):
        assert client.post("/api/v1/session", json={"name": "admin", "password": "wrong password 123"}).status_code == 401
    r = client.post("/api/v1/session", json={"name": "admin", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_every_response_carries_the_security_headers(client: TestClient, hub: Hub) -> None:
    for r in (client.get("/api/v1/openapi.json"), client.get("/api/v1/conflicts"),
              client.get("/api/v1/conflicts", headers=_token(hub, "viewer"))):
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == value
    assert "'unsafe-inline'" not in SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_bulk_decisions_are_audited_with_the_user_and_report_each_conflict(client: TestClient, hub: Hub) -> None:
    headers = _token(hub, "steward")
    ids = [c["id"] for c in client.get("/api/v1/conflicts", headers=headers).json()]
    assert len(ids) == 4
    r = client.post("/api/v1/decisions", json={"ids": [*ids[:2], 999999], "action": "dismiss"}, headers=headers)
    results = {x["id"]: x for x in r.json()}
    assert results[ids[0]]["ok"] and results[ids[1]]["ok"]
    assert not results[999999]["ok"] and "no conflict 999999" in results[999999]["error"]
    assert {c["id"] for c in client.get("/api/v1/conflicts", headers=headers).json()} == set(ids[2:])
    # Deciding twice is refused, by conflict, without a server error.
    again = client.post("/api/v1/decisions", json={"ids": [ids[0]], "action": "dismiss"}, headers=headers).json()
    assert again == [{"id": ids[0], "ok": False, "result": None, "error": f"conflict {ids[0]} is already dismissed"}]
    with hub.store.engine.connect() as conn:
        actors = {r.actor for r in conn.execute(sa.select(st.audit_t).where(st.audit_t.c.action == "resolve"))}
    assert actors == {"user:steward"}


def test_roles_without_personal_data_see_names_only(client: TestClient, hub: Hub) -> None:
    steward, viewer = _token(hub, "steward"), _token(hub, "viewer")
    conflicts = client.get("/api/v1/conflicts", params={"kind": "field"}, headers=viewer).json()
    assert conflicts and all("value" not in c for x in conflicts for c in x["candidates"])
    assert any("value" in c for x in client.get("/api/v1/conflicts", params={"kind": "field"}, headers=steward).json()
               for c in x["candidates"])
    [hit] = [h for h in client.get("/api/v1/customers", params={"q": "Brandl"}, headers=steward).json() if h["name"]][:1]
    assert hit["email"]
    customer = client.get(f"/api/v1/customers/{hit['id']}", headers=viewer).json()
    assert set(customer["data"]) <= {"first_name", "last_name", "company_name", "salutation", "title"}
    assert customer["timeline"] == [] and customer["provenance"] == {}
    assert client.get("/api/v1/customers", params={"q": hit["email"]}, headers=viewer).json() == []
    full = client.get(f"/api/v1/customers/{hit['id']}", headers=steward).json()
    assert full["data"].get("emails") and full["sources"]


def test_a_rejected_row_is_shown_with_where_and_why(client: TestClient, hub: Hub) -> None:
    headers = _token(hub, "viewer")
    runs = client.get("/api/v1/runs", headers=headers).json()
    partial = next(r for r in runs if r["status"] == "partial")
    detail = client.get(f"/api/v1/runs/{partial['id']}", headers=headers).json()
    assert detail["rejected"] and all(x["ref"] and x["reason"] for x in detail["rejected"])
    assert all("raw" not in x for x in detail["rejected"])
    assert client.get("/api/v1/runs/999999", headers=headers).status_code == 404


def test_merge_and_split_through_the_api(client: TestClient, hub: Hub) -> None:
    headers = _token(hub, "steward")
    dup = next(c for c in client.get("/api/v1/conflicts", headers=headers).json() if c["kind"] == "possible_duplicate")
    [result] = client.post("/api/v1/decisions", json={"ids": [dup["id"]], "action": "merge"}, headers=headers).json()
    assert result["ok"], result
    survivor = result["result"]["survivor"]
    customer = client.get(f"/api/v1/customers/{survivor}", headers=headers).json()
    assert len(customer["sources"]) >= 2 and any(h["action"] == "merge" and h["actor"] == "user:steward" for h in customer["history"])
    split = client.post(f"/api/v1/customers/{survivor}/split", json={}, headers=headers)
    assert split.status_code == 200, split.text
    assert split.json()["split_off"] == result["result"]["merged"]
    assert client.post("/api/v1/customers/nope/split", json={}, headers=headers).status_code == 404


def test_users_are_managed_by_admins_through_the_api(client: TestClient, hub: Hub) -> None:
    admin = _token(hub, "admin")
    r = client.post("/api/v1/users", json={"name": "maria", "role": "marketing", "password": PASSWORD, "language": "de"},
                    headers=admin)
    assert r.status_code == 201 and r.json() == {"name": "maria", "role": "marketing", "language": "de", "disabled": False}
    assert client.post("/api/v1/users", json={"name": "maria", "role": "viewer", "password": PASSWORD},
                       headers=admin).status_code == 409
    assert client.post("/api/v1/users", json={"name": "x", "role": "viewer", "password": "short"},
                       headers=admin).status_code == 422
    assert client.patch("/api/v1/users/maria", json={"disabled": True}, headers=admin).json()["disabled"] is True
    assert client.post("/api/v1/session", json={"name": "maria", "password": PASSWORD}).status_code == 401
    with hub.store.engine.connect() as conn:
        audit = [(r.actor, r.action) for r in conn.execute(sa.select(st.audit_t).where(st.audit_t.c.action.like("user_%")))]
    assert ("user:admin", "user_add") in audit and ("user:admin", "user_change") in audit


def test_synchub_web_serves_the_api_on_loopback(demo_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import httpx

    env = {**os.environ, "SYNCHUB_STORE": f"sqlite:///{tmp_path / 'web.db'}"}
    cfg = str(demo_dir / "config" / "demo.yaml")
    subprocess.run([sys.executable, "-m", "synchub.cli", "--config", cfg, "users", "add", "anna", "--role", "viewer",
                    "--password-stdin"], input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
    with web_server(cfg, env) as base, httpx.Client(base_url=base) as web:
        assert web.get("/api/v1/conflicts").status_code == 401
        login = web.post("/api/v1/session", json={"name": "anna", "password": PASSWORD})
        assert login.status_code == 200 and "server" not in login.headers
        assert web.get("/api/v1/me").json()["role"] == "viewer"


def test_segment_counts_and_the_reoptin_list_for_marketing(hub: Hub, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = demo_dir / "config" / "demo.yaml"
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("        settings: {file: kunden_bereinigt.csv, dialect: excel-de}",
                                "        settings: {file: kunden_bereinigt.csv, dialect: excel-de}\n"
                                "        filter: {address.country: {in: [AT, CH]}}"), encoding="utf-8")
    monkeypatch.setenv("SYNCHUB_STORE", hub.store.url)
    client = TestClient(create_app(Hub(load_config(cfg))))
    marketing = _token(hub, "marketing")
    [segment] = client.get("/api/v1/segments", headers=marketing).json()
    expected = sum(1 for g in hub.store.iter_golden("person") if (g["data"].get("address") or {}).get("country") in ("AT", "CH"))
    assert segment["connection"] == "export" and segment["members"] == expected and 0 < expected < 82
    sizes = client.get("/api/v1/segments.csv", headers=marketing).content.decode("utf-8")
    assert sizes == f"\ufeffconnection;stream;entity;members\r\nexport;customers;person;{expected}\r\n"

    # A destination refused to subscribe someone who opted out there.
    person = next(iter(hub.store.search_golden("Brandl")))
    with hub.store.begin() as conn:
        st.insert_conflicts(conn, [{"fingerprint": "f" * 64, "kind": "needs_reoptin", "golden_id": person["id"],
                                    "other_golden_id": None, "field": "consent.email", "connections": "newsletter",
                                    "rule": "newsletter/audience", "candidates": [{"value": None, "connection": "newsletter"}],
                                    "applied": {"value": "=HYPERLINK(\"x\") opted out in Mailchimp"}, "status": "open",
                                    "created_at": st.utcnow()}])
    [row] = client.get("/api/v1/reoptin", headers=marketing).json()
    assert row["email"] == person["data"]["emails"][0] and row["destination"] == "newsletter/audience"
    csv_response = client.get("/api/v1/reoptin.csv", headers=marketing)
    assert csv_response.headers["content-type"].startswith("text/csv")
    body = csv_response.content.decode("utf-8")
    assert body.startswith("\ufeffemail;name;customer_id;destination;since;note\r\n")
    import csv

    line = next(csv.reader(body.splitlines()[1:], delimiter=";"))
    assert line[0] == person["data"]["emails"][0] and line[2] == person["id"]
    assert line[-1].startswith("'=HYPERLINK")  # a spreadsheet must not run it as a formula


def test_a_steward_re_runs_a_connection(client: TestClient, hub: Hub) -> None:
    import time

    headers = _token(hub, "steward")
    before = {r["id"] for r in client.get("/api/v1/runs", headers=headers).json()}
    r = client.post("/api/v1/connections/shop/runs", headers=headers)
    assert r.status_code == 202 and r.json() == {"connection": "shop", "status": "started"}
    for _ in range(200):
        new = [x for x in client.get("/api/v1/runs", headers=headers).json() if x["id"] not in before]
        if new and all(x["finished_at"] for x in new):
            break
        time.sleep(0.05)
    # the pull of shop, then the push to the export it feeds
    assert new and {x["connection"] for x in new} >= {"shop"} and {x["trigger"] for x in new} == {"user:steward"}, new
    assert client.post("/api/v1/connections/nope/runs", headers=headers).status_code == 404


def test_a_customer_shows_its_quarantined_values(client: TestClient, hub: Hub) -> None:
    with hub.store.engine.connect() as conn:
        row = conn.execute(sa.select(st.source_t.c.golden_id, st.source_t.c.quarantine)
                           .where(st.source_t.c.quarantine.is_not(None))).first()
    if row is None or not row.quarantine:
        pytest.fail("the demo data is expected to hold a quarantined value")
    customer = client.get(f"/api/v1/customers/{row.golden_id}", headers=_token(hub, "steward")).json()
    assert customer["quarantined"] and all(q["reason"] for q in customer["quarantined"])
    viewer = client.get(f"/api/v1/customers/{row.golden_id}", headers=_token(hub, "viewer")).json()
    assert viewer["quarantined"] == []


def test_the_review_queue_filters_by_score_band_kind_and_customer(client: TestClient, hub: Hub) -> None:
    headers = _token(hub, "steward")
    everything = client.get("/api/v1/conflicts", headers=headers).json()
    [dup] = [c for c in everything if c["kind"] == "possible_duplicate"]
    score = dup["candidates"][0]["score"]
    band = lambda low, high: [c["id"] for c in client.get(  # noqa: E731
        "/api/v1/conflicts", params={"min_score": low, "max_score": high}, headers=headers).json()]
    assert band(score - 1, score + 1) == [dup["id"]]
    assert band(score + 0.5, score + 10) == [] and band(score - 10, score - 0.5) == []
    assert [c["id"] for c in client.get("/api/v1/conflicts", params={"kind": "field"}, headers=headers).json()] == [
        c["id"] for c in everything if c["kind"] == "field"]
    mine = client.get("/api/v1/conflicts", params={"customer": dup["other_golden_id"]}, headers=headers).json()
    assert dup["id"] in [c["id"] for c in mine] and all(dup["other_golden_id"] in (c["golden_id"], c["other_golden_id"]) for c in mine)


def test_a_viewer_sees_no_personal_data_in_decisions_evidence_or_source_ids(client: TestClient, hub: Hub) -> None:
    steward, viewer = _token(hub, "steward"), _token(hub, "viewer")
    field = next(c for c in client.get("/api/v1/conflicts", params={"kind": "field"}, headers=steward).json())
    [done] = client.post("/api/v1/decisions", json={"ids": [field["id"]], "action": "pick", "pick": 2}, headers=steward).json()
    assert done["ok"] and "value" in done["result"], done
    seen = client.get(f"/api/v1/conflicts/{field['id']}", headers=viewer).json()
    assert seen["resolution"] == {"action": "pick"} and seen["applied"] is None
    assert all(set(c) <= {"connection", "stream", "observed_at", "score"} for c in seen["candidates"])
    dup = next(c for c in client.get("/api/v1/conflicts", headers=viewer).json() if c["kind"] == "possible_duplicate")
    assert all("reasons" not in c for c in dup["candidates"]) and dup["candidates"][0]["score"]
    text = str(client.get("/api/v1/conflicts", params={"status": "all"}, headers=viewer).json())
    for customer in client.get("/api/v1/customers", params={"q": "Müller"}, headers=steward).json():
        full = client.get(f"/api/v1/customers/{customer['id']}", headers=steward).json()
        limited = client.get(f"/api/v1/customers/{customer['id']}", headers=viewer).json()
        assert all("source_id" not in s for s in limited["sources"]) and all("source_id" in s for s in full["sources"])
        for email in full["data"].get("emails") or []:
            assert email.lower() not in str(limited).lower() and email.lower() not in text.lower()


def test_a_csrf_header_with_any_characters_is_refused_not_a_crash(client: TestClient) -> None:
    _login(client, "steward")
    r = client.post("/api/v1/decisions", json={"ids": [1], "action": "dismiss"}, headers={CSRF_HEADER: ("é" * 64).encode("latin-1")})
    assert r.status_code == 403


def test_parallel_guesses_cannot_outrun_the_rate_limit(hub: Hub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def guess(i: int) -> str:
        try:
            accounts.authenticate(hub.store, "marketing", f"wrong guess {i:04d}", f"10.1.0.{i}")
        except accounts.LoginRefused as exc:
            return "limited" if exc.retry_after else "wrong"
        return "in"

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(guess, range(32)))
    # Each attempt is recorded before its password is checked: at most MAX_FAILURES get checked.
    assert answers.count("in") == 0 and 1 <= answers.count("wrong") <= accounts.MAX_FAILURES, answers
    with pytest.raises(accounts.LoginRefused, match="too many"):
        accounts.authenticate(hub.store, "marketing", PASSWORD, "10.9.9.9")
    with hub.store.engine.connect() as conn:
        names = {r.name for r in conn.execute(sa.select(st.login_failure_t))}
    assert "marketing" not in names  # only a digest of what was typed


def test_an_unexpected_error_still_carries_the_security_headers(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.config.web.secure_cookies = True
    client = TestClient(create_app(hub), raise_server_exceptions=False)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom: secret detail")

    monkeypatch.setattr(hub.store, "recent_runs", broken)
    r = client.get("/api/v1/runs", headers=_token(hub, "viewer"))
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_viewers_see_personal_data_only_when_configured(hub: Hub) -> None:
    [hit] = [h for h in TestClient(create_app(hub)).get("/api/v1/customers", params={"q": "Brandl"},
                                                        headers=_token(hub, "steward")).json()][:1]
    viewer = _token(hub, "viewer")
    assert TestClient(create_app(hub)).get(f"/api/v1/customers/{hit['id']}", headers=viewer).json()["data"].get("emails") is None
    hub.config.web.viewers_see_personal_data = True
    client = TestClient(create_app(hub))
    assert client.get(f"/api/v1/customers/{hit['id']}", headers=viewer).json()["data"]["emails"]
    assert client.get("/api/v1/me", headers=viewer).json()["permissions"] == ["read", "read_personal"]
    # still no decisions
    assert client.post("/api/v1/decisions", json={"ids": [1], "action": "dismiss"}, headers=viewer).status_code == 403
