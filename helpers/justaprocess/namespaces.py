"""Namespaces: the eight kinds, who is in which, and running things in new or existing ones.

A namespace wraps one global resource so that the processes inside see their
own instance of it (namespaces(7)).  A process is in exactly one namespace of
each kind; the kernel shows which as the links ``/proc/PID/ns/KIND``
(``net:[4026531840]``): equal numbers, same namespace.

- :data:`KINDS`, :func:`of`, :func:`compare`, :func:`members`,
  :func:`inventory` (like ``lsns``) and :func:`share_map` only read /proc.
- :func:`run`, :func:`spawn` (like ``unshare(1)``) and :func:`enter` (like
  ``nsenter(1)``) make the syscalls in a *child*: the calling process (a
  notebook's kernel) never moves.  The child is a small trampoline,
  ``justaprocess._nsexec``, run as a fresh single-threaded interpreter (for a
  command) or in a forked child (for a Python callable).

Commands: ``python -m justaprocess ns [--json]`` (the machine's namespaces, the
fields of ``lsns -J``) and ``python -m justaprocess ns PID`` (one process,
compared with the host).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import pwd
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence

from . import _libc, _nsexec, lab, proc
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
    /proc/1/ns links answer EACCES (KERNEL-NOTES); then we use PID 2.
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
        lines.append(f"host = same namespace as PID {self.reference}; letters = other namespaces; "
                     "* = highlighted")
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
                f"{self.reference}; a letter = another namespace of that kind (same letter, same "
                "namespace); outlined = highlighted</small>")


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


# --- creating and entering namespaces (in children) -----------------------------

@dataclass
class Result:
    """What a command or callable did in its namespaces."""
    kinds: tuple[str, ...]
    returncode: int           # negative: killed by that signal (as subprocess)
    stdout: str
    stderr: str
    host_pid: int             # the process in the namespaces, as the host numbers it
    ns_pid: int               # the same process as its own PID namespace numbers it
    value: object = None      # a callable's return value (pickled back)
    notes: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        return self.stdout

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> "Result":
        """Raise ``LabError`` (with stderr) when the command failed; else return self."""
        if self.returncode != 0:
            raise LabError(f"the command exited with {self.returncode}: {self.stderr.strip()[-500:]}")
        return self

    def __repr__(self) -> str:
        out = self.stdout if len(self.stdout) < 200 else self.stdout[:200] + "..."
        s = (f"Result(kinds={','.join(self.kinds) or '-'}, returncode={self.returncode}, "
             f"ns_pid={self.ns_pid}, host_pid={self.host_pid}, stdout={out!r}")
        if self.stderr:
            s += f", stderr={self.stderr[-200:]!r}"
        if self.value is not None:
            s += f", value={self.value!r}"
        for n in self.notes:
            s += f", note={n!r}"
        return s + ")"


def _idmap(m, what: str) -> str | None:
    """uid_map/gid_map text from: '0 100000 65536' lines, an int (outside id for inside 0),
    or (inside, outside, count) tuples (user_namespaces(7))."""
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
        lines = [tuple(int(x) for x in t) for t in m]
    if not lines or any(len(t) != 3 or min(t) < 0 or t[2] < 1 for t in lines) or len(lines) > 340:
        raise BadInput(f"{what} {m!r}: each line is 'INSIDE OUTSIDE COUNT' (count >= 1), "
                       "e.g. '0 100000 65536' (user_namespaces(7))")
    return "".join(f"{a} {b} {c}\n" for a, b, c in lines)


def _argv(target) -> list[str]:
    if isinstance(target, str):
        return ["/bin/sh", "-c", target]
    if isinstance(target, (list, tuple)) and target and all(isinstance(a, (str, bytes, os.PathLike)) for a in target):
        return [os.fsdecode(a) for a in target]
    raise BadInput(f"expected a command (a list of strings, or a shell string) or a Python "
                   f"callable, got {target!r}")


def _new_config(kinds, hostname, uid_map, gid_map, monotonic, boottime, fresh_proc, cwd):
    ks = kinds_of(kinds)
    notes = []
    if hostname is not None and "uts" not in ks:
        raise BadInput("hostname= needs a new uts namespace: add 'uts' to kinds "
                       "(else you would rename the host)")
    if (uid_map is not None or gid_map is not None) and "user" not in ks:
        raise BadInput("uid_map=/gid_map= need a new user namespace: add 'user' to kinds")
    if (monotonic is not None or boottime is not None) and "time" not in ks:
        raise BadInput("monotonic=/boottime= offsets need a new time namespace: add 'time' to kinds")
    if hostname is not None and (not hostname or len(hostname.encode()) > 64):
        raise BadInput(f"hostname {hostname!r}: 1 to 64 bytes (HOST_NAME_MAX, sethostname(2))")
    if fresh_proc is None:
        fresh_proc = "pid" in ks and "mnt" in ks
    elif fresh_proc and not ("pid" in ks and "mnt" in ks):
        raise BadInput("fresh_proc=True needs both 'pid' (whose processes it shows) and 'mnt' "
                       "(so the new /proc does not replace the host's): add them to kinds")
    if "pid" in ks and not fresh_proc:
        notes.append("new pid namespace but the host's /proc: ps and /proc still show the "
                     "host's processes (add 'mnt' for a fresh /proc; pid_namespaces(7))")
    if "time" in ks and "time" not in proc.namespaces("self"):
        raise NotSupported("this kernel has no time namespaces (Linux >= 5.6, time_namespaces(7))")
    if os.geteuid() != 0 and "user" not in ks and ks:
        raise NeedsPrivilege("CAP_SYS_ADMIN", f"creating {','.join(ks)} namespaces")
    um = _idmap(uid_map, "uid_map")
    gm = _idmap(gid_map, "gid_map") if gid_map is not None else um
    offsets = {}
    if monotonic is not None:
        offsets["monotonic"] = float(monotonic)
    if boottime is not None:
        offsets["boottime"] = float(boottime)
    cfg = {"mode": "new", "kinds": list(ks), "hostname": hostname, "uid_map": um, "gid_map": gm,
           # Without CAP_SETGID outside, gid_map may only be written after setgroups=deny.
           "setgroups": "deny" if (gm and os.geteuid() != 0) else None,
           "offsets": offsets, "fresh_proc": bool(fresh_proc), "cwd": cwd}
    return ks, cfg, tuple(notes)


def _enter_config(pid, kinds, cwd):
    pid = int(pid)
    if not proc.exists(pid):
        raise NoSuchProcess(pid)
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
    return ks, {"mode": "enter", "pid": pid, "kinds": list(ks), "cwd": cwd}, tuple(notes)


def _trampoline_argv(cfg: dict) -> list[str]:
    helpers = os.path.dirname(os.path.dirname(os.path.abspath(_nsexec.__file__)))
    code = (f"import sys; sys.path.insert(0, {helpers!r}); "
            "from justaprocess._nsexec import main; main()")
    # -I -S: no site, no user paths: a quick start, and the child imports only the stdlib.
    return [sys.executable, "-I", "-S", "-c", code, json.dumps(cfg)]


def _error(err: dict, cfg: dict) -> LabError:
    step, no = err.get("step", "?"), int(err.get("errno") or 0)
    detail = err.get("detail") or ""
    if step == "exec":
        if no == 2:
            return BadInput(f"command {detail!r} not found (PATH inside the new namespaces is "
                            "the host's): check its name, or give a full path")
        if no == 13:
            return BadInput(f"command {detail!r} cannot be executed (permission denied): check "
                            "its mode and, in a user namespace, the uid it runs as")
    if no in (1, 13):  # EPERM, EACCES
        what = "CAP_SYS_ADMIN"
        if step.startswith("write") and "timens" in step:
            what = "CAP_SYS_TIME"
        elif "setres" in step or "map" in step:
            what = "CAP_SETUID/CAP_SETGID"
        return NeedsPrivilege(what, f"{step}:")
    if no == 28:  # ENOSPC
        return LabError(f"{step}: the per-user namespace limit is reached "
                        "(/proc/sys/user/max_*_namespaces): remove some (`python -m justaprocess "
                        "cleanup`) or raise the limit")
    if no == 22 and step.startswith("setns"):
        return LabError(f"{step}: EINVAL - the target's namespace cannot be joined from here "
                        "(setns(2)): is the target inside a nested user namespace?")
    if no == 3 or (step.startswith("open /proc") and no == 2):
        return NoSuchProcess(cfg.get("pid", 0))
    msg = f"{step} failed" + (f": {os.strerror(no)}" if no else "") + (f" ({detail})" if detail else "")
    return LabError(msg + " - see unshare(2), setns(2), mount(2)")


def _collect(fds: dict[str, int], deadline: float, input_fd=None, data: bytes = b"") -> tuple[dict, bool]:
    """Read every fd to EOF (selectors: no pipe can fill up and block the child)."""
    out = {k: b"" for k in fds}
    sel = selectors.DefaultSelector()
    for k, fd in fds.items():
        sel.register(fd, selectors.EVENT_READ, k)
    if input_fd is not None:
        if data:
            sel.register(input_fd, selectors.EVENT_WRITE, None)
        else:
            os.close(input_fd)
    timed_out = False
    view = memoryview(data)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                if key.data is None:  # stdin
                    try:
                        n = os.write(key.fd, view[:65536])
                    except BrokenPipeError:
                        n = len(view)
                    view = view[n:]
                    if not view:
                        sel.unregister(key.fd)
                        os.close(key.fd)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    out[key.data] += chunk
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
    return out, timed_out


def _info(raw: bytes) -> tuple[dict, dict | None]:
    ready, err = {}, None
    for line in raw.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "error" in msg and err is None:
            err = msg["error"]
        elif "host_pid" in msg and not ready:
            ready = msg
    return ready, err


def _launch_command(argv: list[str], cfg: dict, *, stdout, stderr, stdin, note: str) -> tuple[lab.LabProcess, int]:
    r, w = os.pipe()
    cfg = dict(cfg, argv=argv, info_fd=w, parent=os.getpid())
    try:
        p = lab.LabProcess(_trampoline_argv(cfg), note=note, stdout=stdout, stderr=stderr,
                           stdin=stdin, pass_fds=(w,))
    finally:
        os.close(w)
    return p, r


def run(target, kinds: str | Iterable[str] = CONTAINER_KINDS, *, hostname: str | None = None,
        uid_map=None, gid_map=None, monotonic: float | None = None, boottime: float | None = None,
        fresh_proc: bool | None = None, cwd: str | None = None, input: str | bytes | None = None,
        args: tuple = (), kwargs: dict | None = None, timeout: float = 10.0) -> Result:
    """Run a command or a Python callable in new namespaces of ``kinds``; wait; return a :class:`Result`.

    ``target``: a list of strings (exec'd), a string (run by ``/bin/sh -c``), or a
    callable (called with ``args``/``kwargs`` in a forked child; its return value
    comes back pickled as ``Result.value``; its prints as ``stdout``).

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
    killed and ``LabError`` raised.
    """
    ks, cfg, notes = _new_config(kinds, hostname, uid_map, gid_map, monotonic, boottime,
                                 fresh_proc, cwd)
    if callable(target):
        return _run_callable(target, args, kwargs or {}, ks, cfg, notes, input, timeout)
    return _run_command(_argv(target), ks, cfg, notes, input, timeout)


def enter(pid: int, target, kinds: str | Iterable[str] | None = None, *, cwd: str | None = None,
          input: str | bytes | None = None, args: tuple = (), kwargs: dict | None = None,
          timeout: float = 10.0) -> Result:
    """Run a command or callable inside the namespaces of process ``pid`` (what ``nsenter -t PID`` does).

    ``kinds``: which of its namespaces to join (default: every kind in which it
    differs from us, like ``nsenter -a``).  Joining pid affects only children,
    so the target then runs in a forked child (setns(2)); joining pid
    without mnt leaves the host's /proc in view (a note in the Result says so).
    """
    ks, cfg, notes = _enter_config(pid, kinds, cwd)
    if callable(target):
        return _run_callable(target, args, kwargs or {}, ks, cfg, notes, input, timeout)
    return _run_command(_argv(target), ks, cfg, notes, input, timeout)


def _as_bytes(data) -> bytes:
    if data is None:
        return b""
    return data.encode() if isinstance(data, str) else bytes(data)


def _run_command(argv, ks, cfg, notes, input, timeout) -> Result:
    deadline = time.monotonic() + timeout
    p, r = _launch_command(argv, cfg, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                           note=f"namespaces.run {argv[0]}")
    try:
        fds = {"info": r, "out": p.popen.stdout.fileno(), "err": p.popen.stderr.fileno()}
        stdin_fd = None
        if input is not None:
            stdin_fd = os.dup(p.popen.stdin.fileno())
            p.popen.stdin.close()
        got, timed_out = _collect(fds, deadline, stdin_fd, _as_bytes(input))
        if timed_out:
            p.stop()
            raise LabError(f"{argv[0]} did not finish within {timeout} s in its namespaces: it was "
                           "killed. Pass a larger timeout=, or use namespaces.spawn() for a "
                           "long-running process")
        try:
            p.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.stop()
            raise LabError(f"{argv[0]} did not exit within {timeout} s: it was killed") from None
        ready, err = _info(got["info"])
        if err is not None:
            raise _error(err, cfg)
        return Result(ks, p.popen.returncode, got["out"].decode(errors="replace"),
                      got["err"].decode(errors="replace"), int(ready.get("host_pid", 0)),
                      int(ready.get("ns_pid", 0)), None, notes)
    finally:
        os.close(r)
        p.stop()
        for f in (p.popen.stdout, p.popen.stderr):
            f.close()


def _run_callable(fn: Callable, args, kwargs, ks, cfg, notes, input, timeout) -> Result:
    """Fork (the caller may be multithreaded: the child is single-threaded) and run _nsexec in it."""
    deadline = time.monotonic() + timeout
    r_info, w_info = os.pipe()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    r_res, w_res = os.pipe()
    r_in, w_in = os.pipe()
    cfg = dict(cfg, info_fd=w_info, result_fd=w_res, parent=os.getpid())
    # Flush the caller's buffers, or the child would write out a copy of them.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.setsid()  # its own process group: one killpg stops it and its children
            os.dup2(r_in, 0)
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            for fd in (r_info, r_out, r_err, r_res, r_in, w_in, w_out, w_err):
                os.close(fd)
            # The kernel's sys.stdout sends to Jupyter through threads that do not
            # exist in a forked child: write to the pipes instead.
            sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _nsexec.main(cfg, target=lambda: fn(*args, **kwargs))
        finally:
            os._exit(127)
    for fd in (w_info, w_out, w_err, w_res, r_in):
        os.close(fd)
    entry = lab.register("process", f"pid-{pid}", pid=pid, note=f"namespaces.run {getattr(fn, '__name__', fn)}")
    try:
        got, timed_out = _collect({"info": r_info, "out": r_out, "err": r_err, "res": r_res},
                                  deadline, w_in, _as_bytes(input))
        if timed_out:
            _killpg(pid)
            raise LabError(f"{getattr(fn, '__name__', 'the callable')} did not finish within "
                           f"{timeout} s in its namespaces: it was killed. Pass a larger timeout=")
        status = _waitpid(pid, deadline)
        if status is None:
            _killpg(pid)
            raise LabError(f"the callable did not exit within {timeout} s: it was killed")
        ready, err = _info(got["info"])
        if err is not None:
            raise _error(err, cfg)
        value = None
        if got["res"]:
            try:
                value = pickle.loads(got["res"])
            except Exception:  # noqa: BLE001 - e.g. a class defined only in the child
                value = None
        return Result(ks, os.waitstatus_to_exitcode(status), got["out"].decode(errors="replace"),
                      got["err"].decode(errors="replace"), int(ready.get("host_pid", 0)),
                      int(ready.get("ns_pid", 0)), value, notes)
    finally:
        for fd in (r_info, r_out, r_err, r_res):
            os.close(fd)
        _killpg(pid)
        lab.unregister(entry)


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _waitpid(pid: int, deadline: float):
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done == pid:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)


class NsProcess:
    """A long-running process in its own namespaces (see :func:`spawn`).

    ``host_pid`` is the process *inside* the namespaces (PID 1 of a new PID
    namespace, not the trampoline that made it); ``ns_pid`` its PID there.
    It dies with the calling process; ``stop()`` (or lab cleanup) kills it.
    """

    def __init__(self, launcher: lab.LabProcess, host_pid: int, ns_pid: int,
                 kinds: tuple[str, ...], notes: tuple[str, ...], entry: lab.Entry | None):
        self.launcher = launcher
        self.host_pid = host_pid
        self.ns_pid = ns_pid
        self.kinds = kinds
        self.notes = notes
        self._entry = entry
        try:
            self._start = proc.start_time(host_pid)
        except (OSError, LookupError):
            self._start = None  # already exited

    @property
    def pid(self) -> int:
        return self.host_pid

    def alive(self) -> bool:
        try:
            return (proc.start_time(self.host_pid) == self._start
                    and not proc.status(self.host_pid)["State"].startswith("Z"))
        except (OSError, LookupError):
            return False

    def namespaces(self) -> dict[str, int]:
        return of(self.host_pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for it to exit; its exit code (negative: signal), as the trampoline relays it."""
        try:
            return self.launcher.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def returncode(self) -> int | None:
        return self.launcher.popen.poll()

    def stop(self, timeout: float = 3.0) -> int | None:
        """Kill it (SIGKILL: PID 1 of a namespace ignores signals it has no handler for,
        pid_namespaces(7)) and the trampoline; forget both.  Safe to call twice."""
        if self._entry is not None:
            lab.remove(self._entry)
        return self.launcher.stop(timeout)

    def __enter__(self) -> "NsProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "exited"
        return (f"<NsProcess host_pid={self.host_pid} ns_pid={self.ns_pid} "
                f"kinds={','.join(self.kinds)} {state}>")


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
    ks, cfg, notes = _new_config(kinds, hostname, uid_map, gid_map, monotonic, boottime,
                                 fresh_proc, cwd)
    p, r = _launch_command(argv, cfg, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                           note=note or f"namespaces.spawn {argv[0]}")
    try:
        got, timed_out = _collect({"info": r}, time.monotonic() + startup_timeout)
    finally:
        os.close(r)
    ready, err = _info(got["info"])
    if timed_out or err is not None or not ready:
        p.stop()
        if err is not None:
            raise _error(err, cfg)
        raise LabError(f"{argv[0]} did not start in its namespaces within {startup_timeout} s "
                       f"(trampoline exit {p.popen.returncode})")
    host_pid = int(ready["host_pid"])
    entry = None
    if host_pid != p.pid:
        try:
            entry = lab.register("process", f"pid-{host_pid}", pid=host_pid,
                                 note=(note or f"namespaces.spawn {argv[0]}") + f" (in {','.join(ks)})")
        except NoSuchProcess:
            pass  # it has already exited (and was reaped): nothing to register
    return NsProcess(p, host_pid, int(ready["ns_pid"]), ks, notes, entry)


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
