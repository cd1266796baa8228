"""Typed ctypes wrappers for the syscalls Python 3.11 lacks.

Each wrapper sets ``argtypes``/``restype``, uses the kernel's constant names and
raises ``OSError(errno, strerror, path)`` on failure - never ``RuntimeError``,
never ``None``.  Where the running Python has the call (``os.unshare`` and
``os.setns`` from 3.12) we use it.

These calls change the *calling* process.  The lab calls them only in forked
children: a Jupyter kernel is multithreaded, and unshare(CLONE_NEWUSER) or
setns() into a mount namespace is refused there with EINVAL anyway
(unshare(2), setns(2)).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# --- clone flags: include/uapi/linux/sched.h; namespaces(7) ---------------------
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# --- mount flags: include/uapi/linux/mount.h; mount(2) -------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_FORCE = 1
MNT_DETACH = 2

# --- prctl options: include/uapi/linux/prctl.h; prctl(2) ------------------------
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# --- capget/capset: include/uapi/linux/capability.h; capget(2) -----------------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# pivot_root has no glibc wrapper: call it by number (asm/unistd_64.h).
_SYS_pivot_root = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(
    platform.machine()
)


def _check(ret: int, path: str | None = None) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, os.strerror(err))
        raise OSError(err, os.strerror(err), path)
    return ret


def _fs(s: str | bytes | None) -> bytes | None:
    return os.fsencode(s) if s is not None else None


_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.sethostname.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (unshare(2))."""
    if hasattr(os, "unshare"):  # Python >= 3.12
        os.unshare(flags)
        return
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* file) refers to (setns(2))."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, nstype)
        return
    _check(_libc.setns(fd, nstype))


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    _check(_libc.mount(_fs(source), _fs(target), _fs(fstype), flags, _fs(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2); ``MNT_DETACH`` for a lazy unmount."""
    _check(_libc.umount2(_fs(target), flags), target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): ``new_root`` becomes ``/``; the old root moves to ``put_old``."""
    if _SYS_pivot_root is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(_SYS_pivot_root), _fs(new_root), _fs(put_old)),
           new_root)


def sethostname(name: str) -> None:
    """sethostname(2): changes the hostname of the caller's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2); returns the call's result (some options return a value)."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData * 2)]
_libc.capget.restype = ctypes.c_int
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData * 2)]
_libc.capset.restype = ctypes.c_int


def capget(pid: int = 0) -> tuple[int, int, int]:
    """capget(2): (effective, permitted, inheritable) as 64-bit masks; pid 0 = caller."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), ctypes.byref(data)))
    join = lambda f: getattr(data[0], f) | (getattr(data[1], f) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) on the calling thread: takes effect at once."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), ctypes.byref(data)))
