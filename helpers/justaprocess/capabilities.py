"""Capabilities: root split into ~40 privileges (capabilities(7)).

A process has five capability sets (capabilities(7), "Thread capability sets"):
*effective* (what the kernel checks now), *permitted* (the most effective may
become), *inheritable* and *ambient* (what survives execve(2)), and *bounding*
(the ceiling for what any later execve can grant).  The kernel shows them as
64-bit masks in /proc/PID/status (CapEff, CapPrm, CapInh, CapBnd, CapAmb);
this module decodes them into names spelled as ``capsh`` spells them
(``cap_chown``), reduces them in a forked child (never in the caller: a
notebook's kernel keeps its capabilities), runs probes that succeed or fail by
one capability, and reads/writes file capabilities on lab-made copies.

Read the sets, never assume them: on the dev machines CAP_SYS_RESOURCE is
missing from every process's bounding set.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import json
import os
import shutil
import socket
import struct
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from . import _launch, _libc, lab, proc
from ._captable import (  # noqa: F401 - the table lives below the launcher; capabilities.X as always
    PROCFS, SETS, Cap, CapSets, _TABLE, _parse_mask, all_caps, cap_name, cap_number,
    capsh_decode, decode, from_masks, last_cap, meaning, to_mask)
from .errors import BadInput, LabError, MissingTool, NeedsPrivilege


def masks(pid: int | str = "self", procfs: str = PROCFS) -> proc.CapMasks:
    """The raw masks of /proc/PID/status (CapInh, CapPrm, CapEff, CapBnd, CapAmb)."""
    return proc.caps(pid, procfs)


def sets(pid: int | str = "self", procfs: str = PROCFS) -> CapSets:
    """A process's five sets by name, read from /proc/PID/status (NoSuchProcess if gone)."""
    if isinstance(pid, str) and pid != "self":
        if not pid.lstrip("-").isdigit():
            raise BadInput(f"a PID is a number from 1 or 'self', not {pid!r} (`ps -e` lists them)")
        pid = int(pid)
    return from_masks(masks(pid, procfs))


class Diff(NamedTuple):
    """Two collections of capability names compared."""
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    both: tuple[str, ...]

    @property
    def same(self) -> bool:
        return not self.only_a and not self.only_b


def _order(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names), key=cap_number))


def diff(a: Iterable[str | int], b: Iterable[str | int]) -> Diff:
    """Compare two collections of names (e.g. root's effective set and ENGINE_DEFAULT)."""
    sa = {cap_name(cap_number(x)) for x in a}
    sb = {cap_name(cap_number(x)) for x in b}
    return Diff(_order(sa - sb), _order(sb - sa), _order(sa & sb))


def compare(a: int | str | CapSets, b: int | str | CapSets,
            procfs: str = PROCFS) -> dict[str, Diff]:
    """Compare two processes (PIDs or CapSets): {set name: Diff}."""
    sa = a if isinstance(a, CapSets) else sets(a, procfs)
    sb = b if isinstance(b, CapSets) else sets(b, procfs)
    return {k: diff(getattr(sa, k), getattr(sb, k)) for k in SETS}


# The capabilities Docker (moby) grants a container by default: moby's
# oci/caps/defaults.go, DefaultCapabilities(); containerd's oci.WithDefaultUnixCaps
# holds the same 14.  (podman's containers.conf default drops AUDIT_WRITE, MKNOD
# and NET_RAW; runc's `runc spec` template keeps only AUDIT_WRITE, KILL and
# NET_BIND_SERVICE.)  Everything else - CAP_SYS_ADMIN, CAP_NET_ADMIN,
# CAP_SYS_MODULE, CAP_SYS_PTRACE ... - a container does not get unless asked.
ENGINE_DEFAULT: tuple[str, ...] = (
    "cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_net_bind_service", "cap_net_raw",
    "cap_sys_chroot", "cap_mknod", "cap_audit_write", "cap_setfcap",
)


# --- reducing the capabilities of the calling process (a forked child) ----------

