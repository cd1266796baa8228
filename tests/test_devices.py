"""Device control: the eBPF allow-list (v2, and the hybrid's unified hierarchy) and the engine's
closing steps (device allow-list, masked paths, fds closed before exec, capabilities).

Every live test makes real open(2)/mknod(2) calls in a lab cgroup and reads the result
back from the kernel (BPF_PROG_QUERY, BPF_PROG_GET_FD_BY_ID, the program's own
instructions).  On this kind of machine (v1+v2 hybrid) the programs go on the unified
hierarchy (/sys/fs/cgroup/unified); on the course VM (pure v2) on the cgroup itself.
"""
import os

import pytest

from justaprocess import _bpfdev, cgroups, lab
from justaprocess import runtimes
from justaprocess.container import (ENGINE_DEFAULT, ENGINE_DEVICES, HARDENED, MASKED_PATHS,
                                    READONLY_PATHS, Container)
from justaprocess.errors import BadInput, NotSupported

IS_ROOT = os.geteuid() == 0
HAS_V2 = any(h.version == 2 for h in cgroups.hierarchies())


# --- the program, without the kernel ---------------------------------------------------------

def test_rules_parse_like_v1_and_bad_ones_are_refused():
    assert _bpfdev.parse("c 1:3 rwm") == _bpfdev.Rule("c", 1, 3, 7)
    assert _bpfdev.parse("b *:* m") == _bpfdev.Rule("b", None, None, _bpfdev.BPF_DEVCG_ACC_MKNOD)
    assert _bpfdev.parse("a") == _bpfdev.parse("a *:* rwm") == _bpfdev.Rule("a", None, None, 7)
    assert str(_bpfdev.parse("c 136:* rw")) == "c 136:* rw"
    for bad in ("c 1:3", "x 1:3 r", "c 1:3 rwx", "c -1:3 r", "c 1:99999999999 r", 3):
        with pytest.raises(BadInput):
            _bpfdev.parse(bad)


def test_program_shape_one_block_per_rule_and_deny_at_the_end():
    p = _bpfdev.program(["c 1:3 rwm", "c 1:5 r"])
    text = _bpfdev.disassemble(p)
    assert text[0].endswith("/* ctx->access_type */") and "ctx->minor" in text[5]
    # rwm: no access check; 'r': the three-instruction access check
    assert sum("w1 &= 0x2" in t for t in text) == 1 and sum("w1 &=" in t for t in text) == 1
    assert text[-2].endswith("w0 = 0") and text[-1].endswith("exit")
    # each jump lands on the first instruction after its block (the next rule, or deny)
    for pc, (code, _, _, off, _) in enumerate(p):
        if code in (0x55, 0x5d):
            assert p[pc + 1 + off - 1][0] == 0x95  # the instruction before the target is an exit
    # 'a': allow all, nothing after it
    assert _bpfdev.disassemble(_bpfdev.program(["a", "c 1:3 r"]))[-2].endswith("w0 = 1")
    assert len(_bpfdev.encode(p)) == 8 * len(p)


def test_program_names_follow_the_cgroup_and_fit_the_kernel():
    assert _bpfdev.program_name("/sys/fs/cgroup/jap-lab/jap-1a2b3c-web") == "jap_1a2b3c_dev"
    assert len(_bpfdev.program_name("/x/jap-1a2b3c")) < _bpfdev.BPF_OBJ_NAME_LEN


# --- live: the kernel runs it -----------------------------------------------------------------

