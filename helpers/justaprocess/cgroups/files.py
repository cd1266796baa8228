"""The cgroup filesystem: every mkdir, rmdir, read and write of a cgroup file the lab makes.

They go through this module, so that the unit tests' fake tree can play the
kernel (``monkeypatch.setattr(cgroups.files, "_write", ...)``: make a new
cgroup's interface files, refuse what the kernel refuses).  A missing file is a
missing controller: writes never create files.
"""
from __future__ import annotations

import errno
import os


# Directory operations go through these two, so the unit tests' fake tree can
# play the kernel (make a new cgroup's interface files, remove them on rmdir).
def _mkdir(path: str) -> None:
    os.mkdir(path)


def _rmdir(path: str) -> None:
    os.rmdir(path)


def _write(path: str, value: str) -> None:
    """Write one value to a cgroup file: no O_CREAT (a missing file is a missing controller)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def _keyed(text: str | None) -> dict[str, int]:
    """Flat keyed files (cpu.stat, memory.events, pids.events, oom_control): {key: int}."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    if t in ("max", ""):
        return None
    return int(t)


def _v1_limit(text: str | None) -> int | None:
    """v1 prints 'no limit' as a huge page-aligned number (PAGE_COUNTER_MAX pages)."""
    n = _int(text)
    return None if n is None or n >= (1 << 62) else n
