"""The lab's registry, below every other module: names, entries, state folders.

Every kernel object the course creates is named ``jap-<id>[-<suffix>]`` and
recorded here *before* it is made, so that one call (``lab.cleanup``) removes
it all - also after the Jupyter kernel that made it was killed.

* **Names.** :func:`is_lab_name` is the one test of "a lab name": the prefix
  with its dash, then the six hex digits of :func:`new_id`, then an optional
  suffix.  ``japan0``, ``jap`` or ``japanese`` are not lab names, whoever made
  them.  :func:`is_lab_object` adds where an object of each kind may be: a
  folder or a mount only beneath the lab's own folders (run, cache, netns).
* **Entries.** One JSON file per object under ``<state>/registry/``: one file
  per object makes registering atomic without locks (several kernels and a
  test run may register at once).  The objects one owner makes together (a
  cgroup's directories in every hierarchy) may share one file
  (:func:`register_all`): a file created and unlinked costs ~0.1 ms of CPU on
  ext4, the most of what a container's set-up spends outside the kernel's own work
  (bench/README.md).  ``<state>`` is ``$JAP_STATE_DIR`` or /var/lib/justaprocess.

This module imports nothing of the package but ``proc`` and ``errors``; the
modules that make objects (cgroups, network, containers) register here, and
``lab`` checks presence, removes and cleans up.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field, fields
from typing import Sequence

from . import _libc, proc
from .errors import BadInput, needs

PREFIX = "jap"
# The shape lab.name() makes: jap-<6 hex digits>[-<suffix>].  A suffix is short
# and plain (it ends up in interface names, hostnames, cgroup and folder names).
_NAME = re.compile(r"jap-[0-9a-f]{6}(-[A-Za-z0-9._-]+)?")
# The shared parent of the lab's cgroups in each hierarchy (cgroups.tree).
LAB_PARENT = "jap-lab"
IFNAMSIZ = 16  # interface names: at most 15 characters (netdevice(7))

# Kinds in the order cleanup removes them: processes first (they hold the rest
# busy), podman's objects (justaprocess.podman: containers hold mounts and cgroups),
# AppArmor profiles (named by lab.name(), unloaded with apparmor_parser -R), host settings they may have changed, then mounts, loop devices (named by
# their backing file), network links, network namespaces, named v1 cgroup hierarchies
# (chapter 07's release_agent, named by lab.name()), cgroups, folders.
KINDS = ("process", "podman", "apparmor", "sysctl", "mount", "loop", "link", "netns", "hierarchy",
         "cgroup", "dir")
NETNS_DIR = "/run/netns"
SYSCTL_DIR = "/proc/sys"


def state_dir() -> str:
    return os.environ.get("JAP_STATE_DIR", "/var/lib/justaprocess")


def run_dir() -> str:
    """Where per-object folders go (container rootfs copies, volumes): all leftovers if present."""
    return os.path.join(state_dir(), "run")


def cache_dir() -> str:
    """Made once and kept (built root filesystems): not leftovers."""
    return os.path.join(state_dir(), "cache")


def registry_dir() -> str:
    return os.path.join(state_dir(), "registry")


# --- names -----------------------------------------------------------------------

def new_id() -> str:
    """A short random id (6 hex digits); names made from it stay under IFNAMSIZ."""
    return secrets.token_hex(3)


def is_lab_name(name: str) -> bool:
    """Is ``name`` a lab name, ``jap-<6 hex>`` or ``jap-<6 hex>-<suffix>``?"""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def name(suffix: str = "", ident: str | None = None) -> str:
    """A lab name: ``jap-<id>`` or ``jap-<id>-<suffix>``."""
    ident = ident or new_id()
    out = f"{PREFIX}-{ident}" + (f"-{suffix}" if suffix else "")
    if not is_lab_name(out):
        raise BadInput(f"{out!r} is not a lab name: the id is 6 hex digits (lab.new_id()), "
                       "a suffix letters, digits, '.', '_' or '-' (e.g. lab.name('web'))")
    return out


def _below(path: str, folder: str) -> str | None:
    """The first component of ``path`` beneath ``folder``, or None if it is not beneath it."""
    folder = os.path.normpath(folder)
    if not path.startswith(folder + "/"):
        return None
    return path[len(folder) + 1:].split("/", 1)[0]


def in_lab_dirs(path: str, netns: bool = True) -> bool:
    """Is ``path`` inside a lab-named folder of the run or cache folder (or a lab netns name)?

    ``<run>/jap-1a2b3c/rootfs`` is; ``<run>/japhy``, ``/mnt/jap-x`` and the run
    folder itself are not.
    """
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path:
        return False  # relative, or with .. or // in it: never a lab path
    places = [run_dir(), cache_dir()] + ([NETNS_DIR] if netns else [])
    return any(is_lab_name(_below(path, p) or "") for p in places)


def is_lab_cgroup(path: str) -> bool:
    """A lab cgroup directory: its own name is a lab name or the lab parent's ``jap-lab``."""
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path:
        return False
    base = os.path.basename(path)
    return is_lab_name(base) or base == LAB_PARENT


