"""Checks of a config that need the plugins: connectors exist, their settings validate, every
stream's mapping exists and compiles, filters, match and merge rules name real things.

Every check runs whatever the others found, so one ``synchub validate`` lists every mistake.
Parts of the config that failed the schema (``pruned``, see :func:`synchub.config.check_config`)
are not there any more; the checks that would only repeat that failure skip them.

Besides errors, two kinds of warnings (``Problem.severity == "warning"``): a merge rule for a
field that is no field of the canonical record (it would do nothing), and a connector setting
typed as a secret (``SecretStr``) written in clear text instead of coming from ``${ENV_VAR}``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError

from synchub.errors import Problem
from synchub.mapping import MappingLibrary
from synchub.plugins import (
    failed_plugins,
    get_connectors,
    get_mapping_paths,
    get_merge_rules,
    get_transforms,
)
from synchub.redact import register_secret
from synchub.schema import ENTITY_MODELS, Channel
from synchub.segment import FilterError, compile_filter
from synchub.yamlfile import YamlDoc, pydantic_problems

if TYPE_CHECKING:
    from synchub.config import Config

Loc = tuple[Any, ...]


def validate_config(
    config: Config,
    doc_for: Callable[[Loc], YamlDoc],
    *,
    pruned: set[Loc] | None = None,
    complete: bool = True,
    connection_names: set[str] | None = None,
) -> list[Problem]:
    """Problems (errors and warnings) of ``config`` that need the plugins to find.

    ``pruned``: paths left out of the config because they failed the schema (already reported);
    ``complete``: False when a config file could not be read, so names may be missing;
    ``connection_names``: every connection named in the files, valid or not."""
    problems: list[Problem] = []
    gone = pruned or set()
    names = connection_names if connection_names is not None else set(config.connections)

    def left_out(*loc: Any) -> bool:
        """Whether ``loc`` or a part of it failed the schema (and was reported already)."""
        return any(loc[: len(p)] == p for p in gone)

    def at(loc: Loc, message: str, severity: str = "error") -> None:
        problems.append(doc_for(loc).problem(loc, message, severity))

    connectors = get_connectors()
    library: MappingLibrary | None = None
    if not left_out("mappings_dir"):
        folders = [config.resolve(p) for p in config.mappings_dir]
        for i, folder in enumerate(folders):
            if not folder.is_dir():
                at(("mappings_dir", i), f"folder {folder} does not exist")
        library = MappingLibrary(folders + get_mapping_paths(), get_transforms(), {"phone_region": config.defaults.phone_region})
    for name, conn in config.connections.items():
        loc = ("connections", name)
        cls = connectors.get(conn.connector)
        if cls is None:
            hint = f"; plugin {conn.connector!r} failed to load: {failed_plugins[conn.connector]}" if conn.connector in failed_plugins else ""
            at((*loc, "connector"), f"no connector named {conn.connector!r} is installed (installed: {', '.join(sorted(connectors)) or 'none'}){hint}")
        elif not left_out(*loc, "settings"):
            try:
                cls.Settings.model_validate(conn.settings)
            except ValidationError as exc:
                problems.extend(pydantic_problems(doc_for(loc), exc, (*loc, "settings")))
            problems.extend(_clear_text_secrets(cls.Settings, conn.settings, (*loc, "settings"), doc_for))
        # Checks that depend on the direction or entity are left out when those were invalid.
        direction_ok = not left_out(*loc, "direction") and not left_out(*loc, "entity")
        if not conn.streams and not left_out(*loc, "streams"):
            at((*loc, "streams"), "a connection needs at least one stream")
        for sname, scfg in conn.streams.items():
            sloc = (*loc, "streams", sname)
            if cls is not None and not left_out(*sloc, "settings"):
                try:
                    cls.StreamSettings.model_validate(scfg.settings)
                except ValidationError as exc:
                    problems.extend(pydantic_problems(doc_for(loc), exc, (*sloc, "settings")))
                problems.extend(_clear_text_secrets(cls.StreamSettings, scfg.settings, (*sloc, "settings"), doc_for))
            if scfg.filter is not None and not conn.outbound and direction_ok:
                at((*sloc, "filter"), "a filter selects what a stream receives: only for direction out or both")
            filter_entity: str | None = conn.entity if conn.outbound and direction_ok else None
            if not scfg.mapping:
                if not left_out(*sloc, "mapping"):
                    at(sloc, "mapping is missing (name of a file in the mappings folder)")
            elif library is not None:
                # Which mapping serves which direction: ``mapping`` reads (or writes, on an out
                # connection); ``write_mapping`` writes on a ``both`` connection.
                uses = [("mapping", scfg.mapping, "out" if conn.direction == "out" else "in")]
                if scfg.write_mapping:
                    if conn.direction != "both" and direction_ok:
                        at((*sloc, "write_mapping"), "write_mapping is only for connections with direction: both")
                    uses.append(("write_mapping", scfg.write_mapping, "out"))
                for key, mname, want in uses:
                    mapping, mproblems = library.load(mname)
                    for p in mproblems:
                        if p.file:
                            problems.append(p)
                        else:
                            at((*sloc, key), p.message)
                    if mapping is None:
                        continue
                    if want == "out" and mapping.entity in ENTITY_MODELS:
                        filter_entity = mapping.entity
                    if not direction_ok:
                        continue
                    if conn.direction == "both" and key == "mapping" and mapping.direction == "out":
                        continue  # a write-only stream of a both connection
                    if mapping.direction != want:
                        at((*sloc, key), f"mapping {mname!r} is an {mapping.direction!r} mapping, but it is used to {'read' if want == 'in' else 'write'} (connection direction {conn.direction!r})")
                    if mapping.timeline_only and mapping.owner_stream not in conn.streams and not left_out(*loc, "streams", mapping.owner_stream):
                        at((*sloc, key), f"mapping {mname!r}: owner stream {mapping.owner_stream!r} is not a stream of connection {name!r} (it has: {', '.join(conn.streams)})")
                    if conn.direction == "out" and mapping.entity != conn.entity:
                        at((*sloc, key), f"mapping {mname!r} maps {mapping.entity} records, the connection sends {conn.entity}")
            if scfg.filter is not None and filter_entity is not None:
                try:
                    compile_filter(scfg.filter, filter_entity)
                except FilterError as exc:
                    at((*sloc, "filter", *exc.path.split(".")[:1]), str(exc))
    names_seen: set[str] = set()
    for i, rule in enumerate(config.privacy.retention):
        rloc = ("privacy", "retention", i)
        if rule.name in names_seen:
            at((*rloc, "name"), f"a second retention rule named {rule.name!r}")
        names_seen.add(rule.name)
        try:
            compile_filter(rule.filter, rule.entity)
        except FilterError as exc:
            at((*rloc, "filter", *exc.path.split(".")[:1]), str(exc))
    if config.privacy.retention and config.privacy.salt is None and not left_out("privacy", "salt"):
        at(("privacy", "retention"), "retention rules erase or anonymise customers, which needs privacy.salt")
    for entity, mcfg in config.match.items():
        try:
            mcfg.score_config(entity)
        except ValidationError as exc:
            problems.extend(pydantic_problems(doc_for(("match", entity, "score")), exc, ("match", entity, "score")))
    rules = get_merge_rules()
    for entity, mcfg in config.merge.items():
        mloc = ("merge", entity)
        for i, src in enumerate(mcfg.source_priority):
            if src not in names:
                unread = "" if complete else " (or it is in a config file that could not be read)"
                at((*mloc, "source_priority", i), f"{src!r} is not a configured connection{unread}")
        units = merge_units(entity)
        for fname, frule in [("default", mcfg.default), *mcfg.fields.items()]:
            floc = (*mloc, "fields", fname) if fname != "default" else (*mloc, "default")
            for key, rname in (("rule", frule.rule), ("fallback", frule.fallback)):
                if rname and rname not in rules:
                    at((*floc, key), f"unknown merge rule {rname!r} (known: {', '.join(sorted(rules))})")
            if fname.startswith("consent.") and frule.rule != "consent":
                at((*floc, "rule"), "consent always follows the protected consent rule (only review: true may be set)")
            if fname != "default" and not _is_unit(fname, units):
                close = difflib.get_close_matches(fname, sorted(units), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(sorted(units))}, custom.<name>)"
                at(floc, f"{fname!r} is not a field of the canonical {entity}, so this rule does nothing{hint}", "warning")
    return problems


def merge_units(entity: str) -> set[str]:
    """The field units merge rules decide on for ``entity`` (see :func:`synchub.schema.field_units`):
    top-level fields, ``consent.<channel>``; ``custom.<name>`` is open-ended and not listed."""
    model = ENTITY_MODELS[entity]
    units = {name for name in model.model_fields if name not in ("kind", "consent", "custom")}
    units.update(f"consent.{channel}" for channel in get_args(Channel))
    return units


def _is_unit(name: str, units: set[str]) -> bool:
    return name in units or (name.startswith("custom.") and len(name) > len("custom."))


# ----- secrets written in clear text ----------------------------------------------------------------


def _clear_text_secrets(
    model: type[BaseModel], settings: Any, loc: Loc, doc_for: Callable[[Loc], YamlDoc]
) -> list[Problem]:
    """Warnings for ``SecretStr`` settings whose value is written in the config file itself
    rather than coming from ``${ENV_VAR}``. The value is registered as a secret (masked from now
    on) and never part of the message."""
    out = []
    for path in _secret_paths(model):
        value: Any = settings
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or value == "":
            continue
        vloc = (*loc, *path)
        doc = doc_for(vloc)
        if vloc in doc.from_env:
            continue
        register_secret(str(value))
        env_name = "_".join(str(p) for p in (loc[1], *path)).upper().replace("-", "_")
        out.append(doc.problem(
            vloc,
            f"secret setting {path[-1]!r} is written in clear text in the config: take it from the environment "
            f"(e.g. ${{{env_name}}}, set where synchub runs) or use a key file",
            "warning",
        ))
    return out


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = (), depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Paths of the fields typed ``SecretStr`` in a settings model, through nested models."""
    if depth > 10:
        return
    for name, info in model.model_fields.items():
        key = info.alias or name
        for arg in _types_in(info.annotation):
            if arg is SecretStr:
                yield (*prefix, key)
                break
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _secret_paths(arg, (*prefix, key), depth + 1)


def _types_in(annotation: Any) -> list[Any]:
    """The classes an annotation may hold directly (``SecretStr | None`` -> SecretStr, None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _types_in(arg)]
    if origin is typing.Annotated:
        return _types_in(get_args(annotation)[0])
    return [annotation]
