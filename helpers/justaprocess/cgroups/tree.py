"""Where cgroups are: the machine's layout, hierarchies, a process's cgroups, the lab's base.

The layout of the machine - pure v1, the v1+v2 hybrid, or pure v2 - is
detected in exactly one function, :func:`layout`.  The root of the cgroup
filesystem and the mount table are parameters, so tests can run on a fake tree.

Where the lab's cgroups live
----------------------------
One *lab parent* (``jap-lab``) per hierarchy, beneath a *base*; each lab cgroup
(:class:`~justaprocess.cgroups.Cgroup`) is a child of it.  The base is chosen
by :func:`lab_base`:

* v1 hierarchies (and the hybrid's unified mount): the cgroup the lab's own
  process is in.  Never beside or above it: that cgroup may carry the limits
  of whoever runs the lab (here the memory cgroup is ``/process_api/<id>``).
* pure v2: the *no internal processes* rule (cgroup-v2.rst, "No Internal
  Process Constraint") forbids enabling controllers in the ``subtree_control``
  of a cgroup that holds processes, and the lab's own process holds its cgroup.
  So the base is its own cgroup only when that is the root (exempt from the
  rule) or holds no process; otherwise the *parent* of its own cgroup when that
  parent was delegated to it (systemd's ``Delegate=yes`` marks it with the
  ``trusted.delegate`` xattr, see systemd's CGROUP_DELEGATION.md) and holds no
  process itself; ``$JAP_CGROUP_BASE`` names a base explicitly.  Anything
  else is refused with :class:`NotSupported`, never worked around by climbing
  into the machine's own cgroups.

  On a systemd VM the Jupyter service therefore runs with ``Delegate=yes`` and
  moves its own process into a leaf of its unit before starting the server
  (``jupyter.service/server``; :func:`enter_leaf`, or from a start script
  ``python -m justaprocess cgroup --enter-leaf``): the lab parent is then
  ``jupyter.service/jap-lab``, a sibling of the server's leaf, inside the unit
  that systemd handed over, and the unit's own limits still bound the lab.
  (systemd >= 254 does the leaf move itself with ``DelegateSubgroup=``.)

The lab parent is shared by every process of the lab that has the same base;
it never holds processes, is registered like any lab cgroup, and is removed
when its last child goes (``remove`` of a lab parent only removes it empty:
the children belong to other kernels, which remove them).
"""
from __future__ import annotations

import errno
import os
import signal
import time
from typing import NamedTuple

from .. import _bpfdev, _captable, _registry, proc
from ..errors import BadInput, LabError, NeedsPrivilege, NotSupported, needs
from . import files


ROOT = "/sys/fs/cgroup"
MOUNTS = "/proc/self/mounts"

V1, HYBRID, V2 = "v1", "hybrid", "v2"


def _mount_table(mounts: str = MOUNTS) -> list[tuple[str, str, str, str]]:
    """(source, target, fstype, options) of each mount.

    This process's table comes from ``proc.mountinfo`` (the lab's one parser; the
    options are the per-mount and the superblock ones, as /proc/self/mounts shows
    them).  Another file (a fake table of the unit tests) is read in the
    /proc/mounts format: SOURCE TARGET FSTYPE OPTIONS (proc(5)).
    """
    if mounts == MOUNTS:
        table = proc.own_table()
        if _OWN[0] is not table:  # the mount table changed (or first call): derive again
            _OWN[:] = [table, [(m.source, m.target, m.fstype,
                                ",".join(dict.fromkeys(m.options + m.super_options)))
                               for m in table], {}]
        return _OWN[1]
    with open(mounts) as f:
        return [tuple(proc.unescape(x) for x in line.split()[:4]) for line in f  # type: ignore[misc]
                if len(line.split()) >= 4]


# This process's table as _mount_table gives it, and facts derived from it (hierarchies),
# kept while proc.own_table() returns the same object: the table has not changed.
_OWN: list = [None, [], {}]


