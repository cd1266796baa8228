"""The step-by-step container of chapter 05: a child that takes the engine's steps on command.

The notebook's kernel never changes its own namespaces: it tells this child what
to do next (``step("setup_mounts", root)``) and looks at it from outside
(/proc/PID/...) after each step.  The child is started by the lab's launcher.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
from typing import Sequence

from . import _launch, _libc, lab
from . import rootfs as _rootfs
from .container_steps import (create_namespaces, join_cgroup, jump_chroot, jump_pivot_root,
                              resolve, setup_mounts, setup_security)
from .errors import BadInput, LabError, NeedsPrivilege



class ContainerError(LabError):
    """A step of the container's set-up failed; the message names the step."""


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


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
                        child = _libc.fork_single_threaded()
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
                    os.execve(resolve(argv[0], env), argv, env)
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
        mine = self._sock

        def serve():
            mine.close()
            _serve(theirs)
        self._h = _launch.start(_launch.Spec(fn=serve, stdout="null", stderr="null",
                                             note="stepper"))
        theirs.close()
        self._first = self.pid = self._h.pid
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
             timeout: float = 10) -> _launch.Result:
        """The last step: execve(argv); waits for it (on its pidfd) and returns its output."""
        outs = [os.memfd_create(f"jap-step-{s}") for s in ("out", "err")]
        null = os.open(os.devnull, os.O_RDONLY)
        env = {"PATH": _rootfs.PATH, **(env or {})}
        _send(self._cmd_w, ("exec", (list(argv), env), {}))
        socket.send_fds(self._sock, [b"f"], [null, *outs])
        os.close(null)
        try:  # the first process (ours) exits once its PID 1 child has
            status_code = self._h.wait(timeout).returncode
        except _launch.Timeout:
            status_code = self._h.stop().returncode
        texts = []
        for fd in outs:
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(fd, "rb") as f:
                texts.append(f.read().decode(errors="replace"))
        msg = _recv(self._res_r) if self._sock else None  # an exec failure, or PID 1's end
        pid1 = self.pid
        self._close()
        if msg and msg[0] == "error":
            raise ContainerError(msg[1])
        if msg and msg[0] == "exited":
            status_code = os.waitstatus_to_exitcode(msg[1])
        return _launch.Result(status_code, *texts, host_pid=pid1, label=" ".join(argv))

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
        if getattr(self, "_h", None) is not None:
            self._h.stop()
        self._close()


def children_of(pid: int) -> list[int]:
    """The PIDs of a process's children (from /proc/PID/task/*/children, proc(5))."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


