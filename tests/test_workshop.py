"""The instructor's kit (justaprocess.workshop): the seat list, the roster, login cards,
the readiness run - against this machine as the seat `local` (SSH itself is not run here)."""
import json
import os
import stat
import subprocess
import sys
import types

import pytest

from justaprocess import workshop
from justaprocess.errors import BadInput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "justaprocess", *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, **(env or {})), timeout=120)


def test_the_seat_list(tmp_path):
    f = tmp_path / "seats.txt"
    f.write_text("# the workshop\n10.0.0.5 alice\n\nseat-2.example.org   # a name is optional\nlocal host\n")
    assert workshop.read_seats(str(f)) == [("10.0.0.5", "alice"), ("seat-2.example.org", "seat-2.example.org"),
                                           ("local", "host")]
    f.write_text("a b c\n")
    with pytest.raises(BadInput, match="one seat a line, ADDRESS"):
        workshop.read_seats(str(f))
    f.write_text("# nobody\n")
    with pytest.raises(BadInput, match="lists no seat"):
        workshop.read_seats(str(f))
    r = cli("roster", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "cannot read the seat list" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.root
def test_roster_reads_a_seats_real_progress(tmp_path):
    progress = tmp_path / "progress.jsonl"
    attempts = [{"time": "2026-11-29T10:00:00Z", "chapter": "03", "exercise": 1, "ok": False},
                {"time": "2026-11-29T10:05:00Z", "chapter": "03", "exercise": 1, "ok": True},
                {"time": "2026-11-29T10:09:00Z", "chapter": "04", "exercise": 2, "ok": False}]
    progress.write_text("".join(json.dumps(a) + "\n" for a in attempts))
    (tmp_path / "seats.txt").write_text("local host\n")
    # the seat runs its own `python -m justaprocess progress --json` (here: this checkout's)
    r = cli("roster", str(tmp_path / "seats.txt"), "--json", env={"JAP_PROGRESS": str(progress)})
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["seat"] == "host" and row["chapter"] == "04" and row["solved"] == 1
    assert row["exercises"] >= 3 and row["last"] == "2026-11-29T10:09:00Z" and not row["problem"]
    table = cli("roster", str(tmp_path / "seats.txt"), env={"JAP_PROGRESS": str(progress)}).stdout
    assert "host" in table and f"1/{row['exercises']}" in table


def test_a_seat_that_does_not_answer_is_a_row_that_says_why():
    seat = workshop.Seat("203.0.113.9", "seat-9")
    row = workshop.roster_row(workshop.Answer(seat, 255, "", "ssh: connect to host 203.0.113.9 port 22: timed out"))
    assert row.problem.endswith("timed out")
    assert "no answer: ssh: connect" in workshop.roster_table([row])
    row = workshop.roster_row(workshop.Answer(seat, 0, "not json", ""))
    assert row.problem == "progress --json printed no JSON"


@pytest.mark.root
def test_login_cards_carry_the_seats_token_and_are_private(tmp_path):
    # where tools/start-lab.sh keeps it, as the seat's shell resolves it (JAP_STATE_DIR too)
    token_file = os.path.join(os.environ.get("JAP_STATE_DIR") or os.path.dirname(workshop.TOKEN_FILE),
                              os.path.basename(workshop.TOKEN_FILE))
    if not os.path.exists(token_file):
        pytest.skip("no lab token on this machine yet (make lab makes it)")
    (tmp_path / "seats.txt").write_text("local host\n")
    out = tmp_path / "cards.html"
    r = cli("cards", str(tmp_path / "seats.txt"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    page = out.read_text()
    token = open(token_file).read().strip()
    assert f"/lab?token={token}" in page and "seat host" in page and "port 8888" in page


def test_cards_say_which_seats_are_not_ready():
    seat = workshop.Seat("198.51.100.7", "bob")
    page = workshop.card_html([(seat, None, "ssh: no route")])
    assert "not ready:</b> ssh: no route" in page and "token=" not in page
    page = workshop.card_html([(seat, "ab12", "")])
    assert "ssh -N -L 8888:127.0.0.1:8888 jap@198.51.100.7" in page and "/lab?token=ab12" in page


@pytest.mark.root
def test_ready_runs_each_seats_make_test_and_summarises(tmp_path):
    (tmp_path / "Makefile").write_text("test:\n\t@echo '3 passed in 0.10s'\n")
    seats = [workshop.Seat("local", "host")]
    assert workshop.ready(seats, repo=str(tmp_path)) == [(seats[0], True, "3 passed in 0.10s", ())]
    (tmp_path / "Makefile").write_text("test:\n\t@echo 'FAILED tests/test_x.py::test_y - assert 1 == 2'; "
                                       "echo '1 failed, 2 passed in 0.10s'; exit 1\n")
    (seat, ok, last, failed), = workshop.ready(seats, repo=str(tmp_path))
    assert not ok and last == "1 failed, 2 passed in 0.10s"
    assert failed == ("FAILED tests/test_x.py::test_y - assert 1 == 2",)   # which test, for the instructor


@pytest.mark.root
def test_ready_tests_runs_only_those_in_the_seats_make_test(tmp_path, monkeypatch):
    """--tests / --quick: pytest's arguments reach the seat's own `make test` (PYTEST_ADDOPTS)."""
    (tmp_path / "Makefile").write_text('test:\n\t@echo "pytest got: $$PYTEST_ADDOPTS"\n')
    seats = [workshop.Seat("local", "host")]
    monkeypatch.setenv("PYTEST_ADDOPTS", "--nbval-cell-timeout=600")   # the seat's own: kept, first
    (seat, ok, last, _), = workshop.ready(seats, repo=str(tmp_path), tests=["tests/test_x.py"])
    assert ok and last == "pytest got: --nbval-cell-timeout=600 tests/test_x.py"
    monkeypatch.delenv("PYTEST_ADDOPTS")
    (seat, ok, last, _), = workshop.ready(seats, repo=str(tmp_path), tests=["tests/test_x.py::test_y", "notebooks/00 a.ipynb"])
    assert ok and last == "pytest got: tests/test_x.py::test_y 'notebooks/00 a.ipynb'"
    (seat, ok, last, _), = workshop.ready(seats, repo=str(tmp_path))
    assert ok and last == "pytest got:"     # no --tests: the whole suite, as `make test`
    for bad in ("--collect-only", "/etc/passwd", ""):
        with pytest.raises(BadInput, match="a test path or node id"):
            workshop.ready(seats, repo=str(tmp_path), tests=[bad])


def test_ready_runs_the_seat_local_after_the_others(monkeypatch):
    """An ssh to another seat is a lab process here while it runs: `local`'s leftovers check
    would count it, so `local` goes last, alone; the answers keep the list's order."""
    seats = [workshop.Seat("local", "host"), workshop.Seat("10.0.0.5", "a"), workshop.Seat("10.0.0.6", "b")]
    assert workshop.rounds(seats) == ([1, 2], [0])
    rounds = []
    def fake(group, command, **kw):
        rounds.append([s.name for s in group])
        return [workshop.Answer(s, 0, f"1 passed on {s.name}\n", "") for s in group]
    monkeypatch.setattr(workshop, "on_every_seat", fake)
    got = workshop.ready(seats, tests=["tests/test_x.py"])
    assert rounds == [["a", "b"], ["host"]]
    assert [(r.seat.name, r.last) for r in got] == [("host", "1 passed on host"), ("a", "1 passed on a"),
                                                     ("b", "1 passed on b")]


def test_ready_quick_names_tests_that_exist():
    """--quick is a named subset of this checkout's tests: each of them must exist."""
    for t in workshop.QUICK:
        assert os.path.exists(os.path.join(ROOT, t)), t
    r = cli("ready", "--help")
    assert r.returncode == 0 and "--quick" in r.stdout and "--tests" in r.stdout


def test_an_ssh_config_file_reaches_ssh(tmp_path, monkeypatch):
    """--ssh-config FILE -> ssh -F FILE (a seat's port, key or jump host, by its name)."""
    seen = []
    def tool(argv, **kw):  # what ssh would be asked; it is not run here
        seen.append(argv)
        return types.SimpleNamespace(error=None, returncode=0, stdout="ok\n", stderr="")
    monkeypatch.setattr(workshop._launch, "tool", tool)
    a = workshop.run_on(workshop.Seat("jap-vm", "guest"), "true", ssh_config="/etc/seats.ssh")
    assert a.stdout == "ok\n" and seen[0][:3] == ["ssh", "-F", "/etc/seats.ssh"] and "jap@jap-vm" in seen[0]
    workshop.run_on(workshop.Seat("jap-vm", "guest"), "true")
    assert "-F" not in seen[1]
    (tmp_path / "seats.txt").write_text("jap-vm guest\n")
    r = cli("roster", str(tmp_path / "seats.txt"), "--ssh-config", str(tmp_path / "missing"))
    assert r.returncode == 2 and "--ssh-config" in r.stderr and "no such file" in r.stderr


@pytest.mark.root
def test_cards_read_the_token_where_the_seats_lab_keeps_it(tmp_path):
    """tools/start-lab.sh keeps the token in $JAP_STATE_DIR (default /var/lib/justaprocess)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "jupyter-token").write_text("c0ffee42")
    (tmp_path / "seats.txt").write_text("local host\n")
    out = tmp_path / "cards.html"
    r = cli("cards", str(tmp_path / "seats.txt"), "-o", str(out), env={"JAP_STATE_DIR": str(state)})
    assert r.returncode == 0, r.stderr
    assert "/lab?token=c0ffee42" in out.read_text()
