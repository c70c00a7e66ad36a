"""REST API of the admin console (issue 19), served by ``synchub web``.

Every route names the permission it needs (:data:`synchub.accounts.PERMISSIONS`); the route
table :data:`ROUTES` is the whole access policy and is checked route by route in the tests.
Callers authenticate with a session cookie (``POST /api/v1/session``) or an API token
(``Authorization: Bearer shk_...``). A state-changing request made with a session cookie must
carry the session's CSRF token in the ``X-CSRF-Token`` header; token requests need none (a
browser never sends a bearer token on its own). Decisions go through the same functions as the
CLI (:mod:`synchub.review`) and are audited as ``user:<name>``.

Responses carry security headers (a CSP without inline scripts, ``frame-ancestors 'none'``,
no caching of personal data).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path as PathLib
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from synchub import accounts
from synchub.accounts import User
from synchub.errors import SynchubError

log = logging.getLogger(__name__)

#: The console's page, script and style (no resource is loaded from elsewhere).
STATIC = PathLib(__file__).resolve().parent / "static"
COOKIE = "synchub_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: (method, path) -> permission; filled by :func:`_route`. ``None``: no login needed.
ROUTES: dict[tuple[str, str], str | None] = {}

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _integer(value: Any) -> int:
    """A JSON integer as JSON Schema reads it: ``3`` or ``3.0``, never ``true`` or ``"3"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be an integer")
    return int(value)


#: A row id: a positive 32-bit integer (PostgreSQL's ``integer``; SQLite refuses past 64 bits).
Id = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(_integer)]


