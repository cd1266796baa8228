"""A fleet of containers on the hand-built engine: troubleshooting at scale.

One container is a process you can look at by hand.  Twenty are not: you look
at all of them at once, from the same kernel files, and let the numbers point
at the odd one.  This module starts ``size`` small busybox containers
(:class:`container.Container`, each with its own cgroup and a veth on the lab
bridge), some with a *planted fault*, and gives the fan-out tools:

- :meth:`Fleet.stats`: every container's cgroup figures (memory against its
  limit, OOM kills, CPU throttling, pids) - what ``kubectl top`` and ``podman
  pod stats`` summarise, read from the kernel's files (cgroups.read_stats);
- :meth:`Fleet.logs` / :meth:`Fleet.grep`: every container's stdout, searched
  at once (``kubectl logs -l app=web``, ``stern``);
- :meth:`Fleet.fanout`: one command in every container, at most
  ``concurrency`` at a time (``kubectl exec`` in a loop, ``pssh -p N``);
- :meth:`Fleet.probe`: can the host reach each one's web port over the bridge?
- :class:`FleetTable`: a live table widget of :meth:`Fleet.stats`.

Faults (one container each, placed at random by ``seed``):

- ``throttled``: a CPU quota of 10 % of one core and a busy loop - cpu.stat
  ``nr_throttled`` climbs (cgroup-v2.rst "cpu.max"; v1: ``cpu.cfs_quota_us``);
- ``oom``: a worker that asks for more memory than the limit every few seconds -
  the OOM killer kills it, ``oom_kill`` climbs (memory.events / memory.oom_control);
- ``unreachable``: its web server listens on 127.0.0.1 only, so nothing on the
  bridge reaches it, though it logs like the others.

Everything is bounded: 24M memory and 16 pids per container, 10 % CPU for the
busy loop, a worker that is killed as soon as it crosses its limit.
"""
from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from . import _launch, cgroups, container, lab, network, proc
from .errors import BadInput, LabError

FAULTS = ("throttled", "oom", "unreachable")
PORT = 80

# PID 1 of every member: a web server and a log line every few seconds (stdout,
# as a twelve-factor app logs).  The faulty ones differ in one line each.
_WEB = "httpd -p {listen} -h /var/www"
_LOG = 'while :; do echo "$(date +%T) $HOSTNAME GET / 200"; sleep 5; done'
SCRIPTS = {
    None: f'echo "$HOSTNAME starting"; {_WEB.format(listen=PORT)}; {_LOG}',
    "throttled": f'echo "$HOSTNAME starting"; {_WEB.format(listen=PORT)}; '
                 'sh -c "while :; do :; done" & ' + _LOG,
    "oom": f'echo "$HOSTNAME starting"; {_WEB.format(listen=PORT)}; '
           'while :; do echo "$(date +%T) $HOSTNAME GET / 200"; '
           # oom_score_adj 1000 (proc(5)): the OOM killer takes the worker, not PID 1
           # (Kubernetes sets it per QoS class the same way)
           '(echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of=/dev/null bs=32M count=1) 2>/dev/null '
           '|| echo "$(date +%T) $HOSTNAME worker exited with status $?"; sleep 3; done',
    "unreachable": f'echo "$HOSTNAME starting"; {_WEB.format(listen="127.0.0.1:" + str(PORT))}; {_LOG}',
}
LIMITS = {"memory": "24M", "pids": 16, "cpu": 0.5}
# While PID 1 sets itself up (the launcher's Python child: a copy-on-write copy of the
# caller, its network and mounts, before exec) it may need more than the shell will: the
# pages it copies are charged to the cgroup it has joined (cgroup-v2.rst, "Memory
# Ownership"), and a member was OOM-killed there before its exec on the v2 VM, inside a
# large test process.  The limits above are set once PID 1 runs, as `docker update` would.
SETUP_MEMORY = "256M"
FAULT_LIMITS = {"throttled": {"cpu": 0.1}}


