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
    from synchub import exitcodes

    assert exit_info.value.code == exitcodes.CONFIG


def test_match_and_merge_rules_are_checked(tmp_path: Path) -> None:
    text = GOOD + "match:\n  person:\n    score: {uper: 3}\nmerge:\n  person:\n    fields:\n      consent.email: {rule: most_recent}\n      first_name: {rule: loudest}\n"
    path = _write(tmp_path, text)
    problems = "\n".join(_problems(path))
    assert "match.person.score.uper" in problems
    assert f"{path}:18: merge.person.fields.consent.email.rule: consent always follows the protected consent rule" in problems
    assert "merge.person.fields.first_name.rule: unknown merge rule 'loudest'" in problems


# ----- one pass over every stage ------------------------------------------------------------------

MANY_MISTAKES = """\
store: sqlite:///x.db
mappings_dir: [../mappings]
defaults:
  batch_size: lots
connections:
  shop:
    connector: files
    shedule: {interval: 15m}
    settings:
      path: data
      colour: blue
    streams:
      customers:
        mapping: shop_kunden
        settings: {pattern: "../*.csv", primary_key: Kundennr}
  news:
    connector: files
    schedule: {interval: soon}
    settings: {path: data}
    streams:
      members: {mapping: nope, settings: {pattern: "*.csv", primary_key: id}}
  crm:
    connector: hubspotty
    streams: {contacts: {mapping: broken}}
  export:
    connector: files
    direction: out
    settings: {path: out}
    streams:
      customers:
        mapping: export_customers
        settings: {file: x.csv}
        filter: {lifecycle_stag: customer}
match:
  person: {keys: [email]}
  person: {keys: [email], score: {uper: 3}}
merge:
  person:
    source_priority: [shop, shopp]
    fields:
      consent.email: {rule: most_recent}
      first_name: {rule: loudest}
      birthdate: {rule: source_priority}
"""


def _line(text: str, snippet: str, nth: int = 1) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if snippet in line][nth - 1]


