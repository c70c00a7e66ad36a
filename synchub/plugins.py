"""The plugin manager: entry-point group ``synchub``; built-ins load the same way as third parties.

A broken plugin never takes the hub down. Each installed plugin is loaded on its own and its hooks
are called once, when the plugins load; a plugin that

* fails to import,
* implements a hook the hub does not have (a typo such as ``register_connector``; the message
  suggests the closest hook name) or a hook function that is not marked with :data:`hookimpl`,
* declares hook arguments the hook does not pass,
* raises in a hook, or returns something that is not what the hook asks for (objects that are
  not ``Connector`` classes, names that another plugin registers already),

is skipped as a whole, with one warning line naming the plugin, its distribution and the
problem. :data:`failed_plugins` and :func:`plugin_problems` keep what went wrong for
``synchub plugins`` and ``synchub validate``. Plugins registered at run time with
:func:`register` (tests, embedding applications) go through the same checks, but a problem
there raises :class:`PluginError`: the caller asked for that plugin.

Names are unique: when two plugins register the same connector, transform or merge rule name,
the plugin loaded later is skipped (the hub's own plugins load first, then the others by
entry-point name).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import traceback
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from synchub import hookspecs
from synchub.errors import ConfigError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from synchub.connector import Connector

log = logging.getLogger(__name__)

hookimpl = pluggy.HookimplMarker("synchub")
ENTRY_POINT_GROUP = "synchub"
#: The distribution of the hub itself: its entry points (the built-in connectors) load first.
CORE_DISTRIBUTION = "synchub"

# Core modules that implement hooks themselves (they are part of synchub, not plugins).
_CORE_PLUGINS = ("synchub.transforms", "synchub.merge")

#: The hooks plugins may implement, by name.
HOOK_NAMES: tuple[str, ...] = tuple(
    sorted(name for name, fn in vars(hookspecs).items() if name.startswith("register_") and callable(fn))
)

pm = pluggy.PluginManager("synchub")
pm.add_hookspecs(hookspecs)
_loaded = False
#: Plugins that were skipped, by entry-point (or registration) name: what went wrong, one line.
failed_plugins: dict[str, str] = {}


class PluginError(ConfigError):
    """A plugin registered with :func:`register` is unusable (the message says why)."""


@dataclass
class PluginOrigin:
    """Where a plugin comes from: its entry point and the distribution that declares it."""

    name: str
    kind: str  # "core", "entry point" or "registered"
    module: str | None = None
    entry_point: str | None = None
    distribution: str | None = None
    version: str | None = None

    def details(self) -> str:
        """``synchub-acme 1.2, entry point acme = synchub_acme`` (empty when nothing is known)."""
        parts = []
        if self.distribution:
            parts.append(f"{self.distribution} {self.version or '?'}")
        if self.entry_point:
            parts.append(f"entry point {self.name} = {self.entry_point}")
        elif self.module:
            parts.append(f"module {self.module}")
        return ", ".join(parts)

    def label(self) -> str:
        """``'acme' (synchub-acme 1.2, entry point acme = synchub_acme)``: for messages."""
        details = self.details()
        return f"{self.name!r}" + (f" ({details})" if details else "")


@dataclass
class PluginProblem:
    """Why a plugin was skipped."""

    origin: PluginOrigin
    message: str
    #: The hook the problem is in, if it is in one.
    hook: str | None = None

    def line(self) -> str:
        return f"plugin {self.origin.label()} is skipped: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.origin.name, "distribution": self.origin.distribution, "version": self.origin.version,
            "entry_point": self.origin.entry_point, "origin": self.origin.details(), "hook": self.hook, "message": self.message, "line": self.line(),
        }


@dataclass
class Contribution:
    """What one plugin's hooks returned, checked."""

    plugin: object
    connectors: dict[str, type[Connector]] = field(default_factory=dict)
    transforms: dict[str, Callable[..., Any]] = field(default_factory=dict)
    merge_rules: dict[str, Callable[..., Any]] = field(default_factory=dict)
    mappings: list[Path] = field(default_factory=list)


