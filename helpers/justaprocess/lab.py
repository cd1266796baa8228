"""The lab's life cycle: naming, the on-disk registry, cleanup and leftovers.

Every kernel object the course creates is named from one prefix (``jap``) and
recorded in a registry on disk *before* it is used, so that one call removes
it all - also after the Jupyter kernel that made it was killed.  Cleanup only
ever touches what is registered or carries the prefix: never the machine's own
cgroups, interfaces, mounts or processes.

Registry: one JSON file per object under ``<state>/registry/``.  One file per
object makes registering atomic without locks (several kernels and a test run
may register at once).  ``<state>`` is ``$JAP_STATE_DIR`` or /var/lib/justaprocess.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

from . import _libc, cgroups, proc
from .errors import BadInput, NeedsPrivilege

PREFIX = "jap"
# Kinds in the order cleanup removes them: processes first (they hold the rest
# busy), then mounts, loop devices (named by their backing file), network links,
# network namespaces, cgroups, folders.
KINDS = ("process", "mount", "loop", "link", "netns", "cgroup", "dir")
NETNS_DIR = "/run/netns"


def state_dir() -> str:
    return os.environ.get("JAP_STATE_DIR", "/var/lib/justaprocess")


def run_dir() -> str:
    """Where per-object folders go (container rootfs copies, volumes): all leftovers if present."""
    return os.path.join(state_dir(), "run")


def cache_dir() -> str:
    """Made once and kept (built root filesystems): not leftovers."""
    return os.path.join(state_dir(), "cache")


def new_id() -> str:
    """A short random id; names made from it stay under IFNAMSIZ (15 chars)."""
    return secrets.token_hex(3)


def name(suffix: str = "", ident: str | None = None) -> str:
    """A lab name: ``jap-<id>`` or ``jap-<id>-<suffix>``."""
    ident = ident or new_id()
    return f"{PREFIX}-{ident}" + (f"-{suffix}" if suffix else "")


@dataclass
class Entry:
    """One registered object."""
    kind: str
    name: str                 # netns/link name, or the path of a cgroup/mount/dir
    owner: int = 0            # PID of the process that created it (a kernel, a test run)
    owner_start: int = 0      # and its start time: PIDs are recycled
    pid: int = 0              # for processes
    start: int = 0            # for processes: start time, so a recycled PID is never killed
    created: float = field(default_factory=time.time)
    note: str = ""

    @property
    def key(self) -> str:
        safe = self.name.strip("/").replace("/", "%") or "root"
        return f"{self.kind}--{safe}--{self.pid}.json"


def _registry() -> str:
    return os.path.join(state_dir(), "registry")


def is_lab_name(kind: str, name: str) -> bool:
    """Names carry the prefix; a path (cgroup, mount, dir) has a component that does."""
    if kind == "process":
        return True
    if kind in ("link", "netns"):
        return name.startswith(PREFIX)
    return any(part.startswith(PREFIX) for part in name.split("/"))


def _check_prefixed(kind: str, name: str) -> None:
    if not is_lab_name(kind, name):
        raise BadInput(f"lab objects are named {PREFIX}-...: refusing to register {kind} {name!r}")


def register(kind: str, name: str, *, pid: int = 0, note: str = "") -> Entry:
    """Record an object *before* creating it (so a crash in between leaves no orphan)."""
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    _check_prefixed(kind, name)
    if kind == "netns":
        _note_netns_dir()
    me = os.getpid()
    e = Entry(kind, name, owner=me, owner_start=proc.start_time(me), pid=pid,
              start=proc.start_time(pid) if pid else 0, note=note)
    os.makedirs(_registry(), exist_ok=True)
    tmp = os.path.join(_registry(), "." + e.key + ".tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(e), f)
    os.replace(tmp, os.path.join(_registry(), e.key))
    return e


def unregister(entry: Entry) -> None:
    try:
        os.unlink(os.path.join(_registry(), entry.key))
    except FileNotFoundError:
        pass


def entries() -> list[Entry]:
    """Every registered object, in cleanup order."""
    out = []
    try:
        names = os.listdir(_registry())
    except FileNotFoundError:
        return []
    for fn in names:
        if not fn.endswith(".json") or fn.startswith("."):
            continue
        try:
            with open(os.path.join(_registry(), fn)) as f:
                out.append(Entry(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue  # a half-written file from a crash: the .tmp never got renamed
    # Cleanup order by kind; deepest paths first within a kind.
    return sorted(out, key=lambda e: (KINDS.index(e.kind), -e.name.count("/"), e.created))


def _alive(pid: int, start: int) -> bool:
    """Running, and the same process (a recycled PID has another start time).

    A zombie counts as gone: it holds nothing, and only its parent can reap it.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] != "Z" and int(fields[19]) == start


