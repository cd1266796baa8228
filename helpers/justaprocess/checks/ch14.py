"""Checks of 14 · Troubleshooting at scale.

Exercise 1 names the fleet's three odd containers; the check reads the same
kernel files the learner read (never a stored answer) and the fault the fleet
planted.  Exercise 2 is the namespaces a pod's sidecar shares with its app,
compared with /proc/PID/ns of the two live processes.
"""
from __future__ import annotations

import contextlib
import os

from .. import fleet as _fleet
from .. import podman as _podman
from . import Rows, expect_collection, expect_str, exercise, right, run_first, wrong

NS_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def ns_names(pid: int) -> tuple[str, ...]:
    """The links in /proc/PID/ns: the eight kinds, plus pid_for_children and
    time_for_children (the namespaces its children will get, namespaces(7))."""
    try:
        return tuple(sorted(os.listdir(f"/proc/{pid}/ns")))
    except OSError:
        return NS_KINDS

_SIGNS = {
    "throttled": "CPU throttling: cpu.stat nr_throttled against nr_periods (the 'throttled' column)",
    "oom": "OOM kills: oom_kill in memory.events (v2) or memory.oom_control (v1)",
    "unreachable": "reachability from the host: fleet.probe() over the bridge",
}


def _row(fleet, name):
    return next((r for r in fleet.stats() if r.name == name), None)


# --- exercise 1: the three odd ones ----------------------------------------------------

@exercise(1, context=("fleet",), title="find the odd ones in a fleet")
def check_fleet(throttled, oom_killed, unreachable, fleet):
    answers = {"throttled": throttled, "oom": oom_killed, "unreachable": unreachable}
    var = {"throttled": "throttled", "oom": "oom_killed", "unreachable": "unreachable"}
    for fault, given in answers.items():
        expect_str(given, var[fault], "a container's name, like 'web07'")
    if fleet is None or not getattr(fleet, "members", None):
        raise run_first("the cell that starts the fleet `fleet`")
    truth = {f: fleet.faulty(f) for f in _fleet.FAULTS}
    names = set(fleet.names)
    for fault in ("throttled", "oom", "unreachable"):
        given = answers[fault].strip()
        if given == truth[fault]:
            continue
        if given not in names:
            return wrong("unknown-name",
                         f"`{var[fault]}` = {given!r} is not in the fleet: its names are "
                         f"{fleet.names[0]} ... {fleet.names[-1]} (the table's first column)",
                         f"copy a name from the first column of the table, like {fleet.names[0]!r}")
        other = next((f for f, n in truth.items() if n == given), None)
        if other:
            return wrong("swapped",
                         f"{given} is odd, but not for `{var[fault]}`: look at what is odd about it",
                         f"{given}'s odd figure is its {_SIGNS[other].split(':')[0]}; "
                         f"`{var[fault]}` wants the one with {_SIGNS[fault].split(':')[0]}")
        r = _row(fleet, given)
        figure = ""
        if r is not None:
            figure = {"throttled": f"throttled in {r.cpu_throttled} of {r.cpu_periods} periods",
                      "oom": f"{r.oom_kills} OOM kills",
                      "unreachable": "answers over the bridge"}[fault]
        return wrong("healthy",
                     f"{given} looks healthy for this: {figure}. Which sign tells {fault}?",
                     f"sort the rows by {_SIGNS[fault]}")
    return right("one table of cgroup files, the logs and one probe found all three: numbers "
                 "from the kernel point at the odd container faster than a shell in each")


# --- exercise 2: what a pod's sidecar shares --------------------------------------------

def shared_kinds(pid_a: int, pid_b: int) -> set[str]:
    """The namespace kinds two processes share (the same /proc/PID/ns link)."""
    out = set()
    for k in ns_names(pid_a):
        try:
            if os.readlink(f"/proc/{pid_a}/ns/{k}") == os.readlink(f"/proc/{pid_b}/ns/{k}"):
                out.add(k)
        except OSError:
            continue
    return out


