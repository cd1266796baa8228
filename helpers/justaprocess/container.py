"""The hand-built container engine: a container is just a process, set up in steps.

The steps follow the talk ("What a container engine does"), one function each:

1. :func:`copy_rootfs`       file system copy                (mkdir, tar -x)
2. :func:`create_namespaces` namespaces                      (unshare)
3. :func:`create_cgroup`     a cgroup with limits            (mkdir, echo > memory.max)
4. :func:`setup_network`     network interfaces              (ip link add veth ...)
5. :func:`setup_mounts`      /proc, /dev, a bind-mounted volume (mount)
6. :func:`setup_security`    no_new_privs, engine default capabilities (prctl)
7. :func:`jump_pivot_root`   'jump' into the container       (pivot_root; or
   :func:`jump_chroot`, the variant chapter 07 breaks)

The caller (a notebook's kernel, which never changes its own namespaces,
COURSE.md) copies the file system and makes the cgroup before the fork, and
the host side of the network after it; everything else happens in the child
that becomes the container: it moves itself into its cgroup, then (with a
network: once the caller has moved its veth end in) hostname, mounts,
security, the jump, execve.

Process layout (pid_namespaces(7): after unshare(CLONE_NEWPID) the *next*
child is PID 1)::

    caller --fork--> A (host PID ns; unshare(...)) --fork--> B = PID 1 in the container
                     A reports B's PID, waits for it and reports its wait status.

That is the way from a notebook's kernel (it runs threads).  A single-threaded
caller (a script, the CLI, the benchmark) clones B straight into its new
namespaces instead, as runc and unshare(1) do: ``caller --clone(flags)--> B``.

Fast on purpose (bench/start_exit.py compares it with runc): no Python is
imported or exec'd per container, the child joins its cgroup without the
kernel's slow path (:func:`join_files`), and only the first fork goes through
CPython's fork machinery (:func:`fork_single_threaded`).

:class:`Container` wraps it: ``create()`` (rootfs copy, cgroup), ``start()``,
``exec()``, ``logs()``, ``stop()``, ``remove()``; ``pid``, ``namespaces``,
``cgroups`` show what the host sees.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import select
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterable, NamedTuple, NoReturn, Sequence

from . import _libc, capabilities, cgroups, lab, proc
from . import rootfs as _rootfs
from .errors import BadInput, LabError, NeedsPrivilege, NoSuchProcess

# --- capabilities ---------------------------------------------------------------
# The engine default set (Docker/moby's 14, capabilities(7) names) and the
# name -> bit table come from the chapter-04 module.
ENGINE_DEFAULT = capabilities.ENGINE_DEFAULT


def cap_mask(names: Iterable[str]) -> int:
    """A 64-bit mask from capability names ('cap_kill', 'CAP_KILL')."""
    return capabilities.to_mask(names)


# --- namespaces ------------------------------------------------------------------
NS_FLAGS = {
    "mnt": _libc.CLONE_NEWNS, "uts": _libc.CLONE_NEWUTS, "ipc": _libc.CLONE_NEWIPC,
    "pid": _libc.CLONE_NEWPID, "net": _libc.CLONE_NEWNET, "cgroup": _libc.CLONE_NEWCGROUP,
}
# What `runc spec` asks for (mnt, uts, ipc, pid, net) plus a cgroup namespace,
# so the container sees its own cgroup as "/" (cgroup_namespaces(7)).
DEFAULT_NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup")
# setns(2) order for exec: the mount namespace last but one (after it, host
# paths are gone), pid last (it only applies to children).
_SETNS_ORDER = ("cgroup", "ipc", "uts", "net", "mnt", "pid")

# The device nodes of a fresh /dev: name -> (major, minor), from the kernel's
# Documentation/admin-guide/devices.txt (the OCI runtime spec's "Default Devices").
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}


class ContainerError(LabError):
    """A step of the container's set-up failed; the message names the step."""


class Volume(NamedTuple):
    """A host folder bind-mounted into the container (mount(2) MS_BIND)."""
    source: str         # host path
    target: str         # path inside the container
    readonly: bool = False


class Completed(NamedTuple):
    """What ``exec()``/``run()`` return."""
    returncode: int     # like subprocess: -N when killed by signal N
    stdout: str
    stderr: str


# --- fork in our own children ------------------------------------------------------------
# glibc's fork(3) called directly, without CPython's after-fork work (~0.6 ms per fork
# measured here: re-initialising thread state and running at-fork hooks, most of it
# copy-on-write faults).  Only ever called in *our* children, which have a single
# thread: there is nothing for that work to reset.  PyDLL keeps the GIL held across
# the call, so the child starts holding it.  The caller's first fork (from a possibly
# multithreaded notebook kernel) stays os.fork().
_libc_gil = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc_gil.fork.restype = ctypes.c_int
_libc_gil.fork.argtypes = []


def fork_single_threaded() -> int:
    """fork(2) for a single-threaded child of the lab: 0 in the child, its PID in the parent."""
    pid = _libc_gil.fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


def fork_from_caller() -> int:
    """The first fork: CPython's os.fork() when the caller runs other Python threads
    (a notebook's kernel: their locks must be reset in the child), else the plain one."""
    return fork_single_threaded() if threading.active_count() == 1 else os.fork()


