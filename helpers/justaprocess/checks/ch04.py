"""Checks of 04 · Capabilities.

Every check runs the real thing: the learner's answer is tried in a child with
exactly those capabilities, and the kernel says whether it was right.
"""
from __future__ import annotations

import errno as _errno
import os
import socket

from .. import _libc, capabilities as caps
from ..errors import BadInput
from . import Verdict, missing, verdict

# --- exercise 1: what is missing from the bounding set? -------------------------


def check_bounding(missing_from_bounding) -> Verdict:
    if (m := missing(missing_from_bounding=missing_from_bounding)):
        return m
    if isinstance(missing_from_bounding, str):
        missing_from_bounding = [missing_from_bounding] if missing_from_bounding else []
    try:
        answer = {caps.cap_name(caps.cap_number(n)) for n in missing_from_bounding}
    except BadInput as exc:
        return Verdict(False, str(exc))
    truth = {c.name for c in caps.all_caps()} - set(caps.sets().bounding)
    return verdict(answer == truth,
                   "read from CapBnd, never assumed (machines differ: compare with a classmate's)",
                   "compare every capability this kernel knows (0 .. /proc/sys/kernel/cap_last_cap) "
                   "with the bits set in CapBnd of /proc/self/status; "
                   "a list of names like ['cap_chown'], or [] if none is missing")


# --- exercise 2: the smallest set a program needs --------------------------------

def service() -> str:
    """A tiny 'network service' (run it in a child, never in the kernel):

    listens on port 80 of 127.0.0.1, opens a raw ICMP socket for health pings,
    and hands its log file to the unprivileged user 65534.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 80))
        s.listen()
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    log = os.memfd_create("jap-service-log")
    try:
        os.fchown(log, 65534, -1)
    finally:
        os.close(log)
    return "service started"


def run_service(keep) -> caps.RunResult:
    """Run :func:`service` keeping only ``keep``, in its own network namespace (port 80 is free)."""
    return caps.run(service, keep=keep, unshare=_libc.CLONE_NEWNET)


def check_smallest(smallest) -> Verdict:
    if (m := missing(smallest=smallest)):
        return m
    if isinstance(smallest, str):
        smallest = [smallest]
    try:
        names = [caps.cap_name(caps.cap_number(n)) for n in smallest]
    except BadInput as exc:
        return Verdict(False, str(exc))
    r = run_service(names)
    if not r.ok:
        return Verdict(False, f"with {names or 'nothing'} the service fails: "
                              f"{r.errno_name or r.error} - which call failed? "
                              "(.error of run_service(...) says how, the last lines of its .stderr where)")
    extra = [n for n in names if run_service([x for x in names if x != n]).ok]
    return verdict(not extra,
                   f"{sorted(names)} is the smallest set: drop any one and the service fails",
                   f"it works, but not with the fewest: it also works without {extra}")


# --- exercise 3: an errno, and the one capability that fixes it ---------------------

def mystery() -> str:
    """Something a container's process wants to do (run it in a child)."""
    os.nice(-5)  # lower the nice value = raise its own scheduling priority
    return "done"


def _errno_name(value) -> str:
    if isinstance(value, int):
        return _errno.errorcode.get(value, str(value))
    return str(value).strip().upper()


def check_mystery(errno_seen, fix) -> Verdict:
    if (m := missing(errno_seen=errno_seen, fix=fix)):
        return m
    failing = caps.run(mystery, keep=caps.ENGINE_DEFAULT)
    if failing.ok:
        return Verdict(False, "mystery() works under the engine default on this machine: "
                              "nothing to fix here (is RLIMIT_NICE raised? see nice(2))")
    if _errno_name(errno_seen) != failing.errno_name:
        return Verdict(False, f"{errno_seen!r} is not what the kernel answered: run "
                              "caps.run(ch04.mystery, keep=caps.ENGINE_DEFAULT) and read "
                              ".errno_name")
    try:
        fixed = caps.run(mystery, keep=list(caps.ENGINE_DEFAULT) + [fix])
    except BadInput as exc:
        return Verdict(False, str(exc))
    return verdict(fixed.ok,
                   f"{failing.errno_name} from nice(2), and {caps.cap_name(caps.cap_number(fix))} "
                   "fixes it - one capability, not all of root",
                   f"with {fix} added it still fails ({fixed.errno_name}): nice(2) and "
                   "capabilities(7) name the capability that lets a process raise its priority "
                   "(`python -m justaprocess caps --list`)")
