"""Sizes in human units, as the kernel reads them (memparse(): K = 1024).

Used by the cgroup limits and by the lab's loop devices; below every module
that takes a size from a learner.
"""
from __future__ import annotations

import re

from .errors import BadInput

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.I)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_size(value: int | str | None, what: str = "size") -> int | None:
    """Bytes from ``64M``, ``1.5G``, ``512k``, ``4096`` or ``"max"`` (None = no limit).

    Suffixes are binary, as the kernel's memparse() reads them in the cgroup
    files (K = 1024); ``MiB``/``MB`` are accepted as the same thing.
    """
    if value is None or value == "max":
        return None
    if isinstance(value, bool):
        raise BadInput(f"{what}: {value!r} is not a size: use bytes or a string like '64M'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise BadInput(f"{what}: {value!r} is negative: use a size like '64M'")
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise BadInput(f"{what}: {value!r} is not a size: use a number with K, M, G or T "
                       "(binary units, e.g. '64M') or 'max'")
    return int(float(m.group(1)) * (1 << _SHIFT[m.group(2).lower()]))


def human(n: int | float | None) -> str:
    """``64.0M`` style, binary units; ``max`` for None."""
    if n is None:
        return "max"
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)