# clone(2) by number (asm/unistd_64.h); with no stack it returns twice, as fork does.
_SYS_clone = {"x86_64": 56, "aarch64": 220, "ppc64le": 120, "s390x": 120}.get(os.uname().machine)
_libc_gil.syscall.restype = ctypes.c_long
_SIGCHLD = int(signal.SIGCHLD)


def clone_into_namespaces(flags: int) -> int:
    """clone(2) a child straight into new namespaces, as runc and unshare(1) do.

    The caller stays where it is: the flags apply to the child only - which,
    with CLONE_NEWPID, is PID 1 of the new pid namespace.  Used when the caller
    is single-threaded (see :func:`fork_single_threaded`); a notebook's kernel
    takes the two-step way (os.fork, then unshare and fork in that child).
    """
    pid = _libc_gil.syscall(ctypes.c_long(_SYS_clone), ctypes.c_ulong(flags | _SIGCHLD),
                            None, None, None, None)
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


# --- step 1: the file system copy ---------------------------------------------------

def copy_rootfs(image: _rootfs.Rootfs, dest: str) -> str:
    """``mkdir dest; tar -x -f image.tar -C dest``: the container's own copy of the image."""
    return _rootfs.extract(image, dest)


# --- step 2: namespaces (child side) ---------------------------------------------------

def namespace_flags(kinds: Iterable[str]) -> int:
    flags = 0
    for k in kinds:
        if k not in NS_FLAGS:
            raise BadInput(f"unknown namespace {k!r}: one of {', '.join(NS_FLAGS)}")
        flags |= NS_FLAGS[k]
    return flags


def create_namespaces(flags: int) -> None:
    """unshare(2): new namespaces for the caller - the pid namespace for its next child."""
    _libc.unshare(flags)


# --- step 3: a cgroup with limits (caller side) ---------------------------------------

class ContainerCgroup(cgroups.Cgroup):
    """The lab's Cgroup, in the hierarchies of the controllers it limits only.

    On v1 and the hybrid a plain lab :class:`~justaprocess.cgroups.Cgroup` has
    a directory in every hierarchy (cpu, cpuacct, blkio, devices, freezer and
    the unified one too); a container needs those it is limited by - memory
    (always, so there is one to look at), pids, cpu - and every directory
    more is a mkdir, a registry entry and an rmdir per container.  On v2 it is
    one directory either way.
    """

    def _plan(self):
        hs, use = super()._plan()
        if layout_is_v2():
            return hs, use
        need = self.limits.controllers() | {"memory"}
        use = {c: h for c, h in use.items() if c in need}
        return [h for h in hs if h in use.values()], use


def layout_is_v2() -> bool:
    return cgroups.layout() == cgroups.V2


def create_cgroup(name: str, *, memory: int | str | None = None, pids: int | None = None,
                  cpu: float | None = None) -> cgroups.Cgroup:
    """mkdir the container's cgroup (under the lab parent) and write its limits.

    The lab's :class:`~justaprocess.cgroups.Cgroup` does it (see
    :class:`ContainerCgroup`): on v1 and the hybrid one directory per hierarchy
    used (memory/, pids/ ...), on v2 one directory; limits in v1 or v2 file
    names (cgroups(7), cgroup-v2.rst).
    """
    return ContainerCgroup(name, memory=memory, pids=pids, cpu=cpu).create()


def join_files(cg: cgroups.Cgroup) -> list[str]:
    """The files the container's process writes "0" (= me) to, to move itself in.

    Why the child moves itself, and through v1's ``tasks`` file: moving a whole
    process (cgroup.procs) takes a global lock whose first use waits for an RCU
    grace period (5-12 ms measured here); a single-threaded process moving its
    own thread skips that lock (kernel/cgroup/cgroup.c, cgroup_procs_write_start),
    and with one thread, moving the thread moves the process.  On v2 there is
    no such shortcut (cgroup.threads only moves threads within a threaded
    subtree): cgroup.procs.  (On the hybrid a container's cgroup has no
    directory in the unified hierarchy: :class:`ContainerCgroup`; its
    /proc/PID/cgroup line ``0::`` stays the caller's.)
    """
    out = []
    hybrid = cgroups.layout() == cgroups.HYBRID
    for d in cg.paths:
        if os.path.exists(os.path.join(d, "tasks")):
            out.append(os.path.join(d, "tasks"))
        elif not hybrid:
            out.append(os.path.join(d, "cgroup.procs"))
    return out


def join_cgroup(files: Sequence[str]) -> None:
    """Child side: move the calling process into its cgroup (see :func:`join_files`)."""
    for path in files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


# --- step 4: network (caller side) -------------------------------------------------------

def setup_network(lease, pid: int):
    """A veth pair: one end on the lab bridge, the other created inside ``pid``'s netns.

    ``lease`` comes from :func:`justaprocess.network.plan` (addresses picked
    before the fork); returns a :class:`justaprocess.network.Attachment`.
    The inside (lo up, address, route) is configured by the container's
    process itself: :func:`justaprocess.network.configure_inside`.
    """
    from . import network  # pyroute2 is only imported when a container has a network
    return network.attach(lease, pid)


# --- step 5: mounts (child side) ---------------------------------------------------------