class _Fault(Exception):
    def __init__(self, message: str, hook: str | None = None):
        super().__init__(message)
        self.message = message
        self.hook = hook


_problems: dict[str, PluginProblem] = {}
_origins: dict[str, PluginOrigin] = {}
_contributions: dict[str, Contribution] = {}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _exc_text(exc: BaseException) -> str:
    """``KeyError: 'x' (at acme/__init__.py:42)``: the exception and the line it came from."""
    text = f"{type(exc).__name__}: {_one_line(exc)}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = Path(last.filename)
        text += f" (at {where.parent.name}/{where.name}:{last.lineno})"
    return text


# ----- where plugins come from ------------------------------------------------------------------


@cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _module_of(plugin: object) -> str | None:
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    return getattr(type(plugin), "__module__", None)


def _distribution(ep: EntryPoint | None, module: str | None) -> tuple[str | None, str | None]:
    """The distribution (name, version) that ships an entry point or a module."""
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.metadata["Name"], dist.version
    top = (module or (ep.value.split(":")[0] if ep is not None else "")).split(".")[0]
    for name in _packages_distributions().get(top, []):
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def _origin_of_entry_point(ep: EntryPoint) -> PluginOrigin:
    module = ep.value.split(":")[0].strip()
    dist, version = _distribution(ep, module)
    return PluginOrigin(ep.name, "entry point", module, ep.value, dist, version)


def origin(name: str) -> PluginOrigin:
    """Where the plugin registered under ``name`` comes from."""
    if name in _origins:
        return _origins[name]
    plugin = pm.get_plugin(name)
    module = _module_of(plugin) if plugin is not None else None
    dist, version = _distribution(None, module)
    kind = "core" if name in _CORE_PLUGINS else "registered"
    return PluginOrigin(name, kind, module, None, dist, version)


