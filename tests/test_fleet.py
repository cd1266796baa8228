"""fleet: containers on the lab bridge with planted faults, seen through their cgroup files,
their logs, a probe over the bridge and one command fanned out with bounded concurrency."""
import os

import pytest

from conftest import wait_for
from justaprocess import fleet, lab
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


def test_bad_input_is_refused_before_anything_runs():
    with pytest.raises(BadInput, match="fault"):
        fleet.Fleet(3, faults=["slow"])
    with pytest.raises(BadInput, match="size"):
        fleet.Fleet(100)
    with pytest.raises(BadInput, match="at least"):
        fleet.Fleet(2, faults=fleet.FAULTS)
    with pytest.raises(BadInput, match="prefix"):
        fleet.Fleet(3, prefix="Web 1")


def test_the_seed_places_the_faults():
    a, b = fleet.Fleet(20, seed=1), fleet.Fleet(20, seed=1)
    assert a._plan == b._plan and sorted(a._plan.values()) == sorted(fleet.FAULTS)
    assert any(fleet.Fleet(20, seed=s)._plan != a._plan for s in range(2, 6))


def test_pid_1_sets_itself_up_under_a_roomier_memory_limit_then_gets_its_own(monkeypatch, own_objects):
    # The launcher's Python child is a copy of the caller until its exec; the pages it copies
    # are charged to the cgroup (a member was OOM-killed before its exec on the v2 VM).
    from justaprocess import container
    seen, real = [], container.Container.start

    def start(self):
        seen.append(self.cgroup.stats().memory_max)    # the kernel's file, as PID 1 starts
        return real(self)

    monkeypatch.setattr(container.Container, "start", start)
    f = fleet.Fleet(4, seed=1).start()
    try:
        assert seen == [256 << 20] * 4
        assert [r.memory_max for r in f.stats()] == [24 << 20] * 4
    finally:
        f.remove()


@pytest.fixture(scope="module")
def small():
    if os.geteuid() != 0:
        pytest.skip("needs root: run `make test` as root in the lab VM")
    f = fleet.Fleet(5, seed=4).start()
    yield f
    f.remove()
    assert not [e for e in lab.entries() if e.owner == os.getpid() and "-web0" in e.name]


def test_faults_show_in_the_kernels_counters(small):
    thr, oom = small.faulty("throttled"), small.faulty("oom")
    # a busy loop under a 10 % quota: throttled in most periods
    row = wait_for(lambda: next((r for r in small.stats() if r.name == thr and r.cpu_throttled
                                 and r.cpu_throttled > 5), None),
                   what="the throttled container's nr_throttled")
    assert row.cpu_quota == pytest.approx(fleet.FAULT_LIMITS["throttled"]["cpu"])
    # a worker asking for 32M under 24M: OOM-killed, and its shell logs the 137
    wait_for(lambda: next(r for r in small.stats() if r.name == oom).oom_kills, what="an OOM kill")
    assert wait_for(lambda: small.grep("status 137"), what="the worker's exit in the logs")[0][0] == oom
    others = [r for r in small.stats() if r.name not in (thr, oom)]
    assert all(r.oom_kills == 0 and r.memory_max == 24 << 20 and r.pids_max == 16 for r in others)
    text = fleet.table(small.stats())
    assert text.splitlines()[0].split()[0] == "container" and len(text.splitlines()) == 6


def test_probe_finds_the_one_bound_to_loopback(small):
    reach = small.probe()
    assert [n for n, ok in reach.items() if not ok] == [small.faulty("unreachable")]
    # inside it, the server answers on its own loopback: the app is up, its address is wrong
    r = small.exec(small.faulty("unreachable"), ["wget", "-qO-", "http://127.0.0.1/"])
    assert r.returncode == 0 and "<h1>" in r.stdout


def test_fanout_runs_everywhere_with_bounded_concurrency(small):
    res = small.fanout(["sh", "-c", "hostname; cat /proc/1/cmdline | head -c 7"], concurrency=2)
    assert [r.name for r in res] == small.names
    assert all(r.returncode == 0 and r.stdout.split()[0] == r.name for r in res), \
        [r for r in res if r.returncode != 0]
    assert all("/bin/sh" in r.stdout for r in res)          # PID 1 inside is the container's
    assert 1 <= res.max_in_flight <= 2
    with pytest.raises(BadInput, match="concurrency"):
        small.fanout(["true"], concurrency=50)


def test_the_table_widget_renders_the_rows(small):
    t = fleet.FleetTable(small, highlight=True)
    rows = t.follow(0)
    assert [r.name for r in rows] == small.names
    assert t.view.value.count("<tr>") == 6
