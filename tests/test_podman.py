"""podman driven for real: kube play of Pods and Deployments, limits in the kernel's
files, a sidecar sharing namespaces, a debug container, OOM kills, and cleanup of
every podman object - also when the process that made them was killed.
"""
import os
import ctypes
import re
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

from justaprocess import _podman_store, cgroups, lab, podman
from justaprocess.errors import BadInput

WHY = podman.missing() if os.geteuid() == 0 else "needs root: run `make test` as root in the lab VM"
pytestmark = [pytest.mark.root, pytest.mark.skipif(bool(WHY), reason=f"podman: {WHY}")]


def pod(name, *containers, share_pid=False, restart="Always"):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "shareProcessNamespace": share_pid,
                     "containers": list(containers)}}


def ctr(name, script, **limits):
    c = {"name": name, "image": podman.IMAGE, "command": ["/bin/sh", "-c", script]}
    if limits:
        c["resources"] = {"limits": limits}
    return c


@pytest.fixture
def store(own_objects):
    st = podman.Store().create()
    yield st
    st.remove()
    assert not os.path.exists(st.dir) and not os.path.exists(st.runroot)
    assert podman.leftover_cgroups(st.dir) == []


# --- nothing of the lab outside its store ---------------------------------------------

_FAN = ctypes.CDLL(None, use_errno=True)
_FAN.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]


def _fanotify(path: str, mask: int) -> int:
    """A fanotify(7) group watching the folder ``path`` (events of its entries), whose events
    say which process caused them and the entry's name (FAN_REPORT_DFID_NAME)."""
    FAN_CLOEXEC, FAN_NONBLOCK, FAN_REPORT_DFID_NAME = 0x1, 0x2, 0xC00
    fd = _FAN.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME, os.O_RDONLY)
    if fd < 0 or _FAN.fanotify_mark(fd, 0x1, mask | 0x40000000 | 0x08000000, -100,  # ADD,
                                    path.encode()) < 0:                         # ONDIR, ON_CHILD
        pytest.skip(f"fanotify: {os.strerror(ctypes.get_errno())}")
    return fd


def _fan_events(fd: int) -> list[tuple[int, str]]:
    """(pid, name) of each queued event: struct fanotify_event_metadata, then the info record
    (header, fsid, struct file_handle, the name NUL-terminated)."""
    out, buf = [], b""
    while True:
        try:
            buf += os.read(fd, 65536)
        except BlockingIOError:
            break
    off = 0
    while off < len(buf):
        size, _, _, meta, _, _, pid = struct.unpack_from("IBBHQii", buf, off)
        info = off + meta
        handle_bytes = struct.unpack_from("I", buf, info + 4 + 8)[0]
        name = buf[info + 4 + 8 + 8 + handle_bytes:off + size].split(b"\0")[0].decode()
        out.append((pid, name))
        off += size
    return out


def test_image_copies_leave_the_machines_blob_info_cache_alone(own_objects, monkeypatch):
    # containers/image's cache for root is /var/lib/containers/cache, a constant: podman
    # import (and kube play, which builds the pause image) made or updated it there.
    # Watched: the deepest folder of that path that exists (on a fresh machine /var/lib:
    # there only the name "containers" counts), and /var/tmp during the import (its
    # temporary files went there).  Only the lab's own podman processes count: fanotify
    # says who wrote (another run of the lab's older code may write there meanwhile).
    cache = _podman_store.BLOB_INFO_CACHE
    top = _podman_store._first_existing(cache)
    below = os.path.relpath(cache, top).split(os.sep)[0] if top != cache else None
    ours = set()
    spawn = _podman_store._spawn.spawn

    def recorded(argv, **kw):
        p = spawn(argv, **kw)
        ours.add(p.pid)
        return p
    monkeypatch.setattr(_podman_store._spawn, "spawn", recorded)
    temp = re.compile(r"^(\d+|storage\d+)$")  # podman's os.CreateTemp / MkdirTemp names
    # FAN_MODIFY ATTRIB CLOSE_WRITE MOVED_TO CREATE
    fd, tmp_fd = _fanotify(top, 0x2 | 0x4 | 0x8 | 0x80 | 0x100), _fanotify("/var/tmp", 0x100)
    try:
        with podman.Store() as st:
            st.image()
            tmp = [name for pid, name in _fan_events(tmp_fd) if pid in ours and temp.match(name)]
            st.kube_play(pod("jap-cache", ctr("c", "true")), start=False)
        seen = [name for pid, name in _fan_events(fd) if pid in ours and below in (None, name)]
    finally:
        os.close(fd)
        os.close(tmp_fd)
    assert ours, "the lab's podman commands were not seen"
    assert seen == [], f"the lab's podman wrote {top}: {seen}"
    assert tmp == [], f"the lab's podman import wrote temporary files in /var/tmp: {tmp}"