def target_mask(keep: Iterable[str | int] | None = None,
                drop: Iterable[str | int] | None = None,
                have: int | None = None) -> int:
    """What remains of ``have`` (default: the caller's permitted set) after keep/drop.

    ``keep``: only these (intersected with what the process has: you cannot keep
    what you lack).  ``drop``: all but these.  Both: keep, then drop.
    Unknown names raise BadInput *before* anything changes.
    """
    if have is None:
        have = _libc.capget()[1]
    out = have
    if keep is not None:
        out &= to_mask(keep)
    if drop is not None:
        out &= ~to_mask(drop)
    return out


def restrict(keep: Iterable[str | int] | None = None,
             drop: Iterable[str | int] | None = None, *,
             bounding: bool = True, no_new_privs: bool = False,
             uid: int | None = None, gid: int | None = None,
             groups: Sequence[int] = (), ambient: bool | None = None) -> int:
    """Reduce the capabilities of the CALLING process - call it only in a forked child.

    Made for a container engine's child set-up (between fork and exec, e.g. as
    ``preexec_fn`` or after ``os.fork()``), in this order:

    1. bounding: PR_CAPBSET_DROP every capability not kept (prctl(2)); needs
       CAP_SETPCAP, so it comes first.  Bites only at the next execve(2).
    2. uid/gid: PR_SET_KEEPCAPS, then setgroups/setresgid/setresuid, so the
       permitted set survives leaving uid 0 (capabilities(7), "Effect of user ID
       changes on capabilities").
    3. capset(2): effective = permitted = kept; takes effect at once.
       inheritable = kept when ``ambient``, else what was inheritable and kept.
    4. ambient (default: on when ``uid`` is given and not 0): raise each kept
       capability into the ambient set, so a non-root program keeps them
       across execve (PR_CAP_AMBIENT_RAISE).
    5. no_new_privs: PR_SET_NO_NEW_PRIVS - execve can no longer grant privileges
       (setuid bits and file capabilities are ignored).

    Returns the kept mask.  Refuses in a multithreaded process (a notebook's
    kernel): capset changes one thread only, and the kernel must keep its caps.
    """
    if threading.active_count() > 1:
        raise BadInput("restrict() changes the calling process: call it in a forked child "
                       "(capabilities.run() does), never in the notebook's kernel")
    kept = target_mask(keep, drop)
    if ambient is None:
        ambient = uid is not None and uid != 0
    try:
        kept = _launch.reduce_capabilities(kept, 0, bounding=bounding, uid=uid, gid=gid,
                                           groups=groups, ambient=bool(ambient),
                                           last_cap=last_cap())
        if no_new_privs:
            _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
    except PermissionError as exc:
        raise NeedsPrivilege("root (CAP_SETPCAP, CAP_SETUID, CAP_SETGID)",
                             f"reducing capabilities ({exc.strerror}):") from exc
    return kept


# --- running something with chosen capabilities -----------------------------------

# One result type for every run in the lab: the launcher's (sets, uid and
# no_new_privs are read from the child's /proc/PID/status as it ended).
RunResult = _launch.Result

# unshare= flags (the old spelling) -> namespace kinds for the launcher
_FLAG_KINDS = {_libc.CLONE_NEWUTS: "uts", _libc.CLONE_NEWNET: "net", _libc.CLONE_NEWIPC: "ipc",
               _libc.CLONE_NEWNS: "mnt", _libc.CLONE_NEWCGROUP: "cgroup",
               _libc.CLONE_NEWUSER: "user", _libc.CLONE_NEWPID: "pid",
               _libc.CLONE_NEWTIME: "time"}


