"""container: the hand-built engine, checked against the kernel's own files.

Each test looks at real effects - /proc/PID/{ns,status,cgroup} from the host,
what a process sees inside, the host's mount table - and that every mount,
cgroup, folder, process and network object is gone afterwards.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, wait_exit, wait_for

from justaprocess import capabilities, cgroups, container, lab, proc, rootfs
from justaprocess.container import Container, ContainerError, Volume
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


@pytest.fixture
def box(image, own_objects):
    """A long-running container (sleep), removed afterwards - and checked gone."""
    c = Container(["/bin/sleep", "60"], rootfs=image, memory="64M", pids=64).start()
    yield c
    dirs, root = c.cgroups, c.dir
    c.remove()
    assert_gone(c, dirs, root)


def gone(pid):
    """Exited (or a zombie about to be reaped)."""
    return not proc.running(pid)


def assert_gone(c, cgroup_dirs, run_dir):
    assert not any(os.path.exists(d) for d in cgroup_dirs), cgroup_dirs
    assert not os.path.exists(run_dir)
    assert c.pid is None or gone(c.pid)
    with open("/proc/self/mountinfo") as f:
        assert run_dir not in f.read()
    mine = [e for e in lab.entries() if c.name in e.name or e.note.endswith(c.name)]
    assert mine == []


def parse_cgroup(text):
    return [proc.CgroupLine(int(h), tuple(c for c in ctrls.split(",") if c), path)
            for h, ctrls, path in (ln.split(":", 2) for ln in text.splitlines() if ln)]


def memory_line(lines):
    """The line of /proc/PID/cgroup that names the memory cgroup: v1's memory
    hierarchy, or v2's single '0::' line (cgroups(7))."""
    if cgroups.layout() == cgroups.V2:
        return [ln for ln in lines if ln.hierarchy == 0][0]
    return [ln for ln in lines if "memory" in ln.controllers][0]


def sh(c, script):
    r = c.exec(["/bin/sh", "-c", script])
    assert r.returncode == 0, r
    return r.stdout


# --- what the host sees ------------------------------------------------------------

def test_pid1_is_in_new_namespaces_except_user_and_time(box):
    host = proc.namespaces("self")
    theirs = box.namespaces
    for kind in container.DEFAULT_NAMESPACES:
        assert theirs[kind] != host[kind], kind
    assert theirs["user"] == host["user"]
    assert proc.nspid(box.pid)[-1] == 1          # PID 1 inside, box.pid outside
    assert sh(box, "echo $$") != ""              # a shell exec'd inside has its own PID


def test_cgroup_has_the_memory_limit_and_the_process(box):
    cg = box.cgroup
    assert cg.stats().memory_max == 64 << 20
    assert box.pid in cgroups.pids_in(cg.places["memory"].path)
    assert box.pid in cgroups.pids_in(cg.places["pids"].path)
    # /proc/PID/cgroup from the host names the container's cgroup (cgroups(7)).
    assert memory_line(proc.cgroups(box.pid)).path.endswith("/" + box.name)
    # Inside, the cgroup namespace makes it "/".
    inside = sh(box, "cat /proc/self/cgroup")
    assert memory_line(parse_cgroup(inside)).path == "/"


def test_capabilities_are_the_engine_default_and_no_new_privs(box):
    want = capabilities.to_mask(container.ENGINE_DEFAULT) & proc.caps("self").bounding
    caps = proc.caps(box.pid)
    assert caps.effective == caps.permitted == caps.bounding == want
    assert caps.inheritable == 0 and caps.ambient == 0
    assert proc.status(box.pid)["NoNewPrivs"] == "1"
    # exec'd processes get the same set (they pass through setup_security too).
    status = sh(box, "cat /proc/self/status")
    eff = [ln for ln in status.splitlines() if ln.startswith("CapEff:")][0]
    assert int(eff.split()[1], 16) == want
    # and CAP_SYS_ADMIN really is gone: sethostname is refused.
    r = box.exec(["hostname", "other"])
    assert r.returncode != 0 and "not permitted" in r.stderr.lower()


