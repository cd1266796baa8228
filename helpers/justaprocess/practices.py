"""Container do's and don'ts, each shown live (chapter 13).

The talk's lists ("Container Do's", "Container Dont's", "Optimal Containers")
turned into small, real containers built with the hand-built engine:

* :func:`make_root` - a root filesystem of exactly the files given (a bare
  root for the static/dynamic demo, a one-binary "distroless" image), its
  folder registered with the lab before it is made;
* :func:`elf_interpreter` - the ELF interpreter a dynamic binary names
  (PT_INTERP, elf(5)): the file whose absence makes execve(2) fail with a
  misleading ENOENT;
* :func:`add_binary` - copy a host binary and the shared libraries ldd(1)
  names into a root (what a "dynamic" image must carry);
* :func:`wait_line` - wait for a line in a container's log with inotify(7),
  no polling;
* :func:`root_size` / :func:`executables` - what an image ships.
"""
from __future__ import annotations

import os
import select
import shutil
import struct
import time

from . import _libc, lab
from . import rootfs as _rootfs
from .errors import BadInput, LabError, MissingTool, needs

# --- roots of exactly the files given -----------------------------------------------------


class Root:
    """A folder to use as a container's root (``Container(rootfs=root.path)``); ``remove()`` it."""

    def __init__(self, path: str, entry):
        self.path, self._entry = path, entry

    def file(self, inside: str) -> str:
        """The host path of a path inside this root."""
        return os.path.join(self.path, inside.lstrip("/"))

    def remove(self) -> None:
        if self._entry is not None:
            lab.remove(self._entry)
            self._entry = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self) -> str:
        return f"<Root {self.path}: {', '.join(sorted(os.listdir(self.path)))}>"