def _kinds(unshare: int | str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(unshare, int) and not isinstance(unshare, bool):
        rest = unshare & ~sum(_FLAG_KINDS)
        if rest:
            raise BadInput(f"unshare={unshare:#x}: {rest:#x} is not a CLONE_NEW* flag "
                           "(use _libc.CLONE_NEWNET ..., or kinds like 'net,uts')")
        return tuple(k for f, k in _FLAG_KINDS.items() if unshare & f)
    return _launch.kinds_of(unshare)


def run(target: Sequence[str] | Callable[[], Any],
        keep: Iterable[str | int] | None = None,
        drop: Iterable[str | int] | None = None, *,
        bounding: bool = True, no_new_privs: bool = False,
        uid: int | None = None, gid: int | None = None, ambient: bool | None = None,
        unshare: int | str | Iterable[str] = 0, uid_map: str | None = None, timeout: float = 10.0,
        env: dict[str, str] | None = None, cwd: str | None = None) -> RunResult:
    """Run a command (argv list) or a Python function in a child with chosen capabilities.

    The child (made by the lab's launcher, :mod:`justaprocess._launch`) optionally
    gets new namespaces (``unshare``: CLONE_* flags from ``_libc``, or kinds like
    'net,uts'; a new network namespace gets its 'lo' up), then reduces its
    capabilities as :func:`restrict` does (keep/drop/bounding/no_new_privs/uid/gid/
    ambient), then calls the function or execs the command.  ``uid_map`` (with 'user' in
    ``unshare``): the new user namespace's map, e.g. ``"0 100000 65536"``, and ``uid``/``gid``
    are then ids inside it.  The caller never
    changes.  A function runs bounded, in a lab cgroup of its own: at most 256M of
    memory and 64 processes.

    The result's ``sets``, ``uid`` and ``no_new_privs`` are read from the child's
    /proc/PID/status after it exited and before it was reaped (a zombie keeps its
    credentials), so they are what it really ran with.  A function's return value
    (``value``) and exception (``exception``, an OSError keeps its errno:
    ``errno_name``) come back pickled; so does a failed execve's OSError.  A failure
    to set up (e.g. not root) is raised here; so is ``Timeout`` (the child is killed).
    """
    if os.geteuid() != 0:
        raise NeedsPrivilege("root", "running a child with chosen capabilities")
    if not callable(target):
        if isinstance(target, str) or not target:
            raise BadInput("run() takes a command as a list (['id', '-u']) or a function")
        target = [str(a) for a in target]
        if shutil.which(target[0]) is None:
            raise BadInput(f"cannot run {target[0]!r}: no such program")
    target_mask(keep, drop, have=(1 << 64) - 1)  # unknown names → BadInput, before forking
    kinds = _kinds(unshare)
    if ambient is None:
        ambient = uid is not None and uid != 0
    spec = _launch.Spec(
        argv=None if callable(target) else target, fn=target if callable(target) else None,
        new=kinds, lo_up="net" in kinds, uid_map=uid_map, caps=keep, drop=drop or (), bounding=bounding,
        no_new_privs=no_new_privs, uid=uid, gid=gid, ambient=bool(ambient), env=env, cwd=cwd,
        cgroup="bounded" if callable(target) else None)
    spec.note = "caps run: " + (getattr(target, "__name__", None) or " ".join(target))[:60]
    r = _launch.run(spec, timeout=timeout)
    if r.error is not None and r.error.step != "exec":
        if r.error.errno in (_errno.EPERM, _errno.EACCES):
            raise NeedsPrivilege("root (CAP_SETPCAP, CAP_SETUID, CAP_SETGID)",
                                 f"{r.error.step} ({os.strerror(r.error.errno)}):")
        raise r.error
    return r


# --- probes: one operation per capability ------------------------------------------

class ProbeResult(NamedTuple):
    probe: str
    cap: str
    ok: bool
    errno: str   # 'EPERM', 'EACCES' ... or '' when it worked
    detail: str


@dataclass
class Probe:
    name: str
    cap: str
    what: str
    fn: Callable[[dict], str] = field(repr=False)


def _private(kind: str, ctx: dict) -> None:
    # Never touch the host: these probes act only in namespaces of their own.
    if os.stat(f"/proc/self/ns/{kind}").st_ino == ctx[f"host_{kind}"]:
        raise BadInput(f"probe refused: not in a private {kind} namespace")


def _p_sethostname(ctx: dict) -> str:
    _private("uts", ctx)
    _libc.sethostname("jap-probe")   # sethostname(2): CAP_SYS_ADMIN in the UTS ns's owner
    return "hostname set in a private UTS namespace"


def _p_bind80(ctx: dict) -> str:
    _private("net", ctx)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 80))    # ip(7): ports < 1024 need CAP_NET_BIND_SERVICE
    return "bound 127.0.0.1:80 in a private network namespace"


