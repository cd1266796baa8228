"""Checks of 08 · Troubleshooting from inside the container.

Type and shape first; then the live kernel (the scenario's cgroup files), never a stored value.
"""
from __future__ import annotations

import contextlib
import os

from .. import cgroups, debug, scenarios
from . import Rows, expect_str, exercise, right, run_first, wrong

# The file that counts OOM kills of a cgroup: v2 memory.events (oom_kill), v1 memory.oom_control.
OOM_FILES = {1: "memory.oom_control", 2: "memory.events"}


def oom_file_of(pid: int) -> str:
    """The kernel file that counts the OOM kills of ``pid``'s memory cgroup (v1 or v2)."""
    place = cgroups.places_of(pid)["memory"]
    return os.path.join(place.path, OOM_FILES[place.hierarchy.version])


def oom_kills(pid: int) -> int:
    """The oom_kill count of ``pid``'s memory cgroup, read from that file."""
    with open(oom_file_of(pid)) as f:
        for line in f:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def _need(scenario):
    if scenario is None or getattr(scenario, "target", None) is None:
        raise run_first("the cell that starts the scenario")
    return scenario.target


# --- exercise 1: the file that counted the kill --------------------------------------------

@exercise(1, context=("scenario",), title="the kernel's counter")
def check_oom_file(oom_file, scenario):
    path = expect_str(oom_file, "oom_file", "a path (a string) under /sys/fs/cgroup")
    c = _need(scenario)
    truth = oom_file_of(c.pid)
    name = os.path.basename(path)
    if not path.startswith(cgroups.ROOT + "/"):
        return wrong("not-cgroupfs",
                     f"the counter is a file of the app's cgroup, under {cgroups.ROOT}",
                     f"/proc/{c.pid}/cgroup names the app's memory cgroup; join it to the mount "
                     "point of the memory hierarchy")
    if name not in OOM_FILES.values() or name != os.path.basename(truth):
        other = "memory.oom_control" if name == "memory.events" else "memory.events"
        if name in OOM_FILES.values():
            return wrong("other-version",
                         f"{name} is the file of the other cgroup version: this machine is "
                         f"{cgroups.layout()}",
                         f"on cgroup v2 the counter is in memory.events, on v1 in memory.oom_control: "
                         f"use {other}")
        return wrong("wrong-file",
                     f"{name} does not count OOM kills: look for the line 'oom_kill' among the "
                     "memory.* files of the app's cgroup",
                     "v2: memory.events (its oom_kill line); v1: memory.oom_control (its oom_kill line)")
    if os.path.normpath(os.path.dirname(path)) != os.path.dirname(truth):
        return wrong("other-cgroup",
                     f"{os.path.dirname(path)} is not the app's memory cgroup: the counter there "
                     "counts someone else's kills",
                     f"read /proc/{c.pid}/cgroup: the memory line (v1) or the 0:: line (v2) is the "
                     "app's cgroup path")
    return right("its oom_kill line is where the kernel counts every OOM kill of the cgroup - "
                 "the tool's, and the app's on a worse day")


# --- exercise 2: why does exec fail? ---------------------------------------------------------

@exercise(2, context=("scenario",), title="exec fails with EAGAIN")
def check_diagnosis(diagnosis, scenario):
    _need(scenario)
    return scenario.judge(diagnosis)


# --- the table (tests/test_exercises.py) -------------------------------------------------------

@contextlib.contextmanager
def _scenario(name):
    with scenarios.start(name, seed=0) as s:
        yield {"scenario": s}


def _other_version(c):
    path = oom_file_of(c["scenario"].target.pid)
    name = os.path.basename(path)
    other = "memory.oom_control" if name == "memory.events" else "memory.events"
    return dict(oom_file=os.path.join(os.path.dirname(path), other))


def _dx(cause, **evidence):
    return {"diagnosis": scenarios.Diagnosis(cause, evidence)}


TABLE = {
    1: Rows(setup=lambda: _scenario("tool-oom"),
            right=lambda c: dict(oom_file=oom_file_of(c["scenario"].target.pid)),
            wrong={
                "type": lambda c: dict(oom_file=1),
                "not-cgroupfs": lambda c: dict(oom_file="/proc/self/status"),
                "other-version": _other_version,
                "wrong-file": lambda c: dict(oom_file=os.path.join(
                    os.path.dirname(oom_file_of(c["scenario"].target.pid)), "memory.stat")),
                "other-cgroup": lambda c: dict(oom_file=oom_file_of(os.getpid())),
            }),
    2: Rows(setup=lambda: _scenario("pids-exhausted"),
            right=lambda c: _dx("pids-limit", limit="pids", max=c["scenario"].params["pids"]),
            wrong={
                "type": lambda c: dict(diagnosis=("pids-limit", "pids")),
                "wrong-cause": lambda c: _dx("memory-limit", limit="memory"),
                "evidence-missing": lambda c: _dx("pids-limit", limit="pids"),
                "evidence-wrong": lambda c: _dx("pids-limit", limit="pids",
                                                max=c["scenario"].params["pids"] + 1),
            }),
}
