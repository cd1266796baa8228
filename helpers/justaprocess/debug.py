"""Troubleshooting any container on the machine: one idea of a target, and the host's view of it.

Every tool of chapters 08-15 takes a *target* and resolves it once
(../TROUBLESHOOTING.md): a hand-built :class:`~justaprocess.container.Container`,
a runc container (an :class:`~justaprocess.runtimes.OCIContainer` or its id),
a podman container (where podman is installed), or a bare host PID - all
become the same :class:`Target` record: the host PID, the eight namespace
files opened as fds (so the target cannot race away between "look" and
"join": setns(2) takes an fd), its cgroup directories (v1, hybrid or v2), its
root as the host reaches it (``/proc/PID/root``, proc(5)), uid/gid maps,
capability sets, seccomp mode and no_new_privs.

:func:`inspect` is the container-aware host view that host tools lack
(``python -m justaprocess inspect PID [--json]``): which namespaces differ
from the host's, the PID chain (NSpid), root and cwd, the cgroup with limits
and use, capabilities, seccomp, listening sockets *inside* its network
namespace (sock_diag(7) through pyroute2) and its mounts.

The Jupyter kernel never joins anything itself: the socket listing runs in a
child process that joined the target's network namespace.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import capabilities, cgroups, lab, proc
from .errors import BadInput, LabError, MissingTool, NoSuchProcess

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
        if not lab._alive(self.pid, self.start):
            raise NoSuchProcess(self.pid)

    def alive(self) -> bool:
        return lab._alive(self.pid, self.start)

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
    if proc.status(pid, procfs)["State"].startswith("Z"):
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
        r = subprocess.run([runc, "--root", root, "state", ident], capture_output=True,
                           text=True, timeout=20)
        if r.returncode == 0:
            return json.loads(r.stdout), root
    return None


def podman_pid(name: str) -> tuple[int, dict] | None:
    """The host PID of a podman container (`podman inspect`), or None without podman/container.

    Looked up in podman's default store, then in the lab's own podman stores (the
    folders of :mod:`justaprocess.podman`, each with its own containers.conf).
    """
    exe = shutil.which("podman")
    if exe is None:
        return None
    from . import _podman_store
    stores = [None]
    run = lab.run_dir()
    if os.path.isdir(run):
        stores += [os.path.join(run, n) for n in sorted(os.listdir(run))
                   if lab.is_lab_name(n) and os.path.exists(os.path.join(run, n, _podman_store.MARK))]
    for store in stores:
        args = ["inspect", "--type", "container", name]
        if store is None:
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
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
                if not os.path.exists(os.path.join(procfs, str(pid))):
                    raise NoSuchProcess(pid) from None
                continue  # a kernel without this kind
            except PermissionError:
                raise TargetError(
                    f"PID {pid}: the kernel refuses to open {p} even to root (EACCES, ptrace "
                    "access mode check of proc(5)): this process is outside the lab's reach on "
                    "this machine - try a container's PID") from None
        st = proc.status(pid, procfs)
        if proc.start_time(pid, procfs) != start:
            raise NoSuchProcess(pid)  # recycled between the two reads
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


# --- the host's view: inspect --------------------------------------------------------

class NsRow(NamedTuple):
    kind: str
    inode: int
    own: bool        # not the host's


class Proc(NamedTuple):
    host_pid: int
    pid_inside: int
    comm: str


class Socket(NamedTuple):
    proto: str
    address: str
    port: int
    pids: tuple[int, ...]    # host PIDs holding it (like `ss -p`)
    loopback_only: bool      # 127.0.0.0/8 or ::1: unreachable from outside the namespace


@dataclass
class Inspection:
    """What ``inspect PID`` shows: the container as the host sees it, in kernel terms."""
    kind: str
    name: str
    pid: int
    nspid: tuple[int, ...]
    comm: str
    namespaces: list[NsRow]
    root: str           # readlink /proc/PID/root: its root as a path in its own mount namespace
    cwd: str            # readlink /proc/PID/cwd
    root_files: list[str]  # a peek at / through /proc/PID/root
    processes: list[Proc]  # every process in its PID namespace (host PID, PID inside)
    layout: str
    cgroups: dict[str, str]
    stats: dict
    caps: dict[str, list[str]]
    seccomp: str
    seccomp_filters: int
    no_new_privs: bool
    uid_map: list[tuple[int, int, int]]
    sockets: list[Socket]
    mounts: list[dict]

    def asdict(self) -> dict:
        d = dict(self.__dict__)
        d["namespaces"] = [r._asdict() for r in self.namespaces]
        d["processes"] = [p._asdict() for p in self.processes]
        d["sockets"] = [s._asdict() for s in self.sockets]
        return d

    def format(self) -> str:
        j = ", ".join
        lines = [f"{self.kind} {self.name}: host PID {self.pid} ({self.comm}), "
                 f"PID chain (NSpid) {' -> '.join(map(str, self.nspid))}"]
        own = [r.kind for r in self.namespaces if r.own]
        lines.append(f"  namespaces  own: {j(own) or 'none'}; shared with the host: "
                     f"{j(r.kind for r in self.namespaces if not r.own) or 'none'}")
        lines.append(f"  root        /proc/{self.pid}/root (its / is {self.root} in its mount ns)"
                     f"; cwd {self.cwd}")
        lines.append(f"  processes   " + j(f"{p.host_pid}={p.pid_inside}:{p.comm}"
                                          for p in self.processes) + "  (host PID=PID inside)")
        by_dir: dict[str, list[str]] = {}
        for k, p in self.cgroups.items():
            by_dir.setdefault(p, []).append(k)
        for p, ks in by_dir.items():
            lines.append(f"  cgroup      {p}  ({','.join(ks)})")
        s = self.stats
        mem = (f"memory {cgroups.human(s.get('memory_current'))} of "
               f"{cgroups.human(s.get('memory_max')) if s.get('memory_max') else 'max'}, "
               f"OOM kills {s.get('oom_kills')}")
        pids = f"pids {s.get('pids_current')} of {s.get('pids_max') or 'max'} (refused forks {s.get('pids_max_events')})"
        cpu = (f"cpu throttled {s.get('cpu_throttled')} of {s.get('cpu_periods')} periods"
               if s.get("cpu_quota") else "cpu no quota")
        lines.append(f"  limits      {mem}; {pids}; {cpu}")
        eff = self.caps.get("effective", [])
        lines.append(f"  caps        {len(eff)} effective: {j(eff) or 'none'}")
        lines.append(f"  security    seccomp {self.seccomp} ({self.seccomp_filters} filters), "
                     f"no_new_privs {self.no_new_privs}, uid map "
                     + (j(f'{a}->{b} x{c}' for a, b, c in self.uid_map) or "none"))
        if self.sockets:
            for so in self.sockets:
                lines.append(f"  listening   {so.proto} {so.address}:{so.port} pids {j(map(str, so.pids)) or '?'}"
                             + ("  (loopback only: unreachable from outside)" if so.loopback_only else ""))
        else:
            lines.append("  listening   nothing")
        lines.append(f"  mounts      {len(self.mounts)}: " + j(f"{m['target']}({m['fstype']})"
                                                                 for m in self.mounts[:12])
                     + (" ..." if len(self.mounts) > 12 else ""))
        return "\n".join(lines)


def processes(t: Target, procfs: str = PROCFS) -> list[Proc]:
    """Every process in the target's PID namespace (or its descendants'), host PIDs first."""
    want = t.namespaces.get("pid")
    out = []
    for name in os.listdir(procfs):
        if not name.isdigit():
            continue
        try:
            if os.stat(os.path.join(procfs, name, "ns", "pid")).st_ino != want:
                continue
            st = proc.status(int(name), procfs)
        except (OSError, LabError):
            continue  # exited meanwhile
        ns = st["NSpid"].split()
        out.append(Proc(int(name), int(ns[-1]), st["Name"]))
    return sorted(out, key=lambda p: p.pid_inside)


def _socket_owners(netns: int, procfs: str = PROCFS) -> dict[int, set[int]]:
    """{socket inode: host PIDs with it open}, for the processes of one network namespace."""
    owners: dict[int, set[int]] = {}
    for name in os.listdir(procfs):
        if not name.isdigit():
            continue
        try:
            if os.stat(os.path.join(procfs, name, "ns", "net")).st_ino != netns:
                continue
            fds = os.listdir(os.path.join(procfs, name, "fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(os.path.join(procfs, name, "fd", fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                owners.setdefault(int(link[8:-1]), set()).add(int(name))
    return owners


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


def listening(t: Target) -> list[Socket]:
    """Listening sockets inside the target's network namespace (sock_diag(7) via pyroute2).

    Run in a child process that joined the target's network namespace (the
    namespace fd held by the target): the host's own sockets never show.
    """
    t.check()
    raw = _sockdiag_in(t)
    owners = _socket_owners(t.namespaces["net"])
    return [Socket(s["proto"], s["address"], s["port"], tuple(sorted(owners.get(s["inode"], ()))),
                   _loopback(s["address"])) for s in raw]


def _sockdiag_in(t: Target) -> list[dict]:
    argv = [sys.executable, "-I", "-c",
            "import sys; sys.path[:0] = [%r]; from justaprocess._sockdiag import main; main()"
            % os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    if t.namespaces.get("net") == proc.namespaces("self").get("net"):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    else:
        nsenter = shutil.which("nsenter")
        if nsenter is None:
            raise MissingTool("nsenter", "util-linux")
        # nsenter(1) --net=FILE: setns(2) into the network namespace only, then exec.
        fd = t.ns_fds["net"]
        r = subprocess.run([nsenter, f"--net=/proc/self/fd/{fd}", "--", *argv],
                           capture_output=True, text=True, timeout=30, pass_fds=(fd,))
    if r.returncode != 0:
        raise LabError(f"listing the sockets of {t.name} failed: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def _mounts(pid: int, procfs: str = PROCFS) -> list[dict]:
    """Its mount table (/proc/PID/mountinfo through the lab's one parser, proc.mountinfo)."""
    return [{"target": m.target, "fstype": m.fstype, "source": m.source, "root": m.root,
             "options": list(m.options)} for m in proc.mountinfo(pid, procfs)]


def inspect(x, *, sockets: bool = True, procfs: str = PROCFS) -> Inspection:
    """The container-aware host view of a target (anything :func:`target` takes)."""
    own = not isinstance(x, Target)
    t = x if not own else target(x, allow_host=True, procfs=procfs)
    try:
        pid = t.pid
        places = cgroups.places_of(pid, procfs=procfs)
        stats = cgroups.read_stats(places).asdict()
        stats.pop("time", None)
        try:
            root = os.readlink(t.root)
            cwd = os.readlink(os.path.join(procfs, str(pid), "cwd"))
            files = sorted(os.listdir(t.root))
        except FileNotFoundError:
            raise NoSuchProcess(pid) from None
        insp = Inspection(
            kind=t.kind, name=t.name, pid=pid, nspid=t.nspid, comm=t.comm,
            namespaces=[NsRow(k, t.namespaces[k], k in t.differs) for k in NS_KINDS
                        if k in t.namespaces],
            root=root, cwd=cwd, root_files=files, processes=processes(t, procfs),
            layout=t.layout, cgroups={k: p.path for k, p in sorted(places.items())},
            stats=stats, caps=t.caps.as_json() if t.caps else {},
            seccomp=SECCOMP_MODES.get(t.seccomp, str(t.seccomp)),
            seccomp_filters=t.seccomp_filters, no_new_privs=t.no_new_privs,
            uid_map=[tuple(m) for m in t.uid_map],
            sockets=listening(t) if sockets else [], mounts=_mounts(pid, procfs))
        t.check()
        return insp
    finally:
        if own:
            t.close()


# --- command line ----------------------------------------------------------------------

def _cli_inspect(args) -> int:
    insp = inspect(args.target)
    print(json.dumps(insp.asdict(), indent=2) if args.json else insp.format())
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("inspect", help="the container-aware host view of a container or PID")
    p.add_argument("target", help="a host PID, a runc container id, or a podman container name")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=_cli_inspect)


