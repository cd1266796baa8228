"""The capability table: names, numbers and meanings, masks and the five sets (capabilities(7)).

The one table of capability names in the lab, below every module that needs it:
``capabilities`` (the chapter's helpers) and the launcher (``_launch``, which
keeps or drops sets in the processes it starts) both read it from here.
"""
from __future__ import annotations

import os
from typing import Iterable, NamedTuple

from . import _libc, proc
from .errors import BadInput

PROCFS = proc.PROCFS
SETS = ("effective", "permitted", "inheritable", "bounding", "ambient")


# --- names, numbers, meanings ------------------------------------------------
# Numbers from include/uapi/linux/capability.h; names spelled as libcap's capsh
# prints them; meanings condensed from capabilities(7).  The kernel tells how
# many exist (/proc/sys/kernel/cap_last_cap): bits above the last one in this
# table are spelled as bare numbers, the way capsh spells them.
_TABLE = (
    ("cap_chown", "change the owner and group of any file (chown(2))"),
    ("cap_dac_override", "bypass file read, write and execute permission checks"),
    ("cap_dac_read_search", "bypass file read and directory search permission checks"),
    ("cap_fowner", "act as owner of any file (chmod, utime, set ACLs/xattrs of others' files)"),
    ("cap_fsetid", "keep set-user/group-ID bits when modifying a file; set setgid on others' groups"),
    ("cap_kill", "send signals to processes of other users (kill(2))"),
    ("cap_setgid", "change group IDs and supplementary groups (setgid(2), setgroups(2))"),
    ("cap_setuid", "change user IDs (setuid(2)); forge UIDs in socket credentials"),
    ("cap_setpcap", "drop from the bounding set; raise inheritable caps; set securebits"),
    ("cap_linux_immutable", "set the immutable and append-only file attributes"),
    ("cap_net_bind_service", "bind a socket to a port below 1024"),
    ("cap_net_broadcast", "(unused) socket broadcasting and multicast listening"),
    ("cap_net_admin", "configure the network: interfaces, routes, firewall, sockets options"),
    ("cap_net_raw", "open RAW and PACKET sockets (ping, sniffers)"),
    ("cap_ipc_lock", "lock memory (mlock(2), mlockall(2), huge pages)"),
    ("cap_ipc_owner", "bypass permission checks on System V IPC objects"),
    ("cap_sys_module", "load and unload kernel modules"),
    ("cap_sys_rawio", "raw I/O: ioperm(2), iopl(2), /dev/mem, /dev/kmem"),
    ("cap_sys_chroot", "call chroot(2); change mount namespace with setns(2)"),
    ("cap_sys_ptrace", "trace and read the memory of any process (ptrace(2), /proc/PID/mem)"),
    ("cap_sys_pacct", "switch process accounting on or off (acct(2))"),
    ("cap_sys_admin", "the catch-all: mount, sethostname, unshare/setns, quotas, many more"),
    ("cap_sys_boot", "reboot the machine; load a new kernel (kexec_load(2))"),
    ("cap_sys_nice", "raise priority and set real-time scheduling of any process"),
    ("cap_sys_resource", "exceed resource limits: raise hard rlimits, use reserved space"),
    ("cap_sys_time", "set the system clock and the real-time clock"),
    ("cap_sys_tty_config", "vhangup(2); privileged ioctls on virtual terminals"),
    ("cap_mknod", "create device special files (mknod(2))"),
    ("cap_lease", "take leases on files one does not own (fcntl(2) F_SETLEASE)"),
    ("cap_audit_write", "write records to the kernel audit log"),
    ("cap_audit_control", "configure kernel auditing: rules, enable/disable"),
    ("cap_setfcap", "set file capabilities (setxattr security.capability)"),
    ("cap_mac_override", "override Mandatory Access Control (Smack)"),
    ("cap_mac_admin", "configure Mandatory Access Control (Smack)"),
    ("cap_syslog", "privileged syslog(2) operations; see kernel addresses"),
    ("cap_wake_alarm", "set timers that wake the system (CLOCK_*_ALARM)"),
    ("cap_block_suspend", "block system suspend (EPOLLWAKEUP)"),
    ("cap_audit_read", "read the audit log through a multicast netlink socket"),
    ("cap_perfmon", "performance monitoring (perf_event_open(2))"),
    ("cap_bpf", "privileged BPF operations (bpf(2))"),
    ("cap_checkpoint_restore", "checkpoint/restore helpers (set_tid in clone3, ns_last_pid)"),
)


class Cap(NamedTuple):
    """One capability: its bit number, capsh's name and a one-line meaning."""
    number: int
    name: str
    meaning: str


_LAST_CAP: int | None = None


