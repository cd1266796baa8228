"""Small root filesystems for the lab's containers, built once and cached.

A container image is, at bottom, a folder tree (or a tarball of one) that
becomes the container's ``/``.  Two are built here:

* ``busybox``: Debian's static busybox (one binary, no libraries) plus the
  applet links and a few files under /etc - enough for a shell, ps, ip, httpd.
* ``tools``: the same plus a few *dynamically* linked host tools (strace ...)
  copied with the shared libraries ``ldd`` says they need - the "tool
  container" of the troubleshooting chapters.

Both are kept under ``lab.cache_dir()`` as a folder and a tarball: they are not
leftovers.  A missing or incomplete one is rebuilt.  A container gets its own
copy (``tar -x`` into ``lab.run_dir()``): see :mod:`justaprocess.container`.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import NamedTuple

from . import _launch, lab
from .errors import BadInput, LabError, MissingTool, NeedsPrivilege

KINDS = ("busybox", "tools")
# Bump when the content changes: a cache built by an older version is rebuilt.
VERSION = 1
MARKER = ".jap-rootfs"  # written last: its presence means the build completed

# Tools copied into the "tools" rootfs: (tool, Debian package, required?).
TOOLS = (("strace", "strace", True), ("ip", "iproute2", False), ("ss", "iproute2", False))

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# The same PATH Docker gives a container; /usr/local/bin first so the tools
# rootfs' real strace/ip win over busybox applets of the same name.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "container\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "etc/os-release": 'NAME="justaprocess busybox"\nID=justaprocess\nPRETTY_NAME="Just a Process lab rootfs"\n',
    "etc/profile": f"export PATH={PATH}\nexport PS1='[container] \\w # '\n",
    "var/www/index.html": "<h1>hello from a container built by hand</h1>\n",
}
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "proc", "sys", "dev",
        "root", "tmp", "var/www", "var/log", "run", "home", "mnt")


class Rootfs(NamedTuple):
    """A built root filesystem: the folder, its tarball, and what is in it."""
    kind: str
    path: str       # the folder (to look at, or to use read-only)
    tarball: str    # the same tree as an uncompressed tar (to copy per container)
    tools: tuple[str, ...] = ()


def busybox_binary() -> str:
    """The host's static busybox (Debian package busybox-static).

    A dynamically linked busybox (Debian's plain `busybox` package) would find
    no libc inside the rootfs and fail there with a bare ENOENT: refuse it here.
    """
    for p in BUSYBOX_CANDIDATES:
        if os.path.exists(p) and _is_static(p):
            return p
    raise MissingTool("busybox (statically linked)", "busybox-static")


def _is_static(path: str) -> bool:
    # `ldd` says "not a dynamic executable" (exit 1) for a static binary.
    r = _launch.tool(["ldd", path])
    return r.returncode != 0 or "statically linked" in r.stdout


def libraries(binary: str) -> list[str]:
    """The shared libraries (and the loader) a dynamic binary needs, per ldd(1).

    Lines look like ``libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`` or
    ``/lib64/ld-linux-x86-64.so.2 (0x...)``; ``linux-vdso.so.1`` has no file.
    """
    if shutil.which("ldd") is None:
        raise MissingTool("ldd", "libc-bin")
    r = _launch.tool(["ldd", binary])
    if r.returncode != 0:
        return []  # static: nothing to copy
    out = []
    for line in r.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            out.append(m.group(1))
    return out


def _cache(kind: str) -> tuple[str, str]:
    base = lab.cache_dir()
    return os.path.join(base, f"rootfs-{kind}"), os.path.join(base, f"rootfs-{kind}.tar")


def _complete(path: str, tarball: str) -> bool:
    try:
        with open(os.path.join(path, MARKER)) as f:
            return f.read().strip() == str(VERSION) and os.path.getsize(tarball) > 0
    except OSError:
        return False


def _install_busybox(root: str) -> None:
    shutil.copy2(busybox_binary(), os.path.join(root, "bin", "busybox"))
    # The applet links are made *inside* the new root: run on the host,
    # `busybox --install -s DIR` writes absolute links to the host's busybox
    # path, which do not resolve inside the rootfs (docs/kernel-notes.md, "Mounts and pivot_root").
    r = _launch.tool(["chroot", root, "/bin/busybox", "--install", "-s", "/bin"])
    if r.returncode != 0:
        raise LabError(f"busybox --install inside {root} failed: {r.stderr.strip() or r.returncode}: "
                       "check that busybox-static runs on this machine (`busybox true`), then "
                       "build again (rootfs.build(force=True))")


def _write_etc(root: str) -> None:
    for rel, text in ETC.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)


def _copy_tool(root: str, tool: str) -> None:
    """Copy a host binary to /usr/local/bin and its libraries to the same paths."""
    src = shutil.which(tool)
    os.makedirs(os.path.join(root, "usr/local/bin"), exist_ok=True)
    shutil.copy2(os.path.realpath(src), os.path.join(root, "usr/local/bin", tool))
    for lib in libraries(src):
        dst = os.path.join(root, lib.lstrip("/"))
        if os.path.exists(dst):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        # The listed path is often a symlink (libc.so.6 -> libc-2.36.so): copy
        # the file it points to under the listed name, the name the loader asks for.
        shutil.copy2(os.path.realpath(lib), dst)


def _marker_stamp(path: str) -> int | None:
    try:
        return os.stat(os.path.join(path, MARKER)).st_mtime_ns
    except OSError:
        return None


def _build(kind: str, path: str, tarball: str) -> tuple[str, ...]:
    """Build into a temporary tree, then swap it in; a failure leaves no half-built tree."""
    tmp = f"{path}.tmp-{os.getpid()}"
    tar_tmp = f"{tarball}.tmp-{os.getpid()}"
    try:
        return _build_into(kind, path, tarball, tmp, tar_tmp)
    except LabError:
        raise
    except OSError as exc:
        raise LabError(f"building the {kind} rootfs in {os.path.dirname(path)} failed: {exc}: "
                       f"check the free space there (df -h {os.path.dirname(path)}), then build "
                       "again") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.unlink(tar_tmp)
        except FileNotFoundError:
            pass


def _build_into(kind: str, path: str, tarball: str, tmp: str, tar_tmp: str) -> tuple[str, ...]:
    before = _marker_stamp(path)
    shutil.rmtree(tmp, ignore_errors=True)
    for d in DIRS:
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    os.chmod(os.path.join(tmp, "tmp"), 0o1777)
    _install_busybox(tmp)
    _write_etc(tmp)
    copied: list[str] = []
    if kind == "tools":
        for tool, pkg, required in TOOLS:
            if shutil.which(tool) is None:
                if required:
                    raise MissingTool(tool, pkg)
                continue
            _copy_tool(tmp, tool)
            copied.append(tool)
        with open(os.path.join(tmp, "etc/tools"), "w") as f:
            f.write("\n".join(copied) + "\n")
    # The tarball of the tree, as an image layer is one (tar(1)); made before
    # the marker so the marker says "folder and tarball complete".
    r = _launch.tool(["tar", "-C", tmp, "-cf", tar_tmp, "."], timeout=300)
    if not r.ok:
        raise LabError(f"building the {kind} rootfs: tar -c failed ({r.error or r.stderr.strip()}): "
                       f"check the free space in {os.path.dirname(path)} (df -h), then build again")
    with open(os.path.join(tmp, MARKER), "w") as f:
        f.write(f"{VERSION}\n")
    # Swap in: the tarball first, the folder (with its marker) last.  Another
    # process may have finished the same build meanwhile: then keep theirs.
    os.replace(tar_tmp, tarball)
    stamp = _marker_stamp(path)
    if stamp is not None and stamp != before and _complete(path, tarball):
        shutil.rmtree(tmp, ignore_errors=True)  # finished by another process meanwhile
        return tuple(copied)
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.rename(tmp, path)
    except OSError:  # ENOTEMPTY: another process put a tree there just now
        shutil.rmtree(tmp, ignore_errors=True)
        if not _complete(path, tarball):
            raise
    return tuple(copied)


def build(kind: str = "busybox", *, force: bool = False) -> Rootfs:
    """The cached rootfs of that kind, built now if missing, incomplete or forced.

    >>> r = build()          # doctest: +SKIP
    >>> os.listdir(r.path)   # bin etc proc ... (busybox and its applet links in bin/)
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadInput(f"unknown rootfs kind {kind!r}: one of {', '.join(KINDS)}")
    path, tarball = _cache(kind)
    if force or not _complete(path, tarball):
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", f"building the {kind} rootfs (chroot)")
        os.makedirs(lab.cache_dir(), exist_ok=True)
        tools = _build(kind, path, tarball)
    else:
        tools = ()
        if kind == "tools":
            with open(os.path.join(path, "etc/tools")) as f:
                tools = tuple(f.read().split())
    return Rootfs(kind, path, tarball, tools)


def extract(rootfs: Rootfs, dest: str) -> str:
    """Copy a rootfs into ``dest`` the way an engine unpacks an image: ``tar -x``.

    ``dest`` must not exist yet (the caller registered it as a lab ``dir``).
    """
    if not isinstance(rootfs, Rootfs):
        raise BadInput(f"extract() takes what rootfs.build() returns, not {rootfs!r}: "
                       "e.g. rootfs.extract(rootfs.build('busybox'), dest)")
    if not isinstance(dest, str) or not os.path.isabs(dest) or ".." in dest.split("/"):
        raise BadInput(f"the destination must be an absolute path without '..': {dest!r}")
    if os.path.lexists(dest):
        raise BadInput(f"{dest} exists: a rootfs is extracted into a new folder, never over a tree "
                       "(remove it or choose another)")
    try:
        os.makedirs(dest)
    except OSError as exc:
        raise LabError(f"cannot make {dest}: {exc.strerror}: check that its parent exists and "
                       "has free space") from exc
    r = _launch.tool(["tar", "-C", dest, "-xf", rootfs.tarball], timeout=300)
    if r.returncode != 0:
        said = [ln for ln in r.stderr.splitlines() if ln.strip()][:1] or [f"exit {r.returncode}"]
        raise LabError(f"tar -x of {rootfs.tarball} into {dest} failed ({said[0]}): "
                       "check the free space there; if the image is damaged, build it again "
                       f"(rootfs.build({rootfs.kind!r}, force=True))")
    return dest


def remove_cache(kind: str | None = None) -> None:
    """Delete the cached rootfs (one kind or all); the next build() makes it again."""
    for k in ([kind] if kind else KINDS):
        path, tarball = _cache(k)
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.unlink(tarball)
        except FileNotFoundError:
            pass
