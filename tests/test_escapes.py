"""escapes, rootless and insecure's user namespace: each escape works where chapter 07 says
it does, and the engine step named after it blocks it.

Every target is the lab's own: a named v1 hierarchy jap-<id>, a copy of `sleep` in a lab
folder, a lab folder and its files, a loop device over a lab file, a process the lab started.
"""
import errno
import os
import stat

import pytest

from justaprocess import _captable, _launch, escapes, insecure as ins, lab, rootless
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


# --- user namespaces -----------------------------------------------------------------------

def _status():
    st = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines())
    return {"uid_map": open("/proc/self/uid_map").read().split(),
            "setgroups": open("/proc/self/setgroups").read().strip(),
            "CapEff": int(st["CapEff"], 16)}


def test_user_ns_maps_root_to_an_unprivileged_range_with_every_capability(naive_box):
    out = naive_box.run(_status, user_ns=True)
    assert out.ok, out
    assert out.value["uid_map"] == ["0", str(ins.USERNS_BASE), str(ins.USERNS_SIZE)]
    assert out.value["setgroups"] == "deny"
    assert out.value["CapEff"] == (1 << (_captable.last_cap() + 1)) - 1  # all of them, inside
    assert os.lstat(naive_box.root).st_uid == ins.USERNS_BASE  # the rootfs given to the mapped root


def test_the_escapes_fail_under_a_user_namespace_with_every_capability(naive_box):
    secret = naive_box.host_file("jap-secret.txt", "host secret")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert naive_box.run(ins.chroot_escape(secret)).value == "host secret"
    out = naive_box.run(ins.chroot_escape(secret), user_ns=True)
    assert not out.ok and "EACCES" in out.error, out  # the climb works, root's 0600 file does not
    world = naive_box.host_file("jap-public.txt", "public", mode=0o644)
    assert naive_box.run(ins.chroot_escape(world), user_ns=True).value == "public"  # not pivot_root's job
    old = ins.read_sysctl()
    try:
        assert "EACCES" in naive_box.run(ins.sysctl_write(), user_ns=True).error
        assert "EPERM" in naive_box.run(ins.sysctl_fresh_proc(), user_ns=True).error
        assert "EACCES" in naive_box.run(ins.sysctl_fresh_proc(), user_ns=True, pid_ns=True).error
        assert ins.read_sysctl() == old
    finally:
        ins.restore_sysctl(old)
    with ins.HostDisk(os.path.join(naive_box.dir, "jap-disk.img"), "JAP DISK") as d:
        assert "EPERM" in naive_box.run(ins.mknod_read(d.major, d.minor), user_ns=True).error
        assert "EPERM" in naive_box.run(ins.devtmpfs_read(d.major, d.minor), user_ns=True).error
    victim, target = ins.start_victim("test: a host process")
    try:
        out = naive_box.run(ins.kill_target(target), user_ns=True)
        assert not out.ok and "EPERM" in out.error and victim.alive()
    finally:
        victim.stop()


def test_setgroups_is_checked():
    with pytest.raises(BadInput):
        _launch.run(_launch.Spec(fn=lambda: 0, new=("user",), setgroups="maybe"))
    with pytest.raises(BadInput):
        _launch.run(_launch.Spec(fn=lambda: 0, setgroups="deny"))


def test_runc_rootless_as_an_unprivileged_uid(naive_box):
    naive_box.map_owner()
    r = rootless.run(naive_box.root, "id -u; cat /proc/self/uid_map /proc/self/setgroups")
    assert r.ok, r
    lines = r.stdout.split()
    assert lines[0] == "0" and lines[1:4] == ["0", str(ins.USERNS_BASE), "1"] and lines[4] == "deny"
    assert any(ns["type"] == "user" for ns in r.config["linux"]["namespaces"])
    assert not any(ns["type"] == "network" for ns in r.config["linux"]["namespaces"])


def test_runc_rootless_blocks_the_escapes_with_every_capability(naive_box):
    naive_box.map_owner()
    old = ins.read_sysctl()
    ins._remember_sysctl(ins.SYSCTL)
    try:
        with ins.HostDisk(os.path.join(naive_box.dir, "jap-disk.img"), "JAP DISK") as d:
            victim, _ = ins.start_victim("test: a host process")
            try:
                r = rootless.run(naive_box.root, rootless.escapes_script(old + 1, d.major, d.minor,
                                                                   victim.pid),
                                 all_caps=True, keep_paths=False)
                assert victim.alive()
            finally:
                victim.stop()
    finally:
        ins.restore_sysctl(old)
    assert r.ok, r
    said = dict(ln.split(": ", 1) for ln in r.stdout.strip().splitlines())
    assert len(said) == 5 and "worked" not in said.values(), said
    assert said["write /proc/sys"] == "Permission denied"
    assert said["mknod a disk"] == "Operation not permitted"
    assert ins.read_sysctl() == old


