"""AppArmor profiles for the lab's processes and containers (Documentation/admin-guide/LSM/apparmor.rst).

An LSM decides *after* the permission bits and the capabilities: a root process with
every capability is still refused what its profile does not allow.  Engines load a
profile (Docker's ``docker-default``, podman's ``containers-default-*``) and start each
container in it: runc writes ``exec PROFILE`` to ``/proc/self/attr/apparmor/exec`` just
before its execve (OCI ``process.apparmorProfile``).  The lab does the same through the
launcher (``Spec(apparmor=NAME)``, ``Container(apparmor=NAME)``).

>>> p = apparmor.deny_writes(["/etc/**"]).load()        # doctest: +SKIP
>>> c = container.Container([...], apparmor=p.name)      # doctest: +SKIP
>>> apparmor.current(c.pid)                              # 'jap-1a2b3c-aa (enforce)'
"""
from __future__ import annotations

import os
from typing import Iterable

from . import _apparmor, _apparmor_parser, _launch_run, _launch_spec, lab
from ._apparmor import loaded, why_not  # noqa: F401 - apparmor.why_not(), apparmor.loaded()
from .errors import BadInput, LabError, NoSuchProcess

# Everything allowed by class (apparmor.d(5) "file", "capability", "network", ...), so
# that only the deny rules added to it refuse anything: a demo profile, not a policy.
ALLOW_ALL = ("file", "capability", "network", "signal", "ptrace", "unix", "mount", "umount",
             "pivot_root")


class Profile:
    """A lab AppArmor profile: the text is made here, ``load()`` registers then loads it."""

    def __init__(self, rules: Iterable[str], name: str | None = None):
        self.name = name or lab.name("aa")
        if not lab.is_lab_name(self.name):
            raise BadInput(f"profile name {self.name!r}: lab names are jap-<id>[-suffix]")
        self.rules = tuple(rules)
        for r in self.rules:
            if not isinstance(r, str) or "\n" in r or "{" in r or "}" in r:
                raise BadInput(f"rule {r!r}: one apparmor.d(5) rule per string, without braces")
        self.entry = None

    @property
    def text(self) -> str:
        # attach_disconnected: a container's paths after pivot_root are outside the
        # profile's view of the root; runc's and podman's default profiles set it too.
        body = "".join(f"  {r.rstrip(',')},\n" for r in self.rules)
        return f"profile {self.name} flags=(attach_disconnected,mediate_deleted) {{\n{body}}}\n"

    def check(self) -> str:
        """Compile the text without loading it (``apparmor_parser -Q``): works without the LSM."""
        r = _launch_run.run(_launch_spec.Spec(argv=[_apparmor_parser.parser(), "-Q", "-K"],
                                              note="apparmor_parser -Q"), input=self.text, timeout=60)
        if r.returncode != 0:
            raise BadInput(f"apparmor_parser refuses the profile: {(r.stderr or str(r.error)).strip()}")
        return self.text

    def load(self) -> "Profile":
        if self.entry is None:
            self.entry = lab.register("apparmor", self.name, note="lab AppArmor profile")
        try:
            _apparmor_parser.load(self.name, self.text)
        except BaseException:
            lab.remove(self.entry)
            self.entry = None
            raise
        return self

    @property
    def mode(self) -> str | None:
        """'enforce' or 'complain' while loaded, else None."""
        return _apparmor.loaded().get(self.name)

    def remove(self) -> None:
        if self.entry is not None:
            lab.remove(self.entry)   # apparmor_parser -R, then checks it is gone
            self.entry = None

    def __enter__(self) -> "Profile":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<Profile {self.name} {self.mode or 'not loaded'}: {len(self.rules)} rules>"


def deny_writes(paths: Iterable[str], name: str | None = None) -> Profile:
    """A profile that allows everything but writing to ``paths`` (apparmor.d(5) globs)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    for p in paths:
        if not isinstance(p, str) or not p.startswith("/"):
            raise BadInput(f"path {p!r}: an absolute path or glob, e.g. '/etc/**'")
    return Profile([*ALLOW_ALL, *(f"deny {p} w" for p in paths)], name=name)


def current(pid: int | str = "self") -> str:
    """The confinement of a process: ``/proc/PID/attr/apparmor/current`` (Linux 5.8+), else
    ``attr/current``: ``unconfined``, or ``NAME (enforce)`` (proc(5))."""
    for f in (f"/proc/{pid}/attr/apparmor/current", f"/proc/{pid}/attr/current"):
        try:
            with open(f) as fh:
                return fh.read().strip("\x00\n ")
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise NoSuchProcess(pid) from None
        except OSError as exc:   # EINVAL: no LSM owns the file
            raise LabError(f"cannot read {f}: {exc.strerror} - {why_not() or 'no AppArmor'}") from exc
    raise LabError(f"no attr/current for {pid}: {why_not() or 'no AppArmor'}")
