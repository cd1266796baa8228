"""Checks of 06 · Many runtimes, the same building blocks.

Answers are checked against the live containers of the notebook: the kernel's
files, not stored values.
"""
from __future__ import annotations

import os

from .. import cgroups, runtimes
from . import Verdict, missing, verdict

_LIMIT_FILES = ("memory.limit_in_bytes", "memory.max")


def check_limit_file(limit_file, container: runtimes.OCIContainer) -> Verdict:
    """Exercise 1: the kernel file that holds the runc container's memory limit."""
    if (m := missing(limit_file=limit_file)):
        return m
    if not isinstance(limit_file, str) or not limit_file.startswith(cgroups.ROOT + "/"):
        return Verdict(False, f"limit_file is a path under {cgroups.ROOT}: the cgroup directory "
                       "of the container's process, then the memory limit's file name")
    if os.path.basename(limit_file) not in _LIMIT_FILES:
        return Verdict(False, "right place? the file name is memory.limit_in_bytes (cgroup v1) "
                       "or memory.max (cgroup v2)")
    folder = os.path.dirname(limit_file)
    if container.pid not in cgroups.pids_in(folder):
        return Verdict(False, f"the container's PID {container.pid} is not in {folder}/cgroup.procs: "
                       f"read /proc/{container.pid}/cgroup and join the line's path to the "
                       "mount point of its hierarchy")
    with open(limit_file) as f:
        value = f.read().strip()
    return verdict(value == str(64 << 20),
                   f"the file says {value}: the 64M runc wrote from config.json "
                   "(linux.resources.memory.limit), in the same file the hand-built engine writes",
                   f"that file says {value}, not 64M: is it the runc container's cgroup?")


def check_differences(differ, a: runtimes.ContainerFacts, b: runtimes.ContainerFacts) -> Verdict:
    """Exercise 2: the rows of the side-by-side table where the two containers differ."""
    if (m := missing(differ=differ)):
        return m
    try:
        given = set(differ)
    except TypeError:
        return Verdict(False, "differ is a set of row names of the table, e.g. {'seccomp'}")
    if isinstance(differ, str):
        return Verdict(False, "differ is a set of row names, e.g. {'seccomp', 'masked paths'}")
    truth = set(runtimes.differences(a, b))
    rows = set(a.summary())
    unknown = given - rows
    if unknown:
        return Verdict(False, f"not rows of the table: {', '.join(sorted(unknown))}. Rows: "
                       + ", ".join(a.summary()))
    wrong, forgotten = given - truth, truth - given
    return verdict(not wrong and not forgotten,
                   "those are the differences; everything else - namespaces of the container, "
                   "the cgroup and its limits, the capabilities, PID 1 - is the same building block",
                   ("the same in both: " + ", ".join(sorted(wrong)) + ". " if wrong else "")
                   + (f"{len(forgotten)} more row(s) differ: compare the columns again" if forgotten else ""))
