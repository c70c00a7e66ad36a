"""``config/*.yaml`` -> validated pydantic models.

A config names the store, the connections (connector, settings, streams, direction, schedule),
the mappings each stream uses, and the match and merge rules. Secrets come from ``${ENV_VAR}``
(or ``${ENV_VAR:-default}``); YAML is read with the safe loader only, a key given twice is an
error, and so are documents nested too deep or too large once aliases are expanded.
:func:`check_config` collects *every* problem of every stage, each with file, line and field,
as errors and warnings; :func:`load_config` refuses a config with an error.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from synchub.errors import ConfigError, Problem
from synchub.redact import register_secret
from synchub.yamlfile import YamlDoc, interpolate_env, load_yaml, pydantic_problems, yaml_problem

DEFAULT_CONFIG_PATHS = ("config/synchub.yaml",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")


class Schedule(_Strict):
    """When ``synchub serve`` runs a connection: every ``interval`` (``30s``, ``15m``, ``2h``, ``1d``)
    or on a ``cron`` expression (5 fields, crontab syntax)."""

    interval: str | None = None
    cron: str | None = None
    timezone: str = "UTC"
    misfire_grace_seconds: int = Field(default=300, ge=1)
    coalesce: bool = True

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is not None and not _INTERVAL.match(v):
            raise ValueError("interval must look like 30s, 15m, 2h or 1d")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v)
            except ValueError as exc:
                raise ValueError(f"not a valid cron expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of interval or cron")
        return self

    def interval_seconds(self) -> int | None:
        if self.interval is None:
            return None
        m = _INTERVAL.match(self.interval)
        assert m
        return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class StreamConfig(_Strict):
    mapping: str | None = None  # name of a mapping in the mappings folders
    #: For a ``direction: both`` connection: the out mapping used when writing (``mapping`` reads).
    write_mapping: str | None = None
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)
    #: Outbound: only golden records matching this filter go to the stream (see
    #: :mod:`synchub.segment`); records that stop matching leave it (``OutRecord(op="leave")``).
    filter: dict[str, Any] | None = None
    #: Inbound: the largest share of the stream's records one full listing or file snapshot may
    #: delete (``defaults.max_delete_share`` when unset). More is refused unless confirmed with
    #: ``synchub sync --confirm-deletions``: a truncated export must not empty the hub.
    max_delete_share: float | None = Field(default=None, gt=0, le=1)


class ConnectionConfig(_Strict):
    connector: str
    direction: Literal["in", "out", "both"] = "in"
    settings: dict[str, Any] = Field(default_factory=dict)
    streams: dict[str, StreamConfig] = Field(default_factory=dict)
    schedule: Schedule | None = None
    #: Which golden records an outbound connection receives (``person``, ``company``).
    entity: Literal["person", "company"] = "person"

    @property
    def inbound(self) -> bool:
        return self.direction in ("in", "both")

    @property
    def outbound(self) -> bool:
        return self.direction in ("out", "both")


class FieldRule(_Strict):
    """A survivorship rule for one field unit, with the rule used when it cannot decide."""

    rule: str = "most_recent"
    fallback: str | None = "most_recent"
    review: bool = False  # log a conflict for an admin when the candidates disagree
    args: dict[str, Any] = Field(default_factory=dict)


class EntityMergeConfig(_Strict):
    source_priority: list[str] = Field(default_factory=list)
    default: FieldRule = Field(default_factory=FieldRule)
    fields: dict[str, FieldRule] = Field(default_factory=dict)


class EntityMatchConfig(_Strict):
    #: Exact identity keys: records sharing one are the same customer unless the scorer's hard
    #: rules say two different people share it (a family's email address).
    keys: list[Literal["email", "phone", "phone_mobile", "domain"]] = Field(
        default_factory=lambda: ["email", "phone_mobile"]
    )
    #: Fuzzy matching over blocking candidates (names, birth date, address...).
    fuzzy: bool = True
    #: Overrides of the scorer's defaults: thresholds ``upper``/``lower``, field weights.
    score: dict[str, Any] = Field(default_factory=dict)

    def score_config(self, kind: str) -> Any:
        from synchub.similarity import ScoreConfig

        base = ScoreConfig.defaults_for(kind)
        return ScoreConfig.model_validate({**base.model_dump(), **self.score}) if self.score else base


class Defaults(_Strict):
    phone_region: str = "DE"
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    #: Bulk loads (match in memory, commit in units of 50,000 records): ``auto`` for a stream the
    #: store has never seen, ``always``, or ``never`` (every stream batch by batch). ``synchub
    #: sync --bulk/--no-bulk`` overrides it for one run.
    bulk_load: Literal["auto", "always", "never"] = "auto"
    #: See ``StreamConfig.max_delete_share``; deleting up to 3 records is always allowed.
    max_delete_share: float = Field(default=0.2, gt=0, le=1)


class ServeConfig(_Strict):
    """``synchub serve``: health and metrics endpoint, parallel jobs, how long run history is kept."""

    #: ``/healthz`` and ``/metrics`` listen here; keep it on loopback or a private interface
    #: (nothing on it needs a login, and nothing on it is secret). ``port: 0`` turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    #: Jobs of different connections that may run at once in one worker.
    threads: int = Field(default=4, ge=1, le=64)
    #: Finished runs (and their rejected records) older than this are deleted.
    keep_runs_days: int = Field(default=90, ge=1)


class WebConfig(_Strict):
    """``synchub web``: the admin console and its REST API."""

    #: Loopback by default; to reach it from other machines, put it behind a reverse proxy
    #: with TLS (README) rather than listening on a public interface.
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=1, le=65535)
    #: Mark the session cookie ``Secure`` even on plain HTTP (behind a TLS-terminating proxy
    #: that talks HTTP to the console). Over HTTPS it always is.
    secure_cookies: bool = False
    #: Viewers see names only unless this is on (then also e-mails, phones, addresses, consent,
    #: candidate values: everything a steward reads, still without any decision).
    viewers_see_personal_data: bool = False


class QualityConfig(_Strict):
    """``synchub quality report`` and its schedule in ``serve`` (issue 20)."""

    #: Where reports are written (relative to the config file's folder).
    out: str = "reports"
    #: A customer no source confirmed for this many days counts as stale.
    stale_days: int = Field(default=90, ge=1)
    #: Buckets of the over-time figures: ``week`` (ISO weeks) or ``month``.
    period: Literal["week", "month"] = "month"
    #: When ``serve`` writes the report (e.g. ``{cron: "0 6 1 * *"}``, the first of each month).
    schedule: Schedule | None = None


class RetentionRule(_Strict):
    """Customers the company may no longer keep (``synchub retention``): those matching
    ``filter`` (the segment syntax of :mod:`synchub.segment`) that no source confirmed and no
    interaction touched for ``inactive_days``. ``erase``: as ``customers erase``, fanned out to
    every connection; ``anonymise``: the hub keeps a record without anything that identifies
    the person (for counts and purchase figures) and the sources are left alone."""

    name: str = Field(min_length=1, max_length=100)
    entity: Literal["person"] = "person"
    filter: dict[str, Any] | None = None
    inactive_days: int = Field(ge=1)
    action: Literal["erase", "anonymise"] = "erase"


class PrivacyConfig(_Strict):
    """Erasure and retention (issue 20)."""

    #: Key of the suppression list's hashes (HMAC-SHA256) of erased e-mails and source ids:
    #: without it nobody can tell from the store whom it suppresses. Required to erase; give it
    #: as ``${SYNCHUB_PRIVACY_SALT}`` and keep it: a new salt forgets every erased person.
    salt: SecretStr | None = None
    retention: list[RetentionRule] = Field(default_factory=list)

    @field_validator("salt")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            if len(v.get_secret_value()) < 16:
                raise ValueError("privacy.salt must be at least 16 characters (a random secret)")
            register_secret(v.get_secret_value())
        return v


_URL_SECRET = re.compile(r"^[A-Za-z0-9_~.-]{24,200}$")
_PUBLIC_URL = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


class WebhookSource(_Strict):
    """One vendor's webhooks (:mod:`synchub.webhooks`): the inbound connection whose pull they
    trigger, and the secret their deliveries are checked with (from ``${ENV}``)."""

    connection: str = Field(min_length=1, max_length=100)
    #: HubSpot: the app's client secret; Shopify: the app's client (API) secret.
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 8:
            raise ValueError("the webhook secret is too short (give the vendor app's secret, from ${ENV})")
        register_secret(v.get_secret_value())
        return v


class MailchimpWebhookSource(WebhookSource):
    """Mailchimp signs nothing: ``secret`` is a long random token of our own, the last part of
    the URL given to Mailchimp (``/webhooks/mailchimp/<secret>``)."""

    @field_validator("secret")
    @classmethod
    def _url_secret(cls, v: SecretStr) -> SecretStr:
        if not _URL_SECRET.match(v.get_secret_value()):
            raise ValueError("the Mailchimp webhook secret must be at least 24 characters of A-Z a-z 0-9 _ ~ . - "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return v


class WebhooksConfig(_Strict):
    """``synchub serve``'s webhook receiver (issue 21): HubSpot, Shopify and Mailchimp deliveries
    are checked, queued in the store, and trigger a pull of their connection."""

    #: Loopback by default: put it behind a reverse proxy with TLS (vendors call HTTPS URLs).
    host: str = "127.0.0.1"
    port: int = Field(default=8471, ge=1, le=65535)
    #: The address the vendors call, in front of ``/webhooks/...`` (``https://hooks.example.com``,
    #: or with the proxy's path prefix). HubSpot signs the full URL it called; without this the
    #: receiver rebuilds it from the ``Host`` and ``X-Forwarded-Proto`` headers.
    public_url: str | None = None
    #: Larger bodies are refused with 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    #: How often queued events are looked for (a delivery also wakes the queue at once).
    poll_seconds: float = Field(default=5.0, ge=0.5, le=3600)
    #: Processed events are kept this long (replays within it are recognised), then deleted.
    keep_days: int = Field(default=7, ge=1, le=365)
    hubspot: WebhookSource | None = None
    shopify: WebhookSource | None = None
    mailchimp: MailchimpWebhookSource | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None:
            if not _PUBLIC_URL.match(v):
                raise ValueError("public_url must be an http(s) URL without query, e.g. https://hooks.example.com")
            v = v.rstrip("/")
        return v

    @model_validator(mode="after")
    def _some_vendor(self) -> WebhooksConfig:
        if not self.sources():
            raise ValueError("webhooks needs at least one of hubspot, shopify, mailchimp")
        return self

    def sources(self) -> dict[str, WebhookSource]:
        """The configured vendors: ``{"hubspot": ..., ...}``."""
        found = {"hubspot": self.hubspot, "shopify": self.shopify, "mailchimp": self.mailchimp}
        return {vendor: src for vendor, src in found.items() if src is not None}


class Config(_Strict):
    version: Literal[1] = 1
    store: str = "sqlite:///synchub.db"
    mappings_dir: list[str] = Field(default_factory=lambda: ["mappings"])
    defaults: Defaults = Field(default_factory=Defaults)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    #: The webhook receiver of ``synchub serve``; off unless given.
    webhooks: WebhooksConfig | None = None
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    match: dict[Literal["person", "company"], EntityMatchConfig] = Field(
        default_factory=lambda: {
            "person": EntityMatchConfig(),
            "company": EntityMatchConfig(keys=["domain", "email"]),
        }
    )
    merge: dict[Literal["person", "company"], EntityMergeConfig] = Field(default_factory=dict)
    #: Where relative paths in this config start (the config file's folder); set by the loader.
    base_dir: Path = Field(default=Path("."), exclude=True)
    source_files: list[str] = Field(default_factory=list, exclude=True)

    def store_url(self) -> str:
        """The store URL with a relative SQLite path resolved against the config folder."""
        url = self.store
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str((self.base_dir / url[len(prefix):]).resolve())
        return url

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def merge_config(self, entity: str) -> EntityMergeConfig:
        return self.merge.get(entity) or EntityMergeConfig()  # type: ignore[call-overload]

    def match_config(self, entity: str) -> EntityMatchConfig:
        return self.match.get(entity) or EntityMatchConfig()  # type: ignore[call-overload]


def find_config(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    for candidate in DEFAULT_CONFIG_PATHS:
        if Path(candidate).exists():
            return Path(candidate)
    raise ConfigError(
        "no config given and none found at " + ", ".join(DEFAULT_CONFIG_PATHS) + " (use --config)"
    )


def _read_docs(path: Path, environ: dict[str, str] | None) -> tuple[list[YamlDoc], list[Problem], bool]:
    """Every config file of ``path``, read and interpolated; the problems found; and whether
    every file could be read (when one could not, what it defines is missing)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            return [], [Problem(str(path), None, "", "no *.yaml files in this folder")], False
    elif path.exists():
        files = [path]
    else:
        return [], [Problem(str(path), None, "", "config file not found")], False
    docs, problems, complete = [], [], True
    for f in files:
        try:
            doc = load_yaml(f)
        except yaml.YAMLError as exc:
            problems.append(yaml_problem(f, exc))
            complete = False
            continue
        problems.extend(doc.problems)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "the top level must be a mapping of keys"))
            complete = False
            continue
        problems.extend(interpolate_env(doc, environ))
        docs.append(doc)
    return docs, problems, complete


