"""Checks of 01 · A container is just a process."""
from __future__ import annotations

import contextlib
import time

from .. import namespaces, proc
from ..errors import LabError
from . import Rows, expect_collection, expect_int, exercise, right, run_first, wrong

_mystery: dict = {}


# The mystery tree's new namespaces: not the six of `box`, and printed nowhere before
# exercise 2, which asks for them.
MYSTERY_KINDS = ("mnt", "net", "pid")


def mystery() -> int:
    """Start a small container-like tree (a shell and two sleeps in new namespaces of
    MYSTERY_KINDS); return the host PID of the second sleep.  Registered with the lab:
    %lab_cleanup removes it."""
    box = namespaces.spawn(["sh", "-c", "sleep 600 & sleep 601 & wait"], kinds=MYSTERY_KINDS)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = [pid for _, pid, name in proc.tree(box.host_pid)[1:] if name == "sleep"]
        if len(kids) == 2:
            break
        time.sleep(0.01)
    else:
        raise LabError("the mystery processes did not start within 5 s: run the cell again")
    target = max(kids, key=lambda p: proc.nspid(p)[-1])
    _mystery["box"], _mystery["pid"] = box, target
    return target


@exercise(1, title="a mystery process")
def check_inner_pid(inner_pid):
    pid = _mystery.get("pid")
    if pid is None or not proc.running(pid):
        raise run_first("the cell with ch01.mystery()")
    n = expect_int(inner_pid, "inner_pid", "an int (a PID)")
    chain = proc.nspid(pid)
    want = chain[-1]
    if n == want:
        return right("the last number of NSpid is the PID the process sees for itself")
    if n == pid:
        return wrong("host-pid",
                     "that is its host PID, the number this notebook sees; inside its own PID "
                     "namespace it has another one",
                     "/proc/PID/status has a line NSpid: the host PID first, the PID inside its "
                     "innermost namespace last")
    inner = {proc.nspid(p)[-1]: name for _, p, name in proc.tree(_mystery["box"].host_pid)}
    if n in inner:
        return wrong("other-process",
                     f"{n} is a PID inside that namespace, but of another process ({inner[n]}): "
                     "the mystery PID is the one ch01.mystery() returned",
                     f"read NSpid in /proc/{pid}/status (that PID's own line): its last number")
    return wrong("other",
                 "no process of that namespace has this PID: read NSpid in /proc/PID/status",
                 f"proc.nspid({pid}) reads NSpid: the host PID first, the innermost last")


KINDS = "a set of namespace kinds like {'net', 'uts'}"


@exercise(2, context=("box_pid",), title="what makes it a container?")
def check_separate(separate, box_pid):
    """Exercise 2: the kinds in which the process ``box_pid`` is not in the kernel's namespace."""
    items = expect_collection(separate, "separate", KINDS, str, "a kind name like 'net'")
    known = set(proc.namespaces("self"))
    unknown = [k for k in items if k not in known]
    if unknown:
        return wrong("unknown-kind",
                     f"{unknown[0]!r} is not a namespace kind: the kinds are the names of the "
                     f"links in /proc/PID/ns: {', '.join(sorted(known))}")
    try:
        want = set(namespaces.compare(box_pid, "self").separate)
    except LabError as exc:
        raise run_first(f"the cell that starts the process (it is gone: {exc})") from None
    given = set(items)
    if given == want:
        return right("a container is a process in new namespaces of some kinds - here "
                     + ", ".join(sorted(want)) + " - and in the host's of the others")
    shared = known - want
    if given and given == shared:
        return wrong("inverted",
                     "those are the kinds in which the process is in the *same* namespace as the "
                     "kernel: the exercise asks for the ones where it is not",
                     f"keep the kinds whose numbers in proc.namespaces({box_pid}) differ "
                     "from proc.namespaces()")
    extra, lacking = sorted(given - want), sorted(want - given)
    if extra:
        return wrong("too-many",
                     f"{len(extra)} of your kinds the process shares with the kernel: compare the "
                     "numbers of the links in /proc/PID/ns again",
                     f"it is in the kernel's own {', '.join(extra)} namespace(s): the numbers "
                     "of those links are equal")
    return wrong("too-few",
                 f"{len(lacking)} more kind(s) differ: check all {len(known)} links of "
                 "/proc/PID/ns",
                 f"compare every kind of proc.namespaces({box_pid}) with proc.namespaces() - "
                 f"{len(lacking)} differ(s) and are missing from your set")


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

@contextlib.contextmanager
def _with_mystery():
    host_pid = mystery()
    try:
        yield {"host_pid": host_pid}
    finally:
        _mystery.pop("box").stop()
        _mystery.pop("pid", None)


@contextlib.contextmanager
def _with_box():
    host_pid = mystery()
    try:
        want = set(namespaces.compare(host_pid, "self").separate)
        yield {"box_pid": host_pid, "want": want,
               "shared": set(proc.namespaces("self")) - want}
    finally:
        _mystery.pop("box").stop()
        _mystery.pop("pid", None)


def _others(c) -> int:
    """The inner PID of another process of the mystery tree."""
    mine = proc.nspid(c["host_pid"])[-1]
    return next(proc.nspid(p)[-1] for _, p, _ in proc.tree(_mystery["box"].host_pid)
                if proc.nspid(p)[-1] != mine)


TABLE = {
    1: Rows(setup=_with_mystery,
            right=lambda c: dict(inner_pid=proc.nspid(c["host_pid"])[-1]),
            wrong={
                "type": lambda c: dict(inner_pid=str(proc.nspid(c["host_pid"])[-1])),
                "host-pid": lambda c: dict(inner_pid=c["host_pid"]),
                "other-process": lambda c: dict(inner_pid=_others(c)),
                "other": lambda c: dict(inner_pid=99),
            }),
    2: Rows(setup=_with_box,
            right=lambda c: dict(separate=c["want"]),
            wrong={
                "type": lambda c: dict(separate="net"),
                "unknown-kind": lambda c: dict(separate=c["want"] | {"network"}),
                "inverted": lambda c: dict(separate=c["shared"]),
                "too-many": lambda c: dict(separate=c["want"] | {"user"}),
                "too-few": lambda c: dict(separate=c["want"] - {"net"}),
            }),
}
