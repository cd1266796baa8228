"""Checks of 03 · Control groups.

Each check runs the real thing: the memory limit you chose is put on a real
cgroup and two programs are run under it; the throttled child is judged from
the kernel's own cpu.stat.
"""
from __future__ import annotations

import random
import sys
import time

from .. import cgroups
from ..errors import LabError
from . import Verdict, missing, verdict

# A program that allocates N MiB of anonymous memory, touching every page
# (an untouched page costs nothing: the kernel charges on first write).
ALLOC = "import sys\nb = bytearray(int(sys.argv[1]) << 20)\nprint('survived')"
SMALL, LARGE = 40, 120   # MiB: the two programs of exercise 1


def _runs_under(limit: str, mib: int) -> tuple[bool, int]:
    """(survived, oom kills) of the ALLOC program for ``mib`` MiB in a cgroup with ``limit``."""
    with cgroups.Cgroup(memory=limit, swap=0 if cgroups.layout() == cgroups.V2 else None) as cg:
        r = cg.run([sys.executable, "-c", ALLOC, str(mib)], timeout=20)
        return r.returncode == 0, cg.stats().oom_kills or 0


def check_memory_limit(limit) -> Verdict:
    """Exercise 1: a limit under which SMALL MiB survives and LARGE MiB is OOM-killed."""
    if (m := missing(limit=limit)):
        return m
    try:
        cgroups.parse_size(limit, "limit")
    except LabError as exc:
        return Verdict(False, str(exc))
    if limit in (None, "max"):
        return Verdict(False, "'max' is no limit at all: both programs would survive")
    try:
        small_ok, _ = _runs_under(limit, SMALL)
        large_ok, kills = _runs_under(limit, LARGE)
    except LabError as exc:  # e.g. a limit too small for any process
        return Verdict(False, str(exc))
    if not small_ok:
        return Verdict(False, f"with {limit} the {SMALL} MiB program was killed too: the limit "
                              "counts everything the process touches, the Python interpreter "
                              "included (about 10 MiB): go higher")
    return verdict(not large_ok and kills >= 1,
                   f"with {limit}: the {SMALL} MiB program survives, the {LARGE} MiB one is "
                   "OOM-killed (SIGKILL, oom_kill counted by the cgroup)",
                   f"with {limit} the {LARGE} MiB program survived as well: the hard limit must be "
                   f"below {LARGE} MiB (and above {SMALL} MiB plus the interpreter)")


# --- exercise 2: which of three children is throttled? -----------------------------

_three: dict = {}

# Each works for a while, then idles (so its PID stays to be looked at) until
# the check or the cleanup stops it; at most a minute either way.
BUSY = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass\ntime.sleep(60)"
SLEEPY = "import time\nfor _ in range(10): time.sleep({s} / 10)\ntime.sleep(60)"


def start_three(seconds: float = 1.0) -> list[int]:
    """Start three children in three lab cgroups, in a random order; return their PIDs.

    One is busy under a 0.1-core quota (throttled), one is busy without a
    quota, one mostly sleeps (no quota either).  They exit after
    ``seconds`` of work, then idle until ``stop_three()`` or the cleanup.
    """
    stop_three()
    kinds = [("throttled", 0.1, BUSY), ("free", None, BUSY), ("idle", None, SLEEPY)]
    random.shuffle(kinds)
    procs = []
    for kind, cpu, code in kinds:
        cg = cgroups.Cgroup(cpu=cpu).create()
        p = cg.spawn([sys.executable, "-c", code.format(s=seconds)])
        procs.append((kind, cg, p))
    _three["procs"] = procs
    time.sleep(seconds + 0.3)
    return [p.pid for _, _, p in procs]


def stop_three() -> None:
    for _, cg, p in _three.pop("procs", []):
        p.stop()
        cg.remove()


def check_throttled(throttled_pid) -> Verdict:
    if (m := missing(throttled_pid=throttled_pid)):
        return m
    procs = _three.get("procs")
    if not procs:
        return Verdict(False, "run the cell that starts the three children first")
    pids = {p.pid: (kind, cg) for kind, cg, p in procs}
    if throttled_pid not in pids:
        return Verdict(False, f"{throttled_pid!r} is not one of the three PIDs {sorted(pids)}")
    kind, cg = pids[throttled_pid]
    return verdict(kind == "throttled",
                   "that child ran busy under a 0.1-core quota, so the kernel throttled it "
                   "(nr_throttled > 0 in its cpu.stat); the busy one without a quota and the "
                   "sleepy one had no quota to hit",
                   "not that one: for each PID, find its cpu cgroup in /proc/PID/cgroup and read "
                   "nr_throttled in that cgroup's cpu.stat (cgroups.places_of(pid) and "
                   "cgroups.read_stats() do both)")
