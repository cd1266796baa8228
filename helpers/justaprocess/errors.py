"""The lab's small exception hierarchy.

Every error a learner can meet says what is wrong *and* what to do. Code that
catches ``LabError`` (the CLI, the IPython extension) prints the message alone,
without a traceback.  Modelled on psutil's ``_common.wrap_exceptions``: an
errno from the kernel is translated once, where we know what it means.
"""
from __future__ import annotations

import errno as _errno
import functools


class LabError(Exception):
    """Base class: something the learner or the machine must change."""


class NeedsPrivilege(LabError, PermissionError):
    """The kernel refused for lack of root or of one capability."""

    def __init__(self, what: str = "root", doing: str = ""):
        self.what = what
        msg = f"needs {what}: run the lab as root in its VM"
        if doing:
            msg = f"{doing} {msg}"
        super().__init__(_errno.EPERM, msg)

    def __str__(self) -> str:  # PermissionError would print "[Errno 1] ..."
        return self.strerror


class MissingTool(LabError, FileNotFoundError):
    """A command-line tool the lab uses is not installed."""

    def __init__(self, tool: str, package: str | None = None):
        self.tool = tool
        pkg = package or tool
        super().__init__(
            _errno.ENOENT,
            f"the tool {tool!r} is not installed: run `make lab` (or "
            f"`apt-get install {pkg}`) as root",
        )

    def __str__(self) -> str:
        return self.strerror


class BadInput(LabError, ValueError):
    """An argument the lab cannot use (a size like '64Q', an unknown name)."""


class NotSupported(LabError):
    """The machine lacks a feature: a cgroup layout, a controller, a namespace kind."""


class StillPresent(LabError):
    """An object of the lab that its removal did not take away."""


class NoSuchProcess(LabError, ProcessLookupError):
    """A PID that is not (or no longer) alive."""

    def __init__(self, pid: int):
        self.pid = pid
        super().__init__(_errno.ESRCH, f"no process with PID {pid}: has it exited? "
                                       "(`ps -e` lists the live ones)")

    def __str__(self) -> str:
        return self.strerror


def needs(what: str, doing: str = ""):
    """Decorator: turn EPERM/EACCES into ``NeedsPrivilege(what)``.

    ``what`` names the capability the call needs, e.g. ``"CAP_SYS_ADMIN"``
    (see capabilities(7) for which call needs which).
    """

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NeedsPrivilege:
                raise
            except PermissionError as exc:
                raise NeedsPrivilege(what, doing or f"{fn.__name__}():") from exc

        return wrapper

    return deco
