"""The host's view of a target: ``inspect`` (the container-aware ``python -m justaprocess
inspect PID``), its processes and listening sockets, and host tools made container-aware
(strace from outside, uid and PID mapping).  See :mod:`justaprocess.debug`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import NamedTuple

from . import _launch, cgroups, lab, proc
from .errors import BadInput, LabError, MissingTool, NoSuchProcess

from .debug_target import NS_KINDS, PROCFS, SECCOMP_MODES, Target, target

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
    # setns(2) into the network namespace only (its open fd), then exec; the launcher
    # skips the join when it is ours already.
    r = _launch.run(_launch.Spec(argv=argv, join={"net": _launch.Fd(t.ns_fds["net"])},
                                 note=f"sockets of {t.name}"), timeout=30)
    if r.returncode != 0 or r.error is not None:
        raise LabError(f"listing the sockets of {t.name} failed: {r.error or r.stderr.strip()[-300:]}")
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
                _launch.tool(trigger, timeout=timeout)
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


