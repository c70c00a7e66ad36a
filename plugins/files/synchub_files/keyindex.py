"""Which line of a file first held each primary key, in little memory.

A file of millions of rows must not cost its rows' keys in memory. :class:`FirstLines` keeps a
64-bit fingerprint (Python's own string hash, SipHash; BLAKE2b where that has fewer bits) and
a 32-bit line number per key in two flat arrays, an open
addressing hash table at most three quarters full: 16 to 32 bytes a key (48 for a moment while
the table doubles); a Python ``dict`` of the keys would take 100 and more. Two different keys share a fingerprint
with a probability of about n²/2⁶⁵: 3 in a million for ten million keys.
"""

from __future__ import annotations

import hashlib
import sys
from array import array

_EMPTY = 0
_MAX_LINE = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
#: ``hash()`` of a str is a keyed 64-bit SipHash on 64-bit builds: fast, and only ever
#: compared within one process.
_NATIVE = sys.hash_info.width >= 64


def _fingerprint(key: str) -> int:
    if _NATIVE:
        return hash(key) & _MASK64 or 1  # 0 marks an empty slot
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class FirstLines:
    """``first(key, line)``: the line an earlier call gave for ``key`` (0 if that line number
    was beyond 2³²), else None and ``line`` is remembered for ``key``."""

    def __init__(self, capacity: int = 1024) -> None:
        size = 1024
        while size < capacity * 4 // 3:
            size *= 2
        self._fingerprints = array("Q", [_EMPTY]) * size
        self._lines = array("I", [0]) * size
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first(self, key: str, line: int) -> int | None:
        fp = _fingerprint(key)
        fps = self._fingerprints
        mask = self._mask
        i = fp & mask
        while True:
            found = fps[i]
            if found == _EMPTY:
                break
            if found == fp:
                return self._lines[i]
            i = (i + 1) & mask
        fps[i] = fp
        self._lines[i] = line if 0 < line <= _MAX_LINE else 0
        self._count += 1
        if self._count * 4 > len(fps) * 3:
            self._grow()
        return None

    def _grow(self) -> None:
        old_fps, old_lines = self._fingerprints, self._lines
        size = len(old_fps) * 2
        fps = array("Q", [_EMPTY]) * size
        lines = array("I", [0]) * size
        mask = size - 1
        for fp, line in zip(old_fps, old_lines, strict=True):
            if fp == _EMPTY:
                continue
            i = fp & mask
            while fps[i] != _EMPTY:
                i = (i + 1) & mask
            fps[i] = fp
            lines[i] = line
        self._fingerprints, self._lines, self._mask = fps, lines, mask
