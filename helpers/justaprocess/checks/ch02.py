"""Checks of 02 · Namespaces.

Each check reads the real kernel files (/proc/PID/ns/*) at the time it runs:
the truth is what the kernel says, never a stored answer.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time

from .. import namespaces, proc
from ..errors import LabError
from . import (Rows, describe, expect_bool, expect_collection, expect_int, expect_str, exercise,
               right, run_first, wrong)


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


def _ctr_pid(ctr) -> int:
    """The host PID of the section's container, or a 'run that cell first' (it is gone)."""
    pid = _pid_of(ctr)
    if pid is None or not proc.running(pid):
        raise run_first("the cell that starts `ctr` (the nsenter section) again")
    return pid


@exercise(1, title="its own uts and net")
def check_own_uts_net(ex1):
    """Exercise 1: a running process with its own uts and net, sharing everything else with the kernel."""
    if isinstance(ex1, namespaces.Result):
        return wrong("exited",
                     "that is the Result of a process that has exited: it has no namespaces left "
                     "to look at. run() waits for the end; which function starts a process and "
                     "returns while it runs?",
                     "namespaces.spawn(['sleep', '60'], kinds=[...]) starts it and returns at once "
                     "(or `unshare ... sleep 60 &` in a shell)")
    pid = _pid_of(ex1)
    if pid is None:
        raise wrong("type", "`ex1` should be the process you started (what namespaces.spawn() "
                            f"returns, or its PID); it is {describe(ex1)}")
    if not proc.running(pid):
        return wrong("exited",
                     f"PID {pid} is not running: a process that exited has no namespaces left to "
                     "check. Start one that keeps running (a sleep)",
                     "namespaces.spawn(['sleep', '60'], kinds=[...]) starts it and returns at once "
                     "(or `unshare ... sleep 60 &` in a shell)")
    s = namespaces.compare(pid, os.getpid())
    sep = set(s.separate)
    if sep == {"uts", "net"}:
        return right("it has its own uts and net namespaces and shares "
                     f"{', '.join(s.shared)} with the kernel: a namespace is created "
                     "only for the kinds you ask for (clone(2), unshare(2))")
    now = f" (now its own: {', '.join(sorted(sep)) or 'none'})"
    lacking = sorted({"uts", "net"} - sep)
    if lacking:
        return wrong("too-few",
                     f"it still shares {', '.join(lacking)} with the kernel: a process gets a new "
                     "namespace only of the kinds asked for" + now,
                     f"ask for both: kinds=['uts', 'net'] (unshare --uts --net)" + now)
    if "pid" in sep:
        return wrong("extra-pid",
                     "it has its own pid namespace too: the exercise wants it to share that "
                     "one with the kernel" + now,
                     "namespaces.spawn() makes a container's six kinds unless told: pass "
                     "kinds=['uts', 'net'] and nothing else" + now)
    return wrong("too-many",
                 f"it also has its own {', '.join(sorted(sep - {'uts', 'net'}))}: ask only for uts "
                 "and net" + now,
                 "namespaces.spawn() makes a container's six kinds unless told: pass "
                 "kinds=['uts', 'net'] and nothing else" + now)


@exercise(2, context=("ctr",), title="who is in the container's network namespace?")
def check_same_net(same_net, ctr):
    """Exercise 2: the host PIDs of every process in ctr's network namespace."""
    if isinstance(same_net, (list, tuple, set, frozenset)) and any(
            isinstance(p, str) and p.isdigit() for p in same_net):
        raise wrong("type", "`same_net` should be a list of PIDs as ints, e.g. [1234, 1240]; it "
                            "holds strings like '123' (os.listdir gives strings): int(entry)")
    given = set(expect_collection(same_net, "same_net", "a list of PIDs (ints), e.g. [1234, 1240]",
                                  int, "a PID (an int)"))
    pid = _ctr_pid(ctr)
    truth = set(namespaces.members(pid, "net"))
    if given == truth:
        return right(f"{len(truth)} processes share that network namespace: the ones "
                     "whose /proc/PID/ns/net link names the same namespace as ctr's")
    if given and not given & truth and all(p <= len(truth) + 3 for p in given):
        return wrong("inner-pids",
                     "those look like PIDs as the container numbers them; /proc of the host "
                     "lists *host* PIDs",
                     "scan os.listdir('/proc') on the host: compare os.readlink(f'/proc/{pid}/ns/net') "
                     "of every PID with ctr's")
    if given > truth:
        return wrong("too-many",
                     f"{len(given - truth)} of your PIDs are in another network namespace (the "
                     "host's?): keep only those whose link equals ctr's",
                     "compare the whole link text, e.g. 'net:[4026532...]', with "
                     "os.readlink(f'/proc/{ctr.host_pid}/ns/net')")
    return wrong("too-few",
                 f"you found {len(given & truth)} of {len(truth)}"
                 + (f", and {len(given - truth)} are not in it" if given - truth else "")
                 + ": scan every numeric entry of /proc",
                 "for every entry of os.listdir('/proc') that is a number, compare its "
                 "ns/net link with ctr's; skip those you cannot read (a process may exit meanwhile)")


