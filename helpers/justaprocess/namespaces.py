"""Namespaces: the eight kinds, who is in which, and running things in new or existing ones.

A namespace wraps one global resource so that the processes inside see their
own instance of it (namespaces(7)).  A process is in exactly one namespace of
each kind; the kernel shows which as the links ``/proc/PID/ns/KIND``
(``net:[4026531840]``): equal numbers, same namespace.

- :data:`KINDS`, :func:`of`, :func:`compare`, :func:`members`,
  :func:`inventory` (like ``lsns``) and :func:`share_map` only read /proc.
- :func:`run`, :func:`spawn` (like ``unshare(1)``) and :func:`enter` (like
  ``nsenter(1)``) make the syscalls in a *child*: the calling process (a
  notebook's kernel) never moves.  They go through the lab's one launcher,
  :mod:`justaprocess._launch`.

Commands: ``python -m justaprocess ns [--json]`` (the machine's namespaces, the
fields of ``lsns -J``) and ``python -m justaprocess ns PID`` (one process,
compared with the host).
"""
from __future__ import annotations

import errno as _errno
import json
import os
import pwd
import subprocess
from dataclasses import dataclass, field, replace
from typing import Iterable, NamedTuple, Sequence

from . import _launch, _libc, proc
from .errors import BadInput, LabError, NeedsPrivilege, NoSuchProcess, NotSupported

PROCFS = proc.PROCFS


class Kind(NamedTuple):
    """One kind of namespace: its clone flag, what it isolates, where it is documented."""
    name: str
    flag: int
    isolates: str
    man: str
    option: str  # the long option of unshare(1) and nsenter(1)


# namespaces(7), table "Namespace types"; the per-kind pages are in section 7.
KINDS: dict[str, Kind] = {
    "cgroup": Kind("cgroup", _libc.CLONE_NEWCGROUP, "the cgroup root directory (/proc/self/cgroup shows /)",
                   "cgroup_namespaces(7)", "--cgroup"),
    "ipc": Kind("ipc", _libc.CLONE_NEWIPC, "System V IPC objects and POSIX message queues",
                "ipc_namespaces(7)", "--ipc"),
    "mnt": Kind("mnt", _libc.CLONE_NEWNS, "the mount table",
                "mount_namespaces(7)", "--mount"),
    "net": Kind("net", _libc.CLONE_NEWNET, "network interfaces, addresses, routes, ports, firewall",
                "network_namespaces(7)", "--net"),
    "pid": Kind("pid", _libc.CLONE_NEWPID, "process IDs (the first process is PID 1)",
                "pid_namespaces(7)", "--pid"),
    "time": Kind("time", _libc.CLONE_NEWTIME, "the monotonic and boot-time clocks",
                 "time_namespaces(7)", "--time"),
    "user": Kind("user", _libc.CLONE_NEWUSER, "user and group IDs, capabilities",
                 "user_namespaces(7)", "--user"),
    "uts": Kind("uts", _libc.CLONE_NEWUTS, "the hostname and NIS domain name",
                "uts_namespaces(7)", "--uts"),
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)
# What a container engine creates by default (Docker, runc's default spec): all
# but user and time.
CONTAINER_KINDS: tuple[str, ...] = ("cgroup", "ipc", "mnt", "net", "pid", "uts")
_ALIASES = {"mount": "mnt", "ns": "mnt", "network": "net", "cgroups": "cgroup",
            "hostname": "uts"}


def kinds_of(kinds: str | Iterable[str] | None, default: Sequence[str] = ()) -> tuple[str, ...]:
    """Normalise ``kinds`` ("uts,net", ["mount"], "all") to names of :data:`KINDS`, in their order."""
    if kinds is None:
        return tuple(default)
    if isinstance(kinds, str):
        kinds = KIND_NAMES if kinds.strip() == "all" else [k for k in kinds.replace(",", " ").split()]
    out = set()
    for k in kinds:
        name = _ALIASES.get(str(k).strip().lower(), str(k).strip().lower())
        if name not in KINDS:
            raise BadInput(f"unknown namespace kind {k!r}: use some of {', '.join(KIND_NAMES)} "
                           "(see namespaces(7))")
        out.add(name)
    return tuple(k for k in KIND_NAMES if k in out)