def owner_alive(e: Entry) -> bool:
    return _alive(e.owner, e.owner_start)


# --- is it still there? -------------------------------------------------------

def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


# `ip netns add` (ip-netns(8)) turns /run/netns into a shared bind mount of
# itself the first time it runs. When the lab's netns was the first, that mount
# is the lab's to remove once no namespace is named there any more.
_NETNS_MARK = "netns-dir-made-by-lab"


def _note_netns_dir() -> None:
    if not _mounted(NETNS_DIR):
        os.makedirs(state_dir(), exist_ok=True)
        open(os.path.join(state_dir(), _NETNS_MARK), "a").close()


def _netns_dir_is_ours_and_unused() -> bool:
    return (os.path.exists(os.path.join(state_dir(), _NETNS_MARK)) and _mounted(NETNS_DIR)
            and not os.listdir(NETNS_DIR))


def _release_netns_dir() -> None:
    """Unmount /run/netns if the lab's `ip netns add` made it a mount and it is empty."""
    if _netns_dir_is_ours_and_unused():
        while _mounted(NETNS_DIR):  # ip mounts it once; a second `ip netns add` race may stack two
            _libc.umount2(NETNS_DIR, _libc.MNT_DETACH)
    if not os.path.exists(NETNS_DIR) or not _mounted(NETNS_DIR):
        try:
            os.unlink(os.path.join(state_dir(), _NETNS_MARK))
        except FileNotFoundError:
            pass


def present(e: Entry) -> bool:
    if e.kind == "process":
        return _alive(e.pid, e.start)
    if e.kind == "mount" and e.name == NETNS_DIR:
        return _netns_dir_is_ours_and_unused()
    if e.kind == "mount":
        return _mounted(e.name)
    if e.kind == "link":
        return os.path.exists(f"/sys/class/net/{e.name}")
    if e.kind == "netns":
        return os.path.exists(os.path.join(NETNS_DIR, e.name))
    if e.kind in ("cgroup", "dir"):
        return os.path.isdir(e.name)
    if e.kind == "loop":
        return bool(cgroups.loops_backed_by(e.name))
    return False


# --- removing -----------------------------------------------------------------

def _kill(pid: int, start: int, timeout: float = 3.0) -> None:
    if not _alive(pid, start):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    # Not reaped here: if it is our child, its Popen reaps it and reads the signal.
    deadline = time.monotonic() + timeout
    while _alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.005)


def _ip(*args: str) -> None:
    ip = shutil.which("ip")
    if ip is None:
        from .errors import MissingTool
        raise MissingTool("ip", "iproute2")
    subprocess.run([ip, *args], check=False, capture_output=True)


def _remove_dir(path: str) -> None:
    # Unmount anything still mounted beneath it first: rmtree would otherwise
    # descend into a bind mount and delete the *source*'s files.
    with open("/proc/self/mountinfo") as f:
        below = [line.split()[4] for line in f]
    for target in sorted((t for t in below if t == path or t.startswith(path + "/")),
                         key=len, reverse=True):
        _libc.umount2(target, _libc.MNT_DETACH)
    shutil.rmtree(path, ignore_errors=False)


def remove(e: Entry) -> None:
    """Remove one object if it is still there, then forget it."""
    if e.kind == "mount" and e.name == NETNS_DIR:  # found by _scan: see _release_netns_dir
        _release_netns_dir()
        return
    _check_prefixed(e.kind, e.name)
    if present(e):
        if e.kind == "process":
            _kill(e.pid, e.start)
        elif e.kind == "mount":
            _libc.umount2(e.name, _libc.MNT_DETACH)
        elif e.kind == "link":
            _ip("link", "del", e.name)
        elif e.kind == "netns":
            _ip("netns", "del", e.name)
            _release_netns_dir()
        elif e.kind == "cgroup":
            cgroups.remove(e.name)
        elif e.kind == "loop":
            cgroups.detach_loops(e.name)
        elif e.kind == "dir":
            _remove_dir(e.name)
    unregister(e)