@exercise(3, title="predict, then verify")
def check_pid_without_proc(predicted_pid, ps_sees_host):
    """Exercise 3: a new pid namespace without a fresh /proc."""
    predicted = expect_int(predicted_pid, "predicted_pid", "an int (a PID)")
    sees = expect_bool(ps_sees_host, "ps_sees_host")
    r = namespaces.run("echo $$; ps -e --no-headers | wc -l", kinds="pid")
    shell_pid, seen = (int(x) for x in r.stdout.split())
    real_sees_host = seen > 3
    if predicted != shell_pid:
        return wrong("wrong-pid",
                     f"{predicted} is not what `echo $$` prints there: which number does the first "
                     "process of a new pid namespace get? (pid_namespaces(7))",
                     f"verify: namespaces.run('echo $$', kinds=['pid']) printed {shell_pid}: the "
                     "first process of a new pid namespace is its init")
    if sees != real_sees_host:
        return wrong("fresh-proc",
                     "predicted_pid is right; ps reads /proc: which /proc is mounted there - one of "
                     "the new namespace, or the host's?",
                     f"predicted_pid is right; ps listed {seen} processes there: without a new mount "
                     "namespace the shell sees the host's /proc, which shows the host's processes")
    return right(f"the shell is PID {shell_pid} in its namespace, yet ps lists the host's "
                 "processes: ps reads /proc, still the host's procfs. A fresh /proc needs a mount "
                 "namespace too (unshare --pid --fork --mount-proc)")


def _look_from_inside() -> tuple[str, dict]:
    """Run in the joined process: what it sees - its hostname and its own namespaces."""
    return socket.gethostname(), proc.namespaces("self")


@exercise(4, context=("ctr",), title="one namespace is enough")
def check_ctr_hostname(ctr_hostname, joined, ctr):
    """Exercise 4: read the container's hostname by joining only its uts namespace.

    ``joined`` is what namespaces.enter() returned. The check joins again the way it
    did (its kinds) with a probe, and the probe process itself reports which of its
    namespaces are ctr's: only uts may be (observed from the process, not assumed
    from the printed name).
    """
    name = expect_str(ctr_hostname, "ctr_hostname", "a string (the hostname, without the newline)")
    if not isinstance(joined, namespaces.Result):
        raise wrong("type", "`joined` should be what namespaces.enter(ctr.host_pid, ['hostname'], "
                            f"kinds=...) returned; it is {describe(joined)}")
    pid = _ctr_pid(ctr)
    host = proc.namespaces("self")
    theirs = proc.namespaces(pid)
    hostname, inside = namespaces.enter(pid, _look_from_inside, kinds=joined.kinds).value
    in_ctr = sorted(k for k in theirs if theirs[k] != host.get(k) and inside.get(k) == theirs[k])
    if "uts" not in in_ctr:
        return wrong("not-uts",
                     "the process you ran was not in ctr's uts namespace: which kind of namespace "
                     "holds the hostname?",
                     "the hostname lives in the uts namespace (uts_namespaces(7)): "
                     "namespaces.enter(ctr.host_pid, ['hostname'], kinds=['uts'])")
    if in_ctr != ["uts"]:
        return wrong("joined-more",
                     f"your process joined ctr's {', '.join(in_ctr)} namespaces: the hostname "
                     "needs only one of them",
                     "join only the uts namespace: kinds=['uts'] (nsenter --target PID --uts)")
    if name != name.strip():
        return wrong("newline", f"{name!r} still has the newline `hostname` printed: "
                                ".strip() it")
    if name != hostname:
        if name == os.uname().nodename:
            return wrong("host-name",
                         "that is the host's name, not the one inside ctr's uts namespace",
                         "keep what the command printed in ctr's uts namespace: "
                         "joined.stdout.strip()")
        return wrong("not-from-joined",
                     f"ctr's uts namespace says its hostname is not {name!r}: keep what your "
                     "command printed there",
                     "ctr_hostname = joined.stdout.strip()")
    return right("setns(2) into the uts namespace alone is enough to see the container's "
                 "hostname: nsenter -t PID --uts hostname does the same")


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

