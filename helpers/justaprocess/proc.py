"""Process facts, read from /proc (proc(5)), psutil where it serves.

Everything here only reads.  ``procfs`` is a parameter so tests can point the
functions at a fake tree, as psutil's ``get_procfs_path`` does.
"""
from __future__ import annotations

import os
import re
import select
import select
import signal
from dataclasses import dataclass, field
from typing import NamedTuple

import psutil

from .errors import BadInput, NoSuchProcess

PROCFS = "/proc"

# The eight kinds of namespace, in the order lsns(8) and namespaces(7) list them.
NS_KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


class CgroupLine(NamedTuple):
    """One line of /proc/PID/cgroup (cgroups(7)): hierarchy id, controllers, path."""
    hierarchy: int
    controllers: tuple[str, ...]
    path: str


class CapMasks(NamedTuple):
    """The five capability sets of /proc/PID/status as 64-bit masks (capabilities(7))."""
    inheritable: int
    permitted: int
    effective: int
    bounding: int
    ambient: int


class IdMap(NamedTuple):
    """One line of /proc/PID/uid_map or gid_map (user_namespaces(7))."""
    inside: int
    outside: int
    count: int


@dataclass
class ProcessFacts:
    """What the kernel knows that makes a process a 'container' (or not)."""
    pid: int
    comm: str
    ppid: int
    namespaces: dict[str, int]
    cgroups: list[CgroupLine]
    caps: CapMasks
    nspid: tuple[int, ...]
    uid_map: list[IdMap] = field(default_factory=list)
    gid_map: list[IdMap] = field(default_factory=list)


# include/linux/sched.h: the flag of a kernel thread, in field 9 of /proc/PID/stat.
PF_KTHREAD = 0x00200000


def _valid(pid: int | str) -> int | str:
    """'self', or a PID: an int from 1 (a digit string is taken too). Anything else: BadInput."""
    if pid == "self":
        return pid
    if isinstance(pid, str) and pid.strip().lstrip("-").isdigit():
        pid = int(pid)
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise BadInput(f"{pid!r} is not a PID: give a process ID, a number from 1 (`ps -e` lists them)")
    if pid <= 0:
        raise BadInput(f"{pid} is not a valid PID: PIDs start at 1 (`ps -e` lists them; "
                       "0 and negative numbers name process groups in kill(2), never a process)")
    return pid


def check_pid(pid: int | str, procfs: str = PROCFS, *, user_space: bool = False,
              doing: str = "") -> int:
    """``pid`` as an int when it names a live process, else a lab error that says what to do.

    BadInput for what is not a PID (0, negative, not a number); NoSuchProcess for
    one that has exited; with ``user_space``, BadInput for a kernel thread
    (PF_KTHREAD, proc(5) stat field 9): it runs no program, so there is nothing
    to enter, move or signal (``doing`` says what was asked).
    """
    pid = _valid(pid)
    if pid == "self":
        pid = os.getpid()
    try:
        stat = _read(pid, "stat", procfs)
    except FileNotFoundError:
        raise NoSuchProcess(pid) from None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        raise NoSuchProcess(pid)
    if user_space and int(fields[6]) & PF_KTHREAD:
        raise BadInput(f"PID {pid} is a kernel thread ({comm}){': ' + doing if doing else ''}: it runs "
                       "no program of its own - give the PID of a user process (`ps -e` shows kernel "
                       "threads in [brackets])")
    return pid


def _path(pid: int | str, name: str, procfs: str) -> str:
    return os.path.join(procfs, str(_valid(pid)), name)


def _read(pid: int | str, name: str, procfs: str) -> str:
    try:
        with open(_path(pid, name, procfs)) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        if pid != "self" and not os.path.exists(os.path.join(procfs, str(pid))):
            raise NoSuchProcess(int(pid)) from None
        raise


def exists(pid: int, procfs: str = PROCFS) -> bool:
    return os.path.exists(os.path.join(procfs, str(pid)))


def running(pid: int, procfs: str = PROCFS, *, start: int | None = None) -> bool:
    """Alive and not a zombie - and, given ``start`` (:func:`start_time`), the same
    process: a recycled PID has another start time.  The lab's one liveness check,
    read in one go from /proc/PID/stat (no race between two reads of /proc).
    A zombie counts as gone: it holds nothing, and only its parent can reap it.
    """
    try:
        stat = _read(pid, "stat", procfs)
    except (NoSuchProcess, BadInput, OSError):
        return False
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0] != "Z" and (start is None or int(rest[19]) == start)


