"""Seccomp allowlists, built with libseccomp (seccomp_init(3), seccomp_rule_add(3),
seccomp_export_bpf(3)) - the way Docker's and podman's default profiles work.

An allowlist names the system calls a container may make; every other call fails with
the *default action*, an errno (Docker: ``"defaultAction": "SCMP_ACT_ERRNO"``, EPERM).
A denylist (allow by default) misses whatever it does not name - ``clone3``, the new
mount API (``fsopen``, ``fsmount``, ``move_mount``, ``open_tree``), io_uring, and every
call newer than the list.  The allowlist is Docker's: the unconditional ``SCMP_ACT_ALLOW``
rule of moby's ``profiles/seccomp/default.json`` (Apache-2.0), plus its rules with
conditions for Docker's default capability set (:data:`DOCKER_RULES`): ``socket`` but for
two families, ``personality`` for five values, ``chroot``, ``clone`` only without namespace
flags, ``clone3`` ENOSYS (so that the C library falls back to ``clone``, whose flags a
filter can read).

libseccomp (Debian ``libseccomp2``, which runc links too) resolves the names for this
machine's ABI and writes the classic-BPF program, architecture check included; the lab
loads it with ``prctl(PR_SET_SECCOMP)`` in the container's last step (``_launch``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os

from .errors import BadInput, MissingTool

# moby/profiles seccomp/default.json: the names of its first, unconditional allow rule.
DOCKER_ALLOW = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area",
    "gettid", "gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set",
    "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget",
    "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
    "setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
    "splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
    "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
    "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",)

# Its other unconditional allow rules: kernel >= 4.8 (ptrace can no longer skip the filter),
# and the calls of one architecture each (x86: arch_prctl sets the TLS base that every program
# needs); names this machine's ABI does not have are skipped.
DOCKER_ALLOW += ("process_vm_readv", "process_vm_writev", "ptrace",
                 "arch_prctl", "modify_ldt", "sync_file_range2", "swapcontext",
                 "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
                 "s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr",
                 "riscv_flush_icache")

# Namespace flags of clone(2) (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
# Docker allows clone only when none is set (for a container without CAP_SYS_ADMIN).
CLONE_NS_FLAGS = 0x7E020000

SCMP_ACT_ALLOW = 0x7FFF0000
# enum scmp_compare (seccomp.h): the OCI spelling is "SCMP_CMP_" + the name
CMP = {"NE": 1, "LT": 2, "LE": 3, "EQ": 4, "GE": 5, "GT": 6, "MASKED_EQ": 7}

# Docker's rules with argument conditions, for its default capability set (no CAP_SYS_ADMIN;
# CAP_SYS_CHROOT kept, hence chroot): (name, action, [(arg index, op, value, value two)]).
# Several rules for one call are alternatives.  "ALLOW" or an errno name.
DOCKER_RULES = (
    ("socket", "ALLOW", [(0, "LT", 38, 0)]),      # any family but AF_ALG (38) and AF_VSOCK (40)
    ("socket", "ALLOW", [(0, "EQ", 39, 0)]),
    ("socket", "ALLOW", [(0, "GT", 40, 0)]),
    ("personality", "ALLOW", [(0, "EQ", 0x0, 0)]),
    ("personality", "ALLOW", [(0, "EQ", 0x8, 0)]),
    ("personality", "ALLOW", [(0, "EQ", 0x20000, 0)]),
    ("personality", "ALLOW", [(0, "EQ", 0x20008, 0)]),
    ("personality", "ALLOW", [(0, "EQ", 0xFFFFFFFF, 0)]),
    ("chroot", "ALLOW", []),                       # with CAP_SYS_CHROOT (Docker keeps it)
    ("clone", "ALLOW", [(0, "MASKED_EQ", CLONE_NS_FLAGS, 0)]),   # no new namespaces
    ("clone3", "ENOSYS", []),                      # flags in memory, unreadable to a filter:
)                                                  # ENOSYS makes the C library fall back to clone


def SCMP_ACT_ERRNO(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            raise MissingTool("libseccomp", "libseccomp2") from None
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_rule_add_array.restype = ctypes.c_int
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_export_bpf.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def _errno_number(err) -> int:
    if isinstance(err, int) and not isinstance(err, bool) and 0 < err < 4096:
        return err
    if isinstance(err, str) and isinstance(getattr(_errno, err.upper(), None), int):
        return getattr(_errno, err.upper())
    raise BadInput(f"seccomp: {err!r} is not an errno: give a name like 'EPERM' or 'ENOSYS' (errno(3))")


def allowlist(names=DOCKER_ALLOW, *, default: int | str = "EPERM",
              docker_rules: bool = True) -> bytes:
    """The classic-BPF program of an allowlist: ``names`` allowed, every other call fails with
    ``default`` (an errno).  ``docker_rules``: also Docker's rules with conditions
    (:data:`DOCKER_RULES`: socket families, personality, chroot, ``clone`` without namespace
    flags, ``clone3`` -> ENOSYS).
    Names this ABI does not have (``chown32`` on x86_64 ...) are skipped, as libseccomp does
    for Docker.  Returns the raw array of ``struct sock_filter`` for ``_libc.seccomp_load``."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise BadInput("seccomp allowlist: a list of system call names, e.g. ['read', 'write']")
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO(_errno_number(default)))
    if not ctx:
        raise OSError(_errno.EINVAL, "seccomp_init failed")
    try:
        def add(action: int, name: str, *cmps: _ArgCmp) -> bool:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:          # __NR_SCMP_ERROR: no such call known to libseccomp
                return False
            arr = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc == -_errno.EDOM or rc == -_errno.EOPNOTSUPP:   # not a call of this ABI
                return False
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({name}): {os.strerror(-rc)}")
            return True
        for n in dict.fromkeys(names):
            add(SCMP_ACT_ALLOW, n)
        if docker_rules:
            for name, action, conds in DOCKER_RULES:
                act = SCMP_ACT_ALLOW if action == "ALLOW" else SCMP_ACT_ERRNO(_errno_number(action))
                add(act, name, *(_ArgCmp(i, CMP[op], a, b) for i, op, a, b in conds))
        fd = os.memfd_create("jap-seccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def oci(names=DOCKER_ALLOW, default: str = "EPERM") -> dict:
    """The same allowlist as an OCI ``linux.seccomp`` section (config-linux.md#seccomp), for runc."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _errno_number(default),
        "architectures": [],
        "syscalls": [{"names": list(dict.fromkeys(names)), "action": "SCMP_ACT_ALLOW"}] + [
            {"names": [name], "action": "SCMP_ACT_ALLOW"} if action == "ALLOW" and not conds else
            {"names": [name], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": i, "value": a, "valueTwo": b, "op": "SCMP_CMP_" + op}
                      for i, op, a, b in conds]} if action == "ALLOW" else
            {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": _errno_number(action)}
            for name, action, conds in DOCKER_RULES],
    }


def number(name: str) -> int:
    """This machine's number of system call ``name`` (libseccomp's table)."""
    nr = _lib().seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        raise BadInput(f"seccomp: {name!r} is not a system call of this machine")
    return nr


# Calls for :func:`attempt`, each with harmless arguments: a filesystem context of the new
# mount API, an io_uring instance, a new user namespace (in a child about to exit).
_PROBES = {
    "fsopen": lambda c: c.syscall(number("fsopen"), b"tmpfs", 0),
    "io_uring_setup": lambda c: c.syscall(number("io_uring_setup"), 1, ctypes.byref((ctypes.c_char * 120)())),
    # last: once in a new user namespace, the process has no capability over its mount namespace
    "unshare": lambda c: c.syscall(number("unshare"), 0x10000000),              # CLONE_NEWUSER
}


def attempt(program: bytes | list | None, calls=tuple(_PROBES)) -> dict[str, str]:
    """Make each of ``calls`` in a child process under a seccomp ``program`` (bytes from
    :func:`allowlist`, or a denylist of names as ``_launch.Spec(seccomp=)`` takes);
    name -> "allowed" or the errno name it failed with.  The child is the lab's (registered,
    bounded); what it made (an fd, a namespace) goes with it."""
    from . import _launch
    unknown = [c for c in calls if c not in _PROBES]
    if unknown:
        raise BadInput(f"seccomp.attempt: no harmless probe for {unknown[0]!r}: one of {', '.join(_PROBES)}")

    if isinstance(program, (list, tuple)):       # a denylist: names -> EPERM, the rest allowed
        program = {number(n): "EPERM" for n in program}

    def probe() -> dict[str, str]:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        out = {}
        for name in calls:
            ctypes.set_errno(0)
            rc = _PROBES[name](libc)
            out[name] = "allowed" if rc >= 0 else _errno.errorcode.get(ctypes.get_errno(), "E?")
        return out

    r = _launch.run(_launch.Spec(fn=probe, seccomp=program, no_new_privs=True, cgroup="bounded",
                                 note="seccomp probe"), timeout=30)
    r.check()
    return r.value