def is_lab_object(kind: str, name: str) -> bool:
    """May an object of ``kind`` called ``name`` be the lab's?  The one rule, per kind."""
    if kind == "process":
        return True  # named pid-N; identified by PID and start time, not by name
    if kind == "link":
        return is_lab_name(name) and len(name) < IFNAMSIZ
    if kind in ("netns", "apparmor", "hierarchy"):
        return is_lab_name(name)
    if kind == "cgroup":
        return is_lab_cgroup(name)
    if kind == "mount":
        return in_lab_dirs(name)
    if kind in ("dir", "loop", "podman"):  # podman: a store folder or <store>/<type>/<name>
        return in_lab_dirs(name, netns=False)
    if kind == "sysctl":
        return (name.startswith(SYSCTL_DIR + "/") and os.path.normpath(name) == name)
    return False


def check(kind: str, name: str) -> None:
    """Raise BadInput unless ``name`` may be a lab object of ``kind``."""
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if not is_lab_object(kind, name):
        where = {"dir": f"a folder jap-<id>... inside {run_dir()} or {cache_dir()}",
                 "mount": f"inside a jap-<id> folder of {run_dir()} or {cache_dir()}",
                 "loop": f"a backing file inside a jap-<id> folder of {run_dir()}",
                 "cgroup": "a cgroup directory named jap-<id>... (or jap-lab)",
                 "sysctl": f"a file under {SYSCTL_DIR}"}.get(kind, "jap-<id>[-suffix] (lab.name())")
        raise BadInput(f"refusing {kind} {name!r}: not a lab object; lab objects are named "
                       f"jap-<id>[-suffix]: {where}")


# --- entries ---------------------------------------------------------------------

@dataclass
class Entry:
    """One registered object."""
    kind: str
    name: str                 # netns/link name, or the path of a cgroup/mount/dir/sysctl
    owner: int = 0            # PID of the process that created it (a kernel, a test run)
    owner_start: int = 0      # and its start time: PIDs are recycled
    pid: int = 0              # for processes
    start: int = 0            # for processes: start time, so a recycled PID is never killed
    created: float = field(default_factory=time.time)
    note: str = ""
    value: str = ""           # for sysctl: the value to put back
    file: str = ""            # the registry file it shares with others (register_all); "": key

    @property
    def key(self) -> str:
        safe = self.name.strip("/").replace("/", "%") or "root"
        return f"{self.kind}--{safe}--{self.pid}.json"

    def _record(self) -> dict:
        out = dict(self.__dict__)  # the fields are plain values (asdict copies deeply)
        del out["file"]            # where it is stored is not part of it
        return out


_FIELDS = {f.name for f in fields(Entry)}


@needs("root", "registering a lab object (the registry is root's):")
def register(kind: str, name: str, *, pid: int = 0, note: str = "", value: str = "") -> Entry:
    """Record an object *before* creating it (so a crash in between leaves no orphan)."""
    check(kind, name)
    if kind == "netns":
        note_netns_dir()
    me = os.getpid()
    e = Entry(kind, name, owner=me, owner_start=_own_start(me), pid=pid,
              start=proc.start_time(pid) if pid else 0, note=note, value=value)
    _write(e.key, e._record())
    return e


@needs("root", "registering lab objects (the registry is root's):")
def register_all(objects: Sequence[tuple[str, str, str]]) -> list[Entry]:
    """Record several objects, ``(kind, name, note)`` each, in one file *before* creating any.

    For what one owner makes and removes together (a cgroup's directory in each
    hierarchy, the lab parents it makes): one file created and one unlinked instead of
    one per object.  Each entry is an object of its own for :func:`entries`,
    ``lab.remove`` and cleanup; :func:`unregister` of some rewrites the file without them.
    """
    if not objects:
        return []
    for kind, name, _ in objects:
        check(kind, name)
        if kind in ("netns", "process", "sysctl"):
            raise BadInput(f"register_all: a {kind} is registered on its own (register())")
    me = os.getpid()
    out = [Entry(kind, name, owner=me, owner_start=_own_start(me), note=note)
           for kind, name, note in objects]
    group = "group--" + out[0].key   # the first object's name: no other owner has it
    for e in out:
        e.file = group
    _write(group, [e._record() for e in out])
    return out


def _write(key: str, record) -> None:
    """Write one registry file atomically: a reader sees the old file or the new, whole."""
    folder = registry_dir()
    me = os.getpid()
    # The temporary name is this process's own: two kernels registering the same object at
    # once (the shared lab parent) would otherwise rename each other's file away (ENOENT).
    tmp = os.path.join(folder, f".{key}.{me}.tmp")
    data = json.dumps(record).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:  # the first entry, or a cleanup removed the folder
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(folder, key))