@needs("root", "making a root folder in the lab's state folder:")
def make_root(files: dict[str, str] | None = None, *, text: dict[str, str] | None = None,
              dirs=("proc", "dev", "tmp"), suffix: str = "root") -> Root:
    """A root folder holding ``files`` ({path inside: host file to copy}), ``text``
    ({path inside: content}) and the empty ``dirs`` the engine mounts on."""
    ident = lab.new_id()
    path = os.path.join(lab.run_dir(), lab.name(suffix, ident))
    entry = lab.register("dir", path, note="a root made by practices.make_root")
    try:
        os.makedirs(path)
        for d in dirs:
            os.makedirs(os.path.join(path, d), exist_ok=True)
        for inside, src in (files or {}).items():
            if not os.path.isfile(src):
                raise BadInput(f"{src!r} is not a file on the host")
            dest = os.path.join(path, inside.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(src, dest)
        for inside, content in (text or {}).items():
            dest = os.path.join(path, inside.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w") as f:
                f.write(content)
    except BaseException:
        lab.remove(entry)
        raise
    return Root(path, entry)


def elf_interpreter(path: str) -> str | None:
    """The program interpreter an ELF file names (its PT_INTERP segment), or None if static.

    elf(5): the program headers start at e_phoff; an entry of type PT_INTERP (3)
    holds the path of the dynamic loader the kernel runs first (execve(2)).
    A static-pie binary (glibc's ldconfig) has no PT_INTERP either.
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise BadInput(f"{path} is not an ELF file")
        if head[4] != 2:
            raise BadInput(f"{path}: only 64-bit ELF files are read here")
        order = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack(order + "IIQQQQ", f.read(40))
            if p_type == 3:
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


def add_binary(root: Root | str, binary: str, inside: str | None = None) -> list[str]:
    """Copy a host binary into a root with the shared libraries it needs (ldd(1)), at
    the same paths; returns the paths added inside the root."""
    base = root.path if isinstance(root, Root) else root
    if not os.path.isfile(binary):
        raise MissingTool(os.path.basename(binary))
    added = []
    for src, dest in [(binary, inside or binary)] + [(lib, lib) for lib in _rootfs.libraries(binary)]:
        target = os.path.join(base, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(src), target)
        added.append(dest)
    return added


def root_size(path: str) -> int:
    """Bytes of the regular files under ``path`` (du --apparent-size, symlinks not followed)."""
    total = 0
    for d, _, names in os.walk(path):
        for n in names:
            p = os.path.join(d, n)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def executables(path: str) -> list[str]:
    """The commands a shell in this root would find on its PATH (files and links that are executable)."""
    out = set()
    for d in _rootfs.PATH.split(":"):
        full = os.path.join(path, d.lstrip("/"))
        if os.path.isdir(full):
            out.update(n for n in os.listdir(full)
                       if os.access(os.path.join(full, n), os.X_OK, follow_symlinks=False))
    return sorted(out)


# --- waiting for a log line: inotify, not polling -----------------------------------------

class NoSuchLine(LabError):
    """The line did not appear in time."""


def wait_until(container, found, timeout: float = 10.0, *, after: int = 0, what: str = ""):
    """Wait until ``found(log_text)`` returns something truthy, for the container's stdout log
    from byte ``after``; re-read on each inotify(7) IN_MODIFY of the log file, never polled."""
    path = os.path.join(container.dir, "stdout.log")
    fd = _libc.inotify_init1()
    try:
        _libc.inotify_add_watch(fd, path, _libc.IN_MODIFY)
        deadline = time.monotonic() + timeout
        while True:
            with open(path, errors="replace") as f:   # read after the watch: no event lost
                f.seek(after)
                value = found(f.read())
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise NoSuchLine(f"{what or 'the line'} did not appear in the log of "
                                 f"{container.name} within {timeout} s ({container.state})")
            os.read(fd, 4096)   # drain the events
    finally:
        os.close(fd)


def wait_line(container, text: str, timeout: float = 10.0, *, after: int = 0) -> str:
    """The first line of the container's stdout log (from byte ``after``) containing ``text``."""
    def first(log: str) -> str | None:
        return next((line for line in log.splitlines() if text in line), None)
    return wait_until(container, first, timeout, after=after, what=f"a line with {text!r}")


def last_line(log: str, text: str) -> str | None:
    """The last line of ``log`` that contains ``text``."""
    lines = [line for line in log.splitlines() if text in line]
    return lines[-1] if lines else None


def log_size(container) -> int:
    """Where the stdout log ends now (for ``wait_line(after=...)``)."""
    try:
        return os.path.getsize(os.path.join(container.dir, "stdout.log"))
    except FileNotFoundError:
        return 0


# --- the demos' programs -----------------------------------------------------------------

# Reads /config/app.conf at start and again whenever the file is rewritten: inotifywait
# (inotify-tools) reports each close_write/moved_to in /config; PID 1 stays the same.
READY = "Watches established"
RELOADING_APP = r"""#!/bin/sh
load() { . /config/app.conf; echo "config loaded: GREETING=$GREETING (PID $$)"; }
load
mkfifo /tmp/events
# its stderr ("Watches established.") to the log: from then on no change is missed
inotifywait -m -e close_write,moved_to --format %f /config 2>&1 > /tmp/events &
while read -r name; do
  [ "$name" = app.conf ] && load
done < /tmp/events
"""

# Fails quietly, as many services do; DEBUG=1 (the debug flag) traces every command to stdout.
QUIET_APP = r"""#!/bin/sh
exec 2>&1                          # errors and the trace go to stdout, where the engine collects them
[ "$DEBUG" = 1 ] && set -x         # the debug flag: sh(1) -x prints each command before running it
port=$(cat /config/port 2>/dev/null) || exit 3
db=$(cat /config/db-host 2>/dev/null) || exit 3
echo "serving on $port, database $db"
"""

# Counts its starts in a state file: in its root (lost when the container is replaced)
# or on a volume (kept).
COUNTER_APP = r"""#!/bin/sh
f=${STATE:-/var/lib/app/starts}
mkdir -p "$(dirname "$f")"
n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))
echo $n > "$f" || { echo "cannot save state to $f"; exit 1; }
echo "start number $n"
"""


def inotify_tools(root: str) -> list[str]:
    """Put inotifywait (a dynamic binary) and its libraries into a root."""
    path = shutil.which("inotifywait")
    if path is None:
        raise MissingTool("inotifywait", "inotify-tools")
    return add_binary(root, path, "/usr/local/bin/inotifywait")
