"""Erasure (issue 20): a person leaves the hub for good, every connection holding them is asked to
erase them, the receipts say what each answered, and no source brings them back. On both stores.

The vendors' own erasure requests (HubSpot, Mailchimp, Shopify) are tested against their fakes in
plugins/*/tests/test_erase.py and end to end in tests/test_erasure_vendors.py; here the demo's
files and a small connector ("tool") whose erasures fail on demand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from synchub import plugins, privacy
from synchub import store as st
from synchub.cli import app
from synchub.config import load_config
from synchub.connector import (
    Connector,
    ConnectorSettings,
    ErasureResult,
    ErasureTarget,
    ReadItem,
    Record,
    Stream,
)
from synchub.engine import Hub
from synchub.errors import ConfigError
from tests.helpers import content_snapshot, write_people_mapping

SALT = "0123456789abcdef-test-salt"
PRIVACY = f"\nprivacy:\n  salt: '{SALT}'\n"


def _demo_config(demo_dir: Path, extra: str = PRIVACY) -> Path:
    cfg = demo_dir / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return cfg


@pytest.fixture
def hub(demo_dir: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    h = Hub(load_config(_demo_config(demo_dir)))
    h.store.upgrade()
    h.sync()
    yield h
    h.store.dispose()


def _everything(store: st.Store, skip: tuple[str, ...] = ()) -> str:
    """Every row of every table of the store (but ``skip``), as one lower-cased text."""
    parts = []
    with store.engine.connect() as conn:
        for table in st.SQLModel.metadata.sorted_tables:
            if table.name in skip:
                continue
            for row in conn.execute(sa.select(table)):
                parts.append(json.dumps([str(v) for v in row], ensure_ascii=False))
    return "\n".join(parts).lower()


def _export(demo_dir: Path) -> str:
    return (demo_dir / "var" / "export" / "kunden_bereinigt.csv").read_text(encoding="utf-8-sig")


def test_erase_forgets_the_person_in_every_table_and_the_export(hub: Hub, demo_dir: Path) -> None:
    # Anna Leitner is in the shop file (with a landline) and the newsletter file.
    assert "Leitner" in _export(demo_dir)
    before = _everything(hub.store)
    assert "leitner" in before and "4471023" in before
    plan = privacy.erase(hub, "ANNA.LEITNER@example.de", actor="user:test")
    assert {(c, s) for c, s, _id in plan.sources} == {("shop", "customers"), ("newsletter", "audience")}
    receipts = {(r["connection"], r["stream"]): r for r in privacy.erasures(hub)[0]["receipts"]}
    # The import files cannot be changed by the hub: someone must remove her rows there, and
    # needs to know which (the newsletter's row id is her address); then it is marked done.
    assert receipts[("shop", "customers")]["status"] == "manual"
    assert receipts[("shop", "customers")]["to_remove"] == ["K-10002"]
    assert receipts[("newsletter", "audience")]["to_remove"] == ["anna.leitner@example.de"]
    for key in (("shop", "customers"), ("newsletter", "audience")):
        privacy.mark_done(hub, receipts[key]["id"], actor="user:test")
    after = _everything(hub.store)
    assert "leitner" not in after
    assert "4471023" not in after  # the phone only her shop row had
    assert "k-10002" not in after  # nor her customer number
    with hub.store.engine.connect() as conn:
        audit = [dict(r._mapping) for r in conn.execute(sa.select(st.audit_t).where(st.audit_t.c.action == "erase"))]
        erasure = conn.execute(sa.select(st.erasure_t)).one()
        kinds = dict(conn.execute(sa.select(st.suppression_t.c.key_type, sa.func.count())
                                  .group_by(st.suppression_t.c.key_type)).all())
    assert len(audit) == 1 and audit[0]["golden_id"] is None and audit[0]["details"]["erasure"] == erasure.id
    assert erasure.ref == privacy.digest(SALT.encode(), "customer", plan.golden_id)  # keyed: not her id
    assert kinds == {"email": 1, "source": 2}
    receipts = {(r["connection"], r["stream"]): r for r in privacy.erasures(hub)[0]["receipts"]}
    assert receipts[("shop", "customers")]["status"] == "confirmed"
    # The export is rewritten without her at its connection's next run.
    assert receipts[("export", "customers")]["status"] == "pending"
    assert set(receipts) == {("shop", "customers"), ("newsletter", "audience"), ("export", "customers")}
    hub.sync(["export"])
    assert "Leitner" not in _export(demo_dir)
    assert "Brandl" in _export(demo_dir)
    done = {(r["connection"], r["stream"]): r for r in privacy.erasures(hub)[0]["receipts"]}
    assert done[("export", "customers")]["status"] == "confirmed"
    assert "written again without them" in done[("export", "customers")]["detail"]


def test_a_later_read_of_the_sources_does_not_bring_the_person_back(hub: Hub) -> None:
    before = hub.store.counts()
    privacy.erase(hub, "anna.leitner@example.de", actor="user:test")
    with hub.store.begin() as conn:  # every file is read again from the start
        conn.execute(st.state_t.delete())
    summaries = {s.connection: s for s in hub.sync()}
    assert summaries["shop"].streams["customers"].suppressed == 1
    assert summaries["newsletter"].streams["audience"].suppressed == 1
    assert not hub.store.search_golden("leitner")
    # (Only the open manual receipts name her rows in the import files, until they are done.)
    assert "leitner" not in _everything(hub.store, skip=("erasure_receipt",))
    after = hub.store.counts()
    assert after["golden_active"] == before["golden_active"] - 1
    assert after["source_records"] == before["source_records"] - 2
    # The others are all still there and unchanged.
    assert hub.store.search_golden("brandl")


def test_a_new_record_with_an_erased_address_is_not_stored(hub: Hub, demo_dir: Path) -> None:
    privacy.erase(hub, "anna.leitner@example.de", actor="user:test")
    shop = demo_dir / "demo" / "data" / "shop_kunden.csv"
    raw = shop.read_bytes()
    # A new shop account (new customer number), same address in capitals: still her.
    shop.write_bytes(raw + "K-19999;Frau;Anna;Leitner;ANNA.LEITNER@EXAMPLE.DE;;;;;;;;;;nein;\r\n".encode("cp1252"))
    summary = hub.sync(["shop"])[0]
    assert summary.streams["customers"].suppressed == 2  # K-10002 and K-19999, the file is read again
    assert not hub.store.search_golden("leitner")


def test_erasure_needs_the_salt_and_changes_nothing_without_it(demo_dir: Path, store_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    h = Hub(load_config(_demo_config(demo_dir, extra="")))
    h.store.upgrade()
    h.sync()
    before = content_snapshot(h.store)
    with pytest.raises(ConfigError, match=r"privacy\.salt"):
        privacy.erase(h, "anna.leitner@example.de", actor="user:test")
    assert content_snapshot(h.store) == before
    h.store.dispose()


def test_a_short_salt_is_a_config_error(demo_dir: Path) -> None:
    with pytest.raises(ConfigError, match="16 characters"):
        load_config(_demo_config(demo_dir, extra="\nprivacy: {salt: short}\n"))


def test_the_salt_never_shows_in_the_store(hub: Hub) -> None:
    privacy.erase(hub, "anna.leitner@example.de", actor="user:test")
    assert SALT.lower() not in _everything(hub.store)


def test_an_erased_customer_is_gone_for_the_access_export_and_a_second_erasure(hub: Hub) -> None:
    gid = privacy.find_person(hub, "anna.leitner@example.de")
    privacy.erase(hub, gid, actor="user:test")
    with pytest.raises(privacy.NotFoundError):
        privacy.access_export(hub.store, gid)
    with pytest.raises(privacy.NotFoundError):
        privacy.erase(hub, "anna.leitner@example.de", actor="user:test")


def test_erase_a_merged_customer_takes_every_record_merged_into_it(hub: Hub) -> None:
    from synchub.review import resolve_conflict

    dup = next(c for c in hub.store.list_conflicts("open") if c["kind"] == "possible_duplicate")
    merged = resolve_conflict(hub, dup["id"], merge=True, by="user:test")
    plan = privacy.erase(hub, merged["merged"], actor="user:test")  # the merged-away id leads to the survivor
    assert plan.golden_ids == {merged["survivor"], merged["merged"]}
    assert "brandl" not in _everything(hub.store, skip=("erasure_receipt",))
    # The open possible duplicate naming them is gone too, not left pointing at nobody.
    assert all(merged["survivor"] not in (c["golden_id"], c.get("other_golden_id"))
               for c in hub.store.list_conflicts("all", limit=1000))


def test_the_command_shows_first_and_erases_with_yes(hub: Hub, demo_dir: Path, store_url: str) -> None:
    runner = CliRunner()
    cfg = str(demo_dir / "config" / "demo.yaml")
    env = {"SYNCHUB_STORE": store_url}
    before = content_snapshot(hub.store)
    shown = runner.invoke(app, ["--config", cfg, "customers", "erase", "anna.leitner@example.de"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Would erase" in shown.output and "shop/customers: manual" in shown.output, shown.output
    assert "export/customers: rewritten" in shown.output
    assert content_snapshot(hub.store) == before
    done = runner.invoke(app, ["--config", cfg, "--json", "customers", "erase", "anna.leitner@example.de", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["records"] == 2
    assert {r["status"] for r in result["receipts"]} == {"manual", "pending"}
    listed = runner.invoke(app, ["--config", cfg, "--json", "erasures"], env=env)
    assert json.loads(listed.output)["erasures"][0]["id"] == result["erasure"]


def test_the_command_exit_codes(hub: Hub, demo_dir: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from synchub import exitcodes
    from synchub.cli import _run

    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    cfg = str(demo_dir / "config" / "demo.yaml")
    assert _run(["--config", cfg, "customers", "erase", "nobody@example.org", "--yes"]) == exitcodes.NOT_FOUND
    assert _run(["--config", cfg, "erasures", "done", "999"]) == exitcodes.NOT_FOUND
    assert _run(["--config", cfg, "customers", "erase", "anna.leitner@example.de", "--yes"]) == exitcodes.OK
    shop = next(r for r in privacy.erasures(hub)[0]["receipts"] if r["connection"] == "shop")
    assert _run(["--config", cfg, "erasures", "done", str(shop["id"])]) == exitcodes.OK
    assert _run(["--config", cfg, "erasures", "done", str(shop["id"])]) == exitcodes.FAILED  # already confirmed


# ----- fan-out and retries, with a tool whose erasures fail on demand ---------------------------


class ToolSettings(ConnectorSettings):
    token: str = "tool-secret-token-123"


class ToolStream(Stream):
    name = "people"
    primary_key = ("id",)
    #: The tool's records, by id; erase() removes from here.
    held: ClassVar[dict[str, dict[str, Any]]] = {}
    #: How many erase calls fail before they work; and whether failures may be retried.
    failures: ClassVar[int] = 0
    retryable: ClassVar[bool] = True
    asked: ClassVar[list[ErasureTarget]] = []

    def __init__(self, token: str):
        self.token = token

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        for rid, data in sorted(self.held.items()):
            yield Record({"id": rid, **data}, ref=f"tool:{rid}")

    def erase(self, targets: list[ErasureTarget]) -> Iterator[ErasureResult]:
        for t in targets:
            type(self).asked.append(t)
            if type(self).failures > 0:
                type(self).failures -= 1
                # A careless connector puts its token in the error; the receipt must not keep it.
                yield ErasureResult(t, "failed", f"HTTP 503 with token {self.token}", retryable=type(self).retryable)
                continue
            self.held.pop(t.external_id or "", None)
            yield ErasureResult(t, "confirmed")


class ToolConnector(Connector):
    name = "tool"
    Settings = ToolSettings

    def streams(self) -> dict[str, Stream]:
        return {"people": ToolStream(self.settings.token)}  # type: ignore[attr-defined]


class ToolPlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [ToolConnector]


@pytest.fixture
def tool_hub(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    plugin = ToolPlugin()
    plugins.register(plugin, name="tool-test")
    write_people_mapping(tmp_path / "mappings")
    monkeypatch.setenv("TOOL_TOKEN", "tool-secret-token-123")
    ToolStream.held = {"1": {"email": "eva@example.org", "first": "Eva", "last": "Zwirbel"},
                       "2": {"email": "max@example.org", "first": "Max", "last": "Muster"}}
    ToolStream.failures, ToolStream.retryable, ToolStream.asked = 0, True, []
    cfg = tmp_path / "synchub.yaml"
    cfg.write_text(f"store: '{store_url}'\nmappings_dir: [mappings]\n"
                   "match:\n  person: {keys: [email], fuzzy: false}\n"
                   "connections:\n  crm:\n    connector: tool\n    settings: {token: '${TOOL_TOKEN}'}\n"
                   "    streams:\n      people: {mapping: people}\n" + PRIVACY, encoding="utf-8")
    h = Hub(load_config(cfg))
    h.store.upgrade()
    h.sync()
    yield h
    h.store.dispose()
    plugins.unregister(plugin)


def _receipt(hub: Hub) -> dict[str, Any]:
    return privacy.erasures(hub)[0]["receipts"][0]


def test_the_connection_is_asked_with_its_id_and_the_emails(tool_hub: Hub) -> None:
    privacy.erase(tool_hub, "eva@example.org", actor="user:test")
    assert [(t.external_id, t.emails) for t in ToolStream.asked] == [("1", ["eva@example.org"])]
    assert "1" not in ToolStream.held
    r = _receipt(tool_hub)
    assert (r["status"], r["attempts"], r["targets"]) == ("confirmed", 1, 0)
    with tool_hub.store.engine.connect() as conn:  # answered: the ids and e-mails are not kept
        assert conn.execute(sa.select(st.receipt_t.c.targets)).scalar_one() is None


def test_a_failed_erasure_is_asked_again_on_the_next_run_and_keeps_no_secret(tool_hub: Hub) -> None:
    ToolStream.failures = 1
    privacy.erase(tool_hub, "eva@example.org", actor="user:test")
    r = _receipt(tool_hub)
    assert r["status"] == "failed" and r["attempts"] == 1 and r["targets"] == 1
    assert "503" in r["detail"] and "tool-secret-token-123" not in r["detail"]
    assert "1" in ToolStream.held  # still at the tool
    # Until then, the tool still delivers her: the suppression list keeps her out of the hub.
    tool_hub.sync()
    assert not tool_hub.store.search_golden("zwirbel")
    r = _receipt(tool_hub)
    assert (r["status"], r["attempts"]) == ("confirmed", 2)
    assert "1" not in ToolStream.held
    assert "tool-secret-token-123" not in _everything(tool_hub.store)


def test_a_final_failure_is_not_retried(tool_hub: Hub) -> None:
    ToolStream.failures, ToolStream.retryable = 5, False
    privacy.erase(tool_hub, "eva@example.org", actor="user:test")
    tool_hub.sync()
    r = _receipt(tool_hub)
    assert (r["status"], r["attempts"]) == ("failed", 1)
    assert len(ToolStream.asked) == 1


def test_hub_only_leaves_the_fan_out_to_the_next_run(tool_hub: Hub) -> None:
    privacy.erase(tool_hub, "eva@example.org", actor="user:test", fan=False)
    assert _receipt(tool_hub)["status"] == "pending" and not ToolStream.asked
    assert privacy.fan_out(tool_hub) == {"confirmed": 1}
    assert _receipt(tool_hub)["status"] == "confirmed"


def test_a_running_sync_of_any_connection_blocks_the_erasure(tool_hub: Hub) -> None:
    from synchub.engine import AlreadyRunning
    from synchub.locks import connection_lock

    before = content_snapshot(tool_hub.store)
    with connection_lock(tool_hub.store, "crm") as lock:
        assert lock is not None
        with pytest.raises(AlreadyRunning, match="crm"):
            privacy.erase(tool_hub, "eva@example.org", actor="user:test", wait=0)
    assert content_snapshot(tool_hub.store) == before


# ----- the REST API --------------------------------------------------------------------------------


def test_the_api_exports_and_erases_for_admins_only(hub: Hub) -> None:
    from fastapi.testclient import TestClient

    from synchub import accounts
    from synchub.web.api import create_app

    for role in ("admin", "steward"):
        accounts.add_user(hub.store, role, role, "a long enough password 1")
    admin = {"Authorization": f"Bearer {accounts.add_token(hub.store, 'admin', 'test')}"}
    steward = {"Authorization": f"Bearer {accounts.add_token(hub.store, 'steward', 'test')}"}
    client = TestClient(create_app(hub))
    gid = privacy.find_person(hub, "anna.leitner@example.de")
    for method, path, body in [("GET", f"/api/v1/customers/{gid}/export", None),
                               ("POST", f"/api/v1/customers/{gid}/erase", {"confirm": True}),
                               ("GET", "/api/v1/erasures", None)]:
        assert client.request(method, path, json=body, headers=steward).status_code == 403
    exported = client.get(f"/api/v1/customers/{gid}/export", headers=admin)
    assert exported.status_code == 200 and exported.json()["customer"] == gid
    assert {s["source_id"] for s in exported.json()["source_records"]} == {"K-10002", "anna.leitner@example.de"}
    page = client.get(f"/api/v1/customers/{gid}/export", params={"format": "html"}, headers=admin)
    assert page.headers["content-type"].startswith("text/html") and "Leitner" in page.text
    assert client.post(f"/api/v1/customers/{gid}/erase", json={"confirm": False}, headers=admin).status_code == 422
    # A prefix (which the other routes accept) is not enough to erase someone.
    assert client.post(f"/api/v1/customers/{gid[:8]}/erase", json={"confirm": True}, headers=admin).status_code == 404
    assert hub.store.get_golden(gid) is not None
    erased = client.post(f"/api/v1/customers/{gid}/erase", json={"confirm": True}, headers=admin)
    assert erased.status_code == 200, erased.text
    assert {(r["connection"], r["status"]) for r in erased.json()["receipts"]} == {
        ("shop", "manual"), ("newsletter", "manual"), ("export", "pending")}
    assert erased.json()["requested_by"] == "user:admin"
    assert client.post(f"/api/v1/customers/{gid}/erase", json={"confirm": True}, headers=admin).status_code == 404
    assert client.get(f"/api/v1/customers/{gid}/export", headers=admin).status_code == 404
    listed = client.get("/api/v1/erasures", headers=admin).json()
    assert listed[0]["id"] == erased.json()["id"]
    shop = next(r for r in listed[0]["receipts"] if r["connection"] == "shop")
    assert shop["to_remove"] == ["K-10002"]


@pytest.mark.parametrize("side", ["golden_id", "other_golden_id"])
def test_a_merge_while_the_erasure_waits_for_the_locks_does_not_leave_the_person(hub: Hub, side: str,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure resolves the customer again once it holds the locks: a run (or an admin) that
    merged them meanwhile must not leave the survivor behind."""
    import contextlib

    from synchub.review import resolve_conflict

    dup = next(c for c in hub.store.list_conflicts("open") if c["kind"] == "possible_duplicate")
    locks = privacy._all_locks

    @contextlib.contextmanager
    def merge_first(*args: Any, **kwargs: Any) -> Iterator[None]:
        resolve_conflict(hub, dup["id"], merge=True, by="user:test")  # happens while the erasure waits
        with locks(*args, **kwargs):
            yield

    monkeypatch.setattr(privacy, "_all_locks", merge_first)
    plan = privacy.erase(hub, dup[side], actor="user:test")
    assert len(plan.golden_ids) == 2 and len(plan.sources) >= 2
    assert "brandl" not in _everything(hub.store, skip=("erasure_receipt",))