@dataclass
class Member:
    """One container of the fleet."""
    name: str                    # its short name: web01 ...
    container: container.Container
    fault: str | None            # the planted fault (hidden from the learner's view)

    @property
    def pid(self) -> int:
        return self.container.pid

    @property
    def address(self) -> str | None:
        return self.container.address


class Row(NamedTuple):
    """One container's figures, read from its cgroup files."""
    name: str
    address: str
    memory: int | None           # bytes in use
    memory_max: int | None       # the limit
    oom_kills: int | None
    cpu_periods: int | None
    cpu_throttled: int | None    # periods in which it was throttled
    cpu_quota: float | None      # cores
    pids: int | None
    pids_max: int | None
    running: bool

    @property
    def throttled_ratio(self) -> float:
        return (self.cpu_throttled or 0) / self.cpu_periods if self.cpu_periods else 0.0


class FanResult(NamedTuple):
    name: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


class Fanout(list):
    """The results of :meth:`Fleet.fanout`, in fleet order; ``max_in_flight`` is the
    most commands that ran at the same moment (never more than ``concurrency``)."""
    max_in_flight: int = 0
    concurrency: int = 0


class Fleet:
    """``size`` containers on the lab bridge, ``faults`` planted at random (``seed``).

    Nothing happens in the constructor: ``start()`` makes them, ``remove()`` (or
    the lab's cleanup) takes them away.  A context manager.
    """

    def __init__(self, size: int = 20, *, faults: Iterable[str] = FAULTS, seed: int | None = None,
                 prefix: str = "web"):
        faults = list(faults)
        bad = [f for f in faults if f not in FAULTS]
        if bad:
            raise BadInput(f"unknown fault(s) {bad}: one of {', '.join(FAULTS)}")
        if not 1 <= size <= 40:
            raise BadInput(f"size: 1 to 40 containers on a shared lab machine (got {size})")
        if len(faults) > size:
            raise BadInput(f"{len(faults)} faults need at least as many containers (size={size})")
        if not re.fullmatch(r"[a-z]{1,8}", prefix):
            raise BadInput("prefix: 1 to 8 lowercase letters, like 'web'")
        self.size, self.seed, self.prefix = size, seed, prefix
        rng = random.Random(seed)
        slots = rng.sample(range(size), len(faults))
        self._plan = {slot: f for slot, f in zip(slots, faults)}
        self.members: list[Member] = []

    # -- life cycle --
    def start(self) -> "Fleet":
        if self.members:
            return self
        try:
            for i in range(self.size):
                fault = self._plan.get(i)
                name = f"{self.prefix}{i + 1:02d}"
                c = container.Container(["/bin/sh", "-c", SCRIPTS[fault]], network=True,
                                        hostname=name, name=lab.name(name),
                                        **{**LIMITS, "memory": SETUP_MEMORY})
                self.members.append(Member(name, c, fault))
                c.create()
                c.start()
                # PID 1's set-up runs under the container's limits: under a 10 % quota shared
                # with the busy loop it takes 20 times its CPU time - past the start timeout on
                # a slow VM - and its memory is the caller's copy (SETUP_MEMORY).  The real
                # limits come once PID 1 runs (`docker update --memory --cpus`).
                c.cgroup.update(memory=LIMITS["memory"], **FAULT_LIMITS.get(fault, {}))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Stop and remove every container (safe twice)."""
        for m in self.members:
            m.container.remove()
        self.members = []

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise BadInput(f"no container {name!r} in this fleet: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def faulty(self, fault: str) -> str:
        """The name of the member with that planted fault (the instructor's answer key)."""
        for m in self.members:
            if m.fault == fault:
                return m.name
        raise BadInput(f"no {fault!r} fault in this fleet")

    def _need(self) -> None:
        if not self.members:
            raise BadInput("the fleet is not started: call start() first")

    # -- the figures --
    def stats(self) -> list[Row]:
        """Every container's cgroup figures, read now from the kernel's files."""
        self._need()
        rows = []
        for m in self.members:
            c = m.container
            s = c.cgroup.stats() if c.cgroup is not None else cgroups.Stats(time=time.monotonic())
            rows.append(Row(m.name, m.address or "-", s.memory_current, s.memory_max, s.oom_kills,
                            s.cpu_periods, s.cpu_throttled, s.cpu_quota, s.pids_current,
                            s.pids_max, c.running()))
        return rows

    def logs(self, name: str | None = None, tail: int | None = None) -> dict[str, list[str]]:
        """{name: lines of stdout} for one container or all (``tail``: the last N lines)."""
        self._need()
        ms = [self[name]] if name else self.members
        out = {}
        for m in ms:
            lines = m.container.logs("stdout").splitlines() + m.container.logs("stderr").splitlines()
            out[m.name] = lines[-tail:] if tail else lines
        return out

    def grep(self, pattern: str, ignore_case: bool = True) -> list[tuple[str, str]]:
        """(name, line) for every log line of the fleet matching a regular expression."""
        try:
            rx = re.compile(pattern, re.I if ignore_case else 0)
        except re.error as exc:
            raise BadInput(f"not a regular expression: {pattern!r} ({exc})") from None
        return [(n, line) for n, lines in self.logs().items() for line in lines if rx.search(line)]

    def probe(self, port: int = PORT, timeout: float = 1.0, tries: int = 3) -> dict[str, bool]:
        """Can the host open a TCP connection to each container's ``port`` over the bridge?

        A container counts as unreachable only when all ``tries`` fail: one lost
        first packet (a neighbour entry still being resolved) is not a fault.
        """
        self._need()

        def one(m: Member) -> bool:
            return bool(m.address) and any(network.reachable(m.address, port, timeout)
                                           for _ in range(tries))

        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip(self.names, pool.map(one, self.members)))

    # -- one command everywhere --
    def exec(self, name: str, argv: list[str], timeout: float = 10) -> FanResult:
        """``argv`` inside one container: its namespaces, its cgroup, its root (as docker exec)."""
        return self._exec(self[name], argv, timeout)

    def _exec(self, m: Member, argv: list[str], timeout: float) -> FanResult:
        pid = m.container.pid
        t0 = time.monotonic()
        if not m.container.running():
            return FanResult(m.name, None, "", "not running", 0.0)
        mine = proc.namespaces("self")
        kinds = [k for k, v in proc.namespaces(pid).items() if v != mine.get(k)]
        spec = _launch.Spec(argv=list(argv), join={k: pid for k in kinds}, cgroup=pid,
                            target_root=pid, cwd="/", env=dict(m.container.env),
                            note=f"fanout in {m.container.name}")
        try:
            r = _launch.run(spec, timeout=timeout)
            code, out, err = r.returncode, r.stdout, r.stderr
            if r.error is not None:
                err = (err + "\n" + str(r.error)).strip()
        except LabError as exc:
            code, out, err = None, getattr(getattr(exc, "result", None), "stdout", "") or "", str(exc)
        return FanResult(m.name, code, out, err, time.monotonic() - t0)

    def fanout(self, argv: list[str], concurrency: int = 4, timeout: float = 10) -> Fanout:
        """Run ``argv`` in every container, at most ``concurrency`` at a time."""
        self._need()
        if not argv or not all(isinstance(a, str) for a in argv):
            raise BadInput("argv: a list of strings, like ['cat', '/proc/loadavg']")
        if not 1 <= concurrency <= 8:
            raise BadInput(f"concurrency: 1 to 8 at a time on a 2-core lab machine (got {concurrency})")
        lock = threading.Lock()
        state = {"now": 0, "max": 0}

        def one(m: Member) -> FanResult:
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            try:
                return self._exec(m, argv, timeout)
            finally:
                with lock:
                    state["now"] -= 1

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            out = Fanout(pool.map(one, self.members))
        out.max_in_flight, out.concurrency = state["max"], concurrency
        return out