# --- host tools, made container-aware -------------------------------------------------

def uid_inside(t: Target, host_uid: int) -> int | None:
    """The uid a host uid is inside the target's user namespace (uid_map, user_namespaces(7)); None if unmapped."""
    for inside, outside, count in t.uid_map:
        if outside <= host_uid < outside + count:
            return inside + host_uid - outside
    return None


def host_pid_of(t: Target, pid_inside: int, procfs: str = PROCFS) -> int:
    """The host PID of the process that is ``pid_inside`` in the target's PID namespace (NSpid)."""
    for p in processes(t, procfs):
        if p.pid_inside == pid_inside:
            return p.host_pid
    raise BadInput(f"no process is PID {pid_inside} inside {t.name}: PIDs there are "
                   + ", ".join(str(p.pid_inside) for p in processes(t, procfs)))


class Call(NamedTuple):
    """One system call in strace's output: who made it (a *host* PID), which, what it returned."""
    pid: int
    name: str
    result: str      # as strace prints it: "4", "-1 EAGAIN (...)", "?"
    line: str


# "[pid N] " (strace to a terminal) or "N " (strace -o FILE -f) labels the caller.
_CALL = re.compile(r"^(?:\[pid\s+(?P<a>\d+)\]\s+|(?P<b>\d+)\s+)?"
                   r"(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<name>\w+)\()(?P<rest>.*)$")


