"""incidents: chapter 15's deck per learner, the new incidents live, hints that escalate,
the roster of attempts and time to diagnosis, instructor mode."""
import json

import pytest

from conftest import cli
from justaprocess import incidents, scenarios
from justaprocess.scenarios import Diagnosis

NEW = ("oom-loop", "cpu-throttled", "zombies", "volume-full", "no-route", "unmapped-owner")


@pytest.fixture(autouse=True)
def _own_roster(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "progress.jsonl"))


def test_every_learner_gets_the_whole_catalogue_in_an_order_of_their_own():
    names = {n for n, _, _ in scenarios.catalogue()}
    assert len(names) >= 8 and set(NEW) <= names
    a, b = incidents.deck("ana"), incidents.deck("ben")
    assert sorted(a) == sorted(b) == sorted(names)
    assert a != b and incidents.deck("ana") == a


def test_instructor_mode_reveals_every_cause():
    text = incidents.instructor("ana")
    for n in incidents.deck("ana"):
        assert n in text and scenarios.CATALOGUE[n].cause in text
    r = cli("incidents", "--instructor", "--learner", "ana")
    assert r.returncode == 0 and r.stdout == text + "\n"


@pytest.mark.root
@pytest.mark.parametrize("name", NEW)
def test_each_new_incident_is_live_and_judged_against_the_kernel(name, own_objects):
    with incidents.Incident(name, "tester") as inc:
        assert inc.symptom and inc.target.running()
        key = inc.answer()
        assert key.cause == scenarios.CATALOGUE[name].cause
        wrong = Diagnosis("no-tools", {})
        hints = [inc.scenario.verify(wrong).message for _ in range(3)]
        assert len(set(hints)) == 3            # three hints, each closer than the last
        assert inc.judge(key).ok
    assert inc.target is None


@pytest.mark.root
def test_the_evidence_is_read_live(own_objects):
    with incidents.Incident("cpu-throttled", "tester") as inc:
        quota = inc.answer().evidence["cores"]
        assert quota in (0.02, 0.03, 0.05)
        assert inc.judge(Diagnosis("cpu-limit", {"limit": "cpu", "cores": quota})).ok
        assert inc.judge(Diagnosis("cpu-limit", {"limit": "cpu", "cores": 0.5})).kind == "evidence-wrong"
    with incidents.Incident("oom-loop", "tester") as inc:
        stats = incidents._stats(inc.scenario)
        assert stats.oom_kills >= 1 and inc.answer().evidence["max"] == stats.memory_max


@pytest.mark.root
def test_attempts_and_time_to_diagnosis_go_to_the_roster(own_objects):
    with incidents.Incident("zombies", "rosa") as inc:
        inc.judge(Diagnosis("pids-limit", {}))
        inc.judge(Diagnosis("zombies", {"parent": 2}))
        inc.judge(inc.answer())
    lines = [json.loads(x) for x in open(incidents.roster_path())]
    assert [(x["learner"], x["incident"], x["attempt"], x["ok"]) for x in lines] == [
        ("rosa", "zombies", 1, False), ("rosa", "zombies", 2, False), ("rosa", "zombies", 3, True)]
    assert lines[1]["kind"] == "evidence-wrong" and lines[2]["seconds"] >= 0
    [row] = incidents.roster()
    assert row["attempts"] == 3 and row["solved"] and row["seconds"] == lines[2]["seconds"]
    assert "rosa" in cli("incidents", "--roster", env={**__import__("os").environ}).stdout


@pytest.mark.root
def test_a_session_walks_the_deck_and_removes_as_it_goes(own_objects):
    s = incidents.Session("ana", skip=("zombies",))
    first = s.next()
    assert first.name == [n for n in incidents.deck("ana") if n != "zombies"][0]
    second = s.next()
    assert first.target is None and second.target.running()
    s.remove()
    assert second.target is None


@pytest.mark.root
def test_an_attempt_the_roster_cannot_take_says_so(own_objects, tmp_path, monkeypatch):
    # The roster's folder is a file: the append fails, and the verdict says it and where.
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "blocked" / "progress.jsonl"))
    with incidents.Incident("zombies", "rosa") as inc:
        v = inc.judge(inc.answer())
    assert v.ok and "this attempt was not recorded: " + str(tmp_path / "blocked") in v.message


@pytest.mark.root
def test_unmapped_owner_is_root_inside_refused_by_the_kernel(own_objects):
    import os
    with incidents.Incident("unmapped-owner", "tester") as inc:
        path, owner = inc.scenario.params["path"], inc.scenario.params["owner"]
        pid = inc.target.pid
        uid_map = open(f"/proc/{pid}/uid_map").read().split()
        base, size = int(uid_map[1]), int(uid_map[2])
        assert not base <= owner < base + size                  # the owner is not mapped
        r = inc.target.exec(["sh", "-c", f"id -u; stat -c %u {path}/app.log; "
                                         f"echo x >> {path}/app.log; chown 0 {path}/app.log"])
        out = r.stdout.split()
        overflow = open("/proc/sys/kernel/overflowuid").read().strip()      # 65534
        assert out[:2] == ["0", overflow]                       # root inside; the files: nobody
        assert "Permission denied" in r.stderr and "Operation not permitted" in r.stderr
        assert os.stat(f"/proc/{pid}/root{path}/app.log").st_uid == owner   # the host's view
        assert inc.judge(Diagnosis("unmapped-owner", {"path": path, "owner": owner})).ok
        assert inc.judge(Diagnosis("unmapped-owner", {"path": path, "owner": 65534})).kind == "evidence-wrong"
