"""The instructor's kit: every seat's progress in one table, login cards, a readiness run.

Seats are listed in a file, one per line: ``ADDRESS [NAME]`` (``#`` starts a
comment) - the same ``seats.txt`` as in vagrant/README.md ("Cloud seats"). The
address ``local`` is this machine itself, without SSH.

Each command runs one command on every seat over SSH (ssh(1), ``BatchMode``:
it never prompts), a few seats at a time, and reads what it prints. ``--ssh-config
FILE`` is passed to ssh as ``-F FILE`` (ssh_config(5): a seat's port, key, jump
host, under the name the seat list gives it):

* ``roster SEATS``  ``python -m justaprocess progress --json`` on each seat, as
  root (the lab's JupyterLab runs as root, so its progress file is root's):
  seat, furthest chapter, exercises solved, incidents diagnosed (chapter 15's
  exercises), last activity;
* ``cards SEATS -o cards.html``  each seat's lab token (the 0600 file
  tools/start-lab.sh keeps in ``$JAP_STATE_DIR``, /var/lib/justaprocess by default), as one printable card per seat: the SSH tunnel
  line, the local port and the URL with its token (the file is 0600 too);
* ``ready SEATS``  each seat's ``make test``, summarised as its last line;
  ``--tests PATH...`` only those tests (pytest's own arguments, passed in
  ``PYTEST_ADDOPTS``, pytest(1)), ``--quick`` the few of ``QUICK``: a check of
  minutes, not the whole suite's.
"""
from __future__ import annotations

import concurrent.futures
import html
import json
import os
import shlex
import sys
from typing import NamedTuple

from . import _launch
from .errors import BadInput, MissingTool

REPO = "/opt/justaprocess"          # where cloud-init.yaml and the Vagrantfile put the course
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout
TOKEN_FILE = "/var/lib/justaprocess/jupyter-token"   # tools/start-lab.sh's, unless JAP_STATE_DIR
LAB_PORT = 8888                     # the seat's JupyterLab, on its 127.0.0.1 only
INCIDENTS = "15"                    # the capstone chapter: its exercises are incidents
# `ready --quick`: does the seat work - the doctor, the pinned Python packages, the first two
# chapters run in a kernel as a learner runs them, and nothing of the lab left behind.
QUICK = ("tests/test_doctor.py", "tests/test_dependencies.py", "notebooks/00-welcome.ipynb",
         "notebooks/01-just-a-process.ipynb", "tests/test_zz_leftovers.py")


class Seat(NamedTuple):
    address: str
    name: str


class Answer(NamedTuple):
    seat: Seat
    returncode: int
    stdout: str
    stderr: str


def read_seats(path: str) -> list[Seat]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read the seat list {path}: {exc.strerror} "
                       "(one seat a line: ADDRESS [NAME])") from None
    seats = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise BadInput(f"{path}: {line!r}: one seat a line, ADDRESS [NAME]")
        seats.append(Seat(words[0], words[1] if len(words) > 1 else words[0]))
    if not seats:
        raise BadInput(f"{path} lists no seat (one a line: ADDRESS [NAME])")
    return seats


def run_on(seat: Seat, command: str, *, user: str = "jap", timeout: float = 60,
           ssh_config: str | None = None) -> Answer:
    """``command`` (a shell line) as root on ``seat``: over SSH, or here for ``local``."""
    if seat.address == "local":
        argv = ["bash", "-c", command] if os.geteuid() == 0 else ["sudo", "-n", "-H", "bash", "-c", command]
    else:
        argv = ["ssh", *(["-F", ssh_config] if ssh_config else []), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10", f"{user}@{seat.address}",
                "sudo -n -H bash -c " + shlex.quote(command)]
    try:
        r = _launch.tool(argv, timeout=timeout)
    except _launch.Timeout:
        return Answer(seat, 124, "", f"no answer within {timeout:g} s")
    if r.error is not None and r.error.step == "exec":
        raise MissingTool(argv[0], "openssh-client" if argv[0] == "ssh" else None)
    return Answer(seat, r.returncode, r.stdout, r.stderr.strip())


def repo_of(seat: Seat) -> str:
    """The course checkout on ``seat``: /opt/justaprocess, or this one for ``local``."""
    return HERE if seat.address == "local" else REPO


