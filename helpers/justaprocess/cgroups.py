"""Control groups, v1 and v2 behind one API (cgroups(7), Documentation/admin-guide/cgroup-v2.rst).

The layout of the machine - pure v1, the v1+v2 hybrid, or pure v2 - is
detected in exactly one function, :func:`layout`.  The root of the cgroup
filesystem and the mount table are parameters, so tests can run on a fake tree.

Where the lab's cgroups live
----------------------------
One *lab parent* (``jap-lab``) per hierarchy, beneath a *base*; each lab cgroup
(:class:`Cgroup`) is a child of it.  The base is chosen by :func:`lab_base`:

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
  (``jupyter.service/server``): the lab parent is then
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
import json
import os
import re
import select
import signal
import stat as _stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, NamedTuple

from . import _libc, proc
from .errors import BadInput, LabError, NeedsPrivilege, NotSupported

ROOT = "/sys/fs/cgroup"
MOUNTS = "/proc/self/mounts"

V1, HYBRID, V2 = "v1", "hybrid", "v2"


def _mount_table(mounts: str = MOUNTS) -> list[tuple[str, str, str, str]]:
    """(source, target, fstype, options) of each line of a mounts file (proc(5))."""
    with open(mounts) as f:
        return [tuple(line.split()[:4]) for line in f]  # type: ignore[misc]


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
    out = []
    for _, target, fstype, opts in _mount_table(mounts):
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


LAB_PARENT = "jap-lab"


# Directory operations go through these two, so the unit tests' fake tree can
# play the kernel (make a new cgroup's interface files, remove them on rmdir).
def _mkdir(path: str) -> None:
    os.mkdir(path)


def _rmdir(path: str) -> None:
    os.rmdir(path)


def remove(path: str, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its descendants, killing what runs inside.

    rmdir(2) of a cgroup fails with EBUSY while it has processes, and a killed
    process leaves the cgroup only once reaped: so kill, then retry the rmdir
    (KERNEL-NOTES: pids.current lags behind the kill).

    A lab parent (``jap-lab``) is only removed when empty: its children belong
    to whichever kernel made them, and that kernel removes them.  Removing a
    child also removes its lab parent when the child was the last one.
    """
    if not any(part.startswith("jap") for part in path.split("/")):
        raise BadInput(f"refusing to remove {path}: not a cgroup the lab created (jap* names)")
    if os.path.basename(path.rstrip("/")) == LAB_PARENT:
        _rmdir_if_empty(path)
        return
    if not os.path.isdir(path):
        _rmdir_if_empty(os.path.dirname(path.rstrip("/")))
        return
    # Deepest first: a cgroup with children cannot be removed.
    dirs = [d for d, _, _ in os.walk(path)]
    deadline = time.monotonic() + timeout
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        while True:
            for pid in pids_in(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                _rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    _rmdir_if_empty(os.path.dirname(path.rstrip("/")))


def _rmdir_if_empty(path: str) -> None:
    """rmdir a lab parent that has no child cgroup left; quietly keep it otherwise."""
    if os.path.basename(path) != LAB_PARENT:
        return
    try:
        if any(os.path.isdir(os.path.join(path, n)) for n in os.listdir(path)):
            return
        _rmdir(path)
    except OSError:  # gone already, or a child appeared meanwhile (EBUSY)
        pass


# --- units ---------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.I)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_size(value: int | str | None, what: str = "size") -> int | None:
    """Bytes from ``64M``, ``1.5G``, ``512k``, ``4096`` or ``"max"`` (None = no limit).

    Suffixes are binary, as the kernel's memparse() reads them in the cgroup
    files (K = 1024); ``MiB``/``MB`` are accepted as the same thing.
    """
    if value is None or value == "max":
        return None
    if isinstance(value, bool):
        raise BadInput(f"{what}: {value!r} is not a size: use bytes or a string like '64M'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise BadInput(f"{what}: {value!r} is negative: use a size like '64M'")
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise BadInput(f"{what}: {value!r} is not a size: use a number with K, M, G or T "
                       "(binary units, e.g. '64M') or 'max'")
    return int(float(m.group(1)) * (1 << _SHIFT[m.group(2).lower()]))


def human(n: int | float | None) -> str:
    """``64.0M`` style, binary units; ``max`` for None."""
    if n is None:
        return "max"
    n = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def parse_cpu(value: float | int | str | None) -> float | None:
    """CPU as a fraction of cores: 0.2 = a fifth of one CPU, 1.5 = one and a half."""
    if value is None or value == "max":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        cpu = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"cpu: {value!r} is not a number of cores: use e.g. 0.2 for 20% of one CPU") from None
    ncpu = os.cpu_count() or 1
    if not 0.01 <= cpu <= ncpu:
        raise BadInput(f"cpu: {value!r} is out of range: use a fraction of cores between 0.01 "
                       f"and {ncpu} (this machine's CPUs), e.g. 0.2")
    return cpu


def parse_count(value: int | str | None, what: str = "pids") -> int | None:
    if value is None or value == "max":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{what}: {value!r} is not a count: use a whole number >= 0, or 'max'")
    return value


def device_number(dev: str) -> str:
    """``MAJ:MIN`` of a block device given as a path (``/dev/loop3``) or as ``MAJ:MIN``."""
    if re.fullmatch(r"\d+:\d+", dev):
        return dev
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        raise BadInput(f"io: no device {dev!r}: give a block device path or MAJ:MIN") from None
    if not _stat.S_ISBLK(st.st_mode):
        raise BadInput(f"io: {dev!r} is not a block device (io limits apply to block devices)")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


_DEVRULE = re.compile(r"^[abc] (\d+|\*):(\d+|\*) [rwm]{1,3}$")


def _check_device_rule(rule: str) -> str:
    if rule == "a" or _DEVRULE.match(rule):
        return rule
    raise BadInput(f"devices: {rule!r} is not a rule: 'TYPE MAJ:MIN ACCESS' as in "
                   "'c 1:3 rwm' (type a/b/c, '*' for any number, access r w m) - "
                   "see Documentation/admin-guide/cgroup-v1/devices.rst")


class IoLimit(NamedTuple):
    """Bandwidth limit on one block device, bytes per second (None: no limit)."""
    device: str          # MAJ:MIN
    rbps: int | None = None
    wbps: int | None = None


def parse_io(io: dict | None) -> tuple[IoLimit, ...]:
    """``{"/dev/loop3": {"read": "1M", "write": "2M"}}`` → IoLimits (rbps/wbps accepted too)."""
    if not io:
        return ()
    out = []
    for dev, rates in io.items():
        if not isinstance(rates, dict) or not rates:
            raise BadInput(f"io: give rates for {dev!r} as {{'read': '1M', 'write': '1M'}}")
        unknown = set(rates) - {"read", "write", "rbps", "wbps"}
        if unknown:
            raise BadInput(f"io: unknown key(s) {sorted(unknown)} for {dev!r}: use 'read' and 'write'")
        r = parse_size(rates.get("read", rates.get("rbps")), f"io read rate of {dev}")
        w = parse_size(rates.get("write", rates.get("wbps")), f"io write rate of {dev}")
        for v in (r, w):
            if v is not None and v == 0:
                raise BadInput(f"io: a rate of 0 for {dev!r} would block it forever: use at least '4K'")
        out.append(IoLimit(device_number(dev), r, w))
    return tuple(out)


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
    try:
        return os.getxattr(path, name).decode()
    except OSError:
        return None


def delegated(path: str) -> bool:
    """Did systemd hand this cgroup over (``Delegate=yes``)?  See systemd's CGROUP_DELEGATION.md."""
    return "1" in (_xattr(path, "trusted.delegate"), _xattr(path, "user.delegate"))


def lab_base(hierarchy: Hierarchy, procfs: str = proc.PROCFS) -> str:
    """The cgroup beneath which the lab parent goes, in one hierarchy (module docstring)."""
    own = own_path(hierarchy, "self", procfs)
    if hierarchy.version == 1:
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


def _write(path: str, value: str) -> None:
    """Write one value to a cgroup file: no O_CREAT (a missing file is a missing controller)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def _keyed(text: str | None) -> dict[str, int]:
    """Flat keyed files (cpu.stat, memory.events, pids.events, oom_control): {key: int}."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    if t in ("max", ""):
        return None
    return int(t)


def _v1_limit(text: str | None) -> int | None:
    """v1 prints 'no limit' as a huge page-aligned number (PAGE_COUNTER_MAX pages)."""
    n = _int(text)
    return None if n is None or n >= (1 << 62) else n


def _enable(place_dir: str, ctrls: list[str]) -> None:
    """Enable controllers for a v2 cgroup's children (cgroup-v2.rst "Enabling and Disabling")."""
    have = set((_read(os.path.join(place_dir, "cgroup.controllers")) or "").split())
    on = set((_read(os.path.join(place_dir, "cgroup.subtree_control")) or "").split())
    todo = [c for c in ctrls if c in have and c not in on]
    if todo:
        try:
            _write(os.path.join(place_dir, "cgroup.subtree_control"),
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
            path = own_path(h, pid, procfs)
        except NotSupported:
            continue
        if h.version == 2:
            out.setdefault(CORE, Place(h, path))
        for c in h.controllers:
            if c not in out or out[c].hierarchy.version == 2 and h.version == 1:
                out[c] = Place(h, path)
    return out
