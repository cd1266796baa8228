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
import errno
import os
import platform

# The one libc handle of the package, loaded by its soname: ctypes.util.find_library
# runs `ldconfig -p` (~80 ms) and answers the same name on every glibc system.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
# The same library through PyDLL: calls keep the GIL held, so a fork/clone made
# through it returns in the child holding the GIL (only for single-threaded callers).
_libc_gil = ctypes.PyDLL("libc.so.6", use_errno=True)
MACHINE = platform.machine()

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
PR_GET_SECUREBITS = 27
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# --- capget/capset: include/uapi/linux/capability.h; capget(2) -----------------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# --- the architecture table: syscalls called by number --------------------------
# x86_64 from asm/unistd_64.h; aarch64 and riscv64 share asm-generic/unistd.h.
# clone on s390x takes (newsp, flags) - its first two arguments swapped (clone(2), NOTES).
_GENERIC = {"clone": 220, "pivot_root": 41, "mount": 40, "umount2": 39, "unshare": 97,
            "setns": 268, "ptrace": 117, "reboot": 142, "chroot": 51, "sethostname": 161,
            "setdomainname": 162, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "kexec_load": 104, "bpf": 280, "keyctl": 219,
            "add_key": 217, "request_key": 218, "perf_event_open": 241, "swapon": 224,
            "swapoff": 225, "personality": 92, "mknodat": 33, "clone3": 435, "syslog": 116,
            "acct": 89, "settimeofday": 170, "clock_settime": 112, "open_by_handle_at": 265,
            "userfaultfd": 282, "open_tree": 428, "move_mount": 429, "fsopen": 430,
            "fsmount": 432, "kcmp": 272, "process_vm_readv": 270, "process_vm_writev": 271,
            "quotactl": 60, "close_range": 436, "write": 64}
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"clone": 56, "pivot_root": 155, "mount": 165, "umount2": 166, "unshare": 272,
               "setns": 308, "ptrace": 101, "reboot": 169, "chroot": 161, "sethostname": 170,
               "setdomainname": 171, "init_module": 175, "finit_module": 313,
               "delete_module": 176, "kexec_load": 246, "bpf": 321, "keyctl": 250,
               "add_key": 248, "request_key": 249, "perf_event_open": 298, "swapon": 167,
               "swapoff": 168, "personality": 135, "mknod": 133, "mknodat": 259, "clone3": 435,
               "syslog": 103, "acct": 163, "settimeofday": 164, "clock_settime": 227,
               "open_by_handle_at": 304, "userfaultfd": 323, "open_tree": 428,
               "move_mount": 429, "fsopen": 430, "fsmount": 432, "kcmp": 312,
               "process_vm_readv": 310, "process_vm_writev": 311, "quotactl": 179,
               "iopl": 172, "ioperm": 173, "close_range": 436, "write": 1},
    "aarch64": _GENERIC,
    "riscv64": _GENERIC,
    "ppc64le": {"clone": 120, "pivot_root": 203},
    "s390x": {"clone": 120, "pivot_root": 217},
}
CLONE_ARGS_SWAPPED = MACHINE == "s390x"
# seccomp_data.arch values (include/uapi/linux/audit.h): a filter checks it first.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "riscv64": 0xC00000F3,
              "ppc64le": 0xC0000015, "s390x": 0x80000016}


def syscall_number(name: str) -> int:
    """The number of a syscall on this machine (OSError ENOSYS when the table lacks it)."""
    try:
        return SYSCALLS[MACHINE][name]
    except KeyError:
        raise OSError(errno.ENOSYS, f"no syscall number for {name} on {MACHINE} in _libc.SYSCALLS") from None


_SYS_pivot_root = SYSCALLS.get(MACHINE, {}).get("pivot_root")


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
_libc_gil.syscall.restype = ctypes.c_long
_libc_gil.fork.restype = ctypes.c_int
_libc_gil.fork.argtypes = []


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
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {platform.machine()}")
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


# --- making processes: fork and clone without CPython's at-fork work ----------------

SIGCHLD = 17  # the exit signal a clone() child sends its parent (signal(7), x86/arm/riscv/s390)


def clone(flags: int, hooks: bool = True) -> int:
    """clone(2) without a new stack: returns twice like fork(), with CLONE_NEW* flags for the child.

    The child is *born* in the new namespaces; the caller stays where it is (what
    runc and ``unshare --fork`` do for pid).  Python has no os.clone: this calls the
    raw syscall through PyDLL (the GIL stays held) with CPython's own fork hooks
    around it (PyOS_BeforeFork/PyOS_AfterFork_*, "Process Control" in the C API).
    Only for a single-threaded caller (a forked helper): the hooks do not make
    other threads' locks safe the way os.fork() does.

    ``hooks=False`` skips them on both sides, as :func:`fork_single_threaded` does: for a
    child that runs only the launcher's steps and then execs.  In the child they cost
    ~0.5 ms of CPU, on the way to its exec (threading's and random's after-fork work,
    mostly copy-on-write faults: bench/README.md); with one thread there is no lock
    another thread could hold, and nothing of the interpreter's own state to reset.
    A child that runs a Python callable keeps them (random is reseeded there, say).
    """
    nr = SYSCALLS.get(MACHINE, {}).get("clone")
    if nr is None:
        raise OSError(errno.ENOSYS, f"clone: unknown syscall number on {MACHINE}")
    a, b = ctypes.c_ulong(flags | SIGCHLD), ctypes.c_void_p(0)
    if CLONE_ARGS_SWAPPED:
        a, b = ctypes.c_ulong(0), ctypes.c_ulong(flags | SIGCHLD)
    api = ctypes.pythonapi
    if hooks:
        api.PyOS_BeforeFork()
    pid = _libc_gil.syscall(ctypes.c_long(nr), a, b, ctypes.c_void_p(0), ctypes.c_void_p(0),
                            ctypes.c_void_p(0))
    err = ctypes.get_errno()
    if hooks and pid == 0:
        api.PyOS_AfterFork_Child()
    elif hooks:
        api.PyOS_AfterFork_Parent()
    if pid == -1:
        raise OSError(err, os.strerror(err))
    return pid


