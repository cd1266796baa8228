"""A registered child process that dies with its parent (``lab.spawn``).

Below ``lab`` and ``cgroups`` (``Cgroup.spawn`` starts one inside a cgroup):
it needs only the registry and prctl(2).
"""
from __future__ import annotations

import os
import signal
import subprocess

from . import _libc
from ._registry import register, unregister


def _child_setup() -> None:
    # Die with the process that started us (prctl(2) PR_SET_PDEATHSIG): a killed
    # kernel takes its demo processes with it.
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


class LabProcess:
    """A registered child process (a subprocess.Popen underneath).

    It runs in its own session, dies with its parent, and ``stop()`` (or lab
    cleanup) kills it and reaps it.
    """

    def __init__(self, argv: list[str], *, note: str = "", preexec=None, **popen):
        def setup():
            _child_setup()
            if preexec:
                preexec()

        popen.setdefault("stdin", subprocess.DEVNULL)
        self.popen = subprocess.Popen(argv, preexec_fn=setup, start_new_session=True, **popen)
        self.pid = self.popen.pid
        self.entry = register("process", f"pid-{self.pid}", pid=self.pid, note=note or argv[0])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 3.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout)
        unregister(self.entry)
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
