"""A person's rights carried out by the hub (issue 20).

**Access and portability**: :func:`access_export` collects everything the hub holds about one
person (the customer, every record merged into it, their source records as each tool delivered
them, timeline, review items, audit entries, admin decisions, picked values, and what the hub
last wrote to each destination); :func:`to_json` and :func:`to_html` render it, the HTML as a
self-contained page (no script, no external resource) that a person can read.

**Erasure**: :func:`erase` forgets a person in one transaction (every row about them; the audit
keeps an erasure entry with a keyed hash of their id, nothing readable), puts salted hashes of
their e-mail addresses and source ids on the suppression list, so that no source re-creates them
(:class:`Suppressor`), and leaves one receipt per connection and stream that held them. Then
:func:`fan_out` asks each of those to erase them too (``Stream.erase``: HubSpot's GDPR delete,
Mailchimp's permanent delete, Shopify's data-erasure request); what fails is asked again on the
connection's next run. A file export is done when it is next written; a source the hub cannot
change (an import file) gets a ``manual`` receipt naming what to remove there.

Phones are not suppressed: a landline or a switchboard number is shared by people who were not
erased. A record that comes back with only a phone creates a new customer.

**Retention**: :func:`retention` finds the customers a rule says the company may no longer keep,
dry run first; run for real, each one is erased (or anonymised: the hub keeps figures without
anything that identifies the person).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from synchub import store as st
from synchub.connector import ErasureResult, ErasureTarget
from synchub.errors import ConfigError, NotFoundError, SynchubError
from synchub.locks import connection_lock
from synchub.redact import redact

if TYPE_CHECKING:
    from synchub.engine import Hub
    from synchub.prepare import Prepared

log = logging.getLogger("synchub.privacy")

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


# ----- erasure -----------------------------------------------------------------------------------


class ErasureError(SynchubError):
    """An erasure that cannot start (no salt configured, an ambiguous e-mail, a busy connection)."""


def _salt(hub: Hub) -> bytes:
    salt = hub.config.privacy.salt
    if salt is None:
        raise ConfigError("erasure needs privacy.salt in the config (a random secret of 16+ characters, "
                          "e.g. salt: ${SYNCHUB_PRIVACY_SALT}): the suppression list keeps only hashes keyed with it")
    return salt.get_secret_value().encode()


def digest(salt: bytes, key_type: str, value: str) -> str:
    """The suppression list's hash of one identifier (HMAC-SHA256 keyed with the salt)."""
    return hmac.new(salt, f"{key_type}\x1f{value}".encode(), hashlib.sha256).hexdigest()


def email_key(email: str) -> str:
    return email.strip().lower()


def source_key(connection: str, stream: str, source_id: str) -> str:
    return f"{connection}\x1f{stream}\x1f{source_id}"


#: E-mail addresses in a raw row (rejected rows are checked against the suppression list).
_EMAILS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