# --- showing it ------------------------------------------------------------------

def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):.1f}M"


COLUMNS = ("container", "address", "memory", "limit", "mem %", "OOM kills", "throttled",
           "CPU quota", "pids")


def cells(r: Row) -> list[str]:
    pct = f"{100 * r.memory / r.memory_max:.0f}%" if r.memory is not None and r.memory_max else "-"
    thr = f"{r.cpu_throttled}/{r.cpu_periods}" if r.cpu_periods else "0"
    quota = f"{r.cpu_quota:.2f}" if r.cpu_quota else "max"
    pids = f"{r.pids}/{r.pids_max}" if r.pids is not None else "-"
    return [r.name if r.running else r.name + " (exited)", r.address, _mib(r.memory),
            _mib(r.memory_max), pct, str(r.oom_kills if r.oom_kills is not None else "-"), thr,
            quota, pids]


def table(rows: list[Row]) -> str:
    """A plain-text table of :meth:`Fleet.stats`."""
    data = [list(COLUMNS)] + [cells(r) for r in rows]
    w = [max(len(row[i]) for row in data) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip() for row in data)


def _hot(r: Row) -> set[str]:
    hot = set()
    if r.oom_kills:
        hot.add("OOM kills")
    if r.throttled_ratio > 0.2:
        hot.add("throttled")
    if r.memory and r.memory_max and r.memory / r.memory_max > 0.8:
        hot.add("mem %")
    if r.pids and r.pids_max and r.pids >= r.pids_max:
        hot.add("pids")
    return hot


