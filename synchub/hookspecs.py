"""The whole extension surface of synchub.

Every hook is called with keyword arguments, so an implementation may accept fewer arguments
than the spec names (pluggy's opt-in arguments) and the spec can grow without breaking plugins.
Built-in connectors and transforms register through these same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from synchub.connector import Connector

hookspec = pluggy.HookspecMarker("synchub")


@hookspec
def register_connectors() -> list[type[Connector]]:
    """Return a list of Connector classes; each is known by its ``name`` attribute."""


@hookspec
def register_transforms() -> dict[str, Callable[..., Any]]:
    """Return named value transforms for mappings: ``{"name": fn(value, **args)}``."""


@hookspec
def register_mappings() -> list[Path]:
    """Return folders or files with mapping YAML shipped by the plugin (looked up after the config's own)."""


@hookspec
def register_merge_rules() -> dict[str, Callable[..., Any]]:
    """Return named survivorship rules: ``{"name": rule(candidates, **args)}`` (see synchub.merge)."""
