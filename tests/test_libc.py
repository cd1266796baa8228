"""The syscall wrappers, exercised for real in throwaway child processes."""
import errno
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import wait_for

from justaprocess import _libc, proc

pytestmark = pytest.mark.root


def in_child(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh single-threaded Python: unshare/setns never touch the test process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=20)


def test_unshare_uts_and_sethostname_only_inside():
    before = os.uname().nodename
    r = in_child("""
        import os
        from justaprocess import _libc
        _libc.unshare(_libc.CLONE_NEWUTS)
        _libc.sethostname("jap-libc-test")
        print(os.uname().nodename)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "jap-libc-test"
    assert os.uname().nodename == before


def test_setns_joins_a_net_namespace():
    # A child in a new net namespace; a second process joins it by its /proc/PID/ns/net.
    holder = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        wait_for(lambda: proc.namespaces(holder.pid)["net"] != proc.namespaces("self")["net"],
                 what="unshare --net switched")
        target = proc.namespaces(holder.pid)["net"]
        r = in_child(f"""
            import os
            from justaprocess import _libc, proc
            fd = os.open("/proc/{holder.pid}/ns/net", os.O_RDONLY)
            _libc.setns(fd, _libc.CLONE_NEWNET)
            print(proc.namespaces("self")["net"])
        """)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) == target != proc.namespaces("self")["net"]
    finally:
        holder.kill()
        holder.wait()


def test_mount_umount2_and_pivot_root_in_a_private_mount_namespace(tmp_path):
    r = in_child(f"""
        import os
        from justaprocess import _libc
        _libc.unshare(_libc.CLONE_NEWNS)
        _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
        new = "{tmp_path}/root"
        os.makedirs(new + "/old")
        _libc.mount("tmpfs", new, "tmpfs")
        os.makedirs(new + "/old")
        open(new + "/marker", "w").write("inside")
        os.chdir(new)
        _libc.pivot_root(".", "old")
        _libc.umount2("/old", _libc.MNT_DETACH)
        os.chdir("/")
        print(sorted(os.listdir("/")))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['marker', 'old']"
    assert not os.path.exists(tmp_path / "root" / "marker")  # the tmpfs never showed outside


def test_errno_becomes_oserror_with_path():
    with pytest.raises(OSError) as exc:
        _libc.umount2("/nonexistent-jap-path")
    assert exc.value.errno in (errno.EINVAL, errno.ENOENT)
    assert exc.value.filename == "/nonexistent-jap-path"


def test_unshare_in_a_threaded_process_is_refused():
    # Why the lab never unshares in the notebook kernel: user namespaces refuse threads (unshare(2)).
    r = in_child("""
        import threading, time, errno
        from justaprocess import _libc
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        try:
            _libc.unshare(_libc.CLONE_NEWUSER)
            print("ok")
        except OSError as e:
            print(errno.errorcode[e.errno])
    """)
    assert r.stdout.strip() == "EINVAL"


def test_capget_matches_proc_status_and_capset_drops():
    eff, prm, inh = _libc.capget()
    masks = proc.caps("self")
    assert (eff, prm, inh) == (masks.effective, masks.permitted, masks.inheritable)
    r = in_child("""
        import socket, errno
        from justaprocess import _libc
        eff, prm, inh = _libc.capget()
        bit = 1 << 10  # CAP_NET_BIND_SERVICE
        _libc.capset(eff & ~bit, prm & ~bit, inh)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 80)); print("bound")
        except OSError as e:
            print(errno.errorcode[e.errno])
    """)
    assert r.stdout.strip() == "EACCES", r.stderr


def test_prctl_no_new_privs_is_set_in_child_only():
    r = in_child("""
        from justaprocess import _libc
        _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
        print(_libc.prctl(_libc.PR_GET_NO_NEW_PRIVS))
    """)
    assert r.stdout.strip() == "1"
    assert _libc.prctl(_libc.PR_GET_NO_NEW_PRIVS) == 0


def _deny_all_device_program() -> int:
    """Load "return 0" as a cgroup device program (BPF_PROG_LOAD): every device denied."""
    import ctypes
    import struct
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("=IIQQ", attr, 0, 15, 2, ctypes.addressof(code), ctypes.addressof(lic))  # CGROUP_DEVICE
    return _libc._bpf(5, attr)


def test_a_cgroups_device_program_is_listed_and_detached(own_objects):
    # What podman 4.3 leaves on a pod's cgroup on pure v2 (podman.Store._open_pod_devices):
    # a device program that denies everything below it, found and detached with bpf(2).
    import ctypes
    import struct

    from justaprocess import cgroups
    with cgroups.Cgroup() as cg:
        fd = os.open(cg.places[cgroups.CORE].path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            prog = _deny_all_device_program()
            attr = ctypes.create_string_buffer(128)
            struct.pack_into("=IIII", attr, 0, fd, prog, _libc.BPF_CGROUP_DEVICE, 2)  # ALLOW_MULTI
            _libc._bpf(8, attr)  # BPF_PROG_ATTACH
            os.close(prog)       # the attachment keeps it loaded
            ids = _libc.cgroup_device_programs(fd)
            assert len(ids) == 1
            denied = cg.run(["/bin/sh", "-c", "echo x > /dev/null && echo written"])
            assert "written" not in denied.stdout and "not permitted" in denied.stderr.lower()
            _libc.cgroup_detach_device_program(fd, ids[0])
            assert _libc.cgroup_device_programs(fd) == []
            allowed = cg.run(["/bin/sh", "-c", "echo x > /dev/null && echo written"])
            assert allowed.stdout.strip() == "written", allowed.stderr
        finally:
            os.close(fd)