class _Body(BaseModel):
    """A request body: exactly the documented fields and types (no coercion of ``false`` to 0)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Problem(BaseModel):
    detail: str


class Login(_Body):
    name: str = Field(max_length=100)
    password: str = Field(max_length=1000)


class Me(BaseModel):
    name: str
    role: str
    language: str | None = None
    permissions: list[str]
    csrf_token: str | None = None


class ConflictOut(BaseModel):
    id: int
    kind: str
    status: str
    golden_id: str
    other_golden_id: str | None = None
    field: str | None = None
    customer: str | None = None
    other_customer: str | None = None
    candidates: list[dict[str, Any]]
    applied: dict[str, Any] | None = None
    rule: str | None = None
    created_at: datetime
    resolved_by: str | None = None
    resolution: dict[str, Any] | None = None


class Decision(_Body):
    ids: list[Id] = Field(min_length=1, max_length=500)
    action: Literal["merge", "keep_apart", "pick", "value", "dismiss"]
    pick: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_integer)] | None = None
    value: Any = None


class DecisionResult(BaseModel):
    id: int
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None


class CustomerHit(BaseModel):
    id: str
    kind: str
    name: str
    email: str | None = None
    phone: str | None = None
    city: str | None = None


class CustomerOut(BaseModel):
    id: str
    kind: str
    status: str
    name: str
    version: int
    data: dict[str, Any]
    provenance: dict[str, Any]
    #: each field unit with its value and where it came from and why it won
    fields: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    #: values a source gave that could not be used (or are unverified), with the reason
    quarantined: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    history: list[dict[str, Any]]


class Split(_Body):
    merged: str | None = Field(default=None, max_length=32)
    sources: list[str] = Field(default_factory=list, max_length=100)


class SplitResult(BaseModel):
    customer: str
    split_off: str


class RunOut(BaseModel):
    id: int
    connection: str
    direction: str | None = None
    trigger: str | None = None
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    counts: dict[str, Any] | None = None


class RunDetail(RunOut):
    rejected: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]


class SegmentOut(BaseModel):
    connection: str
    stream: str
    entity: str
    filter: dict[str, Any] | None = None
    members: int


class ReoptinOut(BaseModel):
    conflict_id: int
    customer_id: str
    name: str
    email: str | None = None
    destination: str
    note: str | None = None
    since: datetime


class RunStarted(BaseModel):
    connection: str
    status: str


class CSVResponse(Response):
    media_type = "text/csv"


class HTMLResponse(Response):
    media_type = "text/html"


class Erase(_Body):
    #: Must be true: an erasure cannot be undone.
    confirm: Literal[True]


class ReceiptOut(BaseModel):
    id: int
    connection: str
    stream: str
    status: str
    detail: str | None = None
    attempts: int
    updated_at: datetime
    #: For ``manual`` receipts: the source ids someone must remove at the source.
    to_remove: list[str] = []


class ErasureOut(BaseModel):
    id: int
    requested_by: str
    requested_at: datetime
    reason: str
    receipts: list[ReceiptOut]


class UserOut(BaseModel):
    name: str
    role: str
    language: str | None = None
    disabled: bool


class NewUser(_Body):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["admin", "steward", "marketing", "viewer"]
    password: str = Field(min_length=accounts.MIN_PASSWORD, max_length=1000)
    language: Literal["de", "en"] | None = None


class UserChange(_Body):
    role: Literal["admin", "steward", "marketing", "viewer"] | None = None
    disabled: bool | None = None
    language: Literal["de", "en"] | None = None
    password: str | None = Field(default=None, min_length=accounts.MIN_PASSWORD, max_length=1000)


_ERRORS = {401: {"model": Problem}, 403: {"model": Problem}}
#: How long the console's data-quality report is reused before it is built again.
QUALITY_CACHE_SECONDS = 300
#: How the CSV downloads are documented in the OpenAPI document.
_CSV_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}
_EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}, "text/html": {"schema": {"type": "string"}}}},
    404: {"model": Problem}}


def create_app(hub: Any) -> FastAPI:
    """The API on ``hub``'s store (a :class:`synchub.engine.Hub`)."""
    store = hub.store
    app = FastAPI(title="synchub", version="1", description="Review conflicts, see customers, follow runs.",
                  docs_url=None, redoc_url=None, openapi_url="/api/v1/openapi.json")

    def with_headers(request: Request, response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https" or hub.config.web.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        return with_headers(request, await call_next(request))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # Outside the middleware above: an unexpected error's answer needs the headers too.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return with_headers(request, JSONResponse({"detail": "internal error"}, status_code=500))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # One route per method: name every method of the path, not just the first route's.
            headers["Allow"] = ", ".join(sorted({m for r in app.routes if isinstance(r, APIRoute)
                                                 and r.path_regex.match(request.url.path) for m in r.methods}))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(SynchubError)
    async def refused(_request: Request, exc: SynchubError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def current_user(request: Request) -> User:
        user = authenticated(request)
        if user.role == "viewer" and hub.config.web.viewers_see_personal_data:
            return dataclasses.replace(user, grants=frozenset({"read_personal"}))
        return user

    def authenticated(request: Request) -> User:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            user = accounts.token_user(store, auth[7:].strip())
            if user is None:
                raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
            return user
        cookie = request.cookies.get(COOKIE, "")
        user = accounts.session_user(store, cookie)
        if user is None:
            raise HTTPException(401, "not logged in", headers={"WWW-Authenticate": "Bearer"})
        if request.method not in SAFE_METHODS and not accounts.csrf_ok(cookie, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        return user

    def need(permission: str) -> Any:
        def check(user: User = Depends(current_user)) -> User:
            if not user.can(permission):
                raise HTTPException(403, f"your role ({user.role}) may not do this ({permission})")
            return user
        return Depends(check)

    def route(method: str, path: str, permission: str | None, **kwargs: Any) -> Callable[[Any], Any]:
        ROUTES[(method, path)] = permission
        responses = {400: {"model": Problem}, **(_ERRORS if permission else {}), **kwargs.pop("responses", {})}
        return app.api_route(path, methods=[method], responses=responses, **kwargs)

    def actor(user: User) -> str:
        return f"user:{user.name}"

    # ----- session ----------------------------------------------------------------------------

    @route("POST", "/api/v1/session", None, response_model=Me,
           responses={401: {"model": Problem}, 429: {"model": Problem}})
    def login(body: Login, request: Request, response: Response) -> Any:
        address = request.client.host if request.client else "unknown"
        try:
            user = accounts.authenticate(store, body.name, body.password, address)
        except accounts.LoginRefused as exc:
            if exc.retry_after:
                raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
            raise HTTPException(401, str(exc)) from None
        cookie = accounts.start_session(store, user)
        response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https" or hub.config.web.secure_cookies,
                            max_age=int(accounts.SESSION_LIFETIME.total_seconds()))
        return _me(user, accounts.csrf_token(cookie))

    @route("DELETE", "/api/v1/session", "read", status_code=204)
    def logout(request: Request, response: Response, user: User = need("read")) -> None:
        accounts.end_session(store, request.cookies.get(COOKIE, ""))
        response.delete_cookie(COOKIE, path="/")

    @route("GET", "/api/v1/me", "read", response_model=Me)
    def me(request: Request, user: User = need("read")) -> Any:
        cookie = request.cookies.get(COOKIE)
        return _me(user, accounts.csrf_token(cookie) if cookie else None)

    # ----- review queue -----------------------------------------------------------------------

    @route("GET", "/api/v1/conflicts", "read", response_model=list[ConflictOut])
    def conflicts(
        user: User = need("read"),
        status: Literal["open", "resolved", "dismissed", "closed", "all"] = "open",
        kind: Literal["field", "possible_duplicate", "needs_reoptin"] | None = None,
        field: str | None = Query(None, max_length=200),
        connection: str | None = Query(None, max_length=100),
        customer: str | None = Query(None, max_length=32),
        older_than_days: int | None = Query(None, ge=0, le=36500),
        min_score: float | None = Query(None, ge=-1000, le=1000),
        max_score: float | None = Query(None, ge=-1000, le=1000),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=10_000_000),
    ) -> Any:
        older = datetime.now(timezone.utc) - timedelta(days=older_than_days) if older_than_days is not None else None
        rows = store.list_conflicts(None if status == "all" else status, limit=limit, offset=offset, kind=kind,
                                    field=field, connection=connection, customer=customer, older_than=older)
        if min_score is not None or max_score is not None:
            # A score band: possible duplicates only (field conflicts have no score). Applied to
            # the page read, so a narrow band may return fewer than ``limit`` items.
            low, high = (-1e9 if min_score is None else min_score), (1e9 if max_score is None else max_score)
            rows = [r for r in rows if r["candidates"] and isinstance(r["candidates"][0].get("score"), (int, float))
                    and low <= r["candidates"][0]["score"] <= high]
        return _conflicts(store, rows, user)

    @route("GET", "/api/v1/conflicts/{conflict_id}", "read", response_model=ConflictOut,
           responses={404: {"model": Problem}})
    def conflict(conflict_id: int = Path(ge=1, le=2**31 - 1), user: User = need("read")) -> Any:
        rows = store.list_conflicts(None, limit=1, id=conflict_id)
        if not rows:
            raise HTTPException(404, f"no conflict {conflict_id}")
        return _conflicts(store, rows, user)[0]

    @route("POST", "/api/v1/decisions", "review", response_model=list[DecisionResult])
    def decide(body: Decision, user: User = need("review")) -> Any:
        from synchub.review import resolve_conflict

        results = []
        for cid in body.ids:
            try:
                value = None if body.action != "value" else (body.value if isinstance(body.value, str) else _json(body.value))
                result = resolve_conflict(hub, cid, pick=body.pick if body.action == "pick" else None, value=value,
                                          merge=body.action == "merge", keep_apart=body.action == "keep_apart",
                                          dismiss=body.action == "dismiss", by=actor(user))
                results.append(DecisionResult(id=cid, ok=True, result=result))
            except SynchubError as exc:
                results.append(DecisionResult(id=cid, ok=False, error=str(exc)))
        return results

    # ----- customers --------------------------------------------------------------------------

    @route("GET", "/api/v1/customers", "read", response_model=list[CustomerHit])
    def customers(q: str = Query(..., min_length=1, max_length=200), limit: int = Query(20, ge=1, le=200),
                  user: User = need("read")) -> Any:
        region = hub.config.defaults.phone_region
        hits = store.search_golden(q, limit, phone_region=region) if user.can("read_personal") else [
            r for r in store.search_golden(q, limit, phone_region=region) if _name_matches(q, r)]
        out = []
        for r in hits:
            d = r["data"] or {}
            hit = CustomerHit(id=r["id"], kind=r["kind"], name=r["display_name"] or "")
            if user.can("read_personal"):
                hit.email = (d.get("emails") or [None])[0]
                hit.phone = (d.get("phones") or [None])[0]
                hit.city = (d.get("address") or {}).get("city")
            out.append(hit)
        return out

    @route("GET", "/api/v1/customers/{customer_id}", "read", response_model=CustomerOut,
           responses={404: {"model": Problem}})
    def customer(customer_id: str, user: User = need("read")) -> Any:
        rec = store.get_golden(customer_id) if 0 < len(customer_id) <= 32 else None
        if rec is None:
            raise HTTPException(404, f"no customer {customer_id!r}")
        personal = user.can("read_personal")
        data = rec["data"] if personal else {k: v for k, v in rec["data"].items() if k in _NAME_FIELDS}
        from synchub.merge import provenance_of
        from synchub.schema import field_units

        prov = (rec["provenance"] or {}) if personal else {}
        sources = store.source_records_of(rec["id"])
        fields = []
        for unit, value in field_units(data).items():
            p = provenance_of(prov, unit) if personal else {}
            fields.append({"field": unit, "value": value, "connection": p.get("connection"), "stream": p.get("stream"),
                           "source_id": p.get("source_id"), "observed_at": p.get("observed_at"), "rule": p.get("rule"),
                           "lost": [{"value": x.get("value"), "connection": x.get("connection")} for x in p.get("losing") or []]})
        return CustomerOut(
            id=rec["id"], kind=rec["kind"], status=rec["status"], name=rec["display_name"] or "", version=rec["version"],
            data=data, provenance=prov, fields=fields,
            sources=[{k: s[k] for k in ("connection", "stream", "source_id", "observed_at", "deleted")
                      if k != "source_id" or personal} for s in sources],
            quarantined=[{"connection": s["connection"], "stream": s["stream"], "source_id": s["source_id"], **q}
                         for s in sources for q in (s.get("quarantine") or [])] if personal else [],
            timeline=[{k: t[k] for k in ("kind", "occurred_at", "connection", "stream", "source_id", "data")}
                      for t in store.timeline_of(rec["id"])] if personal else [],
            history=[{k: a[k] for k in ("at", "actor", "action", "details")} for a in store.audit_of(rec["id"], limit=200)]
            if personal else [])

    @route("POST", "/api/v1/customers/{customer_id}/split", "review", response_model=SplitResult,
           responses={404: {"model": Problem}, 409: {"model": Problem}})
    def split(customer_id: str, body: Split, user: User = need("review")) -> Any:
        from synchub.review import split_sources, undo_merge

        rec = store.get_golden(customer_id) if 0 < len(customer_id) <= 32 else None
        if rec is None:
            raise HTTPException(404, f"no customer {customer_id!r}")
        if body.sources:
            new_id = split_sources(hub, rec["id"], body.sources, by=actor(user))
        else:
            new_id = undo_merge(hub, rec["id"], merged_id=body.merged, by=actor(user))
        return SplitResult(customer=rec["id"], split_off=new_id)

    # ----- privacy ----------------------------------------------------------------------------

    @route("GET", "/api/v1/customers/{customer_id}/export", "privacy", responses=_EXPORT_DOC)
    def export(customer_id: str, format: Literal["json", "html"] = "json", user: User = need("privacy")) -> Any:
        """Everything the hub holds about one person, with sources (access and portability)."""
        from synchub.errors import NotFoundError
        from synchub.privacy import access_export, to_html, to_json

        try:
            data = access_export(store, customer_id) if 0 < len(customer_id) <= 32 else None
        except NotFoundError:
            data = None
        if data is None:
            raise HTTPException(404, f"no customer {customer_id!r}")
        with store.begin() as conn:  # who looked at whose data
            from synchub.store import insert_audit, utcnow

            insert_audit(conn, [{"at": utcnow(), "actor": actor(user), "action": "export", "golden_id": data["customer"],
                                 "details": {"format": format}}])
        if format == "html":
            return HTMLResponse(to_html(data), headers={"Content-Disposition": f'attachment; filename="{data["customer"]}.html"'})
        return Response(to_json(data), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{data["customer"]}.json"'})

    @route("POST", "/api/v1/customers/{customer_id}/erase", "privacy", response_model=ErasureOut,
           responses={404: {"model": Problem}, 409: {"model": Problem}})
    def erase(customer_id: str, body: Erase, user: User = need("privacy")) -> Any:
        """Erase the person from the hub and every connection holding them (cannot be undone)."""
        from synchub.errors import NotFoundError
        from synchub.privacy import erase as erase_person
        from synchub.privacy import erasures

        if len(customer_id) != 32:  # the whole id: a mistyped prefix must not erase someone else
            raise HTTPException(404, f"no customer {customer_id!r} (erasure takes the whole 32-digit id)")
        try:
            plan = erase_person(hub, customer_id, actor=actor(user), wait=10.0)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return erasures(hub, erasure_id=plan.erasure_id)[0]

    @route("GET", "/api/v1/erasures", "privacy", response_model=list[ErasureOut])
    def erasure_list(limit: Annotated[int, Query(ge=1, le=1000)] = 100, user: User = need("privacy")) -> Any:
        """Erasures, newest first, with each connection's receipt."""
        from synchub.privacy import erasures

        return erasures(hub, limit)

    # ----- data quality -----------------------------------------------------------------------

    quality_cache: dict[str, Any] = {}
    quality_lock = threading.Lock()

    def quality_report() -> dict[str, Any]:
        """The report, built at most every few minutes and one build at a time (about 5 s and a
        long read on a 100k store: not once per page view)."""
        from synchub.quality import build_report, segments_from_config

        with quality_lock:
            at, report = quality_cache.get("at", 0.0), quality_cache.get("report")
            if report is None or time.monotonic() - at > QUALITY_CACHE_SECONDS:
                q = hub.config.quality
                report = build_report(store, stale_days=q.stale_days, period=q.period,
                                      segments=segments_from_config(hub.config))
                quality_cache.update(at=time.monotonic(), report=report)
            return report

    @route("GET", "/api/v1/quality", "segments", response_model=dict[str, Any])
    def quality(user: User = need("segments")) -> Any:
        """The data-quality report's figures (aggregates only, nothing about one person)."""
        return quality_report()

    @route("GET", "/api/v1/quality.html", "segments", response_class=HTMLResponse,
           responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
    def quality_page(user: User = need("segments")) -> Any:
        """The data-quality report as a page with plots (no script; inline styles and SVG only)."""
        from synchub.quality import render_html

        return HTMLResponse(render_html(quality_report()), headers={"Content-Security-Policy": (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")})

    # ----- runs -------------------------------------------------------------------------------

    @route("GET", "/api/v1/runs", "read", response_model=list[RunOut])
    def runs(limit: int = Query(50, ge=1, le=1000), connection: str | None = Query(None, max_length=100),
             user: User = need("read")) -> Any:
        return [RunOut(**{k: r.get(k) for k in RunOut.model_fields}) for r in store.recent_runs(limit, connection)]

    @route("GET", "/api/v1/runs/{run_id}", "read", response_model=RunDetail, responses={404: {"model": Problem}})
    def run(run_id: int = Path(ge=1, le=2**31 - 1), user: User = need("read")) -> Any:
        r = store.get_run(run_id)
        if r is None:
            raise HTTPException(404, f"no run {run_id}")
        personal = user.can("read_personal")
        # A rejected row's reason names file, line and field; its raw values only for personal-data roles.
        more = ("source_id", "raw") if personal else ()  # a source id is often an e-mail address
        rejected = [{k: x.get(k) for k in ("ref", "field", "reason", *more)} for x in store.rejected_for_run(run_id)]
        quarantined = [{k: q.get(k) for k in ("ref", "field", "reason", "status", *more)}
                       for q in store.quarantined_for_run(run_id)]
        return RunDetail(**{k: r.get(k) for k in RunOut.model_fields}, rejected=rejected, quarantined=quarantined)

    @route("POST", "/api/v1/connections/{name}/runs", "run", response_model=RunStarted, status_code=202,
           responses={404: {"model": Problem}})
    def rerun(name: str, user: User = need("run")) -> Any:
        """Start a run of one connection in the background; ``GET /api/v1/runs`` shows it."""
        import threading

        if name not in hub.config.connections:
            raise HTTPException(404, f"no connection {name!r}")

        def work() -> None:
            try:
                hub.sync([name], trigger=actor(user))
            except Exception:  # the run records its own failure; a busy connection is not one
                log.warning("re-run of %s failed", name, exc_info=True)

        threading.Thread(target=work, name=f"web-run-{name}", daemon=True).start()
        return RunStarted(connection=name, status="started")

    # ----- marketing: segments and the needs-re-opt-in list --------------------------------------

    @route("GET", "/api/v1/segments", "segments", response_model=list[SegmentOut])
    def segments(user: User = need("segments")) -> Any:
        """Members of each outbound stream's segment filter, counted over the active customers."""
        return segment_counts()

    @route("GET", "/api/v1/segments.csv", "segments", response_class=CSVResponse, responses=_CSV_DOC)
    def segments_csv(user: User = need("segments")) -> Any:
        """The segment sizes as CSV for Excel (``;``, UTF-8 with BOM)."""
        return _csv(["connection", "stream", "entity", "members"],
                    [[_cell(g.connection), _cell(g.stream), g.entity, str(g.members)] for g in segment_counts()], "segments.csv")

    def segment_counts() -> list[SegmentOut]:
        return [SegmentOut(connection=n, stream=s, entity=entity, filter=f, members=members)
                for n, s, entity, f, members in hub.segment_sizes()]

    def reoptin_rows() -> list[ReoptinOut]:
        out = []
        for c in store.list_conflicts("open", limit=100_000, kind="needs_reoptin"):
            g = store.get_golden(c["golden_id"]) or {"id": c["golden_id"], "display_name": "", "data": {}}
            emails = (g.get("data") or {}).get("emails") or []
            note = (c.get("applied") or {}).get("value")
            out.append(ReoptinOut(conflict_id=c["id"], customer_id=g["id"], name=g.get("display_name") or "",
                                  email=emails[0] if emails else None, destination=c.get("rule") or c.get("connections") or "",
                                  note=note if isinstance(note, str) else None, since=c["created_at"]))
        return out

    @route("GET", "/api/v1/reoptin", "segments", response_model=list[ReoptinOut])
    def reoptin(user: User = need("segments")) -> Any:
        """People a destination refuses to subscribe (they opted out there): the re-opt-in list."""
        return reoptin_rows()

    @route("GET", "/api/v1/reoptin.csv", "segments", response_class=CSVResponse, responses=_CSV_DOC)
    def reoptin_csv(user: User = need("segments")) -> Any:
        """The re-opt-in list as CSV for Excel (``;``, UTF-8 with BOM)."""
        return _csv(["email", "name", "customer_id", "destination", "since", "note"],
                    [[_cell(r.email), _cell(r.name), r.customer_id, _cell(r.destination), r.since.isoformat(), _cell(r.note)]
                     for r in reoptin_rows()], "reoptin.csv")

    # ----- users ------------------------------------------------------------------------------

    @route("GET", "/api/v1/users", "admin", response_model=list[UserOut])
    def users(user: User = need("admin")) -> Any:
        return [UserOut(**{k: u[k] for k in UserOut.model_fields}) for u in accounts.list_users(store)]

    @route("POST", "/api/v1/users", "admin", response_model=UserOut, status_code=201,
           responses={409: {"model": Problem}})
    def add_user(body: NewUser, user: User = need("admin")) -> Any:
        new = accounts.add_user(store, body.name, body.role, body.password, language=body.language, by=actor(user))
        return UserOut(name=new.name, role=new.role, language=new.language, disabled=False)

    @route("PATCH", "/api/v1/users/{name}", "admin", response_model=UserOut, responses={409: {"model": Problem}})
    def change_user(name: str, body: UserChange, user: User = need("admin")) -> Any:
        changed = accounts.change_user(store, name, by=actor(user), role=body.role, disabled=body.disabled,
                                       language=body.language, password=body.password)
        return UserOut(name=changed.name, role=changed.role, language=changed.language, disabled=changed.disabled)

    # ----- the console: one page and its script and style, all served from here ----------------

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


_NAME_FIELDS = frozenset({"first_name", "last_name", "company_name", "salutation", "title"})
#: What roles without personal data see of a conflict's candidate.
_PUBLIC_CANDIDATE = ("connection", "stream", "observed_at", "score")


def _csv(header: list[str], rows: list[list[str]], filename: str) -> CSVResponse:
    """A CSV download that Excel opens as it is (``;``, CRLF, UTF-8 with BOM)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return CSVResponse("\ufeff" + buf.getvalue(), headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _cell(value: str | None) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (CSV injection)."""
    text = value or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _me(user: User, csrf: str | None) -> Me:
    return Me(name=user.name, role=user.role, language=user.language,
              permissions=sorted(p for p in accounts.PERMISSIONS if user.can(p)), csrf_token=csrf)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _name_matches(query: str, row: dict[str, Any]) -> bool:
    """For roles without personal data: a hit only by name (not by e-mail or phone)."""
    from synchub.normalize import fold

    name = fold(row.get("display_name") or "")
    return all(term in name for term in fold(query).split())


def _conflicts(store: Any, rows: list[dict[str, Any]], user: User) -> list[ConflictOut]:
    """Conflicts as the console shows them: with the customers' names (read for all of them at
    once); candidate values only for roles that may read personal data."""
    names = store.display_names(g for r in rows for g in (r["golden_id"], r.get("other_golden_id")) if g)
    return [_conflict(r, names, user) for r in rows]


def _conflict(row: dict[str, Any], names: dict[str, str], user: User) -> ConflictOut:
    candidates = row["candidates"] or []
    applied, resolution = row.get("applied"), row.get("resolution")
    if not user.can("read_personal"):
        # An allow-list: values, reasons (they quote the shared e-mail or phone), notes and
        # source ids (often an e-mail address) are personal data.
        candidates = [{k: c[k] for k in _PUBLIC_CANDIDATE if k in c} for c in candidates]
        applied = None
        resolution = {"action": resolution["action"]} if resolution and "action" in resolution else None
    return ConflictOut(
        id=row["id"], kind=row["kind"], status=row["status"], golden_id=row["golden_id"],
        other_golden_id=row.get("other_golden_id"), field=row.get("field"), customer=names.get(row["golden_id"]),
        other_customer=names.get(row.get("other_golden_id") or ""), candidates=candidates, applied=applied,
        rule=row.get("rule"), created_at=row["created_at"], resolved_by=row.get("resolved_by"),
        resolution=resolution)
