"""Declarative field maps between a connector's records and the canonical schema.

A mapping is a YAML file in a mappings folder, named by its file stem::

    entity: person          # person | company
    direction: in           # in: source record -> canonical; out: canonical -> destination
    fields:
      # <destination path>: <source path>                       short form
      first_name: Vorname
      # <destination path>: {path, transform, args}              long form
      phones: {path: Telefon, transform: phone_e164}
      # several transforms run in order
      birth_date: {path: Geburtsdatum, transforms: [trim, {name: parse_date, args: {format: "%d.%m.%Y"}}]}
      # a constant
      lead_source.origin: {value: shop}
      # several sources for one list field
      emails: [E-Mail, {path: E-Mail 2, transform: email}]

A mapping of ``entity: interaction`` makes timeline entries only (a shop's orders): no party of
its own, each record's entries go on the timeline of the record it belongs to, named by
``owner``, a stream of the same connection and the field holding that record's id::

    entity: interaction
    owner: {stream: customers, path: customer_id}
    interactions:
      - kind: order
        fields: {occurred_at: processedAt, amount: total, currency: currency}

The key is always the *destination* and the value the *source*: canonical paths on the left for
``in`` mappings, the connector's field names on the left for ``out`` mappings. Paths are dotted
(``address.city``, ``emails.0``); a source key that itself contains dots is found as is first.
Transforms are named functions registered through the ``register_transforms`` hook: there is no
eval anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from synchub import quarantine
from synchub.errors import ConfigError, MappingError, Problem
from synchub.schema import ENTITY_MODELS, Interaction, InteractionKind, canonical_paths, fast_dump
from synchub.yamlfile import YamlDoc, load_yaml, yaml_problem

#: Map and validate through the compiled plan and :func:`synchub.schema.fast_dump` (False: the
#: reference path, field by field and through pydantic models; both give identical results, see
#: ``tests/test_prepare_equivalence.py`` and ``bench/prepare_corpus.py``).
FAST_PATH = True

_LIST_FIELDS = {"emails", "phones", "tags"}
_TOP_KEYS = ("entity", "direction", "fields", "observed_at", "interactions", "owner", "description")
#: The entity of mappings that make timeline entries only.
TIMELINE = "interaction"


@dataclass
class FieldMap:
    dest: str
    source: str | None  # None for constants
    getter: Callable[[dict[str, Any]], Any]
    steps: list[tuple[str, Callable[..., Any], dict[str, Any]]]
    is_list: bool = False


@dataclass
class InteractionMap:
    """Maps one record to one timeline entry (a note, an order, a form submission)."""

    kind: str
    fields: list[FieldMap]
    paths: dict[str, tuple[str, ...]]
    _plan: list[_Step] | None = field(default=None, init=False, repr=False, compare=False)


@dataclass
class Mapping:
    """A compiled mapping. :meth:`apply` turns one record into the destination's shape."""

    name: str
    entity: Literal["person", "company", "interaction"]
    direction: Literal["in", "out"]
    fields: list[FieldMap]
    path: Path | None = None
    _paths: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    #: Optional source field that says when the source last changed the record.
    observed_at: FieldMap | None = None
    interactions: list[InteractionMap] = field(default_factory=list)
    #: ``entity: interaction`` only: the stream of the record an entry belongs to, and where
    #: the record holds that record's id.
    owner_stream: str | None = None
    owner_path: str | None = None
    #: Hash of the mapping's document and the defaults it was compiled with (see
    #: :mod:`synchub.prepare`: a changed mapping prepares every row again).
    fingerprint: str = ""
    #: The fields compiled for :func:`_apply_fast` (built on first use).
    _plan: list[_Step] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def timeline_only(self) -> bool:
        return self.entity == TIMELINE

    def owner_of(self, record: dict[str, Any]) -> str | None:
        """The source id of the record this one's entries belong to (None: nobody's, e.g. a
        guest order)."""
        if self.owner_path is None:
            return None
        value = _getter(self.owner_path)(record)
        return None if value in (None, "") else str(value).strip()

    def source_of(self, dest: str) -> str | None:
        """The source field a destination field is mapped from (the first, for list fields);
        ``interaction.<field>`` looks in the timeline entries' fields."""
        if dest.startswith("interaction."):
            dest = dest.removeprefix("interaction.")
            fields = [fm for imap in self.interactions for fm in imap.fields]
        else:
            fields = self.fields
        for fm in fields:
            if fm.dest == dest and fm.source:
                return fm.source
        return None

    @property
    def field_names(self) -> list[str]:
        """Destination fields in the order the mapping lists them."""
        return list(dict.fromkeys(fm.dest for fm in self.fields))

    def observed(self, record: dict[str, Any], problems: list[quarantine.Entry] | None = None) -> datetime | None:
        """The record's own change time, when the mapping names one (``observed_at:``). With
        ``problems``, a value that cannot be read is recorded there and None returned."""
        fm = self.observed_at
        if fm is None:
            return None
        value = raw = fm.getter(record)
        if value in (None, ""):
            return None
        step = "datetime"
        try:
            for name, fn, args in fm.steps:
                step = name
                value = fn(value, **args)
            step = "datetime"
            if isinstance(value, str):
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (ValueError, TypeError) as exc:
            if problems is None:
                raise MappingError(f"observed_at (from {fm.source!r}): {exc}", field="observed_at") from None
            problems.append(quarantine.entry("observed_at", raw, str(exc), rule=step, source=fm.source))
            return None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return None

    def apply(self, record: dict[str, Any], problems: list[quarantine.Entry] | None = None) -> dict[str, Any]:
        """Map one record. Raises :class:`MappingError` naming the field and the source value;
        with ``problems``, a value that cannot be mapped is recorded there and left out."""
        if FAST_PATH:
            plan = self._plan
            if plan is None:
                plan = self._plan = _compile_plan(self.fields, self._paths)
            return _apply_fast(plan, record, problems)
        return _apply(self.fields, self._paths, record, problems)

    def interactions_of(self, record: dict[str, Any], default_time: datetime,
                        problems: list[quarantine.Entry] | None = None) -> list[dict[str, Any]]:
        """The timeline entries this record carries (entries whose fields are all empty are
        skipped; one without a time of its own gets ``default_time``). With ``problems``, values
        that cannot be used are recorded there and left out of their entry."""
        out = []
        fast = FAST_PATH
        for imap in self.interactions:
            if fast:
                plan = imap._plan
                if plan is None:
                    plan = imap._plan = _compile_plan(imap.fields, imap.paths)
                data = _apply_fast(plan, record, problems, "interaction.")
            else:
                data = _apply(imap.fields, imap.paths, record, problems, prefix="interaction.")
            if not data:
                continue
            data["kind"] = imap.kind
            data.setdefault("occurred_at", default_time)
            dumped = fast_dump(Interaction, data) if fast else None
            if dumped is None:
                obj = quarantine.validate(Interaction, data, problems, prefix="interaction.")
                dumped = obj.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
            out.append(dumped | {"kind": imap.kind})
        return out

    def to_canonical(self, record: dict[str, Any], problems: list[quarantine.Entry] | None = None) -> dict[str, Any]:
        """Map an inbound record and validate it against the canonical model.

        Returns the JSON form of the model, without empty values. Without ``problems`` the first
        value that cannot be used raises :class:`RecordError`; with it, each such value is
        recorded there (field, source field, rule, raw value, reason) and left out, so one bad
        value costs that value and not the record."""
        data = self.apply(record, problems)
        consent = data.get("consent")
        if consent:
            # A channel with a constant method/source but no status in this record says nothing.
            for channel in [c for c, v in consent.items() if isinstance(v, dict) and "status" not in v]:
                del consent[channel]
            if not consent:
                del data["consent"]
        model = ENTITY_MODELS[self.entity]
        # Valid data (nearly every record) is dumped without building the model; anything the
        # fast path is unsure of is validated as always, quarantining value by value.
        dumped = fast_dump(model, data) if FAST_PATH else None
        if dumped is None:
            obj = quarantine.validate(model, data, problems)
            dumped = obj.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        dumped["kind"] = self.entity
        return dumped