# ----- loading ----------------------------------------------------------------------------------


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _required_args(function: Callable[..., Any]) -> list[str]:
    """Arguments a hook function needs (pluggy passes only what the spec names, by keyword)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_hook_names(plugin: object) -> None:
    """Unknown hook names, unmarked hook functions and arguments the hook does not pass."""
    for attr in sorted(dir(plugin)):
        if attr.startswith("__"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:  # a property that fails: not a hook
            continue
        if not callable(value):
            continue
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            if attr in HOOK_NAMES and not isinstance(value, type):
                raise _Fault(f"{attr}() is not marked with @synchub.plugins.hookimpl, so it is never called", attr)
            continue
        hook_name = opts.get("specname") or attr
        if hook_name not in HOOK_NAMES and not opts.get("optionalhook"):
            raise _Fault(f"it implements {hook_name!r}, which is not a synchub hook{_did_you_mean(hook_name)}; "
                         f"hooks are: {', '.join(HOOK_NAMES)}", hook_name)
        if opts.get("hookwrapper") or opts.get("wrapper"):
            raise _Fault(f"{hook_name}() is a hook wrapper; synchub's hooks take plain implementations", hook_name)
        spec = getattr(pm.hook, hook_name).spec
        passed = set(spec.argnames) if spec is not None else set()
        extra = [a for a in _required_args(value) if a not in passed]
        if extra:
            takes = f"it passes only {', '.join(sorted(passed))}" if passed else "it passes no arguments"
            raise _Fault(f"{hook_name}() declares argument(s) {', '.join(extra)}, but {takes}", hook_name)


def _call(plugin: object, hook_name: str) -> Any:
    """Call ``plugin``'s implementation of one hook (if it has one); a failure is the plugin's."""
    caller = getattr(pm.hook, hook_name)
    spec = caller.spec
    kwargs: dict[str, Any] = dict.fromkeys(spec.argnames if spec is not None else ())
    results = []
    for impl in caller.get_hookimpls():
        if impl.plugin is not plugin:
            continue
        try:
            value = impl.function(*[kwargs[a] for a in impl.argnames])
            if isinstance(value, Iterator):  # a generator hook runs its body only now
                value = list(value)
            results.append(value)
        except (Exception, SystemExit) as exc:  # the plugin's bug, not the hub's
            log.debug("hook %s of plugin %s raised", hook_name, impl.plugin_name, exc_info=True)
            raise _Fault(f"{hook_name}() raised {_exc_text(exc)}", hook_name) from exc
    return results


def _describe_value(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _as_list(hook: str, value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, os.PathLike, Mapping, type)) or not isinstance(value, Iterable):
        raise _Fault(f"{hook}() must return a list of {what}, not {_describe_value(value)}"
                     + (" (put it in a list)" if isinstance(value, (type, os.PathLike, str)) else ""), hook)
    return list(value)


def _as_named(hook: str, value: object, what: str) -> dict[str, Callable[..., Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Fault(f"{hook}() must return a dict of {what} by name, not {_describe_value(value)}", hook)
    for key, fn in value.items():
        if not isinstance(key, str) or not key:
            raise _Fault(f"{hook}() returned the name {key!r}; names are non-empty strings", hook)
        if not callable(fn):
            raise _Fault(f"{hook}() returned {key!r}: {_describe_value(fn)}, which is not callable", hook)
    return dict(value)


def _collect(plugin: object) -> Contribution:
    """Call every hook ``plugin`` implements and check what comes back."""
    from pydantic import BaseModel

    from synchub.connector import Connector

    found = Contribution(plugin)
    hook = "register_connectors"
    for result in _call(plugin, hook):
        for cls in _as_list(hook, result, "Connector classes"):
            if isinstance(cls, Connector):
                raise _Fault(f"{hook}() returned an instance of {type(cls).__qualname__}; return the class", hook)
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise _Fault(f"{hook}() returned {_describe_value(cls)}, which is not a subclass of "
                             "synchub.connector.Connector", hook)
            if not isinstance(cls.name, str) or not cls.name:
                raise _Fault(f"connector class {cls.__qualname__} has no name (set the class attribute name)", hook)
            for attr in ("Settings", "StreamSettings"):
                model = getattr(cls, attr, None)
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise _Fault(f"connector {cls.name!r}: {attr} must be a pydantic model class, not "
                                 f"{_describe_value(model)}", hook)
            if cls.name in found.connectors and found.connectors[cls.name] is not cls:
                raise _Fault(f"{hook}() returned two connectors named {cls.name!r}", hook)
            found.connectors[cls.name] = cls
    for result in _call(plugin, "register_transforms"):
        found.transforms.update(_as_named("register_transforms", result, "transform functions"))
    for result in _call(plugin, "register_merge_rules"):
        found.merge_rules.update(_as_named("register_merge_rules", result, "merge rule functions"))
    hook = "register_mappings"
    for result in _call(plugin, hook):
        for item in _as_list(hook, result, "mapping folders or files"):
            if not isinstance(item, (str, os.PathLike)):
                raise _Fault(f"{hook}() returned {_describe_value(item)}; return paths", hook)
            path = Path(item)
            if not path.exists():
                raise _Fault(f"{hook}() returned {str(path)!r}, which does not exist", hook)
            found.mappings.append(path)
    return found


def _clashes(found: Contribution, name: str) -> None:
    """A name ``found`` registers that an accepted plugin registers already."""
    for other_name, other in _accepted(skip=name):
        for kind, mine, theirs in (("connector", found.connectors, other.connectors),
                                   ("transform", found.transforms, other.transforms),
                                   ("merge rule", found.merge_rules, other.merge_rules)):
            for key in mine:
                if key in theirs and theirs[key] is not mine[key]:
                    hook = {"connector": "register_connectors", "transform": "register_transforms",
                            "merge rule": "register_merge_rules"}[kind]
                    raise _Fault(f"the {kind} {key!r} is registered already by plugin {origin(other_name).label()}", hook)


def _admit(plugin: object, name: str) -> None:
    """Register ``plugin`` under ``name`` and check it; on a problem it is unregistered again."""
    _check_hook_names(plugin)
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _Fault(_one_line(exc)) from exc
    except ValueError as exc:  # the name or the object is registered already
        raise _Fault(_one_line(exc)) from exc
    try:
        found = _collect(plugin)
        _clashes(found, name)
    except _Fault:
        pm.unregister(plugin)
        raise
    except Exception as exc:  # anything else the plugin's objects raise while being checked
        pm.unregister(plugin)
        raise _Fault(f"checking it raised {_exc_text(exc)}") from exc
    _contributions[name] = found


def _quarantine(problem: PluginProblem) -> None:
    _problems[problem.origin.name] = problem
    failed_plugins[problem.origin.name] = problem.message
    log.warning("%s", problem.line())


def _entry_point_order(ep: EntryPoint) -> tuple[int, str]:
    dist = getattr(ep, "dist", None)
    core = dist is not None and dist.metadata["Name"] == CORE_DISTRIBUTION
    return (0 if core else 1, ep.name)


def load_plugins() -> pluggy.PluginManager:
    """Register core hook implementations and every installed ``synchub`` entry point (once).

    A plugin with a problem is skipped with one warning (see the module docstring)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for modname in _CORE_PLUGINS:
        mod = importlib.import_module(modname)
        if not pm.is_registered(mod):
            _origins[modname] = PluginOrigin(modname, "core", modname, None, *_distribution(None, modname))
            try:
                _admit(mod, modname)
            except _Fault as fault:  # the hub's own code: a bug, raised
                raise PluginError(PluginProblem(_origins[modname], fault.message, fault.hook).line()) from None
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=_entry_point_order):
        where = _origin_of_entry_point(ep)
        known = _origins.get(ep.name)
        if pm.get_plugin(ep.name) is not None and known is not None and known.entry_point == ep.value:
            continue  # loaded before
        failed_plugins.pop(ep.name, None)
        _problems.pop(ep.name, None)
        if pm.get_plugin(ep.name) is not None or ep.name in _CORE_PLUGINS:
            _quarantine(PluginProblem(where, f"another plugin is registered under the name {ep.name!r} already "
                                             f"({origin(ep.name).label()})"))
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not break the hub
            log.debug("plugin %s failed to import", ep.name, exc_info=True)
            _quarantine(PluginProblem(where, f"import failed: {_exc_text(exc)}"))
            continue
        _origins[ep.name] = where
        try:
            _admit(plugin, ep.name)
        except _Fault as fault:
            _origins.pop(ep.name, None)
            _quarantine(PluginProblem(where, fault.message, fault.hook))
    _clear_caches()
    return pm


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, embedding applications).

    Raises :class:`PluginError` when the plugin has a problem (it is not registered then)."""
    load_plugins()
    name = name or pm.get_canonical_name(plugin)
    try:
        _admit(plugin, name)
    except _Fault as fault:
        where = PluginOrigin(name, "registered", _module_of(plugin), None, *_distribution(None, _module_of(plugin)))
        raise PluginError(PluginProblem(where, fault.message, fault.hook).line()) from None
    finally:
        _clear_caches()


def unregister(plugin: object) -> None:
    name = pm.get_name(plugin)
    pm.unregister(plugin)
    if name is not None:
        _contributions.pop(name, None)
        _origins.pop(name, None)
    _clear_caches()


def _clear_caches() -> None:
    _connectors.cache_clear()
    _transforms.cache_clear()


def _accepted(skip: str | None = None) -> list[tuple[str, Contribution]]:
    """Registered plugins with what they contribute, in registration order. A plugin registered
    on the manager directly (not through :func:`register`) is checked here, the first time."""
    accepted = []
    for name, plugin in list(pm.list_name_plugin()):
        if name == skip:
            continue
        found = _contributions.get(name)
        if found is None or found.plugin is not plugin:
            try:
                found = _collect(plugin)
            except _Fault as fault:
                if name not in _problems:
                    _quarantine(PluginProblem(origin(name), fault.message, fault.hook))
                continue
            _contributions[name] = found
        accepted.append((name, found))
    return accepted


def plugin_problems() -> list[PluginProblem]:
    """Why each skipped plugin was skipped (entry points loaded by :func:`load_plugins`)."""
    load_plugins()
    return [_problems.get(name) or PluginProblem(PluginOrigin(name, "entry point"), why)
            for name, why in sorted(failed_plugins.items())]


# ----- what the plugins offer ---------------------------------------------------------------------


def _merged(attr: str) -> dict[str, Any]:
    load_plugins()
    merged: dict[str, Any] = {}
    for _name, found in _accepted():
        for key, value in getattr(found, attr).items():
            merged.setdefault(key, value)  # first registered wins (checked at registration)
    return merged


@cache
def _connectors() -> dict[str, type[Connector]]:
    return _merged("connectors")


@cache
def _transforms() -> dict[str, Callable[..., Any]]:
    return _merged("transforms")


def get_connectors() -> dict[str, type[Connector]]:
    """All registered connector classes by name."""
    return dict(_connectors())


def get_transforms() -> dict[str, Callable[..., Any]]:
    """All registered transforms by name."""
    return dict(_transforms())


def get_merge_rules() -> dict[str, Callable[..., Any]]:
    """All registered merge rules by name."""
    return _merged("merge_rules")


def get_mapping_paths() -> list[Path]:
    """Folders and files with mappings that plugins ship."""
    load_plugins()
    return [p for _name, found in _accepted() for p in found.mappings]


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).splitlines()[0] if doc and doc.strip() else ""


def model_schema(model: type[Any]) -> dict[str, Any]:
    """A settings model's JSON schema (``{"error": ...}`` when pydantic cannot make one)."""
    try:
        return dict(model.model_json_schema())
    except Exception as exc:  # an exotic field type: say so, do not fail the listing
        return {"error": _exc_text(exc)}


