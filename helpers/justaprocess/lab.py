"""The lab's life cycle: presence, removal, cleanup and leftovers.

Every kernel object the course creates is named ``jap-<id>[-<suffix>]`` and
recorded in the registry (``_registry``: names, entries, state folders) *before*
it is made, so that one call removes it all - also after the Jupyter kernel
that made it was killed.  Cleanup only ever touches what is registered or
carries a lab name (:func:`is_lab_name`, the one rule) where the lab puts
things: never the machine's own cgroups, interfaces, mounts or processes, even
when their names look alike (``japan0``, ``japanese.scope``, ``/mnt/jap-x``).
After each removal it checks that the object is gone, and says what is not.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterable

from . import (_apparmor, _apparmor_parser, _libc, _loop, _netlink, _podman_store, _registry, _v1hier,
               cgroups, proc)
from ._registry import (  # noqa: F401 - the registry's API, as lab.X
    KINDS, NETNS_DIR, PREFIX, Entry, cache_dir, entries, in_lab_dirs, is_lab_name,
    is_lab_object, name, new_id, owner_alive, register, run_dir, state_dir, unregister)
from ._spawn import LabProcess, spawn  # noqa: F401 - lab.spawn, lab.LabProcess
from .errors import LabError, NeedsPrivilege, StillPresent, needs

_alive = _registry.alive
_mounted = _registry.mounted


class CleanupIncomplete(LabError):
    """Cleanup tried everything; some objects are still there (``left``)."""

    def __init__(self, removed: list[Entry], failed: list[str]):
        self.removed, self.failed = removed, failed
        super().__init__("cleanup could not remove: " + "; ".join(failed)
                         + " - run `python -m justaprocess cleanup` again; if it persists, "
                           "reboot the VM")


# --- is it still there? -------------------------------------------------------

def _netns_dir_is_ours_and_unused() -> bool:
    return (os.path.exists(os.path.join(state_dir(), _registry.NETNS_MARK))
            and _mounted(NETNS_DIR) and not os.listdir(NETNS_DIR))


def _release_netns_dir() -> None:
    """Unmount /run/netns if the lab's `ip netns add` made it a mount and it is empty."""
    if _netns_dir_is_ours_and_unused():
        while _mounted(NETNS_DIR):  # ip mounts it once; a second `ip netns add` race may stack two
            _libc.umount2(NETNS_DIR, _libc.MNT_DETACH)
    if not os.path.exists(NETNS_DIR) or not _mounted(NETNS_DIR):
        try:
            os.unlink(os.path.join(state_dir(), _registry.NETNS_MARK))
        except FileNotFoundError:
            pass


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _subdirs(path: str) -> list[str]:
    try:
        return [n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]
    except FileNotFoundError:
        return []


def present(e: Entry) -> bool:
    """Is the object still there?  (A sysctl: still different from the value to put back.)"""
    if e.kind == "process":
        return _alive(e.pid, e.start)
    if e.kind == "mount" and e.name == NETNS_DIR:
        return _netns_dir_is_ours_and_unused()
    if e.kind == "mount":
        return _mounted(e.name)
    if e.kind == "link":  # asked over netlink: /sys/class/net may show another namespace's
        return _netlink.link_exists(e.name)
    if e.kind == "netns":
        return os.path.exists(os.path.join(NETNS_DIR, e.name))
    if e.kind == "cgroup" and os.path.basename(e.name) == cgroups.LAB_PARENT:
        # The shared lab parent is the lab's to remove only once no child is left:
        # the children belong to other kernels, which remove them (cgroups.remove).
        return os.path.isdir(e.name) and not _subdirs(e.name)
    if e.kind in ("cgroup", "dir"):
        return os.path.isdir(e.name)
    if e.kind == "loop":
        return bool(_loop.loops_backed_by(e.name))
    if e.kind == "sysctl":
        now = _read_sysctl(e.name)
        return now is not None and now.split() != e.value.split()
    if e.kind == "podman":  # a podman store or an object in it: podman knows
        return _podman_store.present(e.name)
    if e.kind == "apparmor":  # a loaded profile (securityfs lists them)
        return _apparmor.present(e.name)
    if e.kind == "hierarchy":  # a named v1 hierarchy: listed in /proc/self/cgroup
        return _v1hier.exists(e.name)
    return False


# --- removing -----------------------------------------------------------------

def _kill(pid: int, start: int, timeout: float = 10.0) -> None:
    # Not reaped here: if it is our child, its Popen reaps it and reads the signal.
    # proc.kill returns as soon as the process has exited; the bound is for slow exits:
    # on the emulated v2 VM under load an OCI container's init, SIGKILLed by cleanup
    # after its kernel died, was still there after 3 s (a PID namespace's init exits
    # only after every process of its namespace).
    proc.kill(pid, start, timeout=timeout)


_remove_dir = _registry.remove_dir