def test_runc_rootless_cannot_set_cgroup_limits_without_a_delegated_cgroup(naive_box):
    r = rootless.run(naive_box.root, "echo ran", memory="64M")
    assert not r.ok and "ran" not in r.stdout
    assert "cgroup" in r.stderr and "permission denied" in r.stderr


def test_rootless_says_when_the_unprivileged_uid_cannot_reach_the_rootfs(naive_box, tmp_path):
    from justaprocess.errors import LabError
    shut = tmp_path / "shut"
    shut.mkdir(mode=0o700)
    rootfs = shut / "rootfs"
    (rootfs / "proc").mkdir(parents=True)
    with pytest.raises(LabError, match="may not be passed through by uid"):
        rootless.run(str(rootfs), "true")


def test_rootless_refuses_bad_input(naive_box):
    with pytest.raises(BadInput):
        rootless.run(naive_box.root, "true", uid=0)
    with pytest.raises(BadInput):
        rootless.run(naive_box.dir + "/nothing", "true")


# --- CVE-2022-0492: release_agent ----------------------------------------------------------

def test_release_agent_runs_on_the_host_unless_sys_admin_or_user_ns(naive_box):
    h = escapes.new_hierarchy()
    try:
        out = naive_box.run(escapes.release_agent(h))
        assert out.ok, out
        assert out.value["agent uid"] == 0
        assert out.value["agent mount namespace"] == os.readlink("/proc/self/ns/mnt")
        assert out.value["container mount namespace"] != out.value["agent mount namespace"]
        os.unlink(os.path.join(naive_box.root, escapes.AGENT_MARK))
        for steps in (dict(drop=("CAP_SYS_ADMIN",)), dict(user_ns=True)):
            out = naive_box.run(escapes.release_agent(h), **steps)
            assert not out.ok and "EPERM" in out.error, (steps, out)
            assert not os.path.exists(os.path.join(naive_box.root, escapes.AGENT_MARK))
    finally:
        escapes.sweep_hierarchy(h)
    assert not escapes.hierarchy_exists(h)


def test_a_hierarchy_left_behind_is_a_leftover_that_cleanup_removes(own_objects):
    from justaprocess import _libc
    h = escapes.new_hierarchy()

    def leave_it() -> None:  # a child cgroup keeps an unmounted hierarchy alive
        mnt = os.path.join(lab.run_dir(), h)
        _libc.mount("tmpfs", lab.run_dir(), "tmpfs", 0, "size=16k")
        os.mkdir(mnt)
        _libc.mount("cgroup", mnt, "cgroup", 0, f"none,name={h}")
        os.mkdir(os.path.join(mnt, "jap-child"))
        _libc.umount2(mnt, _libc.MNT_DETACH)

    r = _launch.run(_launch.Spec(fn=leave_it, new=("mnt",)))
    assert r.ok, r
    assert escapes.hierarchy_exists(h)
    assert any(e.kind == "hierarchy" and e.name == h for e in lab.leftovers())
    lab.cleanup(owner=os.getpid())
    assert not escapes.hierarchy_exists(h)
    assert not any(e.kind == "hierarchy" and e.name == h for e in lab.leftovers())


def test_release_agent_refuses_a_hierarchy_that_is_not_the_labs():
    for name in ("systemd", "memory", "jap"):
        with pytest.raises(BadInput):
            escapes.release_agent(name)
        with pytest.raises(BadInput):
            escapes.sweep_hierarchy(name)


# --- CVE-2019-5736: the runtime's binary ---------------------------------------------------

def test_the_runtime_copy_is_overwritten_through_proc_pid_exe(naive_box):
    rt = escapes.RuntimeCopy(naive_box.dir)
    assert rt.path.startswith(naive_box.dir + "/") and not rt.changed()
    h, target = rt.enter()
    try:
        out = naive_box.run(escapes.overwrite_runtime(target))
    finally:
        h.kill()
        h.wait(5)
    assert out.ok, out
    assert out.value["write while it ran"] == "ETXTBSY" and out.value["/proc/PID/exe"] == rt.path
    assert rt.changed()
    r = rt.run()
    assert r.returncode == 0
    with open(os.path.join(naive_box.dir, escapes.PAYLOAD_MARK)) as f:
        assert f.read().strip() == "uid=0"


