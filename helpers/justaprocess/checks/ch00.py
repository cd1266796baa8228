"""Checks of 00 · Welcome."""
from __future__ import annotations

import os

from .. import cgroups, proc
from . import Verdict, missing, verdict


def check_kernel(kernel_pid, net_ns) -> Verdict:
    if (m := missing(kernel_pid=kernel_pid, net_ns=net_ns)):
        return m
    if kernel_pid != os.getpid():
        return Verdict(False, f"{kernel_pid} is not this kernel's PID: which process runs this "
                              "cell? (os.getpid())")
    return verdict(net_ns == proc.namespaces()["net"],
                   "the kernel's PID is what os.getpid() returns in a cell, and its network "
                   "namespace is the number in /proc/self/ns/net",
                   "kernel_pid is right; net_ns should be the number between the brackets of "
                   "os.readlink('/proc/self/ns/net'), as an int")


def check_layout(layout) -> Verdict:
    if (m := missing(layout=layout)):
        return m
    if layout not in ("v1", "hybrid", "v2"):
        return Verdict(False, f"{layout!r} is none of 'v1', 'hybrid', 'v2'")
    return verdict(layout == cgroups.layout(),
                   "you read the cgroup layout from the mount table, as the helpers do",
                   "look at the line of /proc/self/mounts whose target is /sys/fs/cgroup: "
                   "cgroup2 there means 'v2'; a tmpfs means v1 hierarchies below it, "
                   "'hybrid' if one of them is a cgroup2")