def test_inside_view_hostname_pid1_mounts_and_root(box):
    assert sh(box, "hostname").strip() == box.name
    ps = sh(box, "ps -o pid,args")
    assert "    1 /bin/sleep 60" in ps
    # Only the container's processes: PID 1 and the ps itself (sh -c execs it).
    assert len([ln for ln in ps.splitlines()[1:] if ln.strip()]) == 2
    mounts = sh(box, "cat /proc/mounts")
    assert "proc /proc proc" in mounts and "tmpfs /dev tmpfs" in mounts
    # pivot_root + detach: nothing of the host's tree is reachable or mounted.
    assert sh(box, "ls /").split() == sorted(os.listdir(box.root))
    assert box.exec(["/bin/sh", "-c", f"test -e {REPO}"]).returncode != 0  # this checkout, wherever it is
    assert REPO not in mounts and lab.state_dir() not in mounts
    # ... and nothing of the container is mounted on the host (private mount namespace).
    with open("/proc/self/mountinfo") as f:
        assert box.root not in f.read()


def test_exec_joins_cgroup_and_pid_namespace(box):
    pid_inside, cgroup_file = sh(box, "echo $$; cat /proc/self/cgroup").split("\n", 1)
    assert int(pid_inside) > 1
    assert memory_line(parse_cgroup(cgroup_file)).path == "/"   # the container's cgroup
    # ... and seen from the host, what exec started sits in the same cgroup as PID 1.
    assert box.exec(["/bin/sh", "-c", "sleep 5 & true"]).returncode == 0
    assert len(box.cgroup.pids()) == 2 and box.pid in box.cgroup.pids()
    with pytest.raises(ContainerError, match="No such file"):
        box.exec(["/bin/nonexistent"])


# --- life cycle ------------------------------------------------------------------------

def test_run_a_command_and_read_its_logs(image, own_objects):
    r = container.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], rootfs=image)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


def test_stop_kills_pid1_and_everything_in_it(image, own_objects):
    c = Container(["/bin/sh", "-c", "sleep 60 & sleep 60"], rootfs=image).start()
    inside = wait_for(lambda: (lambda p: len(p) >= 2 and p)(cgroups.pids_in(c.cgroup.places["memory"].path)),
                      what="the shell started both sleeps")
    code = c.stop(timeout=0.3)
    # PID 1 has no handler for SIGTERM: pid_namespaces(7) - only SIGKILL stops it.
    assert code == -9 and c.state == "exited"
    for pid in inside:
        assert gone(pid)
    dirs, root = c.cgroups, c.dir
    c.remove()
    c.remove()  # safe twice
    assert_gone(c, dirs, root)


def test_memory_limit_kills_a_hog(image, own_objects):
    # busybox tail keeps its (single, 200 MB long) last line in memory: over the 32M limit.
    c = Container(["/bin/sh", "-c", "head -c 200000000 /dev/zero | tail -n 1 > /dev/null"],
                  rootfs=image, memory="32M").start()
    code = c.wait(30)
    # SIGKILL: of tail (the shell exits 128+9), or of the shell, PID 1, itself.
    assert code in (128 + 9, -9)
    assert c.cgroup.stats().oom_kills >= 1      # ... by the OOM killer, in this cgroup
    c.remove()


def test_bind_volume_and_readonly_volume(image, tmp_path, own_objects):
    src = tmp_path / "jap-vol"
    src.mkdir()
    (src / "config.txt").write_text("from the host\n")
    r = container.run(["/bin/sh", "-c", "cat /data/config.txt; echo back > /data/out.txt"],
                      rootfs=image, volumes=[Volume(str(src), "/data")])
    assert r.returncode == 0 and r.stdout == "from the host\n"
    assert (src / "out.txt").read_text() == "back\n"
    r = container.run(["/bin/sh", "-c", "echo x > /data/no.txt"], rootfs=image,
                      volumes=[Volume(str(src), "/data", readonly=True)])
    assert r.returncode != 0 and "Read-only" in r.stderr
    assert not (src / "no.txt").exists()


