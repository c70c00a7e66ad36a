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


#: Deepest nesting of mappings and lists a config or mapping file may have (aliases included).
MAX_DEPTH = 100
#: Most values (scalars, lists, mappings) a file may hold once its aliases are expanded.
MAX_NODES = 100_000
#: Most characters of scalar text a file may hold once its aliases are expanded.
MAX_CHARS = 10_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLimitError(yaml.MarkedYAMLError):
    """A document that is too deep or expands to too much through aliases (a "billion laughs")."""


@dataclass
class YamlDoc:
    """A parsed YAML file: ``data`` plus the 1-based line of each path in it."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    #: Problems found while reading that do not stop the file from being used (duplicate keys).
    problems: list[Problem] = field(default_factory=list)
    #: Paths of the strings that were nothing but ``${NAME}`` references before
    #: :func:`interpolate_env` replaced them (anything else there was written in clear text).
    from_env: set[Loc] = field(default_factory=set)

    def line_of(self, loc: Loc) -> int | None:
        """Line of ``loc`` or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def problem(self, loc: Loc, message: str, severity: str = "error") -> Problem:
        return Problem(file=str(self.path), line=self.line_of(loc), field=".".join(str(p) for p in loc),
                       message=message, severity=severity)


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing documents nested deeper than :data:`MAX_DEPTH` while composing
    (the composer recurses once per level: 5,000 brackets would end in a RecursionError)."""

    def __init__(self, text: str, name: str):
        super().__init__(text)
        self.name = name  # marks (and so error messages) name the file
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(path: Path, text: str | None = None) -> YamlDoc:
    """Parse ``path`` with the safe loader only. Raises :class:`yaml.YAMLError` with a position
    (:class:`YamlLimitError` for a document too deep or too large once aliases are expanded).
    A key given twice in one mapping is a problem in ``doc.problems``, with both lines."""
    if text is None:
        text = path.read_text(encoding="utf-8")
    loader = _Loader(text, str(path))
    try:
        try:
            node = loader.get_single_node()
            problems: list[Problem] = []
            if node is not None:
                _Inspector(loader, path, problems).size(node, (), 1)
            data = loader.construct_document(node) if node is not None else None
        except RecursionError:  # a safety net: the limits above should make this unreachable
            raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    doc = YamlDoc(path=path, data=data, problems=problems)
    if node is not None:
        _walk(node, (), doc.lines)
    return doc


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Record the line of every path (aliases are walked again where they are used: the
    :class:`_Inspector` has made sure that stays within :data:`MAX_NODES`)."""
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


class _Inspector:
    """One pass over the composed node graph, before anything is constructed.

    An alias is the *same* node as its anchor, so the size of every node is computed once and
    reused however often it is referred to: a billion-laughs document costs a few hundred steps
    here, and is refused before anything expands it. Also finds duplicate keys.
    """

    def __init__(self, loader: _Loader, path: Path, problems: list[Problem]):
        self.loader = loader
        self.path = path
        self.problems = problems
        self.sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> size(node)
        self.open: set[int] = set()  # nodes being measured: meeting one again is a cycle

    def _fail(self, node: yaml.Node, message: str) -> YamlLimitError:
        return YamlLimitError(problem=message, problem_mark=node.start_mark)

    def size(self, node: yaml.Node, loc: Loc, depth: int) -> tuple[int, int, int]:
        """``(values, characters, levels)`` of ``node`` with its aliases expanded; ``depth`` is
        the level ``node`` is at (the top collection is level 1)."""
        key = id(node)
        if key in self.sizes:
            nodes, chars, height = self.sizes[key]
            if height and depth + height - 1 > MAX_DEPTH:
                raise self._fail(node, f"nested deeper than {MAX_DEPTH} levels (counting what aliases refer to)")
            return nodes, chars, height
        if key in self.open:
            raise self._fail(node, "an alias refers to itself (a recursive structure)")
        if isinstance(node, yaml.ScalarNode):
            result = (1, len(node.value), 0)
            self.sizes[key] = result
            return result
        if depth > MAX_DEPTH:  # deeper through aliases than any one spot of the text
            raise self._fail(node, f"nested deeper than {MAX_DEPTH} levels (counting what aliases refer to)")
        self.open.add(key)
        nodes, chars, below = 1, 0, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                name = _UNHASHABLE if key_node.tag == _MERGE_TAG else self._key(key_node)
                if name is not _UNHASHABLE:
                    if name in seen:
                        self.problems.append(self._duplicate(loc, name, seen[name], key_node))
                    seen[name] = key_node
                shown = key_node.value if name is _UNHASHABLE else name
                for child, child_loc in ((key_node, loc), (value_node, (*loc, shown))):
                    c_nodes, c_chars, c_height = self.size(child, child_loc, depth + 1)
                    nodes, chars, below = nodes + c_nodes, chars + c_chars, max(below, c_height)
                    self._check(node, nodes, chars)
        else:
            for i, item in enumerate(node.value):
                c_nodes, c_chars, c_height = self.size(item, (*loc, i), depth + 1)
                nodes, chars, below = nodes + c_nodes, chars + c_chars, max(below, c_height)
                self._check(node, nodes, chars)
        self.open.discard(key)
        self.sizes[key] = (nodes, chars, 1 + below)
        return nodes, chars, 1 + below

    def _check(self, node: yaml.Node, nodes: int, chars: int) -> None:
        if nodes > MAX_NODES:
            raise self._fail(node, f"aliases expand this document to more than {MAX_NODES:,} values (a 'billion laughs' document?)")
        if chars > MAX_CHARS:
            raise self._fail(node, f"aliases expand this document to more than {MAX_CHARS:,} characters of text")

    def _key(self, key_node: yaml.Node) -> Any:
        """A mapping key as the constructor will see it (``1`` and ``0x1`` are the same key)."""
        if not isinstance(key_node, yaml.ScalarNode):
            return _UNHASHABLE
        if key_node.tag == "tag:yaml.org,2002:str":
            return key_node.value
        value = self.loader.construct_object(key_node)
        try:
            hash(value)
        except TypeError:
            return _UNHASHABLE
        return value

    def _duplicate(self, loc: Loc, name: Any, first: yaml.Node, again: yaml.Node) -> Problem:
        return Problem(
            file=str(self.path),
            line=again.start_mark.line + 1,
            field=".".join(str(p) for p in (*loc, name)),
            message=f"duplicate key {name!r} (also at {self.path}:{first.start_mark.line + 1}; the later one would silently win)",
        )


_UNHASHABLE = object()


def yaml_problem(path: Path, exc: yaml.YAMLError) -> Problem:
    """A problem, with the line, for a file that could not be read at all."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    if isinstance(exc, YamlLimitError):
        return Problem(str(path), line, "", f"refused: {exc.problem}")
    return Problem(str(path), line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(doc: YamlDoc, environ: dict[str, str] | None = None) -> list[Problem]:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of ``doc.data``; ``$$`` is ``$``.

    Values of variables whose names look like credentials are registered as secrets, so they are
    masked in every log line and error message from then on. Returns the problems found.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def sub(value: str, loc: Loc) -> str:
        if _only_references(value):
            doc.from_env.add(loc)
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


def _only_references(raw: str) -> bool:
    """True when ``raw`` is nothing but ``${NAME}`` references (no text, no defaults)."""
    rest = _ENV.sub(lambda m: "" if m.group(1) and not m.group(2) else m.group(0), raw)
    return rest.strip() == "" and raw.strip() != ""


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
