"""Small builders shared by the tests."""

from __future__ import annotations

import json
import textwrap
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
