"""Keep secrets out of logs, error messages and the store.

Config values that are secrets (fields typed ``SecretStr`` in a connector's settings, and any
``${ENV}`` value whose variable name looks like a credential) are registered here when the
config is loaded. :func:`redact` replaces every registered secret in a text; the logging filter
applies it to every log record, and the engine applies it to every error it stores or prints.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.I)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def looks_secret(name: str) -> bool:
    """True when an environment variable or field name suggests a credential."""
    return bool(_SECRET_NAME.search(name))


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that it is masked wherever it would be printed."""
    global _pattern
    if not value or len(value) < 4:  # too short to mask without mangling ordinary text
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # Longest first, so a secret that contains another is masked whole.
        alternatives = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def redact(text: object) -> str:
    """Return ``str(text)`` with every registered secret replaced by ``***``."""
    s = str(text)
    pattern = _pattern
    if pattern is None:
        return s
    return pattern.sub(MASK, s)


#: A quoted literal in a message, and what a quoted name (a field, an allowed value) looks like.
_QUOTED = re.compile(r"""(["'])(.*?)\1""")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def mask_quoted(text: str) -> str:
    """``text`` with each quoted literal that is not a plain name replaced by ``…``: the value a
    check or a database driver quoted (``invalid input syntax: "Müller"``) can be a customer's."""
    return _QUOTED.sub(lambda m: m.group(0) if _IDENTIFIER.fullmatch(m.group(2)) else f"{m.group(1)}…{m.group(1)}", text)


_installed = False


def install_log_redaction() -> None:
    """Mask secrets in every log record created from now on, whatever handler emits it.

    Done with a log-record factory rather than a handler filter, so handlers added later
    (pytest's, a user's file handler) are covered too. Exception text is formatted and masked
    at creation; formatters reuse ``exc_text`` when it is set.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is not None:
            record.msg = redact(record.getMessage())
            record.args = ()
            if record.exc_info and record.exc_info[0] is not None:
                import traceback

                record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _reset_for_tests() -> None:
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