@contextlib.contextmanager
def _with_ctr():
    ctr = namespaces.spawn("sleep 600 & sleep 600; wait", kinds=["pid", "mnt", "uts", "net", "ipc"],
                           hostname="jap-ctr")
    with ctr:
        deadline = time.monotonic() + 5
        while len(namespaces.members(ctr.host_pid, "pid")) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield {"ctr": ctr, "net": sorted(namespaces.members(ctr.host_pid, "net"))}


def _spawned(kinds):
    return lambda c: dict(ex1=namespaces.spawn(["sleep", "60"], kinds=kinds))


def _enter(kinds):
    return lambda c: namespaces.enter(c["ctr"].host_pid, ["hostname"], kinds=kinds)


def _hostname_row(kinds, mangle=str.strip):
    def row(c):
        joined = _enter(kinds)(c)
        return dict(ctr_hostname=mangle(joined.stdout), joined=joined)
    return row


TABLE = {
    1: Rows(right=_spawned(["uts", "net"]),
            wrong={
                "type": lambda c: dict(ex1="uts, net"),
                "exited": lambda c: dict(ex1=namespaces.run(["true"], kinds=["uts", "net"])),
                "too-few": _spawned(["uts"]),
                "extra-pid": _spawned(["uts", "net", "pid"]),
                "too-many": _spawned(["uts", "net", "ipc"]),
            }),
    2: Rows(setup=_with_ctr,
            right=lambda c: dict(same_net=c["net"]),
            wrong={
                "type": lambda c: dict(same_net=[str(p) for p in c["net"]]),
                "type:pid": lambda c: dict(same_net=c["ctr"].host_pid),
                "inner-pids": lambda c: dict(same_net=[1, 2, 3]),
                "too-many": lambda c: dict(same_net=c["net"] + [os.getpid()]),
                "too-few": lambda c: dict(same_net=c["net"][1:]),
            }),
    3: Rows(right=lambda c: dict(predicted_pid=1, ps_sees_host=True),
            wrong={
                "type": lambda c: dict(predicted_pid="1", ps_sees_host=True),
                "type:bool": lambda c: dict(predicted_pid=1, ps_sees_host="yes"),
                "wrong-pid": lambda c: dict(predicted_pid=2, ps_sees_host=True),
                "fresh-proc": lambda c: dict(predicted_pid=1, ps_sees_host=False),
            }),
    4: Rows(setup=_with_ctr,
            right=_hostname_row(["uts"]),
            wrong={
                "type": lambda c: dict(ctr_hostname=b"jap-ctr", joined=_enter(["uts"])(c)),
                "type:joined": lambda c: dict(ctr_hostname="jap-ctr", joined="jap-ctr"),
                "newline": _hostname_row(["uts"], mangle=lambda s: s),
                "joined-more": lambda c: dict(ctr_hostname="jap-ctr", joined=_enter(None)(c)),
                "not-uts": lambda c: dict(ctr_hostname="jap-ctr", joined=_enter(["net"])(c)),
                "host-name": lambda c: dict(ctr_hostname=os.uname().nodename,
                                            joined=_enter(["uts"])(c)),
                "not-from-joined": lambda c: dict(ctr_hostname="jap-box", joined=_enter(["uts"])(c)),
            }),
}