def test_the_runtime_state_folder_podman_made_is_removed_once_empty(tmp_path, monkeypatch):
    # runc/crun keep a folder per container in /run/runc or /run/crun (no --root from
    # podman): on a fresh machine the lab's podman makes it; the lab rmdirs it when empty.
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "runc-root"
    monkeypatch.setitem(_podman_store.RUNTIME_ROOTS, "runc", str(root))
    _podman_store._note_runtime_root("runc")
    root.mkdir()
    (root / "0123").mkdir()               # a container of another store still there
    _podman_store._sweep_runtime_roots()
    assert root.is_dir() and (tmp_path / "state" / _podman_store._ROOT_MARK).exists()
    (root / "0123").rmdir()
    _podman_store._sweep_runtime_roots()
    assert not root.exists() and not (tmp_path / "state" / _podman_store._ROOT_MARK).exists()
    root.mkdir()                          # there before the lab: never noted, never removed
    _podman_store._note_runtime_root("runc")
    _podman_store._sweep_runtime_roots()
    assert root.is_dir()


def test_which_commands_copy_images():
    copies = _podman_store.copies_images
    assert copies(["import", "--change", "CMD x", "f.tar", "img"]) and copies(["image", "pull", "x"])
    assert copies(["kube", "play", "--start=false", "-"]) and copies(["pod", "create", "p"])
    assert not copies(["pod", "start", "p"]) and not copies(["run", "--rm", "img", "true"])
    assert not copies(["image", "exists", "img"]) and not copies([])


# --- input is checked before podman runs ------------------------------------------

def test_manifests_are_checked_before_anything_is_made():
    with pytest.raises(BadInput, match="DNS label"):
        podman.planned_pods([pod("Web_1", ctr("c", "true"))])
    with pytest.raises(BadInput, match="Service"):
        podman.planned_pods([{"kind": "Service", "metadata": {"name": "jap-x"}}])
    with pytest.raises(BadInput, match="replicas"):
        podman.planned_pods([{"kind": "Deployment", "metadata": {"name": "jap-d"},
                              "spec": {"replicas": 50}}])
    with pytest.raises(BadInput, match="YAML"):
        podman._documents("kind: [unclosed")
    assert podman.planned_pods(podman._documents(textwrap.dedent("""
        kind: Deployment
        metadata: {name: jap-d}
        spec: {replicas: 2}
        ---
        kind: Pod
        metadata: {name: jap-p}
        """))) == ["jap-d-pod-0", "jap-d-pod-1", "jap-p"]


def test_the_store_is_the_labs_own(store):
    conf = open(os.path.join(store.dir, "containers.conf")).read()
    assert "default_ulimits = []" in conf and 'cgroup_manager = "cgroupfs"' in conf
    assert f'runtime = "{podman.runtime()}"' in conf
    info = store.podman("info", "--format", "{{.Store.GraphRoot}} {{.Host.OCIRuntime.Name}}")
    assert info.split() == [os.path.join(store.dir, "root"), podman.runtime()]
    assert any(e.kind == "podman" and e.name == store.dir for e in lab.entries())


