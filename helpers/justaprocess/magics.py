"""The IPython extension: ``%load_ext justaprocess`` in every notebook's setup cell.

On load it removes what crashed kernels left behind (objects whose creator is
gone), arranges for this kernel's own objects to be removed when it exits, and
shows a ``LabError`` as one line - what is wrong and what to do - instead of a
traceback (and a check cell run before its exercise cell: "run the exercise cell
above first", not a ``NameError``).  ``%lab_cleanup`` removes this kernel's objects now; ``%%inside TARGET`` runs a cell's shell
inside a container (:func:`justaprocess.debug.inside_cell`).
"""
from __future__ import annotations

import atexit
import os
import sys

from IPython.core.magic import register_cell_magic, register_line_magic

from . import doctor, lab
from .errors import LabError

_OWNER = os.getpid()


def _on_exit() -> None:
    try:
        lab.cleanup(owner=_OWNER)
    except Exception:  # noqa: BLE001 - at exit there is nobody to tell
        pass


def _show_lab_error(shell, etype, evalue, tb, tb_offset=None):
    # Still an error output (red, and nbval sees it), but one line instead of a
    # traceback through the helpers: the message already says what to do.
    shell._showtraceback(etype, evalue, [f"{etype.__name__}: {evalue}"])
    return None


def _cell_raising(tb) -> str:
    """The source of the cell when the exception was raised by the cell's own top-level
    code (the traceback's last frame), else ''."""
    import linecache
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_name != "<module>":
        return ""
    return "".join(linecache.getlines(tb.tb_frame.f_code.co_filename))


def _show_error(shell, etype, evalue, tb, tb_offset=None):
    if issubclass(etype, LabError):
        return _show_lab_error(shell, etype, evalue, tb, tb_offset)
    # A NameError raised by a check cell itself (not deeper in the helpers): its
    # exercise cell was not run yet. Say so as a verdict, not as a traceback.
    if issubclass(etype, NameError) and (cell := _cell_raising(tb)):
        from .checks import name_error_verdict
        v = name_error_verdict(cell, getattr(evalue, "name", "") or "")
        if v is not None:
            shell._showtraceback(etype, evalue, [repr(v)])
            return None
    shell.showtraceback((etype, evalue, tb), tb_offset=tb_offset)
    return None


def cleanup_now() -> str:
    removed = lab.cleanup(owner=_OWNER)
    return f"cleanup: removed {len(removed)} object(s) of this notebook" if removed else \
        "cleanup: nothing of this notebook to remove"


def load_ipython_extension(ipython) -> None:
    # `!python -m justaprocess ...` and bash cells must find the course's Python
    # (the kernel's venv), whatever PATH JupyterLab was started with.
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if os.geteuid() == 0:
        lab.cleanup(stale=True)
        atexit.register(_on_exit)
    ipython.set_custom_exc((LabError, NameError), _show_error)

    @register_line_magic
    def lab_cleanup(line):  # noqa: ARG001
        """Remove every kernel object this notebook created (safe to run twice)."""
        print(cleanup_now())

    @register_line_magic
    def lab_doctor(line):  # noqa: ARG001
        """One line: is the lab ready?  (`python -m justaprocess doctor` for the details.)"""
        print(doctor.summary())

    @register_cell_magic
    def inside(line, cell):
        """``%%inside TARGET``: run the cell as a shell script inside a container, as
        ``docker exec`` does (debug.exec_in), streaming its output; a non-zero exit is an
        error.  TARGET: a variable (a Container, a scenario, a Target...), a PID or a runc id."""
        from . import debug
        debug.inside_cell(line, cell, ipython.user_ns)


def unload_ipython_extension(ipython) -> None:
    ipython.set_custom_exc((), None)