# --- reading: who is in which namespace ----------------------------------------

def of(pid: int | str = "self", procfs: str = PROCFS) -> dict[str, int]:
    """{kind: namespace id} of a process: the inode numbers of /proc/PID/ns/* (namespaces(7)).

    Raises ``NoSuchProcess`` for a dead PID, ``NeedsPrivilege`` when the links
    cannot be read (they need ptrace read access to the process: proc(5)).
    """
    try:
        return proc.namespaces(pid, procfs)
    except PermissionError as exc:
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", f"reading /proc/{pid}/ns:") from exc
        # Root, and still refused: the links need ptrace read access (proc(5),
        # "/proc/pid/ns"), which some machines deny even to root for PID 1.
        raise LabError(f"the kernel refuses to show /proc/{pid}/ns even to root (a ptrace "
                       "access check, proc(5)): inspect another process, e.g. a child of "
                       "this one") from exc


class Sharing(NamedTuple):
    """Which kinds of namespace two processes share."""
    a: int | str
    b: int | str
    shared: tuple[str, ...]
    separate: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"Sharing({self.a} and {self.b}: shared={', '.join(self.shared) or '-'}; "
                f"separate={', '.join(self.separate) or '-'})")


def compare(a: int | str, b: int | str = "self", procfs: str = PROCFS) -> Sharing:
    """Which namespaces processes ``a`` and ``b`` share (same id) and which they do not."""
    na, nb = of(a, procfs), of(b, procfs)
    common = [k for k in KIND_NAMES if k in na and k in nb]
    return Sharing(a, b, tuple(k for k in common if na[k] == nb[k]),
                   tuple(k for k in common if na[k] != nb[k]))


def _pids(procfs: str = PROCFS) -> list[int]:
    return sorted(int(d) for d in os.listdir(procfs) if d.isdigit())


def _table(procfs: str = PROCFS) -> dict[int, dict[str, int]]:
    """{pid: of(pid)} for every process whose links we may read (others are skipped, as lsns does)."""
    out = {}
    for pid in _pids(procfs):
        try:
            ns = proc.namespaces(pid, procfs)
        except (NoSuchProcess, PermissionError, FileNotFoundError, ProcessLookupError):
            continue
        if ns:
            out[pid] = ns
    return out


def members(pid: int | str, kind: str, procfs: str = PROCFS) -> list[int]:
    """The PIDs (host view) of every process in the same ``kind`` namespace as ``pid``, itself included."""
    (kind,) = kinds_of([kind])
    mine = of(pid, procfs).get(kind)
    if mine is None:
        raise NotSupported(f"this kernel has no {kind} namespaces ({KINDS[kind].man})")
    return [p for p, ns in _table(procfs).items() if ns.get(kind) == mine]


