"""insecure: each breakout works from the naive container, and its engine step blocks it.

Every target is the lab's own; the sysctl is restored and checked; the loop
device is checked detached.
"""
import os
import time

import pytest
from conftest import wait_for

from justaprocess import insecure as ins, proc
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


def test_chroot_escape_and_pivot_root(naive_box):
    secret = naive_box.host_file("jap-secret.txt", "host secret 42")
    assert not secret.startswith(naive_box.root)
    assert naive_box.run(ins.chroot_escape(secret)).value == "host secret 42"
    blocked = naive_box.run(ins.chroot_escape(secret), pivot_root=True)
    assert not blocked.ok and "ENOENT" in blocked.error
    no_cap = naive_box.run(ins.chroot_escape(secret), drop=("CAP_SYS_CHROOT",))
    assert not no_cap.ok and "EPERM" in no_cap.error


def test_sysctl_write_reaches_the_host_unless_read_only(naive_box):
    old = ins.read_sysctl()
    try:
        out = naive_box.run(ins.sysctl_write())
        assert out.ok and ins.read_sysctl() == out.value == old + 1
    finally:
        ins.restore_sysctl(old)
    assert ins.read_sysctl() == old
    ro = naive_box.run(ins.sysctl_write(), ro_proc_sys=True)
    assert not ro.ok and "EROFS" in ro.error
    assert ins.read_sysctl() == old


def test_mknod_reads_a_lab_disk_unless_cap_mknod_dropped(naive_box):
    with ins.HostDisk(os.path.join(naive_box.dir, "jap-disk.img"), "JAP DISK 7") as d:
        assert ins.loop_attached(d.path)
        assert naive_box.run(ins.mknod_read(d.major, d.minor)).value == "JAP DISK 7"
        out = naive_box.run(ins.mknod_read(d.major, d.minor), drop=("CAP_MKNOD",))
        assert not out.ok and "EPERM" in out.error
    # autoclear: gone with the last close (loop(4)); no event to wait on
    wait_for(lambda: not ins.loop_attached(d.path), what="the loop device detached")


def test_cap_sys_admin_undoes_read_only_proc_sys_and_the_missing_cap_mknod(naive_box):
    # a fresh procfs has a writable /proc/sys; devtmpfs holds a node for every device
    old = ins.read_sysctl()
    try:
        out = naive_box.run(ins.sysctl_fresh_proc(), ro_proc_sys=True, pid_ns=True)
        assert out.ok and ins.read_sysctl() == out.value == old + 1
    finally:
        ins.restore_sysctl(old)
    no_admin = naive_box.run(ins.sysctl_fresh_proc(), ro_proc_sys=True, pid_ns=True, drop=("CAP_SYS_ADMIN",))
    assert not no_admin.ok and "EPERM" in no_admin.error and ins.read_sysctl() == old
    with ins.HostDisk(os.path.join(naive_box.dir, "jap-disk.img"), "JAP DISK 8") as d:
        assert naive_box.run(ins.devtmpfs_read(d.major, d.minor), drop=("CAP_MKNOD",)).value == "JAP DISK 8"
        out = naive_box.run(ins.devtmpfs_read(d.major, d.minor), drop=("CAP_MKNOD", "CAP_SYS_ADMIN"))
        assert not out.ok and "EPERM" in out.error
    wait_for(lambda: not ins.loop_attached(d.path), what="the loop device detached")


def test_shared_pid_namespace_lets_it_kill_a_host_process(naive_box):
    victim, target = ins.start_victim()
    try:
        assert (target.pid, target.start) == (victim.pid, proc.start_time(victim.pid))
        out = naive_box.run(ins.kill_target(target), pid_ns=True)
        assert not out.ok and "ESRCH" in out.error and victim.alive()
        out = naive_box.run(ins.kill_target(target))
        assert out.ok and out.value["killed"] == target.cmdline
        victim.popen.wait(5)
        assert victim.popen.returncode == -9
    finally:
        victim.stop()


def test_the_kill_names_a_process_by_pid_and_start_time(naive_box):
    # Two processes with the very same command line: only the target dies.
    victim, target = ins.start_victim()
    twin, _ = ins.start_victim()
    try:
        assert open(f"/proc/{twin.pid}/cmdline").read() == open(f"/proc/{victim.pid}/cmdline").read()
        # A stale target (the PID's start time differs: as if the PID were recycled) kills nothing.
        stale = target._replace(start=target.start + 1)
        out = naive_box.run(ins.kill_target(stale))
        assert not out.ok and "ESRCH" in out.error and victim.alive() and twin.alive()
        assert naive_box.run(ins.kill_target(target)).ok
        assert victim.popen.wait(5) == -9 and twin.alive()
    finally:
        victim.stop()
        twin.stop()


def test_unknown_capability_is_refused(naive_box):
    with pytest.raises(BadInput, match="CAP_"):
        naive_box.run(lambda: 1, drop=("CAP_NOPE",))


def test_a_hanging_attack_is_killed_at_the_timeout(naive_box):
    out = naive_box.run(lambda: time.sleep(30), timeout=0.5)
    assert not out.ok and "within" in out.error


def _bounding():
    return int(dict(ln.split(":", 1) for ln in open("/proc/self/status"))["CapBnd"], 16)


def test_drop_takes_any_capability_name(naive_box):
    out = naive_box.run(_bounding, drop=("cap_sys_module", "CAP_NET_RAW", "sys_time"))
    assert out.ok
    for bit in (16, 13, 25):  # capabilities(7) numbers
        assert not out.value >> bit & 1
    assert naive_box.run(_bounding).value >> 16 & 1