def load_config(path: str | Path | None = None, *, environ: dict[str, str] | None = None, check_plugins: bool = True) -> Config:
    """Load, interpolate and validate a config file or folder; raise :class:`ConfigError` listing
    every problem (warnings too, when there is an error). With ``check_plugins``, connectors, their
    settings and the mappings are checked too (see :func:`synchub.validate.validate_config`)."""
    config, problems = check_config(path, environ=environ, check_plugins=check_plugins)
    if config is None or any(p.severity == "error" for p in problems):
        raise ConfigError(problems or "the config could not be read")
    return config


def check_config(
    path: str | Path | None = None, *, environ: dict[str, str] | None = None, check_plugins: bool = True
) -> tuple[Config | None, list[Problem]]:
    """Every problem of a config in one pass: the YAML of every file, the schema, and (with
    ``check_plugins``) connectors, their settings, streams, mappings, filters, match and merge
    rules. Returns the config (None when it cannot be used at all) and the problems, errors and
    warnings (``Problem.severity``); a config with an error must not be used.

    A part of the config that fails the schema is left out of the later checks, rather than
    stopping them: so one run shows every mistake, without follow-on errors of the first ones.
    """
    path = find_config(path)
    docs, problems, complete = _read_docs(path, environ)
    merged: dict[str, Any] = {}
    owner: dict[str, YamlDoc] = {}
    conn_owner: dict[str, YamlDoc] = {}
    for doc in docs:
        for key, value in doc.data.items():
            if key == "connections" and isinstance(value, dict):
                for name in value:
                    if name in conn_owner:
                        problems.append(doc.problem(("connections", name), f"connection {name!r} is also defined in {conn_owner[name].path}"))
                    conn_owner[name] = doc
                merged.setdefault("connections", {}).update(value)
            elif key in merged:
                problems.append(doc.problem((key,), f"{key!r} is also set in {owner[key].path}"))
            else:
                merged[key] = value
                owner[key] = doc
    if not docs:
        return None, _unique(problems)

    def doc_for(loc: tuple[Any, ...]) -> YamlDoc:
        return _doc_for(loc, owner, conn_owner, docs[0])

    config, pruned = _validate_schema(merged, doc_for, problems)
    if config is not None:
        config.base_dir = (path if path.is_dir() else path.parent).resolve()
        config.source_files = [str(d.path) for d in docs]
        connections = merged.get("connections")
        problems.extend(_webhook_problems(config, doc_for, set(connections) if isinstance(connections, dict) else set()))
        problems.extend(_clear_text_problems(config, doc_for))
        if check_plugins:
            from synchub.validate import validate_config

            connections = merged.get("connections")
            problems.extend(validate_config(
                config, doc_for, pruned=pruned, complete=complete,
                connection_names=set(connections) if isinstance(connections, dict) else set(config.connections),
            ))
    return config, _unique(problems)


