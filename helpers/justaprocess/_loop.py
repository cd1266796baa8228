"""Attach a loop device to a file: the one place the lab does it (loop(4)).

Two chapters need a block device of their own: chapter 03 a read-write one
to throttle with the io controller (``cgroups.LoopDevice``), chapter 07 a
read-only stand-in for a host disk (``insecure.HostDisk``).  Both go through
``attach_loop``; registering the device in the lab (``lab.register("loop",
backing_file)`` before attaching) stays with the caller, which owns the file.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from .errors import LabError

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
