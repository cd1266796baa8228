"""Python for an unprivileged uid, wherever the course's checkout lies.

The lab runs from the checkout's virtualenv (``.venv/bin/python``, the
package under ``helpers/``).  A demo or test that runs Python as uid 65534
(``nobody``) cannot use either when the checkout sits in a folder only root
may enter - root's home is mode 0700 on Debian and Ubuntu: execve(2) and
open(2) need search (x) permission on every directory of the path
(path_resolution(7)), and the venv's interpreter is a symbolic link into that
folder.

So the lab hands such a process what it needs, under a path anyone may read:

- :func:`python` - the interpreter itself (the venv's base, e.g.
  /usr/bin/python3.11), not the venv's link to it;
- :func:`path` - a read-only copy of the ``justaprocess`` package and the
  packages of its dependencies (psutil, pyroute2, ...: :func:`packages`) under
  the lab's cache folder, for ``PYTHONPATH``; :func:`env` sets it.

Only the unprivileged part of a demo uses these; root keeps the venv.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
import stat
import sys
import time

from .errors import NotSupported


def packages() -> list[str]:
    """The import names to copy: justaprocess and the packages of its dependencies
    (pyproject.toml's ``dependencies``, not the extras), with their own, as installed."""
    from importlib import metadata
    tops = metadata.packages_distributions()  # import name -> distributions
    by_dist: dict[str, list[str]] = {}
    for top, dists in tops.items():
        for d in dists:
            by_dist.setdefault(d.lower().replace("_", "-"), []).append(top)
    names, todo, seen = ["justaprocess"], ["justaprocess"], set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            reqs = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            dep = re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0].lower().replace("_", "-")
            todo.append(dep)
            names += [t for t in by_dist.get(dep, []) if not t.startswith("_") and t not in names]
    return names


def python() -> str:
    """The real interpreter of the lab's venv: a path that any uid may execute."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    _reachable(exe, "the Python interpreter")
    return exe


def _sources() -> list[tuple[str, str]]:
    """(name, folder of a package or file of a module) of each import name to copy."""
    out = []
    for name in packages():
        mod = importlib.import_module(name)
        path = os.path.abspath(mod.__file__)
        out.append((name, os.path.dirname(path) if getattr(mod, "__path__", None) else path))
    return out


def _digest(sources: list[tuple[str, str]]) -> str:
    """Changes whenever a file of the packages changes (a developer's edit included)."""
    h = hashlib.sha256(sys.version.encode())
    for name, src in sources:
        if os.path.isfile(src):
            st = os.stat(src)
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        for d, dirs, files in os.walk(src):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if f.endswith((".pyc", ".pyo")):
                    continue
                st = os.stat(os.path.join(d, f))
                h.update(f"{name}/{os.path.relpath(os.path.join(d, f), src)}:{st.st_size}:"
                         f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _reachable(target: str, what: str) -> None:
    """Every directory on the way needs others' search bit (path_resolution(7))."""
    d = os.path.dirname(target)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            raise NotSupported(
                f"{what} lies under {d} (mode {stat.S_IMODE(os.stat(d).st_mode):04o}), which an "
                "unprivileged uid cannot enter: set JAP_STATE_DIR to a folder others can enter "
                "(the default /var/lib/justaprocess is), or `chmod o+x` that folder")
        if d == "/":
            return
        d = os.path.dirname(d)


def _mkdirs(path: str) -> None:
    """makedirs whose new folders are 0755 whatever the umask (root's may be 077)."""
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for p in reversed(missing):
        try:
            os.mkdir(p)
        except FileExistsError:
            continue
        os.chmod(p, 0o755)


def path() -> str:
    """A folder holding a copy of the lab's packages, readable by every uid (for PYTHONPATH).

    Made once per version of the packages under ``<cache>/runtime/`` (a kept
    thing, like a built root filesystem: not a leftover); a copy unused for a
    day goes.
    """
    from . import lab
    sources = _sources()
    base = os.path.join(lab.cache_dir(), "runtime")
    dest = os.path.join(base, _digest(sources))
    if not os.path.isdir(dest):
        if os.geteuid() != 0:  # an unprivileged caller runs from the copy root made
            raise NotSupported(f"no copy of the lab's packages in {base}: make it as root "
                               "(run `make test` or the notebook as root)")
        _mkdirs(base)
        tmp = f"{dest}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.mkdir(tmp)
        for name, src in sources:
            if os.path.isfile(src):  # a single-file module
                shutil.copy2(src, os.path.join(tmp, os.path.basename(src)))
                continue
            shutil.copytree(src, os.path.join(tmp, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for d, dirs, files in os.walk(tmp):  # root's umask may be 077: others read it all
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644 | (0o111 if f.endswith(".so") else 0))
        try:
            os.rename(tmp, dest)  # atomic: a concurrent run made it meanwhile -> keep theirs
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        # Copies of other versions (other checkouts may share the state folder):
        # removed once unused for a day.
        for old in os.listdir(base):
            o = os.path.join(base, old)
            if o != dest and time.time() - os.stat(o).st_mtime > 86400:
                shutil.rmtree(o, ignore_errors=True)
    elif os.geteuid() == 0:
        os.utime(dest)  # in use: not a day-old copy
    _reachable(os.path.join(dest, "justaprocess", "__init__.py"), "the copy of the lab's packages")
    return dest


def env(base: dict | None = None) -> dict:
    """``base`` (default: this environment) with PYTHONPATH naming :func:`path`."""
    out = dict(os.environ if base is None else base)
    out["PYTHONPATH"] = path()
    return out


def argv(*args: str) -> list[str]:
    """``python -s ARGS`` for an unprivileged uid (with :func:`env`): no user site folder."""
    return [python(), "-s", *args]
