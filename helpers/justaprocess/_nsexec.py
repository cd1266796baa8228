"""The trampoline that puts a command into namespaces, for :mod:`justaprocess.namespaces`.

The caller (a notebook's kernel: multithreaded) never unshares or setns itself
(unshare(2) refuses CLONE_NEWUSER in a multithreaded process, and anything else
would change the kernel's process forever).  Instead it starts this module in a
fresh, single-threaded interpreter::

    python -I -S -c "...; from justaprocess._nsexec import main; main()" CONFIG_JSON

or, for a Python callable, calls :func:`main` in a forked child.  The steps are
those of ``unshare(1)`` and ``nsenter(1)``, one visible syscall each, with one
difference: new namespaces are made with clone(2), so the target is *born* in
them and this trampoline stays outside (``unshare --fork`` leaves its own
process in all of them but pid).

Why a separate, tiny module: it runs once per ``namespaces.run()``, so it must
start in ~15 ms: stdlib only, and libc loaded by its soname
(``ctypes.util.find_library`` runs ``ldconfig -p``: ~80 ms, see ``_libc``).

Protocol (the idea of subprocess's exec-error pipe): the trampoline writes JSON
lines to ``info_fd`` - ``{"host_pid": N, "ns_pid": M}`` once the target process
exists, ``{"error": {...}}`` when a step fails.  ``info_fd`` is close-on-exec,
so EOF on it means "the command is running" (or everything exited).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_pylibc = ctypes.PyDLL("libc.so.6", use_errno=True)  # keeps the GIL held: for clone()
_pylibc.syscall.restype = ctypes.c_long
# clone's number (asm/unistd_64.h, asm-generic/unistd.h); its first argument is
# the flags on these architectures (not on s390).
_SYS_clone = {"x86_64": 56, "aarch64": 220, "ppc64le": 120, "riscv64": 220}.get(os.uname().machine)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]

# clone flags: include/uapi/linux/sched.h; namespaces(7)
FLAGS = {"cgroup": 0x02000000, "ipc": 0x08000000, "mnt": 0x00020000,
         "net": 0x40000000, "pid": 0x20000000, "time": 0x00000080,
         "user": 0x10000000, "uts": 0x04000000}
# The order in which enter() joins.  nsenter(1) joins the user namespace first,
# for an unprivileged caller gains its capabilities there.  We are root in the
# initial user namespace, which already holds CAP_SYS_ADMIN over every
# namespace: joining user *last* keeps it for the others - setns(2) into a time
# namespace owned by the initial user namespace is refused from inside a child
# user namespace.  mnt resets root and cwd; pid affects only children
# (pid_namespaces(7)); setns into a time namespace moves the caller itself
# (time_namespaces(7)), unlike unshare(CLONE_NEWTIME).
ENTER_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt", "time", "user")

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


class StepError(Exception):
    """One setup step failed: which step, and the errno the kernel returned."""

    def __init__(self, step: str, err: int, detail: str = ""):
        super().__init__(step, err)
        self.step, self.errno, self.detail = step, err, detail

    def as_dict(self) -> dict:
        return {"step": self.step, "errno": self.errno,
                "strerror": os.strerror(self.errno) if self.errno else "",
                "detail": self.detail}


def _c(step: str, ret: int) -> None:
    if ret == -1:
        raise StepError(step, ctypes.get_errno())


def _os(step: str, fn, *args):
    try:
        return fn(*args)
    except OSError as exc:
        raise StepError(step, exc.errno or 0, str(exc)) from None


def _write_file(path: str, text: str) -> None:
    # One write(2) per file: uid_map, gid_map and timens_offsets accept exactly
    # one write (user_namespaces(7), time_namespaces(7)).
    fd = _os(f"open {path}", os.open, path, os.O_WRONLY)
    try:
        _os(f"write {path}", os.write, fd, text.encode())
    finally:
        os.close(fd)


def _die_with(parent: int, lifeline: int | None = None) -> None:
    """Die with the process that started us (prctl(2) PR_SET_PDEATHSIG).

    If it died before prctl took effect, we would live on: check.  In a new PID
    namespace the parent is outside, and getppid() returns 0 (pid_namespaces(7)):
    there the check is a pipe the parent holds open - EOF means it is gone.
    """
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if lifeline is not None:
        import select
        if select.select([lifeline], [], [], 0)[0]:
            os._exit(1)
        os.close(lifeline)
    elif os.getppid() != parent:
        os._exit(1)


def _report(fd: int | None, **msg) -> None:
    if fd is not None:
        try:
            os.write(fd, (json.dumps(msg) + "\n").encode())
        except OSError:
            pass


_PROC_FD: int | None = None  # the host's /proc, opened before any setns(mnt)


def _nspid(pid: int) -> list[int]:
    """NSpid of /proc/PID/status (proc(5)), read through the /proc we started with:
    after setns(mnt) the path /proc may be a container's, which lacks host PIDs."""
    opener = (lambda path, flags: os.open(path, flags, dir_fd=_PROC_FD)) if _PROC_FD is not None else None
    with open(f"{pid}/status" if opener else f"/proc/{pid}/status", opener=opener) as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return [pid]