def namespaces(pid: int | str = "self", procfs: str = PROCFS) -> dict[str, int]:
    """{kind: inode} from the /proc/PID/ns/* links ('net:[4026531840]' -> 4026531840).

    Two processes are in the same namespace exactly when these numbers (and the
    nsfs device) are equal: namespaces(7), "The /proc/[pid]/ns/ directory".
    """
    out = {}
    for kind in NS_KINDS:
        try:
            link = os.readlink(_path(pid, f"ns/{kind}", procfs))
        except FileNotFoundError:
            if pid != "self" and not exists(int(pid), procfs):
                raise NoSuchProcess(int(pid)) from None
            continue  # a kernel without this kind (time needs Linux 5.6)
        out[kind] = int(link[link.index("[") + 1:-1])
    return out


def cgroups(pid: int | str = "self", procfs: str = PROCFS) -> list[CgroupLine]:
    """The lines of /proc/PID/cgroup. On cgroup v2 there is one: '0::/path'."""
    lines = []
    for line in _read(pid, "cgroup", procfs).splitlines():
        hid, ctrls, path = line.split(":", 2)
        lines.append(CgroupLine(int(hid), tuple(c for c in ctrls.split(",") if c), path))
    return lines


def status(pid: int | str = "self", procfs: str = PROCFS) -> dict[str, str]:
    """/proc/PID/status as a dict of raw strings."""
    out = {}
    for line in _read(pid, "status", procfs).splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def caps(pid: int | str = "self", procfs: str = PROCFS) -> CapMasks:
    """The five capability masks (CapInh, CapPrm, CapEff, CapBnd, CapAmb)."""
    st = status(pid, procfs)
    return CapMasks(*(int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")))


def nspid(pid: int | str = "self", procfs: str = PROCFS) -> tuple[int, ...]:
    """NSpid: this process's PID in each nested PID namespace, outermost first.

    ``nspid(host_pid)[-1]`` is the PID the process sees for itself (proc(5)).
    """
    return tuple(int(x) for x in status(pid, procfs)["NSpid"].split())


def _idmap(pid: int | str, name: str, procfs: str) -> list[IdMap]:
    return [IdMap(*map(int, line.split())) for line in _read(pid, name, procfs).splitlines()]


def uid_map(pid: int | str = "self", procfs: str = PROCFS) -> list[IdMap]:
    return _idmap(pid, "uid_map", procfs)


def gid_map(pid: int | str = "self", procfs: str = PROCFS) -> list[IdMap]:
    return _idmap(pid, "gid_map", procfs)


def start_time(pid: int, procfs: str = PROCFS) -> int:
    """Field 22 of /proc/PID/stat: clock ticks after boot at which the process started.

    (PID, start time) names a process for good: a recycled PID has another start time.
    """
    stat = _read(pid, "stat", procfs)
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def kill(pid: int, start: int | None = None, *, sig: int = signal.SIGKILL,
         timeout: float = 3.0) -> bool:
    """Send ``sig`` to one process and wait until it has exited; True when it is gone.

    pidfd_open(2) pins the process before its start time is compared, and
    pidfd_send_signal(2) signals what the pidfd names: a PID recycled in between is
    never hit.  The wait is poll(2) on the pidfd, readable once the process has
    exited (a zombie counts as gone, as in :func:`running`); nothing is reaped here:
    a parent that waits for its child still reads how it ended.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not running(pid, start=start):
            return True
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return True
        return _pidfd_exited(fd, timeout)
    finally:
        os.close(fd)


def wait_gone(pid: int, start: int | None = None, timeout: float = 3.0) -> bool:
    """Wait, on a pidfd, until the process (PID, start time) has exited; True when gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return not running(pid, start=start) or _pidfd_exited(fd, timeout)
    finally:
        os.close(fd)


def _pidfd_exited(fd: int, timeout: float) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000))))


class Mount(NamedTuple):
    """One line of /proc/PID/mountinfo (proc(5)), paths as seen from that process's root."""
    target: str                  # the mount point
    fstype: str
    source: str
    root: str                    # the part of the source file system mounted there
    options: tuple[str, ...]     # per-mount options (ro, nosuid ...)
    super_options: tuple[str, ...] = ()
    propagation: tuple[str, ...] = ()   # shared:N, master:N, unbindable (mount_namespaces(7))
    mount_id: int = 0
    parent_id: int = 0

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


