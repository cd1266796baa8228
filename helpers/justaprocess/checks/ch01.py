"""Checks of 01 · A container is just a process."""
from __future__ import annotations

import time

from .. import namespaces, proc
from . import Verdict, missing, verdict

_mystery: dict = {}


def mystery() -> int:
    """Start a small container-like tree (a shell and two sleeps in new namespaces);
    return the host PID of the second sleep.  Registered with the lab: %lab_cleanup removes it."""
    box = namespaces.spawn(["sh", "-c", "sleep 600 & sleep 601 & wait"], hostname="mystery")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = [pid for _, pid, name in proc.tree(box.host_pid)[1:] if name == "sleep"]
        if len(kids) == 2:
            break
        time.sleep(0.01)
    else:
        raise RuntimeError("the mystery processes did not start")
    target = max(kids, key=lambda p: proc.nspid(p)[-1])
    _mystery["box"], _mystery["pid"] = box, target
    return target


def check_inner_pid(inner_pid) -> Verdict:
    if (m := missing(inner_pid=inner_pid)) is not None:
        return m
    pid = _mystery.get("pid")
    if pid is None:
        return Verdict(False, "run the cell with ch01.mystery() first")
    want = proc.nspid(pid)[-1]
    if inner_pid == pid:
        return Verdict(False, "that is its host PID; inside its namespace it has another one: "
                              "the last number of NSpid in /proc/PID/status")
    return verdict(inner_pid == want,
                   "the last number of NSpid is the PID the process sees for itself",
                   "read NSpid in /proc/PID/status: the host PID first, the innermost last")


def check_separate(separate, box_pid: int) -> Verdict:
    if (m := missing(separate=separate)) is not None:
        return m
    if isinstance(separate, str) or not all(isinstance(k, str) for k in separate):
        return Verdict(False, "give a set of kind names, e.g. {'net', 'uts'}")
    want = set(namespaces.compare(box_pid, "self").separate)
    extra, lacking = set(separate) - want, want - set(separate)
    if extra:
        return Verdict(False, f"box shares {', '.join(sorted(extra))} with the kernel: compare the "
                              "numbers in /proc/PID/ns again")
    return verdict(not lacking,
                   "a container is a process in new namespaces of these kinds: "
                   + ", ".join(sorted(want)),
                   f"{len(lacking)} kind(s) missing: check all eight links of /proc/PID/ns")
