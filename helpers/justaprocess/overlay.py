"""overlayfs: one image shared read-only by many containers, each writing to a layer of its own.

Chapter 05's engine copies the image for every container (``tar -x``).  Docker and podman
do not: they stack the image's layers as the read-only *lower* directories of an overlayfs
mount and give each container its own *upper* directory (plus a *work* directory on the same
filesystem); the merged view is the container's root (the kernel's
Documentation/filesystems/overlayfs.rst; mount(8), "Mount options for overlay").  A file
the container changes is first copied up into its upper directory; a file it deletes leaves
a *whiteout* there (a character device 0:0).  The lower directory is never written.

:class:`Layers` does that for the lab: ``run(name, argv)`` starts a process in a new mount
namespace whose root is an overlay of the shared lower directory and ``name``'s own upper
one.  The overlay is mounted inside that namespace only, so it goes with the process; the
upper directories stay, in a registered lab folder, for the host to look at, until
``remove()``.
"""
from __future__ import annotations

import os
from typing import Sequence

from . import _launch, _libc, lab
from . import rootfs as _rootfs
from .errors import BadInput, NeedsPrivilege


class Layers:
    """A shared lower directory (default: the busybox rootfs) and one upper layer per name."""

    def __init__(self, lower: str | None = None):
        self.lower = getattr(lower, "path", lower)
        self.name = lab.name("ovl")
        self.dir = os.path.join(lab.run_dir(), self.name)
        self.entry: lab.Entry | None = None

    def create(self) -> "Layers":
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "mounting overlayfs")
        if self.lower is None:
            self.lower = _rootfs.build("busybox").path
        if not isinstance(self.lower, str) or not os.path.isdir(os.path.join(self.lower, "bin")):
            raise BadInput(f"{self.lower!r}: the lower layer is a root filesystem folder "
                           "(with /bin), e.g. rootfs.build('busybox').path")
        self.entry = lab.register("dir", self.dir, note="overlay layers (chapter 06)")
        os.makedirs(self.dir)
        return self

    def _paths(self, name: str) -> dict[str, str]:
        if not isinstance(name, str) or not name.isidentifier():
            raise BadInput(f"layer name {name!r}: letters, digits and _ (e.g. 'a')")
        base = os.path.join(self.dir, name)
        return {k: os.path.join(base, k) for k in ("upper", "work", "merged")}

    def upper(self, name: str) -> str:
        """``name``'s upper directory, as the host sees it: what that container wrote."""
        return self._paths(name)["upper"]

    def run(self, name: str, argv: Sequence[str], *, timeout: float = 30) -> _launch.Result:
        """Run ``argv`` with the overlay of the lower layer and ``name``'s upper one as ``/``."""
        if self.entry is None:
            raise BadInput("Layers: call create() first (or use it in a `with` block)")
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise BadInput(f"argv is a list of strings like ['ls', '/'], not {argv!r}")
        p = self._paths(name)
        for d in p.values():
            os.makedirs(d, exist_ok=True)
        options = f"lowerdir={self.lower},upperdir={p['upper']},workdir={p['work']}"

        def mount_overlay() -> None:   # in the new mount namespace, before the jump into it
            _launch.step("mount overlay")
            _libc.mount("overlay", p["merged"], "overlay", 0, options)

        spec = _launch.Spec(argv=list(argv), new=("mnt",), root=p["merged"], prepare=mount_overlay,
                            env={"PATH": "/bin:/usr/bin:/sbin:/usr/sbin"}, cgroup="bounded",
                            note=f"overlay container {name} (chapter 06)")
        return _launch.run(spec, timeout=timeout)

    def remove(self) -> None:
        if self.entry is not None:
            lab.remove(self.entry)
            self.entry = None

    def __enter__(self) -> "Layers":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()
