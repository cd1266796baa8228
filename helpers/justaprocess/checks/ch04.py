"""Checks of 04 · Capabilities.

Every check runs the real thing: the learner's answer is tried in a child with
exactly those capabilities, and the kernel says whether it was right.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import random
import socket
import struct
import sys

from .. import _libc, capabilities as caps
from ..errors import BadInput
from . import Rows, describe, expect_collection, expect_int, expect_str, exercise, right, run_first, wrong

NAMES = "a list of capability names like 'cap_chown' ([] if none)"

# --- exercise 1: what is missing from the bounding set? -------------------------


def _bounding_now() -> set[str]:
    """The names of the bits set in CapBnd of this process (read, never assumed)."""
    return set(caps.sets().bounding)


def _known() -> set[str]:
    return {c.name for c in caps.all_caps()}


def _cap_names(value, name: str, what: str) -> list[str]:
    """Capability names as the kernel's cap_name() spells them (else a wrong of its own kind)."""
    if isinstance(value, (list, tuple, set, frozenset)) and value and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise wrong("bit-numbers",
                    f"{sorted(value)} are bit numbers; `{name}` should hold names like 'cap_chown'",
                    f"{sorted(value)} are bit numbers: caps.cap_name(n) turns bit n into its name, "
                    f"e.g. caps.cap_name({sorted(value)[0]}) == {caps.cap_name(sorted(value)[0])!r}")
    items = expect_collection(value, name, what, str, "a name like 'cap_chown'")
    known = _known()
    unknown = [v for v in items if v.lower() not in known]
    if unknown:
        raise wrong("unknown-name",
                    f"{unknown[0]!r} is not a capability this kernel knows: names look like "
                    "'cap_chown' (`python -m justaprocess caps --list`)")
    upper = [v for v in items if v != v.lower()]
    if upper:
        raise wrong("upper-case",
                    f"{upper[0]!r}: write names as the kernel's tools print them, lower case "
                    f"like {upper[0].lower()!r} (caps.cap_name(n) gives that spelling)")
    return items


@exercise(1, title="read, don't assume")
def check_bounding(missing_from_bounding):
    answer = set(_cap_names(missing_from_bounding, "missing_from_bounding", NAMES))
    bounding = _bounding_now()
    truth = _known() - bounding
    if answer == truth:
        return right("read from CapBnd, never assumed (machines differ: compare with a classmate's)")
    if answer and answer == bounding:
        return wrong("inverted",
                     "those are the capabilities that *are* in the bounding set: the exercise asks "
                     "for the ones this kernel knows that are not",
                     "bit n of CapBnd set means capability n is in the set: keep the n from 0 to "
                     "cap_last_cap whose bit is 0")
    present = sorted(answer & bounding)
    if present:
        return wrong("present",
                     f"{len(present)} of your names {'is' if len(present) == 1 else 'are'} in the bounding set: bit n set in CapBnd "
                     "means capability n is there",
                     f"{', '.join(present[:3])} {'is' if len(present) == 1 else 'are'} in the "
                     "bounding set (its bit in CapBnd is 1): keep only the capabilities whose bit is 0")
    return wrong("incomplete",
                 f"{len(truth - answer)} more capability(ies) this kernel knows are not in the "
                 "bounding set: check every n from 0 to /proc/sys/kernel/cap_last_cap",
                 "go through range(last + 1), last from /proc/sys/kernel/cap_last_cap; keep n "
                 "when CapBnd >> n & 1 is 0")


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


def _failing_line(r: caps.RunResult) -> str:
    """The source line of the service that failed, from the child's traceback."""
    lines = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.strip()]
    return lines[-2] if len(lines) >= 2 else ""


@exercise(2, title="the smallest set")
def check_smallest(smallest):
    names = [n.lower() for n in _cap_names_any_case(smallest, "smallest")]
    r = run_service(names)
    if not r.ok:
        how = r.errno_name or type(r.exception).__name__ if r.exception else f"exit {r.returncode}"
        line = _failing_line(r)
        return wrong("fails",
                     f"with {sorted(names) or 'nothing'} the service fails ({how}): which call "
                     "failed? run_service(keep=[...]) and read its .exception and .stderr",
                     f"with {sorted(names) or 'nothing'} the call `{line}` fails with {how}: "
                     "capabilities(7) names the capability that allows it")
    extra = [n for n in names if run_service([x for x in names if x != n]).ok]
    if extra:
        return wrong("too-many",
                     f"it works, but not with the fewest: drop one capability at a time and run "
                     "the service again",
                     f"it works, but also without {', '.join(extra)}")
    return right(f"{sorted(names)} is the smallest set: drop any one and the service fails")


