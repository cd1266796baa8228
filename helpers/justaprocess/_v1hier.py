"""A named cgroup v1 hierarchy of the lab's (``name=jap-<id>``, chapter 07's release_agent):
is it there, and remove it.  Below ``lab`` (its cleanup removes registered ones).

A hierarchy exists, mounted or not, while any line of /proc/self/cgroup names it
(cgroups(7)).  The kernel destroys a v1 hierarchy when it is unmounted with no child
cgroup (cgroup_kill_sb), but a child removed right before the unmount may still
count (its release is deferred): the hierarchy then lives on, unmounted.  So
:func:`sweep` mounts it again in a private mount namespace, removes its child
cgroups and unmounts, until it is gone.  Nothing of the sweep is visible outside
its own mount namespace.  See docs/kernel-notes.md, "Escapes and user namespaces".
"""
from __future__ import annotations

import os
import time

from . import _launch_run, _libc, _registry
from ._launch_spec import Spec
from .errors import BadInput, LabError


def exists(name: str) -> bool:
    """Does the v1 hierarchy ``name=<name>`` exist?"""
    with open("/proc/self/cgroup") as f:
        return any(line.split(":", 2)[1] == f"name={name}" for line in f if line.count(":") >= 2)


def lab_hierarchies() -> list[str]:
    """The lab-named v1 hierarchies that exist (``name=jap-<id>``)."""
    with open("/proc/self/cgroup") as f:
        names = [line.split(":", 2)[1] for line in f if line.count(":") >= 2]
    return sorted(n[5:] for n in names if n.startswith("name=") and _registry.is_lab_name(n[5:]))


def _sweep_once(name: str) -> None:
    where = _registry.run_dir()

    def sweep() -> None:  # in a private mount namespace: a tmpfs over the run folder, ours alone
        _libc.mount("tmpfs", where, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC, "size=16k")
        mnt = os.path.join(where, "h")
        os.mkdir(mnt)
        _libc.mount("cgroup", mnt, "cgroup", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC,
                    f"none,name={name}")
        try:
            for top, _, _ in os.walk(mnt, topdown=False):
                if top != mnt:
                    os.rmdir(top)
        finally:
            _libc.umount2(mnt, _libc.MNT_DETACH)

    os.makedirs(where, exist_ok=True)
    r = _launch_run.run(Spec(fn=sweep, new=("mnt",), note=f"sweep the v1 hierarchy name={name}"),
                        timeout=10)
    if r.error is not None:
        raise r.error
    if r.exception is not None:
        raise r.exception


def sweep(name: str, timeout: float = 5.0) -> None:
    """Remove the lab's hierarchy ``name=<name>`` (see the module's text); safe when absent.
    There is no event to wait on: a short pause between rounds, at most ``timeout`` s."""
    if not _registry.is_lab_name(name):
        raise BadInput(f"hierarchy {name!r}: a lab name (jap-<id>); the host's are never touched")
    deadline = time.monotonic() + timeout
    while exists(name):
        if time.monotonic() > deadline:
            raise LabError(f"the v1 hierarchy name={name} is still there after {timeout:g} s: "
                           "run the cleanup again")
        _sweep_once(name)
        time.sleep(0.1)
