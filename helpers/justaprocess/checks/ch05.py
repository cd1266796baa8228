"""Checks of 05 · A container built by hand.

Each check asks the kernel: a fresh container's namespaces, a web server that
does or does not get its port, the cgroup file the limit really sits in.
"""
from __future__ import annotations

import os
import time

from .. import capabilities as caps
from .. import cgroups, proc
from ..errors import BadInput, LabError
from . import Verdict, missing, verdict

HINT_NS = ("start a Container, then compare proc.namespaces(c.pid) with proc.namespaces('self') "
           "kind by kind; answer the kinds whose numbers are equal, e.g. {'user'}")


def _kinds(answer) -> set[str] | None:
    if isinstance(answer, str):
        answer = answer.replace(",", " ").split()
    try:
        return {str(k).strip().lower() for k in answer}
    except TypeError:
        return None


def check_shared(shared_with_host) -> Verdict:
    """Exercise 1: which namespaces does the hand-built container share with the kernel?"""
    if (m := missing(shared_with_host=shared_with_host)):
        return m
    answer = _kinds(shared_with_host)
    if answer is None:
        return Verdict(False, "give a set of namespace kinds, e.g. {'user'}; " + HINT_NS)
    from ..container import Container
    with Container(["/bin/sleep", "10"]) as c:
        c.start()
        host, theirs = proc.namespaces("self"), c.namespaces
        truth = {k for k in theirs if theirs[k] == host.get(k)}
    return verdict(answer == truth,
                   f"{sorted(truth)}: the engine asks for no user namespace (it runs as real "
                   "root) and no time namespace (runc does not either)",
                   HINT_NS)


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


def check_bind_cap(needed_cap) -> Verdict:
    """Exercise 2: the one capability busybox httpd needs to listen on port 80."""
    if (m := missing(needed_cap=needed_cap)):
        return m
    if not isinstance(needed_cap, str):
        return Verdict(False, "give one capability name as a string, e.g. 'cap_chown'")
    try:
        name = caps.cap_name(caps.cap_number(needed_cap))
    except (BadInput, LabError) as exc:
        return Verdict(False, f"{exc} - capabilities(7) lists the names")
    works = _serves_port_80([name])
    return verdict(works,
                   f"with only {name} the server listens on port 80; without it, bind(2) "
                   "fails with EACCES (ports below 1024 need it: capabilities(7))",
                   f"with only {name} the server could not listen on port 80: which capability "
                   "does capabilities(7) name for binding ports below 1024?")


def check_limit_file(limit_file, container) -> Verdict:
    """Exercise 3: the host's file that holds the web container's memory limit."""
    if (m := missing(limit_file=limit_file)):
        return m
    if not isinstance(limit_file, str) or not os.path.isabs(limit_file):
        return Verdict(False, "give the absolute path of a file under /sys/fs/cgroup")
    dirs = container.cgroups
    expected = cgroups.parse_size(container.memory)
    try:
        with open(limit_file) as f:
            value = f.read().strip()
    except OSError as exc:
        return Verdict(False, f"cannot read {limit_file}: {exc.strerror}; look in "
                              "web.cgroups for the container's directories")
    in_its_cgroup = os.path.dirname(limit_file) in dirs
    name_ok = os.path.basename(limit_file) in ("memory.max", "memory.limit_in_bytes")
    ok = in_its_cgroup and name_ok and value == str(expected)
    return verdict(ok,
                   f"the limit, {value} bytes, is a number in a file of the container's own "
                   "cgroup directory",
                   "the file is in one of web.cgroups (the memory one) and is called "
                   "memory.limit_in_bytes on cgroup v1 and the hybrid, memory.max on v2")