_OWN: tuple[int, int] = (0, 0)


def _own_start(me: int) -> int:
    """This process's start time, read once per process (a forked child reads its own)."""
    global _OWN
    if _OWN[0] != me:
        _OWN = (me, proc.start_time(me))
    return _OWN[1]


def unregister(entry: Entry) -> None:
    unregister_all([entry])


def unregister_all(gone: Sequence[Entry]) -> None:
    """Forget these entries: their own files unlinked; a shared file (register_all)
    rewritten without them, or unlinked when none of its objects is left."""
    shared: dict[str, set] = {}
    for e in gone:
        if e.file:
            shared.setdefault(e.file, set()).add((e.kind, e.name, e.pid))
            continue
        try:
            os.unlink(os.path.join(registry_dir(), e.key))
        except FileNotFoundError:
            pass
    for group, which in shared.items():
        path = os.path.join(registry_dir(), group)
        try:
            with open(path) as f:
                records = json.load(f)
        except FileNotFoundError:
            continue
        except ValueError:
            records = []
        rest = [r for r in records if (r.get("kind"), r.get("name"), r.get("pid", 0)) not in which]
        if rest:
            _write(group, rest)
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def renote(entry: Entry, note: str) -> None:
    """Change the note of a registered entry (what hangs on the object), in its file."""
    entry.note = note
    if not entry.file:
        _write(entry.key, entry._record())
        return
    path = os.path.join(registry_dir(), entry.file)
    with open(path) as f:
        records = json.load(f)
    for r in records:
        if (r.get("kind"), r.get("name"), r.get("pid", 0)) == (entry.kind, entry.name, entry.pid):
            r["note"] = note
    _write(entry.file, records)


def entries() -> list[Entry]:
    """Every registered object, in cleanup order."""
    out = []
    try:
        names = os.listdir(registry_dir())
    except FileNotFoundError:
        return []
    for fn in names:
        if not fn.endswith(".json") or fn.startswith("."):
            continue
        try:
            with open(os.path.join(registry_dir(), fn)) as f:
                data = json.load(f)
            if isinstance(data, list):  # several objects in one file (register_all)
                out += [Entry(**{k: v for k, v in d.items() if k in _FIELDS and k != "file"}, file=fn)
                        for d in data]
            else:
                out.append(Entry(**{k: v for k, v in data.items() if k in _FIELDS and k != "file"}))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # a half-written file from a crash: the .tmp never got renamed
    out = [e for e in out if e.kind in KINDS]
    # Cleanup order by kind; deepest paths first within a kind.
    return sorted(out, key=lambda e: (KINDS.index(e.kind), -e.name.count("/"), e.created))


def alive(pid: int, start: int) -> bool:
    """Running, and the same process (a recycled PID has another start time): proc.running."""
    return proc.running(pid, start=start)


def owner_alive(e: Entry) -> bool:
    return alive(e.owner, e.owner_start)


# --- the mount table, and the /run/netns mount ---------------------------------------

def mount_targets(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points of this process's mount namespace, in mount order (proc.mountinfo)."""
    if mountinfo == "/proc/self/mountinfo":
        return [m.target for m in proc.own_mounts()]
    pid_dir = os.path.dirname(mountinfo)
    return proc.mount_points(os.path.basename(pid_dir), os.path.dirname(pid_dir))


def mounted(path: str) -> bool:
    return path in mount_targets()


# `ip netns add` (ip-netns(8)) turns /run/netns into a shared bind mount of
# itself the first time it runs. When the lab's netns was the first, that mount
# is the lab's to remove once no namespace is named there any more.
NETNS_MARK = "netns-dir-made-by-lab"


def note_netns_dir() -> None:
    if not mounted(NETNS_DIR):
        os.makedirs(state_dir(), exist_ok=True)
        open(os.path.join(state_dir(), NETNS_MARK), "a").close()


def remove_dir(path: str) -> None:
    """Remove a lab folder, unmounting whatever is mounted at or below it first.

    rmtree would otherwise descend into a bind mount and delete the *source*'s files.
    """
    below = mount_targets()
    for target in sorted((t for t in below if t == path or t.startswith(path + "/")),
                         key=len, reverse=True):
        _libc.umount2(target, _libc.MNT_DETACH)
    shutil.rmtree(path, onerror=_gone_meanwhile)


def _gone_meanwhile(func, path: str, exc_info) -> None:
    """rmtree's error handler: a file another cleanup removed meanwhile is what we wanted.

    Two stale cleanups (two test runs, a kernel's setup cell) may empty the same
    folder at once; each then finds files the other already unlinked (ENOENT).
    """
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]