def run(cg, script):
    r = cg.run(["sh", "-c", script])
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
@pytest.mark.skipif(not HAS_V2, reason="no cgroup2 hierarchy mounted (pure v1)")
def test_program_allows_listed_devices_and_denies_the_rest(tmp_path):
    with cgroups.Cgroup(devices=["c 1:3 rwm", "c 1:5 r", "b 7:* m"], device_program=True) as cg:
        prog, name = cg.device_filter
        core = cg.places[cgroups.CORE].path
        assert _bpfdev.attached(core) == [prog] and _bpfdev.info(prog)[1] == name
        # the kernel holds our instructions (read back, not our copy)
        assert _bpfdev.xlated(prog) == _bpfdev.program(["c 1:3 rwm", "c 1:5 r", "b 7:* m"])
        assert run(cg, "echo hi > /dev/null && echo ok") == (0, "ok")           # c 1:3 rwm
        assert run(cg, "head -c 3 /dev/zero | wc -c")[1] == "3"                 # c 1:5 r: read
        code, out = run(cg, "echo x > /dev/zero")                              # ... not write
        assert code != 0 and "Operation not permitted" in out
        code, out = run(cg, "head -c 1 /dev/full")                             # not listed
        assert code != 0 and "Operation not permitted" in out
        node = tmp_path / "disk"
        code, out = run(cg, f"mknod {node} b 7 0 && echo made; head -c 1 {node}")  # m, not r
        assert out.startswith("made") and "Operation not permitted" in out
        code, out = run(cg, f"mknod {tmp_path}/sda b 8 0")                     # b 8: no m
        assert code != 0 and "Operation not permitted" in out and not (tmp_path / "sda").exists()
        # replaced in place: allow-all, and the old program is gone
        cg.update(devices=["a"])
        assert cg.device_filter[0] != prog and not _bpfdev.exists(prog)
        assert run(cg, "echo x > /dev/zero && echo ok") == (0, "ok")
        last = cg.device_filter[0]
    # removal detached it: nothing of the lab's is loaded any more, nothing pinned
    assert not _bpfdev.exists(last) and last not in _bpfdev.named()
    assert not os.path.exists(core)


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
@pytest.mark.skipif(not HAS_V2, reason="no cgroup2 hierarchy mounted (pure v1)")
def test_cgroup_cli_names_the_device_programs_over_a_process():
    """`python -m justaprocess cgroup PID`: the programs on its v2 cgroup and its ancestors."""
    from justaprocess.cgroups import cli
    with cgroups.Cgroup(devices=["c 1:3 rwm"], device_program=True) as cg:
        p = cg.spawn(["sleep", "30"])
        d = cli.describe(p.pid)
        prog, name = cg.device_filter
        assert d["devices"]["ebpf"][cg.places[cgroups.CORE].path] == [f"{prog} {name}"]
        assert f"devices eBPF on {cg.places[cgroups.CORE].path}: {prog} {name}" in \
            cli.format_description(d)
        p.stop()
    here = cli.describe("self")["devices"]
    assert f"{prog} {name}" not in str(here.get("ebpf"))


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
@pytest.mark.skipif(not HAS_V2, reason="no cgroup2 hierarchy mounted (pure v1)")
def test_detach_restores_access():
    with cgroups.Cgroup() as cg:
        core = cg.places[cgroups.CORE].path
        prog = _bpfdev.install(core, ["c 1:3 rwm"])
        assert run(cg, "head -c 1 /dev/zero >/dev/null && echo ok")[0] != 0
        assert _bpfdev.detach_all(core) == [] and _bpfdev.attached(core) == []
        assert not _bpfdev.exists(prog)
        assert run(cg, "head -c 1 /dev/zero >/dev/null && echo ok") == (0, "ok")


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
@pytest.mark.skipif(cgroups.layout() != cgroups.HYBRID or "devices" not in cgroups.controllers(),
                    reason="needs the v1+v2 hybrid: v1 devices files and a unified hierarchy")
def test_hybrid_kernel_checks_the_program_and_the_v1_files():
    """security/device_cgroup.c: the eBPF programs first, then the v1 list - both must allow."""
    with cgroups.Cgroup(devices=["c 1:3 rwm"]) as cg:      # v1 files: /dev/null only
        _bpfdev.install(cg.places[cgroups.CORE].path, ["a"])   # eBPF: everything
        code, out = run(cg, "head -c 1 /dev/zero")
        assert code != 0 and "Operation not permitted" in out


@pytest.mark.root
@pytest.mark.skipif(not HAS_V2, reason="no cgroup2 hierarchy mounted (pure v1)")
def test_a_refused_program_carries_the_verifier_log():
    bad = [(0xb4, 0, 0, 0, 1), (0x05, 0, 0, 5, 0), (0x95, 0, 0, 0, 0)]   # goto out of the program
    with pytest.raises(_bpfdev.VerifierError, match="jump out of range"):
        _bpfdev.load(bad, "jap_badprog")
    no_exit = [(0xb4, 0, 0, 0, 1)]
    with pytest.raises(_bpfdev.VerifierError, match="verifier log"):
        _bpfdev.load(no_exit)


def test_attaching_to_a_v1_directory_is_refused(tmp_path):
    with pytest.raises(NotSupported, match="cgroup v2"):
        _bpfdev.install(str(tmp_path), ["c 1:3 rwm"])


# --- the engine closes what chapter 07 opens ------------------------------------------------

def test_engine_defaults_keep_the_escape_capabilities_out():
    kept = {c.lower() for c in ENGINE_DEFAULT}
    assert not kept & {"cap_sys_admin", "cap_sys_module", "cap_sys_rawio", "cap_sys_ptrace"}
    assert "c 1:3 rwm" in ENGINE_DEVICES and not any(r.startswith("b") and "r" in r.split()[-1]
                                                      for r in ENGINE_DEVICES)
    # the engine's lists are runc's (`runc spec`), as the runtimes module writes them
    assert MASKED_PATHS == runtimes.MASKED_PATHS and READONLY_PATHS == runtimes.READONLY_PATHS
    assert HARDENED["seccomp"] is True and HARDENED["devices"] == ENGINE_DEVICES
    assert "cap_mknod" in ENGINE_DEFAULT and "cap_mknod" not in HARDENED["caps"]


