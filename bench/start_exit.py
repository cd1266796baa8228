#!/usr/bin/env python3
"""Start -> exit of /bin/true in the same busybox rootfs, N times each, three ways.

  hand-built   justaprocess.container through its in-process API, with what
               runc's default does: mnt, uts, ipc, pid, net namespaces, a cgroup
               with a memory limit, pivot_root, dropped capabilities
  runc         `runc run` of a bundle the lab writes (justaprocess.runtimes)
  unshare      `unshare -fmuipn -R ROOTFS /bin/true` (namespaces + chroot only:
               the floor, no cgroup, no pivot_root, no capability drop)

Prints each median, the ratios to runc, where the hand-built engine's time goes
(its phases, measured in the same rounds: wall time, and CPU time and page faults
of the caller and of PID 1 from getrusage(2)), and the hand-built/runc ratio as
the last line (README.md).  Run as root:  .venv/bin/python bench/start_exit.py [-n 30]
Not a timed test.  Everything it makes is registered with the lab and removed.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers"))

from justaprocess import lab, rootfs, runtimes  # noqa: E402


def interleaved(engines: dict, n: int) -> dict[str, list[float]]:
    """Time each engine's ``once()`` n times, round-robin: every round sees the same load.

    (Timed one engine after the other, a busy neighbour on a shared machine made
    runc's median swing from 27 to 125 ms between two runs of this script.)
    """
    for once in engines.values():
        once()  # warm-up: page cache, Python imports, runc's first exec
    SPLIT.clear()
    out: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(n):
        for k, once in engines.items():
            c = _cpu()
            t = time.perf_counter()
            once()
            out[k].append(time.perf_counter() - t)
            CPU.setdefault(k, []).append(_cpu() - c)
    return out


CPU: dict[str, list[float]] = {}


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (getrusage(2)): under load,
    wall time follows the CPU an engine needs, since every runnable task waits its turn."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def runc_once(root: str, cleanup: list):
    c = runtimes.OCIContainer(root, ["/bin/true"], memory="64M", seccomp=False)
    c.prepare()  # writes the bundle, registers the folder and the cgroups
    cleanup.append(c.remove)
    count = iter(range(10**6))

    def once():
        name = f"{c.name}-{next(count)}"
        r = subprocess.run(c._cmd("run", "--bundle", c.bundle, name),
                           stdin=subprocess.DEVNULL, capture_output=True)
        if r.returncode != 0:
            raise SystemExit(f"runc run failed: {r.stderr.decode().strip()}")
    return once


def unshare_once(root: str):
    unshare = shutil.which("unshare")

    def once():
        r = subprocess.run([unshare, "-fmuipn", "-R", root, "/bin/true"],
                           stdin=subprocess.DEVNULL, capture_output=True)
        if r.returncode != 0:
            raise SystemExit(f"unshare failed: {r.stderr.decode().strip()}")
    return once


def handbuilt_once(fs):
    """The hand-built engine's once(); a string says why it could not run."""
    try:
        from justaprocess import container
    except ImportError as exc:
        return f"justaprocess.container not available ({exc})"
    if not hasattr(container, "Container"):
        return "justaprocess.container has no Container to time"

    class Timed(container.Container):
        """The engine as it is, with a mark (wall clock, the caller's rusage) at the
        edges of each phase; run() and remove() are the API's own."""

        def _mark(self, what):
            MARKS[what] = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF))

        def create(self):
            self._mark("create")
            try:
                return super().create()
            finally:
                self._mark("created")

        def start(self):
            out = super().start()
            self._mark("started")
            return out

        def wait(self, timeout=None):
            out = super().wait(timeout)
            self._mark("exited")
            return out

        def remove(self):
            self._mark("remove")
            super().remove()
            self._mark("removed")

    def once():
        # The defaults are runc's: mnt, uts, ipc, pid, net (and cgroup) namespaces,
        # pivot_root, the engine-default capabilities, no_new_privs; we add the
        # memory limit.  The cached folder is used as it is, as runc's bundle does.
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        c = Timed(["/bin/true"], rootfs=fs.path, memory="64M")
        try:
            r = c.run()
            c._mark("ran")
        finally:
            c.remove()
        if r.returncode != 0:
            raise SystemExit(f"hand-built run failed: {r}")
        phase(MARKS, kids)
    return once


