"""Debug containers (chapter 11): tools of their own, in the target's namespaces, not its cgroup.

The talk: "put tools in a debug container; start it in the target's
namespaces - not the target's cgroup".  What ``kubectl debug --target`` and
cdebug do, built from the lab's launcher:

* **its own root**: a copy of the lab's tools root (busybox, strace, ip, ss),
  or a folder given with ``tools=`` - never the target's files, which stay
  reachable through ``/proc/<target's PID>/root`` (proc(5));
* **the target's namespaces**, by default every kind the target does not
  share with the host *except mnt and cgroup* (its own mount namespace holds
  its own root and a /proc of the joined pid namespace; its own cgroup
  namespace shows its own cgroup as "/"); ``share=`` picks them;
* **its own cgroup, with its own limits** (a lab cgroup, memory and pids): a
  target at its ``memory.max`` or ``pids.max`` does not take the tools down
  with it, and the tools cannot take the target down;
* **capabilities**: the engine's default set plus CAP_SYS_PTRACE by default
  (ptrace(2) "ptrace access mode checking": without it, a tracer may only
  trace a process whose permitted capabilities are a subset of its own).

:class:`DebugContainer` ``create()`` makes the root copy and the cgroup (both
registered first), ``run(argv)`` / ``start(argv)`` start processes in it,
``remove()`` removes everything.  ``python -m justaprocess debug TARGET``
opens an interactive shell in one and removes it all on exit.

:func:`sharing` builds, from the live /proc of real processes, the table of
what each way in shares with the target: exec, sidecar, debug container,
nsenter and ``kubectl debug --target``.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import NamedTuple, Sequence

from . import _launch, capabilities, cgroups, lab, proc
from . import rootfs as _rootfs
from .errors import BadInput, LabError, MissingTool, needs

KINDS = proc.NS_KINDS
NEVER_SHARED = ("mnt", "cgroup")
DEFAULT_CAPS = tuple(capabilities.ENGINE_DEFAULT) + ("cap_sys_ptrace",)
DEFAULT_MEMORY = "256M"
DEFAULT_PIDS = 128


def parse_share(share) -> tuple[str, ...]:
    """``"pid,net"`` or ``("pid", "net")`` -> the kinds; mnt and cgroup refused with why."""
    if isinstance(share, str):
        share = [s for s in share.replace(" ", ",").split(",") if s]
    try:
        kinds = tuple(dict.fromkeys(str(k).strip().lower() for k in share))
    except TypeError:
        raise BadInput(f"share={share!r}: namespace kinds like 'pid,net,ipc,uts'") from None
    for k in kinds:
        if k not in KINDS:
            raise BadInput(f"unknown namespace kind {k!r}: one of {', '.join(KINDS)}")
        if k in NEVER_SHARED:
            why = ("its own mount namespace holds its own tools and a /proc of the joined pid "
                   "namespace; the target's files are at /proc/PID/root" if k == "mnt" else
                   "it has a cgroup of its own, with its own limits: that is the point")
            raise BadInput(f"a debug container never shares {k}: {why}. Use exec (docker exec, "
                           "debug.exec_in) to be fully inside the target")
    return kinds


class DebugContainer:
    """A debug container attached to a target.  Nothing happens in the constructor.

    ``target``: anything :func:`justaprocess.debug.target` accepts (a Container,
    a runc id, a podman name, a PID, a scenario).  ``share``: the kinds to join
    (default: every kind the target does not share with the host, but mnt and
    cgroup).  ``tools``: a folder to use as the root (used as it is, never
    removed) or None for a copy of the lab's tools root.  ``caps``: capability
    names to keep (None: all of ours).
    """

    def __init__(self, target, *, share=None, tools: str | None = None,
                 memory: str | int | None = DEFAULT_MEMORY, pids: int | None = DEFAULT_PIDS,
                 caps: Sequence[str] | None = DEFAULT_CAPS, allow_host: bool = False):
        self.given = target
        self.share_asked = None if share is None else parse_share(share)
        if tools is not None and not os.path.isdir(tools):
            raise BadInput(f"tools={tools!r} is not a folder: give a root filesystem folder "
                           "(one with bin/sh), or leave it out for the lab's tools root")
        self.tools = tools
        cgroups.Limits.parse(memory=memory, pids=pids)   # bad input refused now
        self.memory, self.pids = memory, pids
        self.caps = None if caps is None else tuple(caps)
        self.allow_host = allow_host
        self.id = lab.new_id()
        self.name = lab.name("dbg", self.id)
        self.target = None          # a debug.Target once created
        self.share: tuple[str, ...] = ()
        self.root: str | None = None
        self.cgroup: cgroups.Cgroup | None = None
        self._entries: list = []
        self._handles: list = []

    # -- life cycle ------------------------------------------------------------------------
    @needs("root", "a debug container (a root copy, a cgroup, setns):")
    def create(self) -> "DebugContainer":
        from . import debug
        if self.target is not None:
            raise BadInput(f"debug container {self.name} is already created")
        t = debug.target(self.given, allow_host=self.allow_host)
        try:
            self.target = t
            differs = [k for k in t.differs if k not in NEVER_SHARED]
            self.share = self.share_asked if self.share_asked is not None else tuple(differs)
            if self.tools:
                self.root = os.path.abspath(self.tools)
            else:
                d = os.path.join(lab.run_dir(), self.name)
                self._entries.append(lab.register("dir", d, note=f"debug container {self.name}"))
                self.root = _rootfs.extract(_rootfs.build("tools"), os.path.join(d, "rootfs"))
            self.cgroup = cgroups.Cgroup(self.name, memory=self.memory, pids=self.pids).create()
        except BaseException:
            self.remove()
            raise
        return self

    def spec(self, argv: Sequence[str], **kw) -> _launch.Spec:
        """The launcher's Spec of one process in this debug container."""
        if self.target is None:
            self.create()
        t = self.target
        t.check()
        root = self.root

        def prepare():   # in its own mount namespace, before the jump: a fresh /dev
            from .container_steps import extra_mounts
            extra_mounts(root, mount_dev=True)

        env = {"PATH": _rootfs.PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "dumb"),
               "PS1": f"[debug {t.name}] \\w # ", **kw.pop("env", {})}
        return _launch.Spec(
            argv=list(argv), join={k: _launch.Fd(t.ns_fds[k]) for k in self.share},
            new=NEVER_SHARED, mount_proc=True, root=root, prepare=prepare, cgroup=self.cgroup,
            caps=self.caps, env=env, cwd="/", note=f"debug container {self.name} for {t.name}", **kw)

    def start(self, argv: Sequence[str] = ("/bin/sh",), **stdio) -> _launch.Handle:
        """Start a process in it (``stdin=``, ``stdout=``, ``stderr=`` as the launcher takes them)."""
        h = _launch.start(self.spec(argv, **stdio))
        self._handles.append(h)
        return h

    def run(self, argv: Sequence[str] | str, *, timeout: float = 30.0, input=None) -> _launch.Result:
        """Run a command in it and wait: a Result (returncode, stdout, stderr)."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        return _launch.run(self.spec(argv), input=input, timeout=timeout)

    def remove(self) -> None:
        """Stop its processes; remove its cgroup and root copy. Safe twice."""
        for h in self._handles:
            try:
                h.stop(timeout=2)
            except LabError:
                pass
        self._handles.clear()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        for e in reversed(self._entries):
            lab.remove(e)
        self._entries.clear()
        if self.target is not None:
            self.target.close()

    def __enter__(self) -> "DebugContainer":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @property
    def target_pid_inside(self) -> int:
        """The target's PID as this debug container sees it (when it shares pid)."""
        return self.target.pid_inside if "pid" in self.share else self.target.pid

    def __repr__(self) -> str:
        who = self.target.name if self.target else self.given
        return f"<DebugContainer {self.name} -> {who} share={','.join(self.share) or '-'}>"


