"""A lab cgroup (:class:`Cgroup`): made with limits, processes started inside, read, removed."""
from __future__ import annotations

import dataclasses
import errno
import os
import select
import signal
import time
from typing import Iterator

from .. import _bpfdev, _launch_run, _launch_spec, _libc, _registry, _spawn, proc
from .._units import human
from ..errors import BadInput, LabError, NeedsPrivilege, NotSupported, StillPresent, needs
from . import files
from .files import _keyed
from .tree import (CORE, LAB_PARENT, MOUNTS, ROOT, V1_CONTROLLERS, V2, V2_CONTROLLERS, Hierarchy, Place,
                     _enable, controllers, hierarchies, lab_base, layout, pids_in, remove)
from .limits import Limits, _quota_usec, _swap_active
from .stats import Stats, read_pressure, read_stats


PARENT_NOTE = "lab parent (shared; removed when empty)"


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
                 memory_high: int | str | None = None, memory_low: int | str | None = None,
                 memory_min: int | str | None = None, swap: int | str | None = None,
                 oom_group: bool | None = None, cpu: float | None = None, pids: int | None = None,
                 io: dict | None = None,
                 devices: list[str] | None = None, device_program: bool | None = None,
                 cpu_period_us: int = 100_000, parent: "Cgroup | None" = None,
                 root: str = ROOT, mounts: str = MOUNTS, procfs: str = proc.PROCFS):
        if name is None:
            name = _registry.name("cg")
        if not isinstance(name, str) or not _registry.is_lab_name(name) or len(name) > 64:
            raise BadInput(f"cgroup name {name!r}: lab cgroups are named jap-<id>[-suffix] "
                           "(letters, digits, - _ .), e.g. lab.name('web')")
        self.name = name
        self.limits = Limits.parse(memory=memory, memory_high=memory_high, memory_low=memory_low,
                                   memory_min=memory_min, swap=swap, oom_group=oom_group, cpu=cpu,
                                   pids=pids, io=io, devices=devices, cpu_period_us=cpu_period_us)
        if device_program not in (None, True, False):
            raise BadInput(f"device_program: True (an eBPF program on the cgroup2 directory), "
                           f"False (v1 devices files) or None (v2: eBPF, v1: files), not {device_program!r}")
        self.device_program = device_program
        self.device_filter: tuple[int, str] | None = None   # (id, name) of our eBPF program
        self.root, self.mounts, self.procfs = root, mounts, procfs
        if parent is not None and not isinstance(parent, Cgroup):
            raise BadInput(f"parent: a created lab Cgroup to nest this one in, not {parent!r}")
        self.parent = parent   # None: beneath the lab parent (jap-lab)
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

    def _bpf_devices(self, lay: str | None = None) -> bool:
        """Is the device allow-list an eBPF program (v2, or asked for) rather than v1 files?"""
        lay = lay or layout(self.root, self.mounts)
        return self.device_program is True or (self.device_program is None and lay == V2)

    def _needed(self, lay: str | None = None) -> set[str]:
        """The controllers the limits need; devices only when they are v1 files."""
        need = self.limits.controllers()
        if "devices" in need and self._bpf_devices(lay):
            # cgroup-v2.rst "Device controller": no files, an eBPF program on the cgroup2 dir.
            need.discard("devices")
        return need

    def _plan(self) -> tuple[list[Hierarchy], dict[str, Hierarchy]]:
        """Which hierarchies to use, checking every wanted controller exists."""
        lay = layout(self.root, self.mounts)
        have = controllers(self.root, self.mounts)
        need = self._needed(lay)
        if self.limits.devices is not None and self._bpf_devices(lay):
            if not any(h.version == 2 for h in hierarchies(self.root, self.mounts)):
                raise NotSupported("device_program=True needs a cgroup2 hierarchy, and this "
                                   "machine has none mounted (pure v1): use the devices files")
        if lay == V2:
            v2 = [h for h in hierarchies(self.root, self.mounts) if h.version == 2][0]
            if "devices" in need:
                raise NotSupported(
                    "device_program=False: cgroup v2 has no devices files; device access control "
                    "is an eBPF program attached to the cgroup (BPF_PROG_TYPE_CGROUP_DEVICE, "
                    "cgroup-v2.rst 'Device controller'): leave device_program at None")
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
        v2_only = [n for n, v in (("memory_high", self.limits.memory_high),
                                  ("memory_min", self.limits.memory_min)) if v is not None]
        if v2_only:
            raise NotSupported(
                f"{', '.join(v2_only)}: memory.high (a throttle) and memory.min (a hard protection) "
                "exist only in cgroup v2 (cgroup-v2.rst 'Memory Interface Files'); the memory "
                "controller here is v1. Its soft limit, memory.soft_limit_in_bytes, is v2's "
                "memory.low: use memory_low=, or the course VM (pure v2)")
        if self.limits.oom_group:
            raise NotSupported(
                "oom_group: memory.oom.group (the OOM killer takes every process of the cgroup at "
                "once) exists only in cgroup v2 (cgroup-v2.rst 'memory.oom.group'); a v1 memory "
                "controller kills one process, the one with the highest oom_score: use the course VM")
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
            nest = self._nest_dirs(hs)
            parents = {h: nest[h] if nest else self._lab_parent_path(h) for h in hs}
            # Registered before anything is made, in one registry file: the lab parents
            # still to make and this cgroup's directory in each hierarchy.
            todo = [p for p in parents.values() if not nest and not os.path.isdir(p)]
            made = _registry.register_all([("cgroup", p, PARENT_NOTE) for p in todo]
                                          + [("cgroup", os.path.join(parents[h], self.name),
                                              "lab cgroup") for h in hs])
            self._parents += made[:len(todo)]
            self._entries += made[len(todo):]
            for h in hs:
                path = os.path.join(parents[h], self.name)
                for attempt in range(3):
                    if not nest and (attempt or parents[h] in todo):
                        self._make_parent(parents[h])
                    if not nest and h.version == 2:
                        _enable(parents[h], list(V2_CONTROLLERS))
                    try:
                        files._mkdir(path)
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

    def _nest_dirs(self, hs: list[Hierarchy]) -> dict[Hierarchy, str]:
        """With ``parent=``: its directory in each hierarchy, controllers handed down (v2).

        A nested cgroup shows what a limit or a protection means *within* its parent:
        when the parent reaches its memory.max, the reclaim starts there and each child's
        memory.min/low counts as it is (cgroup-v2.rst "Memory Ownership", "memory.min").
        """
        if self.parent is None:
            return {}
        self.parent._require()
        have = {p.hierarchy: p.path for p in self.parent.places.values()}
        missing = [h.mountpoint for h in hs if h not in have]
        if missing:
            raise NotSupported(f"the parent {self.parent.name} has no directory in "
                               f"{', '.join(missing)}: create it with the same kinds of limits")
        for h in hs:
            if h.version == 2 and set(V2_CONTROLLERS) & set(h.controllers):
                _enable(have[h], list(V2_CONTROLLERS))   # EBUSY if it holds processes
        return {h: have[h] for h in hs}

    def _lab_parent_path(self, h: Hierarchy) -> str:
        """The shared lab parent's path in one hierarchy; on v2 the controllers handed
        down to it from its base (cgroup-v2.rst "Enabling and Disabling")."""
        base = lab_base(h, self.procfs)
        if h.version == 2 and set(V2_CONTROLLERS) & set(h.controllers):  # not the hybrid's unified
            have = (files._read(os.path.join(base, "cgroup.controllers")) or "").split()
            lacking = sorted(self._needed() - set(have))
            if lacking:  # the base's parent did not hand them down (systemd: Delegate=yes)
                raise NotSupported(f"the controller(s) {', '.join(lacking)} are not available in "
                                   f"{base} (its cgroup.controllers): delegate them to the lab's unit")
            _enable(base, list(V2_CONTROLLERS))
        return os.path.join(base, LAB_PARENT)

    def _make_parent(self, parent: str) -> None:
        """mkdir the shared lab parent, registered first (by create(), or here when another
        kernel removed it since create() looked)."""
        if not any(e.name == parent for e in self._parents):
            self._parents.append(_registry.register("cgroup", parent, note=PARENT_NOTE))
        try:
            files._mkdir(parent)
        except FileExistsError:
            pass  # another kernel made it meanwhile: shared, removed by whoever leaves it empty

    def _undo(self) -> None:
        for d in reversed(self._dirs):
            try:
                remove(d, timeout=2)
            except OSError:
                pass
        for e in self._parents:  # made, but no child of ours got into it: removed when empty
            try:
                remove(e.name)
            except OSError:
                pass
        _registry.unregister_all(self._entries + self._gone_parents())
        self._dirs, self._entries, self.places, self.written = [], [], {}, []

    def _gone_parents(self) -> list:
        """The lab parents we registered that are gone (the last child took them): they are
        no longer ours to unregister later."""
        gone = [e for e in self._parents if not os.path.isdir(e.name)]
        self._parents = [e for e in self._parents if e not in gone]
        return gone

    def _file(self, ctrl: str, name: str) -> str:
        return os.path.join(self.places[ctrl].path, name)

    def _set(self, ctrl: str, name: str, value: str) -> None:
        try:
            files._write(self._file(ctrl, name), value)
            self.written.append((self._file(ctrl, name), value))
        except FileNotFoundError:
            raise NotSupported(f"{name} is missing in {self.places[ctrl].path}: the {ctrl} "
                               "controller is not enabled there") from None
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY):
                raise BadInput(f"the kernel refused {value!r} for {name} ({exc.strerror}): "
                               "see cgroup-v2.rst / cgroup-v1 docs for its format") from exc
            raise

    @needs("root", "changing a cgroup's limits:")
    def update(self, **limits) -> "Cgroup":
        """Change limits of the created cgroup while its processes run, as ``runc update`` and
        ``docker update`` do: only the limits named are written (the constructor's keywords).

        >>> cg.update(cpu=0.02)          # cpu.max (v2) / cpu.cfs_quota_us (v1), nothing else
        """
        self._require()
        change = Limits.parse(**limits)
        need = change.controllers()
        if self._bpf_devices():
            need.discard("devices")  # an eBPF program, replaced in place
        missing = sorted(c for c in need
                         if not ({c, "blkio"} if c == "io" else {c}) & set(self.places))
        if missing:
            raise NotSupported(f"{self.name} has no {', '.join(missing)} controller to limit: "
                               "give that limit when the cgroup is created")
        self._apply(change)
        named = {f for f, v in (("memory_max", "memory"), ("memory_high", "memory_high"),
                                ("memory_low", "memory_low"), ("memory_min", "memory_min"),
                                ("swap_max", "swap"), ("oom_group", "oom_group"), ("cpu", "cpu"),
                                ("pids_max", "pids"),
                                ("io", "io"), ("devices", "devices"), ("cpu_period_us", "cpu_period_us"))
                 if v in limits}
        self.limits = dataclasses.replace(self.limits, **{f: getattr(change, f) for f in named})
        return self

    def _apply(self, L: Limits | None = None) -> None:
        """Write the limits (all of them, or those of ``L``), in the files of this cgroup's
        version (docs/kernel-notes.md, "cgroups")."""
        L = L or self.limits
        v2 = self.places.get("memory", self.places.get(CORE)).hierarchy.version == 2 \
            if self.places else False
        if v2:
            if L.memory_max is not None:
                self._set("memory", "memory.max", str(L.memory_max))
            # cgroup-v2.rst "Memory Interface Files": min and low protect from reclaim (low is
            # the soft limit: runc writes MemoryReservation there), high throttles, max OOM-kills.
            for name, v in (("memory.min", L.memory_min), ("memory.low", L.memory_low),
                            ("memory.high", L.memory_high)):
                if v is not None:
                    self._set("memory", name, str(v))
            if L.swap_max is not None and (L.swap_max != 0 or _swap_active()
                                           or os.path.exists(self._file("memory", "memory.swap.max"))):
                # swap=0 on a kernel without swap accounting and no swap: nothing to forbid.
                self._set("memory", "memory.swap.max", str(L.swap_max))
            if L.oom_group is not None:
                self._set("memory", "memory.oom.group", "1" if L.oom_group else "0")
            if L.cpu is not None:
                self._set("cpu", "cpu.max", f"{_quota_usec(L.cpu, L.cpu_period_us)} {L.cpu_period_us}")
            if L.pids_max is not None:
                self._set("pids", "pids.max", str(L.pids_max))
            for lim in L.io:
                parts = [f"rbps={lim.rbps}" if lim.rbps else "", f"wbps={lim.wbps}" if lim.wbps else ""]
                self._set("io", "io.max", f"{lim.device} " + " ".join(p for p in parts if p))
            if L.devices is not None:
                self._install_device_program(L.devices)
            return
        if L.memory_max is not None:
            self._set("memory", "memory.limit_in_bytes", str(L.memory_max))
        # v1's soft limit is the counterpart of v2's memory.low (docs/kernel-notes.md, "cgroups");
        # memory.high and memory.min have no v1 file: refused in create() before anything is made.
        if L.memory_low is not None:
            self._set("memory", "memory.soft_limit_in_bytes", str(L.memory_low))
        if L.swap_max is not None:
            self._v1_swap(L)
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
        if L.devices is not None and self._bpf_devices():
            self._install_device_program(L.devices)  # on the hybrid's unified directory
        elif L.devices is not None:
            # Allow-list mode: deny everything, then allow the rules
            # (docs/kernel-notes.md, "cgroups": devices.list hides deny exceptions otherwise).
            self._set("devices", "devices.deny", "a")
            for rule in L.devices:
                self._set("devices", "devices.allow", rule)

    def _v1_swap(self, L: Limits) -> None:
        """Bound swap on a v1 memory controller, so that a hard limit still OOM-kills on a
        host with swap instead of swapping (cgroup-v1/memory.rst).

        memsw counts memory + swap (needs swap accounting, CONFIG_MEMCG_SWAP and not
        ``swapaccount=0``); without it, swap=0 is ``memory.swappiness`` 0: "limit reclaim
        enforces that 0 swappiness really prevents from any swapping" (memory.rst 5.3;
        docs/kernel-notes.md, "cgroups").
        """
        memsw = self._file("memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            total = (L.memory_max if L.memory_max is not None else self.limits.memory_max or 0) \
                + L.swap_max
            self._set("memory", "memory.memsw.limit_in_bytes", str(total))
        elif L.swap_max == 0:
            self._set("memory", "memory.swappiness", "0")
        elif _swap_active():
            raise NotSupported(f"swap={human(L.swap_max)}: this v1 memory controller has no swap "
                               "accounting (no memory.memsw.* files: the kernel was booted with "
                               "swapaccount=0); give swap=0 (no swap at all) or use the course VM")

    def pressure(self) -> dict:
        """PSI of this cgroup: ``{'cpu'|'memory'|'io': {'some'|'full': Pressure}}``, read from
        its v2 directory (also the hybrid's unified one); see :func:`read_pressure`."""
        self._require()
        core = self.places.get(CORE)
        if core is None:
            raise NotSupported("pressure (PSI) files exist only in cgroup v2 directories "
                               "(cgroup-v2.rst 'PSI'), and this pure v1 machine has none: "
                               "read the whole machine's in /proc/pressure, or use the course VM")
        return read_pressure(core.path)

    def _install_device_program(self, rules: tuple[str, ...]) -> None:
        """The v2 device allow-list: an eBPF program built from ``rules``, attached to our
        cgroup2 directory (``_bpfdev``, as runc does); a program attached before is replaced.
        The cgroup's registry entry says so: removing the cgroup detaches it (tree.remove)."""
        core = self.places.get(CORE)
        if core is None:
            raise NotSupported(f"{self.name} has no cgroup2 directory to attach a device program to")
        prog = _bpfdev.install(core.path, rules)
        self.device_filter = (prog, _bpfdev.program_name(core.path))
        for e in self._entries:
            if e.name == core.path:  # its entry says what hangs on it
                _registry.renote(e, f"lab cgroup; device program {prog} "
                                 f"{self.device_filter[1]} attached (BPF_CGROUP_DEVICE)")

    def device_control(self) -> str:
        """How device access is controlled here, read back from the kernel: v1's
        ``devices.list``, or the ids of the eBPF programs attached (BPF_PROG_QUERY)."""
        self._require()
        lines = []
        if "devices" in self.places and self.limits.devices is not None and not self.device_filter:
            lst = files._read(self._file("devices", "devices.list")) or ""
            lines.append(f"v1 {self._file('devices', 'devices.list')}: "
                         + "; ".join(lst.strip().splitlines()))
        core = self.places.get(CORE)
        if core is not None:
            ids = _bpfdev.attached(core.path)
            if ids:
                lines.append(f"eBPF on {core.path}: BPF_CGROUP_DEVICE program(s) "
                             + ", ".join(f"{i} ({_bpfdev.info(i)[1]})" for i in ids))
        return "\n".join(lines) or "no device control on this cgroup (its parent's applies)"

    def device_program_dump(self) -> list[str]:
        """The eBPF device program attached here, as the kernel holds it (its translated
        instructions, read back: what ``bpftool prog dump xlated id N`` prints)."""
        self._require()
        if self.device_filter is None:
            raise BadInput(f"{self.name} has no device program: give devices=[...] on cgroup v2, "
                           "or device_program=True where a cgroup2 hierarchy is mounted")
        return _bpfdev.disassemble(_bpfdev.xlated(self.device_filter[0]))

    @needs("root", "removing a cgroup:")
    def remove(self, timeout: float = 5.0) -> None:
        """Kill what runs inside, wait for it to be reaped, remove every directory. Safe twice."""
        if not self._dirs:
            return
        self.kill()
        errs, done = [], []
        for e in sorted(self._entries, key=lambda e: -e.name.count("/")):
            try:
                remove(e.name, timeout)
                if os.path.isdir(e.name):
                    raise StillPresent(f"{e.name} is still there after rmdir")
                done.append(e)
            except OSError as exc:
                errs.append(f"{e.name}: {exc}")
        _registry.unregister_all(done + self._gone_parents())  # one registry file, mostly
        if errs:
            raise LabError("could not remove " + "; ".join(errs)
                           + " - run `python -m justaprocess cleanup` as root")
        self._dirs, self._entries, self.places = [], [], {}
        self.device_filter = None

    def __enter__(self) -> "Cgroup":
        return self if self._dirs else self.create()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        L = self.limits
        lim = ", ".join(f"{k}={v}" for k, v in (
            ("memory", L.memory_max and human(L.memory_max)),
            ("memory_min", L.memory_min and human(L.memory_min)),
            ("memory_low", L.memory_low and human(L.memory_low)),
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
            files._write(os.path.join(d, "cgroup.procs"), str(pid))

    def join_self(self) -> None:
        """Called *in a child* (e.g. a preexec_fn or after fork): move the caller in.

        A child that joins before execve(2) runs its program entirely inside the
        cgroup: nothing it does is ever charged elsewhere.
        """
        for d in self._dirs:
            files._write(os.path.join(d, "cgroup.procs"), str(os.getpid()))

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
            input: str | bytes | None = None, env: dict | None = None, cwd: str | None = None):
        """Run a command to its end inside the cgroup (a child that joins before exec),
        through the one launcher: a ``_launch.Result``.

        ``returncode`` is ``-9`` when it was SIGKILLed (an OOM kill); past ``timeout``
        it is killed and ``_launch.Timeout`` raised.
        """
        self._require()
        how = "pipe" if capture else "inherit"
        spec = _launch_spec.Spec(argv=list(argv), cgroup=list(self._dirs), stdout=how, stderr=how,
                                 env=env, cwd=cwd, note=f"in {self.name}")
        return _launch_run.run(spec, input=input, timeout=timeout)

    def spawn(self, argv: list[str], *, note: str = "", **popen):
        """Start a registered background child inside the cgroup (a ``lab.LabProcess``)."""
        self._require()
        return _spawn.LabProcess(argv, note=note or f"in {self.name}", cgroup=list(self._dirs), **popen)

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
            return _keyed(files._read(os.path.join(core.path, "cgroup.events")))
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
            files._write(os.path.join(core.path, "cgroup.freeze"), "1" if frozen else "0")
        elif "freezer" in self.places:
            files._write(self._file("freezer", "freezer.state"), "FROZEN" if frozen else "THAWED")
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
            files._write(os.path.join(core.path, "cgroup.kill"), "1")
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
