"""Checks of a config that need the plugins: connectors exist, their settings validate, every
stream's mapping exists and compiles, merge rules and source priorities name real things."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from synchub.errors import Problem
from synchub.mapping import MappingLibrary
from synchub.plugins import (
    failed_plugins,
    get_connectors,
    get_mapping_paths,
    get_merge_rules,
    get_transforms,
)
from synchub.segment import FilterError, compile_filter
from synchub.yamlfile import YamlDoc, pydantic_problems

if TYPE_CHECKING:
    from synchub.config import Config


def validate_config(config: Config, doc_for: Callable[[tuple[Any, ...]], YamlDoc]) -> list[Problem]:
    problems: list[Problem] = []

    def at(loc: tuple[Any, ...], message: str) -> None:
        problems.append(doc_for(loc).problem(loc, message))

    connectors = get_connectors()
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
            continue
        try:
            cls.Settings.model_validate(conn.settings)
        except ValidationError as exc:
            problems.extend(pydantic_problems(doc_for(loc), exc, (*loc, "settings")))
        if not conn.streams:
            at((*loc, "streams"), "a connection needs at least one stream")
        for sname, scfg in conn.streams.items():
            sloc = (*loc, "streams", sname)
            try:
                cls.StreamSettings.model_validate(scfg.settings)
            except ValidationError as exc:
                problems.extend(pydantic_problems(doc_for(loc), exc, (*sloc, "settings")))
            if not scfg.mapping:
                at(sloc, "mapping is missing (name of a file in the mappings folder)")
                continue
            # Which mapping serves which direction: ``mapping`` reads (or writes, on an out
            # connection); ``write_mapping`` writes on a ``both`` connection.
            uses = [("mapping", scfg.mapping, "out" if conn.direction == "out" else "in")]
            if scfg.write_mapping:
                if conn.direction != "both":
                    at((*sloc, "write_mapping"), "write_mapping is only for connections with direction: both")
                uses.append(("write_mapping", scfg.write_mapping, "out"))
            for key, name, want in uses:
                mapping, mproblems = library.load(name)
                for p in mproblems:
                    if p.file:
                        problems.append(p)
                    else:
                        at((*sloc, key), p.message)
                if mapping is None:
                    continue
                if conn.direction == "both" and key == "mapping" and mapping.direction == "out":
                    continue  # a write-only stream of a both connection
                if mapping.direction != want:
                    at((*sloc, key), f"mapping {name!r} is an {mapping.direction!r} mapping, but it is used to {'read' if want == 'in' else 'write'} (connection direction {conn.direction!r})")
                if mapping.timeline_only and mapping.owner_stream not in conn.streams:
                    at((*sloc, key), f"mapping {name!r}: owner stream {mapping.owner_stream!r} is not a stream of connection {name!r} (it has: {', '.join(conn.streams)})")
                if conn.direction == "out" and mapping.entity != conn.entity:
                    at((*sloc, key), f"mapping {name!r} maps {mapping.entity} records, the connection sends {conn.entity}")
                if want == "out" and scfg.filter is not None:
                    try:
                        compile_filter(scfg.filter, mapping.entity)
                    except FilterError as exc:
                        at((*sloc, "filter", *exc.path.split(".")[:1]), str(exc))
            if scfg.filter is not None and not conn.outbound:
                at((*sloc, "filter"), "a filter selects what a stream receives: only for direction out or both")
    for entity, mcfg in config.match.items():
        try:
            mcfg.score_config(entity)
        except ValidationError as exc:
            problems.extend(pydantic_problems(doc_for(("match", entity, "score")), exc, ("match", entity, "score")))
    rules = get_merge_rules()
    for entity, mcfg in config.merge.items():
        mloc = ("merge", entity)
        for i, src in enumerate(mcfg.source_priority):
            if src not in config.connections:
                at((*mloc, "source_priority", i), f"{src!r} is not a configured connection")
        for fname, frule in [("default", mcfg.default), *mcfg.fields.items()]:
            floc = (*mloc, "fields", fname) if fname != "default" else (*mloc, "default")
            for key, rname in (("rule", frule.rule), ("fallback", frule.fallback)):
                if rname and rname not in rules:
                    at((*floc, key), f"unknown merge rule {rname!r} (known: {', '.join(sorted(rules))})")
            if fname.startswith("consent.") and frule.rule != "consent":
                at((*floc, "rule"), "consent always follows the protected consent rule (only review: true may be set)")
    return problems
