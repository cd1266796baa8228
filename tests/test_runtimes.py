"""runtimes: the same rootfs under runc (crun, podman when present); facts of any PID.

Real effects only: the kernel's files of the container's process and cgroup,
and that every directory and process is gone afterwards.
"""
import json
import os
import subprocess

import pytest
from conftest import cli, wait_for

from justaprocess import cgroups, lab, proc, runtimes
from justaprocess.errors import BadInput, MissingTool, NotSupported

RUNC = runtimes.find("runc")
needs_runc = pytest.mark.skipif(not RUNC.available, reason=f"runc: {RUNC.reason}")


# --- the config, without running anything ------------------------------------------

@needs_runc
def test_config_is_runc_spec_made_for_the_lab(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    cfg = runtimes.config(str(tmp_path), ["sleep", "1"], cgroups_path="jap-lab/jap-abc123",
                          memory="64M", pids=32, caps=("CAP_KILL",))
    assert cfg["process"]["args"] == ["sleep", "1"]
    assert cfg["process"]["terminal"] is False
    assert cfg["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    assert cfg["linux"]["resources"]["memory"]["limit"] == 64 << 20
    assert cfg["linux"]["resources"]["pids"]["limit"] == 32
    assert cfg["linux"]["cgroupsPath"] == "jap-lab/jap-abc123"
    # the namespaces `runc spec` writes on this machine (cgroup only on cgroup v2), read from it
    subprocess.run(["runc", "spec", "--bundle", str(tmp_path)], check=True)
    want = [n["type"] for n in json.loads((tmp_path / "config.json").read_text())["linux"]["namespaces"]]
    assert [n["type"] for n in cfg["linux"]["namespaces"]] == want
    assert {"pid", "network", "ipc", "uts", "mount"} <= set(want)
    assert ("cgroup" in want) == (cgroups.layout() == cgroups.V2)
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    # Docker's allowlist: every call not named fails with EPERM (mount is not named)
    sc = cfg["linux"]["seccomp"]
    assert (sc["defaultAction"], sc["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert "read" in sc["syscalls"][0]["names"] and "mount" not in sc["syscalls"][0]["names"]
    assert "seccomp" not in runtimes.config(str(tmp_path), ["true"], seccomp=False)["linux"]


def test_config_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(BadInput, match="rootfs"):
        runtimes.config("relative/path", ["true"])
    with pytest.raises(BadInput, match="command"):
        runtimes.config(str(tmp_path), [])
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    with pytest.raises(BadInput):
        runtimes.config(str(tmp_path), ["true"], memory="64Q")


def test_unknown_runtime_is_refused():
    with pytest.raises(BadInput, match="runc"):
        runtimes.find("docker-but-not")


def test_absent_runtimes_say_why():
    shown = cli("runtimes")
    assert shown.returncode == 0, shown.stderr
    for rt in runtimes.available().values():
        assert rt.available == (rt.reason == "")
        if not rt.available:  # which one, and why: in its reason and on the command line
            assert rt.name in rt.reason and rt.reason in shown.stdout


def _cgroup_tree(tmp_path, lines, unified_controllers=None):
    root = tmp_path / "cgroup"
    root.mkdir()
    if unified_controllers is not None:
        (root / "unified").mkdir()
        (root / "unified" / "cgroup.controllers").write_text(unified_controllers)
    mounts = tmp_path / "mounts"
    mounts.write_text("".join(line.format(root=root) + "\n" for line in lines))
    return str(root), str(mounts)


HYBRID = ["tmpfs {root} tmpfs rw 0 0", "cgroup {root}/memory cgroup rw,memory 0 0",
          "cgroup2 {root}/unified cgroup2 rw 0 0"]


def test_crun_refuses_a_hybrid_whose_cgroup2_has_controllers(tmp_path):
    root, mounts = _cgroup_tree(tmp_path, HYBRID, unified_controllers="hugetlb\n")
    why = runtimes.layout_refusal("crun", root, mounts)
    assert "crun" in why and f"{root}/unified" in why and "hugetlb" in why
    assert runtimes.layout_refusal("runc", root, mounts) == ""


@pytest.mark.parametrize("lines,unified", [
    (HYBRID, ""),                                            # systemd's hybrid: no controller on v2
    (["cgroup2 {root} cgroup2 rw 0 0"], None),               # pure v2
    (["tmpfs {root} tmpfs rw 0 0", "cgroup {root}/memory cgroup rw,memory 0 0"], None)])  # pure v1
def test_crun_takes_other_layouts(tmp_path, lines, unified):
    root, mounts = _cgroup_tree(tmp_path, lines, unified)
    assert runtimes.layout_refusal("crun", root, mounts) == ""


def test_cgroups_path_is_under_the_lab_parent():
    p = runtimes.cgroups_path("jap-abc123")
    assert p.endswith(f"{cgroups.LAB_PARENT}/jap-abc123")
    if cgroups.layout() != cgroups.V2:
        assert not p.startswith("/")  # relative: under our own cgroup in each hierarchy


def test_facts_of_a_plain_process_share_everything():
    f = runtimes.facts(os.getpid())
    assert all(f.shared_with_host.values())
    assert f.pid_inside == os.getpid()
    assert f.caps == proc.caps(os.getpid())


# --- runc for real ------------------------------------------------------------------

@pytest.mark.root
@needs_runc
def test_runc_container_facts_and_cleanup(image, own_objects):
    c = runtimes.OCIContainer(image, ["sleep", "60"], memory="48M", pids=40)
    assert c.pid is None and not os.path.exists(c.dir)  # nothing happens in the constructor
    c.start()
    try:
        f = c.facts()
        assert f.pid_inside == 1 and f.comm == "sleep"
        assert {k for k, same in f.shared_with_host.items() if not same} >= {"pid", "net", "mnt", "uts", "ipc"}
        assert f.memory_limit == 48 << 20 and f.pids_limit == 40
        # the limits are in the kernel's files of the container's cgroup
        mem_dir = f.cgroups.get("memory") or f.cgroups["unified"]
        assert os.path.basename(mem_dir) == c.name
        assert os.path.basename(os.path.dirname(mem_dir)) == cgroups.LAB_PARENT
        assert set(f.cap_names) == set(runtimes.engine_caps())
        assert f.no_new_privs and f.seccomp == 2 and f.seccomp_filters >= 1
        assert "/proc/sys" in f.readonly_paths and f.masked
        root = next(m for m in f.mounts if m.target == "/")
        assert root.readonly
        # a blocked syscall answers EPERM inside; the same works on the host
        r = c.exec(["sh", "-c", "grep Seccomp: /proc/self/status; hostname"])
        assert r.returncode == 0 and "2" in r.stdout and c.name in r.stdout
        dirs = list(f.cgroups.values())
        pid = c.pid
    finally:
        c.remove()
    assert not proc.running(pid)
    assert not any(os.path.isdir(d) for d in dirs)
    assert not os.path.exists(c.dir)
    assert not [e for e in lab.leftovers() if c.name in e.name]


@pytest.mark.root
@needs_runc
def test_runc_run_returns_exit_code_and_output(image, own_objects):
    r = runtimes.run(image, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert not [e for e in lab.entries() if e.owner == os.getpid()]


@pytest.mark.root
@needs_runc
def test_seccomp_off_shows_in_facts(image, own_objects):
    with runtimes.OCIContainer(image, ["sleep", "30"], seccomp=False) as c:
        assert c.facts().seccomp == 0


@pytest.mark.root
@needs_runc
def test_same_blocks_as_the_hand_built_engine(image, own_objects):
    container = pytest.importorskip("justaprocess.container")
    hb = container.Container(["sleep", "30"], rootfs=image, memory="64M")
    try:
        hb.create()
        hb.start()
        with runtimes.OCIContainer(image, ["sleep", "30"], memory="64M") as oc:
            a, b = runtimes.facts(hb.pid, "hand-built"), oc.facts()
            for kind in ("pid", "net", "mnt", "uts", "ipc"):
                assert not a.shared_with_host[kind] and not b.shared_with_host[kind]
            assert a.memory_limit == b.memory_limit == 64 << 20
            assert a.pid_inside == b.pid_inside == 1
            assert "seccomp" in runtimes.differences(a, b)
            assert "seccomp" in runtimes.side_by_side(a, b)
    finally:
        hb.remove()


@pytest.mark.root
@pytest.mark.parametrize("name", runtimes.DRIVEN)
def test_asking_a_runtime_its_version_makes_no_folder_of_its_own(name):
    # crun made root's /run/crun at every start, --version too; on a fresh machine that
    # folder was the lab's doing (the doctor and the line-up ask), and nothing removed it.
    path = runtimes.find(name).path
    if path is None:
        pytest.skip(f"{name} is not installed")
    os.makedirs(lab.run_dir(), exist_ok=True)
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=mkdir,mkdirat",
                        *runtimes.version_argv(name, path)], capture_output=True, text=True)
    assert r.returncode == 0 and "version" in r.stdout, r.stderr
    made = [ln for ln in r.stderr.splitlines() if "mkdir" in ln and lab.run_dir() not in ln]
    assert made == [], made


@pytest.mark.root
def test_crun_when_present(image, own_objects):
    rt = runtimes.find("crun")
    if not rt.available:  # absent, or present but unable to run here: a lab error, nothing made
        refused = MissingTool if rt.path is None else NotSupported
        with pytest.raises(refused, match="crun"):
            runtimes.OCIContainer(image, ["true"], runtime="crun").start()
        assert not [e for e in lab.entries() if e.owner == os.getpid()]
        pytest.skip(f"crun: {rt.reason}")
    r = runtimes.run(image, ["sh", "-c", "echo $$"], runtime="crun")
    assert r.returncode == 0 and r.stdout.strip() == "1"
    with runtimes.OCIContainer(image, ["sleep", "30"], runtime="crun") as c:
        f = c.facts()
        assert f.pid_inside == 1 and f.memory_limit == 64 << 20


@pytest.mark.root
def test_podman_is_reported_not_driven(image, own_objects):
    rt = runtimes.find("podman")
    assert not rt.available and rt.reason
    with pytest.raises((MissingTool, NotSupported), match="podman"):
        runtimes.OCIContainer(image, ["true"], runtime="podman").start()


@pytest.mark.root
@needs_runc
def test_logs_stop_and_the_container_api(image, own_objects):
    with runtimes.OCIContainer(image, ["sh", "-c", "echo hello; echo oops >&2; exec sleep 30"]) as c:
        assert set(c.namespaces) >= {"pid", "net"} and c.namespaces["pid"] != proc.namespaces()["pid"]
        assert any(os.path.basename(d) == c.name for d in c.cgroups.values())
        wait_for(lambda: c.logs() and c.logs("stderr"), what="both lines logged")
        assert c.logs() == "hello\n" and c.logs("stderr") == "oops\n"
        assert c.running()
        c.stop()
        assert not c.running()
        with pytest.raises(BadInput):
            c.logs("stdin")


# --- the line-up: every engine on the same root (lineup) --------------------------------

def test_short_cgroup_keeps_two_levels_and_cuts_long_ids():
    from justaprocess import lineup
    assert lineup.short_cgroup("/sys/fs/cgroup/memory/x/jap-lab/jap-1a2b3c") == "jap-lab/jap-1a2b3c"
    assert lineup.short_cgroup("/sys/fs/cgroup/libpod_parent/libpod-" + "ab" * 32) == \
        "libpod_parent/libpod-" + "ab" * 6 + "…"
    assert lineup.short_cgroup("/sys/fs/cgroup/a/b-cafe/") == "a/b-cafe"


def test_lineup_refuses_bad_input_before_anything_is_made():
    from justaprocess import lineup
    with pytest.raises(BadInput, match="engines"):
        lineup.Lineup("/nowhere", engines=["docker"])
    with pytest.raises(BadInput, match="argv"):
        lineup.Lineup("/nowhere", [])
    with pytest.raises(BadInput):
        lineup.Lineup("/nowhere", memory="64Q")
    assert repr(lineup.Lineup("/nowhere")) == "<Lineup not started>"


# What podman writes into a root it is given (podman-run(1) --rootfs): the files it
# bind-mounts or creates.  The folder is shared by other runs, so only these are compared.
PODMAN_WRITES = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/passwd", "etc/group",
                 "run/.containerenv")


def _tree(path):
    out = []
    for f in PODMAN_WRITES:
        try:
            st = os.lstat(os.path.join(path, f))
            out.append((f, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append((f, None, None))
    return out


@pytest.mark.root
@needs_runc
def test_lineup_runs_the_same_root_under_every_engine_here(image, own_objects):
    from justaprocess import lineup, podman
    before = _tree(image.path)
    crun = runtimes.find("crun")
    with lineup.Lineup(image, ["sleep", "60"], memory="48M", pids=40) as lu:
        assert [c.engine for c in lu.columns] == list(lineup.ENGINES)
        for c in lu.running():        # what the kernel says, and the limit in the cgroup's file
            assert c.facts.pid_inside == 1 and c.facts.comm == "sleep"
            assert c.facts.memory_limit == 48 << 20 and c.facts.pids_limit == 40
            assert int(open(c.memory_file).read()) == 48 << 20
            assert c.pid == c.facts.host_pid and proc.running(c.pid) and lab.is_lab_name(c.name)
        assert lu.column("hand-built").running and lu.column("runc").running
        col = lu.column("crun")
        if crun.path is None:
            assert not col.running and "not installed" in col.skipped
        elif runtimes.layout_refusal("crun"):
            # it was run, and refused in its own words (libcrun), nothing of it left
            assert not col.running and "crun run failed" in col.skipped
            assert "hybrid mode not supported" in col.skipped
        else:                           # pure v2 (the lab VM): crun runs
            assert col.running, col.skipped
        pod = lu.column("podman")
        if podman.missing():
            assert not pod.running and pod.skipped == podman.missing()
        else:
            assert pod.running, pod.skipped
            assert pod.label.endswith("-> " + podman.runtime())
            assert lu.store.inspect(pod.name)["OCIRuntime"] == podman.runtime()
            assert "no_new_privs" in lu.differences()["podman"]   # podman does not set it
        assert "seccomp" in lu.differences()["runc"]              # the hand-built one loads none
        table = lu.table()
        assert all(c.engine in table for c in lu.columns)
        assert all(f"{c.engine}: not running - {c.skipped}" in table for c in lu.columns if c.skipped)
        pids = [c.pid for c in lu.running()]
        dirs = [d for c in lu.running() for d in c.facts.cgroups.values()
                if lab.is_lab_name(os.path.basename(d))]
    assert podman.wait_pids_gone(pids)
    assert not any(os.path.isdir(d) for d in dirs)
    assert not [e for e in lab.entries() if e.owner == os.getpid()]
    assert _tree(image.path) == before      # podman's --rootfs DIR:O wrote to an upper dir


@pytest.mark.root
def test_podman_run_rootfs_must_be_a_folder(own_objects):
    from justaprocess import podman
    if podman.missing():
        pytest.skip(podman.missing())
    with podman.Store() as st, pytest.raises(BadInput, match="rootfs"):
        st.run("jap-abcdef-x", ["true"], rootfs="relative/dir")


@pytest.mark.root
@needs_runc
def test_a_kernel_killed_with_a_lineup_running_leaves_nothing_after_cleanup(image):
    from conftest import facts_of_a_killed_kernel, leftovers_of, start_times
    from justaprocess import podman
    code = ("import os\n"
            "from justaprocess import lineup, rootfs\n"
            "lu = lineup.Lineup(rootfs.build('busybox'), ['sleep', '600']).start()\n"
            "print('FACTS', os.getpid(), *[c.pid for c in lu.running()])\n")
    facts, starts = facts_of_a_killed_kernel(code, 180, lambda f: start_times(f[1:]))
    kernel, pids = int(facts[0]), [int(p) for p in facts[1:]]
    assert len(pids) >= 2 and leftovers_of(kernel)
    lab.cleanup(owner=kernel)          # its objects only: other runs' stay
    assert not leftovers_of(kernel)
    assert podman.wait_pids_gone(starts)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
