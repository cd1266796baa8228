"""The hand-built engine's steps, one function each (the talk's "What a container engine does").

1. :func:`copy_rootfs`       file system copy                (mkdir, tar -x)
2. :func:`create_namespaces` namespaces                      (unshare)
3. :func:`create_cgroup`     a cgroup with limits            (mkdir, echo > memory.max)
4. :func:`setup_network`     network interfaces              (ip link add veth ...)
5. :func:`setup_mounts`      /proc, /dev, a bind-mounted volume (mount)
6. :func:`setup_security`    no_new_privs, engine default capabilities (prctl)
7. :func:`jump_pivot_root`   'jump' into the container       (pivot_root; or
   :func:`jump_chroot`, the variant chapter 07 breaks)

Chapter 05 takes them one at a time (:mod:`justaprocess.container_stepper`);
:class:`justaprocess.container.Container` has the lab's launcher do them in one go.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Iterable, NamedTuple, Sequence

from . import _launch, _libc, capabilities, cgroups
from . import rootfs as _rootfs
from .errors import BadInput

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
    "user": _libc.CLONE_NEWUSER,  # Container(userns=True): with its uid and gid maps
}
# What `runc spec` asks for (mnt, uts, ipc, pid, net) plus a cgroup namespace,
# so the container sees its own cgroup as "/" (cgroup_namespaces(7)).
DEFAULT_NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "cgroup")

# The device nodes of a fresh /dev: name -> (major, minor), from the kernel's
# Documentation/admin-guide/devices.txt (the OCI runtime spec's "Default Devices").
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}

# The device allow-list (Docker's default, as runc gets it in linux.resources.devices):
# those nodes read/write, a pty (136:*, /dev/ptmx 5:2) - and mknod(2) of any node ('m'),
# which is harmless once opening it is refused.  v1: the devices controller's files;
# v2: an eBPF program on the cgroup (justaprocess._bpfdev; cgroup-v2.rst "Device controller").
ENGINE_DEVICES = ("c *:* m", "b *:* m",
                  *(f"c {ma}:{mi} rwm" for ma, mi in DEVICES.values()),
                  "c 136:* rwm", "c 5:2 rwm")

# Hidden from the container (OCI maskedPaths, the list `runc spec` writes - the same as
# runtimes.MASKED_PATHS): kernel memory, keys, timers and firmware tables of the host
# (/dev/null over files, an empty read-only tmpfs over folders); and read-only (readonlyPaths).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Chapter 05's engine does the steps of the talk, plus the device allow-list and closing
# fds (on by default, as in every runtime).  HARDENED adds what runc and Docker also do, so
# that the escapes of chapter 07 fail: ``Container(argv, **HARDENED)``.  Docker's
# capabilities without CAP_MKNOD (as `runc spec` and podman; no CAP_SYS_ADMIN either: no
# remount, no fresh procfs, no devtmpfs), no_new_privs, the seccomp allowlist, masked and
# read-only paths, the device allow-list.
HARDENED = {"caps": tuple(c for c in ENGINE_DEFAULT if c != "cap_mknod"),
            "no_new_privs": True, "seccomp": True,
            "masked_paths": MASKED_PATHS, "readonly_paths": READONLY_PATHS,
            "devices": ENGINE_DEVICES, "close_fds": True}


class Volume(NamedTuple):
    """A host folder bind-mounted into the container (mount(2) MS_BIND)."""
    source: str         # host path
    target: str         # path inside the container
    readonly: bool = False




def check_volume(v: Volume) -> Volume:
    """Refuse a target that would climb out of the root: the mkdir happens before the
    jump, in the host's tree (path_resolution(7): '..' of a non-root dir is its parent)."""
    if not isinstance(v.target, str) or not v.target.startswith("/") or ".." in v.target.split("/"):
        raise BadInput(f"volume target {v.target!r}: an absolute path inside the container, "
                       "without '..' (e.g. '/data')")
    return v


# --- step 1: the file system copy ---------------------------------------------------

def copy_rootfs(image: _rootfs.Rootfs, dest: str) -> str:
    """``mkdir dest; tar -x -f image.tar -C dest``: the container's own copy of the image."""
    return _rootfs.extract(image, dest)


# A user namespace's ids 0..USERNS_SIZE-1 are USERNS_BASE.. outside: the first range
# useradd(8) writes to /etc/subuid; no account of the host owns them.
USERNS_BASE = 100000
USERNS_SIZE = 65536


