"""Process facts from /proc: real processes, and a fake procfs tree for the parsing."""
import os
import subprocess

import pytest
from conftest import wait_exit, wait_for

from justaprocess import proc
from justaprocess.errors import NoSuchProcess


def test_namespaces_of_self_match_readlink():
    ns = proc.namespaces("self")
    assert set(ns) <= set(proc.NS_KINDS) and "net" in ns
    assert ns["net"] == int(os.readlink("/proc/self/ns/net").split("[")[1][:-1])


def test_child_shares_namespaces_by_default():
    child = subprocess.Popen(["sleep", "10"])
    try:
        assert all(proc.shared_namespaces(os.getpid(), child.pid).values())
    finally:
        child.kill(); child.wait()


@pytest.mark.root
def test_unshared_child_differs_in_exactly_those_kinds():
    child = subprocess.Popen(["unshare", "--uts", "--ipc", "sleep", "10"])
    try:  # unshare(1) switches, then execs sleep: wait for the exec's new name
        wait_for(lambda: proc.status(child.pid)["Name"] == "sleep", what="unshare exec'd sleep")
        shared = proc.shared_namespaces(os.getpid(), child.pid)
        assert {k for k, v in shared.items() if not v} == {"uts", "ipc"}
    finally:
        child.kill(); child.wait()


@pytest.mark.root
def test_nspid_inside_a_pid_namespace():
    child = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "10"])
    try:
        def kids():
            with open(f"/proc/{child.pid}/task/{child.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        kids = wait_for(kids, what="unshare --fork started its child")
        assert proc.nspid(kids[0])[-1] == 1
        assert proc.nspid(kids[0])[0] == kids[0]
    finally:
        child.kill(); child.wait()


def test_caps_cgroups_maps_and_facts_of_self():
    f = proc.facts("self")
    assert f.pid == os.getpid()
    assert f.caps.effective == int(proc.status()["CapEff"], 16)
    assert f.cgroups and all(line.path.startswith("/") for line in f.cgroups)
    assert f.uid_map[0].inside == 0
    assert proc.start_time(os.getpid()) > 0


def test_dead_pid_is_a_clear_error():
    child = subprocess.Popen(["true"]); child.wait()
    with pytest.raises(NoSuchProcess, match="has it exited"):
        proc.namespaces(child.pid)
    with pytest.raises(NoSuchProcess):
        proc.status(child.pid)


def test_parsing_on_a_fake_procfs(tmp_path):
    p = tmp_path / "42"
    (p / "ns").mkdir(parents=True)
    os.symlink("net:[4026531999]", p / "ns" / "net")
    (p / "cgroup").write_text("4:memory:/a/b\n0::/x\n")
    (p / "status").write_text("Name:\tbusybox\nPid:\t42\nPPid:\t1\nNSpid:\t42\t1\n"
                              "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
                              "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n")
    (p / "stat").write_text("42 (a (weird) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n")
    root = str(tmp_path)
    assert proc.namespaces(42, root) == {"net": 4026531999}
    assert proc.cgroups(42, root)[0] == proc.CgroupLine(4, ("memory",), "/a/b")
    assert proc.cgroups(42, root)[1].controllers == ()
    assert proc.nspid(42, root) == (42, 1)
    assert proc.caps(42, root).effective == 0xa80425fb
    assert proc.start_time(42, root) == 777


def test_tree_lists_children():
    child = subprocess.Popen(["sleep", "10"])
    try:
        pids = [pid for _, pid, _ in proc.tree()]
        assert pids[0] == os.getpid() and child.pid in pids
    finally:
        child.kill(); child.wait()


def test_running_is_false_for_exited_and_zombie_processes():
    child = subprocess.Popen(["sleep", "10"])
    assert proc.running(child.pid)
    child.kill()
    assert wait_exit(child.pid)  # the pidfd says it ended; not yet reaped: a zombie
    assert not proc.running(child.pid) and proc.exists(child.pid)
    child.wait()
    assert not proc.running(child.pid)


def test_mountinfo_decodes_octal_escapes(tmp_path):
    """proc(5): a space in a mount point reads \\040 in mountinfo; the parser gives it back."""
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n"
        "97 22 0:50 /sub\\134dir /mnt/jap\\040one\\011two ro,relatime master:3 - tmpfs jap\\040src rw,size=64k\n")
    mounts = proc.mountinfo(42, procfs=str(tmp_path))
    assert [m.target for m in mounts] == ["/proc", "/mnt/jap one\ttwo"]
    m = mounts[1]
    assert (m.root, m.source, m.fstype) == ("/sub\\dir", "jap src", "tmpfs")
    assert m.readonly and m.propagation == ("master:3",) and m.super_options == ("rw", "size=64k")
    assert (m.mount_id, m.parent_id) == (97, 22)
    assert proc.mount_points(42, procfs=str(tmp_path)) == ["/proc", "/mnt/jap one\ttwo"]