def fork_single_threaded() -> int:
    """glibc's fork(3) without CPython's after-fork work (~0.6 ms saved per fork here).

    Only in a single-threaded process of the lab (a forked helper): there is no
    other thread whose locks would need resetting.  0 in the child, its PID in the parent.
    """
    pid = _libc_gil.fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


# --- seccomp: include/uapi/linux/seccomp.h, filter.h; seccomp(2) -------------------
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_deny(numbers: dict[int, int], arch: int | None = None) -> bytes:
    """A classic-BPF seccomp program: syscall number -> errno to fail it with; others allowed.

    The first check is the architecture (seccomp(2): a filter must check
    seccomp_data.arch, or a syscall of another ABI slips through); a foreign one
    kills the process.  Returned as the raw array of struct sock_filter.
    """
    import struct
    BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
    arch = AUDIT_ARCH[MACHINE] if arch is None else arch
    prog = [(BPF_LD_W_ABS, 0, 0, 4),                    # A = seccomp_data.arch
            (BPF_JEQ_K, 1, 0, arch),                     # our ABI: skip the kill
            (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
            (BPF_LD_W_ABS, 0, 0, 0)]                     # A = seccomp_data.nr
    for nr, err in sorted(numbers.items()):
        prog += [(BPF_JEQ_K, 0, 1, nr), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (err & 0xFFFF))]
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def seccomp_load(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog): needs no_new_privs or CAP_SYS_ADMIN."""
    n = len(program) // ctypes.sizeof(_SockFilter)
    arr = (_SockFilter * n).from_buffer_copy(program)
    fprog = _SockFprog(n, ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0))


# --- close_range(2): no fd of the caller's reaches the program it execs ---------------------
CLOSE_RANGE_CLOEXEC = 1 << 2


def cloexec_from(first: int = 3) -> None:
    """Mark every fd >= ``first`` close-on-exec: the next execve(2) closes them all (runc's
    CloseExecFrom before it execs the container's process).  close_range(2) with
    CLOSE_RANGE_CLOEXEC (Linux 5.11); on an older kernel, fd by fd from /proc/self/fd."""
    try:
        _check(_libc.syscall(ctypes.c_long(syscall_number("close_range")), ctypes.c_uint(first),
                             ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC)))
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own fd, closed meanwhile


# --- inotify(7): wait for a file to change, instead of polling it --------------------------
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


def inotify_init1(flags: int = os.O_CLOEXEC | os.O_NONBLOCK) -> int:
    """inotify_init1(2): an inotify instance, as an fd (readable when an event is queued)."""
    return _check(_libc.inotify_init1(flags))


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """inotify_add_watch(2): watch ``path`` for the events in ``mask``; the watch descriptor."""
    return _check(_libc.inotify_add_watch(fd, _fs(path), mask), path)


# --- cgroup v2 device control: eBPF programs attached to a cgroup (bpf(2)) ----------
BPF_PROG_DETACH, BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 9, 13, 16
BPF_CGROUP_DEVICE = 6   # enum bpf_attach_type (include/uapi/linux/bpf.h)


def _bpf(cmd: int, attr) -> int:
    return _check(_libc.syscall(ctypes.c_long(syscall_number("bpf")), ctypes.c_int(cmd), attr,
                                ctypes.c_uint(len(attr))))


def bpf(cmd: int, attr) -> int:
    """bpf(2): ``cmd`` with ``attr`` (a buffer holding union bpf_attr); a new fd for the
    commands that make one (close-on-exec), else 0.  Used by ``_bpfdev``."""
    return _bpf(cmd, attr)


def cgroup_device_programs(cgroup_fd: int) -> list[int]:
    """The ids of the device-control programs attached to this cgroup v2 directory itself
    (BPF_PROG_QUERY of BPF_CGROUP_DEVICE; cgroup-v2.rst "Device controller")."""
    import struct
    ids = (ctypes.c_uint32 * 64)()
    attr = ctypes.create_string_buffer(128)   # union bpf_attr, the query member, zero-padded
    struct.pack_into("=IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                     ctypes.addressof(ids), len(ids))
    _bpf(BPF_PROG_QUERY, attr)
    return list(ids[:struct.unpack_from("=I", attr, 24)[0]])


def cgroup_detach_device_program(cgroup_fd: int, prog_id: int) -> None:
    """Detach one device-control program (by id) from a cgroup v2 directory (BPF_PROG_DETACH)."""
    import struct
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("=I", attr, 0, prog_id)
    prog = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    try:
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("=IIII", attr, 0, cgroup_fd, prog, BPF_CGROUP_DEVICE, 0)
        _bpf(BPF_PROG_DETACH, attr)
    finally:
        os.close(prog)
