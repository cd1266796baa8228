"""Checks of 02 · Namespaces.

Each check reads the real kernel files (/proc/PID/ns/*) at the time it runs:
the truth is what the kernel says, never a stored answer.
"""
from __future__ import annotations

import os

from .. import namespaces, proc
from ..errors import LabError
from . import Verdict, missing, verdict


def _pid_of(thing) -> int | None:
    """A PID from an int, an NsProcess (host_pid), a LabProcess or Popen (pid), a Result (host_pid)."""
    if isinstance(thing, bool):
        return None
    if isinstance(thing, int):
        return thing
    for attr in ("host_pid", "pid"):
        value = getattr(thing, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_own_uts_net(ex1) -> Verdict:
    """Exercise 1: a running process with its own uts and net, sharing everything else with the kernel."""
    if (m := missing(ex1=ex1)):
        return m
    pid = _pid_of(ex1)
    if pid is None:
        return Verdict(False, f"ex1 should be the process you started (what namespaces.spawn() "
                              f"returns, or its PID), not {type(ex1).__name__}")
    if isinstance(ex1, namespaces.Result) or not proc.exists(pid) or \
            proc.status(pid)["State"].startswith("Z"):
        return Verdict(False, f"PID {pid} is not running: a process that exited has no namespaces "
                              "left to check. run() waits for the end - use namespaces.spawn() "
                              "(or `unshare ... sleep 60` in the background) so it keeps running")
    try:
        s = namespaces.compare(pid, os.getpid())
    except LabError as exc:
        return Verdict(False, str(exc))
    sep = set(s.separate)
    if sep == {"uts", "net"}:
        return Verdict(True, "it has its own uts and net namespaces and shares "
                             f"{', '.join(s.shared)} with the kernel: a namespace is created "
                             "only for the kinds you ask for (clone(2), unshare(2))")
    hints = []
    if "pid" in sep:
        hints.append("it has its own pid namespace: leave 'pid' out, so it shares the kernel's")
    if not {"uts", "net"} <= sep:
        hints.append(f"it still shares {', '.join(sorted({'uts', 'net'} - sep))} with the kernel: "
                     "ask for kinds=('uts', 'net')")
    extra = sep - {"uts", "net", "pid"}
    if extra:
        hints.append(f"it also has its own {', '.join(sorted(extra))}: ask only for uts and net")
    return Verdict(False, "; ".join(hints) + f" (now: separate={', '.join(sorted(sep)) or 'none'})")


def check_same_net(same_net, ctr) -> Verdict:
    """Exercise 2: the host PIDs of every process in ctr's network namespace."""
    if (m := missing(same_net=same_net)):
        return m
    pid = _pid_of(ctr)
    try:
        truth = set(namespaces.members(pid, "net"))
    except LabError as exc:
        return Verdict(False, f"the container of this section is gone ({exc}): re-run its cell, "
                              "then your answer")
    try:
        given = {int(p) for p in same_net}
    except (TypeError, ValueError):
        return Verdict(False, "same_net should be a list of PIDs (ints), e.g. [1234, 1240]")
    if given == truth:
        return Verdict(True, f"{len(truth)} processes share that network namespace: the ones "
                             "whose /proc/PID/ns/net link names the same namespace as ctr's")
    if given and all(p < 10 for p in given) and not given & truth:
        return Verdict(False, "those look like PIDs as the container numbers them; /proc of "
                              "the host lists *host* PIDs: compare os.readlink('/proc/PID/ns/net') "
                              "of every PID in os.listdir('/proc')")
    if given > truth:
        return Verdict(False, f"{len(given - truth)} of your PIDs are in another network namespace "
                              "(the host's?): keep only those whose link equals ctr's")
    return Verdict(False, f"you found {len(given & truth)} of {len(truth)}: scan every numeric "
                          "entry of /proc (skip those you cannot read: a process may exit "
                          "meanwhile), and compare the whole link text, e.g. 'net:[4026532...]'")


def check_pid_without_proc(predicted_pid, ps_sees_host) -> Verdict:
    """Exercise 3: a new pid namespace without a fresh /proc."""
    if (m := missing(predicted_pid=predicted_pid, ps_sees_host=ps_sees_host)):
        return m
    r = namespaces.run("echo $$; ps -e --no-headers | wc -l", kinds="pid")
    shell_pid, seen = (int(x) for x in r.stdout.split())
    real_sees_host = seen > 3
    if predicted_pid != shell_pid:
        return Verdict(False, f"the shell printed {shell_pid} for $$, not {predicted_pid}: which "
                              "number does the first process of a new pid namespace get? "
                              "(pid_namespaces(7))")
    if bool(ps_sees_host) != real_sees_host:
        return Verdict(False, f"ps listed {seen} processes: ps reads /proc, and which /proc is "
                              "mounted there - the one of the new namespace, or the host's?")
    return verdict(True,
                   f"the shell is PID {shell_pid} in its namespace, yet ps lists the host's "
                   "processes: ps reads /proc, still the host's procfs. A fresh /proc needs a mount "
                   "namespace too (unshare --pid --fork --mount-proc)", "")


def check_ctr_hostname(ctr_hostname, ctr) -> Verdict:
    """Exercise 4: read the container's hostname by joining only its uts namespace."""
    if (m := missing(ctr_hostname=ctr_hostname)):
        return m
    pid = _pid_of(ctr)
    try:
        truth = namespaces.enter(pid, ["hostname"], kinds="uts").stdout.strip()
    except LabError as exc:
        return Verdict(False, f"the container of this section is gone ({exc}): re-run its cell")
    if not isinstance(ctr_hostname, str):
        return Verdict(False, "ctr_hostname should be a string: the .stdout of a Result, stripped")
    if ctr_hostname.strip() == os.uname().nodename and truth != os.uname().nodename:
        return Verdict(False, "that is the host's name: run `hostname` *inside* ctr's uts "
                              "namespace - namespaces.enter(ctr.host_pid, ..., kinds='uts') "
                              "or `nsenter -t PID --uts hostname`")
    return verdict(ctr_hostname.strip() == truth,
                   "setns(2) into the uts namespace alone is enough to see the container's "
                   "hostname: nsenter -t PID --uts hostname does the same",
                   "ctr's uts namespace says its hostname is something else: run `hostname` "
                   "after joining its uts namespace and keep the output, stripped")
