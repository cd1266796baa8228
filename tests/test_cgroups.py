"""justaprocess.cgroups: the hybrid of this machine for real, pure v2 against a fake tree.

The fake v2 tree (``fake_v2`` below) mirrors the files of a systemd VM's
/sys/fs/cgroup and plays the kernel's rules that matter for the lab: a new
cgroup gets the interface files of the controllers its parent enabled, and
``cgroup.subtree_control`` / ``cgroup.procs`` enforce the no-internal-processes
rule (cgroup-v2.rst) with EBUSY.  The real v2 run is the VM test's job.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import textwrap

import pytest
from conftest import IS_ROOT, PY, cli, wait_for

from justaprocess import _registry, cgroups, lab
from justaprocess.errors import BadInput, NeedsPrivilege, NoSuchProcess, NotSupported


def registered() -> set[str]:
    return {e.name for e in lab.entries() if e.kind == "cgroup"}


# --- units: pure functions ------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("64M", 64 << 20), ("64m", 64 << 20), ("64MiB", 64 << 20), ("1.5G", 3 << 29),
    ("512k", 512 << 10), ("4096", 4096), (4096, 4096), ("max", None), (None, None)])
def test_sizes_in_human_units(text, value):
    assert cgroups.parse_size(text) == value


@pytest.mark.parametrize("bad", ["64Q", "-1M", "sixty", "", -5, True, "64 M B x"])
def test_bad_sizes_say_what_to_write(bad):
    with pytest.raises(BadInput, match="64M|size"):
        cgroups.parse_size(bad)


@pytest.mark.parametrize("bad", [-0.2, 0, "lots", True, 10_000])
def test_bad_cpu_fractions(bad):
    with pytest.raises(BadInput, match="cores|cpu"):
        cgroups.parse_cpu(bad)


def test_limits_are_checked_before_anything_exists():
    with pytest.raises(BadInput, match="pids"):
        cgroups.Cgroup(pids=-3)
    with pytest.raises(BadInput, match="devices"):
        cgroups.Cgroup(devices=["c 1:3 everything"])
    with pytest.raises(BadInput, match="not a block device"):
        cgroups.Cgroup(io={"/dev/null": {"read": "1M"}})
    with pytest.raises(BadInput, match="too small"):
        cgroups.Cgroup(memory="10k")
    with pytest.raises(BadInput, match="jap"):
        cgroups.Cgroup(name="../../system.slice")
    assert cgroups.Cgroup(memory="64M").created is False


def test_human_sizes():
    assert cgroups.human(64 << 20) == "64.0M" and cgroups.human(None) == "max"


# --- the fake v2 kernel ------------------------------------------------------------------

ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
FILES = {  # what a v2 cgroup directory holds, per controller (cgroup-v2.rst)
    None: {"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0\n",
           "cgroup.kill": "", "cgroup.subtree_control": "", "cgroup.type": "domain\n",
           "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"},
    "memory": {"memory.current": "0\n", "memory.peak": "0\n", "memory.max": "max\n",
               "memory.high": "max\n", "memory.low": "0\n", "memory.min": "0\n", "memory.swap.max": "max\n",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"},
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\n"
                        "nr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n", "pids.events": "max 0\n"},
    "io": {"io.max": "", "io.stat": "", "io.weight": "default 100\n"},
}


class FakeV2:
    """A tmp_path tree shaped like a systemd VM's cgroup2 mount, with the kernel's rules."""

    def __init__(self, tmp_path, own="/system.slice/jupyter.service/server"):
        self.root = str(tmp_path / "cgroup")
        self.mounts = str(tmp_path / "mounts")
        self.procfs = str(tmp_path / "proc")
        with open(self.mounts, "w") as f:
            f.write(f"sysfs /sys sysfs rw 0 0\ncgroup2 {self.root} cgroup2 rw,nosuid,nodev 0 0\n")
        os.makedirs(self.root)
        self._files(self.root, ROOT_CONTROLLERS.split())
        self.put(self.root, "cgroup.subtree_control", "cpu io memory pids\n")  # as systemd leaves it
        self.own = own
        cur = self.root
        parts = [p for p in own.strip("/").split("/") if p]
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            self.mkdir(cur)
            if part.endswith(".slice"):  # systemd enables controllers down to the units
                self.put(cur, "cgroup.subtree_control", "cpu io memory pids\n")
        self.put(cur, "cgroup.procs", f"{os.getpid()}\n")  # the lab's process sits in its leaf
        os.makedirs(os.path.join(self.procfs, "self"))
        self.put(os.path.join(self.procfs, "self"), "cgroup", f"0::{own}\n")
        self.added: list[tuple[str, str]] = []

    def put(self, d, name, text):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)

    def get(self, d, name):
        with open(os.path.join(d, name)) as f:
            return f.read()

    def _files(self, d, ctrls):
        for c in (None, *ctrls):
            for n, t in FILES.get(c, {}).items():
                self.put(d, n, t)
        self.put(d, "cgroup.controllers", " ".join(ctrls) + "\n")

    # The kernel's side of mkdir/rmdir/write, swapped into cgroups by the fixture.
    def mkdir(self, path):
        os.mkdir(path)
        parent = os.path.dirname(path)
        self._files(path, self.get(parent, "cgroup.subtree_control").split())

    def rmdir(self, path):
        if any(os.path.isdir(os.path.join(path, n)) for n in os.listdir(path)):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        if self.get(path, "cgroup.procs").strip():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def write(self, path, value):
        d, name = os.path.split(path)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if name == "cgroup.subtree_control":
            on = self.get(d, "cgroup.subtree_control").split()
            have = self.get(d, "cgroup.controllers").split()
            for tok in value.split():
                c = tok[1:]
                if c not in have:
                    raise OSError(errno.ENOENT, "No such file or directory", path)
                if d != self.root and self.get(d, "cgroup.procs").strip():
                    raise OSError(errno.EBUSY, "Device or resource busy", path)  # no internal processes
                on = [x for x in on if x != c] + ([c] if tok[0] == "+" else [])
            self.put(d, name, " ".join(on) + "\n")
        elif name == "cgroup.procs":
            if d != self.root and self.get(d, "cgroup.subtree_control").strip():
                raise OSError(errno.EBUSY, "Device or resource busy", path)
            self.added.append((d, value))
            self.put(d, name, self.get(d, name) + value + "\n")
        elif name == "io.max":
            self.put(d, name, self.get(d, name) + value + "\n")
        else:
            self.put(d, name, value + "\n")

    def cgroup(self, **kw):
        return cgroups.Cgroup(root=self.root, mounts=self.mounts, procfs=self.procfs, **kw)


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path / "state"))  # a registry of its own
    monkeypatch.delenv("JAP_CGROUP_BASE", raising=False)
    fake = FakeV2(tmp_path)
    monkeypatch.setattr(cgroups.files, "_mkdir", fake.mkdir)
    monkeypatch.setattr(cgroups.files, "_rmdir", fake.rmdir)
    monkeypatch.setattr(cgroups.files, "_write", fake.write)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return fake


def _delegate(fake, path):
    try:
        os.setxattr(path, "trusted.delegate", b"1")
    except OSError:
        try:
            os.setxattr(path, "user.delegate", b"1")
        except OSError as exc:
            pytest.skip(f"this filesystem takes no xattrs ({exc}): cannot fake systemd's mark")


def test_fake_tree_is_detected_as_pure_v2(fake_v2):
    assert cgroups.layout(fake_v2.root, fake_v2.mounts) == cgroups.V2
    [h] = cgroups.hierarchies(fake_v2.root, fake_v2.mounts)
    assert h.version == 2 and "memory" in h.controllers


def test_v2_refuses_to_climb_out_of_an_undelegated_cgroup(fake_v2):
    cg = fake_v2.cgroup(memory="64M")
    with pytest.raises(NotSupported, match="no internal processes"):
        cg.create()
    assert not cg.created and registered() == set()
    assert not os.path.exists(os.path.join(fake_v2.root, "system.slice", cgroups.LAB_PARENT))


def test_v2_lab_parent_beside_the_server_leaf_in_a_delegated_unit(fake_v2):
    unit = os.path.join(fake_v2.root, "system.slice/jupyter.service")
    _delegate(fake_v2, unit)
    cg = fake_v2.cgroup(memory="64M", memory_high="32M", memory_low="16M", memory_min="8M",
                        swap=0, cpu=0.2, pids=20).create()
    parent = os.path.join(unit, cgroups.LAB_PARENT)
    assert cg.path == os.path.join(parent, cg.name) and cg.paths == [cg.path]
    # Controllers handed down: unit -> lab parent -> the cgroup gets the files.
    assert set(fake_v2.get(unit, "cgroup.subtree_control").split()) >= {"memory", "cpu", "pids", "io"}
    assert set(fake_v2.get(parent, "cgroup.subtree_control").split()) >= {"memory", "cpu", "pids", "io"}
    assert fake_v2.get(cg.path, "memory.max").strip() == str(64 << 20)
    assert fake_v2.get(cg.path, "memory.high").strip() == str(32 << 20)
    # the soft limit (Docker's --memory-reservation, runc's MemoryReservation) is memory.low
    assert fake_v2.get(cg.path, "memory.low").strip() == str(16 << 20)
    assert fake_v2.get(cg.path, "memory.min").strip() == str(8 << 20)
    assert fake_v2.get(cg.path, "memory.swap.max").strip() == "0"
    assert fake_v2.get(cg.path, "cpu.max").strip() == "20000 100000"
    assert fake_v2.get(cg.path, "pids.max").strip() == "20"
    assert registered() == {parent, cg.path}
    s = cg.stats()
    assert (s.memory_max, s.memory_high, s.cpu_quota, s.pids_max) == (64 << 20, 32 << 20, 0.2, 20)
    assert (s.memory_low, s.memory_min) == (16 << 20, 8 << 20)
    assert s.populated is False and s.oom_kills == 0 and s.cpu_throttled == 0
    cg.remove()
    assert not os.path.exists(parent) and not cg.created and registered() == set()


def test_v2_stats_read_the_v2_files(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    cg = fake_v2.cgroup().create()
    fake_v2.put(cg.path, "memory.current", "1048576\n")
    fake_v2.put(cg.path, "memory.peak", "67108864\n")
    fake_v2.put(cg.path, "memory.events", "low 0\nhigh 7\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    fake_v2.put(cg.path, "cpu.stat", "usage_usec 420000\nuser_usec 1\nsystem_usec 1\nnr_periods 20\n"
                                     "nr_throttled 19\nthrottled_usec 1500000\n")
    fake_v2.put(cg.path, "pids.events", "max 12\n")
    fake_v2.put(cg.path, "io.stat", "7:3 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                                    "8:0 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    fake_v2.put(cg.path, "cgroup.events", "populated 1\nfrozen 1\n")
    s = cg.stats()
    assert (s.memory_current, s.memory_peak, s.oom_kills, s.memory_high_events, s.memory_max_events) \
        == (1 << 20, 64 << 20, 1, 7, 3)
    assert (s.cpu_usage_usec, s.cpu_periods, s.cpu_throttled, s.cpu_throttled_usec) == (420000, 20, 19, 1500000)
    assert (s.pids_max_events, s.io_read_bytes, s.io_write_bytes) == (12, 4097, 8192)
    assert s.populated is True and s.frozen is True and cg.events() == {"populated": 1, "frozen": 1}
    fake_v2.put(cg.path, "cgroup.events", "populated 0\nfrozen 0\n")
    cg.remove()


def test_v2_processes_join_the_leaf_never_the_lab_parent(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    cg = fake_v2.cgroup(pids=5).create()
    cg.join_self()  # what a child does before exec
    assert fake_v2.added == [(cg.path, str(os.getpid()))]
    with pytest.raises(BadInput, match="never moves"):
        cg.add(os.getpid())
    fake_v2.put(cg.path, "cgroup.procs", "")
    cg.remove()


def test_v2_devices_are_an_ebpf_program_and_missing_controllers_are_named(fake_v2, monkeypatch):
    """On pure v2 Cgroup(devices=...) hands the rules to _bpfdev (no devices files there);
    the live program is tests/test_devices.py's."""
    from justaprocess import _bpfdev, lab
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    calls = []
    monkeypatch.setattr(_bpfdev, "install", lambda d, rules: calls.append((d, rules)) or 4242)
    cg = fake_v2.cgroup(devices=["c 1:3 rwm"]).create()
    assert calls == [(cg.path, ("c 1:3 rwm",))] and cg.device_filter[0] == 4242
    assert not os.path.exists(os.path.join(cg.path, "devices.allow"))
    assert ["device program 4242" in e.note for e in lab.entries() if e.name == cg.path] == [True]
    cg.update(devices=["c 1:5 r"])
    assert calls[-1] == (cg.path, ("c 1:5 r",))
    cg.remove()
    with pytest.raises(NotSupported, match="eBPF"):
        fake_v2.cgroup(devices=["c 1:3 rwm"], device_program=False).create()
    with pytest.raises(BadInput, match="device_program"):
        fake_v2.cgroup(devices=["c 1:3 rwm"], device_program="yes")
    # the engine's cgroup: one v2 directory, the allow-list as a program, no devices files
    from justaprocess.container import ENGINE_DEVICES, ContainerCgroup
    box = ContainerCgroup(lab.name(), memory="64M", devices=list(ENGINE_DEVICES), root=fake_v2.root,
                          mounts=fake_v2.mounts, procfs=fake_v2.procfs).create()
    assert box.paths == [box.path] and calls[-1] == (box.path, ENGINE_DEVICES)
    assert fake_v2.get(box.path, "memory.max").strip() == str(64 << 20)
    box.remove()
    fake_v2.put(fake_v2.root, "cgroup.controllers", "cpu memory pids\n")  # a kernel without io
    with pytest.raises(NotSupported, match="io"):
        fake_v2.cgroup(io={"7:3": {"read": "1M"}}).create()
    assert registered() == set()