def _become_root_inside(uid_map: str | None, gid_map: str | None) -> None:
    """After joining/creating a user namespace, switch to uid/gid 0 of it when 0 is mapped.

    Our credentials did not change: a host uid that is not mapped shows as the
    overflow uid 65534 inside.  setresuid(0) inside makes us the namespace's root
    (user_namespaces(7), "Effect of capabilities"; nsenter(1) does the same).
    Changing credentials clears the dumpable flag, which would make our own
    /proc files root-owned (unreadable inside): set it back (prctl(2)).
    """
    def maps_zero(text: str | None, path: str) -> bool:
        if text is None:
            try:  # through the /proc we started with: after setns(mnt) /proc may not show us
                if _PROC_FD is not None:
                    with open(path.replace("/proc/", "", 1),
                              opener=lambda p, fl: os.open(p, fl, dir_fd=_PROC_FD)) as f:
                        text = f.read()
                else:
                    with open(path) as f:
                        text = f.read()
            except OSError:
                return False
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and int(parts[0]) == 0:
                return True
        return False

    if maps_zero(gid_map, "/proc/self/gid_map"):
        try:
            os.setgroups([])
        except OSError:
            pass  # setgroups is "deny" in this namespace: fine
        _os("setresgid(0) inside", os.setresgid, 0, 0, 0)
    if maps_zero(uid_map, "/proc/self/uid_map"):
        _os("setresuid(0) inside", os.setresuid, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _clone(flags: int) -> int:
    """clone(2) without a new stack: like fork(), with CLONE_NEW* flags for the child.

    The child is born in the new namespaces and the caller stays where it is, so
    no process of the lab lingers in a container's namespaces (what ``unshare
    --fork`` leaves behind).  Python has no os.clone: call the raw syscall while
    holding the GIL (PyDLL), with the interpreter's own fork hooks around it
    (PyOS_BeforeFork/PyOS_AfterFork_Child, "Process Control" in the C API docs).
    """
    if _SYS_clone is None:
        raise StepError("clone", 38, f"unknown syscall number on {os.uname().machine}")
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _pylibc.syscall(ctypes.c_long(_SYS_clone), ctypes.c_ulong(flags | signal.SIGCHLD),
                          ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_void_p(0),
                          ctypes.c_void_p(0))
    err = ctypes.get_errno()
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
    if pid == -1:
        raise StepError("clone", err)
    return pid


def _write_maps(pid: int, cfg: dict) -> None:
    """Write a child's id maps from outside (user_namespaces(7), "Defining user and group ID mappings").

    The writer must have CAP_SETUID/CAP_SETGID in the *parent* user namespace to
    map anything but its own uid, and each file takes one write.  gid_map needs
    setgroups=deny first unless the writer has CAP_SETGID there.
    """
    if cfg.get("setgroups"):
        _write_file(f"/proc/{pid}/setgroups", cfg["setgroups"])
    if cfg.get("uid_map"):
        _write_file(f"/proc/{pid}/uid_map", cfg["uid_map"])
    if cfg.get("gid_map"):
        _write_file(f"/proc/{pid}/gid_map", cfg["gid_map"])


def _final(cfg: dict, target, info: int | None) -> None:
    """In the process that becomes the target: exec argv, or call the callable.  Never returns."""
    if cfg.get("cwd"):
        try:
            os.chdir(cfg["cwd"])
        except OSError as exc:
            _report(info, error=StepError(f"chdir {cfg['cwd']}", exc.errno or 0).as_dict())
            os._exit(126)
    if target is None:
        argv = cfg["argv"]
        # Python ignores SIGPIPE and SIGXFSZ; an exec'd command must not inherit that.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            _report(info, error={"step": "exec", "errno": exc.errno or 0,
                                 "strerror": exc.strerror or "", "detail": argv[0]})
            os._exit(127)
    if info is not None:
        os.close(info)  # the equivalent of a successful exec
    code = 0
    try:
        value = target()
        rfd = cfg.get("result_fd")
        if rfd is not None:
            import pickle
            try:
                data = pickle.dumps(value)
            except Exception:  # noqa: BLE001 - an unpicklable result comes back as its repr
                data = pickle.dumps(repr(value))
            with os.fdopen(rfd, "wb") as f:
                f.write(data)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the traceback goes to the captured stderr
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    os._exit(code)


