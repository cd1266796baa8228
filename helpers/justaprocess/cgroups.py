"""Control groups, v1 and v2 behind one API (cgroups(7), Documentation/admin-guide/cgroup-v2.rst).

The layout of the machine - pure v1, the v1+v2 hybrid, or pure v2 - is
detected in exactly one function, :func:`layout`.  The root of the cgroup
filesystem and the mount table are parameters, so tests can run on a fake tree.
"""
from __future__ import annotations

import os
import signal
import time
from typing import NamedTuple

from . import proc
from .errors import BadInput, NotSupported

ROOT = "/sys/fs/cgroup"
MOUNTS = "/proc/self/mounts"

V1, HYBRID, V2 = "v1", "hybrid", "v2"


def _mount_table(mounts: str = MOUNTS) -> list[tuple[str, str, str, str]]:
    """(source, target, fstype, options) of each line of a mounts file (proc(5))."""
    with open(mounts) as f:
        return [tuple(line.split()[:4]) for line in f]  # type: ignore[misc]


def layout(root: str = ROOT, mounts: str = MOUNTS) -> str:
    """'v2', 'hybrid' or 'v1': the one place the cgroup layout is decided.

    The filesystem type of ``root`` tells: cgroup2 there means pure v2; a tmpfs
    holding v1 hierarchies is v1, and hybrid when a cgroup2 is also mounted
    beneath it (systemd puts it at ``unified``).
    """
    table = _mount_table(mounts)
    root = root.rstrip("/")
    types = {target: fstype for _, target, fstype, _ in table}
    if types.get(root) == "cgroup2":
        return V2
    if any(t == "cgroup2" and target.startswith(root + "/") for target, t in types.items()):
        return HYBRID
    if any(t == "cgroup" and target.startswith(root + "/") for target, t in types.items()):
        return V1
    raise NotSupported(f"no cgroup filesystem is mounted under {root}: "
                       "the lab needs a Linux with cgroups (mount -t cgroup2 none /sys/fs/cgroup)")


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy: its mount point, version and controllers."""
    mountpoint: str
    version: int
    controllers: tuple[str, ...]


# Options of a v1 cgroup mount that are not controller names (cgroups(7)).
_V1_OPTIONS = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime",
               "xattr", "clone_children", "noprefix", "cpuset_v2_mode"}


def hierarchies(root: str = ROOT, mounts: str = MOUNTS) -> list[Hierarchy]:
    """Every cgroup hierarchy mounted under ``root``, with its controllers."""
    out = []
    for _, target, fstype, opts in _mount_table(mounts):
        if not (target == root or target.startswith(root.rstrip("/") + "/")):
            continue
        if fstype == "cgroup2":
            try:
                with open(os.path.join(target, "cgroup.controllers")) as f:
                    ctrls = tuple(f.read().split())
            except OSError:
                ctrls = ()
            out.append(Hierarchy(target, 2, ctrls))
        elif fstype == "cgroup":
            ctrls = tuple(o for o in opts.split(",")
                          if o not in _V1_OPTIONS and "=" not in o)
            out.append(Hierarchy(target, 1, ctrls))
    return out


def controllers(root: str = ROOT, mounts: str = MOUNTS) -> dict[str, Hierarchy]:
    """{controller: the hierarchy it is attached to}.

    A controller lives in one hierarchy at a time: on the hybrid, the v1 mount wins.
    """
    out: dict[str, Hierarchy] = {}
    for h in hierarchies(root, mounts):
        for c in h.controllers:
            if c not in out or out[c].version == 2 and h.version == 1:
                out[c] = h
    return out


def own_path(hierarchy: Hierarchy, pid: int | str = "self", procfs: str = proc.PROCFS) -> str:
    """The directory of the cgroup that ``pid`` is in, within ``hierarchy``."""
    for line in proc.cgroups(pid, procfs):
        if hierarchy.version == 2 and line.hierarchy == 0:
            return os.path.join(hierarchy.mountpoint, line.path.lstrip("/"))
        if hierarchy.version == 1 and set(line.controllers) & set(hierarchy.controllers):
            return os.path.join(hierarchy.mountpoint, line.path.lstrip("/"))
    raise NotSupported(f"process {pid} is in no cgroup of {hierarchy.mountpoint}")


def pids_in(path: str) -> list[int]:
    """The PIDs in one cgroup (its cgroup.procs), not its descendants."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def remove(path: str, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its descendants, killing what runs inside.

    rmdir(2) of a cgroup fails with EBUSY while it has processes, and a killed
    process leaves the cgroup only once reaped: so kill, then retry the rmdir
    (KERNEL-NOTES: pids.current lags behind the kill).
    """
    if not os.path.basename(path.rstrip("/")).startswith("jap"):
        raise BadInput(f"refusing to remove {path}: not a cgroup the lab created (jap* names)")
    if not os.path.isdir(path):
        return
    # Deepest first: a cgroup with children cannot be removed.
    dirs = [d for d, _, _ in os.walk(path)]
    deadline = time.monotonic() + timeout
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        while True:
            for pid in pids_in(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
