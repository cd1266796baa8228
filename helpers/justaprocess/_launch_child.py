"""What a launched child does, step by step, between fork/clone and exec: the other half of
:mod:`justaprocess._launch` (which prepares a plan in the caller and starts these).

Runs only in children: never returns, reports a failed step on the wire (a frame
``("error", (step, errno, detail))``) and _exit()s, never raises into the caller's code
(the child is a copy of the caller: fork(2), _exit(2)).  Its last frame before execve(2)
is ``("exec", None)``: the caller tells an exec from a death by it.
"""
from __future__ import annotations

import io
import os
import pickle
import select
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Sequence

from . import _libc

if TYPE_CHECKING:  # the plan is made by _launch in the caller
    from ._launch import _Plan

# clone flags: include/uapi/linux/sched.h; namespaces(7).
FLAGS = {"cgroup": _libc.CLONE_NEWCGROUP, "ipc": _libc.CLONE_NEWIPC, "mnt": _libc.CLONE_NEWNS,
         "net": _libc.CLONE_NEWNET, "pid": _libc.CLONE_NEWPID, "time": _libc.CLONE_NEWTIME,
         "user": _libc.CLONE_NEWUSER, "uts": _libc.CLONE_NEWUTS}
EXIT_SETUP, EXIT_EXEC = 126, 127   # what sh(1) returns: "cannot run", "not found"


def _send(fd: int, kind: str, payload=None) -> None:
    try:
        data = pickle.dumps((kind, payload))
    except Exception:  # noqa: BLE001 - an unpicklable value or exception: its repr
        data = pickle.dumps((kind, repr(payload) if kind == "value" else RuntimeError(repr(payload))))
    data = len(data).to_bytes(4, "big") + data
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the caller is gone: PR_SET_PDEATHSIG ends us


class _Step:
    """Names the step in progress, so a failure reports it (``with _Step("setns net"):``)."""
    name = "start"


def _fail(plan: _Plan, exc: BaseException, code: int = EXIT_SETUP):
    if isinstance(exc, OSError):
        payload = (_Step.name, exc.errno or 0, exc.filename and str(exc.filename) or "")
    else:
        payload = (_Step.name, 0, f"{type(exc).__name__}: {exc}")
    _send(plan.wire_w, "error", payload)
    os._exit(code)


def _write_file(path: str, text: str) -> None:
    # One write(2): uid_map, gid_map and timens_offsets accept exactly one (user_namespaces(7)).
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _die_with_parent(lifeline: int | None, parent: int | None) -> None:
    """prctl(2) PR_SET_PDEATHSIG, then check the parent did not die before it took effect.

    In a new pid namespace getppid() is 0 (the parent is outside, pid_namespaces(7)):
    there the check is a pipe the parent holds open; EOF means it is gone.
    """
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if lifeline is not None:
        if select.select([lifeline], [], [], 0)[0]:
            os._exit(1)
        os.close(lifeline)
    elif parent is not None and os.getppid() != parent:
        os._exit(1)


def _prelude(plan: _Plan) -> None:
    """The first process's set-up: its own session, stdio, default signals."""
    _Step.name = "setsid"
    os.setsid()  # its own process group: one killpg stops it and its children
    _Step.name = "stdio"
    for which, fd in plan.stdio:
        os.dup2(fd, which)  # dup2 clears close-on-exec on the copy
    # Python ignores SIGPIPE; `nohup` (or a service manager) may have the caller ignore
    # SIGHUP: an ignored signal stays ignored across execve (signal(7)), and sh cannot
    # even trap it then (POSIX, "trap") - chapter 12's PID 1 reloads on SIGHUP.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ,
                signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    for path in plan.cgroup_files:
        _Step.name = f"cgroup {os.path.dirname(path)}"
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _maps_zero(text: str | None) -> bool:
    return any(ln.split()[:1] == ["0"] for ln in (text or "").splitlines())