class Suppressor:
    """Tells which prepared records belong to an erased person, for one stream's pull. Loads
    nothing while the suppression list is empty (the usual case); otherwise one indexed lookup
    per batch."""

    def __init__(self, hub: Hub, connection: str, stream: str, owner_stream: str | None = None):
        self.connection, self.stream, self.owner_stream = connection, stream, owner_stream
        with hub.store.engine.connect() as conn:
            self.active = conn.execute(sa.select(st.suppression_t.c.digest).limit(1)).first() is not None
        salt = hub.config.privacy.salt
        if self.active and salt is None:
            raise ConfigError("the store holds a suppression list of erased people but privacy.salt is not configured: "
                              "without the salt the hub cannot keep them out")
        self._salt = salt.get_secret_value().encode() if salt is not None else b""

    def digests(self, p: Prepared) -> list[str]:
        out = [digest(self._salt, "source", source_key(self.connection, self.stream, sid))
               for sid in (p.source_id, *p.aliases)]  # a retired id (a CRM merge) names them too
        if p.owner is not None and self.owner_stream is not None:  # an order of an erased customer
            out.append(digest(self._salt, "source", source_key(self.connection, self.owner_stream, p.owner)))
        out.extend(digest(self._salt, "email", email_key(e)) for e in p.data.get("emails") or () if isinstance(e, str))
        return out

    def filter_rejects(self, conn: sa.Connection, rejects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Rejected rows without those of erased people (by source id, or an erased address in
        the raw row): an unreadable row of theirs must not bring their data back into the store."""
        if not self.active or not rejects:
            return rejects, 0
        each = []
        for r in rejects:
            ds = [digest(self._salt, "email", e.lower()) for e in _EMAILS.findall(r.get("raw") or "")]
            if r.get("source_id"):
                ds.append(digest(self._salt, "source", source_key(self.connection, self.stream, str(r["source_id"]))))
            each.append(ds)
        hit = st.suppressed(conn, (d for ds in each for d in ds))
        kept = [r for r, ds in zip(rejects, each, strict=True) if not hit.intersection(ds)]
        return kept, len(rejects) - len(kept)

    def filter(self, conn: sa.Connection, pending: list[Prepared]) -> tuple[list[Prepared], int]:
        """``pending`` without the records of erased people, and how many were left out."""
        if not self.active or not pending:
            return pending, 0
        each = [self.digests(p) for p in pending]
        hit = st.suppressed(conn, (d for ds in each for d in ds))
        if not hit:
            return pending, 0
        kept = [p for p, ds in zip(pending, each, strict=True) if not hit.intersection(ds)]
        return kept, len(pending) - len(kept)


@dataclass
class ErasurePlan:
    """What :func:`erase` will do (or did): the customer, the rows to delete, the receipts."""

    golden_id: str
    name: str
    golden_ids: set[str]
    emails: list[str]
    sources: list[tuple[str, str, str]]
    receipts: list[dict[str, Any]] = field(default_factory=list)
    erasure_id: int | None = None
    deleted: dict[str, int] = field(default_factory=dict)


def find_person(hub: Hub, who: str) -> str:
    """The golden id of the customer ``who`` names: an id, id prefix or merged-away id, or an
    e-mail address held by exactly one customer."""
    if "@" in who:
        wanted = email_key(who)
        found = [r for r in hub.store.search_golden(wanted, limit=50, kind="person",
                                                     phone_region=hub.config.defaults.phone_region)
                 if wanted in {email_key(e) for e in r["data"].get("emails") or () if isinstance(e, str)}]
        if not found:
            raise NotFoundError(f"no customer has the e-mail address {who!r}")
        if len(found) > 1:
            ids = ", ".join(r["id"] for r in found)
            raise ErasureError(f"{len(found)} customers have the e-mail address {who!r} ({ids}): erase them by id")
        return str(found[0]["id"])
    rec = hub.store.get_golden(who)
    if rec is None or rec["status"] == "anonymised":
        raise NotFoundError(f"no customer {who!r}")
    return str(rec["id"])


def plan_erasure(hub: Hub, golden_id: str) -> ErasurePlan:
    """Who and what an erasure of ``golden_id`` reaches, without changing anything."""
    with hub.store.engine.connect() as conn:
        ids = st.person_ids(conn, golden_id)
        golden = {r.id: r for r in conn.execute(sa.select(st.golden_t).where(st.golden_t.c.id.in_(sorted(ids))))}
        srcs = list(conn.execute(sa.select(st.source_t.c.connection, st.source_t.c.stream, st.source_t.c.source_id,
                                           st.source_t.c.golden_id, st.source_t.c.data)
                                 .where(st.source_t.c.golden_id.in_(sorted(ids)))))
        pushed = list(conn.execute(sa.select(st.outbound_t.c.connection, st.outbound_t.c.stream, st.outbound_t.c.golden_id,
                                             st.outbound_t.c.external_id).where(st.outbound_t.c.golden_id.in_(sorted(ids)))))
    if golden_id not in golden:
        raise NotFoundError(f"no customer {golden_id!r}")
    if golden[golden_id].kind != "person":
        raise ErasureError(f"customer {golden_id} is a company: erasure is for persons")
    emails: dict[str, None] = {}
    for data in [*(g.data for g in golden.values()), *(s.data for s in srcs)]:
        for e in (data or {}).get("emails") or ():
            if isinstance(e, str) and "@" in e:
                emails[email_key(e)] = None
    plan = ErasurePlan(golden_id, golden[golden_id].display_name, ids, list(emails),
                       sorted((s.connection, s.stream, s.source_id) for s in srcs))
    # (Receipts keep the destination's ids, never the golden id: golden ids derive from source
    # ids, so one would tell whom an erasure was about without the salt.)
    held: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in srcs:
        held.setdefault((s.connection, s.stream), []).append({"external_id": s.source_id})
    for p in pushed:
        targets = held.setdefault((p.connection, p.stream), [])
        if p.external_id is None or all(t["external_id"] != p.external_id for t in targets):
            targets.append({"external_id": p.external_id})
    for name, ccfg in hub.config.connections.items():
        plan.receipts.extend(_receipts_for(hub, name, [k for k, v in ccfg.streams.items() if v.enabled], held, plan.emails))
    return plan


def _receipts_for(hub: Hub, connection: str, stream_names: list[str], held: dict[tuple[str, str], list[dict[str, Any]]],
                  emails: list[str]) -> list[dict[str, Any]]:
    """The receipts of one connection's streams that hold (or may hold) the person."""
    out: list[dict[str, Any]] = []
    try:
        connector = hub.connector(connection)
        try:
            streams = connector.streams()
        finally:
            connector.close()
    except Exception as exc:  # a connection that cannot even be built: asked again on its next run
        for sname in stream_names:
            if held.get((connection, sname)):
                out.append({"connection": connection, "stream": sname, "status": "failed", "retryable": True,
                            "detail": redact(f"could not set up the connection: {exc}")[:1000],
                            "targets": [{**t, "emails": emails} for t in held[(connection, sname)]]})
        return out
    for sname in stream_names:
        stream = streams.get(sname)
        targets = held.get((connection, sname))
        if stream is None:
            continue
        base = {"connection": connection, "stream": sname}
        if stream.write_mode == "snapshot" and stream.can_write:
            where = stream.describe_target() or "the export"
            out.append({**base, "status": "pending", "retryable": True, "targets": None,
                        "detail": f"{where} is written again without them at the connection's next run"})
        elif not targets:
            continue
        elif stream.can_erase:
            out.append({**base, "status": "pending", "retryable": True, "detail": None,
                        "targets": [{**t, "emails": emails} for t in targets]})
        else:
            # Kept until someone confirms the removal (``synchub erasures done``): they need to
            # know which rows to remove. The hub does not import them again meanwhile.
            out.append({**base, "status": "manual", "retryable": False,
                        "targets": [{"external_id": t["external_id"]} for t in targets if t["external_id"]],
                        "detail": f"{connection}/{sname} cannot erase: remove these records at the source, "
                                  "then mark this receipt done"})
    return out


@contextlib.contextmanager
def _all_locks(hub: Hub, names: Iterable[str], wait: float) -> Iterator[None]:
    """Every named connection's run lock, so no sync lands the person again while they are erased."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.ExitStack() as stack:
            busy = None
            for name in sorted(set(names)):
                lock = stack.enter_context(connection_lock(hub.store, name))
                if lock is None:
                    busy = name
                    break
            if busy is None:
                yield
                return
        if time.monotonic() >= deadline:
            from synchub.engine import AlreadyRunning

            raise AlreadyRunning(f"connection {busy!r} is running; nothing was erased, try again when it has finished")
        time.sleep(0.5)


def erase(hub: Hub, who: str, *, actor: str, reason: str = "erase", fan: bool = True, wait: float = 60.0) -> ErasurePlan:
    """Erase the person ``who`` (id, id prefix, merged-away id, or e-mail) from the hub, suppress
    them, and (``fan``) ask every connection that holds them to erase them too."""
    salt = _salt(hub)
    with _planned(hub, who, wait) as plan:
        now = st.utcnow()
        with hub.store.begin() as conn:
            erasure_id = _forget(conn, salt, plan, actor, reason, now)
            st.insert_receipts(conn, [{**r, "erasure_id": erasure_id, "attempts": 0, "updated_at": now}
                                      for r in plan.receipts])
            st.insert_audit(conn, [{"at": now, "actor": actor, "action": "erase", "golden_id": None, "details": {
                "erasure": erasure_id, "reason": reason, "records": len(plan.sources),
                "connections": sorted({f"{r['connection']}/{r['stream']}" for r in plan.receipts})}}])
        log.info("erased customer (erasure %s): %d source records, %d receipts", erasure_id, len(plan.sources),
                 len(plan.receipts))
        if fan:
            fan_out(hub, erasure_id=erasure_id)
    return plan


@contextlib.contextmanager
def _planned(hub: Hub, who: str, wait: float) -> Iterator[ErasurePlan]:
    """The erasure plan of ``who``, made while every connection's run lock is held: the customer
    is looked up again under the locks, since a run that held them may have merged it."""
    golden_id = find_person(hub, who)
    with _all_locks(hub, hub.config.connections, wait):
        yield plan_erasure(hub, find_person(hub, golden_id))


def _forget(conn: sa.Connection, salt: bytes, plan: ErasurePlan, actor: str, reason: str, now: datetime) -> int:
    """What erasing and anonymising share: the erasure row (a keyed hash of the id), the person's
    identifiers on the suppression list, every row about them deleted. Returns the erasure id."""
    plan.erasure_id = erasure_id = st.insert_erasure(conn, digest(salt, "customer", plan.golden_id), actor, reason, now)
    st.insert_suppressions(conn, [
        *({"digest": digest(salt, "email", e), "key_type": "email", "erasure_id": erasure_id, "created_at": now}
          for e in plan.emails),
        *({"digest": digest(salt, "source", source_key(*s)), "key_type": "source", "erasure_id": erasure_id,
           "created_at": now} for s in plan.sources),
    ])
    plan.deleted = st.erase_rows(conn, plan.golden_ids, plan.emails)
    _forget_queued(conn, plan.sources)
    return erasure_id


def _forget_queued(conn: sa.Connection, sources: list[tuple[str, str, str]]) -> None:
    """The person's vendor ids leave the webhook queue (:mod:`synchub.webhooks`)."""
    from synchub.webhooks import forget_objects

    by_connection: dict[str, set[str]] = {}
    for connection, _stream, source_id in sources:
        by_connection.setdefault(connection, set()).add(source_id)
    for connection, ids in by_connection.items():
        forget_objects(conn, connection, ids)


def fan_out(hub: Hub, *, connection: str | None = None, erasure_id: int | None = None) -> dict[str, int]:
    """Ask the connections to erase what their open receipts name (pending, or failed and
    retryable): all of them, one connection's (at the start of its runs) or one erasure's.
    Returns the receipts by their new status."""
    with hub.store.engine.connect() as conn:
        todo = st.open_receipts(conn, connection, erasure_id)
    out: dict[str, int] = {}
    by_conn: dict[str, list[Any]] = {}
    for r in todo:
        if r.targets is None:  # a file export: done at its next write
            continue
        by_conn.setdefault(r.connection, []).append(r)
    for name, receipts in by_conn.items():
        try:
            connector = hub.connector(name)
            streams = connector.streams()
        except Exception as exc:
            _record(hub, receipts, {}, f"could not set up the connection: {exc}")
            out["failed"] = out.get("failed", 0) + len(receipts)
            continue
        try:
            for r in receipts:
                stream = streams.get(r.stream)
                if stream is None or not stream.can_erase:
                    _record(hub, [r], {}, f"stream {r.stream!r} is no longer configured or cannot erase", retryable=False)
                    out["failed"] = out.get("failed", 0) + 1
                    continue
                targets = [ErasureTarget(f"erasure-{r.erasure_id}", t.get("external_id"), list(t.get("emails") or ()))
                           for t in r.targets or ()]
                try:
                    results = list(stream.erase(targets))
                except Exception as exc:  # the connector broke: every target is still to do
                    results = [ErasureResult(t, "failed", f"{type(exc).__name__}: {exc}") for t in targets]
                status = _record(hub, [r], _by_target(targets, results), None, targets=targets)
                out[status] = out.get(status, 0) + 1
        finally:
            connector.close()
    return out


def _by_target(targets: list[ErasureTarget], results: list[ErasureResult]) -> dict[int, ErasureResult]:
    """Each target's answer (by the target object; a connector that copied it, by its ids)."""
    mine = {id(t) for t in targets}
    same = {(t.golden_id, t.external_id, tuple(t.emails)): t for t in targets}
    out: dict[int, ErasureResult] = {}
    for res in results:
        t = res.target if id(res.target) in mine else same.get(
            (res.target.golden_id, res.target.external_id, tuple(res.target.emails)))
        if t is not None:
            out[id(t)] = res
    return out


def _record(hub: Hub, receipts: list[Any], results: dict[int, ErasureResult], error: str | None, *,
            targets: list[ErasureTarget] | None = None, retryable: bool = True) -> str:
    """Write what the connection answered into the receipts; returns the (last) status."""
    now = st.utcnow()
    status = "failed"
    with hub.store.begin() as conn:
        for r in receipts:
            if error is not None:
                st.update_receipt(conn, r.id, now, status="failed", detail=redact(error)[:1000], retryable=retryable,
                                  attempts=r.attempts + 1, targets=r.targets if retryable else _ids_only(r.targets))
                continue
            answers = [results.get(id(t)) for t in targets or ()]
            failed = [(t, a) for t, a in zip(targets or (), answers, strict=True) if a is None or a.status == "failed"]
            if failed:
                status = "failed"
                detail = "; ".join(redact(a.detail or "failed") if a else "no answer from the connector" for _t, a in failed)
                again = all(a is None or a.retryable for _t, a in failed)
                # Kept for the next attempt; a final failure keeps only the ids a person must act on.
                keep = [{"external_id": t.external_id, "emails": t.emails} for t, _a in failed]
                st.update_receipt(conn, r.id, now, status="failed", detail=detail[:1000],
                                  targets=keep if again else _ids_only(keep), retryable=again, attempts=r.attempts + 1)
            else:
                status = "requested" if any(a is not None and a.status == "requested" for a in answers) else "confirmed"
                detail = "; ".join(dict.fromkeys(a.detail for a in answers if a is not None and a.detail)) or None
                # Answered: the destination's ids and the e-mails are not kept any longer.
                st.update_receipt(conn, r.id, now, status=status, detail=detail and detail[:1000], targets=None,
                                  retryable=False, attempts=r.attempts + 1)
    return status


def _ids_only(targets: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A receipt nobody will retry keeps the destination's ids (to act on by hand), nothing else."""
    ids = [{"external_id": t["external_id"]} for t in targets or () if t.get("external_id")]
    return ids or None


def erasures(hub: Hub, limit: int = 100, erasure_id: int | None = None) -> list[dict[str, Any]]:
    """Erasures, newest first, with their receipts (without the ids still to erase)."""
    with hub.store.engine.connect() as conn:
        rows = st.erasure_rows(conn, limit, erasure_id)
    for e in rows:
        for r in e["receipts"]:
            held = r["targets"] or ()
            # What a person has to remove by hand; the ids other receipts still send are not shown.
            by_hand = r["status"] == "manual" or (r["status"] == "failed" and not r["retryable"])
            r["to_remove"] = [str(t["external_id"]) for t in held if t.get("external_id")] if by_hand else []
            r["targets"] = len(held)
    return rows


def lift(hub: Hub, email: str, *, actor: str) -> bool:
    """Take an e-mail address off the suppression list: an erased person signed up again (new
    consent), so a *new* record with that address may land. The records the sources still hold
    from before stay out (their source ids remain suppressed). Audited without the address.
    Returns False when the address was not on the list."""
    salt = _salt(hub)
    d = digest(salt, "email", email_key(email))
    now = st.utcnow()
    with hub.store.begin() as conn:
        if not st.delete_suppression(conn, d):
            return False
        st.insert_audit(conn, [{"at": now, "actor": actor, "action": "suppression_lifted", "golden_id": None,
                                "details": {"key_type": "email"}}])
    return True


def mark_done(hub: Hub, receipt_id: int, *, actor: str) -> None:
    """Someone removed a ``manual`` receipt's records at the source: the receipt is confirmed
    and the ids it kept are forgotten."""
    now = st.utcnow()
    with hub.store.begin() as conn:
        row = conn.execute(sa.select(st.receipt_t).where(st.receipt_t.c.id == receipt_id)).first()
        if row is None:
            raise NotFoundError(f"no erasure receipt {receipt_id}")
        if row.status not in ("manual", "failed"):
            raise ErasureError(f"receipt {receipt_id} is {row.status}: only manual or failed ones are marked done by hand")
        st.update_receipt(conn, receipt_id, now, status="confirmed", targets=None, retryable=False,
                          detail=f"removed at the source, confirmed by {actor}")
        st.insert_audit(conn, [{"at": now, "actor": actor, "action": "erase_confirmed", "golden_id": None,
                                "details": {"erasure": row.erasure_id, "receipt": receipt_id,
                                            "connection": row.connection, "stream": row.stream}}])


# ----- retention -------------------------------------------------------------------------------


@dataclass
class RetentionCandidate:
    golden_id: str
    name: str
    last_activity: datetime | None


def retention_candidates(hub: Hub, rule_name: str, *, now: datetime | None = None) -> list[RetentionCandidate]:
    """The customers the retention rule ``rule_name`` applies to now."""
    from synchub.segment import compile_filter

    rules = {r.name: r for r in hub.config.privacy.retention}
    if rule_name not in rules:
        raise ConfigError(f"no retention rule named {rule_name!r} (configured: {', '.join(rules) or 'none'})")
    rule = rules[rule_name]
    selected = compile_filter(rule.filter, rule.entity)
    cutoff = (now or st.utcnow()) - timedelta(days=rule.inactive_days)
    out: list[RetentionCandidate] = []
    with hub.store.engine.connect() as conn:
        last = st.last_activity(conn, rule.entity)
    for rec in hub.store.iter_golden(rule.entity):
        seen = last.get(rec["id"])
        if seen is not None and seen >= cutoff:
            continue
        if selected(rec["data"]):
            out.append(RetentionCandidate(rec["id"], "", seen))
    names = hub.store.display_names(c.golden_id for c in out)
    for c in out:
        c.name = names.get(c.golden_id, "")
    return out


def retention(hub: Hub, rule_name: str, *, apply: bool, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Run one retention rule: without ``apply`` only say whom it would reach (audited as a dry
    run); with it, erase or anonymise each of them."""
    rule = next((r for r in hub.config.privacy.retention if r.name == rule_name), None)
    found = retention_candidates(hub, rule_name, now=now)
    done: list[str] = []
    failed: list[str] = []
    if apply and found:
        _salt(hub)  # before the first one: a missing salt fails the whole run, not each customer
        for c in found:
            try:
                if rule is not None and rule.action == "anonymise":
                    anonymise(hub, c.golden_id, actor=actor, reason=f"retention:{rule_name}")
                else:
                    erase(hub, c.golden_id, actor=actor, reason=f"retention:{rule_name}")
                done.append(c.golden_id)
            except NotFoundError:
                continue  # merged or erased since the list was made
            except SynchubError as exc:
                log.error("retention %s: customer %s: %s", rule_name, c.golden_id, exc)
                failed.append(c.golden_id)
    with hub.store.begin() as conn:
        st.insert_audit(conn, [{"at": st.utcnow(), "actor": actor, "action": "retention" if apply else "retention_dry_run",
                                "golden_id": None, "details": {"rule": rule_name, "found": len(found), "done": len(done),
                                                               "failed": len(failed)}}])
    return {"rule": rule_name, "action": rule.action if rule else None, "apply": apply, "found": found,
            "done": done, "failed": failed}


#: What an anonymised customer keeps: nothing that identifies them, enough for the figures.
ANONYMOUS_FIELDS = ("lifecycle_stage", "purchases", "language")


def anonymise(hub: Hub, who: str, *, actor: str, reason: str = "anonymise") -> str:
    """Replace the customer by a record without anything that identifies them (country,
    lifecycle stage, purchase figures stay), suppress them as an erasure does, and leave the
    sources alone. Returns the anonymous record's id."""
    salt = _salt(hub)
    with _planned(hub, who, 60.0) as plan:
        now = st.utcnow()
        with hub.store.begin() as conn:
            row = st.golden_row(conn, plan.golden_id)
            assert row is not None
            data = {k: row.data[k] for k in ANONYMOUS_FIELDS if k in (row.data or {})}
            if isinstance(data.get("purchases"), dict):
                # Exact order dates with the totals could point back to the person: months only.
                data["purchases"] = {k: (v[:7] if k.endswith("_at") and isinstance(v, str) else v)
                                     for k, v in data["purchases"].items()}
            country = ((row.data or {}).get("address") or {}).get("country")
            if country:
                data["address"] = {"country": country}
            erasure_id = _forget(conn, salt, plan, actor, reason, now)
            new_id = st.new_golden_id()
            st.insert_golden(conn, [{"id": new_id, "kind": "person", "status": "anonymised", "merged_into": None,
                                     "display_name": "", "search_text": "", "data": data, "provenance": {},
                                     "version": 1, "created_at": row.created_at, "updated_at": now}])
            st.insert_audit(conn, [{"at": now, "actor": actor, "action": "anonymise", "golden_id": None,
                                    "details": {"erasure": erasure_id, "reason": reason, "records": len(plan.sources)}}])
    return new_id