def test_podman_runs_crun_on_pure_cgroup_v2_and_runc_on_a_hybrid_host(store):
    # crun is in tools/system-packages.txt; crun 1.8 refuses the v1+v2 hybrid layout.
    want = "crun" if cgroups.layout() == cgroups.V2 else "runc"
    assert podman.runtime() == want
    store.run("jap-rt", ["sleep", "3600"], detach=True)
    assert store.inspect("jap-rt")["OCIRuntime"] == want
    # conmon, the container's parent, was handed that runtime's binary: `conmon ... -r PATH`
    pid = store.pid("jap-rt")
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{ppid}/cmdline") as f:
        argv = f.read().split("\0")
    assert os.path.basename(argv[0]) == "conmon"
    assert os.path.basename(argv[argv.index("-r") + 1]) == want


# --- kube play: limits become cgroup files ------------------------------------------

def test_deployment_replicas_and_limits_become_cgroup_limits(store):
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "jap-web"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "jap-web"}},
                    "template": {"metadata": {"labels": {"app": "jap-web"}},
                                 "spec": {"containers": [ctr("web", "echo up; exec httpd -f -p 8080",
                                                             memory="32Mi", cpu="200m")]}}}}
    assert store.kube_play(dep) == ["jap-web-pod-0", "jap-web-pod-1"]
    names = sorted(c["Names"][0] for c in store.containers())
    assert names == ["jap-web-pod-0-web", "jap-web-pod-1-web"]
    for n in names:
        s = store.stats(n)                     # read from the kernel's cgroup files
        assert s.memory_max == 32 << 20
        assert s.cpu_quota == pytest.approx(0.2)
        assert s.pids_current == 1
        assert "up" in store.logs(n)
    # The registry holds each pod before podman made it.
    registered = {e.name for e in lab.entries() if e.kind == "podman"}
    assert {f"{store.dir}/pod/jap-web-pod-0", f"{store.dir}/pod/jap-web-pod-1"} <= registered


def test_sidecar_shares_the_pods_namespaces_not_its_cgroup(store):
    store.kube_play(pod("jap-side", ctr("app", "exec httpd -f -p 8080 -h /var/www"),
                        ctr("tools", "exec sleep 3600"), share_pid=True))
    app, tools = store.pid("jap-side-app"), store.pid("jap-side-tools")
    ns = lambda p, k: os.readlink(f"/proc/{p}/ns/{k}")  # noqa: E731
    assert ns(app, "net") == ns(tools, "net") and ns(app, "pid") == ns(tools, "pid")
    assert ns(app, "mnt") != ns(tools, "mnt")
    assert open(f"/proc/{app}/cgroup").read() != open(f"/proc/{tools}/cgroup").read()
    ps = store.podman("exec", "jap-side-tools", "ps", "-o", "args")
    assert "httpd -f -p 8080" in ps
    # the app listens on the pod's loopback, which the sidecar shares
    assert "<h1>" in store.podman("exec", "jap-side-tools", "wget", "-qO-", "http://127.0.0.1:8080/")


def test_debug_container_joins_pid_and_net_not_the_cgroup(store):
    store.kube_play(pod("jap-dbg", ctr("app", "exec httpd -f -p 8080")))
    target = store.pid("jap-dbg-app")
    r = store.debug("jap-dbg-app", ["sh", "-c", "ps -o pid,args; cat /proc/self/cgroup; "
                                    "readlink /proc/self/ns/net; readlink /proc/self/ns/pid"])
    assert r.returncode == 0, r.stderr
    assert "httpd -f -p 8080" in r.stdout
    assert os.readlink(f"/proc/{target}/ns/net") in r.stdout
    assert os.readlink(f"/proc/{target}/ns/pid") in r.stdout
    own = [line for line in open(f"/proc/{target}/cgroup") if ":memory:" in line or line.startswith("0::")]
    assert own and not any(line.split(":", 2)[2].strip() + "\n" in r.stdout.splitlines(True)
                           for line in own)
    # --rm: the debug container is gone, and so is its registry entry
    assert [c["Names"][0] for c in store.containers()] == ["jap-dbg-app"]
    assert not [e for e in lab.entries() if e.name.startswith(store.dir + "/container/")]


