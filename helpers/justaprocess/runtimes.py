"""The same root filesystem under real runtimes: runc (and crun when present).

A runtime does with a ``config.json`` what the hand-built engine does with
Python calls: namespaces, a cgroup with limits, mounts, dropped capabilities,
pivot_root - plus seccomp, masked and read-only paths (OCI runtime spec,
config.md and config-linux.md; ``runc spec`` writes the default we start from).

Everything is the lab's: the bundle and runc's state (``runc --root``) live in
one folder ``<run_dir>/jap-<id>``, the cgroup is ``jap-<id>`` under the lab's
cgroup parent, all registered before they exist and removed by ``remove()``.
runc uses its cgroupfs driver (PID 1 is not systemd here) and handles the
v1+v2 hybrid of the dev machines as well as the pure v2 of the attendee VMs.

:func:`facts` reads the same facts from *any* host PID - a runc container's,
the hand-built container's, a plain process's - so they can be compared.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from . import _launch, cgroups, lab, proc
from .errors import BadInput, LabError, MissingTool, NeedsPrivilege, NotSupported

# --- which runtimes are here -----------------------------------------------------

# runc and crun share one command line (run/exec/kill/delete, --root, --pid-file).
# podman is not an OCI runtime but an engine above one: it keeps its own store and
# starts a monitor process (conmon). The lab drives it in justaprocess.podman (a
# store of the lab's own, registered; chapter 14), not through this module.
RUNTIMES = ("runc", "crun", "podman")
DRIVEN = ("runc", "crun")
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


class Runtime(NamedTuple):
    name: str
    path: str | None
    version: str
    reason: str          # why it can't be used ("" when it can)

    @property
    def available(self) -> bool:
        return self.path is not None and not self.reason


def version_argv(name: str, path: str) -> list[str]:
    """How the lab asks a runtime its version.  crun makes its state folder (root's
    /run/crun) at every start, ``--version`` too, unless ``--root`` names another: the
    lab's run folder, where it makes nothing more.  runc and podman make none for it."""
    if name == "crun":
        return [path, "--root", lab.run_dir(), "--version"]
    return [path, "--version"]


def find(name: str) -> Runtime:
    """Look for one runtime; when absent, ``reason`` says why and how to get it."""
    if name not in RUNTIMES:
        raise BadInput(f"unknown runtime {name!r}: one of {', '.join(RUNTIMES)}")
    path = shutil.which(name, path=_SEARCH)
    if path is None:
        return Runtime(name, None, "", f"{name} is not installed (apt-get install {name})")
    try:
        r = _launch.tool(version_argv(name, path), timeout=10)
    except _launch.Timeout as exc:
        return Runtime(name, path, "", f"{name} --version failed: {exc}")
    if r.error is not None:
        return Runtime(name, path, "", f"{name} --version failed: {r.error}")
    out = r.stdout
    first = out.splitlines()[0] if out else ""
    version = first.split()[-1] if first else "?"
    if name not in DRIVEN:
        return Runtime(name, path, version, f"{name} {version} is an engine above an OCI runtime "
                       "(its own store, a conmon monitor), not one itself: no bundle of the lab's; "
                       "the lab drives it with justaprocess.podman (06's line-up, chapter 14)")
    return Runtime(name, path, version, layout_refusal(name))


def layout_refusal(name: str, root: str = cgroups.ROOT, mounts: str = cgroups.MOUNTS) -> str:
    """Why runtime ``name`` cannot run on this machine's cgroup layout ("" when it can).

    crun supports the v1+v2 hybrid only while the cgroup2 hierarchy offers no
    controller (its cgroup.controllers is empty); otherwise every `crun run`
    fails with "cgroups in hybrid mode not supported" (libcrun/cgroup.c).  runc
    takes the hybrid, and both take pure v1 and pure v2.
    """
    if name != "crun":
        return ""
    try:
        if cgroups.layout(root, mounts) != cgroups.HYBRID:
            return ""
        unified = [h for h in cgroups.hierarchies(root, mounts) if h.version == 2]
    except (OSError, LabError):
        return ""  # no layout to judge: running it will tell
    busy = [h for h in unified if h.controllers]
    if not busy:
        return ""
    h = busy[0]
    return (f"crun refuses this v1+v2 hybrid cgroup layout: its cgroup2 hierarchy "
            f"({h.mountpoint}) offers controllers ({', '.join(h.controllers)}), and crun runs on "
            "the hybrid only when it offers none (\"cgroups in hybrid mode not supported\"). "
            "Use runc here; crun runs on pure cgroup v2, as in the lab VM")


