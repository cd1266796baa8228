"""runc's rootless container, run by an unprivileged user (chapter 07, "user namespaces").

``runc spec --rootless`` writes a config.json with a user namespace that maps
uid and gid 0 inside to the caller's own uid and gid (one id each: what an
unprivileged process may map without newuidmap(1), user_namespaces(7)), no
network namespace, and no cgroup resources.  :func:`run` lets an unprivileged
host uid (:data:`justaprocess.insecure.USERNS_BASE`, no account of the host)
write that spec and run it with runc, on a lab copy of a root filesystem.

Cgroup limits need a cgroup the user may write: on cgroup v2 systemd delegates
one to a logged-in user (``systemd-run --user``), on v1 nothing does.  Asked for a
limit, runc then refuses to start, and :func:`run` returns its message.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field

from . import _launch, lab
from .errors import BadInput, LabError, MissingTool, NeedsPrivilege
from .insecure import USERNS_BASE


@dataclass
class Run:
    """A finished rootless run: runc's exit code, the container's output, the spec used."""
    returncode: int
    stdout: str
    stderr: str
    config: dict = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _as_user(argv: list[str], uid: int, env: dict, cwd: str, timeout: float) -> _launch.Result:
    spec = _launch.Spec(argv=argv, uid=uid, gid=uid, groups=(), env=env, cwd=cwd,
                        stdin="null", note="chapter 07: runc as an unprivileged user")
    return _launch.run(spec, timeout=timeout)


def _reachable(path: str, uid: int) -> None:
    """Refuse a folder that ``uid`` (no group of the host) may not pass through: runc,
    run as that uid, would fail on it with a bare "permission denied"."""
    here = "/"
    for part in [p for p in os.path.abspath(path).split("/") if p]:
        st = os.stat(here)
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXOTH
        if not st.st_mode & bit:
            raise LabError(f"{here} (mode {stat.S_IMODE(st.st_mode):04o}) may not be passed through "
                           f"by uid {uid}, which runs runc here: keep the lab's folders where "
                           "others may pass (JAP_STATE_DIR), or chmod o+x that folder")
        here = os.path.join(here, part)


def run(rootfs: str, script: str, *, uid: int = USERNS_BASE, all_caps: bool = False,
        keep_paths: bool = True, memory: str | None = None, timeout: float = 30.0) -> Run:
    """``runc spec --rootless``, then ``runc run``, both as host uid ``uid`` (never root).

    ``rootfs``: a root filesystem folder (read by ``uid``: its files owned by ``uid``
    are root's inside, the others nobody's).  ``script``: run by ``/bin/sh -c``.
    ``all_caps``: give the process every capability (in its user namespace) instead of
    runc's three; ``keep_paths=False``: drop runc's masked and read-only paths - the
    weakest configuration, to show what the user namespace alone holds.
    ``memory``: a memory limit (linux.resources), which needs a writable cgroup.
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "switching to an unprivileged uid for runc:")
    if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        raise BadInput(f"uid={uid!r}: an unprivileged host uid (> 0), e.g. {USERNS_BASE}")
    exe = shutil.which("runc")
    if exe is None:
        raise MissingTool("runc", "runc")
    rootfs = os.path.abspath(getattr(rootfs, "path", rootfs))
    if not os.path.isdir(os.path.join(rootfs, "proc")):
        raise BadInput(f"{rootfs!r} is not a root filesystem (no /proc folder in it)")
    _reachable(rootfs, uid)
    _reachable(lab.run_dir(), uid)
    name = lab.name("rootless")
    top = os.path.join(lab.run_dir(), name)
    entries = [lab.register("dir", top, note="runc rootless bundle+state (chapter 07)")]
    try:
        bundle, state = os.path.join(top, "bundle"), os.path.join(top, "state")
        for d in (top, bundle, state):
            os.makedirs(d)
            os.chown(d, uid, uid)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": top, "XDG_RUNTIME_DIR": state}
        r = _as_user([exe, "spec", "--rootless"], uid, env, bundle, 30)
        if r.returncode != 0 or r.error is not None:
            raise LabError(f"`runc spec --rootless` as uid {uid} failed: "
                           f"{r.error or r.stderr.strip()}")
        path = os.path.join(bundle, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["process"].update(terminal=False, args=["/bin/sh", "-c", script])
        cfg["root"] = {"path": rootfs, "readonly": True}
        cfg["hostname"] = name
        if all_caps:
            from ._captable import last_cap
            from .runtimes import cap_names
            names = list(cap_names((1 << (last_cap() + 1)) - 1))
            cfg["process"]["capabilities"] = {k: names for k in
                                              ("bounding", "effective", "permitted")}
        if not keep_paths:
            cfg["linux"].pop("maskedPaths", None)
            cfg["linux"].pop("readonlyPaths", None)
        if memory is not None:
            from . import cgroups
            from .runtimes import _cgroup_dirs
            cg = f"{cgroups.LAB_PARENT}/{name}"
            cfg["linux"]["cgroupsPath"] = cg
            cfg["linux"]["resources"] = {"memory": {"limit": cgroups.parse_size(memory, "memory")}}
            for d in _cgroup_dirs(cg):  # what runc would make, were it allowed: registered first
                entries.append(lab.register("cgroup", d, note="runc rootless (chapter 07)"))
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        r = _as_user([exe, "--root", state, "run", "--bundle", bundle, name], uid, env, bundle,
                     timeout)
        if r.error is not None:
            raise r.error
        _as_user([exe, "--root", state, "delete", "-f", name], uid, env, bundle, 30)
        return Run(r.returncode, r.stdout, r.stderr, cfg)
    finally:
        for e in reversed(entries):
            lab.remove(e)


# The escapes of chapter 07 as shell commands, for a container run by another runtime:
# each line prints "<name>: worked" or the error's last words.
ESCAPES = r"""
try() { what=$1; shift; if out=$("$@" 2>&1); then echo "$what: worked"; else echo "$what: ${out##*: }"; fi; }
try "write /proc/sys" sh -c 'echo @VALUE@ > /proc/sys/@SYSCTL@'
try "a fresh procfs, then /proc/sys" sh -c 'mount -t proc proc /mnt && echo @VALUE@ > /mnt/sys/@SYSCTL@'
try "mknod a disk" sh -c 'mknod /dev/jap-disk b @MAJOR@ @MINOR@ && head -c 14 /dev/jap-disk'
try "a disk through devtmpfs" mount -t devtmpfs devtmpfs /mnt
try "kill a host process" kill -9 @PID@
"""


def escapes_script(value: int, major: int, minor: int, pid: int,
                   sysctl: str = "/proc/sys/kernel/printk_ratelimit_burst") -> str:
    """:data:`ESCAPES` filled in: the sysctl and its new value, the disk, the host PID."""
    rel = os.path.relpath(sysctl, "/proc/sys")
    out = ESCAPES
    for key, v in (("VALUE", int(value)), ("SYSCTL", rel), ("MAJOR", int(major)),
                   ("MINOR", int(minor)), ("PID", int(pid))):
        out = out.replace(f"@{key}@", str(v))
    return out.strip()


__all__ = ["run", "Run", "ESCAPES", "escapes_script"]