def _webhook_problems(config: Config, doc_for: Callable[[tuple[Any, ...]], YamlDoc], named: set[str]) -> list[Problem]:
    """Each webhook vendor names an inbound connection of that vendor's connector. ``named``:
    every connection in the files (one that failed the schema was reported already)."""
    problems: list[Problem] = []
    if config.webhooks is None:
        return problems
    for vendor, src in config.webhooks.sources().items():
        loc = ("webhooks", vendor, "connection")
        conn = config.connections.get(src.connection)
        if conn is None:
            if src.connection not in named:
                known = ", ".join(sorted(named)) or "none"
                problems.append(doc_for(loc).problem(loc, f"no connection named {src.connection!r} (configured: {known})"))
        elif conn.connector != vendor:
            problems.append(doc_for(loc).problem(
                loc, f"connection {src.connection!r} uses connector {conn.connector!r}, not {vendor!r}"))
        elif not conn.inbound:
            problems.append(doc_for(loc).problem(loc, f"connection {src.connection!r} is outbound only (direction: out)"))
    return problems


def _clear_text_problems(config: Config, doc_for: Callable[[tuple[Any, ...]], YamlDoc]) -> list[Problem]:
    """Warnings for the hub's own secrets (the privacy salt, webhook secrets) written in the
    config file rather than taken from ``${ENV_VAR}`` (the value never appears in the message)."""
    locs = [("privacy", "salt")] if config.privacy.salt is not None else []
    if config.webhooks is not None:
        locs += [("webhooks", vendor, "secret") for vendor in config.webhooks.sources()]
    out = []
    for loc in locs:
        doc = doc_for(loc)
        if loc not in doc.from_env:
            name = "_".join(str(p) for p in loc).upper()
            out.append(doc.problem(loc, f"{'.'.join(str(p) for p in loc)} is written in clear text in the config: "
                                        f"take it from the environment (e.g. ${{SYNCHUB_{name}}})", "warning"))
    return out