def available() -> dict[str, Runtime]:
    """{name: Runtime} for runc, crun and podman, present or not."""
    return {n: find(n) for n in RUNTIMES}


def _require(name: str, check_layout: bool = True) -> Runtime:
    """The runtime, or a lab error; ``check_layout=False`` lets a runtime that refuses this
    cgroup layout run anyway, so that it says why in its own words (its error)."""
    rt = find(name)
    if rt.path is None:
        raise MissingTool(name, name)
    if name not in DRIVEN or check_layout and not rt.available:
        raise NotSupported(rt.reason)
    return rt


# --- the OCI configuration ---------------------------------------------------------

def check_options(memory, pids, caps) -> None:
    """The limits and capabilities of a container, checked as the lab's own cgroups and
    engine check them (same messages); nothing is made."""
    cgroups.Cgroup(memory=memory, pids=pids)  # validates only: creates nothing until create()
    if caps is not None:
        from . import capabilities
        capabilities.to_mask(caps)


_SPEC: dict = {}


def runc_spec() -> dict:
    """The config.json that ``runc spec`` writes on this machine (run once, in a temporary folder).

    runc's example spec depends on the host: on cgroup v2 it adds the cgroup namespace
    (libcontainer/specconv/example.go), so what "runc's default" is must be read, not remembered.
    """
    if "cfg" not in _SPEC:
        import tempfile
        exe = shutil.which("runc")
        if exe is None:
            raise MissingTool("runc", "runc")
        with tempfile.TemporaryDirectory(prefix="jap-spec-") as d:
            r = _launch.tool([exe, "spec", "--bundle", d], timeout=30)
            if r.returncode != 0:
                raise LabError(f"`runc spec` failed: {r.stderr.strip() or r.returncode}")
            with open(os.path.join(d, "config.json")) as f:
                _SPEC["cfg"] = json.load(f)
    return _SPEC["cfg"]


def spec_namespaces() -> tuple[str, ...]:
    """The namespace kinds ``runc spec`` asks for here, in OCI spelling (``network``, ``mount``):
    pid, network, ipc, uts, mount - and cgroup on a cgroup v2 host."""
    return tuple(n["type"] for n in runc_spec()["linux"]["namespaces"])


# `runc spec`'s defaults (runc 1.1, libcontainer/specconv/example.go).
RUNC_SPEC_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# `runc spec` has no seccomp filter; Docker and podman add one: an allowlist whose default
# action is an errno (justaprocess.seccomp, Docker's list).  ``config`` writes that one.
# SECCOMP_DENIED is the short denylist the lab used before (allow by default, EPERM for the
# calls that reach past a container's namespaces), kept to show what a denylist misses
# (``seccomp.attempt``): the new mount API, io_uring, clone3 ... (seccomp(2)).
SECCOMP_DENIED = ("mount", "umount2", "pivot_root", "unshare", "setns", "chroot",
                  "init_module", "finit_module", "delete_module", "kexec_load",
                  "kexec_file_load", "add_key", "request_key", "keyctl", "bpf",
                  "ptrace", "perf_event_open", "userfaultfd", "open_by_handle_at",
                  "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime")
_EPERM = 1


def engine_caps() -> tuple[str, ...]:
    """The capability names a container engine keeps by default.

    The lab's ``capabilities.ENGINE_DEFAULT`` (the same set the hand-built engine
    keeps, so the comparison is fair), in runc's spelling (CAP_CHOWN).
    """
    from . import capabilities
    return cap_names(capabilities.to_mask(capabilities.ENGINE_DEFAULT))


