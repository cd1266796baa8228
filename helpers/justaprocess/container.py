"""The hand-built container engine: a container is just a process, set up in steps.

The steps follow the talk ("What a container engine does"), one function each
in :mod:`justaprocess.container_steps` (re-exported here):

1. :func:`copy_rootfs`       file system copy                (mkdir, tar -x)
2. :func:`create_namespaces` namespaces                      (unshare)
3. :func:`create_cgroup`     a cgroup with limits            (mkdir, echo > memory.max)
4. :func:`setup_network`     network interfaces              (ip link add veth ...)
5. :func:`setup_mounts`      /proc, /dev, a bind-mounted volume (mount)
6. :func:`setup_security`    no_new_privs, engine default capabilities (prctl)
7. :func:`jump_pivot_root`   'jump' into the container       (pivot_root; or
   :func:`jump_chroot`, the variant chapter 07 breaks)

:class:`Container` wraps them: ``create()`` (rootfs copy, cgroup: steps 1 and 3,
in the caller), ``start()`` (the lab's launcher, :mod:`justaprocess._launch`,
makes PID 1: it joins the cgroup, is born in its namespaces, gets a hostname,
private mounts, /proc, /dev and the volumes, jumps into the root, drops
capabilities and execs), ``exec()`` (the launcher again: every namespace of PID 1,
its cgroup and its root, as ``runc exec`` does), ``logs()``, ``stop()``,
``remove()``; ``pid``, ``namespaces``, ``cgroups`` show what the host sees.
With a network the launcher stops PID 1 at a gate, in its namespaces, until the
caller has moved the container's veth end in (step 4).

From a notebook's kernel (it runs threads) the launcher forks a helper that
clones PID 1; a single-threaded caller (a script, the CLI, the benchmark) clones
PID 1 straight into its namespaces, as runc does.

:class:`~justaprocess.container_stepper.Stepper` takes the steps one at a time
(chapter 05).
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from typing import Iterable, Sequence

from . import _launch, _libc, cgroups, lab, proc
from . import rootfs as _rootfs
from .container_stepper import ContainerError, Stepper, children_of  # noqa: F401 - the API
from .container_steps import (  # noqa: F401 - the steps are this module's API too
    DEFAULT_NAMESPACES, DEVICES, ENGINE_DEFAULT, ENGINE_DEVICES, HARDENED, JUMPS, MASKED_PATHS,
    NS_FLAGS, READONLY_PATHS, USERNS_BASE, USERNS_SIZE, ContainerCgroup, Volume,
    cap_mask, check_volume, copy_rootfs, create_cgroup, create_namespaces, extra_mounts,
    join_cgroup, join_files, jump_chroot, jump_pivot_root, layout_is_v2, namespace_flags,
    resolve, setup_mounts, setup_network, setup_security, shift_owner)
from .errors import BadInput, NeedsPrivilege

# One result type for every run in the lab: the launcher's.
Result = _launch.Result


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
    ``userns``: True adds a user namespace (user_namespaces(7)): ids 0-65535 inside are
    USERNS_BASE.. outside, setgroups is denied, the rootfs copy is given to those ids
    and /dev's nodes are bind-mounted from the host (mknod(2) is EPERM there); the
    capabilities kept count only over what that namespace owns.
    ``seccomp``: True loads Docker's allowlist (``justaprocess.seccomp``, built with
    libseccomp: every call not on it fails with EPERM) as the last step before exec,
    for PID 1 and every ``exec()``; False (the default of chapter 05's engine) loads none.
    ``devices``: the device allow-list of its cgroup (default :data:`ENGINE_DEVICES`,
    Docker's; v1 devices files, v2 an eBPF program); None: no device control.
    ``masked_paths``: hidden from it (none by default; :data:`MASKED_PATHS` is runc's list).
    ``close_fds``: no fd of the caller's but stdio reaches its programs (default True).
    ``Container(argv, **HARDENED)``: every step more that runc and Docker take (seccomp,
    masked and read-only paths ...): chapter 07's escapes fail in it.
    ``apparmor``: a loaded AppArmor profile (``justaprocess.apparmor``) that PID 1 and every
    ``exec()`` enter at their execve, as runc does for OCI ``apparmorProfile``.
    """

    def __init__(self, argv: Sequence[str] = ("/bin/sh",), *, rootfs=None, name: str | None = None,
                 hostname: str | None = None, memory: int | str | None = "256M",
                 pids: int | None = 512, cpu: float | None = None, network: bool = False,
                 volumes: Iterable[Volume | tuple] = (), caps: Iterable[str] | None = ENGINE_DEFAULT,
                 no_new_privs: bool = True, jump: str = "pivot_root",
                 namespaces: Iterable[str] = DEFAULT_NAMESPACES, env: dict[str, str] | None = None,
                 workdir: str = "/", mount_proc: bool = True, mount_dev: bool = True,
                 readonly_paths: Iterable[str] = (), seccomp: bool = False,
                 devices: Iterable[str] | None = ENGINE_DEVICES,
                 masked_paths: Iterable[str] = (), close_fds: bool = True,
                 apparmor: str | None = None, userns: bool = False):
        if not argv:
            raise BadInput("a container needs a command, e.g. ['/bin/sh', '-c', 'echo hi']")
        if jump not in JUMPS:
            raise BadInput(f"jump must be one of {', '.join(JUMPS)}, not {jump!r}")
        self.id = lab.new_id()
        self.name = name or lab.name(ident=self.id)
        if not lab.is_lab_name(self.name):
            raise BadInput(f"container name {self.name!r}: lab names are jap-<id>[-suffix]; "
                           "make one with lab.name()")
        self.argv = list(argv)
        self.image = rootfs
        self.hostname = hostname or self.name
        self.memory, self.pids_max, self.cpu = memory, pids, cpu
        cgroups.Limits.parse(memory=memory, pids=pids, cpu=cpu)  # bad input: refused now
        self.network = network
        self.volumes = tuple(check_volume(Volume(*v)) for v in volumes)
        self.caps = tuple(caps) if caps is not None else None
        self.keep_caps = cap_mask(self.caps) if self.caps is not None else None
        self.no_new_privs = no_new_privs
        if not isinstance(seccomp, bool):
            raise BadInput(f"seccomp: True (Docker's allowlist, every other call EPERM) or False, "
                           f"not {seccomp!r}")
        self.seccomp = seccomp
        self.devices = tuple(devices) if devices is not None else None
        cgroups.Limits.parse(devices=self.devices)  # a bad rule: refused now
        self.masked_paths = tuple(masked_paths)
        self.close_fds = bool(close_fds)
        if apparmor is not None and (not isinstance(apparmor, str) or not apparmor):
            raise BadInput(f"apparmor: the name of a loaded profile, not {apparmor!r}")
        self.apparmor = apparmor
        self.jump = jump
        if not isinstance(userns, bool):
            raise BadInput(f"userns: True (a user namespace, root inside is uid {USERNS_BASE} "
                           f"outside) or False, not {userns!r}")
        self.userns = userns
        self.ns_kinds = tuple(namespaces) + (("user",) if userns and "user" not in namespaces else ())
        if "user" in self.ns_kinds and not userns:
            raise BadInput("a user namespace needs its uid map: pass userns=True")
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
        self._h: _launch.Handle | None = None
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
                if self.userns:
                    shift_owner(self.root)  # a folder given by the caller stays as it is
            self.cgroup = create_cgroup(self.name, memory=self.memory, pids=self.pids_max,
                                        cpu=self.cpu, devices=self.devices)
        except BaseException:
            self.remove()
            self.state = "new"
            raise
        self.state = "created"
        return self

    def start(self) -> "Container":
        """Start PID 1 through the lab's launcher; returns once it has exec'd the command."""
        if self.state == "new":
            self.create()
        if self.state != "created":
            raise BadInput(f"container {self.name} is {self.state}: create a new one to run again")
        lease = None
        if self.network:
            from . import network  # imported here, before the fork
            lease = network.plan(self.name)
        self._lease = lease
        out = os.open(os.path.join(self.dir, "stdout.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(os.path.join(self.dir, "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        root, volumes, mount_dev, userns = self.root, self.volumes, self.mount_dev, self.userns

        def prepare():  # in PID 1, in its namespaces, before the jump (steps 4 inside and 5)
            if lease is not None:
                _launch.step("network")
                from . import network
                network.configure_inside(lease)
            extra_mounts(root, volumes=volumes, mount_dev=mount_dev, bind_devices=userns)

        spec = _launch.Spec(
            argv=self.argv, env=self.env, new=self.ns_kinds, cgroup=self.cgroup,
            hostname=self.hostname if "uts" in self.ns_kinds else None, root=root,
            pivot_root=self.jump == "pivot_root", mount_proc=self.mount_proc, prepare=prepare,
            readonly=self.readonly_paths, masked=self.masked_paths,
            close_fds=self.close_fds, caps=self.caps, no_new_privs=self.no_new_privs,
            seccomp=self._seccomp(), apparmor=self.apparmor, cwd=self.workdir, stdin="null", stdout=out, stderr=err, gate=lease is not None,
            uid_map=f"0 {USERNS_BASE} {USERNS_SIZE}" if userns else None,
            setgroups="deny" if userns else None,
            note=f"container {self.name}")
        try:
            try:
                self._h = _launch.start(spec)
            finally:
                os.close(out)
                os.close(err)
            self.pid = self._h.pid
            if lease is not None and self._h.error is None:
                self.net = setup_network(lease, self.pid)  # step 4, host side
                self._h.go()
            if self._h.error is not None:
                raise ContainerError(f"container {self.name}: {self._h.error}")
        except BaseException:
            self._reap(kill=True)
            if lease is not None and self.net is None:
                from . import network
                network.release(lease)
            self.state = "failed"
            raise
        self.state = "running"
        return self

    @property
    def _a(self) -> int | None:
        """The process the lab waits for: PID 1 itself, or the helper that made it."""
        return self._h._first if self._h is not None else None

    def _reap(self, kill: bool = False, timeout: float | None = None) -> int | None:
        if self._h is None:
            return self.returncode
        if kill:
            # Killing PID 1 kills every process of its pid namespace (pid_namespaces(7)).
            self._h.kill()
        try:
            self.returncode = self._h.wait(timeout).returncode
        except _launch.Timeout:
            return None
        self._h = None
        if self.state == "running":
            self.state = "exited"
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for PID 1 to exit; its exit code (-N for signal N), or None on timeout."""
        if self.state not in ("running", "exited"):
            raise BadInput(f"container {self.name} is {self.state}, not started")
        return self._reap(timeout=timeout)

    def running(self) -> bool:
        return self._h is not None and self._h.alive()

    def stop(self, timeout: float = 1.0) -> int | None:
        """SIGTERM to PID 1, SIGKILL after ``timeout`` (PID 1 ignores signals it has no
        handler for: pid_namespaces(7)); then its exit code."""
        if self.running():
            self._h.kill(signal.SIGTERM)
            if self._reap(timeout=timeout) is None:
                self._reap(kill=True)
        return self.returncode

    def remove(self) -> None:
        """Stop it if needed, remove network, cgroup and the rootfs copy. Safe twice."""
        if self._h is not None:
            self._reap(kill=True)
        if self.net is not None:
            self.net.remove()
        if self.cgroup is not None:
            self.cgroup.remove()
        for e in reversed(self._entries):
            lab.remove(e)
        self._entries.clear()
        self.state = "removed"

    def run(self, timeout: float | None = 30) -> Result:
        """create + start + wait; the output from the logs."""
        self.start()
        pid = self.pid
        code = self.wait(timeout)
        if code is None:
            self.stop(0)
        return Result(self.returncode, self.logs("stdout"), self.logs("stderr"), host_pid=pid,
                      ns_pid=1, label=" ".join(self.argv))

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
    def _seccomp(self) -> bytes | None:
        """The seccomp program for PID 1 and exec (None: no filter)."""
        if not self.seccomp:
            return None
        if getattr(self, "_seccomp_prog", None) is None:
            from . import seccomp as _seccomp
            self._seccomp_prog = _seccomp.allowlist()
        return self._seccomp_prog

    def exec(self, argv: Sequence[str], *, timeout: float = 30, env: dict[str, str] | None = None,
             workdir: str = "/") -> Result:
        """Run a command in the container's namespaces and cgroup, in its root, with its
        capabilities (what ``runc exec`` does), through the lab's launcher.

        The namespace files and the root of PID 1 are opened first (it cannot race
        away), its cgroup joined while the host's paths still resolve, then
        setns(2) into each namespace that differs from ours, a chroot into
        /proc/PID/root, and a fork: the pid namespace applies to children only.
        Past ``timeout`` the command is killed and ``_launch.Timeout`` (a LabError) raised.
        """
        pid = self._need_pid()
        own, theirs = proc.namespaces("self"), proc.namespaces(pid)
        spec = _launch.Spec(
            argv=list(argv), join={k: pid for k in theirs if theirs[k] != own.get(k)},
            cgroup=self.cgroup, target_root=pid, caps=self.caps, seccomp=self._seccomp(),
            apparmor=self.apparmor, no_new_privs=self.no_new_privs, env={**self.env, **(env or {})}, cwd=workdir,
            close_fds=self.close_fds, kill_group=False, note=f"exec in {self.name}")
        try:
            r = _launch.run(spec, timeout=timeout)
        except _launch.Timeout as exc:
            err = _launch.Timeout(f"exec in {self.name}: {argv[0]} did not finish within {timeout} s "
                                  "- it was killed; pass a larger timeout=")
            err.result = exc.result
            raise err from None
        if r.error is not None:
            raise ContainerError(f"exec in {self.name}: {r.error}")
        return r


def run(argv: Sequence[str], **kw) -> Result:
    """Run one command in a fresh container and remove it: its Result (returncode, stdout, stderr)."""
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