def debug_container(target, **kw) -> DebugContainer:
    """Create a :class:`DebugContainer` for ``target`` (see there for the options)."""
    return DebugContainer(target, **kw).create()


# --- what each way in shares with the target ----------------------------------------------

APPROACHES = ("exec", "sidecar", "debug container", "nsenter", "kubectl debug --target")


class Sharing(NamedTuple):
    """One row: for one way in, what its process shares with the target (from /proc)."""
    approach: str
    namespaces: dict          # kind -> True (the target's) / False (another one)
    cgroup: bool              # in the target's cgroup (memory controller, or v2's)
    root: bool                # the target's root as its /
    tools: str                # where its programs come from: target, host, its own

    def cells(self) -> list[str]:
        ns = ["shared" if self.namespaces[k] else "own" for k in TABLE_KINDS]
        return [self.approach, *ns, "target's" if self.cgroup else "own",
                "target's" if self.root else "own", self.tools]


TABLE_KINDS = ("pid", "net", "ipc", "uts", "mnt", "cgroup")
HEADER = ("approach", *TABLE_KINDS, "cgroup (limits)", "root", "tools from")


def _cgroup_path(pid: int) -> str:
    """The process's cgroup in the memory hierarchy (v1/hybrid) or the v2 one, as the host sees it."""
    lines = proc.cgroups(pid)
    for line in lines:
        if "memory" in line.controllers:
            return line.path
    return next((line.path for line in lines if line.hierarchy == 0), "")