def cgroups_path(ident: str) -> str:
    """``linux.cgroupsPath`` for container ``jap-<id>``: under the lab's cgroup parent.

    The lab keeps its cgroups in a parent ``jap-lab`` (cgroups.LAB_PARENT)
    beneath a base (cgroups.lab_base).  On v1 and the hybrid the base is the
    caller's own cgroup in each hierarchy, so the path is *relative*: runc's
    cgroupfs driver puts a relative path under its own cgroup in each hierarchy
    (libcontainer/cgroups/fs/paths.go).  On pure v2 the base may be above our
    own cgroup (v2 forbids processes in inner nodes, cgroup-v2.rst), so the path
    is absolute from the cgroup2 root (fs2/defaultpath.go).
    """
    name = ident if lab.is_lab_name(ident) else lab.name(ident=ident)
    if cgroups.layout() == cgroups.V2:
        v2 = [h for h in cgroups.hierarchies() if h.version == 2][0]
        parent = os.path.join(cgroups.lab_base(v2), cgroups.LAB_PARENT)
        return "/" + os.path.relpath(os.path.join(parent, name), v2.mountpoint)
    return f"{cgroups.LAB_PARENT}/{name}"


def config(rootfs: str, argv: list[str], *, hostname: str = "runc",
           cgroups_path: str | None = None, memory: int | str | None = "64M",
           pids: int | None = 64, caps: tuple[str, ...] | None = None,
           seccomp: bool = True, readonly: bool = True, cwd: str = "/",
           env: dict[str, str] | None = None) -> dict:
    """The OCI ``config.json`` as a dict: ``runc spec``'s defaults, made for the lab.

    Its namespaces are the ones ``runc spec`` writes on this machine (``spec_namespaces()``:
    the cgroup namespace only on cgroup v2).  Changed from ``runc spec``: no terminal
    (output goes to files), our command, hostname, cgroup path and limits (memory, pids),
    the capability set, and a seccomp filter that ``runc spec`` does not have: Docker's
    allowlist, default action EPERM (``seccomp=False`` leaves it out).
    """
    rootfs = getattr(rootfs, "path", rootfs)  # a rootfs.Rootfs or a folder
    if not argv:
        raise BadInput("argv: the command to run in the container, e.g. ['sleep', '60']")
    if not isinstance(rootfs, str) or not os.path.isabs(rootfs) or ".." in rootfs.split("/") \
            or not os.path.isfile(os.path.join(rootfs, "bin", "sh")) \
            and not os.path.islink(os.path.join(rootfs, "bin", "sh")):
        raise BadInput(f"{rootfs!r}: not an absolute path (without '..') to a root filesystem with "
                       "/bin/sh (build one with justaprocess.rootfs)")
    check_options(memory, pids, caps)
    caps = list(engine_caps() if caps is None else caps)
    environ = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", **(env or {})}
    mem = cgroups.parse_size(memory, "memory")
    resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if mem:
        # memory.swap = memory.limit: no swap beyond the limit (config-linux.md#memory)
        resources["memory"] = {"limit": mem, "swap": mem}
    if pids:
        resources["pids"] = {"limit": int(pids)}
    cfg = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(argv),
            "env": [f"{k}={v}" for k, v in environ.items()],
            "cwd": cwd,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": readonly},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": resources,
            "namespaces": [{"type": t} for t in spec_namespaces()],   # as `runc spec` here
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if cgroups_path:
        cfg["linux"]["cgroupsPath"] = cgroups_path
    if seccomp:
        from . import seccomp as _seccomp
        cfg["linux"]["seccomp"] = _seccomp.oci()   # Docker's allowlist: everything else EPERM
    return cfg


# --- the cgroup directories a runtime will make -------------------------------------