def _p_chown(ctx: dict) -> str:
    fd = os.memfd_create("jap-probe")  # an anonymous file: nothing on disk to clean
    try:
        os.fchown(fd, 65534, -1)         # chown(2): another owner needs CAP_CHOWN
    finally:
        os.close(fd)
    return "gave a file to uid 65534"


def _p_rawsock(ctx: dict) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)  # raw(7)
    s.close()
    return "opened a raw ICMP socket (sent nothing)"


def _p_ptrace(ctx: dict) -> str:
    pid, addr = ctx["target"], ctx["addr"]
    # proc(5) /proc/PID/mem: a PTRACE_MODE_ATTACH check.  The target holds
    # capabilities we dropped, so only CAP_SYS_PTRACE lets us in (ptrace(2),
    # "Ptrace access mode checking", step on capabilities).
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        data = os.pread(fd, 4, addr)
    finally:
        os.close(fd)
    return f"read {data!r} from another process's memory"


def _p_netadmin(ctx: dict) -> str:
    _private("net", ctx)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # SIOCSIFMTU on lo of the private namespace (netdevice(7)): CAP_NET_ADMIN.
        fcntl.ioctl(s, 0x8922, struct.pack("16si20x", b"lo", 65000))
    return "changed the MTU of lo in a private network namespace"


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("sethostname", "cap_sys_admin", "sethostname() in a new UTS namespace", _p_sethostname),
    Probe("bind80", "cap_net_bind_service", "bind 127.0.0.1:80 (new network namespace)", _p_bind80),
    Probe("chown", "cap_chown", "chown a file to another user", _p_chown),
    Probe("rawsock", "cap_net_raw", "open a raw ICMP socket", _p_rawsock),
    Probe("ptrace", "cap_sys_ptrace", "read another process's memory (/proc/PID/mem)", _p_ptrace),
    Probe("netadmin", "cap_net_admin", "change an interface's MTU (new network namespace)",
          _p_netadmin),
)}


