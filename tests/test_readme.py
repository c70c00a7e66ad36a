"""The README's plugin example runs, end to end, as a third-party plugin would."""

from __future__ import annotations

import re
import types
from pathlib import Path

from synchub import plugins
from tests.helpers import hub_for, write_config

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_plugin_example_syncs(tmp_path: Path, store_url: str) -> None:
    (block,) = _python_blocks()
    module = types.ModuleType("synchub_jsonlines")
    exec(compile(block, "README.md", "exec"), module.__dict__)
    plugins.register(module, name="jsonlines-readme")
    try:
        cfg = write_config(tmp_path, """
connections:
  app:
    connector: jsonlines
    settings: {path: data/people.jsonl}
    streams:
      people: {mapping: people_jsonl}
""", store_url, people__jsonl='{"id": 1, "email": "Ann@Example.com ", "name": "Ann"}\n{"id": 2, "email": "bo@example.com", "name": "Bo"}\n')
        (tmp_path / "mappings" / "people_jsonl.yaml").write_text("entity: person\nfields:\n  emails: email\n  first_name: name\n", encoding="utf-8")
        hub = hub_for(cfg)
        first = hub.sync()[0].streams["people"]
        assert (first.read, first.created) == (2, 2)
        with open(tmp_path / "data" / "people.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"id": 3, "email": "ann@example.com", "name": "Ann"}\n')
        second = hub.sync()[0].streams["people"]
        assert (second.read, second.duplicates) == (1, 1)  # resumed from the saved line; matched Ann by email
        assert hub.store.counts()["golden_active"] == 2
    finally:
        plugins.unregister(module)


def test_readme_names_the_two_commands_ci_uses() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
