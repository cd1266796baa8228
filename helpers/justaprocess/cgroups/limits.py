"""Limits in human units, checked before anything is made: sizes, CPU, counts, io, devices.

Everything a learner passes to :class:`~justaprocess.cgroups.Cgroup` is
validated here into kernel units (bytes, cores, counts, bytes/s) and
:class:`Limits`; bad input raises :class:`BadInput` saying what to write.
"""
from __future__ import annotations

import os
import re
import stat as _stat
from dataclasses import dataclass
from typing import NamedTuple

from .._units import human, parse_size
from ..errors import BadInput


# --- units ---------------------------------------------------------------------

def parse_cpu(value: float | int | str | None) -> float | None:
    """CPU as a fraction of cores: 0.2 = a fifth of one CPU, 1.5 = one and a half."""
    if value is None or value == "max":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        cpu = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"cpu: {value!r} is not a number of cores: use e.g. 0.2 for 20% of one CPU") from None
    ncpu = os.cpu_count() or 1
    if not 0.01 <= cpu <= ncpu:
        raise BadInput(f"cpu: {value!r} is out of range: use a fraction of cores between 0.01 "
                       f"and {ncpu} (this machine's CPUs), e.g. 0.2")
    return cpu


def parse_count(value: int | str | None, what: str = "pids") -> int | None:
    if value is None or value == "max":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{what}: {value!r} is not a count: use a whole number >= 0, or 'max'")
    return value


def device_number(dev: str) -> str:
    """``MAJ:MIN`` of a block device given as a path (``/dev/loop3``) or as ``MAJ:MIN``."""
    if re.fullmatch(r"\d+:\d+", dev):
        return dev
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        raise BadInput(f"io: no device {dev!r}: give a block device path or MAJ:MIN") from None
    if not _stat.S_ISBLK(st.st_mode):
        raise BadInput(f"io: {dev!r} is not a block device (io limits apply to block devices)")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


_DEVRULE = re.compile(r"^[abc] (\d+|\*):(\d+|\*) [rwm]{1,3}$")


def _check_device_rule(rule: str) -> str:
    if rule == "a" or _DEVRULE.match(rule):
        return rule
    raise BadInput(f"devices: {rule!r} is not a rule: 'TYPE MAJ:MIN ACCESS' as in "
                   "'c 1:3 rwm' (type a/b/c, '*' for any number, access r w m) - "
                   "see Documentation/admin-guide/cgroup-v1/devices.rst")


class IoLimit(NamedTuple):
    """Bandwidth limit on one block device, bytes per second (None: no limit)."""
    device: str          # MAJ:MIN
    rbps: int | None = None
    wbps: int | None = None


def parse_io(io: dict | None) -> tuple[IoLimit, ...]:
    """``{"/dev/loop3": {"read": "1M", "write": "2M"}}`` → IoLimits (rbps/wbps accepted too)."""
    if not io:
        return ()
    out = []
    for dev, rates in io.items():
        if not isinstance(rates, dict) or not rates:
            raise BadInput(f"io: give rates for {dev!r} as {{'read': '1M', 'write': '1M'}}")
        unknown = set(rates) - {"read", "write", "rbps", "wbps"}
        if unknown:
            raise BadInput(f"io: unknown key(s) {sorted(unknown)} for {dev!r}: use 'read' and 'write'")
        r = parse_size(rates.get("read", rates.get("rbps")), f"io read rate of {dev}")
        w = parse_size(rates.get("write", rates.get("wbps")), f"io write rate of {dev}")
        for v in (r, w):
            if v is not None and v == 0:
                raise BadInput(f"io: a rate of 0 for {dev!r} would block it forever: use at least '4K'")
        out.append(IoLimit(device_number(dev), r, w))
    return tuple(out)


# --- a lab cgroup -------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Validated limits, in kernel units (bytes, cores, counts, bytes/s)."""
    memory_max: int | None = None    # hard limit: v2 memory.max, v1 memory.limit_in_bytes (OOM kill)
    memory_high: int | None = None   # v2 only: memory.high, a throttle always enforced (no v1 file)
    memory_low: int | None = None    # soft limit / reservation: v2 memory.low, v1 soft_limit_in_bytes
    memory_min: int | None = None    # v2 only: memory.min, a hard protection from reclaim
    swap_max: int | None = None
    oom_group: bool | None = None    # v2 only: memory.oom.group, the OOM killer takes the whole cgroup
    cpu: float | None = None
    cpu_period_us: int = 100_000
    pids_max: int | None = None
    io: tuple[IoLimit, ...] = ()
    devices: tuple[str, ...] | None = None   # v1 allow-list; None: inherit the parent's

    @classmethod
    def parse(cls, *, memory=None, memory_high=None, memory_low=None, memory_min=None, swap=None,
              oom_group=None, cpu=None, pids=None, io=None, devices=None,
              cpu_period_us: int = 100_000) -> "Limits":
        """Check everything before anything is created: bad input never half-creates."""
        if devices is not None:
            if isinstance(devices, str):
                devices = [devices]
            devices = tuple(_check_device_rule(r) for r in devices)
        if not isinstance(cpu_period_us, int) or not 1000 <= cpu_period_us <= 1_000_000:
            raise BadInput(f"cpu_period_us: {cpu_period_us!r}: use 1000..1000000 (cgroup-v2.rst cpu.max)")
        if oom_group is not None and not isinstance(oom_group, bool):
            raise BadInput(f"oom_group: {oom_group!r}: True (an OOM kill takes every process of the "
                           "cgroup, cgroup-v2.rst 'memory.oom.group') or False")
        lim = cls(memory_max=parse_size(memory, "memory"),
                  memory_high=parse_size(memory_high, "memory_high"),
                  memory_low=parse_size(memory_low, "memory_low"),
                  memory_min=parse_size(memory_min, "memory_min"),
                  swap_max=parse_size(swap, "swap"), oom_group=oom_group,
                  cpu=parse_cpu(cpu), cpu_period_us=cpu_period_us,
                  pids_max=parse_count(pids, "pids"),
                  io=parse_io(io), devices=devices)
        for what, v in (("memory", lim.memory_max), ("memory_high", lim.memory_high),
                        ("memory_low", lim.memory_low), ("memory_min", lim.memory_min)):
            if v is not None and v < 1 << 20:
                raise BadInput(f"{what}: {human(v)} is too small for any process: use at least '1M'")
        return lim

    def controllers(self) -> set[str]:
        """The controllers these limits need (v1 names; 'io' for either io/blkio)."""
        need = set()
        if any(v is not None for v in (self.memory_max, self.memory_high, self.memory_low,
                                       self.memory_min, self.swap_max, self.oom_group)):
            need.add("memory")
        if self.cpu is not None:
            need.add("cpu")
        if self.pids_max is not None:
            need.add("pids")
        if self.io:
            need.add("io")
        if self.devices is not None:
            need.add("devices")
        return need


def _swap_active(swaps: str = "/proc/swaps") -> bool:
    """Is any swap area in use (proc(5) /proc/swaps: a header line, then one per area)?"""
    try:
        with open(swaps) as f:
            return len(f.read().strip().splitlines()) > 1
    except OSError:
        return False


def _quota_usec(cpu: float, period: int) -> int:
    return max(1000, round(cpu * period))  # the kernel's minimum quota is 1 ms