def _become_root_inside(uid_map: str | None, gid_map: str | None) -> None:
    """In a user namespace where 0 is mapped: become its root (user_namespaces(7)).

    Our credentials did not change on entering: setresuid(0) makes us the
    namespace's root, as nsenter(1) does.  It clears the dumpable flag, which would
    make our /proc files root-owned: set it back (prctl(2)).
    """
    if _maps_zero(gid_map):
        _Step.name = "setresgid(0) inside"
        try:
            os.setgroups([])
        except OSError:
            pass  # setgroups is "deny" in this namespace: fine
        os.setresgid(0, 0, 0)
    if _maps_zero(uid_map):
        _Step.name = "setresuid(0) inside"
        os.setresuid(0, 0, 0)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 1)


def _read_self(plan: _Plan, name: str) -> str:
    """/proc/self/NAME through the /proc we started with (after setns(mnt), the path
    /proc may be a container's, which does not show us)."""
    try:
        with open(f"self/{name}", opener=lambda p, fl: os.open(p, fl, dir_fd=plan.proc_fd)) as f:
            return f.read()
    except OSError:
        return ""


def _helper(plan: _Plan) -> None:
    """H (or T itself when no second process is needed).  Never returns."""
    try:
        _Step.name = "pdeathsig"
        _die_with_parent(None, plan.caller)
        _prelude(plan)
        for kind, fd in plan.join_fds:
            _Step.name = f"setns {kind}"
            _libc.setns(fd, FLAGS[kind])
            if kind == "user":
                _become_root_inside(_read_self(plan, "uid_map"), _read_self(plan, "gid_map"))
        if plan.root_fd is not None:
            # The target's root as it sees it: setns(mnt) alone puts us at the
            # namespace's root, which is not the container's when it chroot'ed.
            _Step.name = "chroot target root"
            os.fchdir(plan.root_fd)
            os.chroot(".")
            os.chdir("/")
        if "time" in plan.new:
            _Step.name = "unshare time"
            _libc.unshare(_libc.CLONE_NEWTIME)
            if plan.offsets:
                _Step.name = "write timens_offsets"
                _write_file("/proc/self/timens_offsets", plan.offsets)
        if not plan.needs_child:
            if plan.clone_flags:
                _Step.name = "unshare " + ",".join(k for k in plan.new if k not in ("cgroup", "time"))
                _libc.unshare(plan.clone_flags)
            _target(plan, None, None)
        life_r, life_w = os.pipe()
        go_r, go_w = os.pipe()
        _Step.name = "clone " + (",".join(k for k in plan.new if k not in ("cgroup", "time")) or "(fork)")
        t = _libc.clone(plan.clone_flags, hooks=plan.fn is not None)  # H: one thread
        if t == 0:
            os.close(life_w)
            os.close(go_w)
            _target(plan, life_r, go_r)
        os.close(life_r)
        os.close(go_r)
        try:
            # T is cloned inside the cgroup (a clone past pids.max got EAGAIN above): H
            # goes back to the caller's cgroups before T goes on, so that it is not
            # counted, charged or OOM-killed there while it waits (_launch_spec.home_files).
            for fd in plan.home_fds:
                _Step.name = "leave the target's cgroup"
                os.write(fd, b"0")
                os.close(fd)
            if "user" in plan.new:
                # From outside: the writer needs CAP_SETUID/CAP_SETGID in the parent user
                # namespace; gid_map needs setgroups=deny first without CAP_SETGID.
                if plan.setgroups:
                    _Step.name = "write setgroups"
                    _write_file(f"/proc/{t}/setgroups", plan.setgroups)
                if plan.uid_map:
                    _Step.name = "write uid_map"
                    _write_file(f"/proc/{t}/uid_map", plan.uid_map)
                if plan.gid_map:
                    _Step.name = "write gid_map"
                    _write_file(f"/proc/{t}/gid_map", plan.gid_map)
        except BaseException:
            os.kill(t, signal.SIGKILL)
            raise
        _send(plan.wire_w, "pid", t)
        os.write(go_w, b"g")
        os.close(go_w)
        os.close(plan.wire_w)
        for i in (0, 1, 2):  # T holds the output pipes; EOF must not wait for us
            os.close(i)
        _relay(t)
    except BaseException as exc:  # noqa: BLE001 - report, never return into the caller's code
        _fail(plan, exc)


