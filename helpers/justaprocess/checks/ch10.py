"""Checks of 10 · Troubleshooting from the host.

Type and shape first, then the live kernel: the answer is compared with
/proc of the running containers, never with a stored value.
"""
from __future__ import annotations

from .. import debug, proc, scenarios
from . import Verdict, missing, verdict


def check_host_pid(host_pid, box, inside: int) -> Verdict:
    """Exercise 1: the host PID of the process that is ``inside`` in ``box``'s PID namespace."""
    if (m := missing(host_pid=host_pid)):
        return m
    if isinstance(host_pid, bool) or not isinstance(host_pid, int):
        return Verdict(False, f"host_pid is a number (an int), not {type(host_pid).__name__}")
    if host_pid == inside:
        return Verdict(False, f"{inside} is its PID inside; the host numbers it differently - "
                              "read NSpid in /proc/*/status")
    if not proc.running(host_pid):
        return Verdict(False, f"no process {host_pid} runs on the host: walk /proc/*/status and "
                              "look for the NSpid line that ends in " + str(inside))
    with debug.target(box) as t:
        same_ns = proc.namespaces(host_pid).get("pid") == t.namespaces["pid"]
        want = debug.host_pid_of(t, inside)
    if not same_ns:
        return Verdict(False, f"process {host_pid} is not in the container's PID namespace: "
                              "compare /proc/PID/ns/pid with the container's")
    return verdict(host_pid == want,
                   f"NSpid of {host_pid} ends in {inside}: the same process, two numbers "
                   "(pid_namespaces(7)). ps, top and kill on the host use the first.",
                   f"process {host_pid} is PID {proc.nspid(host_pid)[-1]} inside, not {inside}: "
                   "the last number of its NSpid line")


def check_diagnosis(diagnosis, scenario: scenarios.Scenario) -> Verdict:
    """Exercise 2: the structured diagnosis of the broken container (the scenario judges it)."""
    if (m := missing(diagnosis=diagnosis)):
        return m
    return scenario.verify(diagnosis)


def busy_container():
    """A hand-built container whose shell holds /etc/hostname open on fd 3 and runs two
    sleeps (PIDs 2 and 3 inside); returned once all three run.  Removed by %lab_cleanup."""
    from .. import container
    from ..scenarios import _wait_for
    box = container.Container(["sh", "-c", "exec 3</etc/hostname; sleep 1000 & sleep 1001 & wait"],
                              memory="64M", pids=16)
    box.start()
    with debug.target(box) as t:
        _wait_for(lambda: len(debug.processes(t)) >= 3
                  and box.pid and _fd3(box.pid), "the container's processes did not start")
    return box


def _fd3(pid: int) -> bool:
    try:
        return __import__("os").readlink(f"/proc/{pid}/fd/3").endswith("/etc/hostname")
    except OSError:
        return False