@exercise(2, context=("app_pid", "sidecar_pid"), title="what a pod's sidecar shares")
def check_shared(shared, app_pid, sidecar_pid):
    given = expect_collection(shared, "shared", "a set of namespace kinds, like {'net'}", str, "a kind name")
    given = {g.strip().lower() for g in given}
    if not app_pid or not sidecar_pid or not all(os.path.exists(f"/proc/{p}") for p in (app_pid, sidecar_pid)):
        raise run_first("the cell that plays the pod with a sidecar")
    unknown = given - set(ns_names(app_pid))
    if unknown:
        return wrong("not-a-kind",
                     f"{sorted(unknown)} are not namespace kinds: the kinds are the names in /proc/PID/ns",
                     f"ls /proc/{app_pid}/ns: {', '.join(ns_names(app_pid))}")
    truth = shared_kinds(app_pid, sidecar_pid)
    # pid_for_children / time_for_children may be left out: they follow pid and time here
    given |= {k for k in truth if k.endswith("_for_children") and k.split("_")[0] in given}
    if given == truth:
        return right("same link, same namespace: a pod is a set of shared namespaces (net, ipc, "
                     "uts, and pid when asked); each container keeps its own mount namespace (its "
                     "own image) and its own cgroup")
    if "mnt" in given and "mnt" not in truth:
        return wrong("mnt",
                     "each container of a pod has its own root file system: compare the mnt links",
                     f"readlink /proc/{app_pid}/ns/mnt and /proc/{sidecar_pid}/ns/mnt differ")
    if "pid" in truth and "pid" not in given:
        return wrong("pid",
                     "the manifest says shareProcessNamespace: true - what does the sidecar's ps show?",
                     f"compare /proc/{app_pid}/ns/pid with /proc/{sidecar_pid}/ns/pid")
    return wrong("other",
                 "compare each link of /proc/APP/ns with the sidecar's: same link, same namespace",
                 f"missing: {sorted(truth - given)}; not shared: {sorted(given - truth)}")


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

@contextlib.contextmanager
def _fleet_ctx():
    with _fleet.Fleet(4, seed=2) as f:
        from ..scenarios import _wait_for
        _wait_for(lambda: (_row(f, f.faulty("throttled")).cpu_throttled or 0) > 0
                  and (_row(f, f.faulty("oom")).oom_kills or 0) > 0, "the planted faults", timeout=30)
        yield {"fleet": f}


def _answer(f, **over):
    a = {"throttled": f.faulty("throttled"), "oom_killed": f.faulty("oom"),
         "unreachable": f.faulty("unreachable")}
    a.update(over)
    return a


def _healthy(f):
    return next(n for n in f.names if n not in {f.faulty(x) for x in _fleet.FAULTS})


@contextlib.contextmanager
def _pod():
    with _podman.Store() as st:
        st.kube_play({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "side"},
                      "spec": {"shareProcessNamespace": True, "containers": [
                          {"name": "app", "image": _podman.IMAGE, "command": ["sleep", "600"]},
                          {"name": "tools", "image": _podman.IMAGE, "command": ["sleep", "601"]}]}})
        yield {"app_pid": st.pid("side-app"), "sidecar_pid": st.pid("side-tools")}


def _truth(c, add=(), drop=()):
    return {"shared": (shared_kinds(c["app_pid"], c["sidecar_pid"]) | set(add)) - set(drop)}


TABLE = {
    1: Rows(setup=_fleet_ctx,
            right=lambda c: _answer(c["fleet"]),
            wrong={
                "type": lambda c: _answer(c["fleet"], throttled=3),
                "unknown-name": lambda c: _answer(c["fleet"], oom_killed="web99"),
                "swapped": lambda c: _answer(c["fleet"], throttled=c["fleet"].faulty("oom")),
                "healthy": lambda c: _answer(c["fleet"], unreachable=_healthy(c["fleet"])),
            }),
    2: Rows(setup=_pod,
            right=_truth,
            wrong={
                "type": lambda c: {"shared": "net,pid"},
                "not-a-kind": lambda c: _truth(c, add={"network"}),
                "mnt": lambda c: _truth(c, add={"mnt"}),
                "pid": lambda c: _truth(c, drop={"pid"}),
                "other": lambda c: _truth(c, drop={"net"}),
            }),
}