def _apply(fields: list[FieldMap], paths: dict[str, tuple[str, ...]], record: dict[str, Any],
           problems: list[quarantine.Entry] | None = None, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fm in fields:
        value = raw = fm.getter(record)
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                value = None
        step = ""
        try:
            for name, fn, args in fm.steps:
                if value is None and not getattr(fn, "accepts_none", False):
                    break
                step = name
                value = fn(value, **args)
        except (ValueError, TypeError, ArithmeticError) as exc:
            if problems is None:
                src = f" (from {fm.source!r})" if fm.source else ""
                raise MappingError(f"{prefix}{fm.dest}{src}: {exc}", field=prefix + fm.dest) from None
            problems.append(quarantine.entry(prefix + fm.dest, raw, str(exc), rule=step, source=fm.source))
            continue
        if value is None or value == "" or value == []:
            continue
        _set(out, paths[fm.dest], value, fm.is_list)
    return out


#: One compiled field: (source key | None, (constant,) | None, getter, transform calls as
#: (name, call(value), accepts_none), destination parts, top-level key | None, is_list, FieldMap).
_Step = tuple[Any, ...]
#: Results of these types are remembered per input string for transforms marked ``pure``.
_MEMO_TYPES = frozenset({str, int, float, bool, type(None)})
_MEMO_MAX = 65536
_MISS = object()


def _memoized(fn: Callable[..., Any], args: dict[str, Any]) -> Callable[[Any], Any]:
    """``fn(value, **args)``, remembered per input string (the same names, countries, dates and
    yes/no words come back in every file); errors are never remembered, so they are raised
    again, word for word."""
    cache: dict[str, Any] = {}

    def call(value: Any) -> Any:
        if type(value) is not str:
            return fn(value, **args)
        hit = cache.get(value, _MISS)
        if hit is not _MISS:
            return hit
        result = fn(value, **args)
        if type(result) in _MEMO_TYPES:
            if len(cache) >= _MEMO_MAX:
                cache.clear()
            cache[value] = result
        return result

    return call


def _compile_plan(fields: list[FieldMap], paths: dict[str, tuple[str, ...]]) -> list[_Step]:
    """What :func:`_apply_fast` needs per field, worked out once per mapping: the source key of a
    plain path, the value of a constant, each transform as a one-argument call (remembered when
    the transform is pure), where the value goes."""
    plan: list[_Step] = []
    for fm in fields:
        key = getattr(fm.getter, "key", None)
        constant = getattr(fm.getter, "constant", None)
        calls = []
        for name, fn, args in fm.steps:
            if getattr(fn, "pure", False):
                call = _memoized(fn, args)
            elif args:
                call = functools.partial(fn, **args)
            else:
                call = fn
            calls.append((name, call, bool(getattr(fn, "accepts_none", False))))
        parts = paths[fm.dest]
        top = parts[0] if len(parts) == 1 and not fm.is_list else None
        plan.append((key, constant, fm.getter, tuple(calls), parts, top, fm.is_list, fm))
    return plan


def _apply_fast(plan: list[_Step], record: dict[str, Any], problems: list[quarantine.Entry] | None = None,
                prefix: str = "") -> dict[str, Any]:
    """:func:`_apply` on a compiled plan: the same values, problems and errors, in the same order."""
    out: dict[str, Any] = {}
    for key, constant, getter, calls, parts, top, is_list, fm in plan:
        if key is not None:
            value = raw = record.get(key)
        elif constant is not None:
            value = raw = constant[0]
        else:
            value = raw = getter(record)
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                value = None
        if calls:
            step = ""
            try:
                for name, call, accepts_none in calls:
                    if value is None and not accepts_none:
                        break
                    step = name
                    value = call(value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                if problems is None:
                    src = f" (from {fm.source!r})" if fm.source else ""
                    raise MappingError(f"{prefix}{fm.dest}{src}: {exc}", field=prefix + fm.dest) from None
                problems.append(quarantine.entry(prefix + fm.dest, raw, str(exc), rule=step, source=fm.source))
                continue
        if value is None or value == "" or value == []:
            continue
        if top is not None:
            out[top] = value
        else:
            _set(out, parts, value, is_list)
    return out


def _set(out: dict[str, Any], parts: tuple[str, ...], value: Any, is_list: bool) -> None:
    target = out
    for p in parts[:-1]:
        target = target.setdefault(p, {})
    last = parts[-1]
    if is_list:
        items = target.setdefault(last, [])
        if isinstance(value, (list, tuple)):
            items.extend(v for v in value if v not in (None, ""))
        else:
            items.append(value)
    else:
        target[last] = value


def _getter(path: str) -> Callable[[dict[str, Any]], Any]:
    if "." not in path:
        simple = lambda rec: rec.get(path)  # noqa: E731
        simple.key = path  # type: ignore[attr-defined]  # _compile_plan reads the key directly
        return simple
    parts = path.split(".")

    def get(rec: dict[str, Any]) -> Any:
        if path in rec:
            return rec[path]
        cur: Any = rec
        for p in parts:
            if isinstance(cur, dict):
                cur = cur.get(p)
            elif isinstance(cur, list) and p.isdigit():
                i = int(p)
                cur = cur[i] if i < len(cur) else None
            else:
                return None
            if cur is None:
                return None
        return cur

    return get


def compile_mapping(
    doc: YamlDoc,
    transforms: dict[str, Callable[..., Any]],
    *,
    defaults: dict[str, Any] | None = None,
) -> tuple[Mapping | None, list[Problem]]:
    """Compile a parsed mapping file; returns the mapping (None if unusable) and its problems
    (those found while reading the file, such as duplicate keys, come first)."""
    problems: list[Problem] = list(doc.problems)
    data = doc.data
    name = doc.path.stem
    if not isinstance(data, dict):
        return None, [*problems, doc.problem((), "a mapping must be a YAML mapping with entity, direction, fields")]
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(doc.problem((key,), f"unknown key (allowed: {', '.join(_TOP_KEYS)})"))
    entity = data.get("entity", "person")
    direction = data.get("direction", "in")
    if entity not in ENTITY_MODELS and entity != TIMELINE:
        problems.append(doc.problem(("entity",), f"entity must be one of {', '.join([*sorted(ENTITY_MODELS), TIMELINE])}"))
        entity = "person"
    if direction not in ("in", "out"):
        problems.append(doc.problem(("direction",), "direction must be 'in' or 'out'"))
        direction = "in"
    defaults = defaults or {}
    owner_stream = owner_path = None
    if entity == TIMELINE:
        if direction != "in":
            problems.append(doc.problem(("direction",), "an interaction mapping reads timeline entries: direction must be 'in'"))
        if data.get("fields"):
            problems.append(doc.problem(("fields",), "an interaction mapping has no party fields; map the entries under 'interactions'"))
        if not data.get("interactions"):
            problems.append(doc.problem(("interactions",), "an interaction mapping needs at least one entry under 'interactions'"))
        owner = data.get("owner")
        if not isinstance(owner, dict) or not isinstance(owner.get("stream"), str) or not isinstance(owner.get("path"), str):
            problems.append(doc.problem(("owner",), "owner must be {stream: <stream of the owning records>, path: <field with the owner's id>}"))
        else:
            for key in owner:
                if key not in ("stream", "path"):
                    problems.append(doc.problem(("owner", key), "unknown key (allowed: stream, path)"))
            owner_stream, owner_path = owner["stream"], owner["path"]
        compiled: list[FieldMap] = []
        paths: dict[str, tuple[str, ...]] = {}
        valid_paths = canonical_paths(Interaction)
    else:
        if "owner" in data:
            problems.append(doc.problem(("owner",), "only 'entity: interaction' mappings have an owner"))
        fields = data.get("fields")
        if not isinstance(fields, dict) or not fields:
            problems.append(doc.problem(("fields",), "fields must be a non-empty mapping of destination: source"))
            return None, problems
        valid_paths = canonical_paths(ENTITY_MODELS[entity])
        compiled, paths = _compile_fields(doc, ("fields",), fields, entity, valid_paths, direction, transforms, defaults, problems)
    interactions: list[InteractionMap] = []
    raw_interactions = data.get("interactions") or []
    if raw_interactions and direction != "in":
        problems.append(doc.problem(("interactions",), "only 'in' mappings produce interactions"))
    elif not isinstance(raw_interactions, list):
        problems.append(doc.problem(("interactions",), "interactions must be a list"))
    else:
        ivalid = canonical_paths(Interaction)
        for i, spec in enumerate(raw_interactions):
            iloc: tuple[Any, ...] = ("interactions", i)
            if not isinstance(spec, dict) or not isinstance(spec.get("fields"), dict):
                problems.append(doc.problem(iloc, "an interaction is {kind, fields: {occurred_at: ..., summary: ...}}"))
                continue
            for key in spec:
                if key not in ("kind", "fields"):
                    problems.append(doc.problem((*iloc, key), "unknown key (allowed: kind, fields)"))
            kind = spec.get("kind")
            kinds = get_args(InteractionKind)
            if kind not in kinds:
                problems.append(doc.problem((*iloc, "kind"), f"kind must be one of {', '.join(kinds)}"))
                continue
            ifields, ipaths = _compile_fields(doc, (*iloc, "fields"), spec["fields"], "interaction", ivalid, "in", transforms, defaults, problems)
            interactions.append(InteractionMap(kind, ifields, ipaths))
    observed = None
    if "observed_at" in data:
        observed = _compile_one(doc, ("observed_at",), "observed_at", data["observed_at"], transforms, defaults, problems, valid_paths, "in")
    mapping = Mapping(name=name, entity=entity, direction=direction, fields=compiled, path=doc.path, _paths=paths,
                      observed_at=observed, interactions=interactions, owner_stream=owner_stream, owner_path=owner_path,
                      fingerprint=hashlib.sha1(json.dumps([data, defaults], sort_keys=True, default=str).encode(),
                                               usedforsecurity=False).hexdigest())
    return mapping, problems


def _compile_fields(
    doc: YamlDoc, prefix: tuple[Any, ...], fields: dict[str, Any], entity: str, valid_paths: dict[str, Any],
    direction: str, transforms: dict[str, Callable[..., Any]], defaults: dict[str, Any], problems: list[Problem],
) -> tuple[list[FieldMap], dict[str, tuple[str, ...]]]:
    compiled: list[FieldMap] = []
    paths: dict[str, tuple[str, ...]] = {}
    for dest, spec in fields.items():
        loc = (*prefix, dest)
        dest = str(dest)
        if direction == "in" and not _valid_canonical(dest, valid_paths):
            problems.append(doc.problem(loc, f"{dest!r} is not a field of the canonical {entity}"))
            continue
        is_list = direction == "in" and dest in _LIST_FIELDS
        if isinstance(spec, list) and not is_list:
            problems.append(doc.problem(loc, "only list fields (emails, phones, tags) take several sources"))
            continue
        specs = spec if isinstance(spec, list) else [spec]
        for i, one in enumerate(specs):
            sloc = (*loc, i) if isinstance(spec, list) else loc
            fm = _compile_one(doc, sloc, dest, one, transforms, defaults, problems, valid_paths, direction)
            if fm is not None:
                fm.is_list = is_list
                compiled.append(fm)
        paths[dest] = tuple(dest.split("."))
    return compiled, paths


def _valid_canonical(path: str, valid: dict[str, Any]) -> bool:
    if path in valid:
        return True
    for free in ("custom.", "data."):  # free attributes of parties / interactions
        if path.startswith(free) and len(path) > len(free) and free[:-1] in valid:
            return True
    head, _, idx = path.rpartition(".")
    return idx.isdigit() and head in valid


def _compile_one(
    doc: YamlDoc, loc: tuple[Any, ...], dest: str, spec: Any, transforms: dict[str, Callable[..., Any]],
    defaults: dict[str, Any], problems: list[Problem], valid_paths: dict[str, Any], direction: str,
) -> FieldMap | None:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict):
        problems.append(doc.problem(loc, "expected a source path or {path, transform, args}"))
        return None
    allowed = {"path", "value", "transform", "transforms", "args"}
    for key in spec:
        if key not in allowed:
            problems.append(doc.problem((*loc, key), f"unknown key (allowed: {', '.join(sorted(allowed))})"))
    if ("path" in spec) == ("value" in spec):
        problems.append(doc.problem(loc, "give exactly one of path or value"))
        return None
    source = spec.get("path")
    if source is not None:
        source = str(source)
        if direction == "out" and source != "id" and not _valid_canonical(source, valid_paths):
            problems.append(doc.problem((*loc, "path"), f"{source!r} is not a field of the canonical record"))
        getter = _getter(source)
    else:
        constant = spec["value"]
        getter = lambda rec: constant  # noqa: E731
        getter.constant = (constant,)  # type: ignore[attr-defined]  # read by _compile_plan
    raw_steps: list[Any] = []
    if "transform" in spec:
        raw_steps.append({"name": spec["transform"], "args": spec.get("args") or {}})
    elif "args" in spec:
        problems.append(doc.problem((*loc, "args"), "args without a transform"))
    if "transforms" in spec:
        if not isinstance(spec["transforms"], list):
            problems.append(doc.problem((*loc, "transforms"), "transforms must be a list"))
        else:
            raw_steps.extend(spec["transforms"])
    steps = []
    for j, step in enumerate(raw_steps):
        tloc = (*loc, "transforms", j) if "transforms" in spec else (*loc, "transform")
        if isinstance(step, str):
            step = {"name": step, "args": {}}
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            problems.append(doc.problem(tloc, "a transform is a name or {name, args}"))
            continue
        tname, args = step["name"], dict(step.get("args") or {})
        fn = transforms.get(tname)
        if fn is None:
            problems.append(doc.problem(tloc, f"unknown transform {tname!r} (known: {', '.join(sorted(transforms))})"))
            continue
        bad = _check_args(fn, args)
        if bad:
            problems.append(doc.problem(tloc, f"transform {tname!r}: {bad}"))
            continue
        if "region" not in args and _accepts(fn, "region") and "phone_region" in defaults:
            args["region"] = defaults["phone_region"]
        steps.append((tname, fn, args))
    return FieldMap(dest=dest, source=source, getter=getter, steps=steps)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _check_args(fn: Callable[..., Any], args: dict[str, Any]) -> str | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params}
    unknown = sorted(set(args) - names)
    if unknown:
        return f"unknown argument(s) {', '.join(unknown)} (accepts: {', '.join(sorted(names)) or 'none'})"
    missing = [p.name for p in params if p.default is p.empty and p.kind is p.KEYWORD_ONLY and p.name not in args]
    if missing:
        return f"missing argument(s) {', '.join(missing)}"
    return None


