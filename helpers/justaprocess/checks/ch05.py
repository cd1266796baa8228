"""Checks of 05 · A container built by hand.

Each check asks the kernel: a fresh container's namespaces, a web server that
does or does not get its port, the cgroup file the limit really sits in.
"""
from __future__ import annotations

import contextlib
import os
import time

from .. import capabilities as caps
from .. import cgroups, proc
from ..errors import BadInput, LabError
from . import Rows, describe, expect_collection, expect_str, exercise, right, wrong

KINDS = "a set of namespace kinds like {'net', 'uts'}"


def _truth_shared() -> tuple[set[str], set[str]]:
    """(shared, separate): a fresh Container's namespaces compared with this kernel's."""
    from ..container import Container
    with Container(["/bin/sleep", "10"]) as c:
        c.start()
        host, theirs = proc.namespaces("self"), c.namespaces
    shared = {k for k in theirs if theirs[k] == host.get(k)}
    return shared, set(theirs) - shared


@exercise(1, title="which namespaces does it share?")
def check_shared(shared_with_host):
    """Exercise 1: which namespaces does the hand-built container share with the kernel?"""
    items = expect_collection(shared_with_host, "shared_with_host", KINDS, str,
                              "a kind name like 'net'")
    known = set(proc.namespaces("self"))
    unknown = [k for k in items if k not in known]
    if unknown:
        return wrong("unknown-kind",
                     f"{unknown[0]!r} is not a namespace kind: the kinds are the names of the "
                     f"links in /proc/PID/ns: {', '.join(sorted(known))}")
    answer = set(items)
    truth, separate = _truth_shared()
    if answer == truth:
        return right(f"{sorted(truth)}: the engine asks for no user namespace (it runs as real "
                     "root) and no time namespace (runc does not either)")
    if answer and answer == separate:
        return wrong("inverted",
                     "those are the kinds the container has its *own* namespace of: the exercise "
                     "asks for the ones it shares with this kernel",
                     "keep the kinds whose numbers are equal in web.namespaces and "
                     "proc.namespaces('self')")
    not_shared = sorted(answer - truth)
    if not_shared:
        return wrong("not-shared",
                     f"not shared: {', '.join(not_shared)} - the container has its own namespace "
                     "of " + ("that kind" if len(not_shared) == 1 else "those kinds")
                     + (f"; and {len(truth - answer)} shared kind(s) are missing" if truth - answer else ""),
                     f"not shared: {', '.join(not_shared)} (their numbers in web.namespaces differ "
                     "from proc.namespaces('self')): keep only the kinds whose numbers are equal")
    return wrong("missing-kind",
                 f"all of yours are shared, but {len(truth - answer)} more kind(s) are: compare "
                 "web.namespaces with proc.namespaces('self') for all eight kinds",
                 f"also shared: {', '.join(sorted(truth - answer))} - the engine never asks for "
                 + ("that kind" if len(truth - answer) == 1 else "those kinds"))


def _serves_port_80(keep: list[str]) -> bool:
    """Does busybox httpd stay up on port 80 with only these capabilities?"""
    from ..container import Container
    with Container(["/bin/busybox", "httpd", "-f", "-p", "80"], caps=keep) as c:
        c.start()
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            if not c.running():
                return False
            time.sleep(0.02)
        return True


CAP = "one capability name (a string) like 'cap_chown'"


@exercise(2, title="the one capability a web server needs")
def check_bind_cap(needed_cap):
    """Exercise 2: the one capability busybox httpd needs to listen on port 80."""
    if isinstance(needed_cap, int) and not isinstance(needed_cap, bool):
        raise wrong("bit-number", f"`needed_cap` should be {CAP}; it is the int {needed_cap}, a "
                                  "bit number: caps.cap_name(n) gives the name of bit n")
    if isinstance(needed_cap, (list, tuple, set, frozenset)):
        raise wrong("type", f"`needed_cap` should be {CAP}; it is {describe(needed_cap)}: one "
                            "name, without the brackets")
    given = expect_str(needed_cap, "needed_cap", CAP)
    try:
        name = caps.cap_name(caps.cap_number(given))
    except (BadInput, LabError):
        return wrong("unknown-name", f"{given!r} is not a capability this kernel knows: names "
                                     "look like 'cap_chown' (capabilities(7) lists them)")
    if _serves_port_80([name]):
        return right(f"with only {name} the server listens on port 80; without it, bind(2) "
                     "fails with EACCES (ports below 1024 need it: capabilities(7))")
    return wrong("wrong-cap",
                 f"with only {name} the server could not listen on port 80: bind(2) refused the "
                 "port. What is special about port 80?",
                 "ports below 1024 are privileged: capabilities(7) names the capability to "
                 "\"bind a socket to Internet domain privileged ports\"")