def html(rows: list[Row], highlight: bool = True) -> str:
    """The same table as HTML; with ``highlight`` the cells over a threshold are red."""
    from html import escape
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{c}</th>" for c in COLUMNS)
    body = []
    for r in rows:
        hot = _hot(r) if highlight else set()
        tds = "".join(
            f"<td style='padding:0 8px;{'color:#cf222e;font-weight:600' if c in hot else ''}'>"
            f"{escape(v)}</td>" for c, v in zip(COLUMNS, cells(r)))
        body.append(f"<tr>{tds}</tr>")
    return (f"<table style='font-family:monospace;font-size:12px'><tr>{head}</tr>"
            + "".join(body) + "</table>")


class FleetTable:
    """A live table widget of every container's cgroup figures.

    ``follow(seconds)`` refreshes it in the calling cell (the notebooks use it);
    ``start()`` / ``stop()`` refresh it from a background thread while you work.
    ``highlight=False`` leaves finding the odd ones to you.
    """

    def __init__(self, fleet: Fleet, *, interval: float = 1.0, highlight: bool = False):
        self.fleet, self.interval, self.highlight = fleet, interval, highlight
        self.rows: list[Row] = []
        self._view = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def view(self):
        if self._view is None:
            import ipywidgets as w
            self._view = w.HTML(value="<code>reading the fleet's cgroups ...</code>")
            if self.rows:
                self._render()
        return self._view

    def _render(self) -> None:
        self._view.value = html(self.rows, self.highlight) + \
            f"<div style='font-size:11px;color:#666'>read {time.strftime('%H:%M:%S')}</div>"

    def _ipython_display_(self):
        from IPython.display import display
        display(self.view)

    def refresh(self) -> list[Row]:
        self.rows = self.fleet.stats()
        if self._view is not None:
            self._render()
        return self.rows

    def follow(self, seconds: float) -> list[Row]:
        end = time.monotonic() + seconds
        while True:
            self.refresh()
            if time.monotonic() + self.interval > end:
                return self.rows
            self._stop.wait(self.interval)

    def start(self) -> "FleetTable":
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                try:
                    self.refresh()
                except (LabError, OSError):
                    break  # the fleet was removed
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="jap-fleet-table", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Row]:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        return self.rows