@pytest.fixture
def leaked_fd():
    """An fd of the caller's that a careless exec would hand on (inheritable, not CLOEXEC)."""
    fd = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(fd, True)
    yield fd
    os.close(fd)


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
def test_engine_closes_what_07_opens(image, tmp_path, leaked_fd):
    with Container(["sleep", "60"], rootfs=image, memory="64M", pids=64, **HARDENED) as c:
        c.start()
        assert "c 1:3 rwm" in c.cgroup.device_control() or "eBPF" in c.cgroup.device_control()
        ok = c.exec(["sh", "-c", "echo hi > /dev/null && echo ok"])
        assert ok.stdout.strip() == "ok"
        # no CAP_MKNOD: no node for the disk (the default engine keeps it: made, open refused)
        r = c.exec(["sh", "-c", "mknod /tmp/disk b 7 0 && echo made"])
        assert r.stdout.strip() == "" and "Operation not permitted" in r.stderr
        # no CAP_SYS_ADMIN: no devtmpfs (the way round a missing CAP_MKNOD)
        r = c.exec(["sh", "-c", "mkdir -p /tmp/d && mount -t devtmpfs none /tmp/d && echo mounted"])
        assert "mounted" not in r.stdout and r.returncode != 0
        # masked: /proc/keys reads as /dev/null, /proc/acpi is an empty read-only tmpfs
        assert c.exec(["sh", "-c", "wc -c < /proc/keys"]).stdout.strip() == "0"
        assert c.exec(["ls", "-A", "/proc/acpi"]).stdout == ""
        assert "Read-only file system" in c.exec(["touch", "/proc/acpi/x"]).stderr
        mounts = c.exec(["cat", "/proc/mounts"]).stdout.splitlines()
        assert any(m.split()[1:3] == ["/proc/acpi", "tmpfs"] and m.split()[3].startswith("ro")
                   for m in mounts)
        assert any(m.split()[1] == "/proc/keys" for m in mounts)
        # read-only /proc/sys (and no CAP_SYS_ADMIN to mount a fresh procfs over it); the
        # file is of its own uts namespace: no harm if the test fails
        r = c.exec(["sh", "-c", "echo jap > /proc/sys/kernel/domainname"])
        assert "Read-only file system" in r.stderr
        r = c.exec(["sh", "-c", "mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo mounted"])
        assert "mounted" not in r.stdout
        # seccomp allowlist: no new user namespace (where the capabilities would come back)
        r = c.exec(["unshare", "--user", "id", "-u"])
        assert r.returncode != 0 and "Operation not permitted" in r.stderr
        # fds: only stdio reaches the program (ls's own listing fd aside)
        r = c.exec(["sh", "-c", "ls -l /proc/self/fd"])
        assert "/etc/hostname" not in r.stdout and "hostname" not in r.stdout
        pid1 = open(f"/proc/{c.pid}/cmdline").read()
        assert pid1.startswith("sleep")
        assert not any(os.readlink(f"/proc/{c.pid}/fd/{n}").endswith("/hostname")
                       for n in os.listdir(f"/proc/{c.pid}/fd"))


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
def test_default_engine_has_devices_and_closes_fds_and_without_close_fds_the_leak_is_real(
        image, leaked_fd):
    """Chapter 05's engine (no HARDENED): the device allow-list and closed fds are on; the
    control: the fd does reach the program when the engine does not close it."""
    leaks = lambda c: any(os.readlink(f"/proc/{c.pid}/fd/{n}").endswith("/hostname")  # noqa: E731
                          for n in os.listdir(f"/proc/{c.pid}/fd"))
    with Container(["sleep", "60"], rootfs=image, memory="64M", pids=64) as c:
        c.start()
        assert not leaks(c)
        r = c.exec(["sh", "-c", "mknod /tmp/disk b 7 0 && head -c 1 /tmp/disk"])
        assert "Operation not permitted" in r.stderr
        assert c.exec(["sh", "-c", "wc -c < /proc/timer_list"]).stdout.strip() != "0"  # not masked
    with Container(["sleep", "60"], rootfs=image, memory="64M", pids=64, close_fds=False) as c:
        c.start()
        assert leaks(c)


@pytest.mark.usefixtures("own_objects")
@pytest.mark.root
def test_engine_without_device_control_opens_a_made_node(image):
    """The control: with devices=None a node made with mknod(2) opens.  /dev/loop-control
    (c 10:237, loop(4)): not on the allow-list, and opening it changes nothing."""
    with Container(["sleep", "60"], rootfs=image, memory="64M", pids=64) as c:
        c.start()
        r = c.exec(["sh", "-c", "mknod /tmp/n c 10 237 && head -c 0 /tmp/n && echo opened"])
        assert "Operation not permitted" in r.stderr
    with Container(["sleep", "60"], rootfs=image, memory="64M", pids=64, devices=None) as c:
        c.start()
        r = c.exec(["sh", "-c", "mknod /tmp/n c 10 237 && head -c 0 /tmp/n && echo opened"])
        assert r.stdout.strip() == "opened", r.stderr


def test_bad_device_rule_is_refused_before_anything_is_made():
    with pytest.raises(BadInput, match="devices"):
        Container(["true"], devices=["c 1:3 everything"])