def test_the_webhook_queue_forgets_the_person_s_ids(tool_hub: Hub) -> None:
    from synchub import webhooks

    webhooks.enqueue(tool_hub.store, "hubspot", "crm", [
        webhooks.QueuedEvent(event_id="e1", topic="contact.propertyChange", object_ids=["1", "2"]),
        webhooks.QueuedEvent(event_id="e2", topic="contact.propertyChange", object_ids=["1"])])
    privacy.erase(tool_hub, "eva@example.org", actor="user:test")  # Eva is the tool's record 1
    queued = {e["event_id"]: e["object_ids"] for e in webhooks.pending_events(tool_hub.store, "crm")}
    assert queued == {"e1": ["2"], "e2": None}  # still pending, without her id


def test_the_person_s_orders_go_with_their_quarantined_values(tool_hub: Hub) -> None:
    gid = privacy.find_person(tool_hub, "eva@example.org")
    now = st.utcnow()
    with tool_hub.store.begin() as conn:  # an order of hers, with a value the hub could not use
        st.insert_interactions(conn, [{"golden_id": gid, "connection": "crm", "stream": "orders", "source_id": "O-1",
                                       "record_id": "O-1", "owner_stream": "people", "owner_id": "1", "kind": "order",
                                       "occurred_at": now, "data": {"total": "12.50"}}])
        st.insert_quarantined(conn, [{"run_id": 1, "connection": "crm", "stream": "orders", "ref": "O-1",
                                      "source_id": "O-1", "field": "total", "rule": "decimal", "status": "quarantined",
                                      "raw": "12,5x", "reason": "not a number", "created_at": now}])
    privacy.erase(tool_hub, gid, actor="user:test")
    everything = _everything(tool_hub.store, skip=("erasure_receipt",))
    assert "o-1" not in everything and "12,5x" not in everything


def test_lifting_the_address_lets_a_new_sign_up_in_but_not_the_old_records(hub: Hub, demo_dir: Path) -> None:
    privacy.erase(hub, "anna.leitner@example.de", actor="user:test")
    shop = demo_dir / "demo" / "data" / "shop_kunden.csv"
    shop.write_bytes(shop.read_bytes() + "K-19999;Frau;Anna;Leitner;anna.leitner@example.de;;;;;;;;;;nein;\r\n".encode("cp1252"))
    assert privacy.lift(hub, "Anna.Leitner@example.de", actor="user:test") is True
    summary = hub.sync(["shop"])[0]
    assert summary.streams["customers"].suppressed == 1  # her old record K-10002 stays out
    [anna] = hub.store.search_golden("leitner")
    assert {s["source_id"] for s in hub.store.source_records_of(anna["id"])} == {"K-19999"}
    assert privacy.lift(hub, "anna.leitner@example.de", actor="user:test") is False
    with hub.store.engine.connect() as conn:
        lifted = conn.execute(sa.select(st.audit_t.c.details).where(st.audit_t.c.action == "suppression_lifted")).scalars().all()
    assert lifted == [{"key_type": "email"}]