def _relay(pid: int) -> None:
    """Wait for T and end the same way: its exit code, or its signal."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        import resource
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _prepare_hook(plan: _Plan) -> None:
    if plan.prepare is not None:
        _Step.name = "prepare"  # the callable may name its own steps: _launch.step("...")
        plan.prepare()


def step(name: str) -> None:
    """Name the step a ``prepare`` callable is in, for the report if it fails."""
    _Step.name = name


def _readonly(plan: _Plan, root: str) -> None:
    """OCI "readonlyPaths" (e.g. /proc/sys): bind each onto itself, then remount the
    bind read-only - a bind mount takes its own flags only on remount (mount(2)).  A path
    this kernel does not have (/proc/sysrq-trigger without CONFIG_MAGIC_SYSRQ) is skipped,
    as runc does."""
    for p in plan.readonly:
        target = os.path.join(root, p.lstrip("/"))
        if not os.path.lexists(target):
            continue
        _Step.name = f"read-only {p}"
        _libc.mount(target, target, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount(None, target, None,
                    _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY | _libc.MS_REC)


def _masked(plan: _Plan, root: str) -> None:
    """OCI "maskedPaths" (/proc/kcore, /proc/keys, /sys/firmware ...): the host's /dev/null
    bound over a file, an empty read-only tmpfs over a folder, as runc does; a path the
    root does not have is skipped.  Done before the jump: /dev/null is still the host's."""
    for p in plan.masked:
        target = os.path.join(root, p.lstrip("/"))
        _Step.name = f"mask {p}"
        if os.path.isdir(target):
            _libc.mount("tmpfs", target, "tmpfs", _libc.MS_RDONLY)
        elif os.path.lexists(target):
            _libc.mount("/dev/null", target, None, _libc.MS_BIND)


def _lo_up() -> None:
    # A new network namespace has only 'lo', and it is down: SIOCSIFFLAGS with
    # IFF_UP (netdevice(7)) makes 127.0.0.1 usable.
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, req))[1]   # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))  # SIOCSIFFLAGS


def _target(plan: _Plan, lifeline: int | None, go: int | None) -> None:
    """T: the process that becomes the command (or runs the callable).  Never returns."""
    try:
        for fd in plan.home_fds:  # H's way out of the cgroup: not T's
            os.close(fd)
        if lifeline is not None:
            _Step.name = "pdeathsig"
            _die_with_parent(lifeline, None)
        if go is not None:
            if os.read(go, 1) != b"g":
                os._exit(1)  # H failed: it reports why
            os.close(go)
            if "user" in plan.new:
                _become_root_inside(plan.uid_map, plan.gid_map)
        if "cgroup" in plan.new:
            # After joining the cgroup: it becomes our "/" (cgroup_namespaces(7)).
            _Step.name = "unshare cgroup"
            _libc.unshare(_libc.CLONE_NEWCGROUP)
        _send(plan.wire_w, "ns_pid", os.getpid())
        if plan.gate_r is not None:
            _send(plan.wire_w, "gate")
            if os.read(plan.gate_r, 1) != b"g":
                os._exit(1)  # the caller gave up (its set-up failed)
            os.close(plan.gate_r)
        if "mnt" in plan.new:
            # The copied mounts keep the host's propagation: on a systemd host "/" is
            # shared and our mounts would appear there.  Make them private first
            # (mount_namespaces(7); unshare(1) does the same).
            _Step.name = "make / private"
            _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
        if plan.lo_up:
            _Step.name = "lo up"
            _lo_up()
        if plan.hostname is not None:
            _Step.name = "sethostname"
            _libc.sethostname(plan.hostname)
        proc_flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
        if plan.root is not None:
            root = plan.root
            if plan.pivot_root:
                _Step.name = "bind root"  # pivot_root(2) needs new_root to be a mount point
                _libc.mount(root, root, None, _libc.MS_BIND | _libc.MS_REC)
            if plan.mount_proc:
                # procfs shows the pid namespace of the mounting process: ours
                # (pid_namespaces(7), "/proc and PID namespaces").
                _Step.name = "mount proc"
                _libc.mount("proc", os.path.join(root, "proc"), "proc", proc_flags)
            _prepare_hook(plan)
            _readonly(plan, root)
            _masked(plan, root)
            os.chdir(root)
            if plan.pivot_root:
                _Step.name = "pivot_root"
                _libc.pivot_root(".", ".")        # the old root stacks under the new one,
                _libc.umount2(".", _libc.MNT_DETACH)  # and goes (pivot_root(2), NOTES)
            else:
                _Step.name = "chroot"
                os.chroot(".")
            os.chdir("/")
        else:
            if plan.mount_proc:
                _Step.name = "mount proc"
                _libc.mount("proc", "/proc", "proc", proc_flags)
            _prepare_hook(plan)
            _readonly(plan, "/")
            _masked(plan, "/")
        if plan.cwd:
            _Step.name = f"chdir {plan.cwd}"
            os.chdir(plan.cwd)
            if plan.root is not None and getattr(plan, "verify_cwd", True):
                # A cwd reached through a magic link (/proc/self/fd/N of an inherited
                # directory) may lie outside the new root: getcwd(3) then fails with
                # ENOENT ("(unreachable)", getcwd(2)); runc >= 1.1.12 checks the same.
                _Step.name = "check cwd"
                os.getcwd()
        _security(plan)
    except BaseException as exc:  # noqa: BLE001
        _fail(plan, exc)
    if plan.fn is not None:
        _call(plan)
    _Step.name = "exec"
    try:
        if plan.env is None:
            os.execvp(plan.argv[0], plan.argv)
        os.execvpe(plan.argv[0], plan.argv, plan.env)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, OSError):
            exc.filename = plan.argv[0]
        _fail(plan, exc, EXIT_EXEC)


