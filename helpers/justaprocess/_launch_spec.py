"""The launcher's request and answer: :class:`Spec`, :class:`Result`, :class:`StepFailed`,
and the plan the children follow (a Spec checked and resolved in the caller).

Part of the one launcher (``_launch``, which re-exports all of it): this module
starts nothing.  It does not import ``cgroups``: ``cgroup="bounded"`` and
``cgroup=PID`` are resolved by ``_launch.start``, which passes its resolver in.
"""
from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from . import _libc, proc
from ._launch_child import FLAGS
from .errors import BadInput, LabError, NeedsPrivilege, NoSuchProcess, NotSupported

# --- the eight kinds ----------------------------------------------------------------
KINDS = proc.NS_KINDS
_ALIASES = {"mount": "mnt", "ns": "mnt", "network": "net", "cgroups": "cgroup", "hostname": "uts"}
# The order of setns(2).  nsenter(1) joins user first, for an unprivileged caller
# gains its capabilities there; we are root in the initial user namespace, which
# holds CAP_SYS_ADMIN over every namespace: joining user *last* keeps that for the
# others (setns into a time namespace owned by the initial user namespace is refused
# from inside a child user namespace).  mnt resets root and cwd; pid and time
# apply to children only (pid_namespaces(7), time_namespaces(7)).
JOIN_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt", "time", "user")

# The bounds of learner code (cgroup="bounded"): enough for a Python callable and a
# few children; a fork bomb meets pids.max, a memory hog the OOM killer.
BOUNDED_MEMORY = "256M"
BOUNDED_PIDS = 64



class Fd(NamedTuple):
    """Join a namespace through an open file descriptor (it stays the caller's to close)."""
    fd: int


class Bounded(NamedTuple):
    """cgroup=Bounded(...): a fresh lab cgroup with these limits, removed after the run."""
    memory: str | int = BOUNDED_MEMORY
    pids: int = BOUNDED_PIDS


