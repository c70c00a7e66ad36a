"""Load YAML safely and remember the line of every value, so errors can say where they are."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synchub.errors import Problem
from synchub.redact import looks_secret, register_secret

Loc = tuple[Any, ...]


@dataclass
class YamlDoc:
    """A parsed YAML file: ``data`` plus the 1-based line of each path in it."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of ``loc`` or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(
            file=str(self.path), line=self.line_of(loc), field=".".join(str(p) for p in loc), message=message
        )


def load_yaml(path: Path, text: str | None = None) -> YamlDoc:
    """Parse ``path`` with the safe loader only. Raises :class:`yaml.YAMLError` with a position."""
    if text is None:
        text = path.read_text(encoding="utf-8")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    doc = YamlDoc(path=path, data=data)
    if node is not None:
        _walk(node, (), doc.lines)
    return doc


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines)


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(doc: YamlDoc, environ: dict[str, str] | None = None) -> list[Problem]:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of ``doc.data``; ``$$`` is ``$``.

    Values of variables whose names look like credentials are registered as secrets, so they are
    masked in every log line and error message from then on. Returns the problems found.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def sub(value: str, loc: Loc) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                val = env[name]
            elif default is not None:
                val = _ENV.sub(repl, default)
            else:
                problems.append(doc.problem(loc, f"environment variable {name} is not set"))
                return ""
            if looks_secret(name) or looks_secret(str(loc[-1]) if loc else ""):
                register_secret(val)
            return val

        return _ENV.sub(repl, value)

    def walk(obj: Any, loc: Loc) -> Any:
        if isinstance(obj, str):
            return sub(obj, loc) if "$" in obj else obj
        if isinstance(obj, dict):
            return {k: walk(v, (*loc, k)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(obj)]
        return obj

    doc.data = walk(doc.data, ())
    return problems


def pydantic_problems(doc: YamlDoc, exc: Any, prefix: Loc = ()) -> list[Problem]:
    """Turn a pydantic ValidationError into problems with file and line."""
    out = []
    for err in exc.errors():
        loc = (*prefix, *(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(doc.problem(loc, msg))
    return out