def test_oom_kill_seen_by_the_kernel_and_podman(store):
    # PID 1 stays; its child asks for 64M under a 32Mi limit and is OOM-killed.
    store.kube_play(pod("jap-oom", ctr("hog", "dd if=/dev/zero of=/dev/null bs=64M count=1; "
                                       "echo dd exit $?; exec sleep 3600", memory="32Mi"),
                        ctr("main", "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                            memory="32Mi"), restart="Never"))
    st = podman.wait_exited(store, "jap-oom-main")
    assert st.status in ("exited", "stopped") and st.exit_code == 137    # 128 + SIGKILL
    assert "dd exit 137" in store.logs("jap-oom-hog")
    hog = store.state("jap-oom-hog")
    assert hog.status == "running" and hog.kernel_oom_kills == 1 and hog.memory_limit == 32 << 20


# --- cleanup, also after the owner was killed ------------------------------------------

MAKER = """
import os, sys
from justaprocess import podman
st = podman.Store().create()
st.kube_play({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jap-orphan"},
              "spec": {"containers": [{"name": "c", "image": podman.IMAGE,
                                       "command": ["sleep", "3600"],
                                       "resources": {"limits": {"memory": "16Mi"}}}]}})
print(st.dir, st.pid("jap-orphan-c"), flush=True)
os.kill(os.getpid(), 9)
"""


def test_cleanup_after_a_killed_owner_removes_every_podman_object(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    r = subprocess.run([sys.executable, "-c", MAKER], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAP_STATE_DIR": str(tmp_path)})
    assert r.returncode == -signal.SIGKILL, r.stderr
    store_dir, pid = r.stdout.split()
    pid = int(pid)
    assert os.path.exists(f"/proc/{pid}")                  # conmon keeps it running
    kinds = {e.kind for e in lab.leftovers()}
    assert "podman" in kinds
    lab.cleanup(stale=True)
    assert podman.wait_pids_gone([pid])
    assert not os.path.exists(store_dir)
    assert podman.leftover_cgroups(store_dir) == []
    with open("/proc/self/mountinfo") as f:
        assert store_dir not in f.read()
    assert [e for e in lab.leftovers() if e.name.startswith(store_dir)] == []


def test_an_unregistered_store_is_found_and_removed_through_podman(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    st = podman.Store().create()
    st.kube_play(pod("jap-lost", ctr("c", "exec sleep 3600")))
    pid = st.pid("jap-lost-c")
    for e in lab.entries():      # as if the registry files were lost
        lab.unregister(e)
    found = [e for e in lab.leftovers() if e.name == st.dir]
    assert [e.kind for e in found] == ["podman"]
    lab.remove(found[0])         # what full cleanup does with it (not run here: it would
    assert podman.wait_pids_gone([pid])  # also remove other live runs' objects)
    assert not os.path.exists(st.dir)
    assert [e for e in lab.leftovers() if e.name.startswith(st.dir)] == []


def test_kubectl_says_why_it_is_not_used_or_reaches_a_cluster():
    path, why = podman.kubectl()
    assert path is None or os.path.isabs(path)
    assert why == "" or "kubectl" in why or "cluster" in why


def test_debug_container_of_a_container_outside_a_pod(store):
    store.run("solo", ["sleep", "3600"], detach=True)
    target = store.pid("solo")
    r = store.debug("solo", ["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/pid; "
                             "cat /proc/1/cmdline"])
    assert r.returncode == 0, r.stderr
    net, pid, cmd = r.stdout.split("\n")[:3]
    assert net == os.readlink(f"/proc/{target}/ns/net") and pid == os.readlink(f"/proc/{target}/ns/pid")
    assert cmd.startswith("sleep")