def calls(lines: list[str], pid: int) -> list[Call]:
    """Parse strace -f lines, joining '<unfinished ...>' with its '<... resumed>' half.

    Each line's caller is its label ("[pid N]", or "N" with -o); unlabelled lines are ``pid``'s.
    """
    out, pending = [], {}
    for line in lines:
        m = _CALL.match(line.strip())
        if not m:
            continue
        who = int(m.group("a") or m.group("b") or pid)
        rest = m.group("rest")
        if m.group("name"):
            name = m.group("name")
            # A call that was blocked when strace attached is restarted by the kernel:
            # "restart_syscall(<... resuming interrupted accept ...>) = 4".
            r = re.match(r"<\.\.\. resuming interrupted (\w+) \.\.\.>", rest)
            if name == "restart_syscall" and r:
                name = r.group(1)
            if rest.endswith("<unfinished ...>"):
                pending[who] = name
                continue
        else:
            name = pending.pop(who, m.group("resumed"))
        res = rest.rsplit(") = ", 1)[1].strip() if ") = " in rest else "?"
        out.append(Call(who, name, res, line))
    return out


class Trace(NamedTuple):
    lines: list[str]
    calls: list[Call]

    def __str__(self) -> str:
        return "\n".join(self.lines)


def strace(x, trigger: list[str] | None = None, *, syscalls: str = "network",
           timeout: float = 10.0) -> Trace:
    """``strace -f -p PID`` from the host while ``trigger`` (an argv run on the host) runs.

    ptrace(2) works across namespaces for root in the initial user namespace:
    the tool stays on the host, with the host's view - so strace labels the
    target's children with *host* PIDs, while clone() returns their PIDs inside.
    Returns a :class:`Trace` (its lines and the parsed :class:`Call` s); strace
    is stopped with SIGINT (it detaches, the target runs on).
    """
    import signal
    import time
    exe = shutil.which("strace")
    if exe is None:
        raise MissingTool("strace")
    own = not isinstance(x, Target)
    t = x if not own else target(x, allow_host=True)
    try:
        t.check()
        # The trace goes to a memfd (strace -o), strace's own messages to a pipe.
        out = os.memfd_create("jap-strace")
        p = lab.spawn([exe, "-f", "-o", f"/proc/self/fd/{out}", "-e", f"trace={syscalls}",
                       "-p", str(t.pid)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                      text=True, pass_fds=(out,), note=f"strace of {t.name}")
        try:
            said = []
            # strace says "Process N attached" once ptrace(PTRACE_SEIZE) is done: the event to wait for.
            while True:
                line = p.popen.stderr.readline()
                if not line:
                    raise LabError(f"strace could not attach to PID {t.pid}: " + "".join(said))
                if "attached" in line:
                    break
                said.append(line)
            if trigger:
                subprocess.run(trigger, capture_output=True, timeout=timeout)
            # strace prints a call when it returns, asynchronously to the trigger. Wait until
            # every child it followed has exited in its output ("+++ exited"), bounded; with
            # no child at all, give the last calls a moment (no event marks "printed").
            deadline = time.monotonic() + (timeout if trigger else 0.2)
            quiet_until = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                text = os.pread(out, 1 << 20, 0).decode(errors="replace")
                kids = {int(w.split()[0]) for w in text.splitlines() if w.split()
                        and w.split()[0].isdigit() and int(w.split()[0]) != t.pid}
                done = {int(w.split()[0]) for w in text.splitlines()
                        if "+++ exited" in w or "+++ killed" in w}
                if kids and kids <= done or not kids and time.monotonic() > quiet_until:
                    break
                time.sleep(0.01)
            p.popen.send_signal(signal.SIGINT)
            p.popen.communicate(timeout=timeout)
            os.lseek(out, 0, os.SEEK_SET)
            with os.fdopen(out, "r", closefd=False) as f:
                lines = [ln.rstrip() for ln in f if ln.strip()]
        finally:
            os.close(out)
            p.stop()
        return Trace(lines, calls(lines, t.pid))
    finally:
        if own:
            t.close()


# --- exec in: what docker exec / runc exec do ----------------------------------------------

def _environ(t: Target) -> dict[str, str]:
    """The target's environment (/proc/PID/environ, proc(5)): docker exec starts from the
    container's configured env; the main process's is the closest the kernel keeps."""
    from . import rootfs
    try:
        with open(f"/proc/{t.pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        raw = b""
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.decode(errors="replace").partition("=")
        if sep and k:
            env[k] = v
    env.setdefault("PATH", rootfs.PATH)
    return env


def _all_cgroup_dirs(pid: int) -> list[str]:
    """Every cgroup directory of a process, named v1 hierarchies too (name=systemd: runc
    exec joins it as well), from /proc/PID/cgroup and the mount table (cgroups(7))."""
    from .runtimes import _cgroup_map
    dirs = list(dict.fromkeys(_cgroup_map(pid).values()))
    return [d for d in dirs if os.path.isfile(os.path.join(d, "cgroup.procs"))]


def exec_spec(x, argv, *, env: dict[str, str] | None = None, cwd: str = "/", stdin=None,
              stdout="pipe", stderr="pipe", note: str = ""):
    """The launcher Spec of ``exec_in``: all of the target's namespaces (the open fds of the
    Target, setns(2)), its cgroups, its root (/proc/PID/root), its capabilities and
    no_new_privs - and, for a runc target, the seccomp profile runc applied from config.json."""
    from . import _launch
    t = x if isinstance(x, Target) else target(x)
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise BadInput(f"argv is a list of strings like ['ps', '-ef'], not {argv!r}")
    seccomp = None
    if t.seccomp == 2 and t.kind in ("runc", "crun"):
        from . import runtimes
        obj = t.obj
        if obj is None or getattr(obj, "options", {}).get("seccomp", True):
            # The calls the lab's runc profile denies, as far as the launcher's syscall
            # table knows them on this machine (a BPF filter cannot be copied from a process).
            from . import _libc
            known = _libc.SYSCALLS.get(_libc.MACHINE, {})
            seccomp = [n for n in runtimes.SECCOMP_DENIED if n in known]
    st = proc.status(t.pid)
    uid, gid = int(st["Uid"].split()[1]), int(st["Gid"].split()[1])
    user_ns = "user" in t.differs
    spec = _launch.Spec(
        argv=list(argv),
        join={k: _launch.Fd(fd) for k, fd in t.ns_fds.items() if k in t.differs},
        cgroup=_all_cgroup_dirs(t.pid), target_root=t.pid,
        caps=list(t.caps.effective) if t.caps else None,
        no_new_privs=t.no_new_privs, seccomp=seccomp,
        uid=None if user_ns or uid == 0 else uid, gid=None if user_ns or gid == 0 else gid,
        env={**_environ(t), **(env or {})}, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
        note=note or f"exec in {t.name}: {' '.join(argv)[:40]}")
    spec.target = t  # the spec joins through t's open fds: they live as long as the spec
    return spec


def exec_in(x, argv, *, input: bytes | str | None = None, timeout: float = 30.0,
            env: dict[str, str] | None = None, cwd: str = "/", stream=None):
    """Run ``argv`` inside a container as ``docker exec`` / ``runc exec`` do; the launcher's Result.

    The process joins *everything* of the target: namespaces, cgroup (so it counts against
    the app's memory and pids limits - chapter 08's lesson), root, capabilities.  Its
    programs come from the target's image: in a distroless one there is nothing to run.
    ``stream(which, text)`` (which = 1 stdout, 2 stderr) gets output as it comes.
    A failed step (a fork refused by pids.max: EAGAIN; a program not found: ENOENT) is in
    ``result.error`` (``result.check()`` raises it as a lab error).
    """
    from . import _launch
    own = not isinstance(x, Target)
    t = x if not own else target(x)
    try:
        t.check()
        if stream is None:
            return _launch.run(exec_spec(t, argv, env=env, cwd=cwd,
                                         stdin="pipe" if input is not None else None),
                               input=input, timeout=timeout)
        return _streamed(exec_spec, t, argv, env, cwd, stream, timeout)
    finally:
        if own:
            t.close()


def _streamed(make_spec, t, argv, env, cwd, stream, timeout):
    import select
    import time
    from . import _launch
    pipes = {1: os.pipe2(os.O_CLOEXEC), 2: os.pipe2(os.O_CLOEXEC)}
    try:
        h = _launch.start(make_spec(t, argv, env=env, cwd=cwd, stdout=pipes[1][1],
                                    stderr=pipes[2][1]))
    finally:
        for r, w in pipes.values():
            os.close(w)
    readers = {pipes[1][0]: 1, pipes[2][0]: 2}
    deadline = time.monotonic() + timeout
    try:
        while readers:
            left = deadline - time.monotonic()
            if left <= 0:
                h.kill()
                break
            ready = select.select(list(readers), [], [], left)[0]
            for fd in ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    stream(readers[fd], chunk.decode(errors="replace"))
                else:
                    del readers[fd]
                    os.close(fd)
        r = h.wait(max(1.0, deadline - time.monotonic()))
    finally:
        for fd in readers:
            os.close(fd)
        if h.result is None:
            h.stop()
    if time.monotonic() > deadline:
        raise _launch.Timeout(f"{' '.join(argv)} in {t.name} did not finish within {timeout} s: "
                              "it was killed")
    return r


# --- a sidecar: the target's pid, net, ipc; its own mounts, cgroup and tools ---------------

SIDECAR_SHARE = ("pid", "net", "ipc")
# A tools container runs with an engine's defaults plus what debugging needs: ptrace
# (strace, /proc/PID/root and /proc/PID/fd of the app's processes: proc(5) "ptrace access mode").
SIDECAR_CAPS = ("cap_sys_ptrace",)


class Sidecar:
    """A tools container beside a target (``docker run --pid=container:app --net=container:app``).

    It joins the target's namespaces named in ``share`` and makes its own of the rest:
    its own mount namespace with a root of its own (a copy of the lab's tools rootfs:
    busybox plus strace, ip, ss), its own /proc of the *shared* pid namespace, its own
    cgroup (with limits: a diagnosis that eats memory is killed there, not in the app's
    cgroup) and cgroup namespace.  The target's files are at ``/proc/<its PID>/root``.
    ``run(argv)`` executes a command in it.  Nothing happens in the constructor.
    """

    def __init__(self, target_, share=SIDECAR_SHARE, *, tools="tools", memory="128M",
                 pids: int = 64):
        from . import _launch
        share = _launch.kinds_of(share)
        unknown = set(share) - {"pid", "net", "ipc", "uts"}
        if unknown:
            raise BadInput(f"a sidecar shares some of pid, net, ipc, uts - not {', '.join(sorted(unknown))}: "
                           "its mount and cgroup namespaces are its own (that is the point)")
        self.share = share
        self.tools = tools
        self.memory, self.pids_max = memory, pids
        self._given = target_
        self.target: Target | None = None
        self.name = lab.name("side")
        self.dir = os.path.join(lab.run_dir(), self.name)
        self.root: str | None = None
        self.cgroup = None
        self.handle = None
        self._entries: list = []

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle is not None else None

    def start(self) -> "Sidecar":
        from . import _launch, cgroups as cg, container, rootfs
        if self.handle is not None:
            raise BadInput(f"sidecar {self.name} is already started")
        self.target = self._given if isinstance(self._given, Target) else target(self._given)
        t = self.target
        try:
            image = self.tools if isinstance(self.tools, rootfs.Rootfs) else \
                rootfs.build(self.tools) if isinstance(self.tools, str) and self.tools in rootfs.KINDS \
                else None
            self._entries.append(lab.register("dir", self.dir, note=f"sidecar of {t.name}"))
            os.makedirs(self.dir)
            if image is None:
                if not isinstance(self.tools, str) or not os.path.isdir(self.tools):
                    raise BadInput(f"tools: a rootfs kind ({', '.join(rootfs.KINDS)}), a "
                                   f"rootfs.Rootfs or a folder - not {self.tools!r}")
                self.root = os.path.abspath(self.tools)
            else:
                self.root = rootfs.extract(image, os.path.join(self.dir, "rootfs"))
                _device_nodes(os.path.join(self.root, "dev"))
            self.cgroup = cg.Cgroup(self.name, memory=self.memory, pids=self.pids_max).create()
            shared = [k for k in self.share if k in t.differs]
            new = ["mnt", "cgroup"] + [k for k in ("pid", "net", "ipc", "uts") if k not in self.share]
            self.handle = _launch.start(_launch.Spec(
                argv=["sleep", "2147483647"],
                join={k: _launch.Fd(t.ns_fds[k]) for k in shared},
                new=new, root=self.root, mount_proc=True, cgroup=self.cgroup,
                hostname=self.name if "uts" in new else None,
                caps=list(container.ENGINE_DEFAULT) + list(SIDECAR_CAPS), no_new_privs=True,
                env={"PATH": rootfs.PATH, "HOME": "/root"}, stdin="null", stdout="null",
                stderr="null", note=f"sidecar of {t.name}"))
            self.handle.check()
        except BaseException:
            self.remove()
            raise
        return self

    def run(self, argv, *, input=None, timeout: float = 30.0, stream=None):
        """Run a command in the sidecar (its tools, the shared namespaces): the launcher's Result."""
        if self.handle is None or not self.handle.alive():
            raise BadInput(f"sidecar {self.name} is not running: start() it (again)")
        return exec_in(self.handle.pid, argv, input=input, timeout=timeout, stream=stream)

    def remove(self) -> None:
        """Stop the sidecar, remove its cgroup and its root; the target is untouched. Safe twice."""
        if self.handle is not None:
            self.handle.stop()
            self.handle = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        for e in reversed(self._entries):
            lab.remove(e)
        self._entries.clear()
        if self.target is not None and not isinstance(self._given, Target):
            self.target.close()
        self.target = None

    def __enter__(self) -> "Sidecar":
        return self if self.handle is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.handle is not None else "not running"
        return f"<Sidecar {self.name} of {getattr(self.target, 'name', self._given)} {state}>"


def _device_nodes(dev: str) -> None:
    """The few device nodes a tool expects (/dev/null, /dev/zero ...) in the sidecar's own
    root copy, made with mknod(2) as an engine does (OCI runtime spec, "Default Devices")."""
    import stat
    from .container import DEVICES
    os.makedirs(dev, exist_ok=True)
    for name, (major, minor) in DEVICES.items():
        path = os.path.join(dev, name)
        if not os.path.exists(path):
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(path, 0o666)


def sidecar(x, share=SIDECAR_SHARE, *, tools="tools", memory="128M", pids: int = 64) -> Sidecar:
    """Start a :class:`Sidecar` beside the target (anything :func:`target` takes)."""
    return Sidecar(x, share, tools=tools, memory=memory, pids=pids).start()


# --- %%inside: a notebook cell run inside a container ----------------------------------------

class InsideFailed(LabError):
    """The cell's shell exited non-zero inside the container (an error output nbval sees)."""


def _resolve_expr(line: str, user_ns: dict):
    expr = line.strip()
    if not expr:
        raise BadInput("%%inside TARGET: name the container - a variable (a Container, a scenario, "
                       "an OCIContainer, a Target), a host PID or a runc container id")
    if expr.lstrip("-").isdigit():
        return int(expr)
    try:
        return eval(expr, user_ns)  # noqa: S307 - the learner's own notebook expression
    except NameError:
        return expr  # not a variable: a runc/podman container id
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"%%inside {expr}: {type(exc).__name__}: {exc}") from None


def inside_cell(line: str, cell: str, user_ns: dict, *, out=None, err=None) -> int:
    """The body of ``%%inside``: ``sh -c CELL`` through :func:`exec_in`, output streamed to
    this process's stdout/stderr as it comes; returns 0 or raises :class:`InsideFailed`."""
    out = out or sys.stdout
    err = err or sys.stderr

    def stream(which: int, text: str) -> None:
        (out if which == 1 else err).write(text)
        (out if which == 1 else err).flush()

    x = _resolve_expr(line, user_ns)
    r = exec_in(x, ["sh", "-c", cell], stream=stream)
    if r.error is not None:
        raise r.error  # a step of exec failed: no shell in the image, pids.max reached ...
    if r.returncode:
        import signal as _signal
        how = (f"was killed by signal {r.signal} ({_signal.Signals(r.signal).name})" if r.signal
               else f"exited with status {r.returncode}")
        raise InsideFailed(f"the cell's shell inside {line.strip()} {how}")
    return 0