def static_streams(cls: type[Connector]) -> list[str] | None:
    """The stream names a connector class declares (class attribute ``stream_names``), or None
    when its streams are named by each connection's config."""
    names = getattr(cls, "stream_names", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def describe_connector(cls: type[Connector]) -> dict[str, Any]:
    streams = static_streams(cls)
    return {
        "name": cls.name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "description": _first_line(cls.__doc__),
        "streams": streams,
        "streams_note": None if streams is not None else "named in each connection's config (streams:)",
        "settings_schema": model_schema(cls.Settings),
        "stream_settings_schema": model_schema(cls.StreamSettings),
    }


def _mapping_names(path: Path) -> list[str]:
    if path.is_file():
        return [path.stem]
    return sorted({p.stem for ext in ("*.yaml", "*.yml") for p in path.glob(ext)})


def describe_plugins() -> dict[str, Any]:
    """Every loaded plugin with its origin and what it registers, and every skipped plugin: what
    ``synchub plugins`` shows."""
    load_plugins()
    described = []
    for name, found in _accepted():
        where = origin(name)
        described.append({
            "name": name, "kind": where.kind, "module": where.module, "entry_point": where.entry_point,
            "distribution": where.distribution, "version": where.version,
            "connectors": [describe_connector(cls) for _n, cls in sorted(found.connectors.items())],
            "transforms": sorted(found.transforms),
            "merge_rules": sorted(found.merge_rules),
            "mappings": [{"path": str(p), "mappings": _mapping_names(p)} for p in found.mappings],
        })
    return {"plugins": described, "problems": [p.as_dict() for p in plugin_problems()]}


def schema_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level fields of a settings JSON schema, for a table: name, type, required,
    default, description."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = []
    for key, prop in (schema.get("properties") or {}).items():
        rows.append({
            "name": key, "type": _schema_type(prop, defs), "required": key in required,
            "default": prop.get("default"), "description": _one_line(prop.get("description") or ""),
        })
    return rows


def _schema_type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "enum" in prop:
        return " | ".join(repr(v) if not isinstance(v, str) else v for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    for combo in ("anyOf", "oneOf"):
        if combo in prop:
            return " | ".join(dict.fromkeys(_schema_type(p, defs) for p in prop[combo]))
    kind = prop.get("type")
    if prop.get("format") == "password" or prop.get("writeOnly"):
        return "secret"
    if kind == "array":
        return f"list[{_schema_type(prop.get('items') or {}, defs)}]"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"dict[str, {_schema_type(prop['additionalProperties'], defs)}]"
    return str(kind or "any")
