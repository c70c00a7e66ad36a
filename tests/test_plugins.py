"""The plugin system: built-ins load through the entry-point group like third parties do."""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points, version
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from synchub import hookspecs, plugins
from synchub.connector import Connector, ConnectorSettings
from synchub.exitcodes import FAILED
from synchub.plugins import hookimpl

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
    with pytest.raises(plugins.PluginError, match=r"the transform 'trim' is registered already by plugin 'synchub\.transforms'"):
        plugins.register(c, name="clash-test")
    assert plugins.pm.get_plugin("clash-test") is None
    assert plugins.get_transforms()["trim"] is not str.strip


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @plugins.hookimpl
        def register_conectors(self):
            return []

    with pytest.raises(plugins.PluginError, match="did you mean 'register_connectors'"):
        plugins.register(Typo(), name="typo-test")
    assert plugins.pm.get_plugin("typo-test") is None


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    broken = EntryPoint(name="broken", value="synchub_no_such_module", group=plugins.ENTRY_POINT_GROUP)
    real = list(entry_points(group=plugins.ENTRY_POINT_GROUP))
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*real, broken])
    monkeypatch.setattr(plugins, "_loaded", False)
    caplog.set_level(logging.WARNING)
    try:
        plugins.load_plugins()
        assert "broken" in plugins.failed_plugins
        assert "plugin 'broken' (entry point broken = synchub_no_such_module) is skipped: import failed: " \
            "ModuleNotFoundError: No module named 'synchub_no_such_module'" in caplog.text
        assert "files" in plugins.get_connectors()
    finally:  # later tests see the plugins as installed
        plugins.failed_plugins.pop("broken", None)
        plugins._problems.pop("broken", None)


def test_every_hook_is_documented_in_the_readme() -> None:
    """Like datasette's docs test: a hook without documentation fails."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = ast.parse((ROOT / "synchub" / "hookspecs.py").read_text(encoding="utf-8"))
    hooks = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert sorted(hooks) == sorted(name for name in dir(hookspecs) if name.startswith("register_"))
    for hook in hooks:
        assert f"`{hook}" in readme, f"hook {hook} is not documented in README.md"


# ----- a bad plugin never takes the hub down ---------------------------------------------------

class GoodConnector(Connector):
    """A connector of the test plugins."""

    name = "goodconn"


class SecretSettings(ConnectorSettings):
    token: SecretStr = Field(description="API token")
    page: int = 10


class DeclaredConnector(Connector):
    """Streams declared on the class."""

    name = "declared"
    Settings = SecretSettings
    stream_names = ("people", "companies")


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@hookimpl
def _good_connectors() -> list[type[Connector]]:
    return [GoodConnector]


@pytest.fixture
def load_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``load_with(name=module_or_None, ...)``: load the plugins again, as if these modules were
    installed under entry points ``name`` (None: a module that cannot be imported). Afterwards
    the plugins the test added are unregistered and their failures forgotten."""
    installed = list(entry_points(group=plugins.ENTRY_POINT_GROUP))
    before = set(plugins.pm.get_plugins())
    failed = dict(plugins.failed_plugins)

    def load(**modules: types.ModuleType | None) -> None:
        eps = []
        for name, module in modules.items():
            modname = f"synchub_test_plugin_{name}"
            if module is not None:
                monkeypatch.setitem(sys.modules, modname, module)
            eps.append(EntryPoint(name=name, value=modname, group=plugins.ENTRY_POINT_GROUP))
        monkeypatch.setattr(plugins, "entry_points", lambda group: [*installed, *eps])
        monkeypatch.setattr(plugins, "_loaded", False)
        plugins.load_plugins()

    yield load
    for plugin in set(plugins.pm.get_plugins()) - before:
        plugins.unregister(plugin)
    plugins.failed_plugins.clear()
    plugins.failed_plugins.update(failed)
    for name in set(plugins._problems) - set(failed):
        del plugins._problems[name]


