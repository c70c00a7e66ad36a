"""``synchub new-connector``: a connector package written from the template in
``synchub/templates/connector``.

The template is a folder of ``*.tmpl`` files. ``{{name}}`` in a file is replaced by a value
of :class:`Names`; ``__module__`` and ``__connector__`` in a path are replaced by the module and
connector names. A placeholder the template uses but :class:`Names` lacks is an error, so the
template and this module cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from synchub.errors import ConfigError

TEMPLATE = Path(__file__).parent / "templates" / "connector"
SUFFIX = ".tmpl"
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Names:
    """Every name the template derives from the connector's name (``acme-crm``)."""

    connector: str  # acme_crm: the connector's name in configs
    module: str  # synchub_acme_crm
    distribution: str  # synchub-acme-crm
    class_name: str  # AcmeCrm (AcmeCrmConnector, AcmeCrmSettings ...)
    title: str  # Acme Crm
    connector_host: str  # acme-crm: a host name label for the fake API
    env_var: str  # ACME_CRM_TOKEN
    synchub_version: str

    @classmethod
    def of(cls, name: str) -> Names:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"connector name {name!r}: use lower-case letters, digits, '_' or '-', starting "
                              "with a letter (e.g. acme_crm)")
        parts = re.split(r"[_-]", name)
        connector = "_".join(parts)
        try:
            current = version("synchub")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            current = "0.1.0"
        return cls(
            connector=connector,
            module=f"synchub_{connector}",
            distribution=f"synchub-{'-'.join(parts)}",
            class_name="".join(p.capitalize() for p in parts),
            title=" ".join(p.capitalize() for p in parts),
            connector_host="-".join(parts),
            env_var=f"{connector.upper()}_TOKEN",
            synchub_version=current,
        )


@dataclass
class Created:
    root: Path
    distribution: str
    module: str
    connector: str
    files: list[Path]


def render(text: str, values: dict[str, str], where: str = "") -> str:
    """``text`` with every ``{{name}}`` replaced; an unknown name is an error."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template {where}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(value, text)


def template_files(template: Path = TEMPLATE) -> list[Path]:
    return sorted(p for p in template.rglob(f"*{SUFFIX}") if p.is_file())


def new_connector(name: str, directory: Path | str = ".", *, template: Path = TEMPLATE) -> Created:
    """Write the package for connector ``name`` into ``directory/<distribution>``; refuse to
    write into a folder that exists and is not empty."""
    names = Names.of(name)
    root = Path(directory) / names.distribution
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not empty; choose another --dir or name")
    values = asdict(names)
    rendered: list[tuple[Path, str]] = []
    for source in template_files(template):
        relative = source.relative_to(template).as_posix()[: -len(SUFFIX)]
        relative = relative.replace("__module__", names.module).replace("__connector__", names.connector)
        rendered.append((root / relative, render(source.read_text(encoding="utf-8"), values, relative)))
    for target, text in rendered:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return Created(root, names.distribution, names.module, names.connector, [t for t, _ in rendered])