def _cap_names_any_case(value, name: str) -> list[str]:
    """Names for caps.run (either spelling); bit numbers and unknown names get their hints."""
    if isinstance(value, (list, tuple, set, frozenset)) and value and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise wrong("bit-numbers", f"{sorted(value)} are bit numbers; `{name}` should hold names "
                                   "like 'cap_chown' (caps.cap_name(n) gives the name of bit n)")
    items = expect_collection(value, name, "a list of capability names like 'cap_chown'", str,
                              "a name like 'cap_chown'")
    known = _known()
    unknown = [v for v in items if v.lower() not in known]
    if unknown:
        raise wrong("unknown-name",
                    f"{unknown[0]!r} is not a capability this kernel knows: names look like "
                    "'cap_chown' (`python -m justaprocess caps --list`)")
    return items


# --- exercise 3: an errno, and the one capability that fixes it ---------------------

def mystery() -> str:
    """Something a container's process wants to do (run it in a child)."""
    os.nice(-5)  # lower the nice value = raise its own scheduling priority
    return "done"


@exercise(3, title="an errno, and one capability")
def check_mystery(errno_seen, fix):
    if isinstance(errno_seen, int) and not isinstance(errno_seen, bool):
        raise wrong("type", f"`errno_seen` should be an errno name (a string) like 'EPERM'; it is "
                            f"{describe(errno_seen)}: errno.errorcode[{errno_seen}] is its name")
    seen = expect_str(errno_seen, "errno_seen", "an errno name (a string) like 'EPERM'")
    if isinstance(fix, (list, tuple, set, frozenset)):
        raise wrong("type", f"`fix` should be one capability name (a string) like 'cap_chown'; "
                            f"it is {describe(fix)}")
    fix_name = expect_str(fix, "fix", "one capability name (a string) like 'cap_chown'")
    failing = caps.run(mystery, keep=caps.ENGINE_DEFAULT)
    if failing.ok:
        return wrong("machine", "mystery() works under the engine default on this machine: "
                                "nothing to fix here (is RLIMIT_NICE raised? see nice(2))")
    if seen.strip() != failing.errno_name:
        if seen.strip().upper() == failing.errno_name:
            return wrong("spelling", f"{seen!r}: errno names are written in capitals, like 'EPERM'")
        return wrong("wrong-errno",
                     f"{seen!r} is not what the kernel answered: run caps.run(ch04.mystery, "
                     "keep=caps.ENGINE_DEFAULT) and read the result's .errno_name",
                     f"{seen!r} is not it: the cell above stored that run in `failed`; "
                     "failed.errno_name is the name")
    if fix_name.lower() not in _known():
        return wrong("unknown-name",
                     f"{fix_name!r} is not a capability this kernel knows: names look like "
                     "'cap_chown' (`python -m justaprocess caps --list`)")
    fixed = caps.run(mystery, keep=list(caps.ENGINE_DEFAULT) + [fix_name])
    if not fixed.ok:
        return wrong("wrong-cap",
                     f"errno_seen is right; with {fix_name} added it still fails "
                     f"({fixed.errno_name or fixed.exception}): which call does mystery() make?",
                     f"errno_seen is right; mystery() calls nice(2): its ERRORS section names the "
                     "capability that lets a process raise its priority "
                     "(`python -m justaprocess caps --list` lists them all)")
    return right(f"{failing.errno_name} from nice(2), and {fix_name.lower()} fixes it - one "
                 "capability, not all of root")


# --- exercise 4: whose root? -------------------------------------------------------------

def packed_program() -> caps.FileCopy:
    """A lab copy of Python whose capability was set as an image build sets it: by root of a
    user namespace, whose uid 0 is some unprivileged host uid (a revision 3 xattr)."""
    copy = caps.copy_binary(sys.executable, note="exercise 4: a program from an image")
    caps.setcap_in_userns(copy.path, ["cap_net_bind_service"], root_uid=100000 + 65536 * random.randint(1, 15))
    return copy


def _xattr(program) -> bytes:
    path = getattr(program, "path", program)
    try:
        return os.getxattr(path, caps.XATTR)
    except (OSError, TypeError):
        raise run_first("the cell that makes `program` (ch04.packed_program())") from None