def _same_file(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def observe(pid: int, target_pid: int, label: str) -> Sharing:
    """Compare a live process with the target, kind by kind, in /proc (proc(5))."""
    mine, theirs = proc.namespaces(pid), proc.namespaces(target_pid)
    ns = {k: mine.get(k) == theirs.get(k) for k in KINDS}
    root = _same_file(f"/proc/{pid}/root", f"/proc/{target_pid}/root")
    host_root = _same_file(f"/proc/{pid}/root", "/")
    tools = "target" if root else ("host" if host_root else "its own")
    return Sharing(label, ns, _cgroup_path(pid) == _cgroup_path(target_pid), root, tools)


def _leaf(pid: int, comm: str, timeout: float = 10.0) -> int:
    """nsenter(1) forks for a pid namespace: the process of interest is its child, once it
    has exec'd ``comm``.  A fork and an exec of another process have no event to wait on
    (a pidfd only reports exit): a bounded poll of /proc/PID/task/*/children."""
    import time
    from .container import children_of
    deadline = time.monotonic() + timeout
    while True:
        for kid in children_of(pid):
            try:
                if proc.status(kid).get("Name") == comm:
                    return kid
            except (OSError, LabError):
                pass
        if time.monotonic() > deadline:
            raise LabError(f"nsenter (PID {pid}) did not start {comm} within {timeout} s")
        time.sleep(0.005)


def sharing(target, *, tools_root: str | None = None) -> list[Sharing]:
    """The table, row by row: each approach started for real (a ``sleep``), looked at, stopped.

    * exec: every namespace of the target, its cgroup and its root (``docker exec``);
    * sidecar: pid, net, ipc; its own mnt and cgroup namespaces, cgroup and root (chapter 09);
    * debug container: every kind but mnt and cgroup (this module);
    * nsenter: ``nsenter -t PID -a`` - all of its namespaces, but the caller's cgroup;
    * kubectl debug --target: the target's pid namespace and the pod's net, ipc and uts,
      its own mount namespace, root and cgroup - the settings the kubelet uses for an
      ephemeral container, run here as a debug container (there is no cluster in the lab).
    """
    from . import debug
    if shutil.which("nsenter") is None:
        raise MissingTool("nsenter", "util-linux")
    rows: list[Sharing] = []
    with debug.target(target) as t:
        sleep = ["sleep", "600"]
        kinds = [k for k in t.differs]
        specs = {
            "exec": _launch.Spec(argv=sleep, join={k: _launch.Fd(t.ns_fds[k]) for k in kinds},
                                 cgroup=t.pid, target_root=t.pid, env={"PATH": _rootfs.PATH},
                                 stdout="null", stderr="null", note="sharing table: exec"),
            "nsenter": _launch.Spec(argv=["nsenter", "-t", str(t.pid), "-a", *sleep],
                                    stdout="null", stderr="null", note="sharing table: nsenter"),
        }
        made = []
        try:
            for label in APPROACHES:
                if label in specs:
                    h = _launch.start(specs[label])
                    made.append(h)
                    rows.append(observe(_leaf(h.pid, "sleep") if label == "nsenter" else h.pid, t.pid, label))
                    continue
                share = {"sidecar": ("pid", "net", "ipc"),
                         "kubectl debug --target": ("pid", "net", "ipc", "uts")}.get(label)
                if share is not None:
                    share = tuple(k for k in share if k in kinds)
                dc = DebugContainer(t, share=share, tools=tools_root, caps=None)
                made.append(dc)
                dc.create()
                h = dc.start(sleep, stdout="null", stderr="null")
                rows.append(observe(h.pid, t.pid, label))
        finally:
            for m in made:
                if isinstance(m, DebugContainer):
                    m.remove()
                else:
                    m.stop(timeout=2)
    return rows


def format_table(rows: list[Sharing]) -> str:
    """The rows as a fixed-width text table."""
    cells = [list(HEADER)] + [r.cells() for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


# --- command line: an interactive shell in a debug container ------------------------------

def shell(target, *, share=None, tools: str | None = None, argv: Sequence[str] = ("/bin/sh", "-i"),
          out=sys.stderr) -> int:
    """An interactive shell in a debug container on this terminal; removes it all on exit.

    The shell gets this process's stdin, stdout and stderr (the terminal).  Its
    exit code is returned.
    """
    dc = DebugContainer(target, share=share, tools=tools, allow_host=True)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C is for the shell, not for us
    try:
        dc.create()
        t = dc.target
        inside = dc.target_pid_inside
        print(f"debug container {dc.name} for {t.describe() if hasattr(t, 'describe') else t.name}\n"
              f"  sharing {','.join(dc.share) or 'nothing'}; its own mnt and cgroup "
              f"(memory {dc.memory}, pids {dc.pids}); tools from {dc.tools or 'the lab tools root'}\n"
              f"  the target is PID {inside} here: its files are at /proc/{inside}/root\n"
              "  exit (or ^D) removes the debug container", file=out, flush=True)
        h = dc.start(argv, stdin="inherit", stdout="inherit", stderr="inherit")
        def forward(signum, frame):  # noqa: ARG001
            # The shell runs in a session of its own (the launcher's setsid), so the
            # terminal's ^C reaches us: pass it on to the shell and what it runs (job
            # control is off: it has no tty of its own) - not to the launcher's helper,
            # which relays the shell's exit and would die of it.
            from .container import children_of
            todo = [h.pid]
            while todo:
                pid = todo.pop()
                try:
                    todo += children_of(pid)
                    os.kill(pid, signum)
                except (ProcessLookupError, FileNotFoundError):
                    pass
        signal.signal(signal.SIGINT, forward)
        r = h.wait()
        return r.returncode if r.returncode >= 0 else 128 - r.returncode
    finally:
        signal.signal(signal.SIGINT, old)
        dc.remove()


def add_cli(sub) -> None:
    p = sub.add_parser("debug", help="an interactive shell in a debug container attached to TARGET",
                       description="Tools in a root of their own, in TARGET's namespaces (all but "
                                   "mnt and cgroup unless --share), in a cgroup of their own. "
                                   "TARGET: a host PID, a runc id or a podman name.")
    p.add_argument("target", help="host PID, runc container id, or podman container name")
    p.add_argument("--share", help="namespace kinds to join, e.g. pid,net,ipc,uts "
                                   "(default: all the target has of its own, but mnt and cgroup)")
    p.add_argument("--tools", help="a root folder with the tools (default: the lab's tools root)")

    def go(args) -> int:
        if os.geteuid() != 0:
            from .errors import NeedsPrivilege
            raise NeedsPrivilege("root", "a debug container (setns, mount, cgroups)")
        return shell(args.target, share=args.share, tools=args.tools)

    p.set_defaults(func=go)