def last_cap(procfs: str = PROCFS) -> int:
    """The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).

    Cached: a child set up by a container engine may call this after
    pivot_root, when no /proc is mounted.  Without the file, probe with
    PR_CAPBSET_READ, which answers EINVAL past the last one (prctl(2)).
    """
    global _LAST_CAP
    if procfs == PROCFS and _LAST_CAP is not None:
        return _LAST_CAP
    try:
        with open(os.path.join(procfs, "sys/kernel/cap_last_cap")) as f:
            value = int(f.read())
    except OSError:
        value = 0
        while value < 63:
            try:
                _libc.prctl(_libc.PR_CAPBSET_READ, value + 1)
            except OSError:
                break
            value += 1
    if procfs == PROCFS:
        _LAST_CAP = value
    return value


def all_caps(procfs: str = PROCFS) -> list[Cap]:
    """Every capability of this kernel, by number (0 .. cap_last_cap)."""
    out = []
    for n in range(last_cap(procfs) + 1):
        if n < len(_TABLE):
            out.append(Cap(n, *_TABLE[n]))
        else:
            out.append(Cap(n, str(n), "newer than this helper: see capabilities(7)"))
    return out


def cap_name(number: int) -> str:
    """capsh's spelling of a capability number: ``cap_chown``, or ``41`` past the table."""
    if not isinstance(number, int) or number < 0 or number > 63:
        raise BadInput(f"capability numbers go from 0 to 63, not {number!r}")
    return _TABLE[number][0] if number < len(_TABLE) else str(number)


def cap_number(name: str | int) -> int:
    """The number of a capability: accepts ``cap_chown``, ``CAP_CHOWN``, ``chown``, ``0``."""
    if isinstance(name, int) and not isinstance(name, bool):
        if 0 <= name <= last_cap():
            return name
        raise BadInput(f"no capability number {name} on this kernel: 0 to {last_cap()} "
                       "(/proc/sys/kernel/cap_last_cap)")
    if not isinstance(name, str):
        raise BadInput(f"a capability is a name like 'cap_chown' or a number, not {name!r}")
    key = name.strip().lower()
    if key.isdigit():
        return cap_number(int(key))
    if not key.startswith("cap_"):
        key = "cap_" + key
    for n, (nm, _) in enumerate(_TABLE):
        if nm == key and n <= last_cap():
            return n
    raise BadInput(f"unknown capability {name!r}: names look like cap_chown or CAP_NET_ADMIN; "
                   "list them with `python -m justaprocess caps --list` (capabilities(7))")


def meaning(name: str | int) -> str:
    """The one-line meaning of a capability."""
    n = cap_number(name)
    return _TABLE[n][1] if n < len(_TABLE) else "newer than this helper: see capabilities(7)"


def to_mask(names: Iterable[str | int]) -> int:
    """A 64-bit mask from capability names or numbers (unknown name → BadInput)."""
    if isinstance(names, (str, int)):
        names = [names]
    if names is ... or not hasattr(names, "__iter__"):
        raise BadInput(f"capabilities are given as a list of names like ['cap_chown'], not {names!r}")
    mask = 0
    for nm in names:
        mask |= 1 << cap_number(nm)
    return mask


def decode(mask: int | str) -> tuple[str, ...]:
    """Names of the bits set in a mask, lowest bit first, as ``capsh --decode`` lists them.

    ``mask`` may be an int or a hex string (with or without ``0x``), as in
    /proc/PID/status.
    """
    mask = _parse_mask(mask)
    return tuple(cap_name(n) for n in range(64) if mask >> n & 1)


def capsh_decode(mask: int | str) -> str:
    """The line ``capsh --decode=MASK`` prints: ``0x0000000000000003=cap_chown,cap_dac_override``."""
    mask = _parse_mask(mask)
    return f"0x{mask:016x}=" + ",".join(decode(mask))


def _parse_mask(mask: int | str) -> int:
    if isinstance(mask, bool):
        raise BadInput(f"a capability mask is an integer or hex string, not {mask!r}")
    if isinstance(mask, int):
        value = mask
    else:
        text = str(mask).strip().lower()
        text = text[2:] if text.startswith("0x") else text
        try:
            value = int(text, 16)
        except ValueError:
            raise BadInput(f"not a hex capability mask: {mask!r} (e.g. 000001ffffffffff, "
                           "as in CapEff of /proc/PID/status)") from None
    if not 0 <= value < 1 << 64:
        raise BadInput(f"a capability mask has 64 bits: {mask!r} is out of range")
    return value


# --- the five sets of a process -------------------------------------------------

class CapSets(NamedTuple):
    """A process's five sets, each a tuple of names lowest bit first (capabilities(7))."""
    effective: tuple[str, ...]
    permitted: tuple[str, ...]
    inheritable: tuple[str, ...]
    bounding: tuple[str, ...]
    ambient: tuple[str, ...]

    def as_json(self) -> dict[str, list[str]]:
        """{set name: alphabetically sorted list of names} - the CLI's ``--json``."""
        return {k: sorted(getattr(self, k)) for k in SETS}


def from_masks(masks: proc.CapMasks) -> CapSets:
    return CapSets(decode(masks.effective), decode(masks.permitted), decode(masks.inheritable),
                   decode(masks.bounding), decode(masks.ambient))
