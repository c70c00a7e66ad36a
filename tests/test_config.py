"""Config loading: every problem reported with file, line and field; ${ENV} interpolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synchub.cli import app
from synchub.config import load_config
from synchub.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "synchub.yaml") -> Path:
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ=environ or {})
    return [str(p) for p in excinfo.value.problems]


GOOD = f"""\
store: sqlite:///x.db
mappings_dir: [{ROOT / 'mappings'}]
connections:
  shop:
    connector: files
    settings: {{path: data}}
    schedule: {{interval: 15m}}
    streams:
      customers:
        mapping: shop_kunden
        settings: {{pattern: "*.csv", primary_key: Kundennr}}
"""


def test_demo_config_is_valid() -> None:
    cfg = load_config(ROOT / "config" / "demo.yaml", environ={})
    assert set(cfg.connections) == {"shop", "newsletter", "fair", "export"}
    assert cfg.store_url().startswith("sqlite:////") and cfg.store_url().endswith("var/demo.db")


def test_unknown_key_is_reported_with_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("    schedule:", "    shedule:"))
    problems = _problems(path)
    assert problems == [f"{path}:7: connections.shop.shedule: unknown key (not allowed here)"]


def test_wrong_types_and_bad_values_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("{interval: 15m}", "{interval: soon}").replace("connector: files", "connector: files\n    direction: sideways")
    text += "defaults:\n  batch_size: lots\n"
    path = _write(tmp_path, text)
    problems = "\n".join(_problems(path))
    assert f"{path}:6: connections.shop.direction: Input should be 'in', 'out' or 'both'" in problems
    assert f"{path}:8: connections.shop.schedule.interval: Value error, interval must look like 30s, 15m, 2h or 1d" in problems
    assert f"{path}:14: defaults.batch_size: Input should be a valid integer" in problems


def test_missing_env_var_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("sqlite:///x.db", "${STORE_URL}"))
    assert _problems(path) == [f"{path}:1: store: environment variable STORE_URL is not set"]
    cfg = load_config(path, environ={"STORE_URL": "sqlite:///y.db"})
    assert cfg.store_url().endswith("/y.db")


def test_env_default_and_dollar_escape(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("sqlite:///x.db", "${STORE_URL:-sqlite:///$$HOME.db}"))
    assert load_config(path, environ={}).store_url().endswith("/$HOME.db")


def test_connector_settings_are_checked_by_the_connector(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('{pattern: "*.csv", primary_key: Kundennr}', '{pattern: "../*.csv"}'))
    problems = "\n".join(_problems(path))
    assert "connections.shop.streams.customers.settings" in problems
    assert "may not contain '..'" in problems


def test_unknown_connector_and_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("connector: files", "connector: hubspotty").replace("mapping: shop_kunden", "mapping: nope"))
    problems = "\n".join(_problems(path))
    assert f"{path}:5: connections.shop.connector: no connector named 'hubspotty' is installed" in problems
    path = _write(tmp_path, GOOD.replace("mapping: shop_kunden", "mapping: nope"))
    assert any("connections.shop.streams.customers.mapping: mapping 'nope' not found" in p for p in _problems(path))


def test_mapping_problems_point_into_the_mapping_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace(f"[{ROOT / 'mappings'}]", "[mappings]"))
    mapping = tmp_path / "mappings" / "shop_kunden.yaml"
    mapping.write_text(
        "entity: person\nfields:\n  first_name: Vorname\n  emails: {path: E-Mail, transform: emial}\n"
        "  shoe_size: Schuhgroesse\n  birth_date: {path: G, transform: parse_date, args: {fromat: x}}\n",
        encoding="utf-8",
    )
    problems = "\n".join(_problems(path))
    assert f"{mapping}:4: fields.emails.transform: unknown transform 'emial'" in problems
    assert f"{mapping}:5: fields.shoe_size: 'shoe_size' is not a field of the canonical person" in problems
    assert f"{mapping}:6: fields.birth_date.transform: transform 'parse_date': unknown argument(s) fromat" in problems


def test_invalid_yaml_is_reported_with_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "connections:\n  shop: [unclosed\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:") and "not valid YAML" in problem


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = _write(tmp_path, "store: !!python/object/apply:os.system ['echo pwned']\n")
    (problem,) = _problems(path)
    assert "not valid YAML" in problem


def test_config_folder_merges_files_and_catches_duplicate_connections(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    _write(folder, GOOD, "a.yaml")
    _write(folder, GOOD.replace("store: sqlite:///x.db\n", ""), "b.yaml")
    problems = "\n".join(_problems(folder))
    assert "connection 'shop' is also defined in" in problems
    assert "'mappings_dir' is also set in" in problems


def test_validate_command(tmp_path: Path) -> None:
    runner = CliRunner()
    good = _write(tmp_path, GOOD)
    result = runner.invoke(app, ["--config", str(good), "validate"])
    assert result.exit_code == 0 and "config is valid" in result.output
    bad = _write(tmp_path, GOOD.replace("schedule:", "shedule:"), "bad.yaml")
    import sys

    from synchub.cli import main

    argv = sys.argv
    sys.argv = ["synchub", "--config", str(bad), "validate"]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = argv
    assert exit_info.value.code == 2


def test_match_and_merge_rules_are_checked(tmp_path: Path) -> None:
    text = GOOD + "match:\n  person:\n    score: {uper: 3}\nmerge:\n  person:\n    fields:\n      consent.email: {rule: most_recent}\n      first_name: {rule: loudest}\n"
    path = _write(tmp_path, text)
    problems = "\n".join(_problems(path))
    assert "match.person.score.uper" in problems
    assert f"{path}:18: merge.person.fields.consent.email.rule: consent always follows the protected consent rule" in problems
    assert "merge.person.fields.first_name.rule: unknown merge rule 'loudest'" in problems