def _bounding_set(last_cap: int, among: int) -> int:
    """Which capabilities of the mask ``among`` are in the calling thread's bounding set
    (one PR_CAPBSET_READ each, prctl(2): never a file of the new root, which may lie)."""
    return sum(1 << n for n in range(last_cap + 1)
               if among >> n & 1 and _libc.prctl(_libc.PR_CAPBSET_READ, n) == 1)


def reduce_capabilities(keep: int | None, drop: int = 0, *, bounding: bool = True,
                        uid: int | None = None, gid: int | None = None, groups: Sequence[int] = (),
                        ambient: int | bool = 0, last_cap: int | None = None,
                        now: bool = True) -> int:
    """Reduce the calling thread's capabilities: the lab's one way (capabilities(7)).

    Called in the launcher's children, and by ``capabilities.restrict`` (a
    preexec_fn).  ``keep``/``drop`` are masks; returns the mask kept.  In order:

    1. bounding: PR_CAPBSET_DROP what is not kept (needs CAP_SETPCAP: first); it
       bites at the next execve(2);
    2. ids: PR_SET_KEEPCAPS, then setgroups/setresgid/setresuid, so the permitted
       set survives leaving uid 0 ("Effect of user ID changes on capabilities");
    3. capset(2): effective = permitted = kept, at once;
    4. ambient (a mask, or True for all kept): raised so that a non-root program
       keeps them across execve (PR_CAP_AMBIENT_RAISE); the rest cleared.

    ``now=False`` (an engine that still has to pivot_root): effective and permitted
    stay until the next execve, which takes them down to the bounding set.
    """
    if last_cap is None:
        from . import _captable
        last_cap = _captable.last_cap()
    _Step.name = "capget"
    _, have, inh = _libc.capget()
    kept = have if keep is None else have & keep
    kept &= ~drop
    full = (1 << (last_cap + 1)) - 1
    bounded = bounding and (keep is not None or drop)
    if bounded:
        _Step.name = "drop from the bounding set"
        for n in range(last_cap + 1):
            if not kept >> n & 1:
                try:  # dropping one that is not in the set is no error (prctl(2)): no read first
                    _libc.prctl(_libc.PR_CAPBSET_DROP, n)
                except PermissionError:  # no CAP_SETPCAP: fine while it is not there anyway
                    if _libc.prctl(_libc.PR_CAPBSET_READ, n) == 1:
                        raise
    if uid is not None or gid is not None:
        _Step.name = "keepcaps"
        _libc.prctl(PR_SET_KEEPCAPS, 1)
        if gid is not None:
            _Step.name = f"setgid {gid}"
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
        if uid is not None:
            _Step.name = f"setuid {uid}"
            os.setresuid(uid, uid, uid)
    amb = kept if ambient is True else (0 if ambient is False else ambient & kept)
    _Step.name = "capset"
    want_inh = amb | (inh & kept)
    # capset(2): a new inheritable capability must be in the old inheritable or the bounding
    # set; only those wanted are read (none, for root's usual empty inheritable set).
    bnd = _bounding_set(last_cap, (want_inh & ~inh) & (kept if bounded else full))
    new_inh = want_inh & (bnd | inh)
    if now:
        _libc.capset(kept, kept, new_inh)
    else:
        eff, prm, _ = _libc.capget()
        _libc.capset(eff, prm, new_inh)
    _Step.name = "ambient"
    _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_CLEAR_ALL)
    for n in range(last_cap + 1):
        if (amb & new_inh) >> n & 1:
            _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_RAISE, n)
    return kept