def on_every_seat(seats: list[Seat], command, *, parallel: int = 8, **kw) -> list[Answer]:
    """``command(seat)`` -> a shell line, run on every seat, ``parallel`` at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda s: run_on(s, command(s), **kw), seats))


def _why(a: Answer) -> str:
    return (a.stderr.splitlines() or [f"exit status {a.returncode}"])[-1][:100]


# --- roster ------------------------------------------------------------------------------

class Row(NamedTuple):
    seat: str
    chapter: str            # the furthest chapter with an attempt ("-": none yet)
    solved: int
    exercises: int
    incidents: int          # chapter 15's exercises solved
    last: str               # time of the last attempt
    problem: str = ""       # why the seat did not answer


def roster_row(a: Answer) -> Row:
    if a.returncode != 0:
        return Row(a.seat.name, "?", 0, 0, 0, "", _why(a))
    try:
        rows = json.loads(a.stdout)["exercises"]
    except (ValueError, KeyError, TypeError):
        return Row(a.seat.name, "?", 0, 0, 0, "", "progress --json printed no JSON")
    tried = [r for r in rows if r.get("attempts")]
    return Row(a.seat.name,
               max((r["chapter"] for r in tried), default="-"),
               sum(bool(r.get("solved")) for r in rows), len(rows),
               sum(bool(r.get("solved")) for r in rows if r.get("chapter") == INCIDENTS),
               max((r.get("last") or "" for r in rows), default=""))


def roster(seats: list[Seat], **kw) -> list[Row]:
    def command(seat):
        return f"{shlex.quote(repo_of(seat))}/.venv/bin/python -m justaprocess progress --json"
    return [roster_row(a) for a in on_every_seat(seats, command, **kw)]


def roster_table(rows: list[Row]) -> str:
    out = [f"{'seat':<16} {'chapter':>7} {'solved':>9} {'incidents':>9}  last activity"]
    for r in rows:
        if r.problem:
            out.append(f"{r.seat:<16} {'?':>7} {'?':>9} {'?':>9}  no answer: {r.problem}")
        else:
            out.append(f"{r.seat:<16} {r.chapter:>7} {f'{r.solved}/{r.exercises}':>9} "
                       f"{r.incidents:>9}  {r.last or '-'}")
    return "\n".join(out)


# --- login cards -------------------------------------------------------------------------

def card_html(cards: list[tuple[Seat, str | None, str]], port: int = LAB_PORT, user: str = "jap") -> str:
    """One card per seat (seat, token or None, why not); printable, 2 columns."""
    parts = ["<!doctype html><meta charset='utf-8'><title>Just a Process: login cards</title>",
             "<style>body{font-family:sans-serif;display:grid;grid-template-columns:1fr 1fr;gap:8mm}"
             ".card{border:1px dashed #888;padding:5mm;break-inside:avoid}"
             "code{font-size:10pt;word-break:break-all}h2{margin:0 0 3mm}</style>"]
    for seat, token, why in cards:
        e = html.escape
        parts.append(f"<div class='card'><h2>Just a Process - seat {e(seat.name)}</h2>")
        if token is None:
            parts.append(f"<p><b>not ready:</b> {e(why)}</p></div>")
            continue
        url = f"http://127.0.0.1:{port}/lab?token={token}"
        tunnel = (f"ssh -N -L {port}:127.0.0.1:{port} {user}@{seat.address}" if seat.address != "local"
                  else "nothing: the lab runs on this machine")
        parts.append(f"<p>1. In a terminal, keep this open:<br><code>{e(tunnel)}</code></p>"
                     f"<p>2. Open in your browser:<br><code>{e(url)}</code></p>"
                     f"<p>Seat {e(seat.address)}, port {port}, token <code>{e(token)}</code></p></div>")
    return "\n".join(parts) + "\n"


def cards(seats: list[Seat], **kw) -> list[tuple[Seat, str | None, str]]:
    out = []
    where = '"${JAP_STATE_DIR:-%s}/%s"' % os.path.split(TOKEN_FILE)   # as tools/start-lab.sh
    for a in on_every_seat(seats, lambda seat: f"cat {where}", **kw):
        token = a.stdout.strip()
        ok = a.returncode == 0 and token.isalnum()
        out.append((a.seat, token if ok else None, "" if ok else _why(a)))
    return out


# --- readiness ---------------------------------------------------------------------------

def rounds(seats: list[Seat]) -> tuple[list[int], list[int]]:
    """The seats' indexes in two rounds: every SSH seat, then the seat(s) ``local``."""
    return ([i for i, s in enumerate(seats) if s.address != "local"],
            [i for i, s in enumerate(seats) if s.address == "local"])


class Ready(NamedTuple):
    seat: Seat
    ok: bool
    last: str                   # pytest's closing line ("40 passed in 31.03s"), or why not
    failed: tuple[str, ...]     # pytest's short summary lines of what failed (-ra: FAILED/ERROR ...)


