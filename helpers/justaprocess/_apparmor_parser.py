"""Load and unload AppArmor profiles with ``apparmor_parser`` (apparmor_parser(8)), run
through the launcher.  Below ``lab``, which unloads registered profiles (kind
``apparmor``) with :func:`remove`; the kernel's side is read by ``_apparmor``.
"""
from __future__ import annotations

import os
import shutil

from . import _apparmor, _launch_run, _launch_spec, _registry
from .errors import BadInput, LabError, MissingTool, NotSupported

_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def parser() -> str:
    tool = shutil.which("apparmor_parser", path=_SEARCH)
    if tool is None:
        raise MissingTool("apparmor_parser", "apparmor")
    return tool


def _run_parser(args: list[str], text: str) -> None:
    r = _launch_run.run(_launch_spec.Spec(argv=[parser(), *args], note="apparmor_parser"),
                        input=text, timeout=60)
    if r.returncode != 0:
        raise LabError(f"apparmor_parser {' '.join(args)} failed: "
                       f"{(r.stderr or str(r.error)).strip()}")


def load(name: str, text: str) -> None:
    """Compile and load (or replace) the profile ``text``, whose name must be ``name``: a lab name."""
    if not _registry.is_lab_name(name):
        raise BadInput(f"profile name {name!r}: the lab's profiles are named jap-<id>[-suffix]")
    reason = _apparmor.why_not()
    if reason:
        raise NotSupported(f"AppArmor: {reason}")
    _run_parser(["-r", "-K"], text)   # -r: replace if loaded; -K: no cache read or written
    if not _apparmor.present(name):
        raise LabError(f"apparmor_parser loaded no profile {name!r}: does the text name it "
                       "(`profile NAME {...}`)?")


def remove(name: str) -> None:
    """Unload a lab profile: ``apparmor_parser -R`` reads only its name from the text."""
    if not _registry.is_lab_name(name):
        raise BadInput(f"refusing to unload {name!r}: not a lab profile")
    if _apparmor.present(name):
        _run_parser(["-R"], f"profile {name} {{}}\n")
