"""Attach a loop device to a file: the one place the lab does it (loop(4)).

Two chapters need a block device of their own: chapter 03 a read-write one
to throttle with the io controller (:class:`LoopDevice`, also known as
``cgroups.LoopDevice``), chapter 07 a read-only stand-in for a host disk
(``insecure.HostDisk``).  Both go through ``attach_loop``; registering the
device in the lab (``register("loop", backing_file)`` before attaching) stays
with the caller, which owns the file.  ``lab`` finds and detaches leftovers
with :func:`loops_backed_by` and :func:`detach_loops`.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil

from . import _registry
from ._units import human, parse_size
from .errors import BadInput, LabError, NeedsPrivilege, NotSupported, StillPresent, needs

# --- include/uapi/linux/loop.h ---------------------------------------------------------
LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A      # Linux 5.8: fd + status in one ioctl
LOOP_CTL_GET_FREE = 0x4C82   # on /dev/loop-control
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64
LO_KEY_SIZE = 32


class LoopInfo64(ctypes.Structure):
    """``struct loop_info64``: the device's status (here: only ``lo_flags`` is set)."""
    _fields_ = [("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64),
                ("lo_rdevice", ctypes.c_uint64), ("lo_offset", ctypes.c_uint64),
                ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
                ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
                ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * LO_NAME_SIZE),
                ("lo_crypt_name", ctypes.c_uint8 * LO_NAME_SIZE),
                ("lo_encrypt_key", ctypes.c_uint8 * LO_KEY_SIZE), ("lo_init", ctypes.c_uint64 * 2)]


class LoopConfig(ctypes.Structure):
    """``struct loop_config``: the argument of LOOP_CONFIGURE."""
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32),
                ("info", LoopInfo64), ("reserved", ctypes.c_uint64 * 8)]


# The uapi layout has no padding: 232 and 304 bytes on every architecture.
assert ctypes.sizeof(LoopInfo64) == 232 and ctypes.sizeof(LoopConfig) == 304


class NoFreeLoop(LabError, OSError):
    """Every free loop device was taken by someone else before we could configure it."""


@needs("CAP_SYS_ADMIN", "attaching a loop device:")
def attach_loop(path: str, *, read_only: bool = False, tries: int = 20) -> tuple[int, str]:
    """Attach a free loop device to the file ``path``; return ``(fd, "/dev/loopN")``.

    The device is configured with LO_FLAGS_AUTOCLEAR (loop(4)): the kernel
    detaches it at the last close of the device, so closing ``fd`` - or the
    death of this process - removes it.  Keep ``fd`` open as long as the
    device is needed.  ``read_only`` opens the file and the device read-only
    and sets LO_FLAGS_READ_ONLY.
    """
    mode = os.O_RDONLY if read_only else os.O_RDWR
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    # O_CLOEXEC: a program the lab execs must not hold the device open (autoclear
    # waits for the last close).  The kernel takes its own reference to the
    # backing file, so ours is closed once the device is configured.
    back = os.open(path, mode | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(tries):
                n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                fd = os.open(f"/dev/loop{n}", mode | os.O_CLOEXEC)
                cfg = LoopConfig(fd=back, block_size=0)  # 0: the default block size
                cfg.info.lo_flags = flags
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, cfg)
                except OSError as exc:
                    os.close(fd)
                    # GET_FREE only names a free device; another process may
                    # configure it first, and LOOP_CONFIGURE then fails EBUSY: retry.
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                return fd, f"/dev/loop{n}"
        finally:
            os.close(ctl)
    finally:
        os.close(back)
    raise NoFreeLoop(errno.EBUSY, f"no free loop device after {tries} tries: is something making many?")


# --- a lab block device, for the io controller (chapter 03) ---------------------------
# The io limits need a block device (MAJ:MIN); the lab makes its own: a loop
# device (loop(4)) over a sparse file in a registered folder, so no disk of the
# machine is ever throttled.  LOOP_CONFIGURE with LO_FLAGS_AUTOCLEAR ties the
# device to our open fd: when the fd closes (also when the kernel process
# dies), the kernel detaches it.  It is registered too ('loop', the backing
# file), so cleanup finds it from any process.  The attaching itself is
# _loop.attach_loop (chapter 07's read-only HostDisk uses it too).


def loops_backed_by(path: str, sysfs: str = "/sys/block") -> list[str]:
    """The /dev/loopN devices whose backing file is ``path``."""
    out = []
    try:
        names = sorted(os.listdir(sysfs))
    except OSError:
        return []
    for n in names:
        if not n.startswith("loop"):
            continue
        try:
            with open(os.path.join(sysfs, n, "loop", "backing_file")) as fh:
                f = fh.read()
        except OSError:  # not attached (no loop/backing_file), or gone meanwhile
            continue
        if f.strip().removesuffix(" (deleted)") == path:
            out.append(f"/dev/{n}")
    return out


@needs("CAP_SYS_ADMIN", "detaching a loop device:")
def detach_loops(path: str) -> None:
    """Detach every loop device backed by ``path`` (lab cleanup calls this)."""
    for dev in loops_backed_by(path):
        try:
            fd = os.open(dev, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: detached already
                raise
        finally:
            os.close(fd)


class LoopDevice:
    """A lab block device: ``LoopDevice("64M").create()`` → ``.path`` /dev/loopN, ``.number`` MAJ:MIN."""

    def __init__(self, size: int | str = "64M"):
        self.size = parse_size(size, "loop device size")
        if not self.size or self.size < 1 << 20 or self.size > 1 << 30:
            raise BadInput("loop device size: use between '1M' and '1G'")
        self.dir = os.path.join(_registry.run_dir(), _registry.name("loop"))
        self.file = os.path.join(self.dir, "disk.img")
        self.path = ""
        self._fd = -1
        self._entries: list = []

    @property
    def number(self) -> str:
        """``MAJ:MIN`` of the device, as the io controller's files want it."""
        rdev = os.stat(self.path).st_rdev
        return f"{os.major(rdev)}:{os.minor(rdev)}"

    def create(self) -> "LoopDevice":
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "making a loop device")
        if not os.path.exists("/dev/loop-control"):
            raise NotSupported("no /dev/loop-control: load the loop module (modprobe loop)")
        self._entries.append(_registry.register("dir", self.dir, note="loop device backing file"))
        try:
            os.makedirs(self.dir)
            with open(self.file, "wb") as f:
                f.truncate(self.size)  # sparse: reads of holes cost no disk
            self._entries.append(_registry.register("loop", self.file, note="loop device"))
            self._fd, self.path = attach_loop(self.file)  # autoclear: goes with self._fd
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Detach the device and delete its file, check both are gone. Safe twice."""
        if self._fd >= 0:
            os.close(self._fd)  # autoclear: the kernel detaches it now
            self._fd = -1
        for e in sorted(self._entries, key=lambda e: _registry.KINDS.index(e.kind)):
            if e.kind == "loop":
                detach_loops(e.name)
                if loops_backed_by(e.name):
                    raise StillPresent(f"a loop device over {e.name} is still attached: "
                                       "run `python -m justaprocess cleanup`")
            elif os.path.isdir(e.name):  # the folder: only the sparse file is in it
                shutil.rmtree(e.name)
            _registry.unregister(e)
        self._entries = []
        self.path = ""

    def __enter__(self) -> "LoopDevice":
        return self if self.path else self.create()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<LoopDevice {self.path or 'not created'} {human(self.size)}>"
