"""The plugin manager: entry-point group ``synchub``; built-ins load the same way as third parties.

A plugin that fails to import is reported with a warning and skipped, so one broken third-party
package does not take the whole hub down.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from synchub import hookspecs
from synchub.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from synchub.connector import Connector

log = logging.getLogger(__name__)

hookimpl = pluggy.HookimplMarker("synchub")
ENTRY_POINT_GROUP = "synchub"

# Core modules that implement hooks themselves (they are part of synchub, not plugins).
_CORE_PLUGINS = ("synchub.transforms", "synchub.merge")

pm = pluggy.PluginManager("synchub")
pm.add_hookspecs(hookspecs)
_loaded = False
failed_plugins: dict[str, str] = {}


def load_plugins() -> pluggy.PluginManager:
    """Register core hook implementations and every installed ``synchub`` entry point (once)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for modname in _CORE_PLUGINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            pm.register(mod, name=modname)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not break the hub
            failed_plugins[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %r could not be loaded and is skipped: %s", ep.name, exc)
            continue
        pm.register(plugin, name=ep.name)
    pm.check_pending()
    _connectors.cache_clear()
    _transforms.cache_clear()
    return pm


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, embedding applications)."""
    load_plugins()
    pm.register(plugin, name=name)
    pm.check_pending()
    _connectors.cache_clear()
    _transforms.cache_clear()


def unregister(plugin: object) -> None:
    pm.unregister(plugin)
    _connectors.cache_clear()
    _transforms.cache_clear()


def _merge_named(kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for mapping in results:
        for key, value in (mapping or {}).items():
            if key in merged and merged[key] is not value:
                raise ConfigError(f"two plugins register the {kind} {key!r}")
            merged[key] = value
    return merged


@cache
def _connectors() -> dict[str, type[Connector]]:
    load_plugins()
    found: dict[str, type[Connector]] = {}
    for classes in pm.hook.register_connectors():
        for cls in classes or ():
            if cls.name in found and found[cls.name] is not cls:
                raise ConfigError(f"two plugins register the connector {cls.name!r}")
            found[cls.name] = cls
    return found


@cache
def _transforms() -> dict[str, Callable[..., Any]]:
    load_plugins()
    return _merge_named("transform", pm.hook.register_transforms())


def get_connectors() -> dict[str, type[Connector]]:
    """All registered connector classes by name."""
    return dict(_connectors())


def get_transforms() -> dict[str, Callable[..., Any]]:
    """All registered transforms by name."""
    return dict(_transforms())


def get_merge_rules() -> dict[str, Callable[..., Any]]:
    load_plugins()
    return _merge_named("merge rule", pm.hook.register_merge_rules())


def get_mapping_paths() -> list[Path]:
    load_plugins()
    return [p for paths in pm.hook.register_mappings() for p in (paths or ())]