def ready(seats: list[Seat], *, tests: list[str] | tuple[str, ...] = (), timeout: float = 1800,
          repo: str | None = None, **kw) -> list[Ready]:
    """Each seat's `make test` (about 5 minutes on a seat): passed or not, its last line, what failed.

    ``tests``: only these test paths or node ids (relative to the seat's checkout), given
    to the seat's `make test` as pytest's arguments through ``PYTEST_ADDOPTS``.
    """
    for t in tests:
        if not t or t.startswith("-") or os.path.isabs(t):
            raise BadInput(f"ready --tests {t!r}: a test path or node id of the checkout "
                           "(tests/test_x.py, notebooks/00-welcome.ipynb, tests/test_x.py::test_y)")
    addopts = " ".join(shlex.quote(t) for t in tests)
    out = []
    def command(seat):
        # after the options the seat's environment may already give pytest (its own PYTEST_ADDOPTS)
        env = f'PYTEST_ADDOPTS="${{PYTEST_ADDOPTS:+$PYTEST_ADDOPTS }}"{shlex.quote(addopts)} ' if tests else ""
        return f"{env}make --no-print-directory -C {shlex.quote(repo or repo_of(seat))} test"
    # The seat `local` runs after the others: meanwhile the ssh clients to them are lab
    # processes of this machine, which its own run's leftovers check would rightly count.
    first, then = rounds(seats)
    answers = dict(zip(first + then, on_every_seat([seats[i] for i in first], command, timeout=timeout, **kw)
                       + on_every_seat([seats[i] for i in then], command, timeout=timeout, **kw)))
    for a in (answers[i] for i in range(len(seats))):
        # pytest's closing line ("3 passed in ..."); make's own error goes to stderr after it
        lines = [ln for ln in a.stdout.splitlines() if ln.strip()]
        failed = tuple(ln[:160] for ln in lines if ln.startswith(("FAILED ", "ERROR ")))
        out.append(Ready(a.seat, a.returncode == 0, lines[-1].strip("= ")[:120] if lines else _why(a), failed))
    return out


# --- command line ------------------------------------------------------------------------

def _cli(args) -> int:
    seats = read_seats(args.seats)
    if args.ssh_config and not os.path.isfile(args.ssh_config):
        raise BadInput(f"--ssh-config {args.ssh_config}: no such file (an ssh_config(5) file: "
                       "Host NAME, HostName, Port, IdentityFile ...)")
    kw = dict(user=args.user, parallel=args.parallel, ssh_config=args.ssh_config)
    if args.timeout is not None:
        kw["timeout"] = args.timeout
    if args.command == "roster":
        rows = roster(seats, **kw)
        if args.json:
            print(json.dumps([r._asdict() for r in rows], indent=2))
        else:
            print(roster_table(rows))
        return 1 if any(r.problem for r in rows) else 0
    if args.command == "cards":
        got = cards(seats, **kw)
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens inside
        with os.fdopen(fd, "w") as f:
            f.write(card_html(got, user=args.user))
        missing = [f"{s.name} ({why})" for s, t, why in got if t is None]
        print(f"{len(got) - len(missing)} login cards in {args.output} (mode 0600: it holds the tokens)")
        if missing:
            print("not ready: " + "; ".join(missing), file=sys.stderr)
        return 1 if missing else 0
    tests = list(QUICK) if args.quick else (args.tests or [])
    results = ready(seats, tests=tests, **kw)
    for r in results:
        print(f"{r.seat.name:<16} {'ready' if r.ok else 'NOT READY':<9} {r.last}")
        for line in r.failed:
            print(f"{'':<16}   {line}")
    print(f"{sum(r.ok for r in results)} of {len(results)} seats ready")
    return 0 if all(r.ok for r in results) else 1


def add_cli(sub) -> None:
    for name, what in (("roster", "every seat's progress in one table (over SSH)"),
                       ("cards", "login cards (HTML) with each seat's address, port and token"),
                       ("ready", "each seat's `make test`, summarised")):
        p = sub.add_parser(name, help=f"instructor: {what}")
        p.add_argument("seats", help="the seat list: one ADDRESS [NAME] a line ('local': this machine)")
        p.add_argument("--user", default="jap", help="the SSH user of the seats (default jap)")
        p.add_argument("--parallel", type=int, default=8, help="seats asked at once (default 8)")
        p.add_argument("--ssh-config", metavar="FILE",
                       help="an ssh_config(5) file for the seats (ssh -F): ports, keys, jump hosts")
        p.add_argument("--timeout", type=float, metavar="S",
                       help="seconds a seat has to answer (default: 60; ready: 1800)")
        if name == "roster":
            p.add_argument("--json", action="store_true", help="the table as JSON")
        if name == "cards":
            p.add_argument("-o", "--output", default="login-cards.html", help="the HTML file to write")
        if name == "ready":
            which = p.add_mutually_exclusive_group()
            which.add_argument("--tests", nargs="+", metavar="PATH",
                               help="only these tests of the seat's checkout (test files, notebooks, node ids)")
            which.add_argument("--quick", action="store_true",
                               help="only " + " ".join(QUICK) + ": minutes, not the whole suite")
        p.set_defaults(func=_cli)
