"""Small builders shared by the tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from synchub.config import load_config
from synchub.engine import Hub
from synchub.store import Store, golden_t, source_t

ROOT = Path(__file__).resolve().parents[1]


def demo_hub(demo_dir: Path, store_url: str) -> Hub:
    cfg = load_config(demo_dir / "config" / "demo.yaml", environ={"SYNCHUB_STORE": store_url})
    hub = Hub(cfg)
    hub.store.upgrade()
    return hub


def write_config(tmp: Path, body: str, store_url: str, **files: str | bytes) -> Path:
    """Write ``files`` into tmp/data and a config whose mappings come from the repo."""
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    for name, content in files.items():
        target = data / name.replace("__", ".")
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content).lstrip(), encoding="utf-8")
    cfg = tmp / "synchub.yaml"
    cfg.write_text(
        f"store: '{store_url}'\nmappings_dir: ['{ROOT / 'mappings'}', mappings]\n" + textwrap.dedent(body),
        encoding="utf-8",
    )
    (tmp / "mappings").mkdir(exist_ok=True)
    return cfg


#: An inbound mapping for test CSVs with the columns ``id;email;first;last``.
PEOPLE_MAPPING = """\
description: test people (columns id, email, first, last)
entity: person
direction: in
fields:
  emails: email
  first_name: first
  last_name: last
"""


def write_people_mapping(folder: Path, name: str = "people") -> None:
    """Write :data:`PEOPLE_MAPPING` as ``<folder>/<name>.yaml`` (the folder is created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(PEOPLE_MAPPING, encoding="utf-8")


def hub_for(cfg: Path, environ: dict[str, str] | None = None) -> Hub:
    hub = Hub(load_config(cfg, environ=environ or {}))
    hub.store.upgrade()
    return hub


def content_snapshot(store: Store) -> list[str]:
    """The store's golden records and their sources, independent of generated ids and times."""
    with store.engine.connect() as conn:
        goldens = {r.id: r for r in conn.execute(sa.select(golden_t).where(golden_t.c.status == "active"))}
        sources: dict[str, list[str]] = {}
        for s in conn.execute(sa.select(source_t)):
            sources.setdefault(s.golden_id, []).append(f"{s.connection}/{s.stream}/{s.source_id}")
    out = []
    for gid, g in goldens.items():
        out.append(json.dumps({"data": g.data, "sources": sorted(sources.get(gid, []))}, sort_keys=True, ensure_ascii=False))
    return sorted(out)


def rows(store: Store, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where))]


def members_of(store: Store) -> list[set[str]]:
    """Each customer as the set of its source records' ids."""
    with store.engine.connect() as conn:
        members: dict[str, set[str]] = {}
        for s in conn.execute(sa.select(source_t.c.golden_id, source_t.c.source_id)):
            members.setdefault(s.golden_id, set()).add(s.source_id)
    return list(members.values())


@contextmanager
def web_server(config: str, env: dict[str, str], ready: str = "/api/v1/openapi.json") -> Iterator[str]:
    """``synchub web`` in a process of its own on a free loopback port: yields its base URL once
    ``ready`` answers, and stops it afterwards."""
    import httpx
    import pytest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "synchub.cli", "--config", config, "web", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + ready, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("synchub web did not answer: " + (server.stderr.read() if server.poll() is not None else ""))
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def vendor_fakes(hs_token: str, mc_key: str, shop_token: str, audience: str = "aud1") -> Iterator[tuple[Any, Any, Any]]:
    """The HubSpot, Mailchimp (with one audience) and Shopify (shop ``acme``) fakes on their real
    hosts and the wall clock, each validating every request against its vendor's spec; on exit,
    no request broke the spec."""
    import respx

    from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
    from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
    from plugins.mailchimp.tests.test_e2e import WallClock
    from plugins.shopify.tests.fake_shopify import FakeShopify
    from synchub.testing.specs import (
        HUBSPOT_SEARCH_SORT_OBJECTS,
        MAILCHIMP_MERGE_FIELD_VALUES,
        hubspot_validator,
        mailchimp_validator,
        shopify_validator,
    )

    clock = WallClock()
    hubspot = FakeHubSpot(token=hs_token, validator=hubspot_validator(HUBSPOT_SEARCH_SORT_OBJECTS), clock=clock)
    mailchimp = FakeMailchimp(api_key=mc_key, validator=mailchimp_validator(MAILCHIMP_MERGE_FIELD_VALUES), clock=clock)
    mailchimp.add_list(audience, "Newsletter")
    shopify = FakeShopify(shop="acme.myshopify.com", token=shop_token, validator=shopify_validator(), clock=clock,
                          bulk_seconds=0)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="api.hubapi.com").mock(side_effect=hubspot.transport.handle_request)
        mock.route(host=f"{mc_key.rsplit('-', 1)[1]}.api.mailchimp.com").mock(side_effect=mailchimp.transport.handle_request)
        mock.route(host="acme.myshopify.com").mock(side_effect=shopify.transport.handle_request)
        mock.route(host="storage.googleapis.com").mock(side_effect=shopify.transport.handle_request)
        yield hubspot, mailchimp, shopify
    assert hubspot.violations == [] and mailchimp.violations == [] and shopify.violations == []