def _cgroup_dirs(cg_path: str, procfs: str = proc.PROCFS) -> list[str]:
    """Where runc's cgroupfs driver will create ``cg_path``: one directory per hierarchy.

    Relative paths go under the caller's own cgroup in each hierarchy (read from
    /proc/self/cgroup, cgroups(7)); absolute ones under the hierarchy's root.
    Named v1 hierarchies (name=systemd) are joined too.
    """
    mounts = {}
    for _, target, fstype, opts in cgroups._mount_table():
        if fstype == "cgroup2":
            mounts[("", 0)] = target
        elif fstype == "cgroup":
            for o in opts.split(","):
                mounts[(o, 1)] = target
    out = []
    for line in proc.cgroups("self", procfs):
        if line.hierarchy == 0:
            mnt = mounts.get(("", 0))
        else:
            mnt = next((mounts[(c, 1)] for c in line.controllers if (c, 1) in mounts), None)
        if mnt is None:
            continue
        base = os.path.join(mnt, line.path.lstrip("/"))
        path = os.path.join(mnt, cg_path.lstrip("/")) if cg_path.startswith("/") \
            else os.path.join(base, cg_path)
        if path not in out:
            out.append(os.path.normpath(path))
    return out


# --- a container under an OCI runtime ------------------------------------------------

@dataclass
class Result:
    """A finished run: exit code and captured output."""
    returncode: int
    stdout: str
    stderr: str


