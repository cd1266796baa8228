"""Reading a cgroup: limits and usage in one call, whichever version's files say it.

v1 and v2 name the same facts differently (docs/kernel-notes.md, "cgroups");
:class:`Stats` is the fact, :func:`read_stats` finds it in the files there are.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

from ..errors import NotSupported

from . import files
from .files import _int, _keyed, _v1_limit
from .tree import CORE, Place, pids_in


# --- reading a cgroup: limits and usage in one call -------------------------------

@dataclass(frozen=True)
class Stats:
    """One reading of a cgroup's files (None: that controller is not there).

    v1 and v2 name the same facts differently (docs/kernel-notes.md, "cgroups", v1 → v2 names);
    this is the fact, whichever file said it.
    """
    time: float                        # time.monotonic() of the reading
    memory_current: int | None = None  # bytes: v2 memory.current, v1 memory.usage_in_bytes
    memory_peak: int | None = None     # v2 memory.peak, v1 memory.max_usage_in_bytes
    memory_max: int | None = None      # hard limit (None = none): memory.max / limit_in_bytes
    memory_high: int | None = None     # v2 memory.high, the throttle (v1 has none: None)
    memory_low: int | None = None      # soft limit / reservation: memory.low / soft_limit_in_bytes
    memory_min: int | None = None      # v2 memory.min, hard protection (v1 has none: None)
    memory_high_events: int | None = None  # v2: times usage went over memory.high (v1: None)
    memory_max_events: int | None = None   # times the hard limit was hit (v1: memory.failcnt)
    oom_kills: int | None = None       # processes the OOM killer killed in the cgroup
    oom_group_kills: int | None = None  # v2: OOM kills that took the whole cgroup (memory.oom.group)
    cpu_usage_usec: int | None = None  # CPU time used (v2 cpu.stat usage_usec, v1 cpuacct.usage/1000)
    cpu_quota: float | None = None     # limit in cores (None = none): cpu.max / cfs_quota_us
    cpu_periods: int | None = None     # enforcement periods elapsed (cpu.stat nr_periods)
    cpu_throttled: int | None = None   # periods in which the cgroup was throttled (nr_throttled)
    cpu_throttled_usec: int | None = None  # time spent throttled (throttled_usec / throttled_time)
    pids_current: int | None = None
    pids_max: int | None = None
    pids_max_events: int | None = None  # forks refused by pids.max (pids.events "max")
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    populated: bool | None = None      # a process in it or below (cgroup.events)
    frozen: bool | None = None

    def asdict(self) -> dict:
        return asdict(self)


def _io_bytes(place: Place) -> tuple[int | None, int | None]:
    if place.hierarchy.version == 2:
        text = files._read(os.path.join(place.path, "io.stat"))
        if text is None:
            return None, None
        r = w = 0
        for line in text.splitlines():  # "7:0 rbytes=1 wbytes=2 rios=..."
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            r += int(kv.get("rbytes", 0))
            w += int(kv.get("wbytes", 0))
        return r, w
    # v1: the throttle layer counts every bio, whatever the I/O scheduler
    # (cgroup-v1/blkio-controller.rst); "_recursive" includes children.
    text = files._read(os.path.join(place.path, "blkio.throttle.io_service_bytes_recursive"))
    if text is None:
        text = files._read(os.path.join(place.path, "blkio.throttle.io_service_bytes"))
    if text is None:
        return None, None
    r = w = 0
    for line in text.splitlines():  # "7:0 Read 4096"
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            r += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            w += int(parts[2])
    return r, w


def read_stats(places: dict[str, Place]) -> Stats:
    """Read limits and usage of one cgroup (a dict from :func:`places_of` or ``Cgroup.places``)."""
    f: dict = {"time": time.monotonic()}
    j = os.path.join
    mem = places.get("memory")
    if mem and mem.hierarchy.version == 2:
        f["memory_current"] = _int(files._read(j(mem.path, "memory.current")))
        f["memory_peak"] = _int(files._read(j(mem.path, "memory.peak")))
        f["memory_max"] = _int(files._read(j(mem.path, "memory.max")))
        f["memory_high"] = _int(files._read(j(mem.path, "memory.high")))
        f["memory_low"] = _int(files._read(j(mem.path, "memory.low"))) or None   # 0: none
        f["memory_min"] = _int(files._read(j(mem.path, "memory.min"))) or None
        ev = _keyed(files._read(j(mem.path, "memory.events")))
        f["memory_high_events"] = ev.get("high")
        f["memory_max_events"] = ev.get("max")
        f["oom_kills"] = ev.get("oom_kill")
        f["oom_group_kills"] = ev.get("oom_group_kill")   # Linux 5.17+
    elif mem:
        f["memory_current"] = _int(files._read(j(mem.path, "memory.usage_in_bytes")))
        f["memory_peak"] = _int(files._read(j(mem.path, "memory.max_usage_in_bytes")))
        f["memory_max"] = _v1_limit(files._read(j(mem.path, "memory.limit_in_bytes")))
        f["memory_low"] = _v1_limit(files._read(j(mem.path, "memory.soft_limit_in_bytes")))
        f["memory_max_events"] = _int(files._read(j(mem.path, "memory.failcnt")))
        f["oom_kills"] = _keyed(files._read(j(mem.path, "memory.oom_control"))).get("oom_kill")
    cpu = places.get("cpu")
    if cpu and cpu.hierarchy.version == 2:
        st = _keyed(files._read(j(cpu.path, "cpu.stat")))
        f["cpu_usage_usec"] = st.get("usage_usec")
        f["cpu_periods"] = st.get("nr_periods")
        f["cpu_throttled"] = st.get("nr_throttled")
        f["cpu_throttled_usec"] = st.get("throttled_usec")
        mx = (files._read(j(cpu.path, "cpu.max")) or "max").split()
        f["cpu_quota"] = None if mx[0] == "max" else int(mx[0]) / int(mx[1])
    else:
        if cpu:
            st = _keyed(files._read(j(cpu.path, "cpu.stat")))
            f["cpu_periods"] = st.get("nr_periods")
            f["cpu_throttled"] = st.get("nr_throttled")
            if "throttled_time" in st:  # nanoseconds in v1
                f["cpu_throttled_usec"] = st["throttled_time"] // 1000
            q = _int(files._read(j(cpu.path, "cpu.cfs_quota_us")))
            p = _int(files._read(j(cpu.path, "cpu.cfs_period_us")))
            f["cpu_quota"] = q / p if q is not None and q > 0 and p else None
        acct = places.get("cpuacct")
        if acct:
            ns = _int(files._read(j(acct.path, "cpuacct.usage")))
            f["cpu_usage_usec"] = None if ns is None else ns // 1000
        elif CORE in places:  # the hybrid's unified cgroup has cpu.stat usage_usec
            f["cpu_usage_usec"] = _keyed(files._read(j(places[CORE].path, "cpu.stat"))).get("usage_usec")
    pids = places.get("pids")
    if pids:
        f["pids_current"] = _int(files._read(j(pids.path, "pids.current")))
        f["pids_max"] = _int(files._read(j(pids.path, "pids.max")))
        f["pids_max_events"] = _keyed(files._read(j(pids.path, "pids.events"))).get("max")
    io = places.get("io") or places.get("blkio")
    if io:
        f["io_read_bytes"], f["io_write_bytes"] = _io_bytes(io)
    core = places.get(CORE)
    ev = _keyed(files._read(j(core.path, "cgroup.events"))) if core else {}
    if "populated" in ev:
        f["populated"] = bool(ev["populated"])
        f["frozen"] = bool(ev.get("frozen", 0))
    else:
        f["populated"] = any(_populated_v1(p.path) for p in places.values())
        fr = places.get("freezer")
        state = files._read(j(fr.path, "freezer.state")) if fr else None
        f["frozen"] = None if state is None else state.strip() == "FROZEN"
    return Stats(**f)


# --- pressure stall information (PSI) ---------------------------------------------------

class Pressure(NamedTuple):
    """One line of a PSI file: the share of wall time in which some (or all) of the tasks
    were stalled waiting for the resource, averaged over 10, 60 and 300 s (percent), and
    the total stall time in microseconds (Documentation/accounting/psi.rst)."""
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


PSI_RESOURCES = ("cpu", "memory", "io")


def parse_pressure(text: str) -> dict[str, Pressure]:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` (and ``full ...``) → {kind: Pressure}."""
    out = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        kv = dict(f.split("=", 1) for f in fields)
        out[kind] = Pressure(float(kv["avg10"]), float(kv["avg60"]), float(kv["avg300"]), int(kv["total"]))
    return out


def read_pressure(path: str = "/proc/pressure") -> dict[str, dict[str, Pressure]]:
    """PSI of a cgroup v2 directory (``cpu.pressure``...) or of the machine (``/proc/pressure/cpu``...).

    Raises :class:`NotSupported` when the kernel has no PSI (CONFIG_PSI, or ``psi=0`` on its
    command line: the files are absent or refuse reading with EOPNOTSUPP)."""
    out = {}
    for res in PSI_RESOURCES:
        f = os.path.join(path, res if os.path.basename(path) == "pressure" else f"{res}.pressure")
        text = files._read(f)   # None when absent, or EOPNOTSUPP (psi=0)
        if text is not None:
            out[res] = parse_pressure(text)
    if not out:
        raise NotSupported(f"no pressure files in {path}: this kernel has no PSI (built without "
                           "CONFIG_PSI, or booted with psi=0; Documentation/accounting/psi.rst)")
    return out


def _populated_v1(path: str) -> bool:
    """v1 has no cgroup.events: any process in the cgroup or below."""
    return any(pids_in(d) for d, _, _ in os.walk(path))