def test_validate_reports_every_mistake_of_every_stage_in_one_run(tmp_path: Path) -> None:
    conf, mappings = tmp_path / "conf", tmp_path / "mappings"
    conf.mkdir()
    mappings.mkdir()
    main = conf / "main.yaml"
    main.write_text(MANY_MISTAKES, encoding="utf-8")
    other = conf / "serve.yaml"
    other.write_text("serve:\n  threads: [2\n", encoding="utf-8")
    kunden_text = "entity: person\nfields:\n  first_name: Vorname\n  emails: {path: E-Mail, transform: emial}\n  first_name: Rufname\n"
    (mappings / "shop_kunden.yaml").write_text(kunden_text, encoding="utf-8")
    (mappings / "broken.yaml").write_text("entity: person\nfields: {first_name: [Vorname\n", encoding="utf-8")
    (mappings / "export_customers.yaml").write_text((ROOT / "mappings" / "export_customers.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    kunden, broken = mappings / "shop_kunden.yaml", mappings / "broken.yaml"
    t = MANY_MISTAKES

    result = CliRunner().invoke(app, ["--config", str(conf), "validate"])
    assert isinstance(result.exception, ConfigError), result.output
    problems = result.exception.problems
    errors = [str(p) for p in problems if getattr(p, "severity", "error") == "error"]
    expected_errors = [
        # YAML: syntax of a second config file, and of a mapping file; duplicate keys in both kinds
        (f"{other}:", "not valid YAML"),
        (f"{broken}:", "not valid YAML"),
        (f"{main}:{_line(t, 'person: {keys: [email], score')}: match.person:", "duplicate key 'person'"),
        (f"{kunden}:5: fields.first_name:", "duplicate key 'first_name'"),
        # config schema, schedules
        (f"{main}:{_line(t, 'batch_size')}: defaults.batch_size:", "valid integer"),
        (f"{main}:{_line(t, 'shedule')}: connections.shop.shedule:", "unknown key"),
        (f"{main}:{_line(t, 'interval: soon')}: connections.news.schedule.interval:", "interval must look like"),
        # connectors and their settings, stream settings
        (f"{main}:{_line(t, 'colour')}: connections.shop.settings.colour:", "unknown key"),
        (f"{main}:{_line(t, '../*.csv')}: connections.shop.streams.customers.settings", "may not contain '..'"),
        (f"{main}:{_line(t, 'hubspotty')}: connections.crm.connector:", "no connector named 'hubspotty'"),
        # mappings
        (f"{main}:{_line(t, 'mapping: nope')}: connections.news.streams.members.mapping:", "mapping 'nope' not found"),
        (f"{kunden}:4: fields.emails.transform:", "unknown transform 'emial'"),
        # segment filters
        (f"{main}:{_line(t, 'lifecycle_stag')}: connections.export.streams.customers.filter", "lifecycle_stag"),
        # match and merge
        (f"{main}:", "match.person.score.uper"),
        (f"{main}:{_line(t, 'shopp')}: merge.person.source_priority.1:", "'shopp' is not a configured connection"),
        (f"{main}:{_line(t, 'consent.email')}: merge.person.fields.consent.email.rule:", "protected consent rule"),
        (f"{main}:{_line(t, 'loudest')}: merge.person.fields.first_name.rule:", "unknown merge rule 'loudest'"),
    ]
    assert len(expected_errors) >= 10
    missing = [(where, what) for where, what in expected_errors if not any(p.startswith(where) and what in p for p in errors)]
    assert not missing, "\n".join(errors)
    # Nothing is reported twice, and there are no follow-on errors beyond the mistakes made.
    assert len(errors) == len(set(errors)) == len(expected_errors), "\n".join(errors)
    warnings = [str(p) for p in problems if getattr(p, "severity", "error") == "warning"]
    assert warnings == [f"{main}:{_line(t, 'birthdate')}: merge.person.fields.birthdate: warning: "
                        "'birthdate' is not a field of the canonical person, so this rule does nothing; did you mean 'birth_date'?"]


# ----- warnings -------------------------------------------------------------------------------------

SFTP = """\
      sftp:
        host: sftp.example.com
        username: synchub
        password: {password}
        known_hosts: "sftp.example.com ssh-ed25519 AAAAC3Nza"
"""


def _validate(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)
    if isinstance(result.exception, ConfigError):
        return 2, result.output + "\n".join(str(p) for p in result.exception.problems)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _flat(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines where it likes


def test_clear_text_secret_is_a_warning_without_the_secret(tmp_path: Path) -> None:
    secret = "hunter2-correct-horse"
    text = GOOD.replace("settings: {path: data}", "settings:\n      path: data\n" + SFTP.format(password=secret))
    path = _write(tmp_path, text)
    line = _line(text, "password:")
    code, output = _validate(["--config", str(path), "validate"])
    assert code == 0, output
    assert _flat(f"{path}:{line}: connections.shop.settings.sftp.password: warning:") in _flat(output)
    assert "clear text" in output and "${SHOP_SFTP_PASSWORD}" in _flat(output)
    assert secret not in output
    assert _flat("config is valid") in _flat(output)

    code, output = _validate(["--config", str(path), "validate", "--strict"])
    assert code != 0 and "clear text" in output and secret not in output

    # From the environment it is fine, and other commands still load the config.
    env_path = _write(tmp_path, text.replace(secret, "${SFTP_PASSWORD}"), "env.yaml")
    code, output = _validate(["--config", str(env_path), "validate", "--strict"], env={"SFTP_PASSWORD": secret})
    assert code == 0 and "warning" not in output, output
    assert load_config(path, environ={}).connections["shop"].settings["sftp"]["password"] == secret


def test_secret_from_a_default_in_the_config_is_clear_text_too(tmp_path: Path) -> None:
    text = GOOD.replace("settings: {path: data}", "settings:\n      path: data\n" + SFTP.format(password="${SFTP_PASSWORD:-letmein-now}"))
    path = _write(tmp_path, text)
    code, output = _validate(["--config", str(path), "validate"], env={"SFTP_PASSWORD": "other-secret"})
    assert code == 0 and "clear text" in output and "letmein-now" not in output


def test_merge_rule_for_an_unknown_field_is_a_warning(tmp_path: Path) -> None:
    text = GOOD + "merge:\n  person:\n    fields:\n      birthdate: {rule: most_recent}\n      consent.fax: {rule: consent}\n" \
                  "      custom.shoe_size: {rule: most_recent}\n      address: {rule: most_complete}\n  company:\n    fields:\n      nmae: {rule: longest}\n"
    path = _write(tmp_path, text)
    code, output = _validate(["--config", str(path), "validate"])
    assert code == 0, output
    flat = _flat(output)
    assert _flat(f"{path}:{_line(text, 'birthdate')}: merge.person.fields.birthdate: warning:") in flat
    assert _flat("did you mean 'birth_date'?") in flat
    assert _flat(f"{path}:{_line(text, 'consent.fax')}: merge.person.fields.consent.fax: warning:") in flat
    assert _flat(f"{path}:{_line(text, 'nmae')}: merge.company.fields.nmae: warning:") in flat and _flat("did you mean 'name'?") in flat
    assert "shoe_size" not in output and "fields.address" not in output
    code, output = _validate(["--config", str(path), "validate", "--strict"])
    assert code != 0 and "birthdate" in output
    load_config(path, environ={})  # a warning does not stop the other commands


def test_load_config_lists_errors_and_warnings_together(tmp_path: Path) -> None:
    text = GOOD.replace("schedule:", "shedule:") + "merge:\n  person:\n    fields:\n      birthdate: {rule: most_recent}\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    severities = sorted((p.field, p.severity) for p in excinfo.value.problems)
    assert severities == [("connections.shop.shedule", "error"), ("merge.person.fields.birthdate", "warning")]