class OCIContainer:
    """A container run by runc or crun from a bundle the lab writes.

    Creating the object does nothing; ``start()`` registers the folder, the
    cgroups and then the process, and starts it detached; ``exec()`` runs a
    command inside; ``facts()`` reads what the kernel says about it; ``remove()``
    (or the lab's cleanup) takes it all away.  Usable as a context manager.
    ``check_layout=False``: start even where :func:`layout_refusal` predicts a refusal,
    to show the runtime's own error (``start()`` raises it as a LabError, nothing left).
    """

    def __init__(self, rootfs: str, argv: list[str] | None = None, *, runtime: str = "runc",
                 memory: int | str | None = "64M", pids: int | None = 64,
                 caps: tuple[str, ...] | None = None, seccomp: bool = True,
                 ident: str | None = None, check_layout: bool = True):
        check_options(memory, pids, caps)  # refused here, before anything exists
        self.runtime = runtime
        self.check_layout = check_layout
        self.rt: Runtime | None = None
        self.rootfs = getattr(rootfs, "path", rootfs)  # a rootfs.Rootfs or a folder
        self.argv = list(argv or ["sleep", "3600"])
        self.ident = ident or lab.new_id()
        self.name = lab.name(ident=self.ident)
        self.dir = os.path.join(lab.run_dir(), self.name)
        self.bundle = os.path.join(self.dir, "bundle")
        self.state = os.path.join(self.dir, "state")
        self.cgroups_path = None
        self.options = dict(memory=memory, pids=pids, caps=caps, seccomp=seccomp)
        self.pid: int | None = None
        self.entries: list[lab.Entry] = []

    # -- life cycle --
    def _cmd(self, *args: str) -> list[str]:
        assert self.rt is not None and self.rt.path
        # Their state (one folder per container) under the lab folder.  No
        # --systemd-cgroup: the cgroupfs driver, which works without systemd as PID 1.
        return [self.rt.path, "--root", self.state, *args]

    def prepare(self) -> dict:
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", f"running a container under {self.runtime}:")
        self.rt = _require(self.runtime, self.check_layout)
        self.cgroups_path = cgroups_path(self.name)
        cfg = config(self.rootfs, self.argv, hostname=self.name,
                     cgroups_path=self.cgroups_path, **self.options)
        # Register before creating: the folder, then every cgroup directory runc
        # will make (lab.py: a crash in between leaves only harmless entries).
        self.entries.append(lab.register("dir", self.dir, note=f"{self.runtime} bundle+state"))
        os.makedirs(self.bundle)
        os.makedirs(self.state)
        for d in _cgroup_dirs(self.cgroups_path):
            parent = os.path.dirname(d)
            if os.path.basename(parent) == cgroups.LAB_PARENT and not os.path.isdir(parent):
                # runc makes the shared lab parent too (mkdir -p); removed when empty.
                self.entries.append(lab.register("cgroup", parent, note="lab parent (shared; "
                                                 "removed when empty)"))
            self.entries.append(lab.register("cgroup", d, note=f"{self.runtime} {self.name}"))
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        return cfg

    def start(self, timeout: float = 20.0) -> "OCIContainer":
        """Start the container detached (``runc run -d``); ``self.pid`` is its host PID."""
        if self.pid is not None:
            raise BadInput(f"{self.name} is already started")
        self.prepare()
        pidfile = os.path.join(self.dir, "pid")
        out = open(os.path.join(self.dir, "stdout"), "wb")
        err = open(os.path.join(self.dir, "stderr"), "wb")
        try:
            cmd = self._cmd("run", "-d", "--pid-file", pidfile, "--bundle", self.bundle, self.name)
            # kill_group=False: the container's init outlives `runc run -d` (in a session of its own).
            r = _launch.tool(cmd, stdout=out, stderr=err, timeout=timeout, kill_group=False)
        finally:
            out.close()
            err.close()
        if r.returncode != 0:
            msg = self.logs("stderr").strip().splitlines()[-1:] or ["(no message)"]
            self.remove()
            raise LabError(f"{self.runtime} run failed ({r.returncode}): {msg[0]}")
        with open(pidfile) as f:
            self.pid = int(f.read().strip())
        self.entries.insert(0, lab.register("process", f"{self.name}-init", pid=self.pid,
                                            note=f"{self.runtime} container {self.name}"))
        self._wait_exec(timeout)
        # Any cgroup the runtime made that we did not predict: register it too.
        known = {e.name for e in self.entries}
        for d in facts_cgroup_dirs(self.pid):
            if lab.is_lab_name(os.path.basename(d)) and d not in known:
                self.entries.append(lab.register("cgroup", d, note="found after start"))
        return self

    def _wait_exec(self, timeout: float) -> None:
        """`runc run -d` returns once it has told the init to exec (`runc start` writes its
        exec fifo), not once the init has: under load, /proc still showed runc's init
        (comm "runc:[2:INIT]").  Wait, bounded, until the container's program runs, so that
        facts() describe it.  No event marks another process's execve: a short poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not proc.status(self.pid)["Name"].startswith("runc:["):
                    return
            except (OSError, LookupError, LabError):
                return  # exited already: facts() will say so
            time.sleep(0.002)

    def exec(self, argv: list[str], timeout: float = 20.0) -> Result:
        """Run a command in the container's namespaces and cgroup (``runc exec``)."""
        if self.pid is None:
            raise BadInput(f"{self.name} is not started: call start() first")
        r = _launch.tool(self._cmd("exec", self.name, *argv), timeout=timeout)
        return Result(r.returncode, r.stdout, r.stderr)

    def logs(self, stream: str = "stdout") -> str:
        """What the container wrote to its stdout (or 'stderr') so far, as `docker logs` shows."""
        if stream not in ("stdout", "stderr"):
            raise BadInput("stream is 'stdout' or 'stderr'")
        try:
            with open(os.path.join(self.dir, stream), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _need_pid(self) -> int:
        if self.pid is None:
            raise BadInput(f"{self.name} is not started: call start() first")
        return self.pid

    def facts(self) -> "ContainerFacts":
        """The container facts of its PID 1, read from /proc and its cgroup (see :func:`facts`)."""
        return facts(self._need_pid(), runtime=self.runtime)

    @property
    def namespaces(self) -> dict[str, int]:
        """{kind: inode} of PID 1's namespaces (/proc/PID/ns), as container.Container has."""
        return proc.namespaces(self._need_pid())

    @property
    def cgroups(self) -> dict[str, str]:
        """{controller: cgroup directory} of PID 1."""
        return _cgroup_map(self._need_pid())

    def running(self) -> bool:
        if self.pid is None:
            return False
        try:
            return proc.running(self.pid)
        except (OSError, LookupError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Kill PID 1 (``runc kill NAME KILL``) and wait until it is gone; remove() deletes the rest."""
        if self.pid is None or self.rt is None:
            return
        pid = self.pid
        start = next((e.start for e in self.entries if e.kind == "process" and e.pid == pid), None)
        _launch.tool(self._cmd("kill", self.name, "KILL"), timeout=30)
        proc.wait_gone(pid, start, timeout)

    def remove(self) -> None:
        """Stop and delete the container, its cgroups and its folder (safe twice)."""
        if self.rt is not None and os.path.isdir(self.state):
            # `delete -f` kills (SIGKILL) and removes the cgroups and state.
            _launch.tool(self._cmd("delete", "-f", self.name), timeout=30)
        # Processes, then cgroups deepest first (a lab parent goes when empty), then
        # the folder: lab.entries()'s order.  Absent objects are only forgotten.
        for e in sorted(self.entries, key=lambda e: (lab.KINDS.index(e.kind), -e.name.count("/"))):
            lab.remove(e)
        self.entries = []
        self.pid = None

    def __enter__(self) -> "OCIContainer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.pid else "not running"
        return f"<OCIContainer {self.name} {self.runtime} {state}>"


def run(rootfs: str, argv: list[str], *, runtime: str = "runc", timeout: float = 60.0,
        **options) -> Result:
    """Run a command to its end under a runtime (``runc run`` in the foreground), then clean up."""
    c = OCIContainer(rootfs, argv, runtime=runtime, **options)
    try:
        c.prepare()
        cmd = c._cmd("run", "--bundle", c.bundle, c.name)
        r = _launch.tool(cmd, timeout=timeout)
        return Result(r.returncode, r.stdout, r.stderr)
    finally:
        c.remove()


# --- facts about any container process ------------------------------------------------

# One line of /proc/PID/mountinfo: the lab's one parser is proc.mountinfo.
Mount = proc.Mount


@dataclass
class ContainerFacts:
    """What the kernel says about a container's process: the same for every runtime."""
    runtime: str
    host_pid: int
    pid_inside: int                  # the PID it sees for itself (last NSpid)
    comm: str
    namespaces: dict[str, int]
    shared_with_host: dict[str, bool]   # kind -> same namespace as PID of the caller
    cgroups: dict[str, str]          # controller (or "unified") -> cgroup directory
    memory_limit: int | None         # bytes; None = no limit
    pids_limit: int | None
    caps: proc.CapMasks
    cap_names: tuple[str, ...]       # the effective set, by name
    no_new_privs: bool
    seccomp: int                     # 0 off, 1 strict, 2 filter (proc(5), Seccomp:)
    seccomp_filters: int
    mounts: list[Mount] = field(default_factory=list)
    masked: tuple[str, ...] = ()     # runtime-masked paths found among the mounts
    readonly_paths: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """Stable, derived facts for side-by-side printing (no PIDs, no inodes)."""
        return {
            "PID inside": self.pid_inside,
            "new namespaces": ",".join(k for k, s in sorted(self.shared_with_host.items()) if not s),
            "memory limit": _human(self.memory_limit),
            "pids limit": self.pids_limit if self.pids_limit is not None else "max",
            "capabilities": len(self.cap_names),
            "no_new_privs": self.no_new_privs,
            "seccomp": {0: "off", 1: "strict", 2: "filter"}.get(self.seccomp, self.seccomp),
            "root read-only": any(m.target == "/" and m.readonly for m in self.mounts),
            "/proc mounted": any(m.target == "/proc" and m.fstype == "proc" for m in self.mounts),
            "/sys mounted": any(m.target == "/sys" for m in self.mounts),
            "masked paths": len(self.masked),
            "read-only /proc paths": len(self.readonly_paths),
        }


def _human(n: int | None) -> str:
    if n is None:
        return "max"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def cap_names(mask: int) -> tuple[str, ...]:
    """The names of a mask in runc's spelling (CAP_CHOWN), from the lab's one table."""
    from . import capabilities
    return tuple("CAP_" + n.upper().removeprefix("CAP_") for n in capabilities.decode(mask))


def mounts(pid: int, procfs: str = proc.PROCFS) -> list[Mount]:
    """The mount table of ``pid``'s mount namespace, paths relative to its root (proc(5))."""
    return proc.mountinfo(pid, procfs)


def facts_cgroup_dirs(pid: int, procfs: str = proc.PROCFS) -> list[str]:
    return list(_cgroup_map(pid, procfs).values())


def _cgroup_map(pid: int, procfs: str = proc.PROCFS) -> dict[str, str]:
    """{controller or 'unified' or 'name=x': directory} for the cgroups of ``pid``."""
    mounts_ = {}
    for _, target, fstype, opts in cgroups._mount_table():
        if fstype == "cgroup2":
            mounts_["unified"] = target
        elif fstype == "cgroup":
            for o in opts.split(","):
                mounts_.setdefault(o, target)
    out = {}
    for line in proc.cgroups(pid, procfs):
        keys = ["unified"] if line.hierarchy == 0 else list(line.controllers)
        for k in keys:
            if k in mounts_:
                out[k] = os.path.normpath(os.path.join(mounts_[k], line.path.lstrip("/")))
    return out


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            v = f.read().split()[0]
    except (OSError, IndexError):
        return None
    if v == "max":
        return None
    n = int(v)
    # v1 writes "no limit" as the largest page-aligned value (memory.limit_in_bytes).
    return None if n >= (1 << 62) else n


def limits(cg: dict[str, str]) -> tuple[int | None, int | None]:
    """(memory limit, pids limit) of a process's cgroups, v1 or v2 file names."""
    mem = pids = None
    if "memory" in cg:
        mem = _read_int(os.path.join(cg["memory"], "memory.limit_in_bytes"))
    elif "unified" in cg:
        mem = _read_int(os.path.join(cg["unified"], "memory.max"))
    if "pids" in cg:
        pids = _read_int(os.path.join(cg["pids"], "pids.max"))
    elif "unified" in cg:
        pids = _read_int(os.path.join(cg["unified"], "pids.max"))
    return mem, pids


def facts(pid: int, runtime: str = "", procfs: str = proc.PROCFS) -> ContainerFacts:
    """Read the container facts of any host PID from /proc (proc(5)) and the cgroup files."""
    st = proc.status(pid, procfs)
    ns = proc.namespaces(pid, procfs)
    mine = proc.namespaces("self", procfs)
    cg = _cgroup_map(pid, procfs)
    mem, pids = limits(cg)
    caps = proc.caps(pid, procfs)
    mnts = mounts(pid, procfs)
    masked = tuple(m.target for m in mnts if m.target in MASKED_PATHS
                   and (m.root.endswith("/null") or m.fstype == "tmpfs"))
    ro = tuple(m.target for m in mnts if m.target in READONLY_PATHS and m.readonly)
    return ContainerFacts(
        runtime=runtime, host_pid=pid, pid_inside=int(st["NSpid"].split()[-1]),
        comm=st["Name"], namespaces=ns,
        shared_with_host={k: ns[k] == mine.get(k) for k in ns},
        cgroups=cg, memory_limit=mem, pids_limit=pids, caps=caps,
        cap_names=cap_names(caps.effective),
        no_new_privs=st.get("NoNewPrivs", "0") == "1",
        seccomp=int(st.get("Seccomp", "0")), seccomp_filters=int(st.get("Seccomp_filters", "0")),
        mounts=mnts, masked=masked, readonly_paths=ro)


def side_by_side(*columns: ContainerFacts) -> str:
    """A table of the stable facts of several containers, one column each."""
    sums = [c.summary() for c in columns]
    keys = list(sums[0])
    w = max(len(k) for k in keys) + 2
    cws = [max(len(c.runtime or "?"), *(len(str(s[k])) for k in keys)) + 2
           for c, s in zip(columns, sums)]
    lines = [" " * w + "".join(f"{c.runtime or '?':<{cw}}" for c, cw in zip(columns, cws))]
    for k in keys:
        lines.append(f"{k:<{w}}" + "".join(f"{str(s[k]):<{cw}}" for s, cw in zip(sums, cws)))
    return "\n".join(line.rstrip() for line in lines)


def differences(a: ContainerFacts, b: ContainerFacts) -> list[str]:
    """The facts where two containers differ, named (keys of ``summary()``)."""
    sa, sb = a.summary(), b.summary()
    return [k for k in sa if sa[k] != sb.get(k)]


# --- command line ---------------------------------------------------------------------

def add_cli(sub) -> None:
    p = sub.add_parser("runtimes", help="which OCI runtimes are here (runc, crun, podman)")

    def show(args) -> int:
        for rt in available().values():
            print(f"{rt.name:<7} " + (f"{rt.version} ({rt.path})" if rt.available else
                                      f"not used: {rt.reason}"))
        return 0

    p.set_defaults(func=show)