def _unique(problems: list[Problem]) -> list[Problem]:
    """``problems`` without repeats (a broken mapping used by two streams is reported once)."""
    return list(dict.fromkeys(problems))


def _validate_schema(
    merged: dict[str, Any], doc_for: Callable[[tuple[Any, ...]], YamlDoc], problems: list[Problem]
) -> tuple[Config | None, set[tuple[Any, ...]]]:
    """Validate ``merged``; report every schema error, then leave out each value in error (a key,
    a connection, a stream) and validate again, so the rest can still be checked further.

    Returns the config of what is left and the paths left out. An error that only shows once
    something was left out is reported too, unless it is about what was left out (a schedule
    whose interval was removed now lacks one: that is no news).
    """
    data = copy.deepcopy(merged)
    pruned: set[tuple[Any, ...]] = set()
    for _ in range(1000):  # each round removes at least one value
        try:
            return Config.model_validate(data), pruned
        except ValidationError as exc:
            errors = exc.errors()
        removed = False
        for err in errors:
            loc = tuple(err["loc"])
            if not any(_related(loc, p) for p in pruned):
                problems.extend(pydantic_problems(doc_for(loc), _One(err)))
            at = _remove(data, loc)
            if at is not None:
                pruned.add(at)
                removed = True
        if not removed:
            break
    return None, pruned