class MappingLibrary:
    """Finds mappings by name in the configured folders and plugin-registered paths, compiles once."""

    def __init__(self, folders: list[Path], transforms: dict[str, Callable[..., Any]], defaults: dict[str, Any]):
        self.folders = folders
        self.transforms = transforms
        self.defaults = defaults
        self._cache: dict[str, Mapping] = {}

    def find(self, name: str) -> Path | None:
        for folder in self.folders:
            if folder.is_file() and folder.stem == name:
                return folder
            for ext in (".yaml", ".yml"):
                candidate = folder / f"{name}{ext}"
                if candidate.is_file():
                    return candidate
        return None

    def load(self, name: str) -> tuple[Mapping | None, list[Problem]]:
        if name in self._cache:
            return self._cache[name], []
        path = self.find(name)
        if path is None:
            where = ", ".join(str(f) for f in self.folders) or "(no mappings folder)"
            return None, [Problem("", None, "", f"mapping {name!r} not found in {where}")]
        try:
            doc = load_yaml(path)
        except yaml.YAMLError as exc:
            return None, [yaml_problem(path, exc)]
        mapping, problems = compile_mapping(doc, self.transforms, defaults=self.defaults)
        if mapping is not None and not problems:
            self._cache[name] = mapping
        return mapping, problems

    def get(self, name: str) -> Mapping:
        mapping, problems = self.load(name)
        if problems or mapping is None:
            raise ConfigError(problems)
        return mapping
