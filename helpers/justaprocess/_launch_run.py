"""The launcher's caller side: :func:`start` forks (or clones) the children and
returns a :class:`Handle`; :func:`run` waits for the :class:`Result`.

Part of the one launcher (``_launch``, which re-exports all of it; call that):
the process layout and the wire format are described in ``_launch``'s docstring.
This is the one module of the package, with the child side ``_launch_child``,
that forks.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import select
import signal
import sys
import threading
import time

from . import _libc, _registry, proc
from ._launch_child import _die_with_parent, _fail, _helper, _prelude, _Step, _target
from ._launch_spec import (Result, Spec, StepFailed, Timeout, _cgroup_dirs, _discard, _Plan, _prepare,
                           home_files)
from .errors import BadInput, LabError, NoSuchProcess

# --- the caller's side ----------------------------------------------------------------------

def _direct_ok(plan: _Plan) -> bool:
    """Skip H: clone T straight from the caller (one process less, as runc does).

    Only from a single-threaded caller (clone without CPython's thread-lock resets
    is safe only there), when nothing is joined (setns would move the caller) and
    no new user or time namespace needs someone outside writing for T.
    """
    return (threading.active_count() == 1 and not plan.join_fds and plan.root_fd is None
            and not {"user", "time"} & set(plan.new)
            and "clone" in _libc.SYSCALLS.get(_libc.MACHINE, {}))


def _open_home(plan: _Plan) -> None:
    """Open, in the caller, the files that take H back to the caller's cgroups once T is
    cloned (home_files).  Opened here: the kernel checks a move with the credentials and
    cgroup namespace of whoever opened the file (kernel/cgroup/cgroup.c, __cgroup_procs_write;
    cgroup-v1.c, __cgroup1_procs_write), and H may have joined a user or mount namespace."""
    for path in home_files(plan.cgroup_files):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        plan.owned_fds.append(fd)
        plan.home_fds.append(fd)


def _flush_std() -> None:
    # Flush the caller's buffers, or the child would write out a copy of them.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def start(spec: Spec, *, start_timeout: float = 10.0, resolve=_cgroup_dirs) -> "Handle":
    """Start the process of ``spec``; return once it has exec'd (or its callable runs), or failed.

    A failed set-up step does not raise here: ``handle.error`` (and the Result's
    ``error``) is a :class:`StepFailed`; ``handle.check()`` raises it.
    """
    plan, parent_side = _prepare(spec, resolve)
    wire_r, plan.wire_w = os.pipe2(os.O_CLOEXEC)
    _flush_std()
    direct = _direct_ok(plan)
    lifeline = None
    try:
        first = -1
        if direct:
            life_r, lifeline = os.pipe2(os.O_CLOEXEC)
            try:
                # A child that execs skips the interpreter's fork hooks (_libc.clone).
                first = _libc.clone(plan.clone_flags, hooks=plan.fn is not None)
            except OSError:  # refused: the helper way repeats it and reports the step
                os.close(life_r)
                os.close(lifeline)
                lifeline, direct = None, False
            if first == 0:
                os.close(lifeline)
                try:
                    _Step.name = "pdeathsig"
                    _die_with_parent(life_r, None)
                    _prelude(plan)
                except BaseException as exc:  # noqa: BLE001
                    _fail(plan, exc)
                _target(plan, None, None)
            if direct:
                os.close(life_r)
        if not direct:
            if plan.needs_child and plan.cgroup_files:
                _open_home(plan)
            first = os.fork()
            if first == 0:
                _helper(plan)
    except BaseException:
        os.close(wire_r)
        os.close(plan.wire_w)
        if lifeline is not None:
            os.close(lifeline)
        _discard(plan, parent_side)
        raise
    os.close(plan.wire_w)
    h = Handle(first, plan, wire_r, parent_side, spec.note or plan.label)
    try:
        h._ready(time.monotonic() + start_timeout)
    finally:
        if lifeline is not None:
            os.close(lifeline)  # T checked it before its first frame: no longer needed
    return h


class Handle:
    """A started process: registered with the lab, dies with its caller.

    ``pid`` is the process that runs the command (PID 1 of a new pid namespace,
    not the helper that made it); ``ns_pid`` its PID there; ``pidfd`` a pidfd of it
    (pidfd_open(2)).  :meth:`wait`/:meth:`communicate` give the :class:`Result`.
    """

    def __init__(self, first: int, plan: _Plan, wire: int, pipes: dict, note: str):
        self._first = first
        self._plan = plan
        self._wire = wire
        self._pipes = dict(pipes)            # 0: stdin writer, 1/2: readers
        self._bufs = {1: bytearray(), 2: bytearray(), "wire": bytearray()}
        self._wait_fd = os.pidfd_open(first)
        self.pid = first
        self.ns_pid = first
        self.pidfd: int | None = self._wait_fd
        self.note = note
        self.label = plan.label
        self.kinds = plan.new
        self.error: StepFailed | None = None
        self.result: Result | None = None
        self._value = self._exception = None
        self._exec_next = False  # its last frame before execve(2) came
        self._t_known = False
        # Registered once it runs (end of _ready), not now: it dies with us meanwhile
        # (PR_SET_PDEATHSIG), and reading its /proc/PID/stat for the registry while it
        # sets itself up waits on its exec (the kernel's exec_update_lock) and slows it.
        self._entries: list = []
        self._first_known = False
        for fd in plan.owned_fds:  # the child's copies: ours are not needed any more
            os.close(fd)
        plan.owned_fds = []

    # -- start-up ------------------------------------------------------------------------
    def _frames(self) -> list:
        buf, out = self._bufs["wire"], []
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + n:
                break
            try:
                out.append(pickle.loads(bytes(buf[4:4 + n])))
            except Exception as exc:  # noqa: BLE001 - e.g. an exception class that will not rebuild
                out.append(("raised", RuntimeError(f"(could not unpickle what the child sent: {exc!r})")))
            del buf[:4 + n]
        return out

    def _take(self, frames: list) -> bool:
        """Apply wire frames; True once the process runs (a callable said so)."""
        running = False
        for kind, payload in frames:
            if kind == "pid":
                self.pid = payload
            elif kind == "ns_pid":
                self.ns_pid = payload
            elif kind == "error" and self.error is None:
                self.error = StepFailed(*payload)
                if self.error.step == "exec" and self.error.errno:
                    # What execve(2) raised, as a callable's exception would come back.
                    no = self.error.errno
                    self._exception = OSError(no, os.strerror(no))  # (the program: error.detail)
            elif kind == "exec":
                self._exec_next = True
            elif kind in ("running", "gate"):
                running = True
            elif kind == "value":
                self._value = payload
            elif kind == "raised":
                self._exception = payload
        return running

    def _ready(self, deadline: float) -> None:
        """Read the wire until EOF (exec'd, or gone), 'running' or an error.

        EOF after the "exec" frame is the exec (the wire is close-on-exec); EOF without
        it, and without an error, is a death during the set-up: :meth:`_died_in_setup`.
        """
        while self._wire is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._wire], [], [], left)[0]:
                self.kill()
                self.wait()
                raise Timeout(f"{self.label}: its set-up did not finish within the start timeout "
                              "- it was killed (is a cgroup frozen, or a target stopped?)")
            chunk = os.read(self._wire, 65536)
            if not chunk:
                os.close(self._wire)
                self._wire = None
                if not self._exec_next and self.error is None:
                    self._died_in_setup(deadline)
                break
            self._bufs["wire"] += chunk
            if self._take(self._frames()) or self.error is not None:
                break
        # The registry is root's: an unprivileged caller's processes (a tool the doctor
        # runs as a plain user) are not registered; they die with their caller all the same.
        registered = os.geteuid() == 0
        if not self._first_known:
            self._first_known = True
            if registered:
                self._register(self._first)
        if self.pid != self._first and not self._t_known:
            self._t_known = True
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:
                self.pidfd = None  # already gone
            if registered:
                self._register(self.pid)

    def _died_in_setup(self, deadline: float) -> None:
        """It ended before its exec without reporting a failed step: say how it ended
        (an OOM kill in its set-up: docs/kernel-notes.md, "cgroups")."""
        how = "ended before its exec"
        hint = "run it again; if it repeats, look at `dmesg` for what ended it"
        if select.select([self._wait_fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                info = os.waitid(os.P_PIDFD, self._wait_fd, os.WEXITED | os.WNOWAIT)  # not reaped
            except ChildProcessError:
                info = None  # reaped by someone else: how it ended is gone with it
            if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                sig = signal.Signals(info.si_status)
                how = f"killed by {sig.name} before its exec"
                if sig == signal.SIGKILL:
                    hint = ("most often the OOM killer: until its exec the process is a copy of "
                            "the caller, and the pages it touches are charged to the cgroup it "
                            "joined (memory.events counts oom_kill; `dmesg` names the victim). "
                            "Give that cgroup more memory, or start it under a roomier limit "
                            "and lower it once it runs (Cgroup.update)")
            elif info is not None:
                how = f"exited with status {info.si_status} before its exec"
        self.error = StepFailed("set-up", 0, how, hint)

    def _register(self, pid: int) -> None:
        try:
            self._entries.append(_registry.register("process", f"pid-{pid}", pid=pid,
                                                    note=self.note[:80]))
        except (NoSuchProcess, FileNotFoundError, ProcessLookupError):
            pass  # already exited (a zombie until reaped, or gone): nothing to remove

    def go(self, start_timeout: float = 10.0) -> "Handle":
        """Open the gate (Spec.gate): the process goes on to exec; returns once it has."""
        fd = self._pipes.pop("gate", None)
        if fd is None:
            raise BadInput("go(): this process has no gate (Spec(gate=True)), or it is open")
        try:
            os.write(fd, b"g")
        except BrokenPipeError:
            pass  # it failed before the gate: its error is on the wire
        os.close(fd)
        self._ready(time.monotonic() + start_timeout)
        return self

    # -- running -----------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.result is None and not select.select([self._wait_fd], [], [], 0)[0]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process through its pidfd (never a recycled PID).

        When a helper made it, the helper is left to reap it and end the same way
        (killing both at once would leave it a zombie for whoever adopts it: in a
        joined pid namespace, that namespace's PID 1).  The helper itself is
        signalled only while there is no process of its own yet, or none left.
        """
        if self.result is not None:
            return
        t = self.pidfd if self.pidfd is not None and self.pidfd != self._wait_fd else None
        targets = [t] if t is not None and not select.select([t], [], [], 0)[0] else [self._wait_fd]
        for fd in targets:
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                pass

    def check(self) -> "Handle":
        if self.error is not None:
            raise self.error
        return self

    def wait(self, timeout: float | None = None) -> Result:
        """Wait for the end (reading its output meanwhile); raises :class:`Timeout`, leaving
        it running, when ``timeout`` passes first."""
        return self.communicate(None, timeout)

    def communicate(self, input: bytes | str | None = None, timeout: float | None = None) -> Result:
        if self.result is not None:
            return self.result
        deadline = None if timeout is None else time.monotonic() + timeout
        data = memoryview(input.encode() if isinstance(input, str) else bytes(input or b""))
        if 0 in self._pipes and not data:
            os.close(self._pipes.pop(0))
        poll = select.poll()
        fds = {self._wait_fd: "exit"}
        if self.pidfd is not None and self.pidfd != self._wait_fd:
            fds[self.pidfd] = "end"  # T, when a helper made it: gone too before we return
        for which in (1, 2):
            if which in self._pipes:
                fds[self._pipes[which]] = which
        if self._wire is not None:
            fds[self._wire] = "wire"
        if 0 in self._pipes:
            fds[self._pipes[0]] = 0
        for fd, what in fds.items():
            poll.register(fd, select.POLLOUT if what == 0 else select.POLLIN)
        exited = False
        while not exited or any(w in (1, 2, "wire", "end") for w in fds.values()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if not exited:
                    raise Timeout(f"{self.label} did not finish within {timeout} s")
                break  # it exited; something it left behind holds the output open
            if exited and not self._plan.kill_group:
                left = 0  # what it left behind keeps running: take what is there, no more
            events = poll.poll(None if left is None else max(0, int(left * 1000)))
            if exited and not self._plan.kill_group and not events:
                end = [fd for fd, w in fds.items() if w == "end"]
                if end:  # T itself (killed with its helper) is on its way out: wait for that
                    select.select(end, [], [], None if deadline is None
                                  else max(0.0, deadline - time.monotonic()))
                break
            for fd, ev in events:
                what = fds.get(fd)
                if what == "exit":
                    exited = True
                    poll.unregister(fd)
                    del fds[fd]
                    if self._plan.kill_group:  # what it left in its process group goes too
                        try:
                            os.killpg(self._first, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
                elif what == "end":
                    poll.unregister(fd)
                    del fds[fd]
                elif what == 0:
                    try:
                        n = os.write(fd, data[:65536])
                    except BrokenPipeError:
                        n = len(data)
                    data = data[n:]
                    if not data or ev & (select.POLLERR | select.POLLHUP):
                        poll.unregister(fd)
                        del fds[fd]
                        os.close(self._pipes.pop(0))
                else:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        self._bufs[what] += chunk
                    else:
                        poll.unregister(fd)
                        del fds[fd]
        return self._finish()

    def _finish(self) -> Result:
        if self._wire is not None:
            self._take(self._frames())
        final = {}
        if self.pid == self._first:
            # Exited, not reaped: /proc/PID/status still shows its credentials (proc(5)).
            try:
                os.waitid(os.P_PIDFD, self._wait_fd, os.WEXITED | os.WNOWAIT)
                final = proc.status(self._first)
            except (OSError, LabError):
                final = {}
        try:
            _, status = os.waitpid(self._first, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = None  # someone else reaped it
        self._take(self._frames())
        self.result = Result(code, self._bufs[1].decode(errors="replace"),
                             self._bufs[2].decode(errors="replace"), self.pid, self.ns_pid,
                             self._value, self._exception, self.error, final, self.label,
                             self.kinds)
        self._close()
        return self.result

    def _close(self) -> None:
        for fd in [self._wire, *self._pipes.values(), self._wait_fd,
                   self.pidfd if self.pidfd != self._wait_fd else None]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wire, self._pipes, self.pidfd = None, {}, None
        for e in self._entries:
            _registry.unregister(e)
        self._entries = []
        if self._plan.bounded is not None:
            self._plan.bounded.remove()
            self._plan.bounded = None

    def stop(self, timeout: float | None = 5.0) -> Result:
        """Kill it (SIGKILL: PID 1 of a namespace ignores signals it has no handler for,
        pid_namespaces(7)) and collect its Result.  Safe to call twice."""
        if self.result is None:
            self.kill()
        return self.wait(timeout)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.result.returncode}" if self.result \
            else "exited"
        return f"<Handle {self.label!r} pid={self.pid} ns_pid={self.ns_pid} {state}>"


def run(spec: Spec, input: bytes | str | None = None, timeout: float | None = 30.0,
        start_timeout: float = 10.0, resolve=_cgroup_dirs) -> Result:
    """start() and wait: the Result.  Past ``timeout`` the process is killed and
    :class:`Timeout` raised (a lab error saying what to do)."""
    if input is not None and spec.stdin is None:
        spec = dataclasses.replace(spec, stdin="pipe")
    h = start(spec, start_timeout=start_timeout, resolve=resolve)
    try:
        return h.communicate(input, timeout)
    except Timeout:
        h.stop(None)
        exc = Timeout(f"{h.label} did not finish within {timeout} s: it was killed. Pass a "
                      "larger timeout=, or start() it for a long-running process")
        exc.result = h.result  # what it wrote until then; host_pid names what was killed
        raise exc from None
    except BaseException:
        h.stop(None)
        raise
