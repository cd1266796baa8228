"""cgroups, deeper: swap bounded on v1 too, memory.oom.group (v2), pressure stall information.

The fake trees are test_cgroups.py's; the real runs use this machine's layout and
skip, saying why, what it lacks (memory.oom.group needs a v2 memory controller: the
course VM).
"""
import os
import signal
import sys

import pytest
from conftest import PY
from test_cgroups import fake_v1, fake_v2, registered  # noqa: F401 - fixtures

from justaprocess import cgroups, lab
from justaprocess.errors import BadInput, NotSupported

root = pytest.mark.root


# --- swap on v1: a hard limit must still OOM-kill on a host with swap --------------------

def test_v1_swap_zero_writes_memsw_equal_to_the_limit(fake_v1):
    fake_v1.put(os.path.join(fake_v1.root, "memory", "user.slice"), "memory.memsw.limit_in_bytes",
                "9223372036854771712\n")
    orig = fake_v1._files1

    def with_memsw(d):
        orig(d)
        if "/memory/" in d + "/":
            fake_v1.put(d, "memory.memsw.limit_in_bytes", "9223372036854771712\n")
    fake_v1._files1 = with_memsw
    with fake_v1.cgroup(memory="64M", swap=0) as cg:
        mem = cg.places["memory"].path
        assert fake_v1.get(mem, "memory.memsw.limit_in_bytes").strip() == str(64 << 20)
        assert [os.path.basename(p) for p, _ in cg.written] == ["memory.limit_in_bytes",
                                                                 "memory.memsw.limit_in_bytes"]


def test_v1_without_swap_accounting_swap_zero_is_swappiness_zero(fake_v1):
    orig = fake_v1._files1

    def with_swappiness(d):
        orig(d)
        if "/memory/" in d + "/":
            fake_v1.put(d, "memory.swappiness", "60\n")
    fake_v1._files1 = with_swappiness
    with fake_v1.cgroup(memory="64M", swap=0) as cg:
        assert fake_v1.get(cg.places["memory"].path, "memory.swappiness").strip() == "0"


def test_v1_without_swap_accounting_refuses_some_swap_when_swap_is_on(fake_v1, monkeypatch):
    monkeypatch.setattr(cgroups.group, "_swap_active", lambda: True)
    cg = fake_v1.cgroup(memory="64M", swap="32M")
    with pytest.raises(NotSupported, match="swapaccount=0"):
        cg.create()
    assert not cg.created and registered() == set()


@root
def test_real_swap_zero_bounds_swap_in_this_machines_memory_controller(own_objects):
    with cgroups.Cgroup(memory="64M", swap=0) as cg:
        names = {os.path.basename(p): v for p, v in cg.written}
        r = cg.run([PY, "-c", "b = bytearray(256 << 20)"], timeout=20)
    if cg.version == 2:
        assert names.get("memory.swap.max", "0") == "0"
    else:
        assert names.get("memory.memsw.limit_in_bytes", str(64 << 20)) == str(64 << 20)
        assert "memory.memsw.limit_in_bytes" in names or names.get("memory.swappiness") == "0"
    assert r.returncode == -signal.SIGKILL


# --- memory.oom.group -----------------------------------------------------------------

def test_oom_group_is_a_bool():
    with pytest.raises(BadInput, match="oom_group"):
        cgroups.Cgroup(oom_group="yes")


