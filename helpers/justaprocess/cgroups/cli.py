"""``python -m justaprocess cgroup PID``: a process's cgroups, limits and usage, for the terminal."""
from __future__ import annotations

import json
import os

from .. import _bpfdev, proc
from .._units import human
from ..errors import BadInput
from . import files
from .tree import CORE, MOUNTS, ROOT, enter_leaf, layout, places_of
from .stats import read_stats


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
        "devices": device_control(places),
    }


def device_control(places: dict) -> dict:
    """Who decides which devices the process may open: v1's ``devices.list``, and the eBPF
    programs attached to its v2 cgroup *and every ancestor* (all of them must allow:
    cgroup-v2.rst "Device controller"), as {directory: ["ID NAME", ...]} (BPF_PROG_QUERY)."""
    out: dict = {}
    dv = places.get("devices")
    if dv is not None and dv.hierarchy.version == 1:
        text = files._read(os.path.join(dv.path, "devices.list"))
        if text is not None:
            out["v1 devices.list"] = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    core = places.get(CORE)
    if core is not None:
        progs: dict[str, list[str]] | str = {}
        top = os.path.normpath(core.hierarchy.mountpoint)
        d = os.path.normpath(core.path)
        while True:
            try:
                ids = _bpfdev.attached(d)
            except PermissionError:
                progs = "reading the attached programs needs root (BPF_PROG_QUERY)"
                break
            except (OSError, BadInput):
                ids = []  # gone meanwhile, or no cgroup2 directory (a test's fake tree)
            for i in ids:
                try:
                    name = _bpfdev.info(i)[1] or "(no name)"
                except OSError:
                    name = "(gone)"
                progs.setdefault(d, []).append(f"{i} {name}")
            if d == top or not d.startswith(top + "/"):
                break
            d = os.path.dirname(d)
        out["ebpf"] = progs
    return out


_LABELS = (
    ("memory", "memory_current", "memory_peak", "memory_max", "memory_high", "memory_low",
     "memory_min", "oom_kills"),
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
            if k in ("memory_current", "memory_peak", "memory_max", "memory_high", "memory_low",
                     "memory_min",
                     "io_read_bytes", "io_write_bytes"):
                v = human(v)
            elif k == "cpu_quota":
                v = "max" if v is None else f"{v:g} cores"
            elif k == "pids_max" and v is None:
                v = "max"
            parts.append(f"{short}={v}")
        if parts:
            lines.append(f"  {group:<7} " + "  ".join(parts))
    dev = d.get("devices") or {}
    if "v1 devices.list" in dev:
        lines.append("  devices v1 devices.list: " + "; ".join(dev["v1 devices.list"]))
    if isinstance(dev.get("ebpf"), str):
        lines.append(f"  devices eBPF: {dev['ebpf']}")
    elif dev.get("ebpf"):
        for where, progs in dev["ebpf"].items():
            lines.append(f"  devices eBPF on {where}: " + ", ".join(progs))
    elif "ebpf" in dev:
        lines.append("  devices no eBPF device program on its v2 cgroup or above")
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
