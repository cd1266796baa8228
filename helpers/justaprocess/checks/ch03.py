"""Checks of 03 · Control groups.

Each check runs the real thing: the memory limit you chose is put on a real
cgroup and two programs are run under it; the throttled child is judged from
the kernel's own cpu.stat.
"""
from __future__ import annotations

import contextlib
import os
import random
import selectors
import subprocess
import sys
import time

from .. import cgroups
from ..errors import LabError
from . import Rows, describe, expect_collection, expect_int, exercise, right, run_first, wrong

# A program that allocates N MiB of anonymous memory, touching every page
# (an untouched page costs nothing: the kernel charges on first write).
ALLOC = "import sys\nb = bytearray(int(sys.argv[1]) << 20)\nprint('survived')"
SMALL, LARGE = 40, 120   # MiB: the two programs of exercise 1


def _runs_under(limit: str, mib: int) -> tuple[bool, int]:
    """(survived, oom kills) of the ALLOC program for ``mib`` MiB in a cgroup with ``limit``."""
    # swap=0: on a host with swap the larger one would be swapped out, not killed (v2
    # memory.swap.max, v1 memory.memsw.limit_in_bytes or memory.swappiness)
    with cgroups.Cgroup(memory=limit, swap=0) as cg:
        r = cg.run([sys.executable, "-c", ALLOC, str(mib)], timeout=20)
        return r.returncode == 0, cg.stats().oom_kills or 0


SIZE = "a string like '64M' (a number and K, M or G)"


@exercise(1, title="a limit that separates two programs")
def check_memory_limit(limit):
    """Exercise 1: a limit under which SMALL MiB survives and LARGE MiB is OOM-killed."""
    if isinstance(limit, (int, float)) and not isinstance(limit, bool):
        raise wrong("type", f"`limit` should be {SIZE}; it is {describe(limit)}: a bare number "
                            f"would be {limit} bytes - write the unit, e.g. '{limit}M'")
    if not isinstance(limit, str):
        raise wrong("type", f"`limit` should be {SIZE}; it is {describe(limit)}")
    if limit.strip() == "max":
        return wrong("no-limit", "'max' is no limit at all: both programs would survive")
    try:
        size = cgroups.parse_size(limit, "limit")
    except LabError:
        return wrong("unit", f"{limit!r} is not a size the kernel reads: a number with K, M or G "
                             "(binary units), e.g. '64M'")
    if size < 8 << 20:
        return wrong("too-low",
                     f"{limit} is less than the Python interpreter itself needs: no program could "
                     "even start under it",
                     f"go higher than {SMALL} MiB: the limit counts everything the process "
                     "touches, the interpreter included (about 10 MiB)")
    try:
        small_ok, _ = _runs_under(limit, SMALL)
        large_ok, kills = _runs_under(limit, LARGE) if small_ok else (False, 0)
    except LabError as exc:
        return wrong("too-low", f"with {limit} the programs could not even run ({exc}): go higher")
    if not small_ok:
        return wrong("too-low",
                     f"with {limit} the {SMALL} MiB program was killed too: a limit counts "
                     "everything the process touches",
                     f"with {limit} the {SMALL} MiB program was killed: the Python interpreter "
                     f"needs about 10 MiB more than its {SMALL} MiB: go higher")
    if large_ok or kills < 1:
        return wrong("too-high",
                     f"with {limit} the {LARGE} MiB program survived as well: the hard limit is "
                     "too generous",
                     f"the limit must be below {LARGE} MiB (and above {SMALL} MiB plus the "
                     "interpreter, about 10 MiB)")
    return right(f"with {limit}: the {SMALL} MiB program survives, the {LARGE} MiB one is "
                 "OOM-killed (SIGKILL, oom_kill counted by the cgroup)")


# --- exercise 2: which of three children is throttled? -----------------------------

_three: dict = {}

# Each works for a while, says "done" on its stdout (the event start_three waits
# for), then idles (so its PID stays to be looked at) until the check or the
# cleanup stops it; at most a minute either way.
_DONE = "print('done', flush=True)\ntime.sleep(60)"
BUSY = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {s}: pass\n" + _DONE
SLEEPY = "import time\nfor _ in range(10): time.sleep({s} / 10)\n" + _DONE


def _wait_done(procs, timeout: float) -> None:
    """Until every child has written its line (its work is over: the counters are final)."""
    waiting = {p.popen.stdout.fileno(): p for _, _, p in procs}
    with selectors.DefaultSelector() as sel:
        for fd in waiting:
            sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            ready = sel.select(left) if left > 0 else []
            if not ready:
                raise LabError(f"the three children did not finish their work within {timeout:.0f} s "
                               "(a very busy machine?): run the cell again")
            for key, _ in ready:
                sel.unregister(key.fd)
                waiting.pop(key.fd).popen.stdout.readline()


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
        p = cg.spawn([sys.executable, "-c", code.format(s=seconds)], stdout=subprocess.PIPE)
        procs.append((kind, cg, p))
    _three["procs"] = procs
    _wait_done(procs, seconds + 30)
    return [p.pid for _, _, p in procs]


def stop_three() -> None:
    for _, cg, p in _three.pop("procs", []):
        p.stop()
        p.popen.stdout.close()
        cg.remove()