def layout(root: str = ROOT, mounts: str = MOUNTS) -> str:
    """'v2', 'hybrid' or 'v1': the one place the cgroup layout is decided.

    The filesystem type of ``root`` tells: cgroup2 there means pure v2; a tmpfs
    holding v1 hierarchies is v1, and hybrid when a cgroup2 is also mounted
    beneath it (systemd puts it at ``unified``).
    """
    table = _mount_table(mounts)
    root = root.rstrip("/")
    types = {target: fstype for _, target, fstype, _ in table}
    if types.get(root) == "cgroup2":
        return V2
    if any(t == "cgroup2" and target.startswith(root + "/") for target, t in types.items()):
        return HYBRID
    if any(t == "cgroup" and target.startswith(root + "/") for target, t in types.items()):
        return V1
    raise NotSupported(f"no cgroup filesystem is mounted under {root}: "
                       "the lab needs a Linux with cgroups (mount -t cgroup2 none /sys/fs/cgroup)")


class Hierarchy(NamedTuple):
    """One mounted cgroup hierarchy: its mount point, version and controllers."""
    mountpoint: str
    version: int
    controllers: tuple[str, ...]


# Options of a v1 cgroup mount that are not controller names (cgroups(7)).
_V1_OPTIONS = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime",
               "xattr", "clone_children", "noprefix", "cpuset_v2_mode"}


def hierarchies(root: str = ROOT, mounts: str = MOUNTS) -> list[Hierarchy]:
    """Every cgroup hierarchy mounted under ``root``, with its controllers."""
    if mounts == MOUNTS:
        table = _mount_table(mounts)
        known = _OWN[2].get(root)
        if known is None:
            known = _OWN[2][root] = _hierarchies(root, table)
        return list(known)
    return _hierarchies(root, _mount_table(mounts))


def _hierarchies(root: str, table: list) -> list[Hierarchy]:
    out = []
    for _, target, fstype, opts in table:
        if not (target == root or target.startswith(root.rstrip("/") + "/")):
            continue
        if fstype == "cgroup2":
            try:
                with open(os.path.join(target, "cgroup.controllers")) as f:
                    ctrls = tuple(f.read().split())
            except OSError:
                ctrls = ()
            out.append(Hierarchy(target, 2, ctrls))
        elif fstype == "cgroup":
            ctrls = tuple(o for o in opts.split(",")
                          if o not in _V1_OPTIONS and "=" not in o)
            out.append(Hierarchy(target, 1, ctrls))
    return out


def controllers(root: str = ROOT, mounts: str = MOUNTS) -> dict[str, Hierarchy]:
    """{controller: the hierarchy it is attached to}.

    A controller lives in one hierarchy at a time: on the hybrid, the v1 mount wins.
    """
    out: dict[str, Hierarchy] = {}
    for h in hierarchies(root, mounts):
        for c in h.controllers:
            if c not in out or out[c].version == 2 and h.version == 1:
                out[c] = h
    return out


def own_path(hierarchy: Hierarchy, pid: int | str = "self", procfs: str = proc.PROCFS) -> str:
    """The directory of the cgroup that ``pid`` is in, within ``hierarchy``."""
    for line in proc.cgroups(pid, procfs):
        if hierarchy.version == 2 and line.hierarchy == 0:
            return os.path.join(hierarchy.mountpoint, line.path.lstrip("/"))
        if hierarchy.version == 1 and set(line.controllers) & set(hierarchy.controllers):
            return os.path.join(hierarchy.mountpoint, line.path.lstrip("/"))
    raise NotSupported(f"process {pid} is in no cgroup of {hierarchy.mountpoint}")