def test_a_sealed_memfd_copy_protects_the_runtime(naive_box):
    rt = escapes.RuntimeCopy(naive_box.dir)
    h, target = rt.enter(sealed=True)
    try:
        assert os.readlink(f"/proc/{h.pid}/exe").startswith("/memfd:jap-runtime")
        out = naive_box.run(escapes.overwrite_runtime(target))
    finally:
        h.kill()
        h.wait(5)
    assert not out.ok and "EPERM" in out.error, out
    assert not rt.changed()


def test_runtime_copy_only_in_a_lab_folder(tmp_path):
    with pytest.raises(BadInput):
        escapes.RuntimeCopy(str(tmp_path))


# --- CVE-2024-21626: a leaked directory fd -------------------------------------------------

def test_a_leaked_fd_reaches_the_host_unless_cloexec(naive_box):
    naive_box.host_file("jap-secret.txt", "leaked secret")
    fd, r = escapes.leaky_run(naive_box.root, naive_box.dir, 'cat /proc/self/fd/$FD/jap-secret.txt')
    assert r.returncode == 0 and r.stdout.strip() == "leaked secret", r
    fd, r = escapes.leaky_run(naive_box.root, naive_box.dir, 'cat /proc/self/fd/$FD/jap-secret.txt',
                              cloexec=True)
    assert r.returncode != 0 and "No such file" in r.stderr, r


def test_a_cwd_through_the_leaked_fd_needs_the_cwd_check(naive_box):
    naive_box.host_file("jap-secret.txt", "leaked secret")
    for cloexec in (False, True):  # the chdir happens before execve: O_CLOEXEC is too late
        fd, r = escapes.leaky_run(naive_box.root, naive_box.dir, "cat jap-secret.txt", cwd_trick=True,
                                  cloexec=cloexec)
        assert r.returncode == 0 and r.stdout.strip() == "leaked secret", r
    fd, r = escapes.leaky_run(naive_box.root, naive_box.dir, "cat jap-secret.txt", cwd_trick=True,
                              verify_cwd=True)
    assert r.error is not None and r.error.step == "check cwd" and r.error.errno == errno.ENOENT
    assert "CVE-2024-21626" in str(r.error)


def test_leaky_run_only_leaks_a_lab_folder(naive_box, tmp_path):
    with pytest.raises(BadInput):
        escapes.leaky_run(naive_box.root, str(tmp_path), "true")


# --- the hand-built engine with a user namespace --------------------------------------------

def test_the_engine_with_a_user_namespace_blocks_the_escapes_with_every_capability(naive_box):
    from justaprocess import container
    old = ins.read_sysctl()
    ins.remember_sysctl()
    try:
        with ins.HostDisk(os.path.join(naive_box.dir, "jap-disk.img"), "JAP DISK") as d:
            victim, _ = ins.start_victim("test: a host process")
            try:
                script = "id -u; cat /proc/self/uid_map /proc/self/setgroups; " \
                    + rootless.escapes_script(old + 1, d.major, d.minor, victim.pid)
                r = container.run(["/bin/sh", "-c", script], userns=True, caps=None)
                assert victim.alive()
            finally:
                victim.stop()
    finally:
        ins.restore_sysctl(old)
    assert r.returncode == 0, r
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", str(ins.USERNS_BASE), str(ins.USERNS_SIZE)]
    assert lines[2] == "deny"
    said = dict(ln.split(": ", 1) for ln in lines[3:])
    assert len(said) == 5 and "worked" not in said.values(), said
    assert ins.read_sysctl() == old


def test_the_engine_refuses_a_user_namespace_without_its_map():
    from justaprocess import container
    with pytest.raises(BadInput):
        container.Container(["true"], namespaces=("mnt", "user"))
    with pytest.raises(BadInput):
        container.Container(["true"], userns="yes")


def test_exec_joins_the_user_namespace_of_the_engine(own_objects):
    from justaprocess import container
    with container.Container(["sleep", "30"], userns=True) as c:
        c.start()
        r = c.exec(["sh", "-c", "id -u; cat /proc/self/uid_map; touch /root/jap-made && ls -n /root/jap-made"])
        assert r.returncode == 0, r
        lines = r.stdout.strip().splitlines()
        assert lines[0] == "0" and lines[1].split() == ["0", str(ins.USERNS_BASE), str(ins.USERNS_SIZE)]
        assert lines[2].split()[2] == "0"                            # root's, inside
        assert os.stat(os.path.join(c.root, "root", "jap-made")).st_uid == ins.USERNS_BASE  # outside
