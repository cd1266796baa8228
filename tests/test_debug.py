"""justaprocess.debug on real containers: targets, inspect (against runc and /proc)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import cli

from justaprocess import container, debug, lab, proc, rootfs, runtimes
from justaprocess.errors import LabError

pytestmark = pytest.mark.root
PY = sys.executable


@pytest.fixture(scope="module")
def hand():
    """A hand-built container whose app listens on loopback only, inside its own netns."""
    c = container.Container(["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080"], network=True,
                            memory="64M", pids=32)
    c.start()
    yield c
    c.remove()


@pytest.fixture(scope="module")
def oci():
    runc = runtimes.find("runc")
    if not runc.available:
        pytest.skip(f"runc not usable here: {runc.reason}")
    c = runtimes.OCIContainer(rootfs.build("busybox"), ["sh", "-c", "sleep 300 & httpd -f -p 8081"],
                              memory="64M", pids=32).start()
    yield c
    c.remove()


def _runc(c, *args):
    r = subprocess.run(["runc", "--root", c.state, *args], capture_output=True, text=True, check=True)
    return r.stdout


# --- targets ---------------------------------------------------------------------

def test_a_hand_built_container_resolves_to_its_pid_namespaces_and_cgroup(hand):
    with debug.target(hand) as t:
        assert t.kind == "hand-built" and t.pid == hand.pid and t.pid_inside == 1
        assert t.namespaces == proc.namespaces(hand.pid)
        assert set(t.differs) >= {"mnt", "pid", "net", "uts", "ipc"}
        for kind, fd in t.ns_fds.items():  # the fds are the very namespaces /proc names
            assert os.fstat(fd).st_ino == t.namespaces[kind]
        assert set(hand.cgroup.paths) <= set(t.cgroup_dirs)
        assert t.root == f"/proc/{hand.pid}/root" and t.no_new_privs
        assert "cap_net_raw" in t.caps.effective and "cap_sys_admin" not in t.caps.effective
        fds = list(t.ns_fds.values())
    for fd in fds:  # closed with the context
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_runc_container_resolves_by_object_by_id_and_by_pid(oci):
    state = json.loads(_runc(oci, "state", oci.name))
    for given in (oci, oci.name, oci.pid, str(oci.pid)):
        with debug.target(given) as t:
            assert t.pid == state["pid"]
            assert t.seccomp == 2 and t.no_new_privs
    with debug.target(oci.name) as t:
        assert t.kind == "runc" and t.runtime_state["status"] == "running"


@pytest.mark.parametrize("given, says", [
    (0, "PID 0 is not a valid process ID"),
    (-4, "PID -4 is not a valid process ID"),
    (2, "PID 2 is a kernel thread (kthreadd)"),
    ("jap-nosuchthing", "no container named 'jap-nosuchthing'"),
    (3.5, "not float 3.5"),
    (True, "not bool True"),
])
def test_bad_targets_are_named_in_clear_errors(given, says):
    with pytest.raises(debug.TargetError) as e:
        debug.target(given)
    assert says in str(e.value)


def test_a_dead_pid_and_a_process_in_no_container():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(debug.TargetError, match=f"PID {p.pid} is not running"):
        debug.target(p.pid)
    with pytest.raises(debug.NotAContainer, match=f"PID {os.getpid()} .* is in no container"):
        debug.target(os.getpid())
    with debug.target(os.getpid(), allow_host=True) as t:
        assert t.differs == ()


def test_a_stopped_container_is_refused():
    c = container.Container(["true"])
    c.create()
    try:
        with pytest.raises(debug.TargetError, match="start"):
            debug.target(c)
    finally:
        c.remove()


# --- inspect ---------------------------------------------------------------------------

def test_inspect_agrees_with_runc_state_runc_ps_and_proc(oci):
    state = json.loads(_runc(oci, "state", oci.name))
    ps = set(json.loads(_runc(oci, "ps", "--format", "json", oci.name)))
    insp = debug.inspect(oci.name)
    assert insp.pid == state["pid"] and insp.kind == "runc"
    assert {p.host_pid for p in insp.processes} == ps and len(ps) >= 2
    assert sorted(p.pid_inside for p in insp.processes)[0] == 1
    assert {r.kind: r.inode for r in insp.namespaces} == proc.namespaces(oci.pid)
    with open(f"/proc/{oci.pid}/status") as f:
        st = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    assert insp.nspid == tuple(int(x) for x in st["NSpid"].split())
    assert insp.seccomp == "filter" and insp.no_new_privs == (st["NoNewPrivs"].strip() == "1")
    assert insp.stats["memory_max"] == 64 << 20 and insp.stats["pids_max"] == 32
    assert {m["target"] for m in insp.mounts} >= {"/", "/proc", "/dev", "/sys"}
    # The app's socket is in the container's netns: seen inside, with its process.
    sock = [s for s in insp.sockets if s.port == 8081]
    assert sock and not sock[0].loopback_only and set(sock[0].pids) <= ps


def test_inspect_finds_a_loopback_only_listener_the_host_does_not_have(hand):
    insp = debug.inspect(hand)
    sock = [s for s in insp.sockets if s.port == 8080]
    assert sock and sock[0].address == "127.0.0.1" and sock[0].loopback_only
    assert sock[0].pids == (hand.pid,)
    host = subprocess.run(["ss", "-Hltn", "sport = :8080"], capture_output=True, text=True).stdout
    assert "127.0.0.1:8080" not in host  # the host's own ss does not see it


def test_inspect_cli_text_and_json(hand):
    r = cli("inspect", str(hand.pid), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["pid"] == hand.pid and d["nspid"][-1] == 1
    assert any(s["port"] == 8080 and s["loopback_only"] for s in d["sockets"])
    r = cli("inspect", str(hand.pid))
    assert "loopback only" in r.stdout and "NSpid" in r.stdout
    r = cli("inspect", "0")
    assert r.returncode == 2 and "not a valid process ID" in r.stderr and "Traceback" not in r.stderr


def test_inspect_of_a_gone_process_is_a_lab_error():
    p = subprocess.Popen(["sleep", "60"])
    t = debug.target(p.pid, allow_host=True)
    p.kill()
    p.wait()
    with pytest.raises(LabError):
        debug.inspect(t)
    t.close()


def test_strace_from_the_host_names_children_by_host_pid_while_clone_returns_the_inner_one(hand):
    from justaprocess import rootfs
    trigger = ["nsenter", "-t", str(hand.pid), "-n", rootfs.busybox_binary(), "wget", "-qO-",
               "http://127.0.0.1:8080/"]
    tr = debug.strace(hand, trigger, syscalls="accept,clone,read,write")
    names = [c.name for c in tr.calls]
    assert "clone" in names and "read" in names, str(tr)  # accept may be under way at attach
    clone = next(c for c in tr.calls if c.name == "clone")
    kids = {c.pid for c in tr.calls if c.pid != hand.pid}
    assert clone.pid == hand.pid and kids and int(clone.result) not in kids
    assert hand.running()  # strace detached; the app runs on


def test_uid_inside_and_host_pid_of():
    from justaprocess import namespaces
    with namespaces.spawn(["sleep", "60"], "user,pid,mnt", uid_map="0 100000 65536",
                          gid_map="0 100000 65536") as p:
        with debug.target(p.host_pid) as t:
            assert debug.uid_inside(t, 100000) == 0 and debug.uid_inside(t, 0) is None
            assert debug.host_pid_of(t, 1) == p.host_pid
            with pytest.raises(LabError, match="no process is PID 7"):
                debug.host_pid_of(t, 7)


def test_strace_lines_are_parsed_across_unfinished_resumed_and_restarted_calls():
    lines = ["5 restart_syscall(<... resuming interrupted accept ...>) = 4",
             "5 clone(child_stack=NULL, flags=SIGCHLD) = 2",
             "[pid 7] read(0,  <unfinished ...>",
             "[pid 7] <... read resumed>\"GET\", 1024) = 3",
             "7 +++ exited with 0 +++"]
    got = [(c.pid, c.name, c.result) for c in debug.calls(lines, 5)]
    assert got == [(5, "accept", "4"), (5, "clone", "2"), (7, "read", "3")]


# --- exec_in and sidecar: real effects, read from the host ------------------------------

def _facts(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    root = os.stat(f"/proc/{pid}/root")
    return {"ns": proc.namespaces(pid), "cgroup": open(f"/proc/{pid}/cgroup").read(),
            "root": (root.st_dev, root.st_ino), "CapEff": st["CapEff"].strip(),
            "NoNewPrivs": st["NoNewPrivs"].strip(), "Seccomp": st["Seccomp"].strip()}


@pytest.mark.parametrize("which", ["hand", "oci"])
def test_exec_in_joins_every_namespace_the_cgroup_the_root_and_the_caps_of_the_target(which, request):
    from justaprocess import _launch
    c = request.getfixturevalue(which)
    with debug.target(c) as t:
        h = _launch.start(debug.exec_spec(t, ["sleep", "60"]))
        try:
            mine, theirs = _facts(h.pid), _facts(c.pid)
            assert mine == theirs  # namespaces, cgroups, root, CapEff, no_new_privs, seccomp mode
            assert proc.nspid(h.pid)[-1] > 1  # a new process in the target's PID namespace
        finally:
            h.stop()


def test_exec_in_output_exit_status_streaming_and_errors(hand):
    r = debug.exec_in(hand, ["sh", "-c", "hostname; echo oops >&2; exit 3"])
    assert r.returncode == 3 and r.stdout.strip() == hand.hostname and r.stderr.strip() == "oops"
    got = []
    r = debug.exec_in(hand, ["sh", "-c", "echo one; echo two >&2"], stream=lambda w, s: got.append((w, s)))
    assert r.returncode == 0 and (1, "one\n") in got and (2, "two\n") in got
    r = debug.exec_in(hand, ["no-such-tool"])
    assert r.error is not None and r.error.errno_name == "ENOENT"
    with pytest.raises(LabError, match="argv is a list"):
        debug.exec_in(hand, "ps")


def test_exec_in_a_runc_container_gets_runcs_seccomp_profile(oci):
    r = debug.exec_in(oci, ["unshare", "--user", "id", "-u"])
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_a_sidecar_sees_the_targets_processes_and_sockets_with_its_own_tools_mounts_and_cgroup(hand):
    with debug.sidecar(hand) as sc:
        mine, theirs = proc.namespaces(sc.pid), proc.namespaces(hand.pid)
        assert all(mine[k] == theirs[k] for k in ("pid", "net", "ipc"))
        assert mine["mnt"] != theirs["mnt"] and mine["cgroup"] != theirs["cgroup"]
        assert mine["mnt"] != proc.namespaces("self")["mnt"]
        assert set(sc.cgroup.paths) & set(open(f"/proc/{sc.pid}/cgroup").read().split(":")[-1:]) \
            or any(p.endswith(sc.name) for p in debug.target(sc.pid).cgroup_dirs)
        r = sc.run(["ps", "-o", "pid,comm"])
        pids = {int(line.split()[0]) for line in r.stdout.splitlines()[1:]}
        inside = {p.pid_inside for p in debug.processes(debug.target(hand))}
        assert inside <= pids and len(pids) <= len(inside) + 3  # the app's, plus the sidecar's own
        r = sc.run(["ss", "-Hltnp"])
        assert "127.0.0.1:8080" in r.stdout and "pid=1," in r.stdout  # the app, by its PID inside
        r = sc.run(["sh", "-c", "cat /proc/1/root/etc/hostname; readlink /proc/1/root; which strace"])
        assert r.returncode == 0 and "/usr/local/bin/strace" in r.stdout, r
        r = debug.exec_in(hand, ["sh", "-c", "which strace || echo none"])
        assert "none" in r.stdout  # the app's image has no strace: the sidecar brought it
        side_dir = sc.dir
    assert not os.path.exists(side_dir)


def test_a_sidecar_of_a_distroless_app_reaches_its_files_and_has_a_shell():
    from justaprocess import scenarios
    with scenarios.start("distroless") as s, debug.sidecar(s) as sc:
        r = sc.run(["sh", "-c", "ls /proc/1/root/bin; ls /proc/1/root/www"])
        assert r.stdout.split() == ["httpd", "index.html"]


def test_a_sidecar_refuses_to_share_mnt_or_cgroup(hand):
    with pytest.raises(LabError, match="mount and cgroup namespaces are its own"):
        debug.Sidecar(hand, share=("pid", "mnt"))


def test_inside_cell_streams_and_a_non_zero_exit_is_an_error(hand):
    import io
    out, err = io.StringIO(), io.StringIO()
    assert debug.inside_cell("app", "hostname; echo warn >&2", {"app": hand}, out=out, err=err) == 0
    assert out.getvalue().strip() == hand.hostname and err.getvalue() == "warn\n"
    with pytest.raises(debug.InsideFailed, match="exited with status 5"):
        debug.inside_cell(str(hand.pid), "exit 5", {}, out=out, err=err)
    with pytest.raises(LabError, match="name the container"):
        debug.inside_cell("  ", "true", {})


def test_a_podman_container_of_a_lab_store_resolves_by_name():
    from justaprocess import podman
    why = podman.missing()
    if why:
        pytest.skip(f"podman: {why}")
    st = podman.Store().create()
    try:
        name = f"jap-{os.urandom(3).hex()}-web"
        st.run(name, ["sleep", "300"], detach=True)
        with debug.target(name) as t:
            assert t.kind == "podman" and t.pid == st.pid(name)
            assert {"pid", "mnt", "net"} <= set(t.differs)
        r = debug.exec_in(name, ["sh", "-c", "echo $$"])
        assert r.returncode == 0 and int(r.stdout) > 1
    finally:
        st.remove()
    # the store went with its image and container: none of them stays registered
    assert not [e.name for e in lab.entries() if e.name.startswith(st.dir)]


def test_a_sidecar_of_a_runc_container(oci):
    with debug.sidecar(oci) as sc:
        assert proc.namespaces(sc.pid)["pid"] == proc.namespaces(oci.pid)["pid"]
        r = sc.run(["sh", "-c", "ps -o comm; ls /proc/1/root/bin/busybox; ss -Hltn"])
        assert r.returncode == 0, r
        assert "sleep" in r.stdout.split() and "/proc/1/root/bin/busybox" in r.stdout
        assert ":8081 " in r.stdout  # the runc container's httpd, seen in its netns