@needs("root", "removing a lab object:")
def remove(e: Entry) -> None:
    """Remove one object if it is still there, check that it is gone, then forget it.

    Raises :class:`StillPresent` (and keeps the entry) when the object survived.
    """
    if e.kind == "mount" and e.name == NETNS_DIR:  # found by _scan: see _release_netns_dir
        _release_netns_dir()
        return
    _registry.check(e.kind, e.name)
    if present(e):
        if e.kind == "process":
            _kill(e.pid, e.start)
        elif e.kind == "sysctl":
            with open(e.name, "w") as f:  # the value it had before the lab wrote it
                f.write(e.value)
        elif e.kind == "mount":
            for _ in range(8):  # a path may carry stacked mounts: until none is left
                if not _mounted(e.name):
                    break
                _libc.umount2(e.name, _libc.MNT_DETACH)
        elif e.kind == "link":
            _netlink.link_delete(e.name)
        elif e.kind == "netns":
            _netlink.netns_remove(e.name)
            _release_netns_dir()
        elif e.kind == "cgroup":
            cgroups.remove(e.name)
        elif e.kind == "loop":
            _loop.detach_loops(e.name)
        elif e.kind == "dir":
            _remove_dir(e.name)
        elif e.kind == "podman":
            _podman_store.remove(e.name)
        elif e.kind == "apparmor":
            _apparmor_parser.remove(e.name)
        elif e.kind == "hierarchy":
            _v1hier.sweep(e.name)
        if present(e):
            raise StillPresent(f"{e.kind} {e.name} is still there after removing it")
    unregister(e)


def cleanup(owner: int | None = None, stale: bool = False) -> list[Entry]:
    """Remove registered objects (all of them by default) and any lab-named leftovers.

    ``owner``: only what that process created (a kernel cleaning up after itself).
    ``stale``: only what was created by processes that are gone (a crashed kernel).
    Safe to run twice. Returns what was removed; raises :class:`CleanupIncomplete`
    (with ``.removed`` and ``.failed``) after trying them all if some are still there.
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "cleanup")
    done: list[Entry] = []
    failed: list[str] = []

    def attempt(e: Entry) -> None:
        try:
            remove(e)
            done.append(e)
        except (OSError, LabError) as exc:
            failed.append(f"{e.kind} {e.name}: {exc}")

    for e in entries():
        if owner is not None and e.owner != owner:
            continue
        if stale and owner_alive(e):
            continue
        attempt(e)
    if owner is None and not stale:
        for e in _scan():  # lab-named objects whose entries were lost
            attempt(e)
    if failed:
        raise CleanupIncomplete(done, failed)
    return done


# --- finding leftovers --------------------------------------------------------

def _lab_cgroup_roots() -> Iterable[str]:
    """The lab's parent cgroup in each hierarchy (created beneath our own cgroup)."""
    try:
        hs = cgroups.hierarchies()
    except OSError:
        return []
    roots = []
    for h in hs:
        try:
            roots.append(cgroups.own_path(h))
        except Exception:  # noqa: BLE001 - a hierarchy we are not in
            continue
        try:  # on v2 the lab parent may sit beside our leaf (cgroups.lab_base)
            base = os.path.normpath(cgroups.lab_base(h))
            if base != os.path.normpath(roots[-1]):
                roots.append(base)
        except Exception:  # noqa: BLE001 - no usable base: nothing of the lab there
            pass
    return roots


def _link_names() -> list[str]:
    """The interfaces of this network namespace (rtnetlink(7) RTM_GETLINK)."""
    return sorted(_netlink.call(lambda ip: [link.get_attr("IFLA_IFNAME") for link in ip.get_links()],
                                "listing the network interfaces"))


def _scan() -> list[Entry]:
    """Objects with lab names where the lab puts them, present, and not in the registry."""
    known = {(e.kind, e.name) for e in entries()}
    found: list[Entry] = []

    def add(kind: str, nm: str) -> None:
        if (kind, nm) not in known and is_lab_object(kind, nm):
            found.append(Entry(kind, nm, note="found by its lab name"))

    if os.path.isdir(NETNS_DIR):
        for n in sorted(os.listdir(NETNS_DIR)):
            if is_lab_name(n):
                add("netns", n)
    if _netns_dir_is_ours_and_unused():
        found.append(Entry("mount", NETNS_DIR, note="made a mount by the lab's `ip netns add`"))
    for n in _link_names():
        if is_lab_name(n):
            add("link", n)
    for n in _apparmor.loaded():
        if is_lab_name(n):
            add("apparmor", n)
    for n in _v1hier.lab_hierarchies():
        add("hierarchy", n)
    for root in _lab_cgroup_roots():
        try:
            for n in sorted(os.listdir(root)):
                if is_lab_name(n) and os.path.isdir(os.path.join(root, n)):
                    add("cgroup", os.path.join(root, n))
                if n == cgroups.LAB_PARENT:  # the lab's cgroups live one level down
                    lp = os.path.join(root, n)
                    for c in sorted(os.listdir(lp)):
                        if is_lab_name(c) and os.path.isdir(os.path.join(lp, c)):
                            add("cgroup", os.path.join(lp, c))
        except OSError:
            continue
    for target in _registry.mount_targets():
        # Mounts inside the lab's folders; a netns name under /run/netns is the netns kind's.
        if in_lab_dirs(target, netns=False):
            add("mount", target)
    for n in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        try:  # loop devices over a file of the lab (cgroups.LoopDevice)
            with open(f"/sys/block/{n}/loop/backing_file") as f:
                back = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if in_lab_dirs(back, netns=False):
            add("loop", back)
    if os.path.isdir(run_dir()):
        for n in sorted(os.listdir(run_dir())):
            if is_lab_name(n):
                d = os.path.join(run_dir(), n)  # a podman store is removed through podman
                add("podman" if os.path.isfile(os.path.join(d, ".jap-podman-store")) else "dir", d)
    return found


def leftovers() -> list[Entry]:
    """Everything of the lab still present: registered objects and lab-named strays."""
    return [e for e in entries() if present(e)] + _scan()