def command(pid: int, procfs: str = PROCFS) -> str:
    """The command line as lsns shows it; the name in brackets-free form for kernel threads."""
    try:
        with open(os.path.join(procfs, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
        if raw:
            return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        with open(os.path.join(procfs, str(pid), "comm")) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _user(pid: int, procfs: str = PROCFS) -> str:
    try:
        uid = os.stat(os.path.join(procfs, str(pid))).st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class NsInfo(NamedTuple):
    """One namespace of the machine, with the fields of ``lsns -J`` (and its members)."""
    ns: int
    type: str
    nprocs: int
    pid: int          # the lowest PID in it
    user: str         # owner of that process
    command: str      # its command line
    pids: tuple[int, ...]

    def lsns(self) -> dict:
        """The object ``lsns -J`` prints for this namespace."""
        return {"ns": self.ns, "type": self.type, "nprocs": self.nprocs, "pid": self.pid,
                "user": self.user, "command": self.command}


def inventory(kinds: str | Iterable[str] | None = None, procfs: str = PROCFS) -> list[NsInfo]:
    """Every namespace some visible process is in, sorted by id - what ``lsns`` lists."""
    wanted = kinds_of(kinds, KIND_NAMES)
    groups: dict[tuple[str, int], list[int]] = {}
    for pid, ns in _table(procfs).items():
        for k in wanted:
            if k in ns:
                groups.setdefault((k, ns[k]), []).append(pid)
    out = []
    for (k, ino), pids in groups.items():
        low = min(pids)
        out.append(NsInfo(ino, k, len(pids), low, _user(low, procfs), command(low, procfs), tuple(pids)))
    return sorted(out, key=lambda n: (n.ns, n.type))


def reference_pid(procfs: str = PROCFS) -> int:
    """A process that stands for 'the host': PID 1, or kthreadd (PID 2) when PID 1's links are hidden.

    Kernel threads always live in the initial namespaces.  On some machines PID 1's
    /proc/1/ns links answer EACCES (docs/kernel-notes.md, "The machines"); then we use PID 2.
    """
    for pid in (1, 2):
        try:
            if proc.namespaces(pid, procfs):
                return pid
        except (OSError, LookupError):
            continue
    return os.getpid()


class ShareRow(NamedTuple):
    pid: int
    command: str
    labels: dict  # kind -> "host" or a letter naming one non-host namespace of that kind
    highlight: bool


@dataclass
class ShareMap:
    """Processes × kinds: which namespace each process is in ("host" = the reference's)."""
    reference: int
    kinds: tuple[str, ...]
    rows: list[ShareRow]
    legend: dict = field(default_factory=dict)  # (kind, letter) -> namespace id

    def row(self, pid: int) -> ShareRow:
        for r in self.rows:
            if r.pid == pid:
                return r
        raise BadInput(f"PID {pid} is not in this map")

    def __repr__(self) -> str:
        w = max([len(str(r.pid)) for r in self.rows] + [3])
        head = f"{'PID':>{w}}  " + " ".join(f"{k:<6}" for k in self.kinds) + "  COMMAND"
        lines = [head]
        for r in self.rows:
            mark = "*" if r.highlight else " "
            lines.append(f"{r.pid:>{w}}{mark} " + " ".join(f"{r.labels.get(k, '?'):<6}" for k in self.kinds)
                         + "  " + r.command[:50])
        lines.append(f"host = same namespace as PID {self.reference} (first row); A, B, ... = another "
                     "namespace, lettered per column (the same letter in one column: the same "
                     "namespace); ? = unreadable (the process exited); * = highlighted")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html
        palette = ["#fde2a7", "#b8e0f6", "#c9f0c4", "#f6c1d9", "#dcd0fa", "#ffd0b0", "#c7f1ec"]
        th = "".join(f"<th>{k}</th>" for k in self.kinds)
        rows = []
        for r in self.rows:
            tds = []
            for k in self.kinds:
                lab_ = r.labels.get(k, "?")
                bg = "#eeeeee" if lab_ == "host" else palette[(ord(lab_[0]) - 65) % len(palette)]
                tds.append(f'<td style="background:{bg};text-align:center">{lab_}</td>')
            style = ' style="font-weight:700;outline:2px solid #cf222e"' if r.highlight else ""
            rows.append(f"<tr{style}><td>{r.pid}</td>{''.join(tds)}"
                        f"<td style='text-align:left'>{html.escape(r.command[:60])}</td></tr>")
        return (f"<table><tr><th>PID</th>{th}<th style='text-align:left'>command</th></tr>"
                + "".join(rows) + f"</table><small>grey <b>host</b> = same namespace as PID "
                f"{self.reference} (first row); A, B, ... = another namespace, lettered per column (the "
                "same letter in one column: the same namespace); ? = unreadable (the process "
                "exited); outlined = highlighted</small>")


def share_map(pids: Iterable[int] | None = None, *, highlight: Iterable[int] = (),
              reference: int | None = None, kinds: str | Iterable[str] | None = None,
              procfs: str = PROCFS) -> ShareMap:
    """Who shares what: a row per process, a column per kind.

    ``pids`` defaults to the reference process, every process that is *not* in
    all of the reference's namespaces (the container-like ones), and ``highlight``.
    """
    ref = reference_pid(procfs) if reference is None else reference
    ks = kinds_of(kinds, KIND_NAMES)
    table = _table(procfs)
    hl = {int(p) for p in highlight}
    if ref not in table:
        table[ref] = of(ref, procfs)
    refns = table[ref]
    if pids is None:
        chosen = [ref] + [p for p, ns in table.items()
                          if p != ref and any(ns.get(k) != refns.get(k) for k in ks)]
    else:
        chosen = [ref] + [int(p) for p in pids if int(p) != ref]
    for p in hl:
        if p not in chosen:
            chosen.append(p)
    letters: dict[tuple[str, int], str] = {}
    legend = {}
    rows = []
    for p in sorted(set(chosen), key=lambda x: (x != ref, x)):
        ns = table.get(p)
        if ns is None:
            try:
                ns = of(p, procfs)
            except NoSuchProcess:
                continue
        labels = {}
        for k in ks:
            if k not in ns:
                labels[k] = "?"
            elif ns[k] == refns.get(k):
                labels[k] = "host"
            else:
                key = (k, ns[k])
                if key not in letters:
                    n = sum(1 for kk in letters if kk[0] == k)
                    letters[key] = chr(65 + n % 26) + ("" if n < 26 else str(n // 26))
                    legend[(k, letters[key])] = ns[k]
                labels[k] = letters[key]
        rows.append(ShareRow(p, command(p, procfs), labels, p in hl))
    return ShareMap(ref, ks, rows, legend)


# --- creating and entering namespaces (in children, through the launcher) -------

# One result type for every run in the lab: the launcher's.
Result = _launch.Result


def _argv(target) -> list[str]:
    if isinstance(target, str):
        return ["/bin/sh", "-c", target]
    if isinstance(target, (list, tuple)) and target and all(isinstance(a, (str, bytes, os.PathLike)) for a in target):
        return [os.fsdecode(a) for a in target]
    raise BadInput(f"expected a command (a list of strings, or a shell string) or a Python "
                   f"callable, got {target!r}")


def _new_spec(kinds, hostname, uid_map, gid_map, monotonic, boottime, fresh_proc, cwd):
    """The launcher Spec for new namespaces, and the notes for the Result."""
    ks = kinds_of(kinds)
    notes = []
    if hostname is not None and "uts" not in ks:
        raise BadInput("hostname= needs a new uts namespace: add 'uts' to kinds "
                       "(else you would rename the host)")
    if (uid_map is not None or gid_map is not None) and "user" not in ks:
        raise BadInput("uid_map=/gid_map= need a new user namespace: add 'user' to kinds")
    if (monotonic is not None or boottime is not None) and "time" not in ks:
        raise BadInput("monotonic=/boottime= offsets need a new time namespace: add 'time' to kinds")
    if fresh_proc is None:
        fresh_proc = "pid" in ks and "mnt" in ks
    elif fresh_proc and not ("pid" in ks and "mnt" in ks):
        raise BadInput("fresh_proc=True needs both 'pid' (whose processes it shows) and 'mnt' "
                       "(so the new /proc does not replace the host's): add them to kinds")
    if "pid" in ks and not fresh_proc:
        notes.append("new pid namespace but the host's /proc: ps and /proc still show the "
                     "host's processes (add 'mnt' for a fresh /proc; pid_namespaces(7))")
    if os.geteuid() != 0 and "user" not in ks and ks:
        raise NeedsPrivilege("CAP_SYS_ADMIN", f"creating {','.join(ks)} namespaces")
    offsets = {}
    if monotonic is not None:
        offsets["monotonic"] = float(monotonic)
    if boottime is not None:
        offsets["boottime"] = float(boottime)
    spec = _launch.Spec(new=ks, hostname=hostname, uid_map=uid_map, gid_map=gid_map,
                        offsets=offsets or None, mount_proc=bool(fresh_proc), cwd=cwd)
    return spec, tuple(notes)


def _enter_spec(pid, kinds, cwd):
    if isinstance(pid, str):  # 'self' or a digit string: enter takes an int PID
        raise BadInput(f"{pid!r}: enter() takes a PID, a number from 1")
    pid = proc.check_pid(pid, user_space=True, doing="its namespaces are the host's, nothing to enter")
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", f"entering the namespaces of PID {pid}")
    theirs, mine = of(pid), of("self")
    if kinds is None:
        ks = tuple(k for k in KIND_NAMES if k in theirs and theirs[k] != mine.get(k))
    else:
        ks = kinds_of(kinds)
    notes = []
    if "pid" in ks and "mnt" not in ks and theirs.get("mnt") != mine.get("mnt"):
        notes.append("joined the pid namespace but not the mount namespace: /proc is still "
                     "the host's, so ps shows the host's processes (add 'mnt'; nsenter(1))")
    return _launch.Spec(join={k: pid for k in ks}, cwd=cwd), ks, tuple(notes)


def _error(err: _launch.StepFailed, pid: int = 0) -> LabError:
    """The launcher's failed step as the error a learner of this chapter meets."""
    step, no = err.step, err.errno
    if step == "exec":
        if no == _errno.ENOENT:
            return BadInput(f"command {err.detail!r} not found (PATH inside the new namespaces is "
                            "the host's): check its name, or give a full path")
        if no == _errno.EACCES:
            return BadInput(f"command {err.detail!r} cannot be executed (permission denied): "
                            "check its mode and, in a user namespace, the uid it runs as")
    if no in (_errno.EPERM, _errno.EACCES):
        what = "CAP_SYS_ADMIN"
        if "timens" in step:
            what = "CAP_SYS_TIME"
        elif "setres" in step or "map" in step:
            what = "CAP_SETUID/CAP_SETGID"
        return NeedsPrivilege(what, f"{step}:")
    if no == _errno.ESRCH:
        return NoSuchProcess(pid)
    return err


def _launch_run(spec: _launch.Spec, target, args, kwargs, input, timeout, note, ks, notes,
                pid: int = 0, bounded: bool = True) -> Result:
    if callable(target):
        fn = (lambda: target(*args, **(kwargs or {}))) if (args or kwargs) else target
        spec = replace(spec, fn=fn, note=note + f" {getattr(target, '__name__', 'callable')}",
                       cgroup="bounded" if bounded else None)
    else:
        argv = _argv(target)
        spec = replace(spec, argv=argv, note=f"{note} {argv[0]}")
    try:
        r = _launch.run(spec, input=input, timeout=timeout)
    except _launch.Timeout as exc:
        raise _launch.Timeout(f"{spec.note.split(' ', 1)[1]} did not finish within {timeout} s in "
                              "its namespaces: it was killed. Pass a larger timeout=, or use "
                              "namespaces.spawn() for a long-running process") from exc
    if r.error is not None:
        raise _error(r.error, pid)
    r.kinds, r.notes = ks, notes
    return r


def run(target, kinds: str | Iterable[str] = CONTAINER_KINDS, *, hostname: str | None = None,
        uid_map=None, gid_map=None, monotonic: float | None = None, boottime: float | None = None,
        fresh_proc: bool | None = None, cwd: str | None = None, input: str | bytes | None = None,
        args: tuple = (), kwargs: dict | None = None, timeout: float = 10.0) -> Result:
    """Run a command or a Python callable in new namespaces of ``kinds``; wait; return a :class:`Result`.

    ``target``: a list of strings (exec'd), a string (run by ``/bin/sh -c``), or a
    callable (called with ``args``/``kwargs`` in a forked child; its return value
    comes back pickled as ``Result.value``; its prints as ``stdout``).  A callable
    runs bounded, in a lab cgroup of its own: at most 256M of memory and 64
    processes (``_launch.BOUNDED_MEMORY``/``BOUNDED_PIDS``), so a fork bomb or a
    memory hog in it meets a limit, not the machine.

    ``kinds``: which new namespaces (default: a container engine's six - all but
    user and time).  Options, each needing its kind:

    - ``hostname`` (uts): set inside only;
    - ``uid_map``/``gid_map`` (user): '0 100000 65536' lines, or an int *N* for
      "root inside is uid N outside"; ``gid_map`` defaults to ``uid_map``.  When
      0 is mapped the process becomes root of the namespace;
    - ``monotonic``/``boottime`` (time): clock offsets in seconds;
    - ``fresh_proc`` (pid+mnt; the default when both are asked): mount a /proc
      that shows only the new PID namespace.  pid without mnt keeps the host's
      /proc: the Result carries a note saying so.

    The calling process never changes namespaces.  ``timeout``: the children are
    killed and ``Timeout`` (a LabError) raised.
    """
    spec, notes = _new_spec(kinds, hostname, uid_map, gid_map, monotonic, boottime, fresh_proc, cwd)
    return _launch_run(spec, target, args, kwargs, input, timeout, "namespaces.run",
                       spec.new, notes)


def enter(pid: int, target, kinds: str | Iterable[str] | None = None, *, cwd: str | None = None,
          input: str | bytes | None = None, args: tuple = (), kwargs: dict | None = None,
          timeout: float = 10.0) -> Result:
    """Run a command or callable inside the namespaces of process ``pid`` (what ``nsenter -t PID`` does).

    ``kinds``: which of its namespaces to join (default: every kind in which it
    differs from us, like ``nsenter -a``).  Joining pid affects only children,
    so the target then runs in a forked child (setns(2)); joining pid
    without mnt leaves the host's /proc in view (a note in the Result says so).
    A callable runs bounded as in :func:`run` only when the cgroup namespace
    is not joined (256M, 64 processes).
    """
    spec, ks, notes = _enter_spec(pid, kinds, cwd)
    return _launch_run(spec, target, args, kwargs, input, timeout, "namespaces.enter", ks, notes,
                       pid=pid, bounded="cgroup" not in ks)


class NsProcess:
    """A long-running process in its own namespaces (see :func:`spawn`).

    ``host_pid`` is the process *inside* the namespaces (PID 1 of a new PID
    namespace); ``ns_pid`` its PID there; ``handle`` the launcher's Handle.
    It dies with the calling process; ``stop()`` (or lab cleanup) kills it.
    """

    def __init__(self, handle: _launch.Handle, kinds: tuple[str, ...], notes: tuple[str, ...]):
        self.handle = handle
        self.host_pid = handle.pid
        self.ns_pid = handle.ns_pid
        self.kinds = kinds
        self.notes = notes

    @property
    def pid(self) -> int:
        return self.host_pid

    @property
    def launcher(self) -> "NsProcess | _Helper":
        """The process the lab started (a helper that made ``host_pid``, or the same one)."""
        return _Helper(self.handle._first)

    def alive(self) -> bool:
        return self.handle.alive()

    def namespaces(self) -> dict[str, int]:
        return of(self.host_pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for it to exit; its exit code (negative: signal), or None on timeout."""
        try:
            return self.handle.wait(timeout).returncode
        except _launch.Timeout:
            return None

    @property
    def returncode(self) -> int | None:
        return self.handle.result.returncode if self.handle.result else None

    def stop(self, timeout: float = 3.0) -> int | None:
        """Kill it (SIGKILL: PID 1 of a namespace ignores signals it has no handler for,
        pid_namespaces(7)); forget it.  Safe to call twice."""
        return self.handle.stop(timeout).returncode

    def __enter__(self) -> "NsProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "exited"
        return (f"<NsProcess host_pid={self.host_pid} ns_pid={self.ns_pid} "
                f"kinds={','.join(self.kinds)} {state}>")


class _Helper(NamedTuple):
    pid: int


def _stdio(how):
    if how is None:
        return "inherit"
    if how == subprocess.DEVNULL:
        return "null"
    if how == subprocess.PIPE:
        raise BadInput("spawn() does not read a pipe for you: pass a file, an fd, or DEVNULL")
    return how


def spawn(argv, kinds: str | Iterable[str] = CONTAINER_KINDS, *, hostname: str | None = None,
          uid_map=None, gid_map=None, monotonic: float | None = None, boottime: float | None = None,
          fresh_proc: bool | None = None, cwd: str | None = None, stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL, note: str = "", startup_timeout: float = 5.0) -> NsProcess:
    """Start a long-running command in new namespaces; return once it runs there.

    Same options as :func:`run`.  The process is registered with the lab (it is
    removed by ``%lab_cleanup`` and dies with the caller).  Use it as a context
    manager, or call ``stop()``.
    """
    argv = _argv(argv)
    spec, notes = _new_spec(kinds, hostname, uid_map, gid_map, monotonic, boottime, fresh_proc, cwd)
    spec = replace(spec, argv=argv, stdout=_stdio(stdout), stderr=_stdio(stderr),
                   note=note or f"namespaces.spawn {argv[0]}" + f" (in {','.join(spec.new)})")
    h = _launch.start(spec, start_timeout=startup_timeout)
    if h.error is not None:
        h.wait()
        raise _error(h.error)
    return NsProcess(h, spec.new, notes)


# --- command line: python -m justaprocess ns ------------------------------------

def _cli(args) -> int:
    if args.pid is None:
        found = inventory()
        if args.json:
            print(json.dumps({"namespaces": [n.lsns() for n in found]}, indent=3))
            return 0
        print(f"{'NS':>10} {'TYPE':<6} {'NPROCS':>6} {'PID':>7} {'USER':<8} COMMAND")
        for n in found:
            print(f"{n.ns:>10} {n.type:<6} {n.nprocs:>6} {n.pid:>7} {n.user:<8} {n.command[:80]}")
        return 0
    pid = args.pid
    ns = of(pid)
    ref = reference_pid()
    refns = of(ref)
    table = _table()
    rows = [{"type": k, "ns": ns[k], "shared_with_host": ns[k] == refns.get(k),
             "nprocs": sum(1 for other in table.values() if other.get(k) == ns[k])}
            for k in KIND_NAMES if k in ns]
    if args.json:
        print(json.dumps({"pid": pid, "command": command(pid), "reference": ref,
                          "nspid": list(proc.nspid(pid)), "namespaces": rows}, indent=3))
        return 0
    print(f"PID {pid}: {command(pid)[:70]}")
    print(f"  PID inside its own PID namespace: {proc.nspid(pid)[-1]}  (NSpid {' '.join(map(str, proc.nspid(pid)))})")
    print(f"{'TYPE':<7} {'NS':>10} {'NPROCS':>6}  SHARED WITH THE HOST (PID {ref})")
    for r in rows:
        print(f"{r['type']:<7} {r['ns']:>10} {r['nprocs']:>6}  {'yes' if r['shared_with_host'] else 'NO - its own'}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("ns", help="the machine's namespaces (like lsns), or one process's",
                       description="Without PID: every namespace (the fields of `lsns -J`). "
                                   "With PID: that process's namespaces, and which it shares "
                                   "with the host.")
    p.add_argument("pid", nargs="?", type=int, help="a process ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cli)