def test_a_misspelled_hook_skips_only_its_plugin_with_one_line(load_with, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="synchub.plugins")
    load_with(good=_module("good", register_connectors=_good_connectors),
              typo=_module("typo", register_connector=_good_connectors))
    problem = plugins.failed_plugins["typo"]
    assert problem == ("it implements 'register_connector', which is not a synchub hook (did you mean "
                       f"'register_connectors'?); hooks are: {', '.join(plugins.HOOK_NAMES)}")
    lines = [r.getMessage() for r in caplog.records if "'typo'" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("plugin 'typo' (entry point typo = synchub_test_plugin_typo) is skipped: ")
    assert plugins.pm.get_plugin("typo") is None
    assert {"goodconn", "files"} <= set(plugins.get_connectors())
    assert "good" not in plugins.failed_plugins


def _raises() -> dict[str, object]:
    raise RuntimeError("boom")


def _connectors_returning(value: object) -> Callable[[], object]:
    @hookimpl
    def register_connectors() -> object:
        return value
    return register_connectors


class DuplicateFiles(Connector):
    name = "files"


def _unmarked() -> list[type[Connector]]:
    return [GoodConnector]


@hookimpl
def _with_argument(config: object) -> list[type[Connector]]:
    return [GoodConnector]


@hookimpl
def _generator_that_fails():  # type: ignore[no-untyped-def]
    from synchub_test_plugin_missing_client import Client  # noqa: F401  (runs only when iterated)
    yield GoodConnector


BAD_PLUGINS = {
    "cannot be imported": (None, "import failed: ModuleNotFoundError: No module named 'synchub_test_plugin_bad'"),
    "hook with an argument the hook does not pass": (
        {"register_connectors": _with_argument},
        "register_connectors() declares argument(s) config, but it passes no arguments"),
    "hook raises": ({"register_transforms": hookimpl(_raises)}, "register_transforms() raised RuntimeError: boom (at tests/test_plugins.py:"),
    "a generator hook that raises when iterated": (
        {"register_connectors": _generator_that_fails},
        "register_connectors() raised ModuleNotFoundError: No module named 'synchub_test_plugin_missing_client'"),
    "not a Connector class": ({"register_connectors": _connectors_returning([dict])},
                              "register_connectors() returned the class builtins.dict, which is not a subclass of synchub.connector.Connector"),
    "an instance, not the class": ({"register_connectors": _connectors_returning([object.__new__(GoodConnector)])},
                                   "register_connectors() returned an instance of GoodConnector; return the class"),
    "a class, not a list": ({"register_connectors": _connectors_returning(GoodConnector)},
                            "register_connectors() must return a list of Connector classes, not the class "
                            "tests.test_plugins.GoodConnector (put it in a list)"),
    "a connector name another plugin has": (
        {"register_connectors": _connectors_returning([DuplicateFiles])},
        "the connector 'files' is registered already by plugin 'files' (synchub "),
    "a transform that is not a function": (
        {"register_transforms": hookimpl(lambda: {"shout": "SHOUT"})},
        "register_transforms() returned 'shout': str 'SHOUT', which is not callable"),
    "a mapping folder that does not exist": (
        {"register_mappings": hookimpl(lambda: ["/no/such/folder"])},
        "register_mappings() returned '/no/such/folder', which does not exist"),
    "a hook function without @hookimpl": (
        {"register_connectors": _unmarked},
        "register_connectors() is not marked with @synchub.plugins.hookimpl, so it is never called"),
}


@pytest.mark.parametrize("case", list(BAD_PLUGINS))
def test_a_bad_plugin_is_skipped_and_the_others_work(case: str, load_with) -> None:
    attrs, expected = BAD_PLUGINS[case]
    load_with(good=_module("good", register_connectors=_good_connectors),
              bad=None if attrs is None else _module("bad", **attrs))
    assert expected in plugins.failed_plugins["bad"]
    assert plugins.pm.get_plugin("bad") is None
    assert {"goodconn", "files"} <= set(plugins.get_connectors())
    assert plugins.get_connectors()["files"].__module__ == "synchub_files"
    assert "trim" in plugins.get_transforms() and "most_recent" in plugins.get_merge_rules()
    (problem,) = [p for p in plugins.plugin_problems() if p.origin.name == "bad"]
    assert problem.line().startswith("plugin 'bad' (entry point bad = synchub_test_plugin_bad) is skipped: ")


def test_register_checks_the_plugin_like_loading_does() -> None:
    class Raises:
        @hookimpl
        def register_merge_rules(self):
            raise KeyError("x")

    with pytest.raises(plugins.PluginError, match=r"register_merge_rules\(\) raised KeyError: 'x'"):
        plugins.register(Raises(), name="raises-test")
    assert plugins.pm.get_plugin("raises-test") is None


def test_describe_plugins_shows_origin_streams_schemas_and_mappings(tmp_path: Path) -> None:
    (tmp_path / "declared_people.yaml").write_text("entity: person\nfields:\n  emails: email\n", encoding="utf-8")

    class Declared:
        @hookimpl
        def register_connectors(self):
            return [DeclaredConnector]

        @hookimpl
        def register_mappings(self):
            return [tmp_path]

        @hookimpl
        def register_transforms(self):
            return {"declared_upper": str.upper}

    plugin = Declared()
    plugins.register(plugin, name="declared-test")
    try:
        report = plugins.describe_plugins()
        by_name = {p["name"]: p for p in report["plugins"]}
        files = by_name["files"]
        assert (files["kind"], files["distribution"], files["entry_point"]) == ("entry point", "synchub", "synchub_files")
        assert files["version"] == version("synchub")
        (conn,) = files["connectors"]
        assert conn["streams"] is None and "config" in conn["streams_note"]
        assert "path" in conn["settings_schema"]["properties"] and conn["stream_settings_schema"]["type"] == "object"
        declared = by_name["declared-test"]
        (conn,) = declared["connectors"]
        assert conn["streams"] == ["people", "companies"]
        assert conn["description"] == "Streams declared on the class."
        assert declared["mappings"] == [{"path": str(tmp_path), "mappings": ["declared_people"]}]
        assert declared["transforms"] == ["declared_upper"]
        fields = {f["name"]: f for f in plugins.schema_fields(conn["settings_schema"])}
        assert fields["token"]["type"] == "secret" and fields["token"]["required"]
        assert fields["page"] == {"name": "page", "type": "integer", "required": False, "default": 10, "description": ""}
        assert by_name["synchub.transforms"]["kind"] == "core"
        assert tmp_path in plugins.get_mapping_paths()
    finally:
        plugins.unregister(plugin)
    assert tmp_path not in plugins.get_mapping_paths()


# ----- through the command line, with a plugin installed the way pip installs one -------------

TYPO_PLUGIN = '''
from synchub.connector import Connector
from synchub.plugins import hookimpl


class TypoConnector(Connector):
    name = "typoconn"


@hookimpl
def register_connector():
    return [TypoConnector]
'''


def _install_typo_plugin(site: Path) -> None:
    """A module and its dist-info on a PYTHONPATH folder: importlib.metadata sees an installed
    distribution ``synchub-typo 0.3`` with an entry point in the ``synchub`` group."""
    (site / "synchub_typo.py").write_text(TYPO_PLUGIN, encoding="utf-8")
    info = site / "synchub_typo-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: synchub-typo\nVersion: 0.3\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[synchub]\ntypo = synchub_typo\n", encoding="utf-8")


