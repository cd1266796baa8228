"""A real engine that reads Kubernetes manifests: podman, driven by the lab.

podman (podman(1)) runs containers with the same runtime as chapter 06 (runc;
crun on a pure cgroup-v2 machine where it is installed) and reads Kubernetes
YAML with ``podman kube play`` (podman-kube-play(1)): a Pod, or a Deployment
whose replicas become pods and whose ``resources.limits`` become cgroup limits.

The lab keeps podman away from the machine's own podman state.  Each
:class:`Store` is one folder ``<run_dir>/jap-<id>-podman`` holding its own
``containers.conf`` (containers.conf(5)) and ``storage.conf``
(containers-storage.conf(5)), named to podman with ``CONTAINERS_CONF`` and
``CONTAINERS_STORAGE_CONF``: images, containers, pods, logs, events and the
runtime state all live below that folder.  The configuration says:

- ``default_ulimits = []``: podman's default nofile ulimit needs
  CAP_SYS_RESOURCE to raise the hard limit, and some machines (this course's
  dev machines) lack it in the bounding set;
- ``netns = "none"`` and ``kube play --network none``: a pod gets its own
  network namespace with only ``lo`` in it, shared by its containers - no
  bridge or firewall rules on the host;
- ``cgroup_manager = "cgroupfs"``: no systemd needed.  podman then puts pods
  under ``libpod_parent/<pod id>`` at the top of each cgroup hierarchy; the
  lab removes the ones its pods made (podman leaves the ``name=systemd`` and
  hybrid ``unified`` copies behind) and ``libpod_parent`` itself when the lab
  made it and it is empty.

Images come from ``podman import`` of the lab's busybox root (no registry).
Copying an image (``import``; ``kube play`` builds podman's pause image for a
pod's infra container) writes a machine-wide "blob info cache" whose folder
containers/image takes from a constant, /var/lib/containers/cache: those
commands run in a private mount namespace where that folder (or, on a fresh
machine, /var/lib) is read-only and the store writable, so podman keeps that
cache in memory and nothing of the lab lands outside the store
(``_podman_store.cache_out_of_reach``).  Temporary files go to ``<store>/tmp``
(``image_copy_tmp_dir``, TMPDIR), not /var/tmp.

Registry (``lab.register``): the store (kind ``podman``, the folder's path)
and every pod, container and image in it (kind ``podman``,
``<store>/<type>/<name>``), each *before* podman makes it.  Removing an object
is ``podman pod rm -f`` / ``rm -f`` / ``rmi -f`` with the store's
configuration; removing the store removes everything in it, its cgroups and
the folder.  So ``cleanup`` works from any process, also after the kernel that
made them was killed (conmon keeps podman's containers running on their own).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Iterable

from . import _launch, _libc, cgroups, lab, proc
from ._podman_store import (  # noqa: F401 - what lab needs lives below it; podman.X as always
    LIBPOD_PARENT, MARK, PodmanError, TYPES, _PARENT_MARK, _SEARCH, _cli, _entry_name,
    _hierarchy_mounts, _ids_file, _known_ids, _note_libpod_parent, _note_runtime_root,
    _remember_ids, _runroot,
    _split, _sweep_cgroups, binary, env_for, is_store, leftover_cgroups, present, remove,
    remove_store)
from .errors import BadInput, LabError, MissingTool, NeedsPrivilege

RUNROOT_BASE = "/run"
IMAGE = "localhost/jap-busybox:latest"


def runtime() -> str:
    """The OCI runtime podman is told to use: runc, or crun on pure cgroup v2 when present.

    crun 1.8 refuses the v1+v2 hybrid layout ("cgroups in hybrid mode not
    supported"); runc handles both.
    """
    if cgroups.layout() == cgroups.V2 and shutil.which("crun", path=_SEARCH):
        return "crun"
    return "runc"


def missing() -> str:
    """Why podman cannot be driven here ("" when it can): the tools pods need."""
    if shutil.which("podman", path=_SEARCH) is None:
        return "podman is not installed (apt-get install podman catatonit)"
    if not any(os.path.exists(p) for p in ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")):
        return "catatonit is not installed: podman's pods need it (apt-get install catatonit)"
    if shutil.which(runtime(), path=_SEARCH) is None:
        return f"{runtime()} is not installed (apt-get install {runtime()})"
    return ""


# --- the lab's own podman state ---------------------------------------------------

CONTAINERS_CONF = """\
# The lab's podman configuration (containers.conf(5)); see justaprocess/podman.py.
[containers]
# podman's default nofile ulimit needs CAP_SYS_RESOURCE, which some machines lack.
default_ulimits = []
# No network but loopback unless asked: nothing of the lab on the host's network.
netns = "none"
log_driver = "k8s-file"

[network]
network_config_dir = "{d}/net"

[engine]
runtime = "{runtime}"
# No systemd needed (PID 1 may not be systemd): cgroupfs.
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
# Temporary copies of images (podman sets TMPDIR from it): not /var/tmp.
image_copy_tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
"""

STORAGE_CONF = """\
# The lab's podman storage (containers-storage.conf(5)).
[storage]
driver = "overlay"
graphroot = "{d}/root"
runroot = "{runroot}"
"""


class Store:
    """The lab's podman state: one folder with its configuration, images and containers.

    Nothing happens in the constructor; ``create()`` registers and makes it.
    ``remove()`` takes away everything podman made in it (safe twice).
    """

    def __init__(self, ident: str | None = None):
        self.name = lab.name("podman", ident=ident)
        self.dir = os.path.join(lab.run_dir(), self.name)
        # podman refuses a runroot longer than 50 characters ("the specified runroot is
        # longer than 50 characters"): its runtime state goes to a short path on /run,
        # named in the store's storage.conf and removed with the store.
        self.runroot = os.path.join(RUNROOT_BASE, self.name)
        self.entry: lab.Entry | None = None

    # -- life cycle --
    def create(self) -> "Store":
        if os.geteuid() != 0:
            raise NeedsPrivilege("root", "running podman for the lab:")
        why = missing()
        if why:
            raise MissingTool("podman", "podman catatonit") if "podman is not" in why \
                else LabError(why)
        if self.entry is not None:
            return self
        self.entry = lab.register("podman", self.dir, note="podman store (config, images, containers)")
        os.makedirs(os.path.join(self.dir, "net"))
        os.makedirs(os.path.join(self.dir, "tmp"))
        with open(os.path.join(self.dir, MARK), "w") as f:
            f.write("remove with justaprocess.podman.remove_store (python -m justaprocess cleanup)\n")
        with open(os.path.join(self.dir, "containers.conf"), "w") as f:
            f.write(CONTAINERS_CONF.format(d=self.dir, runtime=runtime()))
        with open(os.path.join(self.dir, "storage.conf"), "w") as f:
            f.write(STORAGE_CONF.format(d=self.dir, runroot=self.runroot))
        _note_libpod_parent()
        _note_runtime_root(runtime())
        return self

    def remove(self) -> None:
        # Its pods, containers and images first (registered as <store>/<type>/<name>),
        # then the store: nothing of it stays in the registry.
        for e in lab.entries():
            if e.kind == "podman" and e.name.startswith(self.dir + "/"):
                lab.remove(e)
        if self.entry is not None:
            lab.remove(self.entry)
            self.entry = None
        elif os.path.isdir(self.dir):
            remove_store(self.dir)


    def __enter__(self) -> "Store":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"<podman.Store {self.dir}{'' if self.entry else ' (not created)'}>"

    # -- podman itself --
    @property
    def env(self) -> dict[str, str]:
        """The environment that points podman at this store (for a shell: `export ...`)."""
        return {k: v for k, v in env_for(self.dir).items() if k.startswith("CONTAINERS_")}

    def shell_prefix(self) -> str:
        """``CONTAINERS_CONF=... CONTAINERS_STORAGE_CONF=...`` for `!podman ...` cells."""
        return " ".join(f"{k}={v}" for k, v in self.env.items())

    def podman(self, *args: str, timeout: float = 120, input: str | None = None,
               check: bool = True) -> str:
        """Run ``podman ARGS`` against this store; its stdout (raises with podman's message)."""
        self._need()
        return _cli(self.dir, list(args), timeout=timeout, input=input, check=check).stdout

    def _need(self) -> None:
        if self.entry is None:
            raise BadInput("the podman store is not created: call create() first")

    def register(self, kind: str, name: str) -> lab.Entry:
        """Register a pod/container/image of this store *before* podman makes it."""
        if kind not in TYPES:
            raise BadInput(f"kind is one of {', '.join(TYPES)}")
        if kind != "image":
            check_name(name, kind)
        return lab.register("podman", _entry_name(self.dir, kind, name), note=f"podman {kind}")

    # -- images --
    def image(self) -> str:
        """The busybox root of the lab as a podman image (``podman import``, no registry)."""
        self._need()
        if not _cli(self.dir, ["image", "exists", IMAGE], check=False).returncode:
            return IMAGE
        from . import rootfs
        fs = rootfs.build("busybox")
        self.register("image", IMAGE.replace("/", "%"))
        self.podman("import", "--change", "ENV PATH=" + rootfs.PATH, "--change", 'CMD ["/bin/sh"]',
                    fs.tarball, IMAGE)
        return IMAGE

    # -- pods from Kubernetes YAML --
    def kube_play(self, manifest, *, start: bool = True) -> list[str]:
        """``podman kube play`` a manifest (YAML text, a dict or a list of dicts).

        Pods and Deployments are named as in Kubernetes (``web``).  Returns the pod
        names podman made (a Deployment ``D`` with N replicas: ``D-pod-0`` ...).
        """
        self._need()
        docs = _documents(manifest)
        pods = planned_pods(docs)
        self.image()
        for p in pods:
            self.register("pod", p)
        text = "\n---\n".join(json.dumps(d) for d in docs)  # YAML is a superset of JSON
        v2 = cgroups.layout() == cgroups.V2
        # Played without starting: kube play may build podman's pause image, so it runs
        # in a mount namespace of its own (_podman_store.cache_out_of_reach); the pods
        # start from the caller's, where their mounts belong.
        args = ["kube", "play", "--network", "none", "--start=false", "-"]
        try:
            self.podman(*args, input=text)
            for p in pods:
                if v2:
                    self._open_pod_devices(p)
                if start:
                    self.podman("pod", "start", p)
        finally:
            self._remember_ids()
        return pods

    def _open_pod_devices(self, pod: str) -> None:
        """Detach the deny-all device filter podman 4.3 leaves on a pod's cgroup on pure v2.

        With cgroup_manager "cgroupfs" on cgroup v2, podman 4.3 writes the pod cgroup's
        (empty) resources through runc's library, which attaches a device-control eBPF
        program built from an empty rule list: it denies every device to everything
        below, so the infra container fails ("mknod /dev/null: Operation not permitted"
        under crun, "error reopening /dev/null" under runc).  Each container keeps the
        device program its runtime attaches to its own cgroup: device control stays.
        (docs/kernel-notes.md, "Other engines")
        """
        rel = self.podman("pod", "inspect", pod, "--format", "{{.CgroupPath}}").strip()
        v2 = [h for h in cgroups.hierarchies() if h.version == 2][0]
        path = os.path.join(v2.mountpoint, rel.lstrip("/"))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for prog in _libc.cgroup_device_programs(fd):
                _libc.cgroup_detach_device_program(fd, prog)
        finally:
            os.close(fd)

    def run(self, name: str, argv: list[str], *, options: Iterable[str] = (), detach: bool = False,
            timeout: float = 60, rootfs: str | None = None) -> str:
        """``podman run --name NAME [options] IMAGE ARGV``; its output (or the id if detached).

        ``rootfs``: a folder instead of the image (``--rootfs DIR:O``, podman-run(1)): the
        folder is the read-only lower layer of an overlay, podman's writes go to its own
        upper directory, so the folder is left as it was.
        """
        self._need()
        if rootfs is not None:
            rootfs = getattr(rootfs, "path", rootfs)   # a rootfs.Rootfs or a folder
            if not isinstance(rootfs, str) or not os.path.isabs(rootfs) or not os.path.isdir(rootfs):
                raise BadInput(f"rootfs {rootfs!r}: the absolute path of a root filesystem folder "
                               "(build one with justaprocess.rootfs)")
            image = ["--rootfs", rootfs + ":O"]
        else:
            image = [self.image()]
        self.register("container", name)
        args = ["run", "--name", name, *(["-d"] if detach else []), *options, *image, *argv]
        try:
            return self.podman(*args, timeout=timeout)
        finally:
            self._remember_ids()

    def debug(self, target: str, argv: list[str], *, name: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess:
        """A debug container in ``target``'s PID and network namespaces, not its cgroup.

        The equivalent of ``kubectl debug -it POD --image=busybox --target=CONTAINER``:
        ``podman run --pid container:TARGET`` and the target's network (a container
        of a pod joins the pod, whose network namespace its containers share;
        podman refuses ``--net container:`` across a pod's boundary).
        The container is removed when ``argv`` ends.
        """
        self._need()
        info = self.inspect(target)
        name = name or f"debug-{lab.new_id()}"
        opts = ["--rm", "--pid", f"container:{target}"]
        pod = info.get("Pod") or ""
        if pod:
            opts += ["--pod", pod]
        else:
            opts += ["--net", f"container:{target}"]
        image = self.image()
        e = self.register("container", name)
        try:
            return _cli(self.dir, ["run", "--name", name, *opts, image, *argv], timeout=timeout,
                        check=False)
        finally:
            self._remember_ids()
            lab.remove(e)

    # -- looking at it --
    def inspect(self, name: str) -> dict:
        """``podman inspect`` of a container, as a dict."""
        out = self.podman("inspect", "--type", "container", name)
        return json.loads(out)[0]

    def containers(self, pod: str | None = None, infra: bool = False) -> list[dict]:
        """``podman ps -a`` as dicts (Names, Pod, PodName, State, Id ...)."""
        args = ["ps", "-a", "--format", "json"] + (["--filter", f"pod={pod}"] if pod else [])
        rows = json.loads(self.podman(*args) or "[]")
        return [r for r in rows if infra or not r.get("IsInfra")]

    def pods(self) -> list[dict]:
        return json.loads(self.podman("pod", "ps", "--format", "json") or "[]")

    def logs(self, name: str, tail: int | None = None) -> str:
        """``podman logs`` (what the container wrote to stdout and stderr)."""
        args = ["logs"] + (["--tail", str(tail)] if tail is not None else []) + [name]
        r = _cli(self.dir, args)
        return r.stdout + r.stderr

    def pid(self, name: str) -> int:
        pid = int(self.inspect(name)["State"]["Pid"] or 0)
        if not pid:
            raise BadInput(f"podman container {name} is not running")
        return pid

    def stats(self, name: str) -> cgroups.Stats:
        """The kernel's figures for a running container: its cgroup files, read directly."""
        return cgroups.read_stats(cgroups.places_of(self.pid(name)))

    def state(self, name: str) -> "State":
        """Running or exited, exit code, podman's OOMKilled, and the kernel's OOM counter."""
        info = self.inspect(name)
        st = info["State"]
        kills = None
        if st.get("Pid"):
            try:
                kills = cgroups.read_stats(cgroups.places_of(int(st["Pid"]))).oom_kills
            except (OSError, LabError):
                kills = None
        limit = info.get("HostConfig", {}).get("Memory") or None
        return State(name, st.get("Status", "?"), int(st.get("ExitCode") or 0),
                     bool(st.get("OOMKilled")), kills, limit, int(info.get("RestartCount") or 0))

    # -- the cgroups podman leaves behind ---
    def _remember_ids(self) -> None:
        _remember_ids(self.dir)


@dataclass(frozen=True)
class State:
    """A container's state as podman and the kernel tell it."""
    name: str
    status: str                 # running, exited, created ...
    exit_code: int              # 137 = 128 + 9: killed by SIGKILL (the OOM killer sends it)
    oom_killed: bool            # podman's State.OOMKilled (conmon watches the cgroup for it)
    kernel_oom_kills: int | None  # the cgroup's own counter (memory.events / memory.oom_control)
    memory_limit: int | None
    restarts: int


def _documents(manifest) -> list[dict]:
    if isinstance(manifest, dict):
        docs = [manifest]
    elif isinstance(manifest, (list, tuple)):
        docs = list(manifest)
    elif isinstance(manifest, str):
        import yaml
        try:
            docs = [d for d in yaml.safe_load_all(manifest) if d]
        except yaml.YAMLError as exc:
            raise BadInput(f"the manifest is not valid YAML: {exc}") from None
    else:
        raise BadInput("a manifest is YAML text, a dict or a list of dicts")
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise BadInput("a manifest holds at least one Kubernetes object (a mapping with `kind`)")
    return docs


# A Kubernetes object name (RFC 1123 label): it is also part of a registry entry's path.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_name(name, kind: str = "pod") -> str:
    """Names inside a lab store need no prefix (the store is the lab's): a DNS label."""
    if not isinstance(name, str) or not _K8S_NAME.fullmatch(name):
        raise BadInput(f"a {kind} name is lowercase letters, digits and '-' (a DNS label, "
                       f"at most 63 characters), like `web`: got {name!r}")
    return name


def planned_pods(docs: list[dict]) -> list[str]:
    """The pod names ``kube play`` will make: a Pod's name; ``D-pod-i`` per Deployment replica."""
    out = []
    for d in docs:
        kind = d.get("kind")
        name = (d.get("metadata") or {}).get("name", "")
        if kind not in ("Pod", "Deployment"):
            raise BadInput(f"the lab plays Pods and Deployments, not {kind!r}")
        check_name(name, kind)
        if kind == "Pod":
            out.append(name)
        else:
            n = int((d.get("spec") or {}).get("replicas", 1))
            if not 1 <= n <= 10:
                raise BadInput(f"replicas: 1 to 10 on a shared lab machine (got {n})")
            out += [f"{name}-pod-{i}" for i in range(n)]
    return out


# The cgroups podman leaves, and the registry's view (present? remove): _podman_store.py.


# --- kubectl: the same questions asked of a cluster ------------------------------------

def kubectl() -> tuple[str | None, str]:
    """(path of kubectl, "") when it reaches a cluster, else (path or None, why not)."""
    path = shutil.which("kubectl", path=_SEARCH)
    if path is None:
        return None, "kubectl is not installed here: the cells show the command a cluster user types"
    try:
        ctx = _launch.tool([path, "config", "current-context"], timeout=10).check()
    except LabError as exc:  # a failed exec or the timeout
        return path, f"kubectl config current-context failed: {exc}"
    if ctx.returncode != 0 or not ctx.stdout.strip():
        return path, "kubectl is installed but no cluster is configured (no current context)"
    try:
        r = _launch.tool([path, "get", "--raw", "/readyz", "--request-timeout=5s"], timeout=15)
    except _launch.Timeout as exc:
        return path, f"the cluster of context {ctx.stdout.strip()} does not answer: {exc}"
    if r.returncode != 0:
        return path, f"the cluster of context {ctx.stdout.strip()} does not answer: " \
                     f"{(r.stderr or r.stdout).strip()[:200]}"
    return path, ""


# --- a default store per process (a notebook's kernel) -----------------------------------

_default: Store | None = None


def store() -> Store:
    """This process's store, made on first use (and removed by the lab's cleanup)."""
    global _default
    if _default is None or _default.entry is None or not os.path.isdir(_default.dir):
        _default = Store().create()
    return _default


def kube_play(manifest, **kw) -> list[str]:
    return store().kube_play(manifest, **kw)


def logs(name: str, tail: int | None = None) -> str:
    return store().logs(name, tail)


def stats(name: str) -> cgroups.Stats:
    return store().stats(name)


def state(name: str) -> State:
    return store().state(name)


def debug(target: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return store().debug(target, argv, **kw)


def wait_exited(st: Store, name: str, timeout: float = 30) -> State:
    """``podman wait NAME`` (the container's exit, as podman sees it), then its state."""
    st.podman("wait", name, timeout=timeout)
    return st.state(name)


def cgroup_limits(st: Store, name: str) -> dict[str, object]:
    """What the kernel holds as the container's limits (the files ``resources.limits`` became)."""
    s = st.stats(name)
    return {"memory.max": s.memory_max, "cpu quota (cores)": s.cpu_quota, "pids.max": s.pids_max}


def wait_pids_gone(pids: Iterable[int], timeout: float = 10) -> bool:
    """True once none of ``pids`` runs; a pidfd turns readable when its process exits
    (pidfd_open(2)), so this waits on the kernel's event, not a timer."""
    import select
    end = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
        finally:
            os.close(fd)
    return True
