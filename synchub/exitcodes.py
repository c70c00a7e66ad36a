"""Exit codes of the ``synchub`` command line, in one place (the table is in the README).

Cron, systemd and CI see only the exit code, so every outcome that needs someone's attention
has a code of its own. A ``sync`` that runs several connections exits with the worst outcome
of its runs, in the order of :data:`SEVERITY`.
"""

from __future__ import annotations

from collections.abc import Iterable

OK = 0
#: A run failed, ``check`` failed, a review action was refused, or an unexpected error.
FAILED = 1
#: The command line is wrong: unknown command or option, a missing or malformed argument (click's code).
USAGE = 2
#: The config or a mapping is invalid (``validate`` exits with it when it finds problems).
CONFIG = 3
#: A run, customer or conflict id that is not in the store.
NOT_FOUND = 4
#: The connection is held by another run or worker; nothing was done for it.
BUSY = 5
#: The runs landed, but some records were rejected (``synchub runs show <run>`` lists them).
PARTIAL = 6
#: An API quota is spent: what was read is kept, the next run after the reset goes on.
PAUSED = 7
#: Stopped by Ctrl-C or a stop request before the work was done (128 + SIGINT).
INTERRUPTED = 130

#: The ``code`` of a JSON error object, by exit code.
NAMES = {
    OK: "ok", FAILED: "failed", USAGE: "usage", CONFIG: "config", NOT_FOUND: "not_found",
    BUSY: "busy", PARTIAL: "partial", PAUSED: "paused", INTERRUPTED: "interrupted",
}

#: Worst first: when several runs end differently, the first of these among them decides.
SEVERITY = (FAILED, INTERRUPTED, BUSY, PARTIAL, PAUSED, OK)

#: A run's status (``RunSummary.status``, the ``run`` table) as an exit code.
RUN_STATUS = {
    "succeeded": OK,
    "skipped": OK,  # another worker served this schedule slot; a busy skip is told apart by its error
    "partial": PARTIAL,
    "paused": PAUSED,
    "interrupted": INTERRUPTED,
    "failed": FAILED,
    "abandoned": FAILED,
    "running": FAILED,
}


def for_run(status: str, *, busy: bool = False) -> int:
    """The exit code of one run; ``busy`` for a run skipped because another one held the connection."""
    if busy:
        return BUSY
    return RUN_STATUS.get(status, FAILED)


def worst(codes: Iterable[int]) -> int:
    """The most severe of ``codes`` (:data:`OK` when there are none)."""
    present = set(codes)
    for code in SEVERITY:
        if code in present:
            return code
    return FAILED if present else OK


def name(code: int) -> str:
    """The JSON ``code`` of an exit code (``failed`` for codes without a name of their own)."""
    return NAMES.get(code, NAMES[FAILED])