def test_v2_io_limit_goes_to_io_max(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    cg = fake_v2.cgroup(io={"7:3": {"read": "1M", "write": "512K"}}).create()
    assert fake_v2.get(cg.path, "io.max").strip() == f"7:3 rbps={1 << 20} wbps={512 << 10}"
    cg.remove()


def test_v2_kernel_refusing_a_value_leaves_nothing(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    real = fake_v2.write

    def picky(path, value):
        if path.endswith("pids.max"):
            raise OSError(errno.EINVAL, "Invalid argument", path)
        real(path, value)
    monkeypatch.setattr(cgroups.files, "_write", picky)
    cg = fake_v2.cgroup(memory="64M", pids=5)
    with pytest.raises(BadInput, match="refused"):
        cg.create()
    assert registered() == set() and not cg.created
    assert not os.path.exists(os.path.join(fake_v2.root, "system.slice/jupyter.service", cgroups.LAB_PARENT))


def test_v2_lab_parent_in_the_root_cgroup_when_the_lab_runs_there(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("JAP_CGROUP_BASE", raising=False)
    fake = FakeV2(tmp_path, own="/")
    for name, fn in (("_mkdir", fake.mkdir), ("_rmdir", fake.rmdir), ("_write", fake.write)):
        monkeypatch.setattr(cgroups.files, name, fn)
    cg = fake.cgroup(cpu=0.5).create()
    assert cg.path == os.path.join(fake.root, cgroups.LAB_PARENT, cg.name)
    assert fake.get(cg.path, "cpu.max").strip() == "50000 100000"
    cg.remove()


def test_not_root_is_refused_before_anything_is_made(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NeedsPrivilege, match="root"):
        fake_v2.cgroup(memory="64M").create()
    assert registered() == set()


# --- the hybrid (or whatever this machine is), for real -----------------------------------

root = pytest.mark.root


def _files(cg, ctrl, name):
    with open(os.path.join(cg.places[ctrl].path, name)) as f:
        return f.read().strip()


@root
def test_real_cgroup_limits_are_in_the_kernel_files(own_objects):
    cg = cgroups.Cgroup(memory="64M", cpu=0.2, pids=20)
    assert cg.paths == []  # the constructor made nothing
    cg.create()
    try:
        mem = cgroups.controllers()["memory"]
        # Beneath the lab process's own cgroup, in the shared lab parent.
        assert cg.places["memory"].path == os.path.join(
            os.path.normpath(cgroups.lab_base(mem)), cgroups.LAB_PARENT, cg.name)
        assert set(cg.paths) <= registered()
        if cgroups.layout() == cgroups.V2:
            assert _files(cg, "memory", "memory.max") == str(64 << 20)
            assert _files(cg, "cpu", "cpu.max") == "20000 100000"
        else:
            assert _files(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)
            assert _files(cg, "cpu", "cpu.cfs_quota_us") == "20000"
        assert _files(cg, "pids", "pids.max") == "20"
        s = cg.stats()
        assert (s.memory_max, s.cpu_quota, s.pids_max, s.populated) == (64 << 20, 0.2, 20, False)
    finally:
        made = list(cg.paths)  # remove() empties cg.paths: keep what it made
        cg.remove()
    assert made and not any(os.path.exists(p) for p in made)
    assert cg.paths == [] and not set(made) & registered()


@root
def test_real_oom_kill_is_sigkill_and_counted(own_objects):
    with cgroups.Cgroup(memory="64M", swap=0 if cgroups.layout() == cgroups.V2 else None) as cg:
        r = cg.run([PY, "-c", "b = bytearray(256 << 20)"], timeout=20)
        s = cg.stats()
    assert r.returncode == -signal.SIGKILL
    assert s.oom_kills >= 1 and s.memory_peak <= 64 << 20


@root
def test_real_child_runs_inside_from_its_first_instruction(own_objects):
    with cgroups.Cgroup() as cg:
        r = cg.run(["cat", "/proc/self/cgroup"])
    assert r.returncode == 0
    assert all(cg.name in line for line in r.stdout.splitlines()
               if any(k in line for k in (":memory:", ":pids:", "0::")))


@root
def test_real_pids_max_stops_a_bounded_fork_bomb(own_objects):
    bomb = textwrap.dedent("""
        import os, time
        kids, refused = [], 0
        for _ in range(60):            # bounded: at most 60 forks, each child sleeps 1 s
            try:
                pid = os.fork()
            except BlockingIOError:    # EAGAIN: pids.max reached (pids controller docs)
                refused += 1
                continue
            if pid == 0:
                time.sleep(1); os._exit(0)
            kids.append(pid)
        print(len(kids), refused, flush=True)
        for pid in kids:               # reap them: no orphan left for PID 1
            os.waitpid(pid, 0)
    """)
    with cgroups.Cgroup(pids=10) as cg:
        r = cg.run([PY, "-c", bomb], timeout=20)
        s = cg.stats()
    made, refused = map(int, r.stdout.split())
    assert made == 9 and refused == 51  # 10 = the python parent + 9 children
    assert s.pids_max_events >= 51 and s.pids_current <= 10


@root
def test_real_cpu_quota_throttles(own_objects):
    # The kernel's own accounting, no clock of ours: two busy processes of 0.1 s
    # of CPU time each, granted 20 ms per 100 ms period together - throttled
    # even when other work leaves each only a share of a core - and never more
    # than the quota per period (sched-bwc.rst), plus slack: the quota it
    # started with and the per-CPU slices handed out ahead (5 ms each).
    # Unthrottled, the 0.2 s would fit in one or two periods and fail this.
    busy = ("import os, time\nkid = os.fork()\nwhile time.process_time() < 0.1: pass\n"
            "kid and os.waitpid(kid, 0)")
    with cgroups.Cgroup(cpu=0.2) as cg:
        r = cg.run([PY, "-c", busy])
        s = cg.stats()
    assert r.returncode == 0, r.stderr
    assert s.cpu_throttled > 0 and s.cpu_throttled_usec > 0
    assert s.cpu_usage_usec <= (s.cpu_periods + 2) * 20_000


@root
def test_real_update_writes_only_the_limits_named(own_objects):
    # runc update / docker update --cpus: a running cgroup gets a new quota; its other
    # limits stay as the kernel has them.
    with cgroups.Cgroup(memory="64M", cpu=0.5, pids=20) as cg:
        p = cg.spawn(["sleep", "30"])
        before = cg.stats()
        cg.update(cpu=0.02)
        s = cg.stats()
        assert cg.pids() == [p.pid]
        assert s.cpu_quota == pytest.approx(0.02) and before.cpu_quota == pytest.approx(0.5)
        assert (s.memory_max, s.pids_max) == (64 << 20, 20)
        assert cg.limits.cpu == pytest.approx(0.02) and cg.limits.pids_max == 20
        with pytest.raises(BadInput, match="cpu"):
            cg.update(cpu=-1)
        assert cg.stats().cpu_quota == pytest.approx(0.02)


@root
def test_real_freeze_kill_and_populated_events(own_objects):
    cg = cgroups.Cgroup().create()
    try:
        p = cg.spawn(["sleep", "30"])  # joined before exec: inside when spawn() returns
        assert cg.pids() == [p.pid] and cg.populated()
        cg.freeze()
        assert cg.stats().frozen is True
        assert p.popen.poll() is None
        cg.thaw()
        assert cg.stats().frozen is False
        cg.kill()
        assert p.popen.wait(3) == -signal.SIGKILL
        assert cg.wait_empty(2) and not cg.populated()
        p.stop()
    finally:
        cg.remove()


@root
def test_real_remove_kills_what_is_inside_and_is_safe_twice(own_objects):
    cg = cgroups.Cgroup().create()
    p = cg.spawn(["sleep", "30"])
    made = list(cg.paths)  # remove() empties cg.paths: keep what it made
    cg.remove()
    assert p.popen.wait(3) == -signal.SIGKILL
    cg.remove()
    assert made and not any(os.path.isdir(x) for x in made)
    p.stop()


@root
def test_real_bad_requests_leave_nothing(own_objects, monkeypatch):
    def mine():  # this process's entries: other runs may register cgroups meanwhile
        return {e.name for e in lab.entries() if e.owner == os.getpid()}
    before = mine()
    with pytest.raises(BadInput):
        cgroups.Cgroup(memory="64Q")
    cg = cgroups.Cgroup()
    with pytest.raises(BadInput, match="not created"):
        cg.add(1)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NeedsPrivilege):
        cgroups.Cgroup(memory="64M").create()
    monkeypatch.undo()
    assert mine() == before  # refused before anything was registered
    cg = cgroups.Cgroup().create()
    made = list(cg.paths)
    try:
        with pytest.raises(NoSuchProcess):
            cg.add(2 ** 22 + 1)
        with pytest.raises(BadInput, match="already"):
            cg.create()
        assert list(cg.paths) == made  # the second create() made nothing
    finally:
        cg.remove()
    assert made and not any(os.path.exists(p) for p in made) and not set(made) & mine()


@root
@pytest.mark.skipif(IS_ROOT and "devices" not in cgroups.controllers(), reason="no v1 devices controller")
def test_real_v1_device_allow_list(own_objects):
    with cgroups.Cgroup(devices=["c 1:3 rwm"]) as cg:  # /dev/null only
        ok = cg.run(["sh", "-c", "echo hi > /dev/null && echo ok"])
        denied = cg.run(["head", "-c1", "/dev/zero"])
    assert ok.stdout.strip() == "ok"
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr


@root
def test_cli_shows_a_process_cgroups(own_objects):
    with cgroups.Cgroup(pids=7) as cg:
        p = cg.spawn(["sleep", "10"])  # joined before exec: inside when spawn() returns
        r = cli("cgroup", str(p.pid), "--json")
        text = cli("cgroup", str(p.pid))
        p.stop()
    d = json.loads(r.stdout)
    assert d["stats"]["pids_max"] == 7 and cg.name in d["cgroups"]["pids"]["path"]
    assert "pids" in text.stdout and "max=7" in text.stdout
    gone = cli("cgroup", "999999999")
    assert gone.returncode == 2 and "no process" in gone.stderr


@root
def test_real_loop_device_io_limit_and_cleanup(own_objects):
    dev = cgroups.LoopDevice("16M").create()
    try:
        assert cgroups.loops_backed_by(dev.file) == [dev.path]
        assert dev.number.startswith("7:")
        with cgroups.Cgroup(io={dev.path: {"read": "2M"}}) as cg:
            # The limit is in the kernel's file for this device (how fast it reads: bench/).
            if cgroups.layout() == cgroups.V2:
                assert f"{dev.number} rbps={2 << 20}" in _files(cg, "io", "io.max")
            else:
                assert _files(cg, "blkio", "blkio.throttle.read_bps_device") == f"{dev.number} {2 << 20}"
            r = cg.run(["dd", f"if={dev.path}", "of=/dev/null", "bs=64k", "count=16", "iflag=direct"])
            s = cg.stats()
        assert r.returncode == 0, r.stderr
        assert s.io_read_bytes >= 1 << 20  # charged to this cgroup, on this device
    finally:
        dev.remove()
    assert cgroups.loops_backed_by(dev.file) == [] and not os.path.exists(dev.dir)


@root
def test_loop_device_dies_with_the_process_that_made_it(tmp_path):
    # autoclear: a killed kernel leaves no attached loop device behind.
    code = textwrap.dedent("""
        import os, sys, time
        from justaprocess import cgroups
        d = cgroups.LoopDevice("4M").create()
        print(d.file, flush=True)
        time.sleep(30)
    """)
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    backing = p.stdout.readline().strip()
    assert cgroups.loops_backed_by(backing)
    p.kill()
    p.wait()
    # Autoclear detaches it on the last close (loop(4)); no event to wait on.
    wait_for(lambda: cgroups.loops_backed_by(backing) == [], what="the loop device detached")
    lab.cleanup(stale=True)  # the folder of the dead process
    assert not os.path.exists(os.path.dirname(backing))


@root
def test_lost_registry_entries_are_found_as_strays_and_removed(own_objects):
    cg = cgroups.Cgroup().create()
    p = cg.spawn(["sleep", "30"])
    for e in cg._entries:  # as if the registry had been lost
        lab.unregister(e)
    strays = [e for e in lab._scan() if e.name in cg.paths]
    assert {e.name for e in strays} == set(cg.paths)
    for e in strays:
        lab.remove(e)
    assert not any(os.path.isdir(x) for x in cg.paths)
    assert p.popen.wait(3) == -signal.SIGKILL
    p.stop()


# --- pure v1 (old distributions), against a fake tree ----------------------------------------

V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712\n", "memory.soft_limit_in_bytes":
               "9223372036854771712\n", "memory.usage_in_bytes": "0\n", "memory.max_usage_in_bytes": "0\n",
               "memory.failcnt": "0\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "cpu": {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n", "pids.events": "max 0\n"},
    "blkio": {"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.io_service_bytes_recursive": "Total 0\n"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED\n"},
}


class FakeV1(FakeV2):
    """A v1 layout as older distributions mount it: cpu and cpuacct together, no cgroup2."""

    MOUNTS = {"memory": ("memory",), "cpu,cpuacct": ("cpu", "cpuacct"), "pids": ("pids",),
              "blkio": ("blkio",), "devices": ("devices",), "freezer": ("freezer",)}

    def __init__(self, tmp_path):
        self.root = str(tmp_path / "cgroup")
        self.mounts = str(tmp_path / "mounts")
        self.procfs = str(tmp_path / "proc")
        lines = [f"tmpfs {self.root} tmpfs rw,nosuid 0 0"]
        for d in self.MOUNTS:
            lines.append(f"cgroup {self.root}/{d} cgroup rw,nosuid,{d} 0 0")
            os.makedirs(f"{self.root}/{d}/user.slice")
            for p in (f"{self.root}/{d}", f"{self.root}/{d}/user.slice"):
                self._files1(p)
        lines.append(f"cgroup {self.root}/systemd cgroup rw,xattr,name=systemd 0 0")
        with open(self.mounts, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.makedirs(os.path.join(self.procfs, "self"))
        self.put(os.path.join(self.procfs, "self"), "cgroup", "".join(
            f"{i}:{d}:/user.slice\n" for i, d in enumerate(self.MOUNTS, 1)) + "7:name=systemd:/\n")
        self.added = []

    def _files1(self, d):
        top = d.split("/")[-1] if d.split("/")[-1] in self.MOUNTS else \
            next(m for m in self.MOUNTS if f"/{m}/" in d + "/")
        self.put(d, "cgroup.procs", "")
        self.put(d, "tasks", "")
        for c in self.MOUNTS[top]:
            for n, t in V1_FILES[c].items():
                self.put(d, n, t)

    def mkdir(self, path):
        os.mkdir(path)
        self._files1(path)

    def write(self, path, value):
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        d, name = os.path.split(path)
        if name == "cgroup.procs":
            self.added.append((d, value))
        self.put(d, name, value + "\n")


@pytest.fixture
def fake_v1(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path / "state"))
    fake = FakeV1(tmp_path)
    for name, fn in (("_mkdir", fake.mkdir), ("_rmdir", fake.rmdir), ("_write", fake.write)):
        monkeypatch.setattr(cgroups.files, name, fn)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return fake


def test_v1_refuses_the_v2_only_memory_files(fake_v1):
    # v1 has no memory.high (a throttle) nor memory.min; its soft limit is v2's memory.low
    for kw in (dict(memory_high="32M"), dict(memory_min="8M")):
        cg = fake_v1.cgroup(memory="64M", **kw)
        with pytest.raises(NotSupported, match="memory_low="):
            cg.create()
        assert not cg.created


def test_v1_layout_one_directory_per_hierarchy(fake_v1):
    assert cgroups.layout(fake_v1.root, fake_v1.mounts) == cgroups.V1
    cg = fake_v1.cgroup(memory="64M", memory_low="32M", cpu=0.25, pids=9,
                        devices=["c 1:3 rwm"]).create()
    want = {os.path.join(fake_v1.root, d, "user.slice", cgroups.LAB_PARENT, cg.name) for d in fake_v1.MOUNTS}
    assert set(cg.paths) == want and len(cg.paths) == 6          # cpu,cpuacct: one directory
    # Registered before they were made, the lab parents too, in one registry file.
    parents = {os.path.dirname(p) for p in want}
    assert registered() == want | parents
    assert len({e.file for e in lab.entries()}) == 1 and os.listdir(_registry.registry_dir()) == [cg._entries[0].file]
    assert cg.places["cpu"].path == cg.places["cpuacct"].path
    assert cgroups.CORE not in cg.places                          # no cgroup.events on pure v1
    assert fake_v1.get(cg.places["memory"].path, "memory.limit_in_bytes").strip() == str(64 << 20)
    assert fake_v1.get(cg.places["memory"].path, "memory.soft_limit_in_bytes").strip() == str(32 << 20)
    assert fake_v1.get(cg.places["cpu"].path, "cpu.cfs_quota_us").strip() == "25000"
    assert fake_v1.get(cg.places["devices"].path, "devices.allow").strip() == "c 1:3 rwm"
    assert ("devices.deny", "a") in [(os.path.basename(p), v) for p, v in cg.written]
    s = cg.stats()
    assert (s.memory_max, s.memory_low, s.cpu_quota, s.pids_max) == (64 << 20, 32 << 20, 0.25, 9)
    assert s.memory_high is None and s.memory_min is None     # no such files on v1
    assert s.populated is False and s.frozen is False
    fake_v1.put(cg.places["cpu"].path, "cpu.stat", "nr_periods 10\nnr_throttled 7\nthrottled_time 3000000\n")
    fake_v1.put(cg.places["cpuacct"].path, "cpuacct.usage", "420000000\n")
    fake_v1.put(cg.places["memory"].path, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    fake_v1.put(cg.places["blkio"].path, "blkio.throttle.io_service_bytes_recursive",
                "7:0 Read 4096\n7:0 Write 512\n7:0 Total 4608\nTotal 4608\n")
    s = cg.stats()
    assert (s.cpu_usage_usec, s.cpu_throttled, s.cpu_throttled_usec, s.oom_kills) == (420000, 7, 3000, 2)
    assert (s.io_read_bytes, s.io_write_bytes) == (4096, 512)
    cg.freeze(timeout=0.1)
    assert fake_v1.get(cg.places["freezer"].path, "freezer.state").strip() == "FROZEN"
    cg.join_self()
    assert {d for d, _ in fake_v1.added} == want
    for d in cg.paths:
        fake_v1.put(d, "cgroup.procs", "")
    cg.remove()
    assert not any(os.path.exists(p) for p in want) and registered() == set()
    assert not any(os.path.exists(os.path.dirname(p)) for p in want)  # the lab parents went too


def test_systemd_hybrid_unified_in_a_busy_session_cgroup(fake_v1):
    # A systemd hybrid: the unified (v2) mount carries no controller, and the lab's
    # process sits in a session scope that holds processes.  With nothing to hand
    # down, the lab parent may go beneath it (no internal-process rule to break).
    uni = os.path.join(fake_v1.root, "unified")
    scope = os.path.join(uni, "user.slice", "session-1.scope")
    os.makedirs(scope)
    for d in (uni, os.path.join(uni, "user.slice"), scope):
        fake_v1._files(d, [])
    fake_v1.put(scope, "cgroup.procs", f"{os.getpid()}\n")
    with open(fake_v1.mounts, "a") as f:
        f.write(f"cgroup2 {uni} cgroup2 rw,nosuid 0 0\n")
    with open(os.path.join(fake_v1.procfs, "self", "cgroup"), "a") as f:
        f.write("0::/user.slice/session-1.scope\n")
    assert cgroups.layout(fake_v1.root, fake_v1.mounts) == cgroups.HYBRID
    real_write = fake_v1.write

    def write(path, value):  # the v2 side needs the v2 rules
        if path.startswith(uni + "/"):
            return FakeV2.write(fake_v1, path, value)
        return real_write(path, value)
    fake_v1.write = write
    cgroups.files._write = write  # monkeypatched by the fixture, restored after the test
    fake_v1.mkdir = lambda p: FakeV2.mkdir(fake_v1, p) if p.startswith(uni + "/") else FakeV1.mkdir(fake_v1, p)
    cgroups.files._mkdir = fake_v1.mkdir
    cg = fake_v1.cgroup(pids=5).create()
    assert cg.places[cgroups.CORE].path == os.path.join(scope, cgroups.LAB_PARENT, cg.name)
    assert len(cg.paths) == 7
    for d in cg.paths:
        fake_v1.put(d, "cgroup.procs", "")
    cg.remove()
    assert registered() == set()


def test_v2_enter_leaf_turns_a_delegated_unit_into_a_lab_base(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("JAP_CGROUP_BASE", raising=False)
    fake = FakeV2(tmp_path, own="/system.slice/justaprocess-lab.service")  # processes in the unit
    for name, fn in (("_mkdir", fake.mkdir), ("_rmdir", fake.rmdir), ("_write", fake.write)):
        monkeypatch.setattr(cgroups.files, name, fn)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    unit = os.path.join(fake.root, "system.slice/justaprocess-lab.service")
    with pytest.raises(NotSupported, match="no internal processes"):
        fake.cgroup(memory="64M").create()
    with pytest.raises(NotSupported, match="Delegate=yes"):
        cgroups.enter_leaf(root=fake.root, mounts=fake.mounts, procfs=fake.procfs)
    _delegate(fake, unit)

    def move(path, value):  # the kernel moves the process: it leaves the unit's cgroup.procs
        fake.write(path, value)
        if path.endswith("server/cgroup.procs"):
            fake.put(unit, "cgroup.procs", "")
    monkeypatch.setattr(cgroups.files, "_write", move)
    leaf = cgroups.enter_leaf(root=fake.root, mounts=fake.mounts, procfs=fake.procfs)
    assert leaf == os.path.join(unit, "server") and fake.get(leaf, "cgroup.procs").split() == [str(os.getpid())]
    fake.put(os.path.join(fake.procfs, "self"), "cgroup", "0::/system.slice/justaprocess-lab.service/server\n")
    assert cgroups.enter_leaf(root=fake.root, mounts=fake.mounts, procfs=fake.procfs) is None  # done already
    cg = fake.cgroup(memory="64M").create()
    assert cg.path == os.path.join(unit, cgroups.LAB_PARENT, cg.name)
    cg.remove()


def test_enter_leaf_does_nothing_on_v1_and_the_hybrid():
    if cgroups.layout() != cgroups.V2:
        assert cgroups.enter_leaf() is None
    r = cli("cgroup")
    assert r.returncode == 2 and "give a PID" in r.stderr