def setup_mounts(root: str, *, volumes: Sequence[Volume] = (), mount_proc: bool = True,
                 mount_dev: bool = True, readonly_paths: Sequence[str] = ()) -> None:
    """In the new mount namespace: nothing propagates back, then /proc, /dev, volumes.

    mount_namespaces(7): on a host whose / is 'shared' (systemd), mounts made
    here would propagate to the host - so first make every mount private.
    """
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    # pivot_root(2) needs new_root to be a mount point: bind the rootfs onto itself.
    _libc.mount(root, root, None, _libc.MS_BIND | _libc.MS_REC)
    if mount_proc:
        # A proc of *this* pid namespace (we are PID 1 of it): ps sees the container only.
        _libc.mount("proc", os.path.join(root, "proc"), "proc",
                    _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
    if mount_dev:
        # A fresh /dev with the few nodes a program expects, made with mknod(2) as
        # runc does outside a user namespace (OCI runtime spec, "Default Devices").
        dev = os.path.join(root, "dev")
        _libc.mount("tmpfs", dev, "tmpfs", _libc.MS_NOSUID, "mode=755,size=64k")
        for d, (major, minor) in DEVICES.items():
            target = os.path.join(dev, d)
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(target, 0o666)  # mknod's mode passes through the umask
    for v in volumes:
        target = os.path.join(root, v.target.lstrip("/"))
        os.makedirs(target, exist_ok=True)
        _libc.mount(v.source, target, None, _libc.MS_BIND | _libc.MS_REC)
        if v.readonly:
            _libc.mount(None, target, None,
                        _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY)
    for p in readonly_paths:  # e.g. /proc/sys, as runc's "readonlyPaths"
        target = os.path.join(root, p.lstrip("/"))
        _libc.mount(target, target, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount(None, target, None, _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY)


# --- step 6: security (child side) -------------------------------------------------------

def setup_security(keep_caps: int | None, no_new_privs: bool = True) -> None:
    """Drop every capability not in ``keep_caps`` from the bounding set; no_new_privs.

    capabilities(7): at execve() a root process gets permitted = bounding set,
    so dropping from the bounding set (PR_CAPBSET_DROP) takes effect at the
    exec - after pivot_root, which still needs CAP_SYS_ADMIN now.  The
    inheritable and ambient sets are emptied so nothing comes back.
    ``keep_caps=None`` keeps everything (the naive container).
    """
    if keep_caps is not None:
        for cap in range(_CAP_LAST + 1):
            if not keep_caps >> cap & 1 and _libc.prctl(_libc.PR_CAPBSET_READ, cap) == 1:
                _libc.prctl(_libc.PR_CAPBSET_DROP, cap)
        _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_CLEAR_ALL)
        eff, perm, _ = _libc.capget()
        _libc.capset(eff, perm, 0)
    if no_new_privs:
        # prctl(2) PR_SET_NO_NEW_PRIVS: execve can never grant more (setuid, file caps).
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)


# --- step 7: the jump (child side) --------------------------------------------------------

def jump_pivot_root(root: str) -> None:
    """pivot_root(2) into ``root`` and detach the old root: the host's files are gone.

    pivot_root(".", ".") stacks the old root under the new one; umount2 with
    MNT_DETACH then removes it (pivot_root(2), NOTES).
    """
    os.chdir(root)
    _libc.pivot_root(".", ".")
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir("/")


def jump_chroot(root: str) -> None:
    """chroot(2) into ``root``: the host's root stays mounted and reachable (ch. 07 escapes)."""
    os.chdir(root)
    os.chroot(".")
    os.chdir("/")


JUMPS = {"pivot_root": jump_pivot_root, "chroot": jump_chroot}


# --- the child ------------------------------------------------------------------------------

_CAP_LAST = capabilities.last_cap()  # read once, not in every child


@dataclass
class _Plan:
    """Everything the child needs, prepared in the caller (no work done after fork
    that could be done before: the child should make syscalls, not decisions)."""
    argv: list[str]
    env: dict[str, str]
    root: str
    flags: int
    hostname: str | None
    volumes: tuple[Volume, ...]
    mount_proc: bool
    mount_dev: bool
    readonly_paths: tuple[str, ...]
    keep_caps: int | None
    no_new_privs: bool
    jump: str
    workdir: str
    network: object   # a network.Lease, or None
    cgroup_files: list[str]


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _child_failed(err_w: int, step: str, exc: BaseException) -> NoReturn:
    """A forked child's last words: "step: Error: text" on the error pipe, then _exit(127).

    Never a return or a raise: the child is a copy of the caller (fork(2)) and
    must not run on in the caller's code, nor flush its copied buffers or run
    its atexit handlers (_exit(2)).  127: what sh(1) returns when it cannot run a command.
    """
    try:
        _write_all(err_w, f"{step}: {type(exc).__name__}: {exc}".encode())
    finally:
        os._exit(127)


