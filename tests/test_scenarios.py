"""Scenarios: each broken container really shows its symptom, verify() judges structured
diagnoses against the live kernel with escalating hints, and remove() leaves nothing."""
import os

import pytest

from justaprocess import cgroups, debug, lab, scenarios
from justaprocess.errors import BadInput
from justaprocess.scenarios import Diagnosis

pytestmark = pytest.mark.root


def _mine():
    return [e for e in lab.leftovers() if e.owner == os.getpid()]


def test_the_catalogue_has_the_six_of_chapters_08_to_10():
    names = {n for n, _, _ in scenarios.catalogue()}
    assert names >= {"distroless", "loopback-only", "tool-oom", "pids-exhausted",
                     "net-raw-dropped", "config-missing"}
    assert all(cause in scenarios.CAUSES for _, _, cause in scenarios.catalogue())
    with pytest.raises(BadInput, match="no scenario 'volcano'"):
        scenarios.get("volcano")


def test_distroless_has_no_shell_and_verify_escalates_hints():
    with scenarios.start("distroless") as s:
        assert "ENOENT" in s.reproduce()
        assert not os.path.lexists(f"/proc/{s.target.pid}/root/bin/sh")
        vs = [s.verify(Diagnosis("memory-limit", {})) for _ in range(4)]
        assert not any(v.ok for v in vs) and {v.kind for v in vs} == {"wrong-cause"}
        assert [v.level for v in vs] == [1, 2, 3, 3] and len({v.message for v in vs}) == 3
        assert s.judge(Diagnosis("memory-limit", {})).kind == "wrong-cause"  # judging counts nothing
        assert s.attempts == 4
        assert not s.verify(Diagnosis("no-tools", {"missing": "httpd"})).ok  # it *is* there
        assert s.verify(Diagnosis("no-tools", {"missing": "/bin/sh"})).ok
    assert not _mine()


@pytest.mark.parametrize("bad, says", [
    ("the memory", "scenarios.Diagnosis"),
    (Diagnosis("gremlins", {}), "unknown cause 'gremlins'"),
    (Diagnosis("loopback-only", ["127.0.0.1"]), "evidence is a dict"),
    (Diagnosis("loopback-only", {"port": 1}), "evidence['address']"),
    (..., "fill in"),
])
def test_verify_checks_type_and_shape_first(bad, says, request):
    s = request.getfixturevalue("loopback")
    v = s.verify(bad)
    assert not v.ok and says in v.message


@pytest.fixture(scope="module")
def loopback():
    s = scenarios.start("loopback-only", seed=1)
    yield s
    s.remove()


def test_loopback_only_is_refused_from_the_host_and_seen_inside(loopback):
    assert "refused" in loopback.reproduce()
    port = loopback.params["port"]
    assert not loopback.verify(Diagnosis("loopback-only", {"address": "127.0.0.1", "port": port + 1})).ok
    assert loopback.verify(Diagnosis("loopback-only", {"address": "127.0.0.1", "port": str(port)})).ok


def test_the_seed_varies_the_details():
    ports = {scenarios.get("loopback-only")._choose(__import__("random").Random(f"loopback-only:{i}"))["port"]
             for i in range(12)}
    assert len(ports) > 1


def test_tool_oom_kills_the_tool_and_counts_it_in_the_cgroup():
    with scenarios.start("tool-oom", seed=2) as s:
        before = cgroups.read_stats(cgroups.places_of(s.target.pid)).oom_kills
        said = s.reproduce()
        assert "Killed (SIGKILL)" in said
        assert cgroups.read_stats(cgroups.places_of(s.target.pid)).oom_kills >= before + 1  # a v1 memcg may kill twice
        assert s.target.running()  # the app survived; the tool did not
        assert s.verify(Diagnosis("memory-limit", {"limit": "memory", "max": s.params["memory"]})).ok
        assert s.verify(Diagnosis("memory-limit", {"limit": "Memory",
                                                   "max": f"{s.params['memory'] >> 20}M"})).ok
        assert not s.verify(Diagnosis("memory-limit", {"limit": "memory", "max": "1G"})).ok


def test_pids_exhausted_refuses_exec_with_eagain():
    with scenarios.start("pids-exhausted", seed=0) as s:
        st = cgroups.read_stats(cgroups.places_of(s.target.pid))
        assert st.pids_current == st.pids_max == s.params["pids"]
        said = s.reproduce()
        assert "Resource temporarily unavailable" in said or "EAGAIN" in said, said
        assert cgroups.read_stats(cgroups.places_of(s.target.pid)).pids_max_events > st.pids_max_events
        assert s.verify(Diagnosis("pids-limit", {"limit": "pids", "max": s.params["pids"]})).ok


def test_net_raw_dropped_ping_is_refused_as_root():
    with scenarios.start("net-raw-dropped") as s:
        assert "permission denied" in s.reproduce()
        with debug.target(s) as t:
            assert "cap_net_raw" not in t.caps.effective
        assert not s.verify(Diagnosis("capability-dropped", {"capability": "CAP_SYS_ADMIN"})).ok
        assert s.verify(Diagnosis("capability-dropped", {"capability": "net_raw"})).ok


def test_config_missing_logs_the_file_and_has_no_mount_there():
    before = {(e.kind, e.name) for e in _mine()}
    with scenarios.start("config-missing", seed=5) as s:
        d = s.params["dir"]
        assert f"cannot read {d}/" in s.reproduce()
        assert os.path.isdir(s.params["host_dir"])  # the volume's folder is there, unmounted
        assert d not in {m["target"] for m in debug.inspect(s, sockets=False).mounts}
        assert s.verify(Diagnosis("volume-missing", {"path": d + "/"})).ok
        host_dir = s.params["host_dir"]
    assert not os.path.exists(host_dir)
    assert {(e.kind, e.name) for e in _mine()} <= before


def test_a_scenario_not_started_says_so():
    s = scenarios.get("tool-oom")
    with pytest.raises(BadInput, match="not started"):
        s.verify(Diagnosis("memory-limit", {}))
    with pytest.raises(BadInput, match="seed is an int"):
        s.start(seed="x")
