"""Is this machine ready for the lab?  Each check says what to do when it fails.

``python -m justaprocess doctor`` prints the report and exits 0 only when the
lab can run.  Checks marked ``required=False`` are information: a missing
optional tool or capability is reported, not fatal.
"""
from __future__ import annotations

import os
import platform
import shutil
from typing import NamedTuple

from . import cgroups, proc

# Tools the course runs, and the Debian package that has each (the one list of
# packages is tools/system-packages.txt; this maps tools to it for messages).
TOOLS = {
    "busybox": "busybox-static",
    "runc": "runc",
    "crun": "crun",
    "podman": "podman",
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "lsns": "util-linux",
    "capsh": "libcap2-bin",
    "setcap": "libcap2-bin",
    "getpcaps": "libcap2-bin",
    "strace": "strace",
    "ps": "procps",
}

# Controllers the chapters use; on v2, 'io' replaces v1's 'blkio' and there is
# no 'devices' file interface (it is an eBPF program: cgroup-v2.rst, "Device controller").
WANTED_V1 = ("memory", "cpu", "pids", "blkio", "devices", "freezer")
WANTED_V2 = ("memory", "cpu", "pids", "io")

MIN_KERNEL = (5, 6)  # time namespaces arrived in Linux 5.6 (time_namespaces(7))


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def lab_controllers() -> tuple[str, list[str], list[str]]:
    """(layout, controllers the lab can use, wanted ones missing)."""
    lay = cgroups.layout()
    have = cgroups.controllers()
    wanted = WANTED_V2 if lay == cgroups.V2 else WANTED_V1
    usable = [c for c in wanted if c in have]
    return lay, usable, [c for c in wanted if c not in have]


def checks() -> list[Check]:
    out = []
    root = os.geteuid() == 0
    out.append(Check("root", root, f"euid {os.geteuid()}",
                     "run as root: `sudo -i`, then `make lab` (the lab is meant for a disposable VM)"))

    rel = platform.release()
    kv = _kernel_version(rel)
    out.append(Check("kernel", kv >= MIN_KERNEL, f"Linux {rel}",
                     f"the lab needs Linux >= {MIN_KERNEL[0]}.{MIN_KERNEL[1]} (time namespaces): "
                     "use the course VM (vagrant/)"))

    ns = proc.namespaces("self")
    missing_ns = [k for k in proc.NS_KINDS if k not in ns]
    out.append(Check("namespaces", not missing_ns,
                     f"{len(ns)} of 8 kinds" + (f", missing {', '.join(missing_ns)}" if missing_ns else ""),
                     "a kernel built with all CONFIG_*_NS options: use the course VM"))

    try:
        lay, usable, missing = lab_controllers()
        out.append(Check("cgroups", not [c for c in missing if c in ("memory", "cpu", "pids")],
                         f"{lay}; controllers the lab can use: {', '.join(usable) or 'none'}"
                         + (f"; missing: {', '.join(missing)}" if missing else ""),
                         "enable the memory, cpu and pids controllers (cgroup_enable=memory on the "
                         "kernel command line) or use the course VM"))
    except Exception as exc:  # noqa: BLE001 - the report must not crash
        out.append(Check("cgroups", False, str(exc), "use the course VM (vagrant/)"))

    bnd = proc.caps("self").bounding
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    absent = [i for i in range(last + 1) if not bnd >> i & 1]
    try:
        from .capabilities import cap_name
        absent = [cap_name(i) for i in absent]
    except ImportError:  # the chapter's module is optional for the doctor
        pass
    # CAP_SYS_ADMIN (21) is what namespaces and mounts need: without it nothing runs.
    out.append(Check("capabilities", bool(bnd >> 21 & 1),
                     # plain words: chapter 00 shows this line long before chapter 04
                     # explains the bounding set
                     "root here may use every privilege" if not absent else
                     f"root here may not use {', '.join(map(str, absent))} (chapter 04; the "
                     "demos read what root may do, they do not assume it)",
                     "run as root on a machine that is not itself a locked-down container"))

    for tool, pkg in TOOLS.items():
        if tool == "busybox":  # it must be the static one: the rootfs has no libc
            from .errors import MissingTool
            from .rootfs import busybox_binary
            try:
                path = busybox_binary()
            except MissingTool:
                path = None
        else:
            path = shutil.which(tool)
        out.append(Check(f"tool {tool}", bool(path), path or "not found",
                         f"apt-get install {pkg}  (or run `make lab`, which installs it)"))

    try:
        import pyroute2  # noqa: F401
        out.append(Check("python: pyroute2", True, getattr(pyroute2, "__version__", "?"), ""))
    except ImportError:
        out.append(Check("python: pyroute2", False, "not importable",
                         "run `make lab` to build the course's virtual environment"))
    return out


def ready(results: list[Check] | None = None) -> bool:
    results = results if results is not None else checks()
    return all(c.ok for c in results if c.required)


def report(results: list[Check] | None = None) -> str:
    results = results if results is not None else checks()
    lines = []
    for c in results:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"{mark} {c.name:<17} {c.detail}")
        if not c.ok:
            lines.append(f"     {'':<17} -> {c.fix}")
    lines.append("the lab is ready" if ready(results) else
                 "the lab is NOT ready: fix the FAIL lines above")
    return "\n".join(lines)


def summary(results: list[Check] | None = None) -> str:
    """One line for a notebook's setup cell."""
    results = results if results is not None else checks()
    if not ready(results):
        bad = ", ".join(c.name for c in results if c.required and not c.ok)
        return f"lab NOT ready ({bad}): run `python -m justaprocess doctor` in a terminal"
    lay = next((c.detail.split(";")[0] for c in results if c.name == "cgroups"), "?")
    return f"lab ready: root, Linux {platform.release().split('-')[0]}, cgroup {lay}"