def kinds_of(kinds: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise "uts,net", ["mount"] or "all" to names of the eight kinds, in :data:`KINDS` order."""
    if kinds is None:
        return ()
    if isinstance(kinds, str):
        kinds = KINDS if kinds.strip() == "all" else kinds.replace(",", " ").split()
    out = set()
    for k in kinds:
        name = _ALIASES.get(str(k).strip().lower(), str(k).strip().lower())
        if name not in FLAGS:
            raise BadInput(f"unknown namespace kind {k!r}: use some of {', '.join(KINDS)} "
                           "(see namespaces(7))")
        out.add(name)
    return tuple(k for k in KINDS if k in out)


def idmap_text(m, what: str = "uid_map") -> str | None:
    """uid_map/gid_map text from '0 100000 65536' lines, an int N ("root inside is N
    outside") or (inside, outside, count) tuples (user_namespaces(7))."""
    if m is None:
        return None
    if isinstance(m, bool):
        raise BadInput(f"{what}: give text like '0 100000 65536', an outside id, or tuples")
    if isinstance(m, int):
        lines = [(0, m, 1)]
    elif isinstance(m, str):
        try:
            lines = [tuple(int(x) for x in ln.split()) for ln in m.strip().splitlines() if ln.strip()]
        except ValueError:
            lines = [()]
    else:
        try:
            lines = [tuple(int(x) for x in t) for t in m]
        except (TypeError, ValueError):
            lines = [()]
    if not lines or any(len(t) != 3 or min(t) < 0 or t[2] < 1 for t in lines) or len(lines) > 340:
        raise BadInput(f"{what} {m!r}: each line is 'INSIDE OUTSIDE COUNT' (count >= 1), "
                       "e.g. '0 100000 65536' (user_namespaces(7))")
    return "".join(f"{a} {b} {c}\n" for a, b, c in lines)


# --- what comes back ---------------------------------------------------------------------

# What to do when a step fails, by (step prefix, errno): the hint of a StepFailed.
_HINTS = (
    ("exec", _errno.ENOENT, "program not found: check its name, or give a full path "
                            "(the PATH searched is the one of env=, inside the root)"),
    ("exec", _errno.EACCES, "the file is not executable by the uid it runs as: check its mode"),
    ("setns", _errno.EINVAL, "this namespace cannot be joined from here (setns(2)): is the "
                             "target in a nested user namespace, or already ours?"),
    ("setns", _errno.EPERM, "joining needs CAP_SYS_ADMIN (and CAP_SYS_CHROOT for mnt): run the "
                            "lab as root in its VM"),
    ("open", _errno.ENOENT, "the target process has exited: start it again"),
    ("open", _errno.ESRCH, "the target process has exited: start it again"),
    ("cgroup", _errno.EBUSY, "cgroup v2 puts processes only in leaf cgroups with no enabled "
                             "controllers below (cgroup-v2 'no internal processes'): join a leaf"),
    ("cgroup", _errno.EOPNOTSUPP, "a threaded cgroup v2 subtree: join its domain cgroup"),
    ("cgroup", _errno.ENOENT, "that cgroup is gone: create it again"),
    ("setuid", _errno.EINVAL, "that uid is not mapped in the process's user namespace "
                              "(user_namespaces(7)): give uid_map= (and gid_map=)"),
    ("setgid", _errno.EINVAL, "that gid is not mapped in the process's user namespace "
                              "(user_namespaces(7)): give gid_map="),
    ("clone", _errno.ENOMEM, "the pid namespace joined has lost its PID 1, so no new process "
                             "may enter it (pid_namespaces(7)): start the target again"),
    ("check cwd", _errno.ENOENT, "the working directory is outside the root (an inherited "
                                 "directory fd, CVE-2024-21626): refused, as runc >= 1.1.12 does"),
    ("", _errno.ENOSPC, "the per-user namespace limit is reached (/proc/sys/user/max_*_namespaces): "
                        "remove some (`python -m justaprocess cleanup`) or raise the limit"),
    ("", _errno.EPERM, "needs privilege (capabilities(7)): run the lab as root in its VM"),
    ("", _errno.EACCES, "needs privilege or file permissions: run the lab as root in its VM"),
    ("", _errno.EAGAIN, "a limit on processes was reached (the cgroup's pids.max or RLIMIT_NPROC)"),
)


class StepFailed(LabError):
    """A set-up step in the child failed: which step, the errno (by name) and what to do."""

    def __init__(self, step: str, errno: int = 0, detail: str = "", hint: str = ""):
        self.step, self.errno, self.detail = step, errno, detail
        self.hint = hint or _hint(step, errno)
        super().__init__(str(self))

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno, "") if self.errno else ""

    def __str__(self) -> str:
        why = f"{self.errno_name} ({os.strerror(self.errno)})" if self.errno else (self.detail or "failed")
        more = f" [{self.detail}]" if self.detail and self.errno else ""
        return f"{self.step}: {why}{more} - {self.hint}"

    def __reduce__(self):
        return (StepFailed, (self.step, self.errno, self.detail, self.hint))


def _hint(step: str, no: int) -> str:
    for prefix, e, text in _HINTS:
        if e == no and step.startswith(prefix):
            return text
    return "see the man page of that call (unshare(2), setns(2), mount(2), capabilities(7))"


class Timeout(LabError, TimeoutError):
    """A launched process did not finish in time (it was killed, by run())."""


@dataclass
class Result:
    """What a launched process did: the one result type of every run in the lab."""
    returncode: int | None          # exit code; -N when killed by signal N (like subprocess)
    stdout: str = ""
    stderr: str = ""
    host_pid: int = 0               # the process as the host numbers it
    ns_pid: int = 0                 # as its own PID namespace numbers it
    value: Any = None               # a callable's return value (pickled back)
    exception: BaseException | None = None  # what a callable raised, or execve's OSError
    error: StepFailed | None = None  # a set-up step that failed (nothing ran)
    final: dict = field(default_factory=dict)  # its /proc/PID/status at exit (when observable)
    label: str = ""
    kinds: tuple[str, ...] = ()     # new namespaces it was given
    notes: tuple[str, ...] = ()

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None and self.exception is None

    @property
    def output(self) -> str:
        return self.stdout

    # What the process ended with, from its /proc/PID/status read before reaping
    # (a zombie keeps its credentials): only when the process was the lab's own child.
    @property
    def caps(self) -> proc.CapMasks | None:
        st = self.final
        if "CapEff" not in st:
            return None
        return proc.CapMasks(*(int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")))

    @property
    def sets(self):
        """Its five capability sets by name (capabilities.CapSets), or None."""
        from . import _captable
        m = self.caps
        return _captable.from_masks(m) if m is not None else None

    @property
    def uid(self) -> int | None:
        return int(self.final["Uid"].split()[1]) if "Uid" in self.final else None

    @property
    def no_new_privs(self) -> bool | None:
        return self.final["NoNewPrivs"] == "1" if "NoNewPrivs" in self.final else None

    @property
    def errno_name(self) -> str:
        """'EPERM' when the callable raised OSError(EPERM) (or a step failed so); else ''."""
        no = getattr(self.exception, "errno", None) or (self.error.errno if self.error else None)
        return _errno.errorcode.get(no, "") if no else ""

    def check(self) -> "Result":
        """Raise the failed step (a lab error), or LabError for a failed command; else self."""
        if self.error is not None:
            raise self.error
        if self.returncode != 0 or self.exception is not None:
            what = (f"raised {type(self.exception).__name__}: {self.exception}"
                    if self.exception is not None else
                    f"was killed by signal {self.signal}" if self.signal else
                    f"exited with {self.returncode}")
            raise LabError(f"{self.label or 'the process'} {what}: {self.stderr.strip()[-500:]}")
        return self

    def __repr__(self) -> str:
        out = self.stdout if len(self.stdout) < 200 else self.stdout[:200] + "..."
        s = f"Result({self.label!r}, returncode={self.returncode}, ns_pid={self.ns_pid}, " \
            f"host_pid={self.host_pid}, stdout={out!r}"
        if self.kinds:
            s += f", kinds={','.join(self.kinds)}"
        if self.stderr:
            s += f", stderr={self.stderr[-200:]!r}"
        if self.value is not None:
            s += f", value={self.value!r}"
        if self.exception is not None:
            s += f", exception={self.exception!r}"
        if self.error is not None:
            s += f", error={str(self.error)!r}"
        for n in self.notes:
            s += f", note={n!r}"
        return s + ")"


# --- the request --------------------------------------------------------------------------

@dataclass
class Spec:
    """One process to start; see the module docstring and :func:`start`.

    ``join``: {kind: PID | '/proc/PID/ns/KIND' path | Fd(n)}.  ``cgroup``: None (stay
    in the caller's), a ``cgroups.Cgroup``, a list of cgroup directories, a PID (join
    that process's cgroups), ``"bounded"`` or :class:`Bounded` (a fresh lab cgroup with
    memory and pids limits, removed after the run).  ``caps``: names to keep (all
    others leave every set, the bounding set too unless ``bounding=False``);
    ``drop``: names to remove; ``ambient``: names to raise into the ambient set, or
    True for all kept.  ``seccomp``: syscall names (or numbers) to fail with EPERM, or
    {name: errno name}.  ``target_root``: a PID; after the joins, chroot into its root
    (/proc/PID/root, opened before anything is joined), as ``runc exec`` does.
    ``offsets``: {'monotonic'|'boottime': seconds} for a new time namespace.
    ``lo_up``: bring up lo of a new network namespace.  ``readonly``: paths (inside
    the root) remounted read-only, OCI's readonlyPaths.  ``masked``: paths hidden, OCI's
    maskedPaths (/dev/null bound over a file, an empty read-only tmpfs over a folder;
    absent ones skipped).  ``close_fds``: mark every fd >= 3 close-on-exec just before
    the exec, so no fd of the caller's reaches the program (runc does; CVE-2024-21626
    was one that did).  ``prepare``: a callable run
    in the process after its namespaces, mounts and /proc and before the jump into
    ``root`` (an engine's extra mounts, network set-up inside).  ``gate``: start()
    returns once the process is in its namespaces and waits there until
    ``handle.go()`` (the caller sets up what needs its PID, e.g. a veth end).
    ``kill_group``: when it exits, kill what it left in its process group (the
    default); False leaves them (``runc exec`` of ``sleep 5 &``), and the output
    is what was written until it exited.  ``apparmor``: the name of a loaded AppArmor
    profile the process enters at its execve (as runc does for OCI ``apparmorProfile``).
    """
    argv: Sequence[str] | None = None
    fn: Callable[[], Any] | None = None
    new: str | Iterable[str] = ()
    join: dict = field(default_factory=dict)
    cgroup: Any = None
    uid: int | None = None
    gid: int | None = None
    groups: Sequence[int] = ()
    uid_map: Any = None
    gid_map: Any = None
    setgroups: str | None = None
    caps: Iterable[str | int] | None = None
    drop: Iterable[str | int] = ()
    ambient: Iterable[str | int] | bool = ()
    bounding: bool = True
    no_new_privs: bool = False
    seccomp: Any = None
    root: str | None = None
    pivot_root: bool = True
    mount_proc: bool = False
    hostname: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    stdin: Any = None
    stdout: Any = "pipe"
    stderr: Any = "pipe"
    target_root: int | None = None
    offsets: dict | None = None
    lo_up: bool = False
    readonly: Sequence[str] = ()
    masked: Sequence[str] = ()
    close_fds: bool = False
    prepare: Callable[[], None] | None = None
    gate: bool = False
    kill_group: bool = True
    verify_cwd: bool = True
    apparmor: str | None = None
    note: str = ""


@dataclass
class _Plan:
    """The Spec resolved in the caller: the children make syscalls, not decisions."""
    argv: list[str] | None
    fn: Callable | None
    label: str
    new: tuple[str, ...]
    join_fds: list[tuple[str, int]]
    cgroup_files: list[str]
    uid_map: str | None
    gid_map: str | None
    setgroups: str | None
    uid: int | None
    gid: int | None
    groups: list[int]
    keep: int | None
    drop: int
    ambient: int | bool
    bounding: bool
    last_cap: int
    no_new_privs: bool
    seccomp: bytes | None
    root: str | None
    pivot_root: bool
    mount_proc: bool
    hostname: str | None
    cwd: str | None
    env: dict | None
    root_fd: int | None
    offsets: str | None
    caller: int
    stdio: list = field(default_factory=list)   # [(child fd 0/1/2, fd to dup)]
    owned_fds: list[int] = field(default_factory=list)
    bounded: Any = None                         # the Cgroup made for cgroup="bounded"
    proc_fd: int | None = None                  # the caller's /proc: after setns(mnt) /proc is theirs
    lo_up: bool = False
    readonly: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    close_fds: bool = False
    prepare: Callable[[], None] | None = None
    gate_r: int | None = None
    kill_group: bool = True
    apparmor: str | None = None                 # profile to switch to at exec (attr/apparmor/exec)
    wire_w: int = -1
    home_fds: list[int] = field(default_factory=list)  # H's way back out of the cgroup: home_files()

    @property
    def clone_flags(self) -> int:
        # cgroup: T unshares it after joining its cgroup, so that cgroup becomes its "/"
        # (cgroup_namespaces(7)); time: unshared by H, it applies to H's children.
        return sum(FLAGS[k] for k in self.new if k not in ("cgroup", "time"))

    @property
    def needs_child(self) -> bool:
        joined = {k for k, _ in self.join_fds}
        return bool({"pid", "user", "time"} & set(self.new)) or "pid" in joined


def _open_ns(kind: str, target) -> tuple[int, bool]:
    """An fd of the namespace to join, and whether we own it.  Opened *now*, in the
    caller: the target may exit, but the namespace stays while the fd is open."""
    if isinstance(target, Fd):
        return target.fd, False
    if isinstance(target, bool) or not isinstance(target, (int, str, os.PathLike)):
        raise BadInput(f"join[{kind!r}]: a PID, a path like /proc/PID/ns/{kind}, or Fd(n); "
                       f"not {target!r}")
    if isinstance(target, int):
        if target <= 0:
            raise BadInput(f"join[{kind!r}]: {target} is not a valid PID (PIDs start at 1)")
        path = f"/proc/{target}/ns/{kind}"
    else:
        path = os.fspath(target)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), True
    except (FileNotFoundError, ProcessLookupError):
        if isinstance(target, int):
            raise NoSuchProcess(target) from None
        raise BadInput(f"join[{kind!r}]: no namespace file {path!r}") from None
    except PermissionError as exc:
        raise NeedsPrivilege("root", f"opening {path}:") from exc


def _same_ns(fd: int, kind: str) -> bool:
    a, b = os.fstat(fd), os.stat(f"/proc/self/ns/{kind}")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _cgroup_dirs(cg) -> tuple[list[str], Any]:
    """The directories to join (cgroup= None, a Cgroup, a directory or a list of them),
    and the cgroup to remove after the run (None here).  ``_launch.start`` passes a
    resolver that also knows ``"bounded"``/:class:`Bounded` and a PID."""
    if cg is None:
        return [], None
    if cg == "bounded" or isinstance(cg, Bounded) or isinstance(cg, bool) or isinstance(cg, int):
        if isinstance(cg, bool):
            raise BadInput("cgroup=: None, 'bounded', a Cgroup, a PID, or a list of cgroup directories")
        raise BadInput(f"cgroup={cg!r} is resolved by _launch.start()/run(): call those")
    if hasattr(cg, "paths"):
        if not cg.paths:
            raise BadInput(f"cgroup {getattr(cg, 'name', cg)} is not created: call .create() first")
        return list(cg.paths), None
    if isinstance(cg, (str, os.PathLike)):
        cg = [cg]
    dirs = [os.fspath(d) for d in cg]
    for d in dirs:
        if not os.path.isfile(os.path.join(d, "cgroup.procs")):
            raise BadInput(f"{d!r} is not a cgroup directory (it has no cgroup.procs)")
    return dirs, None


def join_files(dirs: Sequence[str]) -> list[str]:
    """The files a child writes "0" (= me) to, to move itself into these cgroups.

    v1's ``tasks`` where it exists: moving a whole process (cgroup.procs) takes a
    global lock whose first use waits for an RCU grace period (5-12 ms measured
    here); a single-threaded process moving its own thread skips it
    (kernel/cgroup/cgroup.c, cgroup_procs_write_start), and with one thread, the
    thread is the process.  v2 has no such shortcut: cgroup.procs.
    """
    out = []
    for d in dirs:
        tasks = os.path.join(d, "tasks")
        out.append(tasks if os.path.exists(tasks) else os.path.join(d, "cgroup.procs"))
    return out


def home_files(files: Sequence[str], procfs: str = proc.PROCFS) -> list[str]:
    """For each file of :func:`join_files`, the same file of the cgroup the caller is in,
    in that hierarchy: the way back out for the helper H.

    H joins the target's cgroups and clones T there (a clone past pids.max gets
    EAGAIN, as in ``runc exec``), then leaves for these: otherwise it would count
    against pids.max, be charged memory and, a fork of a big kernel, be the
    OOM killer's first choice (cgroup-v2.rst, "OOM") for the target's lifetime.
    A hierarchy the caller is already in at that place needs no file.
    """
    table = proc.own_mounts() if procfs == proc.PROCFS else proc.mountinfo("self", procfs)
    mounts = [m for m in table if m.fstype in ("cgroup", "cgroup2")]
    lines = proc.cgroups("self", procfs)
    out = []
    for f in files:
        d = os.path.dirname(f)
        inside = [m for m in mounts if d == m.target or d.startswith(m.target.rstrip("/") + "/")]
        if not inside:
            continue
        m = max(inside, key=lambda m: len(m.target))
        for ln in lines:
            if (ln.hierarchy == 0) == (m.fstype == "cgroup2") and (
                    m.fstype == "cgroup2" or set(ln.controllers) & set(m.super_options)):
                break
        else:
            continue
        rel = ln.path
        if m.root != "/":  # a mount of part of the hierarchy: paths are below its root
            if not (rel == m.root or rel.startswith(m.root.rstrip("/") + "/")):
                continue
            rel = rel[len(m.root):]
        home = os.path.normpath(os.path.join(m.target, rel.lstrip("/")))
        if home != os.path.normpath(d):
            out.append(os.path.join(home, os.path.basename(f)))
    return out


def _seccomp_program(spec) -> bytes | None:
    if spec is None:
        return None
    if isinstance(spec, (bytes, bytearray)):
        return bytes(spec)
    items = spec.items() if isinstance(spec, dict) else ((s, "EPERM") for s in spec)
    numbers = {}
    for name, err in items:
        if isinstance(name, int) and not isinstance(name, bool):
            nr = name
        else:
            try:
                nr = _libc.syscall_number(str(name))
            except OSError:
                raise BadInput(f"seccomp: no syscall number for {name!r} on {_libc.MACHINE} "
                               "(_libc.SYSCALLS): give its number") from None
        no = getattr(_errno, str(err), None) if not isinstance(err, int) else err
        if not isinstance(no, int):
            raise BadInput(f"seccomp: {err!r} is not an errno name like 'EPERM'")
        numbers[nr] = no
    if _libc.MACHINE not in _libc.AUDIT_ARCH:
        raise NotSupported(f"seccomp filters: no audit arch for {_libc.MACHINE}")
    return _libc.seccomp_deny(numbers)


def _stdio(which: int, how, plan: _Plan, parent_side: dict) -> None:
    if how is None and which == 0:
        how = "null"
    if how == "inherit":
        return
    if how == "null":
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        plan.stdio.append((which, fd))
        plan.owned_fds.append(fd)
    elif how == "pipe":
        r, w = os.pipe2(os.O_CLOEXEC)
        mine, theirs = (w, r) if which == 0 else (r, w)
        parent_side[which] = mine
        plan.stdio.append((which, theirs))
        plan.owned_fds.append(theirs)
    elif isinstance(how, int) and not isinstance(how, bool) and how >= 0:
        plan.stdio.append((which, how))
    elif hasattr(how, "fileno"):
        plan.stdio.append((which, how.fileno()))
    else:
        raise BadInput(f"stdio: 'pipe', 'inherit', 'null', None or an fd; not {how!r}")


def _prepare(spec: Spec, resolve: Callable[[Any], tuple[list[str], Any]] = _cgroup_dirs
             ) -> tuple[_Plan, dict]:
    if (spec.argv is None) == (spec.fn is None):
        raise BadInput("give a command (argv=[...]) or a callable (fn=...), one of the two")
    argv = None
    if spec.argv is not None:
        if isinstance(spec.argv, (str, bytes)) or not spec.argv or \
                not all(isinstance(a, (str, bytes, os.PathLike)) for a in spec.argv):
            raise BadInput(f"argv is a list of strings like ['/bin/sh', '-c', 'id'], not {spec.argv!r}")
        argv = [os.fsdecode(a) for a in spec.argv]
    elif not callable(spec.fn):
        raise BadInput(f"fn must be callable, not {spec.fn!r}")
    label = " ".join(argv) if argv else getattr(spec.fn, "__name__", repr(spec.fn))
    label = label if len(label) <= 60 else label[:57] + "..."
    new = kinds_of(spec.new)
    if not isinstance(spec.join, dict):
        raise BadInput("join= is a dict {kind: PID, path or Fd}")
    join = {kinds_of([k])[0]: v for k, v in spec.join.items()}
    both = set(new) & set(join)
    if both:
        raise BadInput(f"{', '.join(sorted(both))}: either create a namespace or join one, not both")
    if spec.hostname is not None:
        if "uts" not in new:
            raise BadInput("hostname= needs a new uts namespace (else it would rename the host "
                           "or the target): add 'uts' to new")
        if not spec.hostname or len(spec.hostname.encode()) > 64:
            raise BadInput(f"hostname {spec.hostname!r}: 1 to 64 bytes (sethostname(2))")
    if spec.mount_proc and "mnt" not in new:
        raise BadInput("mount_proc=True needs a new mount namespace (else it would cover the "
                       "host's /proc): add 'mnt' to new")
    if spec.root is not None:
        if not os.path.isdir(spec.root) and "mnt" not in join:
            raise BadInput(f"root {spec.root!r} is not a folder")
        if spec.pivot_root and "mnt" not in new:
            raise BadInput("pivot_root needs a new mount namespace: add 'mnt' to new, or "
                           "pass pivot_root=False for chroot(2)")
    if spec.target_root is not None and spec.root is not None:
        raise BadInput("root= and target_root= both set a root: choose one")
    if (spec.uid_map is not None or spec.gid_map is not None) and "user" not in new:
        raise BadInput("uid_map=/gid_map= need a new user namespace: add 'user' to new")
    if spec.lo_up and "net" not in new:
        raise BadInput("lo_up=True brings up lo of a *new* network namespace: add 'net' to new")
    if spec.offsets and "time" not in new:
        raise BadInput("offsets= need a new time namespace: add 'time' to new")
    if "time" in new and "time" not in proc.namespaces("self"):
        raise NotSupported("this kernel has no time namespaces (Linux >= 5.6, time_namespaces(7))")
    if os.geteuid() != 0 and (join or (new and "user" not in new) or spec.cgroup is not None):
        raise NeedsPrivilege("root", "creating or joining namespaces or cgroups")
    for name in ("uid", "gid"):
        v = getattr(spec, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise BadInput(f"{name}={v!r}: a number >= 0")
    from . import _captable
    keep = _captable.to_mask(spec.caps) if spec.caps is not None else None
    drop = _captable.to_mask(spec.drop) if spec.drop else 0
    amb = spec.ambient if isinstance(spec.ambient, bool) else \
        (_captable.to_mask(spec.ambient) if spec.ambient else 0)
    um = idmap_text(spec.uid_map, "uid_map")
    gm = idmap_text(spec.gid_map, "gid_map") if spec.gid_map is not None else um
    if spec.setgroups not in (None, "allow", "deny") or (spec.setgroups and "user" not in new):
        raise BadInput(f"setgroups={spec.setgroups!r}: 'deny' or 'allow', for a new user namespace "
                       "(written before gid_map: user_namespaces(7), /proc/PID/setgroups)")
    offsets = None
    if spec.offsets:
        lines = []
        for clock, secs in spec.offsets.items():
            if clock not in ("monotonic", "boottime"):
                raise BadInput(f"offsets: 'monotonic' or 'boottime', not {clock!r}")
            ns = int(round(float(secs) * 1e9))
            lines.append(f"{clock} {ns // 10**9} {ns % 10**9}")
        offsets = "\n".join(lines) + "\n"
    seccomp = _seccomp_program(spec.seccomp)
    plan = _Plan(argv, spec.fn, label, new, [], [], um, gm,
                 spec.setgroups or ("deny" if (gm and os.geteuid() != 0) else None),
                 spec.uid, spec.gid, list(spec.groups), keep, drop, amb, spec.bounding,
                 _captable.last_cap(), spec.no_new_privs, seccomp, spec.root, spec.pivot_root,
                 spec.mount_proc, spec.hostname, spec.cwd,
                 dict(spec.env) if spec.env is not None else None, None, offsets, os.getpid())
    plan.lo_up = spec.lo_up
    plan.kill_group = spec.kill_group
    plan.verify_cwd = spec.verify_cwd
    if spec.apparmor is not None:
        from . import _apparmor
        if not isinstance(spec.apparmor, str) or not spec.apparmor:
            raise BadInput(f"apparmor={spec.apparmor!r}: the name of a loaded profile")
        reason = _apparmor.why_not()
        if reason:
            raise NotSupported(f"AppArmor: {reason}")
        if not _apparmor.present(spec.apparmor):
            raise BadInput(f"apparmor={spec.apparmor!r}: no such profile is loaded "
                           f"(see {_apparmor.PROFILES}); load it first (apparmor_parser -r)")
        plan.apparmor = spec.apparmor
    plan.prepare = spec.prepare
    if spec.prepare is not None and not callable(spec.prepare):
        raise BadInput(f"prepare= must be callable, not {spec.prepare!r}")
    if spec.readonly:
        if "mnt" not in new:
            raise BadInput("readonly= paths are remounted in a new mount namespace: add 'mnt' to new")
        if isinstance(spec.readonly, str) or any(".." in str(p).split("/") for p in spec.readonly):
            raise BadInput(f"readonly= is a list of absolute paths inside the root, without '..': "
                           f"{spec.readonly!r}")
        plan.readonly = tuple(str(p) for p in spec.readonly)
    if spec.masked:
        if "mnt" not in new:
            raise BadInput("masked= paths are mounted over in a new mount namespace: add 'mnt' to new")
        if isinstance(spec.masked, str) or any(not str(p).startswith("/") or ".." in str(p).split("/")
                                               for p in spec.masked):
            raise BadInput(f"masked= is a list of absolute paths inside the root, without '..': "
                           f"{spec.masked!r}")
        plan.masked = tuple(str(p) for p in spec.masked)
    plan.close_fds = bool(spec.close_fds)
    parent_side: dict[int, int] = {}
    try:
        # Open the target's files first, so it cannot race away between our checks
        # and the joins: an open namespace fd keeps the namespace (namespaces(7)).
        if spec.target_root is not None:
            t = spec.target_root
            if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
                raise BadInput(f"target_root={t!r}: the PID of the process whose root to use")
            try:
                plan.root_fd = os.open(f"/proc/{t}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError):
                raise NoSuchProcess(t) from None
            plan.owned_fds.append(plan.root_fd)
        for kind in JOIN_ORDER:
            if kind in join:
                fd, owned = _open_ns(kind, join[kind])
                if owned:
                    plan.owned_fds.append(fd)
                if not _same_ns(fd, kind):  # setns to one's own user ns is EINVAL (setns(2))
                    plan.join_fds.append((kind, fd))
        if plan.join_fds or plan.apparmor:
            plan.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            plan.owned_fds.append(plan.proc_fd)
        dirs, plan.bounded = resolve(spec.cgroup)
        plan.cgroup_files = join_files(dirs)
        _stdio(0, spec.stdin, plan, parent_side)
        _stdio(1, spec.stdout, plan, parent_side)
        _stdio(2, spec.stderr, plan, parent_side)
        if spec.gate:
            plan.gate_r, parent_side["gate"] = os.pipe2(os.O_CLOEXEC)
            plan.owned_fds.append(plan.gate_r)
    except BaseException:
        _discard(plan, parent_side)
        raise
    return plan, parent_side


def _discard(plan: _Plan, parent_side: dict) -> None:
    for fd in plan.owned_fds + list(parent_side.values()):
        try:
            os.close(fd)
        except OSError:
            pass
    plan.owned_fds.clear()
    if plan.bounded is not None:
        plan.bounded.remove()
        plan.bounded = None