def _child_b(plan: _Plan, go_r: int, err_w: int, stdio: tuple[int, int, int]) -> None:
    """PID 1 of the container: steps 3 (join), 5, 6, 7 and execve; never returns."""
    step = "cgroup"
    try:
        _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        join_cgroup(plan.cgroup_files)
        if plan.flags & _libc.CLONE_NEWCGROUP:
            step = "cgroup namespace"
            # Now that we are in our cgroup, it becomes our "/" (cgroup_namespaces(7)).
            _libc.unshare(_libc.CLONE_NEWCGROUP)
        if plan.network:
            step = "network"
            # The caller moves our end of the veth pair in, then says go.
            _wait_go(go_r)
            from . import network  # already imported by the caller before the fork
            network.configure_inside(plan.network)
        if plan.hostname and plan.flags & _libc.CLONE_NEWUTS:
            step = "hostname"
            _libc.sethostname(plan.hostname)
        step = "mounts"
        setup_mounts(plan.root, volumes=plan.volumes, mount_proc=plan.mount_proc,
                     mount_dev=plan.mount_dev, readonly_paths=plan.readonly_paths)
        step = "security"
        setup_security(plan.keep_caps, plan.no_new_privs)
        step = plan.jump
        JUMPS[plan.jump](plan.root)
        step = "workdir"
        os.chdir(plan.workdir)
        step = "exec"
        path = _resolve(plan.argv[0], plan.env)
        for i, fd in enumerate(stdio):
            os.dup2(fd, i)
        os.execve(path, plan.argv, plan.env)
    except BaseException as exc:  # noqa: BLE001 - report any failure to the caller, never return
        _child_failed(err_w, step, exc)


def _wait_go(go_r: int) -> None:
    if os.read(go_r, 1) != b"g":
        os._exit(126)  # the caller gave up (its set-up failed): leave quietly
    os.close(go_r)


def _resolve(cmd: str, env: dict[str, str]) -> str:
    """execvp's PATH search, done inside the container's root."""
    if "/" in cmd:
        return cmd
    for d in env.get("PATH", _rootfs.PATH).split(":"):
        p = os.path.join(d, cmd)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(2, f"{cmd}: not found in the container's PATH", cmd)


def _child_a(plan: _Plan, pid_w: int, go_r: int, err_w: int, stdio) -> None:
    """In the host's PID namespace: unshare, fork PID 1, report its PID, wait for it."""
    try:
        _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        # The cgroup namespace is made by B once it is in its cgroup.
        create_namespaces(plan.flags & ~_libc.CLONE_NEWCGROUP)
        b = fork_single_threaded()
        if b == 0:
            os.close(pid_w)
            _child_b(plan, go_r, err_w, stdio)
        os.close(go_r)
        os.close(err_w)
        for fd in stdio:
            os.close(fd)
        _write_all(pid_w, f"{b}\n".encode())
        _, status = os.waitpid(b, 0)
        # B's raw wait status, so the caller tells "exit 137" from "killed by signal 9".
        _write_all(pid_w, f"{status}\n".encode())
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _child_failed(err_w, "namespaces", exc)


# --- the Container object ------------------------------------------------------------------

