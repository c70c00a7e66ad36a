"""Erasing people at a destination (``Stream.erase``), the parts every connector shares.

:func:`erase_each` runs a connector's one-person erasure over the targets: one result per
target, a failure stays with its target, and after a failure that would only repeat for every
other target (a refused credential, a spent quota) the rest fail at once without a request.
:func:`scrub` makes an erasure's detail fit to keep after the person's data is gone: secrets
masked, the person's addresses replaced (a vendor's error may quote one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from synchub.connector import ErasureResult, ErasureTarget
from synchub.redact import redact


def scrub(text: str, target: ErasureTarget) -> str:
    """``text`` without secrets and without the target's e-mail addresses, at most 1,000 characters."""
    text = redact(text)
    for email in target.emails:
        if email and email.strip():
            text = re.sub(re.escape(email.strip()), "<e-mail>", text, flags=re.IGNORECASE)
    return text[:1000]


@dataclass
class Failure:
    """How one erasure failed: what to say, whether the next run may ask again, and whether the
    remaining targets of this call would only fail the same way (they fail at once)."""

    detail: str
    retryable: bool = True
    stop: bool = False


def erase_each(targets: list[ErasureTarget], erase_one: Callable[[ErasureTarget], ErasureResult],
               failure: Callable[[Exception, ErasureTarget], Failure]) -> Iterator[ErasureResult]:
    """One result per target: ``erase_one(target)``, or for an exception what ``failure`` makes
    of it (its detail scrubbed). After a failure that stops, the others fail without a request."""
    stopped: str | None = None
    for target in targets:
        if stopped is not None:
            yield ErasureResult(target, "failed", stopped, retryable=True)
            continue
        try:
            result = erase_one(target)
        except Exception as exc:  # one person's failure must not stop the others
            f = failure(exc, target)
            detail = scrub(f.detail, target)
            if f.stop:
                stopped = detail
            yield ErasureResult(target, "failed", detail, retryable=f.retryable)
            continue
        yield result