@exercise(2, title="which one is throttled?")
def check_throttled(throttled_pid):
    procs = _three.get("procs")
    if not procs:
        raise run_first("the cell that starts the three children (ch03.start_three())")
    pid = expect_int(throttled_pid, "throttled_pid", "an int (one of the three PIDs)")
    pids = {p.pid: (kind, cg) for kind, cg, p in procs}
    if pid not in pids:
        return wrong("not-three", f"{pid} is not one of the three PIDs {sorted(pids)}: the cell "
                                  "above printed them")
    kind, cg = pids[pid]
    try:  # what the kernel counted, for the hint
        counted = f"nr_throttled {cgroups.read_stats(cgroups.places_of(pid)).cpu_throttled or 0}"
    except (LabError, OSError):
        counted = "nr_throttled 0"
    if kind == "free":
        return wrong("busy-free",
                     "that one was busy too, but nothing held it back: being busy is not being "
                     "throttled. What does the kernel count when a quota stops a cgroup?",
                     f"its cgroup's cpu.stat says {counted} (no quota): read nr_throttled of "
                     "each child's cgroup (cgroups.places_of(pid), cgroups.read_stats())")
    if kind == "idle":
        return wrong("idle",
                     "that one mostly slept: it used little CPU. Which one did the kernel stop "
                     "because of a quota?",
                     f"its cgroup's cpu.stat says {counted}: read nr_throttled of each "
                     "child's cgroup (cgroups.places_of(pid), cgroups.read_stats())")
    return right("that child ran busy under a 0.1-core quota, so the kernel throttled it "
                 "(nr_throttled > 0 in its cpu.stat); the busy one without a quota and the "
                 "sleepy one had no quota to hit")


# Exercise 3: the probes, each an open(2) of a device node in a cgroup with the learner's rules.
PROBES = (("write /dev/null", "echo hi > /dev/null"),
          ("read /dev/zero", "head -c 1 /dev/zero > /dev/null"),
          ("write /dev/zero", "echo x > /dev/zero"),
          ("read /dev/full", "head -c 1 /dev/full > /dev/null"))


@exercise(3, title="a read-only /dev/zero")
def check_device_rules(rules):
    """Exercise 3: /dev/null read and write, /dev/zero read only, every other device refused."""
    items = expect_collection(rules, "rules", "a list of rule strings like 'c 1:3 rwm'", str,
                              "a rule string like 'c 1:3 rwm'")
    try:
        cg = cgroups.Cgroup(devices=items)
    except LabError as exc:
        return wrong("syntax", f"the kernel would not read one of the rules: {exc}",
                     "each rule is TYPE MAJ:MIN ACCESS - 'c' for a character device, the "
                     "numbers from `ls -l /dev/zero`, then some of r, w, m")
    with cg:
        got = {label: cg.run(["sh", "-c", cmd]).returncode == 0 for label, cmd in PROBES}
    if not got["write /dev/null"]:
        return wrong("null", "a process in your cgroup could not write /dev/null (c 1:3)",
                     "allow /dev/null: 'c 1:3 rwm' (ls -l /dev/null shows 1, 3)")
    if not got["read /dev/zero"]:
        return wrong("zero-read", "a process could not read /dev/zero: it is not on your list",
                     "/dev/zero is c 1:5 (ls -l /dev/zero): which of r, w, m does reading need?")
    if got["write /dev/zero"] and got["read /dev/full"]:
        return wrong("too-wide", "a process could write /dev/zero and read /dev/full: your list "
                     "lets (nearly) every device through",
                     "'a' is every device, 'c *:* rwm' every character device: list the two "
                     "devices one by one, each with the letters it needs")
    if got["write /dev/zero"]:
        return wrong("zero-write", "a process could write /dev/zero too: the list gives it more "
                     "than reading",
                     "the access letters are separate permissions: 'r' alone allows only reading")
    if got["read /dev/full"]:
        return wrong("too-wide", "a process could read /dev/full (c 1:7) as well: a rule of "
                     "yours covers more devices than the two",
                     "'*' or 'a' match every number or type: name 1:3 and 1:5 exactly")
    return right("the kernel checked your list at every open(2) (v1: devices.list, v2: the "
                 "eBPF program): /dev/null read and written, /dev/zero read, its write and "
                 "/dev/full refused with EPERM")


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

@contextlib.contextmanager
def _with_three():
    start_three(0.5)
    try:
        yield {"by_kind": {kind: p.pid for kind, _, p in _three["procs"]}}
    finally:
        stop_three()


TABLE = {
    1: Rows(right=lambda c: dict(limit="80M"),
            wrong={
                "type": lambda c: dict(limit=80),
                "unit": lambda c: dict(limit="80 megabytes"),
                "no-limit": lambda c: dict(limit="max"),
                "too-low": lambda c: dict(limit="40M"),
                "too-high": lambda c: dict(limit="200M"),
            }),
    2: Rows(setup=_with_three,
            right=lambda c: dict(throttled_pid=c["by_kind"]["throttled"]),
            wrong={
                "type": lambda c: dict(throttled_pid=str(c["by_kind"]["throttled"])),
                "not-three": lambda c: dict(throttled_pid=os.getpid()),
                "busy-free": lambda c: dict(throttled_pid=c["by_kind"]["free"]),
                "idle": lambda c: dict(throttled_pid=c["by_kind"]["idle"]),
            }),
    3: Rows(right=lambda c: dict(rules=["c 1:3 rwm", "c 1:5 r"]),
            wrong={
                "type": lambda c: dict(rules="c 1:3 rwm"),
                "type:int": lambda c: dict(rules=[13]),
                "syntax": lambda c: dict(rules=["c 1:3 all"]),
                "null": lambda c: dict(rules=["c 1:5 r"]),
                "zero-read": lambda c: dict(rules=["c 1:3 rwm"]),
                "zero-write": lambda c: dict(rules=["c 1:3 rwm", "c 1:5 rw"]),
                "too-wide:all": lambda c: dict(rules=["a"]),
                "too-wide": lambda c: dict(rules=["c 1:3 rwm", "c 1:* r"]),
            }),
}
