"""Checks of 00 · Welcome."""
from __future__ import annotations

import os

from .. import cgroups, proc
from . import Rows, expect_int, expect_str, exercise, right, wrong

LAYOUTS = ("v1", "hybrid", "v2")


@exercise(1, title="the kernel's own process")
def check_kernel(kernel_pid, net_ns):
    if isinstance(net_ns, str) and net_ns.startswith("net:["):
        raise wrong("type", f"`net_ns` should be an int; it is the whole link text {net_ns!r}: "
                            "keep only the number between the brackets, as an int")
    pid = expect_int(kernel_pid, "kernel_pid", "an int (a PID)")
    ns = expect_int(net_ns, "net_ns", "an int (the number in brackets of the link)")
    if pid != os.getpid():
        if pid == os.getppid():
            return wrong("parent-pid",
                         f"{pid} is the PID of the process that started the kernel (its parent, "
                         "the Jupyter server): which process runs this very cell?",
                         f"{pid} is the kernel's parent: the cell runs in the kernel itself, and "
                         "os.getpid() in a cell returns the kernel's PID")
        return wrong("not-kernel-pid",
                     f"{pid} is another process's PID: which process runs this very cell?",
                     "the cell runs in the kernel: os.getpid() in a cell returns its PID")
    mine = proc.namespaces()
    if ns == mine["net"]:
        return right("the kernel's PID is what os.getpid() returns in a cell, and its network "
                     "namespace is the number in /proc/self/ns/net")
    other = [k for k, v in mine.items() if v == ns]
    if other:
        return wrong("other-namespace",
                     f"kernel_pid is right; {ns} is the kernel's {other[0]} namespace, not its "
                     "network namespace: each kind has its own link in /proc/self/ns",
                     f"kernel_pid is right; {ns} is the {other[0]} one: read the link "
                     "/proc/self/ns/net (os.readlink) and keep the number in its brackets")
    return wrong("not-net-ns",
                 f"kernel_pid is right; {ns} is not the kernel's network namespace: "
                 "os.readlink('/proc/self/ns/net') names it, 'net:[NUMBER]'",
                 "kernel_pid is right; net_ns is the NUMBER of os.readlink('/proc/self/ns/net') "
                 "= 'net:[NUMBER]', as an int (proc.namespaces()['net'] reads the same)")


@exercise(2, title="which cgroup world?")
def check_layout(layout, v2_mount):
    answer = expect_str(layout, "layout", "a string: 'v1', 'hybrid' or 'v2'")
    if v2_mount is not None:
        v2_mount = expect_str(v2_mount, "v2_mount", "a path like '/sys/fs/cgroup/...', or None")
    if answer not in LAYOUTS:
        if answer.strip().lower() in LAYOUTS:
            return wrong("spelling", f"{answer!r}: write it exactly 'v1', 'hybrid' or 'v2' "
                                     "(lower case, no spaces)")
        return wrong("not-a-layout",
                     f"{answer!r} is none of 'v1', 'hybrid', 'v2': the answer is one of those "
                     "three strings")
    truth = cgroups.layout()
    first = ("look at the line of /proc/self/mounts whose target is exactly /sys/fs/cgroup: "
             "which filesystem type is mounted there?")
    if answer != truth:
        if truth == "v2":
            closer = ("/sys/fs/cgroup itself is a cgroup2 mount: one unified hierarchy, no v1 "
                      "hierarchies at all - that is 'v2'")
        elif answer == "v2":
            closer = ("/sys/fs/cgroup is a tmpfs, not a cgroup2: the hierarchies are mounted "
                      "below it")
        elif truth == "hybrid":
            closer = ("the v1 hierarchies are below /sys/fs/cgroup, right - and one more mount "
                      "below it has the type cgroup2: look for it")
        else:
            closer = "no mount below /sys/fs/cgroup has the type cgroup2 here: only v1 hierarchies"
        return wrong("v1-v2", first, closer)
    where = next((h.mountpoint for h in cgroups.hierarchies() if h.version == 2), None)
    if v2_mount is not None:
        v2_mount = v2_mount.rstrip("/") or "/"
    if v2_mount != where:
        if where is None:
            return wrong("v2-mount",
                         f"layout is right; but on a {truth} machine no cgroup2 filesystem is "
                         "mounted: v2_mount is None",
                         "layout is right; no line of /proc/self/mounts has the type cgroup2: "
                         "v2_mount = None")
        return wrong("v2-mount",
                     "layout is right; v2_mount is the mount point (the second field) of the "
                     "line of /proc/self/mounts whose type (the third field) is cgroup2"
                     + ("" if v2_mount is not None else ": there is one here, not None"),
                     "layout is right; in /proc/self/mounts, find the line whose third field is "
                     "cgroup2: its second field is v2_mount")
    return right("you read the cgroup layout, and where the unified (v2) hierarchy is, from the "
                 "mount table, as the helpers do")


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

def _net() -> int:
    return proc.namespaces()["net"]


def _v2_mount() -> str | None:
    return next((h.mountpoint for h in cgroups.hierarchies() if h.version == 2), None)


def _other_layout() -> str:
    return {"v1": "hybrid", "hybrid": "v2", "v2": "hybrid"}[cgroups.layout()]


TABLE = {
    1: Rows(right=lambda c: dict(kernel_pid=os.getpid(), net_ns=_net()),
            wrong={
                "type:str": lambda c: dict(kernel_pid=str(os.getpid()), net_ns=_net()),
                "type:link": lambda c: dict(kernel_pid=os.getpid(),
                                            net_ns=os.readlink("/proc/self/ns/net")),
                "parent-pid": lambda c: dict(kernel_pid=os.getppid(), net_ns=_net()),
                "not-kernel-pid": lambda c: dict(kernel_pid=1, net_ns=_net()),
                "other-namespace": lambda c: dict(kernel_pid=os.getpid(),
                                                  net_ns=proc.namespaces()["mnt"]),
                "not-net-ns": lambda c: dict(kernel_pid=os.getpid(),
                                             net_ns=max(proc.namespaces().values()) + 1),
            }),
    2: Rows(right=lambda c: dict(layout=cgroups.layout(), v2_mount=_v2_mount()),
            wrong={
                "type": lambda c: dict(layout=2, v2_mount=_v2_mount()),
                "type:mount": lambda c: dict(layout=cgroups.layout(), v2_mount=2),
                "spelling": lambda c: dict(layout=cgroups.layout().upper(), v2_mount=_v2_mount()),
                "not-a-layout": lambda c: dict(layout="cgroup2", v2_mount=_v2_mount()),
                "v1-v2": lambda c: dict(layout=_other_layout(), v2_mount=_v2_mount()),
                "v2-mount": lambda c: dict(layout=cgroups.layout(),
                                           v2_mount=None if _v2_mount() else "/sys/fs/cgroup"),
                "v2-mount:root": lambda c: dict(layout=cgroups.layout(),
                                                v2_mount="/sys/fs/cgroup/memory"),
            }),
}
