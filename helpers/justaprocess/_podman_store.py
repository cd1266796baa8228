"""A lab podman store as the registry sees it: is it (or an object in it) there, remove it.

Below ``lab``, which calls :func:`present` and :func:`remove` for entries of
kind ``podman`` (``justaprocess.podman`` registers them; it is above ``lab``).
Everything here goes through the podman CLI with the store's own
configuration (``CONTAINERS_CONF``/``CONTAINERS_STORAGE_CONF``), so it works
from any process, also after the kernel that made the objects was killed.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from . import _libc, _registry, _spawn, cgroups
from ._launch_child import step
from .errors import BadInput, LabError, MissingTool


MARK = ".jap-podman-store"          # in a store folder: "remove me with podman, not rm -r"


TYPES = ("pod", "container", "image")


LIBPOD_PARENT = "libpod_parent"     # podman's cgroupfs parent (libpod/define, CgroupfsDefaultCgroupParent)


_PARENT_MARK = "libpod-parent-made-by-lab"


_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


class PodmanError(LabError):
    """podman refused: its own message, and the command that was run."""


def binary() -> str:
    path = shutil.which("podman", path=_SEARCH)
    if path is None:
        raise MissingTool("podman", "podman")
    return path


def _entry_name(store: str, kind: str, name: str) -> str:
    return f"{store}/{kind}/{name}"


def _split(entry_name: str) -> tuple[str, str, str]:
    """(store, type, name) of a registry name; type and name are '' for a store itself."""
    parts = entry_name.rstrip("/").rsplit("/", 2)
    if len(parts) == 3 and parts[1] in TYPES and _registry.is_lab_name(os.path.basename(parts[0])):
        return parts[0], parts[1], parts[2]
    return entry_name, "", ""


def env_for(store: str) -> dict[str, str]:
    # TMPDIR: podman's temporary files (image copies, the pause image's Containerfile)
    # go to /var/tmp unless told (containers.conf(5) image_copy_tmp_dir, which the
    # store's configuration also sets; TMPDIR wins over it): into the store.
    return {**os.environ, "CONTAINERS_CONF": os.path.join(store, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(store, "storage.conf"),
            "TMPDIR": os.path.join(store, "tmp")}


# containers/image keeps a "blob info cache" (which layer blobs it has seen where, to
# skip copies) and, for root, takes its folder from a constant: /var/lib/containers/cache
# (containers/image pkg/blobinfocache/default.go).  No containers.conf or storage.conf
# key moves it, not even in podman 5: the storage's graphroot does not.
BLOB_INFO_CACHE = "/var/lib/containers/cache"

# The commands that copy an image (containers/image's copy) and so open that cache:
# import, pull, build ...; kube play and pod create build podman's pause image for
# the pod's infra container the first time a store needs it.
_COPIES = {"import", "pull", "build", "load", "commit", "push", "save"}
_COPIES_2 = {("kube", "play"), ("play", "kube"), ("pod", "create")}


def copies_images(args: list[str]) -> bool:
    """Does ``podman ARGS`` copy an image (so write the machine-wide blob info cache)?"""
    words = [a for a in args if not a.startswith("-")][:3]
    if words[:1] == ["image"] or words[:1] == ["container"]:
        words = words[1:]
    return bool(words) and (words[0] in _COPIES or tuple(words[:2]) in _COPIES_2)


def _first_existing(path: str) -> str:
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def cache_out_of_reach(keep: list[str]):
    """A ``prepare`` for a podman in a private mount namespace: the blob info cache is read-only.

    The deepest folder of :data:`BLOB_INFO_CACHE` that exists (on a fresh machine
    /var/lib) is bound onto itself and remounted read-only, in that namespace only
    (mount_namespaces(7), mount(2) MS_BIND|MS_REMOUNT|MS_RDONLY); containers/image
    then cannot make or update the cache and keeps it in memory for that one
    command (it does so when the folder cannot be made).  The lab's own folders
    below it (``keep``: the store) are bound onto themselves again, writable.
    Nothing on the machine changes: the mounts go with the namespace.
    """
    top = _first_existing(BLOB_INFO_CACHE)
    keep = [os.path.realpath(k) for k in keep]
    keep = [k for k in keep if os.path.commonpath([k, os.path.realpath(top)]) == os.path.realpath(top)]
    st = os.statvfs(top)
    locked = st.f_flag & (_libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)  # ST_* == MS_*

    def prepare() -> None:
        step(f"read-only {top}")
        _libc.mount(top, top, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount(None, top, None, _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY | locked)
        for k in keep:
            step(f"writable {k}")
            _libc.mount(k, k, None, _libc.MS_BIND | _libc.MS_REC)
            flags = os.statvfs(k).f_flag & (_libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
            _libc.mount(None, k, None, _libc.MS_BIND | _libc.MS_REMOUNT | flags)
    return prepare


def _cli(store: str, args: list[str], *, timeout: float = 120, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """One podman command with the store's configuration, as a registered lab process."""
    # cwd: the store.  conmon (podman's monitor) writes its OOM marker file "oom" into
    # the working directory it inherits; podman 4.3 looks for it in the container's
    # bundle instead, so that file must not land in the caller's folder.
    # A command that copies an image runs in a mount namespace of its own, where the
    # machine-wide blob info cache is read-only (cache_out_of_reach).
    private = copies_images(args) and os.path.isdir(store)
    p = _spawn.spawn([binary(), *args], env=env_for(store), cwd=store if os.path.isdir(store) else "/",
                  note="podman " + " ".join(args[:2]),
                  new="mnt" if private else (), preexec=cache_out_of_reach([store]) if private else None,
                  stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.popen.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.stop()
        raise PodmanError(f"`podman {' '.join(args)}` took longer than {timeout:.0f} s: stopped it")
    finally:
        p.stop()
    r = subprocess.CompletedProcess([binary(), *args], p.popen.returncode, out, err)
    if check and r.returncode != 0:
        raise PodmanError(f"`podman {' '.join(args)}` failed: {err.strip() or out.strip()}")
    return r


def _ids_file(store: str) -> str:
    return os.path.join(store, "ids")


def _remember_ids(store: str) -> None:
    """Write down the full ids of the store's pods and containers: they name their cgroups."""
    ids = set()
    for args in (["ps", "-a", "-q", "--no-trunc"], ["pod", "ps", "-q", "--no-trunc"]):
        r = _cli(store, args, check=False)
        ids |= set(r.stdout.split())
    if ids:
        with open(_ids_file(store), "a") as f:
            f.write("".join(i + "\n" for i in sorted(ids)))


def _known_ids(store: str) -> set[str]:
    try:
        with open(_ids_file(store)) as f:
            return {line.strip() for line in f if len(line.strip()) == 64}
    except OSError:
        return set()


def _hierarchy_mounts() -> list[str]:
    return sorted({h.mountpoint for h in cgroups.hierarchies()})


def _note_libpod_parent() -> None:
    """Remember that the lab's podman made libpod_parent (so the lab may rmdir it when empty)."""
    if not any(os.path.isdir(os.path.join(m, LIBPOD_PARENT)) for m in _hierarchy_mounts()):
        os.makedirs(_registry.state_dir(), exist_ok=True)
        open(os.path.join(_registry.state_dir(), _PARENT_MARK), "a").close()


# The state folder runc(8) and crun(1) keep for root when not given --root (podman
# passes none): one subfolder per container, removed with it; the folder stays.
RUNTIME_ROOTS = {"runc": "/run/runc", "crun": "/run/crun"}
_ROOT_MARK = "runtime-root-made-by-lab"


def _note_runtime_root(runtime: str) -> None:
    """Remember that the lab's podman will make the runtime's state folder (to rmdir it when empty)."""
    path = RUNTIME_ROOTS.get(runtime)
    if path and not os.path.isdir(path):
        os.makedirs(_registry.state_dir(), exist_ok=True)
        with open(os.path.join(_registry.state_dir(), _ROOT_MARK), "a") as f:
            f.write(path + "\n")


def _sweep_runtime_roots() -> None:
    """rmdir the runtime state folders the lab's podman made, once empty (another store's
    containers keep theirs in it: then it stays, and the note too)."""
    mark = os.path.join(_registry.state_dir(), _ROOT_MARK)
    try:
        with open(mark) as f:
            paths = {line.strip() for line in f} & set(RUNTIME_ROOTS.values())
    except FileNotFoundError:
        return
    left = []
    for path in sorted(paths):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(path)
    if left:
        with open(mark, "w") as f:
            f.write("".join(p + "\n" for p in left))
    else:
        os.unlink(mark)


def _sweep_cgroups(ids: set[str]) -> list[str]:
    """rmdir the cgroups named after these pods/containers (empty ones only), deepest first."""
    left = []
    for m in _hierarchy_mounts():
        parent = os.path.join(m, LIBPOD_PARENT)
        if not os.path.isdir(parent):
            continue
        for top in os.listdir(parent):
            if top.removeprefix("libpod-").removeprefix("conmon-") not in ids:
                continue
            for d, _, _ in sorted(os.walk(os.path.join(parent, top)), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(d)
                except OSError:
                    left.append(d)
    mark = os.path.join(_registry.state_dir(), _PARENT_MARK)
    if os.path.exists(mark):
        busy = False
        for m in _hierarchy_mounts():
            try:  # conmon's own cgroup (cgroupfs: libpod_parent/conmon), then the parent
                os.rmdir(os.path.join(m, LIBPOD_PARENT, "conmon"))
            except OSError:
                pass
            try:
                os.rmdir(os.path.join(m, LIBPOD_PARENT))
            except FileNotFoundError:
                pass
            except OSError:   # another store's pods are still there
                busy = True
        if not busy:
            os.unlink(mark)
    return left


def leftover_cgroups(store: str) -> list[str]:
    """Cgroup folders of this store's pods and containers that are still there."""
    ids = _known_ids(store)
    out = []
    for m in _hierarchy_mounts():
        parent = os.path.join(m, LIBPOD_PARENT)
        if os.path.isdir(parent):
            out += [os.path.join(parent, t) for t in os.listdir(parent)
                    if t.removeprefix("libpod-").removeprefix("conmon-") in ids]
    return out


def is_store(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARK))


def present(entry_name: str) -> bool:
    """Is this registered podman object (or store) still there?"""
    store, kind, name = _split(entry_name)
    if not kind:
        return os.path.isdir(store)
    if not is_store(store) or shutil.which("podman", path=_SEARCH) is None:
        return False
    name = name.replace("%", "/")
    args = {"pod": ["pod", "exists", name], "container": ["container", "exists", name],
            "image": ["image", "exists", name]}[kind]
    return _cli(store, args, check=False, timeout=30).returncode == 0


def remove(entry_name: str) -> None:
    """Remove one registered podman object, or a whole store (what ``lab.remove`` calls)."""
    store, kind, name = _split(entry_name)
    if not kind:
        remove_store(store)
        return
    if not is_store(store):
        return
    name = name.replace("%", "/")
    args = {"pod": ["pod", "rm", "-f", "-t", "0", name], "container": ["rm", "-f", "-t", "0", name],
            "image": ["rmi", "-f", name]}[kind]
    r = _cli(store, args, check=False, timeout=60)
    if r.returncode != 0 and present(entry_name):
        raise OSError(f"podman {' '.join(args)}: {r.stderr.strip()}")
    _sweep_cgroups(_known_ids(store))


def remove_store(store: str) -> None:
    """Everything podman made in a store: pods, containers, images, cgroups, mounts, the folder."""
    if not _registry.is_lab_object("podman", store):
        raise BadInput(f"not a lab podman store: {store!r}")
    if is_store(store) and shutil.which("podman", path=_SEARCH):
        _remember_ids(store)
        # One pod at a time takes seconds each (podman waits for a memory-limited cgroup
        # to empty): remove them side by side, a few at once.
        pods = _cli(store, ["pod", "ps", "-q"], check=False).stdout.split()
        if pods:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda p: _cli(store, ["pod", "rm", "-f", "-t", "0", p], check=False,
                                             timeout=120), pods))
        for args in (["pod", "rm", "-a", "-f", "-t", "0"], ["rm", "-a", "-f", "-t", "0"],
                     ["rmi", "-a", "-f"]):
            _cli(store, args, check=False, timeout=120)
        _sweep_cgroups(_known_ids(store))
        _sweep_runtime_roots()
    runroot = _runroot(store)
    # The overlay mounts podman keeps under its root (containers-storage): unmount, then remove.
    for d in (runroot, store):
        if d and os.path.isdir(d) and _registry.is_lab_name(os.path.basename(d)):
            _registry.remove_dir(d)


def _runroot(store: str) -> str | None:
    try:
        with open(os.path.join(store, "storage.conf")) as f:
            for line in f:
                if line.startswith("runroot"):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None
