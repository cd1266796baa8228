"""Getting into a target: ``exec_in`` (what docker exec / runc exec do), the ``Sidecar``
(a tools container sharing some of its namespaces) and ``%%inside``.  See :mod:`justaprocess.debug`.
"""
from __future__ import annotations

import os
import sys

from . import lab, proc
from .errors import BadInput, LabError

from .debug_target import Target, target

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
        obj = t.obj
        if obj is None or getattr(obj, "options", {}).get("seccomp", True):
            # The profile the lab's runc config names (runtimes.config: Docker's allowlist),
            # built again (a BPF filter cannot be copied from a process).
            from . import seccomp as _seccomp
            seccomp = _seccomp.allowlist()
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