# The hand-built engine's phases, between the marks Timed sets: (label, from, to).
PHASES = (("create()", "rootfs folder, cgroup, registry", "create", "created"),
          ("start()", "clone .. PID 1 has exec'd", "created", "started"),
          ("wait()", "exec .. exit, reaped", "started", "exited"),
          ("run() rest", "logs read, Result", "exited", "ran"),
          ("remove()", "cgroup, folder, registry", "remove", "removed"))
MARKS: dict = {}
SPLIT: dict[str, list] = {}   # label -> [(wall, user, sys, minflt)] per container


def phase(marks: dict, kids) -> None:
    """Record one container's phases (only the timed rounds keep them: see main)."""
    for label, _, a, b in PHASES:
        (t0, r0), (t1, r1) = marks[a], marks[b]
        SPLIT.setdefault(label, []).append((t1 - t0, r1.ru_utime - r0.ru_utime,
                                            r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt))
    k = resource.getrusage(resource.RUSAGE_CHILDREN)
    SPLIT.setdefault("PID 1", []).append((0.0, k.ru_utime - kids.ru_utime, k.ru_stime - kids.ru_stime,
                                          k.ru_minflt - kids.ru_minflt))


def breakdown() -> list[str]:
    """Where the hand-built engine's time goes: per phase, median wall time and the mean
    CPU (user + sys) and minor page faults, of the caller (RUSAGE_SELF) and of PID 1 from
    clone to exit (RUSAGE_CHILDREN, which counts it once reaped)."""
    ms = 1000
    out = ["hand-built per container: median wall, mean CPU user+sys (getrusage), minor faults"]
    for label, what, _, _ in PHASES + (("PID 1", "the child: clone .. exit (RUSAGE_CHILDREN)", 0, 0),):
        rows = SPLIT.get(label, [])
        if not rows:
            continue
        wall = statistics.median(r[0] for r in rows) * ms
        user, sys_ = (statistics.mean(r[i] for r in rows) * ms for i in (1, 2))
        flt = statistics.mean(r[3] for r in rows)
        shown = f"{wall:6.2f} ms" if label != "PID 1" else " " * 9
        out.append(f"  {label:<11}{what:<44}{shown}   CPU {user + sys_:4.2f} ms "
                   f"({user:4.2f} + {sys_:4.2f})  {flt:4.0f} faults")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=30, help="runs per engine (default 30)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (the lab's VM): the runtimes need namespaces and cgroups")
        return 2
    fs = rootfs.build("busybox")
    results: dict[str, list[float] | str] = {}
    cleanup: list = []
    try:
        engines = {"runc": runc_once(fs.path, cleanup), "unshare": unshare_once(fs.path)}
        hb = handbuilt_once(fs)
        if isinstance(hb, str):
            results["hand-built"] = hb
        else:
            engines["hand-built"] = hb
        results.update(interleaved(engines, args.n))
    finally:
        for fn in cleanup:
            fn()
        lab.cleanup(owner=os.getpid())
    base = statistics.median(results["runc"])
    print(f"start->exit of /bin/true, {args.n} rounds (engines interleaved), median (ratio to runc), "
          "mean CPU of the caller and its children")
    for k, v in results.items():
        if isinstance(v, str):
            print(f"  {k:<11} skipped: {v}")
        else:
            m = statistics.median(v)
            cpu = statistics.mean(CPU[k]) * 1000
            print(f"  {k:<11} {m * 1000:7.2f} ms  ({m / base:.2f}x runc)   CPU {cpu:5.1f} ms")
    hb = results["hand-built"]
    if isinstance(hb, str):
        print("hand-built/runc ratio: n/a")
        return 1
    print("\n".join(breakdown()))
    # What each engine adds above the floor both pay (namespaces and a root: `unshare`)
    floor = statistics.median(results["unshare"])
    mine, theirs = statistics.median(hb) - floor, base - floor
    print(f"above the unshare floor ({floor * 1000:.2f} ms): hand-built {mine * 1000:.2f} ms, "
          f"runc {theirs * 1000:.2f} ms: {mine / theirs:.2f}x")
    print(f"hand-built/runc ratio: {statistics.median(hb) / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