@exercise(4, context=("program",), title="whose root?")
def check_rootid(rootid_seen, program):
    raw = _xattr(program)
    if len(raw) != 24:
        raise run_first("the cell that makes `program` (its xattr is not a revision 3 one)")
    truth = struct.unpack_from("<I", raw, 20)[0]
    seen = expect_int(rootid_seen, "rootid_seen", "a host uid (an int) like 100000")
    if seen == truth:
        return right("that host uid it is: the capability counts only in a user namespace whose root "
                     "is that uid (and in its children); on the host, and in a container mapped "
                     "elsewhere, the file grants nothing")
    if seen == 0:
        return wrong("inside-uid",
                     "0 is who ran setcap *inside* the namespace; the kernel stored which host uid "
                     "that root is",
                     "read the xattr (os.getxattr(program.path, 'security.capability')): its last "
                     "4 bytes are the rootid (struct vfs_ns_cap_data, capability.h)")
    if seen in (3, struct.unpack_from("<I", raw)[0]):
        return wrong("revision",
                     f"{seen} is the revision (the first 4 bytes, magic_etc); the rootid is elsewhere "
                     "in the 24 bytes",
                     "the rootid is the last 4 bytes, little-endian: struct.unpack_from('<I', raw, 20)")
    if seen == int.from_bytes(raw[20:24], "big"):
        return wrong("big-endian",
                     "right bytes, wrong order: the xattr's numbers are little-endian",
                     "int.from_bytes(raw[20:24], 'little'), or struct.unpack_from('<I', raw, 20)")
    return wrong("wrong-uid",
                 f"{seen} is not the rootid of this file: read its xattr, do not reuse the lesson's "
                 "100000",
                 "caps.get_file_caps(program.path).rootid decodes it; by hand: the last 4 bytes of "
                 "os.getxattr(program.path, 'security.capability'), little-endian")


@contextlib.contextmanager
def _with_program():
    program = packed_program()
    try:
        raw = os.getxattr(program.path, caps.XATTR)
        yield {"program": program, "raw": raw, "truth": struct.unpack_from("<I", raw, 20)[0]}
    finally:
        caps.remove_copy(program)


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

def _missing_now() -> list[str]:
    return sorted(_known() - _bounding_now())


def _one_present() -> str:
    return sorted(_bounding_now())[0]


SMALLEST = ["cap_net_bind_service", "cap_net_raw", "cap_chown"]

TABLE = {
    1: Rows(right=lambda c: dict(missing_from_bounding=_missing_now()),
            wrong={
                "type": lambda c: dict(missing_from_bounding=(_missing_now() or ["cap_chown"])[0]),
                "bit-numbers": lambda c: dict(missing_from_bounding=[
                    caps.cap_number(n) for n in _missing_now()] or [0]),
                "upper-case": lambda c: dict(missing_from_bounding=[
                    n.upper() for n in _missing_now()] or ["CAP_CHOWN"]),
                "unknown-name": lambda c: dict(missing_from_bounding=["cap_sys_everything"]),
                "inverted": lambda c: dict(missing_from_bounding=sorted(_bounding_now())),
                "present": lambda c: dict(missing_from_bounding=_missing_now() + [_one_present()]),
                # off by one: only applies where something is missing (the dev machines)
                "incomplete": lambda c: dict(missing_from_bounding=_missing_now()[1:])
                if _missing_now() else None,
            }),
    2: Rows(right=lambda c: dict(smallest=SMALLEST),
            wrong={
                "type": lambda c: dict(smallest="cap_net_bind_service"),
                "bit-numbers": lambda c: dict(smallest=[10, 13, 0]),
                "unknown-name": lambda c: dict(smallest=["cap_net_bind", "cap_net_raw"]),
                "fails": lambda c: dict(smallest=["cap_net_bind_service", "cap_net_raw"]),
                "too-many": lambda c: dict(smallest=SMALLEST + ["cap_net_admin"]),
            }),
    3: Rows(right=lambda c: dict(errno_seen="EPERM", fix="cap_sys_nice"),
            wrong={
                "type:int": lambda c: dict(errno_seen=1, fix="cap_sys_nice"),
                "type:list": lambda c: dict(errno_seen="EPERM", fix=["cap_sys_nice"]),
                "spelling": lambda c: dict(errno_seen="eperm", fix="cap_sys_nice"),
                "wrong-errno": lambda c: dict(errno_seen="EACCES", fix="cap_sys_nice"),
                "unknown-name": lambda c: dict(errno_seen="EPERM", fix="cap_nice"),
                "wrong-cap": lambda c: dict(errno_seen="EPERM", fix="cap_sys_resource"),
            }),
    4: Rows(setup=_with_program,
            right=lambda c: dict(rootid_seen=c["truth"]),
            wrong={
                "type": lambda c: dict(rootid_seen=str(c["truth"])),
                "inside-uid": lambda c: dict(rootid_seen=0),
                "revision": lambda c: dict(rootid_seen=3),
                "big-endian": lambda c: dict(rootid_seen=int.from_bytes(c["raw"][20:24], "big")),
                "wrong-uid": lambda c: dict(rootid_seen=100000),
            }),
}