def test_mountinfo_of_this_process_has_its_root():
    assert "/" in proc.mount_points("self")


def _own_mounts_follow_changes(where: str) -> list:
    # In a child with a mount namespace of its own: what own_mounts() shows after each change.
    from justaprocess import _libc
    seen = [proc.own_mounts() == proc.mountinfo("self")]
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", where, "tmpfs", 0, "size=64k")
    m = [m for m in proc.own_mounts() if m.target == where]
    seen.append(bool(m) and not m[-1].readonly)
    _libc.mount(None, where, None, _libc.MS_REMOUNT | _libc.MS_RDONLY, "size=64k")
    seen.append([m.readonly for m in proc.own_mounts() if m.target == where] == [True])
    _libc.umount2(where)
    seen.append(where not in [m.target for m in proc.own_mounts()])
    seen.append(proc.own_mounts() == proc.mountinfo("self"))
    return seen


@pytest.mark.root
def test_own_mounts_are_read_again_after_each_mount_remount_and_umount(tmp_path):
    from justaprocess import _launch
    assert proc.own_mounts() == proc.mountinfo("self")  # the caller's table, now watched
    r = _launch.run(_launch.Spec(fn=lambda: _own_mounts_follow_changes(str(tmp_path)), new="mnt"))
    assert r.check().value == [True] * 5
    assert str(tmp_path) not in proc.mount_points("self")  # the child's mounts were its own


def test_running_checks_the_start_time_too(tmp_path):
    (tmp_path / "7").mkdir()
    stat = "7 (jap (odd) name) S 1 7 7 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"
    (tmp_path / "7" / "stat").write_text(stat.format(start=123))
    assert proc.running(7, str(tmp_path)) and proc.running(7, str(tmp_path), start=123)
    assert not proc.running(7, str(tmp_path), start=124)      # a recycled PID
    (tmp_path / "7" / "stat").write_text(stat.format(start=123).replace(") S ", ") Z "))
    assert not proc.running(7, str(tmp_path))                   # a zombie
    assert not proc.running(8, str(tmp_path))                   # gone
    assert proc.running(os.getpid(), start=proc.start_time(os.getpid()))


@pytest.mark.root
def test_kill_signals_through_a_pidfd_and_waits_for_the_exit(own_objects):
    from justaprocess import lab
    p = lab.spawn(["sleep", "60"], note="proc.kill test")
    start = proc.start_time(p.pid)
    assert proc.running(p.pid, start=start)
    assert proc.kill(p.pid, start + 1, timeout=1) is True   # another start time: not this one
    assert proc.running(p.pid, start=start)                 # ...so it was left alone
    assert proc.kill(p.pid, start, timeout=5) is True
    assert not proc.running(p.pid, start=start)             # exited (a zombie at most)
    assert proc.wait_gone(p.pid, start, timeout=1) is True
    assert p.stop() == -9                                   # its parent reads SIGKILL