def _names_for(version: int) -> tuple[str, str]:
    """(the memory hard limit's file name on this cgroup version, the other version's name)."""
    return ("memory.max", "memory.limit_in_bytes") if version == 2 else \
        ("memory.limit_in_bytes", "memory.max")


@exercise(3, context=("container",), title="where the limit lives")
def check_limit_file(limit_file, container):
    """Exercise 3: the host's file that holds the web container's memory limit."""
    path = expect_str(limit_file, "limit_file", "a string: the absolute path of a file under "
                                                "/sys/fs/cgroup")
    if not os.path.isabs(path) or not path.startswith(cgroups.ROOT + "/"):
        raise wrong("type", f"`limit_file` should be the absolute path of a file under "
                                 f"{cgroups.ROOT}; it is {describe(path)}")
    memdir = container.cgroup.places["memory"].path
    dirs = set(container.cgroups)
    folder, name = os.path.split(os.path.normpath(path))
    right_name, other_name = _names_for(container.cgroup.version)
    v = f"cgroup v{container.cgroup.version}"
    if name == other_name:
        return wrong("v1-v2",
                     f"{'right directory, but ' if folder == memdir else ''}{name} is the name on "
                     f"the other cgroup version: this container's memory controller is {v}",
                     f"on {v} the memory hard limit's file is called {right_name}"
                     + ("" if folder == memdir else f", in the memory directory of web.cgroups"))
    if folder != memdir:
        where = ("one of the container's directories, but not the memory one"
                 if folder in dirs else "not one of the container's cgroup directories")
        return wrong("wrong-dir",
                     f"{folder} is {where}: web.cgroups lists the container's directories",
                     f"the file is in the container's memory directory: {memdir}")
    if name != right_name:
        try:
            with open(path) as f:
                shown = f"it holds {f.read().strip()[:40]!r}"
        except OSError as exc:
            shown = f"it cannot be read ({exc.strerror})"
        return wrong("other-file",
                     f"right directory; {name} is another file ({shown}): which one holds the "
                     "hard limit?",
                     f"right directory; on {v} the hard limit is in {right_name}")
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as exc:
        return wrong("unreadable", f"cannot read {path}: {exc.strerror}")
    expected = cgroups.parse_size(container.memory)
    if value != str(expected):
        return wrong("other-value", f"that file says {value}, not the container's limit "
                                    f"({expected}): is it the web container's cgroup?")
    return right(f"the limit, {value} bytes, is a number in a file of the container's own "
                 "cgroup directory")


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

@contextlib.contextmanager
def _with_web():
    from ..container import Container
    with Container(["/bin/sleep", "60"], memory="64M", pids=32) as web:
        web.start()
        memdir = web.cgroup.places["memory"].path
        right_name, other_name = _names_for(web.cgroup.version)
        yield {"container": web, "memdir": memdir, "right": right_name, "other": other_name}


def _file(where: str, name: str):
    return lambda c: dict(limit_file=os.path.join(c[where] if where in c else where, c[name]
                                                  if name in c else name))


TABLE = {
    1: Rows(right=lambda c: dict(shared_with_host={"time", "user"}),
            wrong={
                "type": lambda c: dict(shared_with_host="user"),
                "unknown-kind": lambda c: dict(shared_with_host={"user", "clock"}),
                "inverted": lambda c: dict(shared_with_host={"cgroup", "ipc", "mnt", "net",
                                                             "pid", "uts"}),
                "not-shared": lambda c: dict(shared_with_host={"user", "time", "net"}),
                "missing-kind": lambda c: dict(shared_with_host={"user"}),
            }),
    2: Rows(right=lambda c: dict(needed_cap="cap_net_bind_service"),
            wrong={
                "type": lambda c: dict(needed_cap=["cap_net_bind_service"]),
                "bit-number": lambda c: dict(needed_cap=10),
                "unknown-name": lambda c: dict(needed_cap="cap_bind_service"),
                "wrong-cap": lambda c: dict(needed_cap="cap_net_admin"),
            }),
    3: Rows(setup=_with_web,
            right=_file("memdir", "right"),
            wrong={
                "type": lambda c: dict(limit_file=None),
                "type:path": _file("memory", "right"),
                "v1-v2": _file("memdir", "other"),
                "wrong-dir": _file(cgroups.ROOT, "right"),
                "other-file": _file("memdir", "memory.current" if cgroups.layout() == cgroups.V2
                                    else "memory.usage_in_bytes"),
            }),
}