def pids_in(path: str) -> list[int]:
    """The PIDs in one cgroup (its cgroup.procs), not its descendants."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


LAB_PARENT = _registry.LAB_PARENT


@needs("root", "removing a cgroup:")
def remove(path: str, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its descendants, killing what runs inside.

    rmdir(2) of a cgroup fails with EBUSY while it has processes, and a killed
    process leaves the cgroup only once reaped: so kill, then retry the rmdir
    (docs/kernel-notes.md, "cgroups": pids.current lags behind the kill).

    On a cgroup2 directory the device programs attached to it (``_bpfdev``) are detached
    first, so they are gone when this returns (an rmdir alone frees them later, from a
    kernel work queue).  A lab parent (``jap-lab``) is only removed when empty: its children belong
    to whichever kernel made them, and that kernel removes them.  Removing a
    child also removes its lab parent when the child was the last one.
    """
    if not _registry.is_lab_cgroup(os.path.normpath(path)):
        raise BadInput(f"refusing to remove {path}: not a cgroup the lab created "
                       "(those are named jap-<id>... or jap-lab)")
    if os.path.basename(path.rstrip("/")) == LAB_PARENT:
        _rmdir_if_empty(path)
        return
    if not os.path.isdir(path):
        _rmdir_if_empty(os.path.dirname(path.rstrip("/")))
        return
    # Deepest first: a cgroup with children cannot be removed.
    dirs = [d for d, _, _ in os.walk(path)]
    deadline = time.monotonic() + timeout
    held: list[str] = []
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        detached = False
        while True:
            for pid in pids_in(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not detached:  # once its processes are killed: no open(2) left to check
                held += [f"{i} (was on {d})" for i in _bpfdev.detach_all(d)]
                detached = True
            try:
                files._rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY while killed processes are not reaped yet: try again; anything else
                # (EACCES: not root) will not change by waiting.
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    _rmdir_if_empty(os.path.dirname(path.rstrip("/")))
    if held:
        raise LabError(f"device program(s) {', '.join(held)} detached but still loaded: something "
                       "else holds them (a pin in bpffs, an open fd): `bpftool prog show id N`")


def _rmdir_if_empty(path: str) -> None:
    """rmdir a lab parent that has no child cgroup left; quietly keep it otherwise."""
    if os.path.basename(path) != LAB_PARENT:
        return
    try:
        with os.scandir(path) as it:  # d_type from getdents(2): no stat(2) per cgroup file
            if any(e.is_dir(follow_symlinks=False) for e in it):
                return
        files._rmdir(path)
    except OSError:  # gone already, or a child appeared meanwhile (EBUSY)
        pass


# --- where things are ------------------------------------------------------------

class Place(NamedTuple):
    """A controller's directory for one cgroup, and which hierarchy it is in."""
    hierarchy: Hierarchy
    path: str


# What the lab meters and limits; on v2, io replaces blkio and device control
# is an eBPF program (cgroup-v2.rst "Device controller"), freezer and kill are
# core files (cgroup.freeze, cgroup.kill).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "devices", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids", "io")
CORE = "core"  # the key of the v2 directory in a places dict (cgroup.events, .freeze, .kill)


def _xattr(path: str, name: str) -> str | None:
    """An extended attribute's value; None when it is not set (ENODATA) or the filesystem
    keeps none (EOPNOTSUPP).  A refusal is an error, never "not set" (xattr(7))."""
    try:
        return os.getxattr(path, name).decode()
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise NeedsPrivilege("CAP_SYS_ADMIN", f"reading the xattr {name} of {path}:") from exc
        raise


def delegated(path: str) -> bool:
    """Did systemd hand this cgroup over (``Delegate=yes``)?  See systemd's CGROUP_DELEGATION.md.

    systemd marks a delegated cgroup with ``trusted.delegate=1`` (and, since v251,
    ``user.delegate=1``).  ``trusted.*`` attributes are invisible without
    CAP_SYS_ADMIN - the kernel answers "not set" (xattr(7)) - so a caller without it
    gets an error rather than a False it cannot know.
    """
    if _xattr(path, "user.delegate") == "1":
        return True
    if not proc.caps("self").effective & _captable.to_mask(["cap_sys_admin"]):
        raise NeedsPrivilege("CAP_SYS_ADMIN", f"telling whether {path} was delegated "
                                              "(systemd's trusted.delegate mark is hidden without it):")
    return _xattr(path, "trusted.delegate") == "1"


def lab_base(hierarchy: Hierarchy, procfs: str = proc.PROCFS) -> str:
    """The cgroup beneath which the lab parent goes, in one hierarchy (module docstring)."""
    own = own_path(hierarchy, "self", procfs)
    if hierarchy.version == 1 or not set(V2_CONTROLLERS) & set(hierarchy.controllers):
        # v1, or the hybrid's controller-less unified mount: with no controller to
        # hand down, the no-internal-processes rule does not apply (cgroup-v2.rst).
        return own
    env = os.environ.get("JAP_CGROUP_BASE")
    if env:
        if not (env.rstrip("/") + "/").startswith(hierarchy.mountpoint.rstrip("/") + "/"):
            raise NotSupported(f"JAP_CGROUP_BASE={env} is not inside the cgroup2 mount "
                               f"{hierarchy.mountpoint}")
        return env.rstrip("/")
    root = hierarchy.mountpoint.rstrip("/")
    if own.rstrip("/") == root or not pids_in(own):
        return own.rstrip("/")
    parent = os.path.dirname(own.rstrip("/"))
    if parent != root and delegated(parent) and not pids_in(parent):
        return parent
    raise NotSupported(
        f"the lab's process is in the cgroup {own}, which holds processes: cgroup v2 forbids "
        "giving controllers to its children (no internal processes, cgroup-v2.rst). Run the lab "
        "from a delegated unit whose processes sit in a leaf (systemd Delegate=yes, the server "
        "in <unit>/server), from the root cgroup, or set JAP_CGROUP_BASE to a delegated cgroup "
        "without processes")


@needs("root", "moving the service into a leaf cgroup:")
def enter_leaf(name: str = "server", root: str = ROOT, mounts: str = MOUNTS,
               procfs: str = proc.PROCFS) -> str | None:
    """Move every process of the caller's delegated v2 cgroup into a leaf ``name``.

    For a service's start script (the Jupyter service, a CI job), *before* it
    starts anything: systemd's ``Delegate=yes`` hands the unit's cgroup over,
    but the unit's processes sit in it, and v2 only lets leaves hold processes
    (cgroup-v2.rst "No Internal Process Constraint").  After the move the unit's
    cgroup is an inner node: :func:`lab_base` puts the lab parent beside the
    leaf (systemd >= 254 does the same with ``DelegateSubgroup=``).
    The leaf is part of the service, not of the lab: it has no ``jap`` name and
    cleanup never touches it.  Returns the leaf's path, or None when there is
    nothing to do (v1, the hybrid, the root cgroup, already in a leaf ``name``).
    """
    if layout(root, mounts) != V2:
        return None
    v2 = [h for h in hierarchies(root, mounts) if h.version == 2][0]
    own = os.path.normpath(own_path(v2, "self", procfs))
    if own == os.path.normpath(v2.mountpoint) or os.path.basename(own) == name:
        return None
    if not delegated(own):
        raise NotSupported(f"{own} was not delegated to this service (no trusted.delegate xattr): "
                           "set Delegate=yes in its systemd unit (systemd.resource-control(5))")
    if _registry.is_lab_cgroup("/" + name) or "/" in name or name in ("", ".", ".."):
        raise BadInput(f"leaf name {name!r}: not a lab name (cleanup would remove it), no '/'")
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "moving the service into a leaf cgroup")
    leaf = os.path.join(own, name)
    if not os.path.isdir(leaf):
        files._mkdir(leaf)
    for _ in range(10):  # processes forked meanwhile appear in cgroup.procs: repeat until empty
        pids = pids_in(own)
        if not pids:
            return leaf
        for pid in pids:
            try:
                files._write(os.path.join(leaf, "cgroup.procs"), str(pid))
            except ProcessLookupError:
                pass
    raise LabError(f"{own} keeps getting new processes: run enter_leaf() before starting any")