def unescape(field_: str) -> str:
    """Paths in mountinfo escape space, tab, newline and backslash as octal (\\040 ...; proc(5))."""
    if "\\" not in field_:
        return field_
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def mountinfo(pid: int | str = "self", procfs: str = PROCFS) -> list[Mount]:
    """The mount table of a process's mount namespace, in mount order: the lab's one parser.

    Each line: ID PARENT MAJ:MIN ROOT TARGET OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    (proc(5), "/proc/pid/mountinfo"); paths decoded (a space is \\040 there).
    """
    return _parse_mountinfo(_read(pid, "mountinfo", procfs))


def _parse_mountinfo(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if len(a) < 6 or not b:
            continue
        out.append(Mount(unescape(a[4]), b[0], unescape(b[1]) if len(b) > 1 else "",
                         unescape(a[3]), tuple(a[5].split(",")),
                         tuple(b[2].split(",")) if len(b) > 2 else (), tuple(a[6:]),
                         int(a[0]), int(a[1])))
    return out


class _Watched:
    """This process's mount table as read through ``fd``, which stays open to be polled."""
    __slots__ = ("pid", "ns", "fd", "mounts")

    def __init__(self, pid: int, ns: int, fd: int, mounts: list[Mount]):
        self.pid, self.ns, self.fd, self.mounts = pid, ns, fd, mounts

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


_watched: _Watched | None = None


def own_mounts() -> list[Mount]:
    """This process's :func:`mountinfo`, parsed again only after its mount table changed.

    An open /proc/self/mountinfo is pollable: a mount, an unmount or a remount in
    the namespace marks it POLLPRI|POLLERR (proc(5), "/proc/pid/mounts"), so the lab
    reads the table when it changed, not on every cgroup it makes (the parse is
    most of a cgroup's creation in Python).  A change of propagation only (mount
    --make-private) is not signalled: read :func:`mountinfo` for those fields.  A
    forked child, or a process in another mount namespace, reads its own.
    """
    return list(own_table())


def own_table() -> list[Mount]:
    """own_mounts' table itself, not a copy: the same object until the table changes
    (callers that derive facts from it may keep them while it is the same object)."""
    global _watched
    w = _watched
    me = os.getpid()
    ns = os.stat(os.path.join(PROCFS, "self", "ns", "mnt")).st_ino
    if w is not None and w.pid == me and w.ns == ns:
        p = select.poll()
        p.register(w.fd, select.POLLPRI)
        if not p.poll(0):
            return w.mounts
    # Open first, then read: a change after the open is signalled on the next call.
    fd = os.open(os.path.join(PROCFS, "self", "mountinfo"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(fd, closefd=False) as f:
            mounts = _parse_mountinfo(f.read())
    except BaseException:
        os.close(fd)
        raise
    _watched = _Watched(me, ns, fd, mounts)  # the one it replaces closes its fd when let go
    return mounts


def mount_points(pid: int | str = "self", procfs: str = PROCFS) -> list[str]:
    """Just the mount points of :func:`mountinfo`."""
    return [m.target for m in mountinfo(pid, procfs)]


def facts(pid: int | str = "self", procfs: str = PROCFS) -> ProcessFacts:
    """All of the above for one process, in one object."""
    st = status(pid, procfs)
    return ProcessFacts(
        pid=int(st["Pid"]),
        comm=st["Name"],
        ppid=int(st["PPid"]),
        namespaces=namespaces(pid, procfs),
        cgroups=cgroups(pid, procfs),
        caps=CapMasks(*(int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))),
        nspid=tuple(int(x) for x in st["NSpid"].split()),
        uid_map=uid_map(pid, procfs),
        gid_map=gid_map(pid, procfs),
    )


def shared_namespaces(a: int | str, b: int | str, procfs: str = PROCFS) -> dict[str, bool]:
    """{kind: True when a and b are in the same namespace of that kind}."""
    na, nb = namespaces(a, procfs), namespaces(b, procfs)
    return {k: na[k] == nb[k] for k in na if k in nb}


def tree(pid: int | None = None) -> list[tuple[int, int, str]]:
    """(depth, pid, name) of a process and its descendants, parents first (psutil)."""
    try:
        root = psutil.Process(pid or os.getpid())
    except psutil.NoSuchProcess:
        raise NoSuchProcess(pid) from None
    out = []

    def walk(p: psutil.Process, depth: int) -> None:
        try:
            out.append((depth, p.pid, p.name()))
            kids = sorted(p.children(), key=lambda c: c.pid)
        except psutil.NoSuchProcess:
            return
        for kid in kids:
            walk(kid, depth + 1)

    walk(root, 0)
    return out
