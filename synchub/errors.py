"""The synchub error tree, grouped by what the engine must do about an error.

::

    SynchubError
    ├── ConfigError ............ the config is wrong: nothing runs until it is fixed
    ├── RecordError ............ skip this record: it is rejected and logged, the run goes on
    │   ├── MappingError ....... a field could not be mapped or transformed
    │   └── RecordValidationError  the mapped record is not a valid canonical record
    ├── RetryableError ......... transient: retry the request with backoff
    │   └── RateLimited ........ slow down; ``retry_after`` seconds when the server said so
    ├── FatalRunError .......... stop this run; committed data and cursors stay
    │   ├── AuthError .......... credentials rejected or expired: needs re-authentication
    │   └── QuotaExhausted ..... an account-wide quota is spent: checkpoint, resume at ``resume_at``
    ├── StoreError ............. the store cannot be used (unreachable, schema too new)
    └── NotFoundError .......... an id named on the command line is not in the store

Every message is passed through :func:`synchub.redact.redact` before it is logged or stored,
so a secret that slipped into an exception text never leaves the process in clear text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class SynchubError(Exception):
    """Base class of every error synchub raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a config or mapping file, with where it is."""

    file: str
    line: int | None
    field: str
    message: str
    #: ``error`` (the config cannot be used) or ``warning`` (it can, but something looks wrong).
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        kind = " warning:" if self.severity == "warning" else ""
        return f"{where}:{field}{kind} {self.message}"


class ConfigError(SynchubError):
    """The configuration (or a mapping) is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="", line=None, field="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RecordError(SynchubError):
    """One record cannot be taken in. The engine rejects it and goes on with the rest."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class MappingError(RecordError):
    """A source field could not be read or transformed into its canonical field."""


class RecordValidationError(RecordError):
    """The mapped record does not satisfy the canonical schema."""


class RetryableError(SynchubError):
    """A transient failure (timeout, 5xx, connection reset): the same request may succeed later."""


class RateLimited(RetryableError):
    """The remote side asked us to slow down."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class FatalRunError(SynchubError):
    """The run cannot go on. What was committed stays committed; the cursor stays where it was."""


class AuthError(FatalRunError):
    """Credentials were rejected or have expired: somebody has to re-authenticate."""


class QuotaExhausted(FatalRunError):
    """An account-wide quota is used up. The run stops cleanly and can resume at ``resume_at``."""

    def __init__(self, message: str = "quota exhausted", *, resume_at: datetime | None = None):
        self.resume_at = resume_at
        super().__init__(message)


class StoreError(SynchubError):
    """The store cannot be opened or upgraded."""


class NotFoundError(SynchubError):
    """A run, customer or conflict that a command names is not in the store."""


__all__ = [
    "AuthError",
    "ConfigError",
    "FatalRunError",
    "MappingError",
    "NotFoundError",
    "Problem",
    "QuotaExhausted",
    "RateLimited",
    "RecordError",
    "RecordValidationError",
    "RetryableError",
    "StoreError",
    "SynchubError",
]