def _apparmor_onexec(plan: _Plan) -> None:
    """Ask to enter an AppArmor profile at the next execve: write ``exec NAME`` to our own
    attr file, as libapparmor's aa_change_onexec(2) does for runc.  The LSM-specific
    ``attr/apparmor/exec`` (Linux 5.8+) first, then the shared ``attr/exec``; through
    the /proc we started with (after pivot_root the container may have none).  A task may
    write only its own attr files (proc(5)): this runs in the child, never in the caller
    (docs/kernel-notes.md, "AppArmor").
    """
    for name in ("self/attr/apparmor/exec", "self/attr/exec"):
        _Step.name = f"apparmor: write {name}"
        try:
            fd = os.open(name, os.O_WRONLY, dir_fd=plan.proc_fd)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, f"exec {plan.apparmor}".encode())
        finally:
            os.close(fd)
        return
    raise FileNotFoundError(2, "no attr/apparmor/exec nor attr/exec in /proc/self")


def _security(plan: _Plan) -> None:
    """AppArmor, capabilities and ids, no_new_privs, seccomp: the last steps before exec.

    The AppArmor profile is asked for first (as runc: before the capabilities drop and
    before no_new_privs, which would restrict profile transitions); the seccomp filter comes
    last: it needs no_new_privs or CAP_SYS_ADMIN (seccomp(2)), and it might refuse the calls
    of the steps before it.
    """
    if plan.apparmor is not None:
        _apparmor_onexec(plan)
    if plan.keep is not None or plan.drop or plan.ambient or plan.uid is not None \
            or plan.gid is not None:
        reduce_capabilities(plan.keep, plan.drop, bounding=plan.bounding, uid=plan.uid,
                            gid=plan.gid, groups=plan.groups, ambient=plan.ambient,
                            last_cap=plan.last_cap)
    if plan.no_new_privs:
        _Step.name = "no_new_privs"
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
    if plan.close_fds:
        _Step.name = "close fds"  # close-on-exec from 3 up: the exec closes them
        _libc.cloexec_from(3)
    if plan.fn is None:
        # The last frame before execve(2): the wire closes on exec (O_CLOEXEC), and on any
        # death too, so an EOF without this frame is a death in the set-up (an OOM kill,
        # say).  Sent before the filter, which may refuse write(2); a failure of the load
        # or of the exec still comes as an error frame, which wins.
        _send(plan.wire_w, "exec")
    if plan.seccomp is not None:
        _Step.name = "seccomp"
        _libc.seccomp_load(plan.seccomp)


PR_SET_KEEPCAPS = 8  # prctl(2): keep permitted caps across setuid() away from 0


def _call(plan: _Plan) -> None:
    """Run the callable in T and send back what it returned or raised.  Never returns."""
    # The kernel's sys.stdout sends to Jupyter through threads that do not exist in
    # a forked child: write to the fds instead.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    _send(plan.wire_w, "running")
    code = 0
    try:
        _send(plan.wire_w, "value", plan.fn())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - the traceback goes to the captured stderr
        traceback.print_exc()
        _send(plan.wire_w, "raised", exc)
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    os._exit(code)