def cleanup(owner: int | None = None, stale: bool = False) -> list[Entry]:
    """Remove registered objects (all of them by default) and any prefixed leftovers.

    ``owner``: only what that process created (a kernel cleaning up after itself).
    ``stale``: only what was created by processes that are gone (a crashed kernel).
    Safe to run twice. Returns what was removed; raises after trying them all
    if some could not be removed.
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "cleanup")
    done, failed = [], []
    for e in entries():
        if owner is not None and e.owner != owner:
            continue
        if stale and owner_alive(e):
            continue
        try:
            remove(e)
            done.append(e)
        except OSError as exc:
            failed.append(f"{e.kind} {e.name}: {exc}")
    if owner is None and not stale:
        # Objects that carry the prefix but whose entries were lost.
        for e in _scan():
            try:
                remove(e)
                done.append(e)
            except OSError as exc:
                failed.append(f"{e.kind} {e.name}: {exc}")
    if failed:
        from .errors import LabError
        raise LabError("cleanup could not remove: " + "; ".join(failed)
                       + " - run `python -m justaprocess cleanup` again; if it persists, "
                         "reboot the VM")
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


def _scan() -> list[Entry]:
    """Objects named with the prefix, present, and not in the registry."""
    known = {(e.kind, e.name) for e in entries()}
    found: list[Entry] = []

    def add(kind: str, nm: str) -> None:
        if (kind, nm) not in known:
            found.append(Entry(kind, nm, note="found by prefix"))

    if os.path.isdir(NETNS_DIR):
        for n in sorted(os.listdir(NETNS_DIR)):
            if n.startswith(PREFIX + "-"):
                add("netns", n)
    if _netns_dir_is_ours_and_unused():
        found.append(Entry("mount", NETNS_DIR, note="made a mount by the lab's `ip netns add`"))
    if os.path.isdir("/sys/class/net"):
        for n in sorted(os.listdir("/sys/class/net")):
            if n.startswith(PREFIX):
                add("link", n)
    for root in _lab_cgroup_roots():
        try:
            for n in sorted(os.listdir(root)):
                if n.startswith(PREFIX) and os.path.isdir(os.path.join(root, n)):
                    add("cgroup", os.path.join(root, n))
                if n == cgroups.LAB_PARENT:  # the lab's cgroups live one level down
                    lp = os.path.join(root, n)
                    for c in sorted(os.listdir(lp)):
                        if c.startswith(PREFIX) and os.path.isdir(os.path.join(lp, c)):
                            add("cgroup", os.path.join(lp, c))
        except OSError:
            continue
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4]
            if os.path.basename(target).startswith(PREFIX + "-") or target.startswith(run_dir() + "/"):
                add("mount", target)
    for n in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        try:  # loop devices over a file of the lab (cgroups.LoopDevice)
            with open(f"/sys/block/{n}/loop/backing_file") as f:
                back = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if back.startswith(run_dir() + "/"):
            add("loop", back)
    if os.path.isdir(run_dir()):
        for n in sorted(os.listdir(run_dir())):
            if n.startswith(PREFIX):
                add("dir", os.path.join(run_dir(), n))
    return found


def leftovers() -> list[Entry]:
    """Everything of the lab still present: registered objects and prefixed strays."""
    return [e for e in entries() if present(e)] + _scan()


# --- processes ------------------------------------------------------------------

def _child_setup() -> None:
    # Die with the process that started us (prctl(2) PR_SET_PDEATHSIG): a killed
    # kernel takes its demo processes with it.
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


class LabProcess:
    """A registered child process (a subprocess.Popen underneath).

    It runs in its own session, dies with its parent, and ``stop()`` (or lab
    cleanup) kills it and reaps it.
    """

    def __init__(self, argv: list[str], *, note: str = "", preexec=None, **popen):
        def setup():
            _child_setup()
            if preexec:
                preexec()

        popen.setdefault("stdin", subprocess.DEVNULL)
        self.popen = subprocess.Popen(argv, preexec_fn=setup, start_new_session=True, **popen)
        self.pid = self.popen.pid
        self.entry = register("process", f"pid-{self.pid}", pid=self.pid, note=note or argv[0])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 3.0) -> int | None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout)
        unregister(self.entry)
        return self.popen.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<LabProcess pid={self.pid} {state}>"


def spawn(argv: list[str], **kw) -> LabProcess:
    """Start a registered child process (see :class:`LabProcess`)."""
    return LabProcess(argv, **kw)