def test_v2_oom_group_written_and_counted(fake_v2, monkeypatch):
    monkeypatch.setitem(sys.modules["test_cgroups"].FILES["memory"], "memory.oom.group", "0\n")
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    cg = fake_v2.cgroup(memory="64M", oom_group=True).create()
    assert fake_v2.get(cg.path, "memory.oom.group").strip() == "1"
    fake_v2.put(cg.path, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 3\noom_group_kill 1\n")
    s = cg.stats()
    assert (s.oom_kills, s.oom_group_kills) == (3, 1)
    cg.update(oom_group=False)
    assert fake_v2.get(cg.path, "memory.oom.group").strip() == "0"
    cg.remove()


def test_v1_refuses_oom_group_saying_why(fake_v1):
    cg = fake_v1.cgroup(memory="64M", oom_group=True)
    with pytest.raises(NotSupported, match="only in cgroup v2.*oom_score"):
        cg.create()
    assert not cg.created and registered() == set()


FAMILY = """
import os, signal, time
sib = os.fork()
if sib == 0:
    time.sleep(20); os._exit(0)
hog = os.fork()
if hog == 0:
    b = bytearray(256 << 20); os._exit(0)
_, st = os.waitpid(hog, 0)
print(signal.Signals(os.WTERMSIG(st)).name, os.waitpid(sib, os.WNOHANG) == (0, 0), flush=True)
os.kill(sib, signal.SIGKILL)
"""


@root
def test_real_oom_group_kills_the_whole_cgroup(own_objects):
    try:
        cg = cgroups.Cgroup(memory="64M", swap=0, oom_group=True).create()
    except NotSupported as exc:
        pytest.skip(f"this machine: {exc}")
    try:
        r = cg.run([PY, "-c", FAMILY], timeout=30)
        s = cg.stats()
    finally:
        cg.remove()
    assert r.returncode == -signal.SIGKILL and r.stdout == ""   # the parent died with the hog
    # 3 processes, each killed; the kernel may count the first victim twice (it is killed
    # again by the group sweep when its mm is not yet gone: mm/oom_kill.c), so >= 3.
    assert s.oom_kills >= 3 and s.oom_group_kills == 1 and not s.populated


@root
def test_real_without_oom_group_only_the_biggest_dies(own_objects):
    with cgroups.Cgroup(memory="64M", swap=0) as alone:       # v1 and v2: one victim
        r = alone.run([PY, "-c", FAMILY], timeout=30)
        assert r.returncode == 0 and r.stdout.split() == ["SIGKILL", "True"]
        assert alone.stats().oom_kills == 1


# --- PSI ----------------------------------------------------------------------------------

def test_parse_pressure_lines():
    p = cgroups.parse_pressure("some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\n"
                               "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    assert p["some"] == cgroups.Pressure(1.5, 0.2, 0.0, 1234) and p["full"].total_usec == 7


def test_no_psi_is_said(tmp_path):
    (tmp_path / "pressure").mkdir()
    with pytest.raises(NotSupported, match="CONFIG_PSI.*psi=0"):
        cgroups.read_pressure(str(tmp_path / "pressure"))


def test_pressure_of_a_v2_directory(tmp_path):
    (tmp_path / "cpu.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=99\n"
                                           "full avg10=0.00 avg60=0.00 avg300=0.00 total=9\n")
    assert cgroups.read_pressure(str(tmp_path)) == {
        "cpu": {"some": cgroups.Pressure(0.0, 0.0, 0.0, 99), "full": cgroups.Pressure(0.0, 0.0, 0.0, 9)}}


def test_pure_v1_cgroup_has_no_pressure_files(fake_v1):
    with fake_v1.cgroup(memory="64M") as cg:
        with pytest.raises(NotSupported, match="only in cgroup v2.*/proc/pressure"):
            cg.pressure()


BUSY = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass"


@root
def test_real_cpu_quota_is_seen_as_cpu_pressure(own_objects):
    try:
        cgroups.read_pressure()
    except NotSupported as exc:
        pytest.skip(f"this kernel: {exc}")
    with cgroups.Cgroup(cpu=0.1) as cg:
        before = cg.pressure()["cpu"]["some"].total_usec
        cg.run([PY, "-c", BUSY], timeout=30)
        after = cg.pressure()
        used = cg.stats().cpu_usage_usec
    # 1 s of wanting the CPU, 0.1 of it granted: the rest was waiting, and PSI counted it
    # (throttled tasks stay runnable: Documentation/accounting/psi.rst "some").
    stalled = after["cpu"]["some"].total_usec - before
    assert stalled > 2 * used and stalled > 300_000
    assert set(after) == {"cpu", "memory", "io"}


# --- nested cgroups: memory.min protects from a sibling's pressure ---------------------------

def test_v2_nested_cgroup_gets_the_parents_controllers(fake_v2, monkeypatch):
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    box = fake_v2.cgroup(memory="32M").create()
    kept = fake_v2.cgroup(memory_min="24M", parent=box).create()
    assert kept.path == os.path.join(box.path, kept.name)
    assert "memory" in fake_v2.get(box.path, "cgroup.subtree_control").split()
    assert fake_v2.get(kept.path, "memory.min").strip() == str(24 << 20)
    kept.remove()
    box.remove()
    assert registered() == set()


def test_parent_must_be_a_cgroup():
    with pytest.raises(BadInput, match="parent"):
        cgroups.Cgroup(parent="/sys/fs/cgroup/jap-lab")


@root
def test_real_nested_cgroup_lives_and_goes_with_its_parent(own_objects):
    box = cgroups.Cgroup(memory="64M", swap=0).create()
    kid = cgroups.Cgroup(parent=box).create()
    assert all(os.path.dirname(p) in box.paths for p in kid.paths)
    r = kid.run(["cat", "/proc/self/cgroup"])
    assert all(line.endswith(f"{box.name}/{kid.name}") for line in r.stdout.splitlines()
               if ":memory:" in line or line.startswith("0::"))
    box.remove()                                         # descendants first, then the parent
    assert not any(os.path.exists(p) for p in kid.paths + box.paths)
    kid.remove()                                         # already gone: only forgotten
    assert not set(kid.paths) & registered()


@root
def test_real_memory_min_keeps_a_siblings_page_cache(own_objects):
    # The parent at its memory.max reclaims from its children; memory.min exempts one
    # (cgroup-v2.rst "memory.min"). Page cache, not anonymous memory: without swap
    # only the cache can be reclaimed at all.
    try:
        probe = cgroups.Cgroup(memory_min="1M").create()
        probe.remove()
    except NotSupported as exc:
        pytest.skip(f"this machine: {exc}")
    files = os.path.join(lab.run_dir(), lab.name("cache"))   # on disk: /tmp may be a tmpfs
    lab.register("dir", files)
    os.makedirs(files)
    with cgroups.Cgroup(memory="32M", swap=0) as box, \
            cgroups.Cgroup(parent=box, memory_min="24M") as kept, cgroups.Cgroup(parent=box) as other:
        # timeout: writeback under a 32M limit is slow under emulation (the v2 VM in CI)
        kept.run(["dd", "if=/dev/zero", f"of={files}/kept", "bs=1M", "count=16", "conv=fsync"], timeout=120)
        before = kept.stats().memory_current
        r = other.run(["dd", "if=/dev/zero", f"of={files}/other", "bs=1M", "count=64", "conv=fsync"],
                      timeout=120)
        after = kept.stats().memory_current
        assert r.returncode == 0 and box.stats().memory_peak <= 32 << 20
    assert before >= 15 << 20 and after >= before * 0.9
