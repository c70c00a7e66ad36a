"""The plugin system: built-ins load through the entry-point group like third parties do."""

from __future__ import annotations

import ast
import logging
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pluggy
import pytest

from synchub import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[1]


def test_files_connector_comes_from_the_entry_point_group() -> None:
    plugins.load_plugins()
    eps = {ep.name: ep.value for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert eps.get("files") == "synchub_files"
    assert plugins.pm.get_plugin("files") is not None
    assert plugins.get_connectors()["files"].__module__ == "synchub_files"


def test_third_party_transform_and_duplicate_names() -> None:
    class Plugin:
        @plugins.hookimpl
        def register_transforms(self):
            return {"reverse": lambda value: value[::-1]}

    p = Plugin()
    plugins.register(p, name="reverse-test")
    try:
        assert plugins.get_transforms()["reverse"]("abc") == "cba"
    finally:
        plugins.unregister(p)
    assert "reverse" not in plugins.get_transforms()

    class Clash:
        @plugins.hookimpl
        def register_transforms(self):
            return {"trim": str.strip}

    c = Clash()
    plugins.register(c, name="clash-test")
    try:
        from synchub.errors import ConfigError

        with pytest.raises(ConfigError, match="two plugins register the transform 'trim'"):
            plugins.get_transforms()
    finally:
        plugins.unregister(c)


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @plugins.hookimpl
        def register_conectors(self):
            return []

    with pytest.raises(pluggy.PluginValidationError):
        plugins.register(Typo(), name="typo-test")
    plugins.pm.unregister(name="typo-test")


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    broken = EntryPoint(name="broken", value="synchub_no_such_module", group=plugins.ENTRY_POINT_GROUP)
    real = list(entry_points(group=plugins.ENTRY_POINT_GROUP))
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*real, broken])
    monkeypatch.setattr(plugins, "_loaded", False)
    caplog.set_level(logging.WARNING)
    plugins.load_plugins()
    assert "broken" in plugins.failed_plugins
    assert "plugin 'broken' could not be loaded" in caplog.text
    assert "files" in plugins.get_connectors()


def test_every_hook_is_documented_in_the_readme() -> None:
    """Like datasette's docs test: a hook without documentation fails."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = ast.parse((ROOT / "synchub" / "hookspecs.py").read_text(encoding="utf-8"))
    hooks = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert sorted(hooks) == sorted(name for name in dir(hookspecs) if name.startswith("register_"))
    for hook in hooks:
        assert f"`{hook}" in readme, f"hook {hook} is not documented in README.md"
