"""``synchub new-connector``: the package it writes installs as a plugin and its tests pass."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from synchub import plugins, scaffold
from synchub.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> scaffold.Created:
    return scaffold.new_connector("acme-crm", tmp_path_factory.mktemp("scaffold"))


def test_layout(package: scaffold.Created) -> None:
    assert (package.distribution, package.module, package.connector) == ("synchub-acme-crm", "synchub_acme_crm", "acme_crm")
    assert package.root.name == "synchub-acme-crm"
    assert sorted(f.relative_to(package.root).as_posix() for f in package.files) == [
        "README.md",
        "pyproject.toml",
        "synchub_acme_crm/__init__.py",
        "synchub_acme_crm/mappings/acme_crm_people.yaml",
        "tests/conftest.py",
        "tests/fake_api.py",
        "tests/test_connector.py",
        "tests/test_standard.py",
    ]
    for f in package.files:
        text = f.read_text(encoding="utf-8")
        assert "{{" not in text and "__module__" not in text, f"{f}: a placeholder was left"


def test_generated_tests_pass(package: scaffold.Created) -> None:
    """The generated tests, standard suite included, run green against the hub installed here."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(package.root)
    p = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=package.root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    passed = [line for line in p.stdout.splitlines() if line.endswith("PASSED") or " PASSED " in line]
    standard = [line for line in passed if "test_standard.py::TestAcmeCrmConnector::" in line]
    for check in ("test_settings_refuse_unknown_keys", "test_checkpoints_follow_their_records_and_resume_reads_nothing_old",
                  "test_a_bad_record_is_rejected_alone", "test_429_is_retried", "test_401_is_an_auth_error"):
        assert any(f"::{check} " in line for line in standard), f"{check} did not pass:\n{p.stdout[-3000:]}"
    assert any("test_connector.py::" in line for line in passed)


def test_generated_package_registers_through_the_entry_point_group(
    package: scaffold.Created, monkeypatch: pytest.MonkeyPatch
) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((package.root / "pyproject.toml").read_text(encoding="utf-8"))
    declared = project["project"]["entry-points"][plugins.ENTRY_POINT_GROUP]
    assert declared == {"acme_crm": "synchub_acme_crm"}
    assert project["project"]["name"] == "synchub-acme-crm"
    assert project["tool"]["setuptools"]["package-data"]["synchub_acme_crm"] == ["mappings/*.yaml"]

    # What pip would install: the module importable, the entry point in the group.
    monkeypatch.syspath_prepend(str(package.root))
    installed = list(entry_points(group=plugins.ENTRY_POINT_GROUP))
    eps = [EntryPoint(name=name, value=value, group=plugins.ENTRY_POINT_GROUP) for name, value in declared.items()]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*installed, *eps])
    monkeypatch.setattr(plugins, "_loaded", False)
    plugins.load_plugins()
    module = importlib.import_module("synchub_acme_crm")
    try:
        assert "acme_crm" not in plugins.failed_plugins
        assert plugins.get_connectors()["acme_crm"] is module.AcmeCrmConnector
        assert module.MAPPINGS in plugins.get_mapping_paths()
        (described,) = [p for p in plugins.describe_plugins()["plugins"] if p["name"] == "acme_crm"]
        (conn,) = described["connectors"]
        assert conn["streams"] == ["people"]
        fields = {f["name"]: f for f in plugins.schema_fields(conn["settings_schema"])}
        assert fields["token"]["type"] == "secret" and fields["base_url"]["required"]
        assert described["mappings"][0]["mappings"] == ["acme_crm_people"]
    finally:
        plugins.unregister(module)
        sys.modules.pop("synchub_acme_crm", None)
    assert "acme_crm" not in plugins.get_connectors()


@pytest.mark.parametrize("name", ["Acme", "1acme", "acme crm", "acme__crm", "-acme", ""])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use lower-case letters"):
        scaffold.new_connector(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "synchub-acme").mkdir()
    (tmp_path / "synchub-acme" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        scaffold.new_connector("acme", tmp_path)
    assert [p.name for p in (tmp_path / "synchub-acme").iterdir()] == ["keep.txt"]


def test_an_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    (template / "x.txt.tmpl").write_text("{{connector}} {{no_such_value}}", encoding="utf-8")
    with pytest.raises(KeyError, match="no_such_value"):
        scaffold.new_connector("acme", tmp_path / "out", template=template)


def test_cli_new_connector(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS", "SYNCHUB_CONFIG")}
    run = [sys.executable, "-m", "synchub.cli"]
    p = subprocess.run([*run, "--json", "new-connector", "shop_x", "--dir", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["package"] == str(tmp_path / "synchub-shop-x") and body["connector"] == "shop_x"
    assert (tmp_path / "synchub-shop-x" / "synchub_shop_x" / "__init__.py").is_file()
    again = subprocess.run([*run, "new-connector", "shop_x", "--dir", str(tmp_path)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "exists and is not empty" in again.stderr and "Traceback" not in again.stderr
