"""A registered child process that dies with its parent (``lab.spawn``).

A thin wrapper of the one launcher (``_launch_run.start`` with a plain argv and
no namespaces): the process is registered, in its own session, dies with its
parent (PR_SET_PDEATHSIG), and ``stop()`` (or lab cleanup) kills it and reaps
it.  ``.popen`` keeps the part of subprocess.Popen's interface the lab uses
(stdin/stdout/stderr files, poll, wait, communicate, send_signal, returncode).

Below ``lab`` and ``cgroups`` (``Cgroup.spawn`` starts one inside a cgroup):
it needs only the launcher's caller side, which imports neither.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess  # its PIPE/DEVNULL constants and TimeoutExpired: the callers' vocabulary

from . import _launch_run
from ._launch_spec import Spec, Timeout

_STDIO = {subprocess.PIPE: "pipe", subprocess.DEVNULL: "null", None: "inherit"}


def _how(v):
    if isinstance(v, int) and v in _STDIO:
        return _STDIO[v]
    if v is None:
        return "inherit"
    return v  # an fd or a file object


class _Popen:
    """The subprocess.Popen-like view of a launcher Handle."""

    def __init__(self, handle, args, text: bool):
        self._h = handle
        self.args = args
        self.pid = handle.pid
        self._text = text
        self._files: dict[int, io.IOBase] = {}

    def _file(self, which: int):
        if which in self._files:
            return self._files[which]
        fd = self._h._pipes.pop(which, None)  # from now on read/written by the caller, not the Handle
        if fd is None:
            return None
        mode = "w" if which == 0 else "r"
        f = os.fdopen(fd, mode if self._text else mode + "b", buffering=-1 if self._text else 0)
        self._files[which] = f
        return f

    stdin = property(lambda self: self._file(0))
    stdout = property(lambda self: self._file(1))
    stderr = property(lambda self: self._file(2))

    @property
    def returncode(self) -> int | None:
        return self._h.result.returncode if self._h.result is not None else None

    def poll(self) -> int | None:
        if self._h.result is None and not self._h.alive():
            self.wait()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            self._h.wait(timeout)
        except Timeout:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def communicate(self, input=None, timeout: float | None = None):
        try:
            self._h.communicate(input, timeout)
        except Timeout:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        out = [bytes(self._h._bufs[w]) if w not in self._files else None for w in (1, 2)]
        if self._text:
            out = [o.decode(errors="replace") if o is not None else None for o in out]
        return out[0], out[1]

    def send_signal(self, sig: int) -> None:
        self._h.kill(sig)

    def kill(self) -> None:
        self._h.kill(signal.SIGKILL)

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass


class LabProcess:
    """A registered child process (started by the one launcher).

    It runs in its own session, dies with its parent, and ``stop()`` (or lab
    cleanup) kills it and reaps it.  ``cgroup``: cgroup directories (or a
    ``Cgroup``) it joins before exec; ``preexec``: a callable run in the child
    before exec (the launcher's ``prepare``); ``new``: namespaces it gets of its own
    (``"mnt"``: a private mount namespace, for ``preexec`` to mount in).
    """

    def __init__(self, argv: list[str], *, note: str = "", preexec=None, cgroup=None,
                 stdin=subprocess.DEVNULL, stdout=None, stderr=None, env=None, cwd=None,
                 text: bool = False, pass_fds=(), new=()):
        # pass_fds: the launcher passes every inheritable fd; the callers' fds are made so.
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        spec = Spec(argv=list(argv), cgroup=cgroup, stdin=_how(stdin), stdout=_how(stdout),
                    stderr=_how(stderr), env=env, cwd=cwd, prepare=preexec, new=new,
                    note=note or str(argv[0]))
        self._handle = _launch_run.start(spec)
        if self._handle.error is not None:  # e.g. exec: ENOENT - reap it, then say so
            self._handle.wait()
            raise self._handle.error
        self.popen = _Popen(self._handle, list(argv), text)
        self.pid = self._handle.pid
        # Its registry entry (None when it exited before it could be registered).
        self.entry = self._handle._entries[0] if self._handle._entries else None

    def alive(self) -> bool:
        return self._handle.alive()

    def stop(self, timeout: float = 3.0) -> int | None:
        if self._handle.result is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._handle.stop(timeout)
        self.popen.close()
        return self.popen.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<LabProcess pid={self.pid} {state}>"


def spawn(argv: list[str], **kw) -> LabProcess:
    """Start a registered child process (see :class:`LabProcess`)."""
    return LabProcess(argv, **kw)
