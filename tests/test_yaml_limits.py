"""Hostile or sloppy YAML: duplicate keys, alias bombs, absurd nesting.

Every config and mapping file goes through :func:`synchub.yamlfile.load_yaml`; these tests check
that it refuses what ``yaml.safe_load`` would silently accept (a key given twice: the last one
wins) or choke on (a billion-laughs document, 5,000 levels of brackets), with file and line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from synchub.config import load_config
from synchub.errors import ConfigError
from synchub.mapping import compile_mapping
from synchub.plugins import get_transforms
from synchub.yamlfile import MAX_DEPTH, load_yaml

ROOT = Path(__file__).resolve().parents[1]


def _line(text: str, snippet: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line of ``text`` containing ``snippet``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if snippet in line]
    return hits[nth - 1]


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "mappings").mkdir(exist_ok=True)
    p = tmp_path / "synchub.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    return [str(p) for p in excinfo.value.problems]


CONNECTION = """\
  {name}:
    connector: files
    settings: {{path: data}}
    streams:
      customers:
        mapping: shop_kunden
        settings: {{pattern: "*.csv", primary_key: Kundennr}}
"""


# ----- duplicate keys ----------------------------------------------------------------------------


def test_connection_defined_twice_in_one_file_is_an_error_with_both_lines(tmp_path: Path) -> None:
    text = (f"mappings_dir: [{ROOT / 'mappings'}]\nconnections:\n" + CONNECTION.format(name="shop")
            + CONNECTION.format(name="fair") + CONNECTION.format(name="shop"))
    path = _config(tmp_path, text)
    first, second = _line(text, "  shop:"), _line(text, "  shop:", 2)
    assert _problems(path) == [
        f"{path}:{second}: connections.shop: duplicate key 'shop' (also at {path}:{first}; the later one would silently win)"
    ]


def test_match_person_twice_is_an_error(tmp_path: Path) -> None:
    text = "match:\n  person: {keys: [email]}\n  company: {keys: [domain]}\n  person: {fuzzy: false}\n"
    path = _config(tmp_path, text)
    problems = _problems(path)
    assert problems == [f"{path}:4: match.person: duplicate key 'person' (also at {path}:2; the later one would silently win)"]


def test_every_duplicate_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = "store: sqlite:///a.db\nserve:\n  threads: 2\n  threads: 3\nstore: sqlite:///b.db\n"
    path = _config(tmp_path, text)
    problems = "\n".join(_problems(path))
    assert f"{path}:4: serve.threads: duplicate key 'threads' (also at {path}:3;" in problems
    assert f"{path}:5: store: duplicate key 'store' (also at {path}:1;" in problems


def test_keys_that_are_equal_as_yaml_values_are_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("a:\n  1: x\n  0x1: y\n  '1': z\n", encoding="utf-8")
    doc = load_yaml(p)
    assert [str(pr) for pr in doc.problems] == [f"{p}:3: a.1: duplicate key 1 (also at {p}:2; the later one would silently win)"]


def test_duplicate_field_in_a_mapping_file(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("entity: person\nfields:\n  first_name: Vorname\n  last_name: Name\n  first_name: Rufname\n", encoding="utf-8")
    _mapping, problems = compile_mapping(load_yaml(p), get_transforms())
    assert [str(pr) for pr in problems] == [
        f"{p}:5: fields.first_name: duplicate key 'first_name' (also at {p}:3; the later one would silently win)"
    ]


def test_duplicate_in_a_mapping_is_reported_through_the_config(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "shop_kunden.yaml").write_text(
        "entity: person\nfields:\n  first_name: Vorname\n  first_name: Rufname\n", encoding="utf-8")
    path = _config(tmp_path, "mappings_dir: [mappings]\nconnections:\n" + CONNECTION.format(name="shop"))
    mapping = tmp_path / "mappings" / "shop_kunden.yaml"
    assert _problems(path) == [f"{mapping}:4: fields.first_name: duplicate key 'first_name' (also at {mapping}:3; the later one would silently win)"]


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 3\ny: {<<: [*b, {c: 4}], b: 5}\n", encoding="utf-8")
    doc = load_yaml(p)
    assert doc.problems == []
    assert doc.data["x"] == {"a": 3, "b": 2} and doc.data["y"] == {"a": 1, "b": 5, "c": 4}


def test_a_duplicate_inside_an_anchor_is_reported_once(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {a: 1, a: 2}\nx: *b\ny: *b\n", encoding="utf-8")
    assert [pr.line for pr in load_yaml(p).problems] == [1]


# ----- alias bombs and nesting ------------------------------------------------------------------


def _billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnopqrstuvwxyz"
    for i in range(1, levels):
        refs = ", ".join(f"*{names[i - 1]}" for _ in range(width))
        lines.append(f"{names[i]}: &{names[i]} [{refs}]")
    return "\n".join(lines) + "\n"


_CHILD = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    # A safety net for a regression: fail with MemoryError instead of eating the machine.
    limit = 768 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    from synchub.config import load_config
    from synchub.errors import ConfigError
    tracemalloc.start()
    try:
        load_config(sys.argv[1], environ={})
        result = {"error": None}
    except ConfigError as exc:
        result = {"error": [str(p) for p in exc.problems]}
    except BaseException as exc:
        result = {"crash": repr(exc)[:300]}
    result["peak"] = tracemalloc.get_traced_memory()[1]
    # ru_maxrss would include the pre-exec peak of the forked (large) pytest parent: use VmRSS.
    with open("/proc/self/status") as fh:
        result["rss_kib"] = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    print(json.dumps(result))
""")