def test_chroot_variant_keeps_the_host_mounted(image, own_objects):
    with Container(["/bin/sleep", "30"], rootfs=image) as piv, \
            Container(["/bin/sleep", "30"], rootfs=image, jump="chroot") as chr_:
        piv.start()
        chr_.start()
        # pivot_root: the container's root is its namespace's root; the host's tree is gone.
        assert os.readlink(f"/proc/{piv.pid}/root") == "/"
        # chroot: the root is a folder of the host's tree, still mounted beneath it.
        assert os.readlink(f"/proc/{chr_.pid}/root") == chr_.root
        # exec lands in the same root in both variants.
        for c in (piv, chr_):
            assert sh(c, "ls /").split() == sorted(os.listdir(c.root))


def test_naive_container_keeps_all_capabilities(image, own_objects):
    r = container.run(["/bin/sh", "-c", "grep CapEff /proc/self/status"], rootfs=image,
                      caps=None, no_new_privs=False)
    assert int(r.stdout.split()[1], 16) == proc.caps("self").bounding


def test_prepared_rootfs_folder_is_used_as_is_and_kept(image, tmp_path, own_objects):
    prepared = str(tmp_path / "jap-prepared")
    rootfs.extract(image, prepared)
    r = container.run(["/bin/true"], rootfs=prepared)
    assert r.returncode == 0
    assert os.path.isdir(os.path.join(prepared, "bin"))


def test_start_joins_cgroup_without_the_slow_path(image):
    """The child moves itself through v1's per-thread `tasks` file (no RCU grace period,
    see container.join_files); on pure v2 through cgroup.procs. Timing: bench/."""
    with Container(["/bin/true"], rootfs=image, memory="64M") as c:
        c.create()
        files = container.join_files(c.cgroup)
        assert files and all(os.path.basename(f) in ("tasks", "cgroup.procs") for f in files)
        if cgroups.layout() != cgroups.V2:
            assert all(f.endswith("/tasks") for f in files)
        assert {os.path.dirname(f) for f in files} <= set(c.cgroups)


# --- errors ----------------------------------------------------------------------------

def mine():
    return [e for e in lab.entries() if e.owner == os.getpid()]


def test_bad_input_is_refused_before_anything_is_made(image):
    before = mine()
    with pytest.raises(BadInput, match="command"):
        Container([])
    with pytest.raises(BadInput, match="jump"):
        Container(["/bin/true"], jump="teleport")
    with pytest.raises(BadInput, match="mount namespace"):
        Container(["/bin/true"], namespaces=("pid",))
    with pytest.raises(BadInput, match="capability"):
        Container(["/bin/true"], caps=["cap_fly"])
    with pytest.raises(BadInput):
        Container(["/bin/true"], memory="12Q", rootfs=image).create()
    assert mine() == before


def test_missing_command_names_the_step(image, own_objects):
    c = Container(["no-such-program"], rootfs=image)
    with pytest.raises(ContainerError, match="exec.*not found"):
        c.start()
    dirs, root = c.cgroups, c.dir
    c.remove()
    assert_gone(c, dirs, root)


# --- a host whose / is shared (systemd) ---------------------------------------------------

SHARED_ROOT_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    from justaprocess import container, rootfs
    def mine():
        with open("/proc/self/mountinfo") as f:
            return f.read()
    out = {"root_shared": "shared:" in [l for l in mine().splitlines() if l.split()[4] == "/"][0]}
    # Negative control: a child mount namespace that does NOT make / private leaks.
    probe = os.path.join(sys.argv[1], "jap-probe")
    os.makedirs(probe)
    subprocess.run(["unshare", "-m", "--propagation", "unchanged",
                    "mount", "-t", "tmpfs", "jap-probe", probe], check=True)
    out["control_leaked"] = probe in mine()
    subprocess.run(["umount", probe])
    c = container.Container(["/bin/sleep", "30"], rootfs=rootfs.build("busybox")).start()
    try:
        out["inside"] = c.exec(["cat", "/proc/self/mounts"]).stdout.count("\\n")
        out["leaked"] = c.root in mine()
    finally:
        c.remove()
    print(json.dumps(out))
