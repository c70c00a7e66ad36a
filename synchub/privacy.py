"""A person's rights carried out by the hub (issue 20). So far: the access and portability
export, everything the hub holds about one person with where each piece came from.

:func:`access_export` collects it (the customer, every record merged into it, their source
records as each tool delivered them, timeline, review items, audit entries, admin decisions,
picked values, and what the hub last wrote to each destination); :func:`to_json` and
:func:`to_html` render it, the HTML as a self-contained page (no script, no external resource)
that a person can read.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

from synchub import store as st
from synchub.errors import NotFoundError

#: Sections of the export, in the order a reader meets them, with their headings.
SECTIONS = {
    "golden_records": "The customer record (and records merged into it)",
    "source_records": "Records as each connected tool delivered them",
    "timeline": "Orders, e-mail events and other interactions",
    "conflicts": "Review items",
    "decisions": "Decisions by the hub's administrators",
    "picked_values": "Values chosen by an administrator",
    "written_to_destinations": "What the hub last wrote to each tool",
    "audit": "History",
}


def access_export(store: st.Store, customer: str) -> dict[str, Any]:
    """Everything the hub holds about the customer ``customer`` (an id, id prefix or merged-away id)."""
    rec = store.get_golden(customer)
    if rec is None:
        raise NotFoundError(f"no customer {customer!r}")
    with store.engine.connect() as conn:
        rows = st.person_rows(conn, rec["id"])
    return {
        "customer": rec["id"],
        "name": rec["display_name"],
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": sorted({f"{s['connection']}/{s['stream']}" for s in rows["source_records"]}),
        **rows,
    }


def to_json(export: dict[str, Any]) -> str:
    return json.dumps(export, ensure_ascii=False, indent=2, default=_plain, sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, ensure_ascii=False, default=_plain))
    return html.escape(_plain(value) if not isinstance(value, str) else value)


def to_html(export: dict[str, Any]) -> str:
    """The export as one readable page; every value is escaped."""
    parts = [
        "<!doctype html><html><head><meta charset=\"utf-8\">",
        f"<title>{_cell(export['name'])}: data held by synchub</title>",
        "<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
        "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}</style>",
        "</head><body>",
        f"<h1>{_cell(export['name'])}</h1>",
        f"<p>Customer {_cell(export['customer'])}; exported {_cell(export['exported_at'])}; sources: "
        f"{_cell(', '.join(export['sources']))}.</p>",
    ]
    for key, title in SECTIONS.items():
        rows = export.get(key) or []
        parts.append(f"<h2>{html.escape(title)} ({len(rows)})</h2>")
        if not rows:
            continue
        columns = [c for c in rows[0] if c not in ("id", "fingerprint")]
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