def test_billion_laughs_is_refused_with_small_memory(tmp_path: Path) -> None:
    text = _billion_laughs()
    path = _config(tmp_path, text)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "crash" not in result, result
    assert result["peak"] < 5 * 1024 * 1024, result  # bytes allocated by Python while loading (~30 KB)
    assert result["rss_kib"] < 250 * 1024, result  # the whole process, imports included (~45 MB)
    (problem,) = result["error"]
    assert problem.startswith(f"{path}:")
    assert "aliases expand this document to more than" in problem


def test_alias_expansion_below_the_limit_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(_billion_laughs(levels=3), encoding="utf-8")
    doc = load_yaml(p)
    assert len(doc.data["c"]) == 10 and doc.data["c"][0][0] == ["lol"] * 10


def test_many_small_aliases_of_one_anchor_count_its_size_each_time(tmp_path: Path) -> None:
    # 200 references to a 1,000-value anchor: tiny on disk, 200,000 values once expanded.
    anchor = "big: &big [" + ", ".join(["x"] * 1000) + "]\n"
    p = tmp_path / "m.yaml"
    p.write_text(anchor + "refs: [" + ", ".join(["*big"] * 200) + "]\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError) as excinfo:
        load_yaml(p)
    assert "aliases expand this document to more than" in str(excinfo.value)


def test_5000_levels_of_nesting_are_refused_with_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "store: sqlite:///x.db\nserve:\n  deep: " + "[" * 5000 + "]" * 5000 + "\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:3: ")
    assert f"nested deeper than {MAX_DEPTH} levels" in problem


def test_300_levels_of_block_nesting_are_refused(tmp_path: Path) -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(300))
    path = _config(tmp_path, text)
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{MAX_DEPTH + 1}: ") and "nested deeper than" in problem


def test_nesting_through_aliases_counts_too(tmp_path: Path) -> None:
    # Each anchor is 60 levels deep and holds the previous one: no single spot in the text is
    # deeper than the limit, the document is.
    depth = 60
    parts = []
    for i in range(3):
        inner = f"*a{i - 1}" if i else "x"
        parts.append(f"l{i}: &a{i} " + "[" * depth + inner + "]" * depth)
    p = tmp_path / "m.yaml"
    p.write_text("\n".join(parts) + "\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError) as excinfo:
        load_yaml(p)
    assert f"nested deeper than {MAX_DEPTH} levels" in str(excinfo.value)


def test_nesting_below_the_limit_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("a: " + "[" * 90 + "1" + "]" * 90 + "\n", encoding="utf-8")
    value = load_yaml(p).data["a"]
    for _ in range(90):
        value = value[0]
    assert value == 1


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, "store: sqlite:///x.db\nserve: &s\n  threads: 2\n  me: *s\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:") and "refers to itself" in problem