def _relay(pid: int) -> None:
    """Wait for the target and exit the same way: a code, or the same signal."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _mount_proc(info: int | None) -> None:
    # procfs shows the PID namespace of the process that mounts it: this one,
    # PID 1 of the new namespace (pid_namespaces(7), "/proc and PID namespaces").
    try:
        _c("mount proc on /proc", _libc.mount(b"proc", b"/proc", b"proc",
                                              MS_NOSUID | MS_NODEV | MS_NOEXEC, None))
    except StepError as exc:
        _report(info, error=exc.as_dict())
        os._exit(126)


def new(cfg: dict, target, info: int | None) -> None:
    """Create the namespaces of ``cfg['kinds']`` and run the target in them (unshare(1), clone(2)).

    We (the trampoline) stay outside; the target is a child made by clone() with
    the CLONE_NEW* flags.  Two kinds need us to act first or after:
    - time: CLONE_NEWTIME does not fit clone()'s flags (it is 0x80, the exit
      signal's byte), and offsets must be written before a process enters: so we
      unshare(CLONE_NEWTIME) - which moves only our *children* - write
      /proc/self/timens_offsets, then clone (time_namespaces(7));
    - user: we write the child's uid_map/gid_map from outside, then let it go on.
    """
    kinds = cfg["kinds"]
    me = os.getpid()
    if "time" in kinds:
        _c("unshare time", _libc.unshare(FLAGS["time"]))
        offsets = cfg.get("offsets") or {}
        lines = []
        for clock in ("monotonic", "boottime"):
            if clock in offsets:
                ns = int(round(float(offsets[clock]) * 1e9))
                lines.append(f"{clock} {ns // 10**9} {ns % 10**9}")
        if lines:
            _write_file("/proc/self/timens_offsets", "\n".join(lines) + "\n")
    flags = 0
    for k in kinds:
        if k != "time":
            flags |= FLAGS[k]
    mapped = "user" in kinds and bool(cfg.get("uid_map") or cfg.get("gid_map"))
    life_r, life_w = os.pipe()  # we keep life_w open until we exit: see _die_with
    go_r, go_w = os.pipe()      # "your maps are written"
    child = _clone(flags)
    if child == 0:
        try:
            os.close(life_w)
            os.close(go_w)
            _die_with(me, life_r)
            if os.read(go_r, 1) != b"g":
                os._exit(1)  # the parent failed: it reports why
            os.close(go_r)
            if mapped:
                _become_root_inside(cfg.get("uid_map"), cfg.get("gid_map"))
            if "mnt" in kinds:
                # The copied mounts keep the host's propagation: on a systemd host "/"
                # is shared, and a mount made here would appear on the host.  Make
                # them all private first (mount_namespaces(7); unshare(1) does too).
                _c("make / private", _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
            if cfg.get("hostname") is not None:
                raw = cfg["hostname"].encode()
                _c("sethostname", _libc.sethostname(raw, len(raw)))
            if cfg.get("fresh_proc"):
                _mount_proc(info)
        except StepError as exc:
            _report(info, error=exc.as_dict())
            os._exit(126)
        _final(cfg, target, info)
    os.close(life_r)
    os.close(go_r)
    try:
        if mapped:
            _write_maps(child, cfg)
    except StepError:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise
    os.write(go_w, b"g")
    os.close(go_w)
    _report(info, host_pid=child, ns_pid=_nspid(child)[-1])
    if info is not None:
        os.close(info)
    _relay(child)


def _fork_target(cfg: dict, target, info: int | None, fresh_proc: bool) -> None:
    me = os.getpid()
    life_r, life_w = os.pipe()  # we keep life_w open until we exit: see _die_with
    child = os.fork()
    if child == 0:
        os.close(life_w)
        _die_with(me, life_r)
        if fresh_proc:
            _mount_proc(info)
        _final(cfg, target, info)
    os.close(life_r)
    _report(info, host_pid=child, ns_pid=_nspid(child)[-1])
    if info is not None:
        os.close(info)
    _relay(child)


def enter(cfg: dict, target, info: int | None) -> None:
    """Join the namespaces of process ``cfg['pid']`` and run the target there (nsenter(1))."""
    pid = cfg["pid"]
    fds = {}
    # Open every file before joining anything: after setns(mnt), /proc is theirs.
    for k in ENTER_ORDER:
        if k in cfg["kinds"]:
            theirs = _os(f"open /proc/{pid}/ns/{k}", os.readlink, f"/proc/{pid}/ns/{k}")
            if theirs == os.readlink(f"/proc/self/ns/{k}"):
                continue  # already there; setns to one's own user ns is EINVAL (setns(2))
            fds[k] = _os(f"open /proc/{pid}/ns/{k}", os.open, f"/proc/{pid}/ns/{k}", os.O_RDONLY)
    for k in ENTER_ORDER:
        if k in fds:
            _c(f"setns {k}", _libc.setns(fds[k], FLAGS[k]))
            os.close(fds[k])
            if k == "user":
                _become_root_inside(None, None)
    if "mnt" in fds:
        os.chdir("/")  # setns(mnt) set root and cwd to the namespace's root
    if "pid" in fds:  # setns(pid) sets pid_for_children only: the target is a child
        _fork_target(cfg, target, info, fresh_proc=False)
    _report(info, host_pid=os.getpid(), ns_pid=_nspid(os.getpid())[-1])
    _final(cfg, target, info)


def main(cfg: dict | None = None, target=None) -> None:
    """Entry point: ``cfg`` from argv[1] (JSON) when run as a program.  Never returns."""
    if cfg is None:
        cfg = json.loads(sys.argv[1])
    info = cfg.get("info_fd")
    if info is not None:
        os.set_inheritable(info, False)  # closes on exec: EOF = the command runs
    _die_with(cfg["parent"])
    global _PROC_FD
    _PROC_FD = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if cfg["mode"] == "enter":
            enter(cfg, target, info)
        else:
            new(cfg, target, info)
    except StepError as exc:
        _report(info, error=exc.as_dict())
        os._exit(126)
    except BaseException as exc:  # noqa: BLE001 - never a hang: say what broke
        _report(info, error={"step": "trampoline", "errno": 0, "detail": repr(exc)})
        os._exit(126)
    os._exit(125)  # not reached