""")


def test_works_and_leaks_nothing_when_root_is_shared(image, tmp_path):
    """mount_namespaces(7): with / shared, mounts made in a child namespace propagate back
    unless it makes / private first; pivot_root(2) would fail with EINVAL too."""
    script = tmp_path / "shared.py"
    script.write_text(SHARED_ROOT_SCRIPT)
    r = subprocess.run(["unshare", "-m", "--propagation", "unchanged", "sh", "-c",
                        f"mount --make-rshared / && exec {sys.executable} {script} {tmp_path}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["root_shared"] and out["control_leaked"]    # the trap is armed ...
    assert out["inside"] >= 3 and out["leaked"] is False   # ... and the engine avoids it


# --- a crashed owner ---------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent("""
    import json, os
    from justaprocess.container import Container
    c = Container(["/bin/sleep", "60"], network=True).start()
    print(json.dumps({"pid": c.pid, "dirs": c.cgroups + [c.dir], "links": [c.net.lease.host_ifname,
                      c.net.bridge.name], "netns": c.net.netns}), flush=True)
    os._exit(0)   # a kernel killed: no remove(), no atexit
""")


def test_a_crashed_owner_leaves_nothing_after_stale_cleanup(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    left = json.loads(r.stdout)
    # The container's processes die with their creator (PR_SET_PDEATHSIG down the chain).
    assert wait_exit(left["pid"]) and gone(left["pid"]), f"PID {left['pid']} outlived its creator"
    # Everything else is registered under the dead owner: the stale cleanup removes it.
    lab.cleanup(stale=True)
    assert not any(os.path.exists(d) for d in left["dirs"])
    assert not any(os.path.exists(f"/sys/class/net/{n}") for n in left["links"])
    assert not os.path.exists(os.path.join(lab.NETNS_DIR, left["netns"]))


def test_two_step_start_from_a_multithreaded_caller(image, own_objects):
    """A notebook's kernel runs threads: then the engine forks A, which unshares and forks
    PID 1 (the single-threaded caller clones PID 1 directly). Same container either way."""
    import threading
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert threading.active_count() > 1
        with Container(["/bin/sh", "-c", "echo $$; exit 7"], rootfs=image) as c:
            c.start()
            assert c.pid != c._a                     # B is A's child: A is what we wait for
            assert c.wait(10) == 7 and c.logs() == "1\n"
        with Container(["/bin/sleep", "30"], rootfs=image) as c:
            c.start()
            os.kill(c.pid, 9)
            assert c.wait(10) == -9                  # a signal, told apart from exit 137
        r = container.run(["/bin/sh", "-c", "exit 137"], rootfs=image)
        assert r.returncode == 137
    finally:
        stop.set()
        t.join()
    with Container(["/bin/sh", "-c", "echo $$; exit 7"], rootfs=image) as c:
        c.start()
        assert c.pid == c._a                         # cloned straight into its namespaces
        assert c.wait(10) == 7 and c.logs() == "1\n"


def test_exec_past_its_timeout_is_killed_and_says_so(box):
    from justaprocess._launch import Timeout
    with pytest.raises(Timeout, match="timeout=") as info:
        box.exec(["/bin/sh", "-c", "echo started; exec sleep 30"], timeout=0.5)
    assert info.value.result.signal == 9 and info.value.result.stdout == "started\n"
    assert box.cgroup.pids() == [box.pid]   # nothing of it is left in the container,
    assert container.children_of(box.pid) == []  # not even a zombie for PID 1 to adopt