@dataclass
class ProbeReport:
    results: list[ProbeResult]
    sets: CapSets

    def as_dict(self) -> dict[str, str]:
        """{probe: 'ok' or the errno name}."""
        return {r.probe: "ok" if r.ok else r.errno or "failed" for r in self.results}

    def table(self) -> str:
        lines = [f"{'probe':<12} {'needs':<21} {'result':<7} what happened"]
        for r in self.results:
            lines.append(f"{r.probe:<12} {r.cap:<21} {'ok' if r.ok else r.errno:<7} {r.detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the table
        p.text(self.table())


def _probe_target() -> tuple[_launch.Handle, int]:
    """A registered root process with all our capabilities: the ptrace probe's target."""
    sleeper = _launch.start(_launch.Spec(argv=["sleep", "30"], stdout="null", stderr="null",
                                         note="ptrace probe target"))
    with open(f"/proc/{sleeper.pid}/maps") as f:  # start() returned after its execve
        first = f.readline()
    return sleeper, int(first.split("-")[0], 16)  # the ELF header of sleep: b'\x7fELF'


def probe(names: Iterable[str] | None = None,
          keep: Iterable[str | int] | None = None,
          drop: Iterable[str | int] | None = None, *,
          bounding: bool = True, uid: int | None = None,
          no_new_privs: bool = False) -> ProbeReport:
    """Run probes (default: all of PROBES) in one child with chosen capabilities.

    The child gets its own UTS and network namespaces first (so sethostname and
    bind act on nothing of the host), then drops capabilities as :func:`run`.
    """
    names = list(PROBES) if names is None else list(names)
    for n in names:
        if n not in PROBES:
            raise BadInput(f"unknown probe {n!r}: one of {', '.join(PROBES)}")
    ctx = {"host_uts": os.stat("/proc/self/ns/uts").st_ino,
           "host_net": os.stat("/proc/self/ns/net").st_ino}
    sleeper = None
    if "ptrace" in names:
        sleeper, ctx["addr"] = _probe_target()
        ctx["target"] = sleeper.pid

    def probes() -> list[ProbeResult]:
        out = []
        for n in names:
            p = PROBES[n]
            try:
                out.append(ProbeResult(n, p.cap, True, "", p.fn(ctx)))
            except OSError as exc:
                out.append(ProbeResult(n, p.cap, False, _errno.errorcode.get(exc.errno, "?"),
                                       f"{exc.strerror}"))
            except LabError as exc:
                out.append(ProbeResult(n, p.cap, False, "REFUSED", str(exc)))
        return out

    try:
        res = run(probes, keep, drop, bounding=bounding, uid=uid, no_new_privs=no_new_privs,
                  unshare=_libc.CLONE_NEWUTS | _libc.CLONE_NEWNET)
    finally:
        if sleeper is not None:
            sleeper.stop()
    if res.exception is not None:
        raise res.exception
    return ProbeReport(res.value, res.sets)


# --- file capabilities ----------------------------------------------------------------
# The xattr security.capability holds struct vfs_cap_data
# (include/uapi/linux/capability.h): magic_etc (revision | effective flag), then
# (permitted, inheritable) as two 32-bit halves; revision 3 adds the root uid of
# the user namespace it applies in.  capabilities(7), "File capabilities".
XATTR = "security.capability"
VFS_CAP_REVISION_1 = 0x01000000
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001


class FileCaps(NamedTuple):
    permitted: tuple[str, ...]
    inheritable: tuple[str, ...]
    effective: bool
    rootid: int | None = None

    @property
    def text(self) -> str:
        """getcap's spelling for the usual cases: ``cap_net_bind_service=ep``."""
        groups: dict[str, list[str]] = {}
        for nm in _order(set(self.permitted) | set(self.inheritable)):
            flags = ("e" if self.effective else "") + \
                    ("i" if nm in self.inheritable else "") + ("p" if nm in self.permitted else "")
            groups.setdefault(flags, []).append(nm)
        return " ".join(",".join(v) + "=" + k for k, v in groups.items())


def get_file_caps(path: str) -> FileCaps | None:
    """The file capabilities of ``path`` from its xattr, or None when it has none."""
    try:
        raw = os.getxattr(path, XATTR)
    except FileNotFoundError:
        raise BadInput(f"no such file: {path}") from None
    except OSError as exc:
        if exc.errno == _errno.ENODATA:
            return None
        raise
    magic = struct.unpack_from("<I", raw)[0]
    rev = magic & 0xFF000000
    if rev == VFS_CAP_REVISION_1:
        prm, inh = struct.unpack_from("<II", raw, 4)
        rootid = None
    else:
        p0, i0, p1, i1 = struct.unpack_from("<IIII", raw, 4)
        prm, inh = p0 | p1 << 32, i0 | i1 << 32
        rootid = struct.unpack_from("<I", raw, 20)[0] if rev == VFS_CAP_REVISION_3 else None
    return FileCaps(decode(prm), decode(inh), bool(magic & VFS_CAP_FLAGS_EFFECTIVE), rootid)


def _lab_file(path: str) -> str:
    real = os.path.realpath(path)
    root = os.path.realpath(lab.run_dir())
    rel = os.path.relpath(real, root)
    if rel.startswith("..") or not lab.is_lab_name(rel.split(os.sep)[0]):
        raise BadInput(f"file capabilities are set only on lab-made copies under "
                       f"{lab.run_dir()}/{lab.PREFIX}-*: use copy_binary() first, not {path!r}")
    return real


def set_file_caps(path: str, permitted: Iterable[str | int], *,
                  inheritable: Iterable[str | int] = (), effective: bool = True) -> FileCaps:
    """Write the security.capability xattr (revision 2), like ``setcap NAMES+ep PATH``.

    Only on a lab-made copy (see :func:`copy_binary`).  Needs CAP_SETFCAP.
    An empty ``permitted`` and ``inheritable`` removes the xattr.
    """
    real = _lab_file(path)
    prm, inh = to_mask(permitted), to_mask(inheritable)
    try:
        if not prm and not inh:
            try:
                os.removexattr(real, XATTR)
            except OSError as exc:
                if exc.errno != _errno.ENODATA:
                    raise
            return FileCaps((), (), False)
        magic = VFS_CAP_REVISION_2 | (VFS_CAP_FLAGS_EFFECTIVE if effective else 0)
        raw = struct.pack("<IIIII", magic, prm & 0xFFFFFFFF, inh & 0xFFFFFFFF,
                          prm >> 32, inh >> 32)
        os.setxattr(real, XATTR, raw)
    except PermissionError as exc:
        raise NeedsPrivilege("CAP_SETFCAP", "setting file capabilities:") from exc
    return get_file_caps(real)


def setcap_in_userns(path: str, names: Iterable[str | int], root_uid: int = 100000) -> FileCaps:
    """Run ``setcap NAMES+ep PATH`` as root of a new user namespace whose uid 0 is host uid
    ``root_uid`` (a container's root under a uid map), and read back what the kernel stored.

    The kernel does not store what setcap wrote (a revision 2 xattr): a process that is not
    privileged over the filesystem's own user namespace gets a revision 3 xattr carrying the
    *rootid*, ``root_uid``, and the capabilities then count only where that uid is root
    (capabilities(7), "Namespaced file capabilities").  The file (a lab copy) is first given
    to ``root_uid``: setting the xattr needs CAP_SETFCAP over the file's owner, who must be
    mapped in the namespace (docs/kernel-notes.md, "Capabilities").
    """
    real = _lab_file(path)
    if isinstance(root_uid, bool) or not isinstance(root_uid, int) or not 0 < root_uid < 2**32 - 1:
        raise BadInput(f"root_uid={root_uid!r}: the host uid that is root in the namespace, e.g. 100000")
    text = ",".join(cap_name(n) if isinstance(n, int) else n for n in names)
    to_mask(text.split(",") if text else [])  # unknown names: BadInput before anything runs
    if not text:
        raise BadInput("name at least one capability, e.g. ['cap_net_bind_service']")
    tool = shutil.which("setcap", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if tool is None:
        raise MissingTool("setcap", "libcap2-bin")
    os.chown(real, root_uid, root_uid)
    r = _launch.run(_launch.Spec(argv=[tool, f"{text}+ep", real], new="user",
                                 uid_map=f"0 {root_uid} 1", note="setcap in a user namespace"),
                    timeout=10)
    if r.returncode != 0:
        raise LabError(f"setcap in a user namespace failed ({r.error or r.stderr.strip()}): "
                       "does this kernel allow user namespaces (user_namespaces(7))?")
    return get_file_caps(real)


class FileCopy(NamedTuple):
    path: str
    entry: lab.Entry


def copy_binary(src: str, note: str = "") -> FileCopy:
    """Copy a program into a registered lab folder (mode 0755, so any uid may run it).

    Resolves ``src`` through PATH and symlinks; remove it with :func:`remove_copy`
    (or the notebook's ``%lab_cleanup``).
    """
    found = shutil.which(src) if os.sep not in src else src
    if not found or not os.path.isfile(found):
        raise BadInput(f"no such program: {src!r}")
    real = os.path.realpath(found)
    folder = os.path.join(lab.run_dir(), lab.name("fcaps"))
    entry = lab.register("dir", folder, note=note or f"copy of {real}")
    os.makedirs(folder)
    os.chmod(folder, 0o755)
    os.chmod(lab.run_dir(), os.stat(lab.run_dir()).st_mode | 0o005)  # others may reach it
    dst = os.path.join(folder, os.path.basename(real))
    shutil.copy2(real, dst)
    os.chmod(dst, 0o755)
    return FileCopy(dst, entry)


def remove_copy(copy: FileCopy) -> None:
    lab.remove(copy.entry)


# --- securebits ------------------------------------------------------------------------
# prctl(2) PR_GET/SET_SECUREBITS; include/uapi/linux/securebits.h.  Each flag has a
# _LOCKED twin (the next bit) that forbids changing it again; capabilities(7),
# "The securebits flags: establishing a capabilities-only environment".
SECUREBITS = {"noroot": 0, "no_setuid_fixup": 2, "keep_caps": 4, "no_cap_ambient_raise": 6}


def securebits_names(value: int) -> tuple[str, ...]:
    """``0b11`` -> ('noroot', 'noroot_locked'): the flags set in a securebits value."""
    out = []
    for nm, bit in SECUREBITS.items():
        if value >> bit & 1:
            out.append(nm)
        if value >> (bit + 1) & 1:
            out.append(nm + "_locked")
    return tuple(out)


def securebits_mask(names: Iterable[str]) -> int:
    """('noroot', 'noroot_locked') -> 0b11; unknown names raise BadInput."""
    mask = 0
    for nm in names:
        base = nm.removesuffix("_locked")
        if base not in SECUREBITS:
            raise BadInput(f"securebit {nm!r}: one of {', '.join(SECUREBITS)} (or NAME_locked)")
        mask |= 1 << (SECUREBITS[base] + (nm != base))
    return mask


# --- widget ---------------------------------------------------------------------------

def widget(probes: Iterable[str] | None = None):
    """Tick capabilities, run the probes, see which operations work (ipywidgets).

    The boxes list the capabilities the kernel's process has (read, not assumed).
    """
    import ipywidgets as W

    names = list(PROBES) if probes is None else list(probes)
    have = sets().permitted
    boxes = {nm: W.Checkbox(value=True, description=nm, indent=False,
                            layout=W.Layout(width="220px")) for nm in have}
    out = W.Output()

    def pick(chosen):
        for nm, b in boxes.items():
            b.value = nm in chosen

    def go(_=None):
        kept = [nm for nm, b in boxes.items() if b.value]
        out.clear_output()
        with out:  # a button callback's exception would vanish: show it here
            try:
                report = probe(names, keep=kept)
            except LabError as exc:
                print(f"error: {exc}")
                return
            # wrapped between names: the output area breaks a long line inside a name
            print(textwrap.fill(f"kept {len(kept)} of {len(have)} capabilities; removed: "
                                f"{', '.join(n for n in have if n not in kept) or 'none'}",
                                width=100, break_long_words=False, break_on_hyphens=False))
            print(report.table())

    buttons = []
    for label, fn in (("all", lambda _: pick(have)), ("none", lambda _: pick(())),
                      ("engine default", lambda _: pick(ENGINE_DEFAULT)),
                      ("run probes", go)):
        b = W.Button(description=label, button_style="primary" if label == "run probes" else "")
        b.on_click(fn)
        buttons.append(b)
    grid = W.GridBox(list(boxes.values()),
                     layout=W.Layout(grid_template_columns="repeat(4, 230px)"))
    return W.VBox([grid, W.HBox(buttons), out])


# --- command line -------------------------------------------------------------------------

def _cli(args) -> int:
    if args.list:
        for c in all_caps():
            print(f"{c.number:>2} {c.name:<23} {c.meaning}")
        return 0
    if args.decode is not None:
        print(capsh_decode(args.decode))
        return 0
    if args.pid is None:
        raise BadInput("give a PID (`caps 1234`, `caps self`), --decode HEXMASK or --list")
    pid = args.pid
    s = sets(pid)
    if args.json:
        print(json.dumps(s.as_json(), indent=2))
        return 0
    for k in SETS:
        names = getattr(s, k)
        print(f"{k:<12} {len(names):>2}  {','.join(names) or '(none)'}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("caps", help="a process's capability sets by name; decode a mask",
                       description="Show a process's five capability sets (capabilities(7)) "
                                   "or decode a hex mask like `capsh --decode`.")
    p.add_argument("pid", nargs="?", help="a PID, or 'self'")
    p.add_argument("--json", action="store_true",
                   help="JSON keyed by set name, each a sorted list of capsh names")
    p.add_argument("--decode", metavar="HEXMASK", help="decode a mask, e.g. 000001fffeffffff")
    p.add_argument("--list", action="store_true", help="every capability with its meaning")
    p.set_defaults(func=_cli)