def _related(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _remove(data: dict[str, Any], loc: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Remove the value an error at ``loc`` is about: the deepest key of ``loc`` that exists
    (through mappings only, so a bad list item removes the whole list). Returns its path."""
    parent: Any = None
    cur: Any = data
    path: tuple[Any, ...] = ()
    for step in loc:
        if not isinstance(cur, dict) or step not in cur:
            break
        parent, cur, path = cur, cur[step], (*path, step)
    if parent is None:
        return None
    del parent[path[-1]]
    return path


def _doc_for(loc: tuple[Any, ...], owner: dict[str, YamlDoc], conn_owner: dict[str, YamlDoc], first: YamlDoc) -> YamlDoc:
    if len(loc) >= 2 and loc[0] == "connections" and loc[1] in conn_owner:
        return conn_owner[loc[1]]
    return owner.get(loc[0], first) if loc else first


class _One:
    """Adapter so a single pydantic error dict can go through :func:`pydantic_problems`."""

    def __init__(self, err: dict[str, Any]):
        self._err = err

    def errors(self) -> list[dict[str, Any]]:
        return [self._err]


def register_settings_secrets(model: BaseModel) -> None:
    """Register every ``SecretStr`` value in a settings model as a secret to mask."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, BaseModel):
            register_settings_secrets(value)
