"""Checks of 10 · Troubleshooting from the host.

Type and shape first, then the live kernel: answers are compared with /proc of
the running containers, never with a stored value.
"""
from __future__ import annotations

import contextlib
import os

from .. import debug, proc, scenarios
from . import Rows, expect_int, exercise, right, run_first, wrong


def busy_container():
    """A hand-built container whose shell holds /etc/hostname open on fd 3 and runs two
    sleeps (PIDs 2 and 3 inside); returned once all three run.  Removed by %lab_cleanup."""
    from .. import container
    from ..scenarios import _wait_for
    box = container.Container(["sh", "-c", "exec 3</etc/hostname; sleep 1000 & sleep 1001 & wait"],
                              memory="64M", pids=16)
    box.start()
    with debug.target(box) as t:
        _wait_for(lambda: len(debug.processes(t)) >= 3 and _fd3(box.pid),
                  "the container's processes did not start")
    return box


def _fd3(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/3").endswith("/etc/hostname")
    except OSError:
        return False


# --- exercise 1: one process, two PIDs ------------------------------------------------

@exercise(1, context=("box", "inside"), title="one process, two PIDs")
def check_host_pid(host_pid, box, inside: int = 3):
    pid = expect_int(host_pid, "host_pid", "an int (a host PID)")
    if box is None or not getattr(box, "pid", None) or not box.running():
        raise run_first("the cell that starts `box`")
    if pid == inside:
        return wrong("inside-pid",
                     f"{inside} is its PID inside; the host numbers the same process differently",
                     f"walk /proc/*/status: the host PID is the directory name of the process whose "
                     f"NSpid line ends in {inside}")
    if pid <= 0 or not proc.running(pid):
        return wrong("not-running",
                     f"no process {pid} runs on the host: the answer is a directory name under /proc",
                     f"list /proc: the PIDs are its numeric directories; keep the one whose NSpid "
                     f"ends in {inside} and whose ns/pid is the container's")
    with debug.target(box) as t:
        same_ns = proc.namespaces(pid).get("pid") == t.namespaces["pid"]
        want = debug.host_pid_of(t, inside)
    if not same_ns:
        return wrong("other-container",
                     f"process {pid} is not in box's PID namespace: other containers have a PID "
                     f"{inside} too",
                     f"compare os.stat('/proc/PID/ns/pid').st_ino with box's (/proc/{box.pid}/ns/pid)")
    if pid != want:
        return wrong("other-process",
                     f"process {pid} is in box, but it is PID {proc.nspid(pid)[-1]} inside, not {inside}",
                     "the last number of the NSpid line is the PID inside")
    return right(f"its NSpid ends in {inside}: one process, two numbers (pid_namespaces(7)); "
                 "ps, top and kill on the host use the first")


# --- exercise 2: diagnose the app nobody reaches ---------------------------------------

@exercise(2, context=("scenario",), title="diagnose from the host")
def check_diagnosis(diagnosis, scenario):
    if scenario is None or getattr(scenario, "target", None) is None:
        raise run_first("the cell that starts the scenario `s`")
    return scenario.judge(diagnosis)


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

@contextlib.contextmanager
def _box():
    box = busy_container()
    try:
        yield {"box": box, "inside": 3}
    finally:
        box.remove()


def _host(ctx, inside):
    with debug.target(ctx["box"]) as t:
        return debug.host_pid_of(t, inside)


@contextlib.contextmanager
def _loopback():
    with scenarios.start("loopback-only", seed=0) as s:
        yield {"scenario": s, "port": s.params["port"]}


def _dx(cause, **evidence):
    return {"diagnosis": scenarios.Diagnosis(cause, evidence)}


TABLE = {
    1: Rows(setup=_box,
            right=lambda c: dict(host_pid=_host(c, 3)),
            wrong={
                "type": lambda c: dict(host_pid=str(_host(c, 3))),
                "inside-pid": lambda c: dict(host_pid=3),
                "not-running": lambda c: dict(host_pid=4194304 + 1),
                "other-container": lambda c: dict(host_pid=os.getpid()),
                "other-process": lambda c: dict(host_pid=_host(c, 2)),
            }),
    2: Rows(setup=_loopback,
            right=lambda c: _dx("loopback-only", address="127.0.0.1", port=c["port"]),
            wrong={
                "type": lambda c: dict(diagnosis="it listens on 127.0.0.1"),
                "unknown-cause": lambda c: _dx("firewall", port=c["port"]),
                "wrong-cause": lambda c: _dx("no-tools"),
                "evidence-missing": lambda c: _dx("loopback-only", port=c["port"]),
                "evidence-wrong": lambda c: _dx("loopback-only", address="0.0.0.0", port=c["port"]),
            }),
}
