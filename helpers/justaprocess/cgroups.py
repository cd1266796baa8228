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
import json
import os
import re
import select
import signal
import stat as _stat
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Iterator, NamedTuple

from . import _libc, _registry, _spawn, proc
from ._loop import (  # noqa: F401 - names this module always had (the loop device is _loop's)
    LO_FLAGS_AUTOCLEAR, LOOP_CLR_FD, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LoopDevice, attach_loop,
    detach_loops, loops_backed_by)
from ._units import human, parse_size  # noqa: F401 - cgroups.X as always
from .errors import BadInput, LabError, NeedsPrivilege, NotSupported, StillPresent, needs

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


LAB_PARENT = _registry.LAB_PARENT


# Directory operations go through these two, so the unit tests' fake tree can
# play the kernel (make a new cgroup's interface files, remove them on rmdir).
def _mkdir(path: str) -> None:
    os.mkdir(path)


def _rmdir(path: str) -> None:
    os.rmdir(path)


@needs("root", "removing a cgroup:")
def remove(path: str, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its descendants, killing what runs inside.

    rmdir(2) of a cgroup fails with EBUSY while it has processes, and a killed
    process leaves the cgroup only once reaped: so kill, then retry the rmdir
    (docs/kernel-notes.md, "cgroups": pids.current lags behind the kill).

    A lab parent (``jap-lab``) is only removed when empty: its children belong
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
            except OSError as exc:
                # EBUSY while killed processes are not reaped yet: try again; anything else
                # (EACCES: not root) will not change by waiting.
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
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


_CAP_SYS_ADMIN = 21  # capabilities(7)


def delegated(path: str) -> bool:
    """Did systemd hand this cgroup over (``Delegate=yes``)?  See systemd's CGROUP_DELEGATION.md.

    systemd marks a delegated cgroup with ``trusted.delegate=1`` (and, since v251,
    ``user.delegate=1``).  ``trusted.*`` attributes are invisible without
    CAP_SYS_ADMIN - the kernel answers "not set" (xattr(7)) - so a caller without it
    gets an error rather than a False it cannot know.
    """
    if _xattr(path, "user.delegate") == "1":
        return True
    if not proc.caps("self").effective >> _CAP_SYS_ADMIN & 1:
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
        _mkdir(leaf)
    for _ in range(10):  # processes forked meanwhile appear in cgroup.procs: repeat until empty
        pids = pids_in(own)
        if not pids:
            return leaf
        for pid in pids:
            try:
                _write(os.path.join(leaf, "cgroup.procs"), str(pid))
            except ProcessLookupError:
                pass
    raise LabError(f"{own} keeps getting new processes: run enter_leaf() before starting any")


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


@needs("root", "enabling cgroup controllers:")
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
            path = os.path.normpath(own_path(h, pid, procfs))
        except NotSupported:
            continue
        if h.version == 2:
            out.setdefault(CORE, Place(h, path))
        for c in h.controllers:
            if c not in out or out[c].hierarchy.version == 2 and h.version == 1:
                out[c] = Place(h, path)
    return out


# --- reading a cgroup: limits and usage in one call -------------------------------

@dataclass(frozen=True)
class Stats:
    """One reading of a cgroup's files (None: that controller is not there).

    v1 and v2 name the same facts differently (docs/kernel-notes.md, "cgroups", v1 → v2 names);
    this is the fact, whichever file said it.
    """
    time: float                        # time.monotonic() of the reading
    memory_current: int | None = None  # bytes: v2 memory.current, v1 memory.usage_in_bytes
    memory_peak: int | None = None     # v2 memory.peak, v1 memory.max_usage_in_bytes
    memory_max: int | None = None      # hard limit (None = none): memory.max / limit_in_bytes
    memory_high: int | None = None     # soft limit: memory.high / soft_limit_in_bytes
    memory_high_events: int | None = None  # v2: times usage went over memory.high (v1: None)
    memory_max_events: int | None = None   # times the hard limit was hit (v1: memory.failcnt)
    oom_kills: int | None = None       # processes the OOM killer killed in the cgroup
    cpu_usage_usec: int | None = None  # CPU time used (v2 cpu.stat usage_usec, v1 cpuacct.usage/1000)
    cpu_quota: float | None = None     # limit in cores (None = none): cpu.max / cfs_quota_us
    cpu_periods: int | None = None     # enforcement periods elapsed (cpu.stat nr_periods)
    cpu_throttled: int | None = None   # periods in which the cgroup was throttled (nr_throttled)
    cpu_throttled_usec: int | None = None  # time spent throttled (throttled_usec / throttled_time)
    pids_current: int | None = None
    pids_max: int | None = None
    pids_max_events: int | None = None  # forks refused by pids.max (pids.events "max")
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    populated: bool | None = None      # a process in it or below (cgroup.events)
    frozen: bool | None = None

    def asdict(self) -> dict:
        return asdict(self)


def _io_bytes(place: Place) -> tuple[int | None, int | None]:
    if place.hierarchy.version == 2:
        text = _read(os.path.join(place.path, "io.stat"))
        if text is None:
            return None, None
        r = w = 0
        for line in text.splitlines():  # "7:0 rbytes=1 wbytes=2 rios=..."
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            r += int(kv.get("rbytes", 0))
            w += int(kv.get("wbytes", 0))
        return r, w
    # v1: the throttle layer counts every bio, whatever the I/O scheduler
    # (cgroup-v1/blkio-controller.rst); "_recursive" includes children.
    text = _read(os.path.join(place.path, "blkio.throttle.io_service_bytes_recursive"))
    if text is None:
        text = _read(os.path.join(place.path, "blkio.throttle.io_service_bytes"))
    if text is None:
        return None, None
    r = w = 0
    for line in text.splitlines():  # "7:0 Read 4096"
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            r += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            w += int(parts[2])
    return r, w


def read_stats(places: dict[str, Place]) -> Stats:
    """Read limits and usage of one cgroup (a dict from :func:`places_of` or ``Cgroup.places``)."""
    f: dict = {"time": time.monotonic()}
    j = os.path.join
    mem = places.get("memory")
    if mem and mem.hierarchy.version == 2:
        f["memory_current"] = _int(_read(j(mem.path, "memory.current")))
        f["memory_peak"] = _int(_read(j(mem.path, "memory.peak")))
        f["memory_max"] = _int(_read(j(mem.path, "memory.max")))
        f["memory_high"] = _int(_read(j(mem.path, "memory.high")))
        ev = _keyed(_read(j(mem.path, "memory.events")))
        f["memory_high_events"] = ev.get("high")
        f["memory_max_events"] = ev.get("max")
        f["oom_kills"] = ev.get("oom_kill")
    elif mem:
        f["memory_current"] = _int(_read(j(mem.path, "memory.usage_in_bytes")))
        f["memory_peak"] = _int(_read(j(mem.path, "memory.max_usage_in_bytes")))
        f["memory_max"] = _v1_limit(_read(j(mem.path, "memory.limit_in_bytes")))
        f["memory_high"] = _v1_limit(_read(j(mem.path, "memory.soft_limit_in_bytes")))
        f["memory_max_events"] = _int(_read(j(mem.path, "memory.failcnt")))
        f["oom_kills"] = _keyed(_read(j(mem.path, "memory.oom_control"))).get("oom_kill")
    cpu = places.get("cpu")
    if cpu and cpu.hierarchy.version == 2:
        st = _keyed(_read(j(cpu.path, "cpu.stat")))
        f["cpu_usage_usec"] = st.get("usage_usec")
        f["cpu_periods"] = st.get("nr_periods")
        f["cpu_throttled"] = st.get("nr_throttled")
        f["cpu_throttled_usec"] = st.get("throttled_usec")
        mx = (_read(j(cpu.path, "cpu.max")) or "max").split()
        f["cpu_quota"] = None if mx[0] == "max" else int(mx[0]) / int(mx[1])
    else:
        if cpu:
            st = _keyed(_read(j(cpu.path, "cpu.stat")))
            f["cpu_periods"] = st.get("nr_periods")
            f["cpu_throttled"] = st.get("nr_throttled")
            if "throttled_time" in st:  # nanoseconds in v1
                f["cpu_throttled_usec"] = st["throttled_time"] // 1000
            q = _int(_read(j(cpu.path, "cpu.cfs_quota_us")))
            p = _int(_read(j(cpu.path, "cpu.cfs_period_us")))
            f["cpu_quota"] = q / p if q is not None and q > 0 and p else None
        acct = places.get("cpuacct")
        if acct:
            ns = _int(_read(j(acct.path, "cpuacct.usage")))
            f["cpu_usage_usec"] = None if ns is None else ns // 1000
        elif CORE in places:  # the hybrid's unified cgroup has cpu.stat usage_usec
            f["cpu_usage_usec"] = _keyed(_read(j(places[CORE].path, "cpu.stat"))).get("usage_usec")
    pids = places.get("pids")
    if pids:
        f["pids_current"] = _int(_read(j(pids.path, "pids.current")))
        f["pids_max"] = _int(_read(j(pids.path, "pids.max")))
        f["pids_max_events"] = _keyed(_read(j(pids.path, "pids.events"))).get("max")
    io = places.get("io") or places.get("blkio")
    if io:
        f["io_read_bytes"], f["io_write_bytes"] = _io_bytes(io)
    core = places.get(CORE)
    ev = _keyed(_read(j(core.path, "cgroup.events"))) if core else {}
    if "populated" in ev:
        f["populated"] = bool(ev["populated"])
        f["frozen"] = bool(ev.get("frozen", 0))
    else:
        f["populated"] = any(_populated_v1(p.path) for p in places.values())
        fr = places.get("freezer")
        state = _read(j(fr.path, "freezer.state")) if fr else None
        f["frozen"] = None if state is None else state.strip() == "FROZEN"
    return Stats(**f)


def _populated_v1(path: str) -> bool:
    """v1 has no cgroup.events: any process in the cgroup or below."""
    return any(pids_in(d) for d, _, _ in os.walk(path))


# --- a lab cgroup -------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Validated limits, in kernel units (bytes, cores, counts, bytes/s)."""
    memory_max: int | None = None
    memory_high: int | None = None
    swap_max: int | None = None
    cpu: float | None = None
    cpu_period_us: int = 100_000
    pids_max: int | None = None
    io: tuple[IoLimit, ...] = ()
    devices: tuple[str, ...] | None = None   # v1 allow-list; None: inherit the parent's

    @classmethod
    def parse(cls, *, memory=None, memory_high=None, swap=None, cpu=None, pids=None,
              io=None, devices=None, cpu_period_us: int = 100_000) -> "Limits":
        """Check everything before anything is created: bad input never half-creates."""
        if devices is not None:
            if isinstance(devices, str):
                devices = [devices]
            devices = tuple(_check_device_rule(r) for r in devices)
        if not isinstance(cpu_period_us, int) or not 1000 <= cpu_period_us <= 1_000_000:
            raise BadInput(f"cpu_period_us: {cpu_period_us!r}: use 1000..1000000 (cgroup-v2.rst cpu.max)")
        lim = cls(memory_max=parse_size(memory, "memory"),
                  memory_high=parse_size(memory_high, "memory_high"),
                  swap_max=parse_size(swap, "swap"),
                  cpu=parse_cpu(cpu), cpu_period_us=cpu_period_us,
                  pids_max=parse_count(pids, "pids"),
                  io=parse_io(io), devices=devices)
        for what, v in (("memory", lim.memory_max), ("memory_high", lim.memory_high)):
            if v is not None and v < 1 << 20:
                raise BadInput(f"{what}: {human(v)} is too small for any process: use at least '1M'")
        return lim

    def controllers(self) -> set[str]:
        """The controllers these limits need (v1 names; 'io' for either io/blkio)."""
        need = set()
        if self.memory_max is not None or self.memory_high is not None or self.swap_max is not None:
            need.add("memory")
        if self.cpu is not None:
            need.add("cpu")
        if self.pids_max is not None:
            need.add("pids")
        if self.io:
            need.add("io")
        if self.devices is not None:
            need.add("devices")
        return need


def _swap_active(swaps: str = "/proc/swaps") -> bool:
    """Is any swap area in use (proc(5) /proc/swaps: a header line, then one per area)?"""
    try:
        with open(swaps) as f:
            return len(f.read().strip().splitlines()) > 1
    except OSError:
        return False


def _quota_usec(cpu: float, period: int) -> int:
    return max(1000, round(cpu * period))  # the kernel's minimum quota is 1 ms


class Cgroup:
    """A lab cgroup: limits in human units, explicit ``create()``/``remove()``.

    >>> cg = Cgroup(memory="64M", cpu=0.2, pids=20).create()
    >>> cg.run(["sleep", "0.1"]).returncode      # a child started inside it
    >>> cg.stats().memory_peak
    >>> cg.remove()

    The constructor checks the input and touches nothing; ``create()`` registers
    each directory with the lab (``_registry.register('cgroup', path)``) *before*
    making it, in every hierarchy it needs (v1: one per controller; hybrid: plus
    the unified one, for cgroup.events/freeze/kill; v2: one directory), under
    the lab parent (module docstring).  The calling process never joins it.
    """

    def __init__(self, name: str | None = None, *, memory: int | str | None = None,
                 memory_high: int | str | None = None, swap: int | str | None = None,
                 cpu: float | None = None, pids: int | None = None, io: dict | None = None,
                 devices: list[str] | None = None, cpu_period_us: int = 100_000,
                 root: str = ROOT, mounts: str = MOUNTS, procfs: str = proc.PROCFS):
        if name is None:
            name = _registry.name("cg")
        if not isinstance(name, str) or not _registry.is_lab_name(name) or len(name) > 64:
            raise BadInput(f"cgroup name {name!r}: lab cgroups are named jap-<id>[-suffix] "
                           "(letters, digits, - _ .), e.g. lab.name('web')")
        self.name = name
        self.limits = Limits.parse(memory=memory, memory_high=memory_high, swap=swap, cpu=cpu,
                                   pids=pids, io=io, devices=devices, cpu_period_us=cpu_period_us)
        self.root, self.mounts, self.procfs = root, mounts, procfs
        self.places: dict[str, Place] = {}
        self._entries: list = []
        self._parents: list = []   # lab parents this object made (registered by us)
        self.written: list[tuple[str, str]] = []  # (file, value): the limits as the kernel got them
        self._dirs: list[str] = []

    # -- where -------------------------------------------------------------------
    @property
    def version(self) -> int:
        """2 when the cgroup is one v2 directory, 1 on v1 and the hybrid."""
        lay = layout(self.root, self.mounts)
        return 2 if lay == V2 else 1

    @property
    def path(self) -> str:
        """The main directory: the v2 one, or on v1 the memory hierarchy's."""
        for key in (CORE, "memory", "cpu", "pids"):
            if key in self.places:
                return self.places[key].path
        return next(iter(self.places.values())).path if self.places else ""

    @property
    def paths(self) -> list[str]:
        """Every directory of this cgroup (one per hierarchy; one on pure v2)."""
        return list(self._dirs)

    @property
    def created(self) -> bool:
        return bool(self._dirs)

    def _plan(self) -> tuple[list[Hierarchy], dict[str, Hierarchy]]:
        """Which hierarchies to use, checking every wanted controller exists."""
        lay = layout(self.root, self.mounts)
        have = controllers(self.root, self.mounts)
        need = self.limits.controllers()
        if lay == V2:
            v2 = [h for h in hierarchies(self.root, self.mounts) if h.version == 2][0]
            if "devices" in need:
                raise NotSupported(
                    "device access control on cgroup v2 is an eBPF program attached to the cgroup "
                    "(BPF_PROG_TYPE_CGROUP_DEVICE, cgroup-v2.rst 'Device controller'), not files: "
                    "the lab does not load one; runtimes (runc, crun) do. On v2, keep device nodes "
                    "out of the container's /dev instead")
            missing = sorted(c for c in need if c not in v2.controllers)
            if missing:
                raise NotSupported(f"the cgroup v2 controller(s) {', '.join(missing)} are not available "
                                   f"here (cgroup.controllers of {v2.mountpoint}): use the course VM")
            return [v2], {c: v2 for c in V2_CONTROLLERS if c in v2.controllers}
        wanted = {"io": "blkio"}
        missing = sorted(c for c in need if wanted.get(c, c) not in have
                         or have[wanted.get(c, c)].version != 1)
        if missing:
            raise NotSupported(f"the cgroup v1 controller(s) {', '.join(wanted.get(c, c) for c in missing)} "
                               "are not mounted here: use the course VM")
        use = {c: have[c] for c in V1_CONTROLLERS if c in have and have[c].version == 1}
        hs: list[Hierarchy] = []
        for h in use.values():
            if h not in hs:
                hs.append(h)
        hs += [h for h in hierarchies(self.root, self.mounts) if h.version == 2]
        return hs, use

    # -- life cycle ----------------------------------------------------------------
    def create(self) -> "Cgroup":
        """Make the cgroup and write its limits; on any failure remove what was made."""
        if self._dirs:
            raise BadInput(f"cgroup {self.name} is already created")
        hs, by_ctrl = self._plan()
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "creating a cgroup")
        try:
            dirs: dict[Hierarchy, str] = {}
            for h in hs:
                for attempt in range(3):
                    parent = self._lab_parent(h)
                    path = os.path.join(parent, self.name)
                    if attempt == 0:
                        self._entries.append(_registry.register("cgroup", path, note="lab cgroup"))
                    try:
                        _mkdir(path)
                        break
                    except FileExistsError:
                        raise BadInput(f"a cgroup {path} exists already: choose another name") from None
                    except FileNotFoundError:
                        # Another kernel removed the (then empty) lab parent between our
                        # check and our mkdir: make it again.
                        if attempt == 2:
                            raise
                self._dirs.append(path)
                dirs[h] = path
            for c, h in by_ctrl.items():
                self.places[c] = Place(h, dirs[h])
            for h in hs:
                if h.version == 2:
                    self.places.setdefault(CORE, Place(h, dirs[h]))
            self._apply()
        except PermissionError as exc:
            self._undo()
            raise NeedsPrivilege("root", f"creating the cgroup {self.name}") from exc
        except BaseException:
            self._undo()
            raise
        return self

    def _lab_parent(self, h: Hierarchy) -> str:
        """The shared lab parent in one hierarchy, made (and registered) if absent."""
        base = lab_base(h, self.procfs)
        parent = os.path.join(base, LAB_PARENT)
        if h.version == 2 and set(V2_CONTROLLERS) & set(h.controllers):  # not the hybrid's unified
            have = (_read(os.path.join(base, "cgroup.controllers")) or "").split()
            lacking = sorted(self.limits.controllers() - set(have))
            if lacking:  # the base's parent did not hand them down (systemd: Delegate=yes)
                raise NotSupported(f"the controller(s) {', '.join(lacking)} are not available in "
                                   f"{base} (its cgroup.controllers): delegate them to the lab's unit")
            _enable(base, list(V2_CONTROLLERS))
        if not os.path.isdir(parent):
            entry = _registry.register("cgroup", parent, note="lab parent (shared; removed when empty)")
            try:
                _mkdir(parent)
                self._parents.append(entry)
            except FileExistsError:
                _registry.unregister(entry)  # another kernel made it meanwhile: theirs to forget
        if h.version == 2:
            _enable(parent, list(V2_CONTROLLERS))
        return parent

    def _undo(self) -> None:
        for d in reversed(self._dirs):
            try:
                remove(d, timeout=2)
            except OSError:
                pass
        for e in self._entries:
            _registry.unregister(e)
        self._forget_parents()
        self._dirs, self._entries, self.places, self.written = [], [], {}, []

    def _forget_parents(self) -> None:
        """Unregister the lab parents we made once they are gone (the last child took them)."""
        for e in list(self._parents):
            if not os.path.isdir(e.name):
                _registry.unregister(e)
                self._parents.remove(e)

    def _file(self, ctrl: str, name: str) -> str:
        return os.path.join(self.places[ctrl].path, name)

    def _set(self, ctrl: str, name: str, value: str) -> None:
        try:
            _write(self._file(ctrl, name), value)
            self.written.append((self._file(ctrl, name), value))
        except FileNotFoundError:
            raise NotSupported(f"{name} is missing in {self.places[ctrl].path}: the {ctrl} "
                               "controller is not enabled there") from None
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY):
                raise BadInput(f"the kernel refused {value!r} for {name} ({exc.strerror}): "
                               "see cgroup-v2.rst / cgroup-v1 docs for its format") from exc
            raise

    def _apply(self) -> None:
        """Write the limits, in the files of this cgroup's version (docs/kernel-notes.md, "cgroups")."""
        L = self.limits
        v2 = self.places.get("memory", self.places.get(CORE)).hierarchy.version == 2 \
            if self.places else False
        if v2:
            if L.memory_max is not None:
                self._set("memory", "memory.max", str(L.memory_max))
            if L.memory_high is not None:
                self._set("memory", "memory.high", str(L.memory_high))
            if L.swap_max is not None and (L.swap_max != 0 or _swap_active()
                                           or os.path.exists(self._file("memory", "memory.swap.max"))):
                # swap=0 on a kernel without swap accounting and no swap: nothing to forbid.
                self._set("memory", "memory.swap.max", str(L.swap_max))
            if L.cpu is not None:
                self._set("cpu", "cpu.max", f"{_quota_usec(L.cpu, L.cpu_period_us)} {L.cpu_period_us}")
            if L.pids_max is not None:
                self._set("pids", "pids.max", str(L.pids_max))
            for lim in L.io:
                parts = [f"rbps={lim.rbps}" if lim.rbps else "", f"wbps={lim.wbps}" if lim.wbps else ""]
                self._set("io", "io.max", f"{lim.device} " + " ".join(p for p in parts if p))
            return
        if L.memory_max is not None:
            self._set("memory", "memory.limit_in_bytes", str(L.memory_max))
        if L.memory_high is not None:
            self._set("memory", "memory.soft_limit_in_bytes", str(L.memory_high))
        if L.swap_max is not None:  # memsw = memory + swap, and needs swap accounting
            total = (L.memory_max or 0) + L.swap_max
            self._set("memory", "memory.memsw.limit_in_bytes", str(total))
        if L.cpu is not None:
            self._set("cpu", "cpu.cfs_period_us", str(L.cpu_period_us))
            self._set("cpu", "cpu.cfs_quota_us", str(_quota_usec(L.cpu, L.cpu_period_us)))
        if L.pids_max is not None:
            self._set("pids", "pids.max", str(L.pids_max))
        for lim in L.io:
            if lim.rbps:
                self._set("blkio", "blkio.throttle.read_bps_device", f"{lim.device} {lim.rbps}")
            if lim.wbps:
                self._set("blkio", "blkio.throttle.write_bps_device", f"{lim.device} {lim.wbps}")
        if L.devices is not None:
            # Allow-list mode: deny everything, then allow the rules
            # (docs/kernel-notes.md, "cgroups": devices.list hides deny exceptions otherwise).
            self._set("devices", "devices.deny", "a")
            for rule in L.devices:
                self._set("devices", "devices.allow", rule)

    @needs("root", "removing a cgroup:")
    def remove(self, timeout: float = 5.0) -> None:
        """Kill what runs inside, wait for it to be reaped, remove every directory. Safe twice."""
        if not self._dirs:
            return
        self.kill()
        errs = []
        for e in sorted(self._entries, key=lambda e: -e.name.count("/")):
            try:
                remove(e.name, timeout)
                if os.path.isdir(e.name):
                    raise StillPresent(f"{e.name} is still there after rmdir")
                _registry.unregister(e)
            except OSError as exc:
                errs.append(f"{e.name}: {exc}")
        if errs:
            raise LabError("could not remove " + "; ".join(errs)
                           + " - run `python -m justaprocess cleanup` as root")
        self._forget_parents()
        self._dirs, self._entries, self.places = [], [], {}

    def __enter__(self) -> "Cgroup":
        return self if self._dirs else self.create()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        L = self.limits
        lim = ", ".join(f"{k}={v}" for k, v in (
            ("memory", L.memory_max and human(L.memory_max)),
            ("memory_high", L.memory_high and human(L.memory_high)),
            ("cpu", L.cpu), ("pids", L.pids_max)) if v is not None)
        state = self.path if self._dirs else "not created"
        return f"<Cgroup {self.name} {lim or 'no limits'} {state}>"

    # -- processes --------------------------------------------------------------------
    def _require(self) -> None:
        if not self._dirs:
            raise BadInput(f"cgroup {self.name} is not created: call .create() first")

    @needs("root", "moving a process into a cgroup:")
    def add(self, pid: int) -> None:
        """Move a process into this cgroup, in every hierarchy (write to cgroup.procs)."""
        self._require()
        if pid == os.getpid():
            raise BadInput("the calling process (a notebook's kernel) never moves into a lab "
                           "cgroup: start a child in it with run() or spawn()")
        pid = proc.check_pid(pid, user_space=True, doing="the kernel keeps it in the root cgroup")
        for d in self._dirs:
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    def join_self(self) -> None:
        """Called *in a child* (e.g. a preexec_fn or after fork): move the caller in.

        A child that joins before execve(2) runs its program entirely inside the
        cgroup: nothing it does is ever charged elsewhere.
        """
        for d in self._dirs:
            _write(os.path.join(d, "cgroup.procs"), str(os.getpid()))

    def preexec(self, then=None):
        """A preexec_fn for subprocess: die with the parent, join this cgroup, then ``then()``."""
        self._require()

        def setup():
            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            self.join_self()
            if then:
                then()
        return setup

    def run(self, argv: list[str], *, timeout: float | None = 30, capture: bool = True,
            **popen) -> subprocess.CompletedProcess:
        """Run a command to its end inside the cgroup (a child that joins before exec).

        ``returncode`` is ``-9`` when it was SIGKILLed (an OOM kill); the child is
        killed when ``timeout`` passes.
        """
        self._require()
        if capture:
            popen.setdefault("stdout", subprocess.PIPE)
            popen.setdefault("stderr", subprocess.PIPE)
        popen.setdefault("text", True)
        popen.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(argv, preexec_fn=self.preexec(popen.pop("preexec_fn", None)),
                              timeout=timeout, check=False, **popen)

    def spawn(self, argv: list[str], *, note: str = "", **popen):
        """Start a registered background child inside the cgroup (a ``lab.LabProcess``)."""
        self._require()
        inner = popen.pop("preexec", None)
        return _spawn.LabProcess(argv, note=note or f"in {self.name}",
                              preexec=lambda: (self.join_self(), inner and inner()), **popen)

    def pids(self) -> list[int]:
        """PIDs in the cgroup (all hierarchies agree unless someone moved a process)."""
        self._require()
        return pids_in(self.path)

    # -- reading ------------------------------------------------------------------------
    def stats(self) -> Stats:
        """Limits and usage in one call (see :class:`Stats`)."""
        self._require()
        return read_stats(self.places)

    def events(self) -> dict[str, int]:
        """The v2 cgroup.events (populated, frozen); on pure v1 the same facts, read by hand."""
        self._require()
        core = self.places.get(CORE)
        if core:
            return _keyed(_read(os.path.join(core.path, "cgroup.events")))
        s = self.stats()
        return {"populated": int(bool(s.populated)), "frozen": int(bool(s.frozen))}

    def populated(self) -> bool:
        return bool(self.events().get("populated"))

    def wait_empty(self, timeout: float = 5.0) -> bool:
        """Wait until no process is left (True), or ``timeout`` (False).

        v2: poll(2) cgroup.events, which signals POLLPRI on every change
        (cgroup-v2.rst "cgroup.events"), instead of busy-reading it; v1: read.
        """
        self._require()
        return self._wait_event("populated", 0, lambda: not self.populated(), timeout)

    def _wait_event(self, key: str, want: int, done, timeout: float) -> bool:
        """Until cgroup.events says ``key want`` (v2: poll(2) for POLLPRI), else until
        ``done()`` (v1 has no events: read again); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        core = self.places.get(CORE)
        if core is None:
            while not done():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
            return True
        fd = os.open(os.path.join(core.path, "cgroup.events"), os.O_RDONLY)
        try:
            p = select.poll()
            p.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                if _keyed(os.read(fd, 4096).decode()).get(key) == want:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                p.poll(min(left, 0.25) * 1000)  # a timeout too: a missed wakeup costs 0.25 s
        finally:
            os.close(fd)

    def watch(self, interval: float = 0.25, duration: float | None = None) -> Iterator[Stats]:
        """Yield a reading every ``interval`` seconds (until ``duration`` or the cgroup goes)."""
        self._require()
        end = None if duration is None else time.monotonic() + duration
        while self._dirs and (end is None or time.monotonic() < end):
            yield self.stats()
            time.sleep(interval)

    # -- control ------------------------------------------------------------------------
    @needs("root", "freezing a cgroup:")
    def freeze(self, frozen: bool = True, timeout: float = 2.0) -> None:
        """Stop (or thaw) every process inside: v2 cgroup.freeze, v1 freezer.state."""
        self._require()
        core = self.places.get(CORE)
        if core:
            _write(os.path.join(core.path, "cgroup.freeze"), "1" if frozen else "0")
        elif "freezer" in self.places:
            _write(self._file("freezer", "freezer.state"), "FROZEN" if frozen else "THAWED")
        else:
            raise NotSupported("no freezer here: neither cgroup.freeze (v2) nor the v1 freezer")
        # Freezing completes asynchronously: each process stops at its next return to
        # user space (cgroup-v2.rst "Core Interface Files", cgroup-v1/freezer-subsystem.rst).
        if not self._wait_event("frozen", int(frozen), lambda: self.stats().frozen == frozen,
                                timeout):
            what = "freeze" if frozen else "thaw"
            raise LabError(f"{self.name} did not {what} within {timeout:g} s: a process in "
                           "uninterruptible sleep (state D in `ps`) stops only when its I/O ends. "
                           f"Try .freeze({frozen}) again, or .kill() the cgroup")

    def thaw(self) -> None:
        self.freeze(False)

    @needs("root", "killing the processes of a cgroup:")
    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process inside and wait until the cgroup is empty.

        v2 has cgroup.kill (Linux 5.14), which also catches processes forking
        meanwhile; v1 kills PID by PID until none is left (a fork bomb refills it).
        """
        self._require()
        core = self.places.get(CORE)
        if core and os.path.exists(os.path.join(core.path, "cgroup.kill")):
            _write(os.path.join(core.path, "cgroup.kill"), "1")
        deadline = time.monotonic() + timeout
        while True:
            left = [p for d in self._dirs for p in pids_in(d)]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise LabError(f"processes {left} in {self.name} did not die within {timeout} s "
                               "(zombies whose parent does not reap them?)")
            time.sleep(0.01)