def shift_owner(root: str, base: int = USERNS_BASE, size: int = USERNS_SIZE) -> None:
    """chown every file of ``root`` from id N to ``base`` + N (N < size), as a rootless
    engine unpacks its image: inside a user namespace mapping 0 to ``base`` the files
    are then root's again (user_namespaces(7)).  Done once: a root already shifted is left."""
    if os.lstat(root).st_uid >= base:
        return
    for top, dirs, files in os.walk(root):
        for n in [top] + [os.path.join(top, x) for x in dirs + files]:
            st = os.lstat(n)
            if st.st_uid < size and st.st_gid < size:
                os.lchown(n, base + st.st_uid, base + st.st_gid)
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(n, stat.S_IMODE(st.st_mode))  # chown(2) clears setuid bits


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
        need = self._needed() | {"memory"}
        use = {c: h for c, h in use.items() if c in need}
        return [h for h in hs if h in use.values()], use


def layout_is_v2() -> bool:
    return cgroups.layout() == cgroups.V2


def create_cgroup(name: str, *, memory: int | str | None = None, pids: int | None = None,
                  cpu: float | None = None, devices: Sequence[str] | None = None) -> cgroups.Cgroup:
    """mkdir the container's cgroup (under the lab parent) and write its limits.

    The lab's :class:`~justaprocess.cgroups.Cgroup` does it (see
    :class:`ContainerCgroup`): on v1 and the hybrid one directory per hierarchy
    used (memory/, pids/ ...), on v2 one directory; limits in v1 or v2 file
    names (cgroups(7), cgroup-v2.rst).  ``devices``: the allow-list (e.g.
    :data:`ENGINE_DEVICES`) - v1 ``devices.deny``/``devices.allow``, v2 an eBPF
    program attached before any process joins.
    """
    return ContainerCgroup(name, memory=memory, pids=pids, cpu=cpu,
                           devices=list(devices) if devices is not None else None).create()


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
    (A container started by :class:`~justaprocess.container.Container` has the
    launcher make / private, bind the root and mount /proc; then :func:`extra_mounts`.)
    """
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    # pivot_root(2) needs new_root to be a mount point: bind the rootfs onto itself.
    _libc.mount(root, root, None, _libc.MS_BIND | _libc.MS_REC)
    if mount_proc:
        # A proc of *this* pid namespace (we are PID 1 of it): ps sees the container only.
        _libc.mount("proc", os.path.join(root, "proc"), "proc",
                    _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
    extra_mounts(root, volumes=volumes, mount_dev=mount_dev)
    for p in readonly_paths:  # e.g. /proc/sys, as runc's "readonlyPaths"
        target = os.path.join(root, p.lstrip("/"))
        _libc.mount(target, target, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount(None, target, None, _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY)


def extra_mounts(root: str, *, volumes: Sequence[Volume] = (), mount_dev: bool = True,
                 bind_devices: bool = False) -> None:
    """A fresh /dev and the volumes, under ``root`` (in the container's mount namespace).

    ``bind_devices``: in a user namespace mknod(2) of a device is EPERM (it needs
    CAP_MKNOD in the initial one): bind-mount the host's nodes instead, as runc does
    in a user namespace."""
    if mount_dev:
        # A fresh /dev with the few nodes a program expects, made with mknod(2) as
        # runc does outside a user namespace (OCI runtime spec, "Default Devices").
        _launch.step("mount /dev")
        dev = os.path.join(root, "dev")
        _libc.mount("tmpfs", dev, "tmpfs", _libc.MS_NOSUID, "mode=755,size=64k")
        for d, (major, minor) in DEVICES.items():
            target = os.path.join(dev, d)
            if bind_devices:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
                _libc.mount(os.path.join("/dev", d), target, None, _libc.MS_BIND)
                continue
            os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(target, 0o666)  # mknod's mode passes through the umask
    for v in volumes:
        check_volume(v)
        _launch.step(f"volume {v.target}")
        target = os.path.join(root, v.target.lstrip("/"))
        os.makedirs(target, exist_ok=True)
        _libc.mount(v.source, target, None, _libc.MS_BIND | _libc.MS_REC)
        if v.readonly:
            _libc.mount(None, target, None,
                        _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY)


# --- step 6: security (child side) -------------------------------------------------------

def setup_security(keep_caps: int | None, no_new_privs: bool = True) -> None:
    """Drop every capability not in ``keep_caps`` from the bounding set; no_new_privs.

    capabilities(7): at execve() a root process gets permitted = bounding set,
    so dropping from the bounding set (PR_CAPBSET_DROP) takes effect at the
    exec - after pivot_root, which still needs CAP_SYS_ADMIN now.  The
    inheritable and ambient sets are emptied so nothing comes back.
    ``keep_caps=None`` keeps everything (the naive container).  The lab's one
    way to reduce capabilities does it (``_launch.reduce_capabilities``).
    """
    if keep_caps is not None:
        _launch.reduce_capabilities(keep_caps, now=False)
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


def resolve(cmd: str, env: dict[str, str]) -> str:
    """execvp's PATH search, done inside the container's root."""
    if "/" in cmd:
        return cmd
    for d in env.get("PATH", _rootfs.PATH).split(":"):
        p = os.path.join(d, cmd)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(errno.ENOENT, f"{cmd}: not found in the container's PATH", cmd)