def _synchub(*args: str, site: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS", "SYNCHUB_CONFIG")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "synchub.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_with_a_misspelled_hook_in_an_installed_plugin(tmp_path: Path, demo_dir: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_typo_plugin(site)
    expected = "it implements 'register_connector', which is not a synchub hook (did you mean 'register_connectors'?)"

    validate = _synchub("-c", str(demo_dir / "config" / "demo.yaml"), "validate", site=site)
    assert validate.returncode == 0, validate.stderr
    assert "config is valid" in validate.stdout
    lines = [line for line in validate.stderr.splitlines() if "typo" in line]
    assert len(lines) == 1, validate.stderr
    assert ("plugin 'typo' (synchub-typo 0.3, entry point typo = synchub_typo) is skipped: " + expected) in lines[0]
    assert "Traceback" not in validate.stderr

    listing = _synchub("plugins", site=site)
    assert listing.returncode == FAILED
    assert "Traceback" not in listing.stderr
    assert (f"plugin typo failed to load: {expected}") in listing.stderr
    assert "(synchub-typo 0.3, entry point typo = synchub_typo)" in listing.stderr
    assert "plugin files (synchub " in listing.stdout

    as_json = _synchub("plugins", "--json", site=site)
    assert as_json.returncode == FAILED
    body = json.loads(as_json.stdout)
    (problem,) = [p for p in body["problems"] if p["plugin"] == "typo"]
    assert (problem["distribution"], problem["version"], problem["hook"]) == ("synchub-typo", "0.3", "register_connector")
    assert body["failed"]["typo"].startswith(expected)
    assert "files" in body["connectors"] and "typoconn" not in body["connectors"]
    assert body["error"]["code"] == "failed"
