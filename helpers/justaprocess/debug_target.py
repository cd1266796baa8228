"""Targets of the troubleshooting tools (chapters 08-15): anything that names a container,
resolved once into a :class:`Target` record (see :mod:`justaprocess.debug`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from . import _launch, capabilities, cgroups, lab, proc
from .errors import BadInput, LabError, NoSuchProcess

PROCFS = proc.PROCFS
NS_KINDS = proc.NS_KINDS
# include/linux/sched.h: the flag of a kernel thread in field 9 of /proc/PID/stat.
PF_KTHREAD = 0x00200000
SECCOMP_MODES = {0: "disabled", 1: "strict", 2: "filter"}  # proc(5), Seccomp:
# Where runc keeps its state: its default root, and the lab's (``runc --root``
# under each OCIContainer's folder, see runtimes.py).
RUNC_ROOTS = ("/run/runc",)


class TargetError(BadInput):
    """A target that cannot be troubleshot: the message names what was given and why."""


class NotAContainer(TargetError):
    """A live process that shares every namespace with the host: there is no container to enter."""


# --- resolving a target -----------------------------------------------------------

@dataclass
class Target:
    """A container (or a process) resolved once: everything a tool needs to act on it.

    Holds open file descriptors (the namespace files and a pidfd): ``close()`` it,
    or use it as a context manager.  The fds keep the namespaces alive even if the
    process exits meanwhile; :meth:`check` says whether it still runs.
    """
    given: str                       # what the caller passed, for messages
    kind: str                        # "hand-built" | "runc" | "podman" | "process"
    name: str                        # the container's name/id, or "PID N"
    pid: int                         # host PID of the container's main process
    start: int                       # its start time (a recycled PID has another)
    comm: str
    nspid: tuple[int, ...]           # its PID in each PID namespace, host first (NSpid)
    namespaces: dict[str, int]       # kind -> inode
    host_namespaces: dict[str, int]  # the same for the host (the lab's own process)
    ns_fds: dict[str, int] = field(default_factory=dict, repr=False)
    pidfd: int | None = field(default=None, repr=False)
    cgroups: dict[str, str] = field(default_factory=dict)  # controller or 'core' -> directory
    layout: str = ""
    root: str = ""                   # /proc/PID/root: the container's / as the host reaches it
    uid_map: list = field(default_factory=list)
    gid_map: list = field(default_factory=list)
    caps: capabilities.CapSets | None = None
    seccomp: int = 0
    seccomp_filters: int = 0
    no_new_privs: bool = False
    runtime_state: dict | None = None  # `runc state` / `podman inspect` as they said it
    obj: Any = field(default=None, repr=False, compare=False)  # the Container/OCIContainer given

    # -- derived facts --
    @property
    def differs(self) -> tuple[str, ...]:
        """The namespace kinds in which the target is not where the host is."""
        return tuple(k for k in NS_KINDS if k in self.namespaces
                     and self.namespaces[k] != self.host_namespaces.get(k))

    @property
    def pid_inside(self) -> int:
        """The PID the process sees for itself (last NSpid field)."""
        return self.nspid[-1]

    @property
    def cgroup_dirs(self) -> list[str]:
        """Distinct cgroup directories the process is in (one per hierarchy on v1/hybrid)."""
        return list(dict.fromkeys(self.cgroups.values()))

    def check(self) -> None:
        """Raise :class:`~justaprocess.errors.NoSuchProcess` when the process is gone (or recycled)."""
        if not proc.running(self.pid, start=self.start):
            raise NoSuchProcess(self.pid)

    def alive(self) -> bool:
        return proc.running(self.pid, start=self.start)

    def close(self) -> None:
        """Close the namespace fds and the pidfd; safe twice."""
        for fd in list(self.ns_fds.values()) + ([self.pidfd] if self.pidfd is not None else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self.ns_fds = {}
        self.pidfd = None

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    def describe(self) -> str:
        """One line: what it is, host PID, which namespaces are its own."""
        return (f"{self.kind} {self.name}: host PID {self.pid}, PID {self.pid_inside} inside, "
                f"own namespaces: {','.join(self.differs) or 'none'}")


def _host_reference(procfs: str = PROCFS) -> int | str:
    """Whose namespaces count as 'the host's': PID 1's when readable, else the lab's own.

    (On some machines /proc/1/ns answers EACCES: docs/kernel-notes.md, "The machines".)
    """
    try:
        proc.namespaces(1, procfs)
        return 1
    except (OSError, LabError):
        return "self"


def _stat_flags(pid: int, procfs: str) -> tuple[str, int, int]:
    """(comm, ppid, flags) from /proc/PID/stat (proc(5): fields 2, 4 and 9)."""
    with open(os.path.join(procfs, str(pid), "stat")) as f:
        stat = f.read()
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2:].split()
    return comm, int(rest[1]), int(rest[6])


def _check_pid(pid: int, given: str, procfs: str) -> None:
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TargetError(f"a target is a Container, a runc/podman container id or a PID: "
                          f"not {given}")
    if pid <= 0:
        raise TargetError(f"PID {pid} is not a valid process ID: PIDs start at 1 "
                          "(find a container's with `runc state ID`, c.pid, or `ps`)")
    try:
        comm, ppid, flags = _stat_flags(pid, procfs)
    except FileNotFoundError:
        raise TargetError(f"PID {pid} is not running: has the container exited? "
                          "(list live ones with `runc list` or lab.leftovers())") from None
    if flags & PF_KTHREAD or pid == 2 or ppid == 2:
        raise TargetError(f"PID {pid} is a kernel thread ({comm}): it has no container - "
                          "kernel threads have no user-space program, root or cgroup limits to look at")
    if not proc.running(pid, procfs):  # the one liveness check: a zombie counts as gone
        raise TargetError(f"PID {pid} ({comm}) is a zombie: it has exited and waits for its "
                          "parent to reap it; nothing is left to enter")


def _runc_roots() -> list[str]:
    roots = []
    run = lab.run_dir()
    if os.path.isdir(run):
        for n in sorted(os.listdir(run)):
            st = os.path.join(run, n, "state")
            if lab.is_lab_name(n) and os.path.isdir(st):
                roots.append(st)
    return roots + [r for r in RUNC_ROOTS if os.path.isdir(r)]


def runc_state(ident: str) -> tuple[dict, str] | None:
    """`runc state ID` from whichever runc root knows ``ident``: (state, root), or None."""
    runc = shutil.which("runc", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin",
                                                       "/usr/bin", "/sbin"]))
    if runc is None:
        return None
    for root in _runc_roots():
        if not os.path.isdir(os.path.join(root, ident)):
            continue
        r = _launch.tool([runc, "--root", root, "state", ident], timeout=20)
        if r.returncode == 0:
            return json.loads(r.stdout), root
    return None


DEFAULT_PODMAN_GRAPHROOT = "/var/lib/containers/storage"


def podman_pid(name: str) -> tuple[int, dict] | None:
    """The host PID of a podman container (`podman inspect`), or None without podman/container.

    Looked up in podman's default store, then in the lab's own podman stores (the
    folders of :mod:`justaprocess.podman`, each with its own containers.conf).
    """
    exe = shutil.which("podman")
    if exe is None:
        return None
    from . import _podman_store
    # podman's own store only where it already exists: a first `podman inspect` would
    # create /var/lib/containers/storage and mount its overlay folder - objects the lab
    # did not make and would leave behind (containers-storage.conf(5): graphroot).
    stores = [None] if os.path.isdir(DEFAULT_PODMAN_GRAPHROOT) else []
    run = lab.run_dir()
    if os.path.isdir(run):
        stores += [os.path.join(run, n) for n in sorted(os.listdir(run))
                   if lab.is_lab_name(n) and os.path.exists(os.path.join(run, n, _podman_store.MARK))]
    for store in stores:
        args = ["inspect", "--type", "container", name]
        if store is None:
            r = _launch.tool([exe, *args], timeout=30)
        else:
            r = _podman_store._cli(store, args, timeout=30, check=False)
        if r.returncode == 0:
            info = json.loads(r.stdout)[0]
            return int(info["State"]["Pid"] or 0), info
    return None


def _pid_of(x, procfs: str) -> tuple[int, str, str, dict | None, Any]:
    """(pid, kind, name, runtime state, object) for anything a target may be."""
    from . import container, runtimes
    if isinstance(x, Target):
        return x.pid, x.kind, x.name, x.runtime_state, x.obj
    if isinstance(x, container.Container):
        if not x.pid or not x.running():
            raise TargetError(f"container {x.name} is {x.state}: start() it first, "
                              "a container that is not running has no process to enter")
        return x.pid, "hand-built", x.name, None, x
    if isinstance(x, runtimes.OCIContainer):
        if not x.pid or not x.running():
            raise TargetError(f"{x.runtime} container {x.name} is not running: start() it first")
        return x.pid, x.runtime, x.name, None, x
    if hasattr(x, "target") and not isinstance(x, (str, int)):  # a scenario (scenarios.py)
        return _pid_of(x.target, procfs)
    if isinstance(x, str):
        s = x.strip()
        if s.lstrip("-").isdigit():
            return int(s), "process", f"PID {int(s)}", None, None
        found = runc_state(s)
        if found:
            state, root = found
            if state.get("status") != "running" or not state.get("pid"):
                raise TargetError(f"runc container {s} is {state.get('status')}: it has no "
                                  "running process to look at")
            state["root"] = root
            return int(state["pid"]), "runc", s, state, None
        pod = podman_pid(s)
        if pod:
            pid, info = pod
            if not pid:
                raise TargetError(f"podman container {s} is not running")
            return pid, "podman", s, info, None
        tried = "runc (" + ", ".join(_runc_roots() or ["no state roots"]) + ")"
        tried += ", podman" if shutil.which("podman") else " (podman is not installed)"
        raise TargetError(f"no container named {s!r}: looked in {tried}. Give a Container, "
                          "a runc id from `runc list`, or a host PID")
    if isinstance(x, int) and not isinstance(x, bool):
        return x, "process", f"PID {x}", None, None
    raise TargetError(f"a target is a Container, an OCIContainer, a runc/podman container id or "
                      f"a PID: not {type(x).__name__} {x!r}")


def target(x, *, allow_host: bool = False, procfs: str = PROCFS) -> Target:
    """Resolve anything that names a container into a :class:`Target`.

    ``allow_host``: accept a process that shares every namespace with the host
    (chapter 10 compares one); by default that is a :class:`NotAContainer` error.
    """
    pid, kind, name, state, obj = _pid_of(x, procfs)
    given = name if kind != "process" else f"PID {pid}"
    _check_pid(pid, repr(x), procfs)
    start = proc.start_time(pid, procfs)
    # Open the namespace files first: from here on, the namespaces stay alive for us.
    fds: dict[str, int] = {}
    pidfd = None
    try:
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None  # Linux < 5.3: the start time still guards against recycling
        for k in NS_KINDS:
            p = os.path.join(procfs, str(pid), "ns", k)
            try:
                fds[k] = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not proc.running(pid, procfs, start=start):
                    raise NoSuchProcess(pid) from None
                continue  # a kernel without this kind
            except PermissionError:
                raise TargetError(
                    f"PID {pid}: the kernel refuses to open {p} even to root (EACCES, ptrace "
                    "access mode check of proc(5)): this process is outside the lab's reach on "
                    "this machine - try a container's PID") from None
        st = proc.status(pid, procfs)
        if not proc.running(pid, procfs, start=start):
            raise NoSuchProcess(pid)  # gone, or recycled between the two reads
        ns = {k: os.fstat(fd).st_ino for k, fd in fds.items()}
        host = proc.namespaces(_host_reference(procfs), procfs)
        t = Target(given=given, kind=kind, name=name, pid=pid, start=start, comm=st["Name"],
                   nspid=tuple(int(v) for v in st["NSpid"].split()), namespaces=ns,
                   host_namespaces=host, ns_fds=fds, pidfd=pidfd, layout=cgroups.layout(),
                   root=os.path.join(procfs, str(pid), "root"),
                   uid_map=proc.uid_map(pid, procfs), gid_map=proc.gid_map(pid, procfs),
                   caps=capabilities.from_masks(proc.caps(pid, procfs)),
                   seccomp=int(st.get("Seccomp", "0")),
                   seccomp_filters=int(st.get("Seccomp_filters", "0")),
                   no_new_privs=st.get("NoNewPrivs", "0") == "1", runtime_state=state, obj=obj)
        t.cgroups = {k: p.path for k, p in cgroups.places_of(pid, procfs=procfs).items()}
    except BaseException:
        for fd in list(fds.values()) + ([pidfd] if pidfd is not None else []):
            os.close(fd)
        raise
    if not t.differs and not allow_host:
        t.close()
        raise NotAContainer(f"{given} ({t.comm}) is in no container: it shares all its namespaces "
                            "with the host, so there is nothing to enter - look at it with host "
                            "tools, or pass allow_host=True")
    return t