# --- a process's cgroups, for the terminal -------------------------------------------

def describe(pid: int | str = "self", root: str = ROOT, mounts: str = MOUNTS,
             procfs: str = proc.PROCFS) -> dict:
    """A process's cgroup(s), limits and usage: what ``python -m justaprocess cgroup PID`` shows."""
    if pid != "self":
        pid = proc.check_pid(pid, procfs)
    places = places_of(pid, root, mounts, procfs)
    return {
        "pid": pid,
        "layout": layout(root, mounts),
        "cgroups": {k: {"path": p.path, "version": p.hierarchy.version} for k, p in sorted(places.items())},
        "stats": read_stats(places).asdict(),
    }


_LABELS = (
    ("memory", "memory_current", "memory_peak", "memory_max", "memory_high", "oom_kills"),
    ("cpu", "cpu_usage_usec", "cpu_quota", "cpu_periods", "cpu_throttled", "cpu_throttled_usec"),
    ("pids", "pids_current", "pids_max", "pids_max_events"),
    ("io", "io_read_bytes", "io_write_bytes"),
    ("state", "populated", "frozen"),
)


def format_description(d: dict) -> str:
    lines = [f"process {d['pid']} - cgroup layout {d['layout']}"]
    for k, p in d["cgroups"].items():
        lines.append(f"  {k:<9} v{p['version']} {p['path']}")
    s = d["stats"]
    for group, *keys in _LABELS:
        parts = []
        for k in keys:
            v = s.get(k)
            if v is None and k not in ("memory_max", "memory_high", "cpu_quota", "pids_max"):
                continue
            short = k.split("_", 1)[1] if k.startswith(group) else k
            if k in ("memory_current", "memory_peak", "memory_max", "memory_high",
                     "io_read_bytes", "io_write_bytes"):
                v = human(v)
            elif k == "cpu_quota":
                v = "max" if v is None else f"{v:g} cores"
            elif k == "pids_max" and v is None:
                v = "max"
            parts.append(f"{short}={v}")
        if parts:
            lines.append(f"  {group:<7} " + "  ".join(parts))
    return "\n".join(lines)


def _cli(args) -> int:
    if args.enter_leaf:
        leaf = enter_leaf(args.enter_leaf)
        print(f"moved this service's processes into {leaf}" if leaf else
              "nothing to move (not pure v2, the root cgroup, or already in the leaf)")
        return 0
    if args.pid is None:
        raise BadInput("give a PID (python -m justaprocess cgroup PID), or --enter-leaf")
    d = describe(args.pid)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("cgroup", help="a process's cgroup(s), limits and current usage")
    p.add_argument("pid", type=int, nargs="?", help="the process (e.g. a container's PID as seen from the host)")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.add_argument("--enter-leaf", metavar="NAME", nargs="?", const="server", default=None,
                   help="for a service's start script on cgroup v2 (Delegate=yes): move the "
                        "service's processes into the leaf NAME (default: server), so the lab's "
                        "cgroups can go beside it")
    p.set_defaults(func=_cli)