class Container:
    """A container built by hand. Nothing happens in the constructor.

    >>> c = Container(["/bin/busybox", "httpd", "-f", "-p", "80"], network=True)  # doctest: +SKIP
    >>> c.create(); c.start()      # rootfs copy + cgroup; then the process
    >>> c.pid, c.namespaces, c.cgroups, c.address
    >>> c.exec(["ps"]).stdout; c.logs(); c.stop(); c.remove()

    ``rootfs``: a :class:`~justaprocess.rootfs.Rootfs` (copied with tar -x) or
    the path of a folder prepared beforehand (used as it is, never removed).
    ``caps``: names to keep (default: the engine default set); None keeps all.
    ``jump``: 'pivot_root' or 'chroot'.
    """

    def __init__(self, argv: Sequence[str] = ("/bin/sh",), *, rootfs=None, name: str | None = None,
                 hostname: str | None = None, memory: int | str | None = "256M",
                 pids: int | None = 512, cpu: float | None = None, network: bool = False,
                 volumes: Iterable[Volume | tuple] = (), caps: Iterable[str] | None = ENGINE_DEFAULT,
                 no_new_privs: bool = True, jump: str = "pivot_root",
                 namespaces: Iterable[str] = DEFAULT_NAMESPACES, env: dict[str, str] | None = None,
                 workdir: str = "/", mount_proc: bool = True, mount_dev: bool = True,
                 readonly_paths: Iterable[str] = ()):
        if not argv:
            raise BadInput("a container needs a command, e.g. ['/bin/sh', '-c', 'echo hi']")
        if jump not in JUMPS:
            raise BadInput(f"jump must be one of {', '.join(JUMPS)}, not {jump!r}")
        self.id = lab.new_id()
        self.name = name or lab.name(ident=self.id)
        if not lab.is_lab_name(self.name):
            raise BadInput(f"container names start with {lab.PREFIX}-: {self.name!r}")
        self.argv = list(argv)
        self.image = rootfs
        self.hostname = hostname or self.name
        self.memory, self.pids_max, self.cpu = memory, pids, cpu
        cgroups.Limits.parse(memory=memory, pids=pids, cpu=cpu)  # bad input: refused now
        self.network = network
        self.volumes = tuple(Volume(*v) for v in volumes)
        self.caps = tuple(caps) if caps is not None else None
        self.keep_caps = cap_mask(self.caps) if self.caps is not None else None
        self.no_new_privs = no_new_privs
        self.jump = jump
        self.ns_kinds = tuple(namespaces)
        self.flags = namespace_flags(self.ns_kinds)
        if not self.flags & _libc.CLONE_NEWNS:
            # The mounts of step 5 would otherwise be made in the host's mount namespace.
            raise BadInput("a container needs its own mount namespace: keep 'mnt' in namespaces")
        if network and not self.flags & _libc.CLONE_NEWNET:
            raise BadInput("network=True needs the 'net' namespace")
        self.env = {"PATH": _rootfs.PATH, "HOME": "/root", "HOSTNAME": self.hostname,
                    **(env or {})}
        self.workdir = workdir
        self.mount_proc, self.mount_dev = mount_proc, mount_dev
        self.readonly_paths = tuple(readonly_paths)
        self.dir = os.path.join(lab.run_dir(), self.name)
        self.root: str | None = None
        self.cgroup: cgroups.Cgroup | None = None
        self.net = None
        self.pid: int | None = None          # host PID of the container's PID 1
        self.returncode: int | None = None
        self.state = "new"
        self._a: int | None = None
        self._pidfd: int | None = None
        self._status_r: int | None = None
        self._join: list[str] = []
        self._entries: list = []

    # -- life cycle ---------------------------------------------------------------------
    def create(self) -> "Container":
        """Steps that need no process: the rootfs copy (1) and the cgroup (3).

        On failure, whatever was made is removed again.
        """
        if self.state != "new":
            raise BadInput(f"container {self.name} is already {self.state}")
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "building a container")
        for v in self.volumes:
            if not os.path.isdir(v.source):
                raise BadInput(f"volume source {v.source!r} is not a folder on the host")
        try:
            self._entries.append(lab.register("dir", self.dir, note=f"container {self.name}"))
            os.makedirs(self.dir)
            if isinstance(self.image, str):
                if not os.path.isdir(self.image):
                    raise BadInput(f"rootfs folder {self.image!r} does not exist")
                self.root = os.path.abspath(self.image)
            else:
                image = self.image or _rootfs.build("busybox")
                self.root = copy_rootfs(image, os.path.join(self.dir, "rootfs"))
            self.cgroup = create_cgroup(self.name, memory=self.memory, pids=self.pids_max,
                                        cpu=self.cpu)
            self._join = join_files(self.cgroup)   # worked out once, not per start
        except BaseException:
            self.remove()
            self.state = "new"
            raise
        self.state = "created"
        return self

    def start(self) -> "Container":
        """Fork the container's process; returns once it has exec'd the command."""
        if self.state == "new":
            self.create()
        if self.state != "created":
            raise BadInput(f"container {self.name} is {self.state}: create a new one to run again")
        lease = None
        if self.network:
            from . import network  # imported here, before the fork
            lease = network.plan(self.name)
        plan = _Plan(self.argv, self.env, self.root, self.flags, self.hostname, self.volumes,
                     self.mount_proc, self.mount_dev, self.readonly_paths, self.keep_caps,
                     self.no_new_privs, self.jump, self.workdir, lease, self._join)
        self._lease = lease
        out = os.open(os.path.join(self.dir, "stdout.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(os.path.join(self.dir, "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        pid_r, pid_w = os.pipe()
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)  # closed by B's execve: EOF means "exec'd"
        direct = _SYS_clone is not None and threading.active_count() == 1
        if direct:
            # One step: B is our own child, cloned into its namespaces (no A).
            try:
                a = clone_into_namespaces(self.flags & ~_libc.CLONE_NEWCGROUP)
            except OSError:
                for fd in (pid_r, pid_w, go_r, go_w, err_r, err_w, out, err, null):
                    os.close(fd)
                raise
            if a == 0:  # ---- child B (never returns)
                os.close(pid_r), os.close(pid_w), os.close(go_w), os.close(err_r)
                _child_b(plan, go_r, err_w, (null, out, err))
            os.close(pid_w)
            os.close(pid_r)
            pid_r = pid_w = -1
        else:
            a = fork_from_caller()
            if a == 0:  # ---- child A (never returns)
                os.close(pid_r), os.close(go_w), os.close(err_r)
                _child_a(plan, pid_w, go_r, err_w, (null, out, err))
            os.close(pid_w)
        self._a = a
        try:
            self._pidfd = os.pidfd_open(a)
        except (AttributeError, OSError):  # Linux < 5.3
            self._pidfd = None
        for fd in (go_r, err_w, out, err, null):
            os.close(fd)
        try:
            if direct:
                self._status_r = None
                self.pid = a
            else:
                self._status_r = pid_r
                raw = self._read_line()
                if not raw:
                    raise ContainerError(self._fail(err_r, "namespaces"))
                self.pid = int(raw)
            if lease is not None:
                self.net = setup_network(lease, self.pid)  # step 4
                try:
                    os.write(go_w, b"g")   # B waits for its veth end before configuring it
                except BrokenPipeError:
                    pass  # B failed before reading it: its message is on the err pipe
            os.close(go_w)
            go_w = -1
            msg = self._read_err(err_r)
            if msg:
                raise ContainerError(f"container {self.name}: {msg}")
            # Registered once the command runs, not before: B dies with A and A with us
            # (PR_SET_PDEATHSIG), so the entry serves the lab's view and cleanup; and our
            # file writes meanwhile were measured to slow B's unmount of the old root.
            try:
                self._entries.append(lab.register("process", f"pid-{self.pid}", pid=self.pid,
                                                  note=f"container {self.name}"))
            except NoSuchProcess:
                pass  # /bin/true may be done already: nothing of it is left to remove
        except BaseException:
            if go_w >= 0:
                os.close(go_w)
            self._reap(kill=True)
            if lease is not None and self.net is None:
                from . import network
                network.release(lease)
            self.state = "failed"
            raise
        self.state = "running"
        return self

    def _read_line(self) -> str:
        """One line from A's status pipe ('' at EOF), read byte by byte: no read-ahead."""
        out = b""
        while True:
            c = os.read(self._status_r, 1)
            if not c or c == b"\n":
                return out.decode()
            out += c

    def _read_err(self, fd: int) -> str:
        chunks = []
        while True:
            b = os.read(fd, 4096)
            if not b:
                break
            chunks.append(b)
        os.close(fd)
        return b"".join(chunks).decode(errors="replace")

    def _fail(self, err_r: int, step: str) -> str:
        return f"container {self.name}: " + (self._read_err(err_r) or f"{step} failed")

    def _reap(self, kill: bool = False, timeout: float | None = None) -> int | None:
        if self._a is None:
            return self.returncode
        if kill:
            # Killing PID 1 kills every process of its pid namespace (pid_namespaces(7));
            # before B is known, kill A (B then dies of PR_SET_PDEATHSIG).
            try:
                os.kill(self.pid or self._a, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got, status = os.waitpid(self._a, 0 if deadline is None else os.WNOHANG)
            if got:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # A pidfd turns readable when the process exits (pidfd_open(2)): no polling delay.
            select.select([self._pidfd], [], [], left) if self._pidfd is not None \
                else time.sleep(min(left, 0.002))
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        raw = ""
        if self._status_r is not None:  # the two-step way: A reports B's status
            raw = self._read_line()
            os.close(self._status_r)
            self._status_r = None
        # B's own status (ours, or as A reported it); else A's (killed, or failed).
        self.returncode = os.waitstatus_to_exitcode(int(raw) if raw else status)
        self._a = None
        if self.state == "running":
            self.state = "exited"
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for PID 1 to exit; its exit code (-N for signal N), or None on timeout."""
        if self.state not in ("running", "exited"):
            raise BadInput(f"container {self.name} is {self.state}, not started")
        return self._reap(timeout=timeout)

    def running(self) -> bool:
        return self._a is not None and self._reap(timeout=0) is None

    def stop(self, timeout: float = 1.0) -> int | None:
        """SIGTERM to PID 1, SIGKILL after ``timeout`` (PID 1 ignores signals it has no
        handler for: pid_namespaces(7)); then its exit code."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            if self._reap(timeout=timeout) is None:
                self._reap(kill=True)
        return self.returncode

    def remove(self) -> None:
        """Stop it if needed, remove network, cgroup and the rootfs copy. Safe twice."""
        if self._a is not None:
            self._reap(kill=True)
        if self.net is not None:
            self.net.remove()
        if self.cgroup is not None:
            self.cgroup.remove()
        for e in reversed(self._entries):
            lab.remove(e)
        self._entries.clear()
        self.state = "removed"

    def run(self, timeout: float | None = 30) -> Completed:
        """create + start + wait; the output from the logs."""
        self.start()
        code = self.wait(timeout)
        if code is None:
            self.stop(0)
        return Completed(self.returncode, self.logs("stdout"), self.logs("stderr"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    # -- looking at it ------------------------------------------------------------------
    def logs(self, stream: str = "stdout") -> str:
        """What PID 1 wrote to its stdout (or 'stderr'), as `docker logs` shows it."""
        if stream not in ("stdout", "stderr"):
            raise BadInput("stream is 'stdout' or 'stderr'")
        try:
            with open(os.path.join(self.dir, f"{stream}.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    @property
    def namespaces(self) -> dict[str, int]:
        """{kind: inode} of PID 1's namespaces (/proc/PID/ns)."""
        return proc.namespaces(self._need_pid())

    @property
    def cgroups(self) -> list[str]:
        """The container's cgroup directories (one per hierarchy on v1/hybrid)."""
        return list(self.cgroup.paths) if self.cgroup else []

    @property
    def address(self) -> str | None:
        return self.net.address if self.net else None

    def facts(self) -> proc.ProcessFacts:
        return proc.facts(self._need_pid())

    def _need_pid(self) -> int:
        if not self.pid or not self.running():
            raise BadInput(f"container {self.name} is {self.state}: no process to look at")
        return self.pid

    def __repr__(self) -> str:
        return f"<Container {self.name} {self.state} pid={self.pid} {' '.join(self.argv)!r}>"

    # -- exec -----------------------------------------------------------------------------
    def exec(self, argv: Sequence[str], *, timeout: float = 30, env: dict[str, str] | None = None,
             workdir: str = "/") -> Completed:
        """Run a command in the container's namespaces and cgroup, with its capabilities.

        setns(2) into each namespace of PID 1 (fds opened while the host /proc
        is still ours), join its cgroup, then fork: the pid namespace applies to
        children only.
        """
        pid = self._need_pid()
        fds = {}
        try:
            own = proc.namespaces("self")
            theirs = proc.namespaces(pid)
            for kind in _SETNS_ORDER:
                if kind in theirs and theirs[kind] != own.get(kind):
                    fds[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            # The container's root as PID 1 sees it: setns(mnt) alone would put us at the
            # namespace's root, which for the chroot variant is still the host's "/".
            fds["root"] = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            outs = [os.memfd_create(f"jap-exec-{s}") for s in ("out", "err")]
            null = os.open(os.devnull, os.O_RDONLY)
            procs_files = self._join
            envp = {**self.env, **(env or {})}
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            st_r, st_w = os.pipe2(os.O_CLOEXEC)
            x = os.fork()
            if x == 0:
                _exec_child(fds, procs_files, self.keep_caps, self.no_new_privs, list(argv), envp,
                            workdir, (null, *outs), err_w, st_w)
            os.close(err_w)
            os.close(st_w)
            os.close(null)
            deadline = time.monotonic() + timeout
            while True:
                got, status = os.waitpid(x, os.WNOHANG)
                if got:
                    break
                if time.monotonic() > deadline:
                    os.kill(x, signal.SIGKILL)
                    got, status = os.waitpid(x, 0)
                    break
                time.sleep(0.001)
            msg = self._read_err(err_r)
            raw = self._read_err(st_r)
            if msg:
                raise ContainerError(f"exec in {self.name}: {msg}")
            code = os.waitstatus_to_exitcode(int(raw) if raw else status)
            texts = []
            for fd in outs:
                os.lseek(fd, 0, os.SEEK_SET)
                with os.fdopen(fd, "rb") as f:
                    texts.append(f.read().decode(errors="replace"))
            return Completed(code, *texts)
        finally:
            for fd in fds.values():
                os.close(fd)


def _exec_child(fds: dict[str, int], procs_files: list[str], keep_caps, no_new_privs: bool,
                argv: list[str], env: dict[str, str], workdir: str, stdio, err_w: int,
                st_w: int) -> None:
    step = "cgroup"
    try:
        _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        join_cgroup(procs_files)  # first, while the host's paths still resolve
        for kind in _SETNS_ORDER:
            if kind in fds:
                step = f"setns {kind}"
                _libc.setns(fds[kind], NS_FLAGS[kind])
        step = "root"
        os.fchdir(fds["root"])
        os.chroot(".")
        step = "fork"
        y = fork_single_threaded()
        if y == 0:
            step = "security"
            setup_security(keep_caps, no_new_privs)
            os.chdir(workdir)
            for i, fd in enumerate(stdio):
                os.dup2(fd, i)
            step = "exec"
            os.execve(_resolve(argv[0], env), argv, env)
        _, status = os.waitpid(y, 0)
        _write_all(st_w, str(status).encode())
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _child_failed(err_w, step, exc)


# --- one step at a time (the notebook's step-by-step section) ----------------------------

def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    _write_all(fd, len(data).to_bytes(4, "big") + data)


def _recv(fd: int):
    head = b""
    while len(head) < 4:
        chunk = os.read(fd, 4 - len(head))
        if not chunk:
            return None
        head += chunk
    n, data = int.from_bytes(head, "big"), b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return pickle.loads(data)


def _inside_facts() -> dict:
    """What the process itself sees (run in the stepper)."""
    return {"pid": os.getpid(), "hostname": os.uname().nodename, "root": sorted(os.listdir("/")),
            "cwd": os.getcwd()}


def _stepper_steps() -> dict:
    def configure_inside(lease):
        from . import network
        network.configure_inside(lease)
    return {"join_cgroup": join_cgroup, "sethostname": _libc.sethostname,
            "configure_inside": configure_inside, "setup_mounts": setup_mounts,
            "setup_security": setup_security, "jump_pivot_root": jump_pivot_root,
            "jump_chroot": jump_chroot, "facts": _inside_facts}


def _serve(sock: socket.socket) -> None:
    """The stepper's loop: run one engine step per message, answer, repeat; never returns."""
    steps = _stepper_steps()
    cmd_r = res_w = sock.fileno()
    try:
        _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        while True:
            msg = _recv(cmd_r)
            if msg is None:
                os._exit(0)
            name, args, kwargs = msg
            try:
                if name == "create_namespaces":
                    flags = args[0]
                    create_namespaces(flags)
                    if flags & _libc.CLONE_NEWPID:
                        # The new pid namespace holds our *next* child: it becomes PID 1
                        # and takes over the conversation; we wait for it (pid_namespaces(7)).
                        child = fork_single_threaded()
                        if child == 0:
                            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
                            _send(res_w, ("moved", None))
                            continue
                        _, status = os.waitpid(child, 0)
                        _send(res_w, ("exited", status))  # PID 1's end, for the caller
                        os._exit(0)
                    _send(res_w, ("ok", None))
                elif name == "exec":
                    argv, env = args
                    # stdin, stdout, stderr come along as file descriptors (unix(7) SCM_RIGHTS):
                    # after pivot_root no path of the host would reach them.
                    _, stdio, _, _ = socket.recv_fds(sock, 1, 3)
                    for i, fd in enumerate(stdio):
                        os.dup2(fd, i)
                    os.execve(_resolve(argv[0], env), argv, env)
                else:
                    _send(res_w, ("ok", steps[name](*args, **kwargs)))
            except Exception as exc:  # noqa: BLE001 - the notebook shows the error
                _send(res_w, ("error", f"{name}: {type(exc).__name__}: {exc}"))
                if name == "exec":
                    os._exit(127)
    except BaseException:  # noqa: BLE001
        os._exit(1)


class Stepper:
    """A child process that takes the engine's steps one at a time, on command.

    The notebook's kernel never changes its own namespaces: it tells this child
    what to do next (``step("setup_mounts", root)``) and looks at the child from
    outside (/proc/PID/...) after each step.  ``pid`` is the host PID of the
    process taking the steps (after ``create_namespaces`` with a pid namespace,
    its child, PID 1 inside).  ``exec()`` ends the conversation: the process
    becomes the program.
    """

    def __init__(self):
        self.pid: int | None = None
        self._first: int | None = None
        self._entries: list = []

    def start(self) -> "Stepper":
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "the step-by-step container")
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._cmd_w = self._res_r = self._sock.fileno()
        pid = os.fork()
        if pid == 0:
            self._sock.close()
            _serve(theirs)
        theirs.close()
        self._first = self.pid = pid
        self._entries.append(lab.register("process", f"pid-{pid}", pid=pid, note="stepper"))
        return self

    def _ask(self, name: str, *args, **kwargs):
        if self.pid is None:
            raise BadInput("the stepper is not running: start() it first")
        _send(self._cmd_w, (name, args, kwargs))
        reply = _recv(self._res_r)
        if reply is None:
            raise ContainerError(f"the stepper died during {name}")
        kind, value = reply
        if kind == "error":
            raise ContainerError(value)
        return kind, value

    def step(self, name: str, *args, **kwargs):
        """Run one engine step in the child: join_cgroup, sethostname, configure_inside,
        setup_mounts, setup_security, jump_pivot_root, jump_chroot, or facts."""
        return self._ask(name, *args, **kwargs)[1]

    def create_namespaces(self, flags: int) -> int:
        """unshare(flags) in the child; with CLONE_NEWPID its new child (PID 1) takes over.
        Returns the host PID of the process that now takes the steps."""
        kind, _ = self._ask("create_namespaces", flags)
        if kind == "moved":
            kids = children_of(self.pid)
            self.pid = kids[0]
            self._entries.append(lab.register("process", f"pid-{self.pid}", pid=self.pid,
                                              note="stepper, PID 1"))
        return self.pid

    def facts(self) -> dict:
        """What the child sees itself: its PID, hostname, the names in its /."""
        return self.step("facts")

    def exec(self, argv: Sequence[str], env: dict[str, str] | None = None,
             timeout: float = 10) -> Completed:
        """The last step: execve(argv); waits for it and returns its output."""
        outs = [os.memfd_create(f"jap-step-{s}") for s in ("out", "err")]
        null = os.open(os.devnull, os.O_RDONLY)
        env = {"PATH": _rootfs.PATH, **(env or {})}
        _send(self._cmd_w, ("exec", (list(argv), env), {}))
        socket.send_fds(self._sock, [b"f"], [null, *outs])
        os.close(null)
        deadline = time.monotonic() + timeout
        while True:  # the first process (ours) exits once its PID 1 child has
            got, status = os.waitpid(self._first, os.WNOHANG)
            if got:
                break
            if time.monotonic() > deadline:
                self.stop()
                break
            time.sleep(0.005)
        texts = []
        for fd in outs:
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(fd, "rb") as f:
                texts.append(f.read().decode(errors="replace"))
        msg = _recv(self._res_r) if self._sock else None  # an exec failure, or PID 1's end
        self._close()
        if msg and msg[0] == "error":
            raise ContainerError(msg[1])
        if msg and msg[0] == "exited":
            status = msg[1]
        return Completed(os.waitstatus_to_exitcode(status), *texts)

    def _close(self) -> None:
        if getattr(self, "_sock", None) is not None:
            self._sock.close()
            self._sock = None
        for e in self._entries:
            lab.unregister(e)
        self._entries.clear()
        self.pid = None

    def stop(self) -> None:
        """Kill the child(ren); safe twice."""
        for e in reversed(self._entries):
            lab.remove(e)
        if self._first:
            try:
                os.waitpid(self._first, 0)
            except ChildProcessError:
                pass
            self._first = None
        self._close()


def children_of(pid: int) -> list[int]:
    """The PIDs of a process's children (from /proc/PID/task/*/children, proc(5))."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def run(argv: Sequence[str], **kw) -> Completed:
    """Run one command in a fresh container and remove it: (returncode, stdout, stderr)."""
    with Container(argv, **kw) as c:
        return c.run()


# --- command line ----------------------------------------------------------------------------

def add_cli(sub) -> None:
    p = sub.add_parser("container", help="run a command in a hand-built container")
    p.add_argument("--network", action="store_true", help="veth on the lab bridge")
    p.add_argument("--memory", default="256M")
    p.add_argument("--chroot", action="store_true", help="chroot instead of pivot_root")
    p.add_argument("cmd", nargs="+")

    def go(args) -> int:
        r = run(args.cmd, network=args.network, memory=args.memory,
                jump="chroot" if args.chroot else "pivot_root")
        print(r.stdout, end="")
        print(r.stderr, end="", file=sys.stderr)
        return r.returncode if r.returncode >= 0 else 128 - r.returncode

    p.set_defaults(func=go)
