"""Checks of 06 · Many runtimes, the same building blocks.

Answers are checked against the live containers of the notebook: the kernel's
files, not stored values.
"""
from __future__ import annotations

import contextlib
import os

from .. import cgroups, runtimes
from . import Rows, describe, expect_collection, expect_str, exercise, right, run_first, wrong

_LIMIT_FILES = {1: "memory.limit_in_bytes", 2: "memory.max"}


def _memory_place(pid: int) -> cgroups.Place:
    """The memory controller's directory of a process (the kernel's /proc/PID/cgroup + mounts)."""
    return cgroups.places_of(pid)["memory"]


@exercise(1, context=("container",), title="where runc put the limit")
def check_limit_file(limit_file, container):
    """Exercise 1: the kernel file that holds the runc container's memory limit."""
    path = expect_str(limit_file, "limit_file", f"a string: the path of a file under {cgroups.ROOT}")
    if not path.startswith(cgroups.ROOT + "/"):
        raise wrong("type", f"`limit_file` should be a path under {cgroups.ROOT}; it is "
                            f"{describe(path)}: the mount point of the memory hierarchy, the "
                            "container's cgroup path, then the file name")
    if not container.pid or not os.path.exists(f"/proc/{container.pid}"):
        raise run_first("the cell that starts the runc container `oci`")
    place = _memory_place(container.pid)
    version = place.hierarchy.version
    right_name, other_name = _LIMIT_FILES[version], _LIMIT_FILES[3 - version]
    folder, name = os.path.split(os.path.normpath(path))
    in_folder = container.pid in cgroups.pids_in(folder)
    if name == other_name or (name == right_name and in_folder and folder != place.path):
        # the v1/v2 mix-up: the other version's file name, or a v2 path on the hybrid
        # (the unified hierarchy has the container, but not its memory controller)
        here = "cgroup v2" if version == 2 else "cgroup v1 (the memory hierarchy)"
        what = (f"{name} is the other cgroup version's name" if name == other_name else
                f"{folder} is the container's cgroup in another hierarchy, without the memory "
                "controller")
        return wrong("v1-v2",
                     f"{'right directory, but ' if folder == place.path else ''}{what}: this "
                     f"machine's memory controller is {here}",
                     f"on {here} the limit is in {right_name}, in the directory of the line of "
                     f"/proc/{container.pid}/cgroup that names "
                     + ("'0::'" if version == 2 else "memory"))
    if folder != place.path:
        return wrong("wrong-dir",
                     f"the container's PID {container.pid} is not in {folder}/cgroup.procs: which "
                     "cgroup is it in?",
                     f"read /proc/{container.pid}/cgroup: join the path of its "
                     + ("'0::' line to /sys/fs/cgroup" if version == 2 else
                        "memory line to /sys/fs/cgroup/memory"))
    if name != right_name:
        return wrong("other-file",
                     f"right directory; {name} is another file of the memory controller: which "
                     "one holds the hard limit?",
                     f"right directory; on cgroup v{version} the hard limit is {right_name}")
    with open(path) as f:
        value = f.read().strip()
    if value != str(64 << 20):
        return wrong("other-value", f"that file says {value}, not 64M: is it the runc "
                                    "container's cgroup?")
    return right(f"the file says {value}: the 64M runc wrote from config.json "
                 "(linux.resources.memory.limit), in the same file the hand-built engine writes")


ROWS = "a set of row names of the table, e.g. {'seccomp'}"


@exercise(2, context=("a", "b"), title="name the differences")
def check_differences(differ, a: runtimes.ContainerFacts, b: runtimes.ContainerFacts):
    """Exercise 2: the rows of the side-by-side table where the two containers differ."""
    given = set(expect_collection(differ, "differ", ROWS, str, "a row name like 'seccomp'"))
    rows = list(a.summary())
    unknown = sorted(given - set(rows))
    if unknown:
        return wrong("unknown-row",
                     f"not rows of the table: {', '.join(map(repr, unknown))}. Rows: "
                     + ", ".join(rows))
    truth = set(runtimes.differences(a, b))
    if given == truth:
        return right("those are the differences; everything else - namespaces of the container, "
                     "the cgroup and its limits, the capabilities, PID 1 - is the same building "
                     "block")
    same, forgotten = sorted(given - truth), sorted(truth - given)
    if same:
        return wrong("same-rows",
                     f"the same in both columns: {', '.join(same)}"
                     + (f"; and {len(forgotten)} row(s) that differ are missing" if forgotten else ""),
                     f"{', '.join(same)}: both columns say the same; keep only rows whose two "
                     "values differ (runtimes.side_by_side(a, b) shows them)")
    return wrong("too-few",
                 f"{len(forgotten)} more row(s) differ: compare the two columns again, row by row",
                 f"also different: {forgotten[0]}" + (f" and {len(forgotten) - 1} more"
                                                       if len(forgotten) > 1 else ""))


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

@contextlib.contextmanager
def _with_runc():
    from .. import rootfs
    fs = rootfs.build("busybox")
    with runtimes.OCIContainer(fs, ["sleep", "60"], memory="64M", pids=64) as oci:  # starts it
        place = _memory_place(oci.pid)
        v = place.hierarchy.version
        yield {"container": oci, "dir": place.path, "right": _LIMIT_FILES[v],
               "other": _LIMIT_FILES[3 - v], "parent": os.path.dirname(place.path),
               "unified": cgroups.places_of(oci.pid)[cgroups.CORE].path
               if cgroups.layout() == cgroups.HYBRID else None}


@contextlib.contextmanager
def _with_two():
    from .. import container, rootfs
    fs = rootfs.build("busybox")
    hand = container.Container(["sleep", "60"], rootfs=fs, memory="64M", pids=64)
    try:
        hand.create()
        hand.start()
        with runtimes.OCIContainer(fs, ["sleep", "60"], memory="64M", pids=64) as oci:
            a, b = runtimes.facts(hand.pid, "hand-built"), oci.facts()
            yield {"a": a, "b": b, "differ": runtimes.differences(a, b),
                   "same": [r for r in a.summary() if r not in runtimes.differences(a, b)]}
    finally:
        hand.remove()


def _file(folder: str, name: str):
    return lambda c: dict(limit_file=os.path.join(c[folder], c.get(name, name)))


TABLE = {
    1: Rows(setup=_with_runc,
            right=_file("dir", "right"),
            wrong={
                # the hybrid's unified hierarchy holds the container too, not its memory controller
                "v1-v2:unified": lambda c: dict(limit_file=os.path.join(
                    c["unified"], "memory.max")) if c["unified"] else None,
                "type": lambda c: dict(limit_file=["memory.max"]),
                "type:relative": lambda c: dict(limit_file="memory/" + c["right"]),
                "v1-v2": _file("dir", "other"),
                "wrong-dir": _file("parent", "right"),
                "other-file": _file("dir", "memory.current" if cgroups.layout() == cgroups.V2
                                    else "memory.usage_in_bytes"),
            }),
    2: Rows(setup=_with_two,
            right=lambda c: dict(differ=set(c["differ"])),
            wrong={
                "type": lambda c: dict(differ="seccomp"),
                "unknown-row": lambda c: dict(differ=set(c["differ"]) | {"seccomp profile"}),
                "same-rows": lambda c: dict(differ=set(c["differ"]) | {c["same"][0]}),
                "too-few": lambda c: dict(differ=set(c["differ"][1:])),
            }),
}