@needs("root", "enabling cgroup controllers:")
def _enable(place_dir: str, ctrls: list[str]) -> None:
    """Enable controllers for a v2 cgroup's children (cgroup-v2.rst "Enabling and Disabling")."""
    have = set((files._read(os.path.join(place_dir, "cgroup.controllers")) or "").split())
    on = set((files._read(os.path.join(place_dir, "cgroup.subtree_control")) or "").split())
    todo = [c for c in ctrls if c in have and c not in on]
    if todo:
        try:
            files._write(os.path.join(place_dir, "cgroup.subtree_control"),
                   " ".join("+" + c for c in todo))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise NotSupported(f"cannot enable {', '.join(todo)} below {place_dir}: it holds "
                                   "processes (no internal processes rule, cgroup-v2.rst)") from exc
            raise


def places_of(pid: int | str = "self", root: str = ROOT, mounts: str = MOUNTS,
              procfs: str = proc.PROCFS) -> dict[str, Place]:
    """Where a process's cgroups are: {controller (or 'core' for v2): Place}."""
    out: dict[str, Place] = {}
    for h in hierarchies(root, mounts):
        try:
            path = os.path.normpath(own_path(h, pid, procfs))
        except NotSupported:
            continue
        if h.version == 2:
            out.setdefault(CORE, Place(h, path))
        for c in h.controllers:
            if c not in out or out[c].hierarchy.version == 2 and h.version == 1:
                out[c] = Place(h, path)
    return out
