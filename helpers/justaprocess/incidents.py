"""Chapter 15's incidents: broken containers with hidden causes, drawn per learner.

The catalogue is :mod:`justaprocess.scenarios` (chapters 08-10's six) plus the
incidents registered here: an OOM kill loop, CPU throttling from a tiny quota,
zombies under a PID 1 that does not reap, a full volume, a missing default
route, a volume owned by a uid the container's user namespace does not map.
Each learner gets the whole catalogue in an order of their own (:func:`deck`,
seeded by the learner's name, so neighbours differ), each incident started with
a seed of their own too (its limits and sizes vary).

A learner submits ``scenarios.Diagnosis(cause, evidence)``; the check confirms
it against the live kernel or gives the next of three hints.  Every attempt is
written to the roster file (:func:`roster_path`, next to the checks' progress
file): learner, incident, attempt, verdict, seconds since the incident started -
``python -m justaprocess incidents --roster`` sums it up for the workshop, and
``--instructor`` reveals every learner's causes.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import random
import time

from . import _launch, cgroups, lab, proc, scenarios
from .checks import Verdict, progress
from .errors import BadInput, LabError
from .scenarios import CAUSES, Diagnosis, Scenario, _wait_for, add_cause, register

add_cause("cpu-limit", "the cgroup's CPU quota is tiny: the kernel throttles the container")
add_cause("zombies", "PID 1 does not reap its children: exited processes pile up as zombies")
add_cause("volume-full", "the volume the app writes to is full: writes fail with ENOSPC")
add_cause("no-route", "the container's network namespace has no default route")
add_cause("unmapped-owner", "a volume's files belong to a host uid the container's user namespace "
          "does not map: they show as 65534 and root inside may not write them")

scenarios.NORMALIZE.setdefault("cores", lambda v: round(float(v), 2))
scenarios.NORMALIZE.setdefault("route", lambda v: str(v).strip().lower())
scenarios.NORMALIZE.setdefault("parent", lambda v: int(v))
scenarios.NORMALIZE.setdefault("owner", lambda v: int(v))


def _stats(s: Scenario) -> cgroups.Stats:
    return cgroups.read_stats(cgroups.places_of(s._need().pid))


@register
class OOMLoop(Scenario):
    name = "oom-loop"
    title = "A worker OOM-killed again and again"
    cause = "memory-limit"
    evidence_keys = ("limit", "max")
    hints = ("'exited with status 137' is 128 + 9: SIGKILL, sent by no one in the app. Which part "
             "of the kernel kills a process unasked?",
             "read the container's memory counters: oom_kill in memory.events (v2) or "
             "memory.oom_control (v1), and the limit in memory.max / memory.limit_in_bytes.",
             "Diagnosis('memory-limit', {'limit': 'memory', 'max': <the limit in bytes>}).")
    fix = ("Give the worker the memory it needs (a higher limit) or make it need less; "
           "Kubernetes shows this as OOMKilled and CrashLoopBackOff.")

    def _choose(self, rng):
        return {"memory": rng.choice((24, 28, 32)) << 20}

    def _make(self):
        mb = self.params["memory"] >> 20
        script = ('echo "report worker starting"; while :; do echo "$(date +%T) building report"; '
                  f'(echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of=/dev/null bs={mb + 16}M count=1) '
                  '2>/dev/null || echo "$(date +%T) report worker exited with status $?"; sleep 2; done')
        self.target = self._container(["sh", "-c", script], memory=self.params["memory"], pids=16)
        _wait_for(lambda: (_stats(self).oom_kills or 0) > 0, f"scenario {self.name}: the first OOM kill", timeout=30)

    def _truth(self):
        return {"limit": "memory", "max": _stats(self).memory_max}

    @property
    def symptom(self):
        return "The nightly report never arrives. The app's log says 'report worker exited with status 137' every few seconds."

    def explain(self):
        return ("The worker asks for more memory than the cgroup's limit; the OOM killer sends it "
                "SIGKILL (137 = 128 + 9) and oom_kill in memory.events / memory.oom_control counts it.")


@register
class CPUThrottled(Scenario):
    name = "cpu-throttled"
    title = "Slow: CPU throttled by a tiny quota"
    cause = "cpu-limit"
    evidence_keys = ("limit", "cores")
    hints = ("nothing crashes and nothing is logged: the app is slow. Which cgroup controller can "
             "make a process wait although the machine is idle?",
             "cpu.stat: nr_throttled against nr_periods; the quota is cpu.max (v2) or "
             "cpu.cfs_quota_us / cpu.cfs_period_us (v1).",
             "Diagnosis('cpu-limit', {'limit': 'cpu', 'cores': <quota / period>}).")
    fix = "Raise the quota (resources.limits.cpu in Kubernetes) or find what burns the CPU."

    def _choose(self, rng):
        return {"cpu": rng.choice((0.02, 0.03, 0.05))}

    def _make(self):
        script = ('httpd -p 8080 -h /var/www; sh -c "while :; do :; done" & '
                  'while :; do echo "$(date +%T) GET /search 200"; sleep 5; done')
        self.target = self._container(["sh", "-c", script], memory="32M", pids=16, cpu=self.params["cpu"])
        _wait_for(lambda: (_stats(self).cpu_throttled or 0) > 2, f"scenario {self.name}: throttling", timeout=30)

    def _truth(self):
        return {"limit": "cpu", "cores": _stats(self).cpu_quota}

    @property
    def symptom(self):
        return "Searches take seconds, on an idle machine. The app logs nothing unusual: every request ends in 200."

    def explain(self):
        return ("A busy loop shares a CPU quota of a few hundredths of a core: the kernel lets the "
                "cgroup run for quota µs per period, then throttles it (cpu.stat nr_throttled).")


@register
class Zombies(Scenario):
    name = "zombies"
    title = "Zombies under a PID 1 that does not reap"
    cause = "zombies"
    evidence_keys = ("parent",)
    hints = ("`ps` in the container shows processes in state Z. What is a process that has "
             "exited but is still listed?",
             "a zombie waits for its parent to call wait(). Whose children are they? "
             "The PPid: line of /proc/PID/status, as the container numbers it.",
             "Diagnosis('zombies', {'parent': <the PID inside of the process that does not reap>}).")
    fix = ("Run an init that reaps as PID 1 (tini, catatonit, dumb-init; `docker run --init`), "
           "or make PID 1 wait() for its children.")

    def _choose(self, rng):
        return {"zombies": rng.choice((6, 8, 10))}

    def _make(self):
        n = self.params["zombies"]
        # The shell starts n jobs that wait for a go file, then becomes sleep (exec):
        # sleep never wait()s.  The jobs end only once PID 1 is sleep, so the shell
        # cannot reap any of them first, however slow the machine.
        script = (f"i=0; while [ $i -lt {n} ]; do (while [ ! -e /tmp/go ]; do sleep 0.2; done) & "
                  "i=$((i+1)); done; exec sleep 100000")
        # Each job is a subshell plus, now and then, its `sleep 0.2`: 2n + PID 1, and room
        # to exec a tool in (a smaller pids.max made the jobs' forks fail under load).
        self.target = self._container(["sh", "-c", script], memory="32M", pids=2 * n + 8)
        pid = self.target.pid
        _wait_for(lambda: proc.status(pid)["Name"] == "sleep" and len(_children(pid)) >= n,
                  f"scenario {self.name}: the jobs", timeout=30)
        with open(f"/proc/{pid}/root/tmp/go", "w"):
            pass
        _wait_for(lambda: len(self.zombies()) >= n, f"scenario {self.name}: the zombies", timeout=30)

    def zombies(self) -> list[int]:
        """Host PIDs of the container's zombies."""
        pid = self._need().pid
        out = []
        for p in _children(pid):
            try:
                if proc.status(p)["State"].startswith("Z"):
                    out.append(p)
            except (OSError, KeyError):
                continue
        return out

    def _truth(self):
        return {"parent": int(proc.status(self._need().pid)["NSpid"].split()[-1])}

    @property
    def symptom(self):
        return ("`docker exec app ps` lists more and more processes marked <defunct>; now and then "
                "starting something in the container fails.")

    def explain(self):
        return ("Exited children stay zombies until their parent wait()s (wait(2)). Here PID 1 is "
                "`sleep`, which never does; in a PID namespace orphans are re-parented to PID 1 too "
                "(pid_namespaces(7)), so they pile up and fill pids.max.")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@register
class VolumeFull(Scenario):
    name = "volume-full"
    title = "The data volume is full"
    cause = "volume-full"
    evidence_keys = ("path",)
    hints = ("'No space left on device' is ENOSPC. The container's root has space: where does the "
             "app write?",
             "look at the container's mounts (/proc/PID/mountinfo, or `df` inside) for a small "
             "file system at 100 %.",
             "Diagnosis('volume-full', {'path': <where the full volume is mounted inside>}).")
    fix = "Give the volume more room, rotate or delete what fills it; alert on use before it is full."

    def _choose(self, rng):
        return {"path": rng.choice(("/data", "/var/spool/app", "/srv/uploads"))}

    def _make(self):
        src = self._dir("vol")
        mnt = lab.register("mount", src, note=f"scenario {self.name}: a 1M tmpfs")
        self._entries.append(mnt)
        # A small file system of its own (tmpfs, size=1m: mount(8)); filled up to ENOSPC.
        _launch.tool(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", src]).check()
        _launch.tool(["dd", "if=/dev/zero", f"of={src}/old-uploads.bin", "bs=64k"])
        path = self.params["path"]
        script = (f'echo "uploader starting"; while :; do echo upload >> {path}/new.bin 2>/dev/null '
                  f'|| echo "$(date +%T) upload failed: No space left on device"; sleep 3; done')
        from .container import Volume
        # the rootfs must have the mount point: sh makes it in the copied root before the bind
        self.target = self._container(["sh", "-c", script], memory="32M", pids=16,
                                      volumes=[Volume(src, path)])

    def _truth(self):
        return {"path": self.params["path"]}

    @property
    def symptom(self):
        return "Uploads fail since this morning. The app's log: 'upload failed: No space left on device'. `df /` in the container shows plenty of space."

    def explain(self):
        return (f"A 1M volume is mounted at {self.params.get('path')} and is full: writes there get "
                "ENOSPC (write(2)), while the container's root file system has room.")


@register
class NoRoute(Scenario):
    name = "no-route"
    title = "No default route in the container"
    cause = "no-route"
    evidence_keys = ("route",)
    hints = ("'Network is unreachable' (ENETUNREACH) comes at once, before any packet leaves: the "
             "kernel found no route. Whose routing table counts?",
             "each network namespace has its own routes (network_namespaces(7)): `ip route` inside "
             "the container, or `nsenter -t PID -n ip route` from the host.",
             "Diagnosis('no-route', {'route': 'default'}).")
    fix = "Add the default route via the bridge's gateway (the engine's network setup forgot it)."

    def _make(self):
        script = ('httpd -p 80 -h /var/www; while :; do wget -q -O /dev/null http://192.0.2.10/ 2>&1 '
                  '| sed "s/^/$(date +%T) update check: /"; sleep 5; done')
        self.target = self._container(["sh", "-c", script], memory="32M", pids=16, network=True)
        pid = self.target.pid
        r = _launch.run(_launch.Spec(argv=["ip", "route", "del", "default"], join={"net": pid},
                                     note=f"scenario {self.name}"), timeout=10)
        if r.returncode != 0:
            raise LabError(f"scenario {self.name}: could not remove the default route: {r.stderr.strip()}")

    def _truth(self):
        return {"route": "default"}

    @property
    def symptom(self):
        return ("The app's update check fails with 'Network is unreachable'. Its own web page "
                "answers from the host just fine.")

    def explain(self):
        return ("The container's network namespace has its address on the bridge but no default "
                "route: its subnet is reachable, everything beyond gets ENETUNREACH.")


@register
class UnmappedOwner(Scenario):
    name = "unmapped-owner"
    title = "Permission denied as root: a volume owned by an unmapped uid"
    cause = "unmapped-owner"
    evidence_keys = ("path", "owner")
    hints = ("the app runs as uid 0 in the container and still gets 'Permission denied' (EACCES). "
             "`ls -ln` of the folder it writes to, inside: who owns the files?",
             "65534 is the overflow uid (/proc/sys/kernel/overflowuid): how a user namespace shows a "
             "host uid it does not map. Compare /proc/PID/uid_map with the files' owner seen from the "
             "host: `stat -c %u /proc/PID/root/PATH`.",
             "Diagnosis('unmapped-owner', {'path': <the volume inside>, 'owner': <the files' uid on "
             "the host>}).")
    fix = ("Give the files to a uid the namespace maps (host uid = 100000 + the uid inside; podman's "
           "`-v SRC:DST:U` chowns them), or mount the volume idmapped (mount_setattr(2) "
           "MOUNT_ATTR_IDMAP, podman's `:idmap`).")

    def _choose(self, rng):
        return {"path": rng.choice(("/data", "/srv/app", "/var/lib/app")),
                "owner": rng.choice((33, 1000, 1001))}

    def _make(self):
        from .container import Volume
        owner, path = self.params["owner"], self.params["path"]   # owner: below 100000, unmapped
        # The volume, as a host user made it: its files belong to that user's uid.
        src = self._dir("vol")
        with open(os.path.join(src, "app.log"), "w") as f:
            f.write("started\n")
        for p in (src, os.path.join(src, "app.log")):
            os.chown(p, owner, owner)
        os.chmod(src, 0o755)
        script = ('echo "app starting as uid $(id -u)"; while :; do '
                  f'echo "$(date +%T) saved" >> {path}/app.log 2>/dev/null '
                  '|| echo "$(date +%T) save failed: Permission denied"; sleep 3; done')
        self.target = self._container(["sh", "-c", script], memory="32M", pids=16, userns=True,
                                      volumes=[Volume(src, path)])

    def _truth(self):
        pid, path = self._need().pid, self.params["path"]
        # the owner as the kernel keeps it (the host's view through the container's root)
        return {"path": path, "owner": os.stat(f"/proc/{pid}/root{path}").st_uid}

    @property
    def symptom(self):
        return ("Since the app moved to a user namespace (\"rootless\"), it cannot save: its log says "
                "'save failed: Permission denied', yet it runs as uid 0 in the container and the "
                "files are there.")

    def explain(self):
        return ("The user namespace maps uids 0-65535 inside to 100000-165535 on the host "
                "(/proc/PID/uid_map). The volume's files belong to a host uid outside that range: "
                "inside they show as the overflow uid 65534 (user_namespaces(7)), and root inside - "
                "uid 100000 to the kernel - is only 'other' to them, so open(2) for writing gets "
                "EACCES; chown(2) of an unmapped id fails too.")


# --- a learner's deck ------------------------------------------------------------------

def learner() -> str:
    """Who is working: $JAP_LEARNER, else the login name."""
    return os.environ.get("JAP_LEARNER") or getpass.getuser()


def _seed(who: str) -> int:
    return int.from_bytes(hashlib.sha256(who.encode()).digest()[:4], "big")


def deck(who: str | None = None) -> list[str]:
    """Every incident of the catalogue, in this learner's own order."""
    names = [n for n, _, _ in scenarios.catalogue()]
    random.Random(_seed(who or learner())).shuffle(names)
    return names


def roster_path() -> str:
    return os.path.join(os.path.dirname(progress.path()), "incidents.jsonl")


class Incident:
    """One started incident of a learner: the scenario, when it started, the attempts."""

    def __init__(self, name: str, who: str | None = None):
        self.learner = who or learner()
        self.name = name
        self.scenario = scenarios.get(name)
        self.started: float | None = None
        self.attempts = 0
        self.solved_after: float | None = None

    def start(self) -> "Incident":
        self.scenario.start(_seed(f"{self.learner}:{self.name}") % 100000)
        self.started = time.time()
        return self

    def remove(self) -> None:
        self.scenario.remove()

    def __enter__(self) -> "Incident":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()

    @property
    def target(self):
        return self.scenario.target

    @property
    def symptom(self) -> str:
        return self.scenario.symptom

    def __repr__(self) -> str:
        return f"<incident {self.name} of {self.learner}>"

    def judge(self, diagnosis):
        """The scenario's verdict (right, or a Wrong with escalating hints), recorded."""
        r = self.scenario.judge(diagnosis)
        ok = isinstance(r, Verdict) and r.ok
        kind = "right" if ok else getattr(r, "kind", "")
        if kind not in ("missing",):
            self.attempts += 1
            now = time.time()
            if ok and self.solved_after is None and self.started:
                self.solved_after = now - self.started
            problem = _record({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                     "learner": self.learner, "incident": self.name, "attempt": self.attempts,
                     "ok": ok, "kind": kind,
                     "seconds": round(now - self.started, 1) if self.started else None})
            if problem and isinstance(r, Verdict):
                r.message += f" (this attempt was not recorded: {problem})"
        return r

    def answer(self) -> Diagnosis:
        """The instructor's key: the right diagnosis, read from the live kernel."""
        truth = self.scenario._truth()
        evidence = {}
        for k in self.scenario.evidence_keys:
            v = truth[k]
            if isinstance(v, (set, frozenset)):   # any of several is right: name one
                v = sorted(v, key=str)[0]
            elif isinstance(v, (list, tuple)):
                v = v[0]
            evidence[k] = v
        return Diagnosis(self.scenario.cause, evidence)


def _record(line: dict) -> str | None:
    return progress.append(roster_path(), line)


class Session:
    """A learner's way through their deck: ``next()`` removes the last incident, starts the next."""

    def __init__(self, who: str | None = None, skip: tuple[str, ...] = ()):
        self.learner = who or learner()
        self.order = [n for n in deck(self.learner) if n not in skip]
        self.done = 0
        self.current: Incident | None = None

    def next(self) -> Incident:
        if self.current is not None:
            self.current.remove()
        if self.done >= len(self.order):
            raise BadInput(f"all {len(self.order)} incidents done: well done")
        self.current = Incident(self.order[self.done], self.learner).start()
        self.done += 1
        return self.current

    def remove(self) -> None:
        if self.current is not None:
            self.current.remove()
            self.current = None


# --- the workshop's views ------------------------------------------------------------------

def instructor(who: str | None = None) -> str:
    """Every incident of a learner's deck with its hidden cause (instructor mode)."""
    lines = [f"deck of {who or learner()}:"]
    for i, n in enumerate(deck(who), 1):
        cls = scenarios.CATALOGUE[n]
        lines.append(f"{i:>2}. {n:<16} cause {cls.cause:<19} {CAUSES[cls.cause]}")
    return "\n".join(lines)


def roster(path: str | None = None) -> list[dict]:
    """Per learner and incident: attempts, solved, seconds to the right diagnosis."""
    rows: dict[tuple[str, str], dict] = {}
    try:
        with open(path or roster_path()) as f:
            for text in f:
                try:
                    r = json.loads(text)
                except ValueError:
                    continue
                key = (r.get("learner", "?"), r.get("incident", "?"))
                row = rows.setdefault(key, {"learner": key[0], "incident": key[1], "attempts": 0,
                                            "solved": False, "seconds": None})
                row["attempts"] += 1
                if r.get("ok") and not row["solved"]:
                    row["solved"], row["seconds"] = True, r.get("seconds")
    except FileNotFoundError:
        pass
    return list(rows.values())


def roster_text(rows: list[dict]) -> str:
    out = [f"{'learner':<12} {'incident':<16} {'attempts':>8}  time to diagnosis"]
    for r in rows:
        t = f"{r['seconds']:.0f} s" if r["solved"] and r["seconds"] is not None else "not yet"
        out.append(f"{r['learner']:<12} {r['incident']:<16} {r['attempts']:>8}  {t}")
    return "\n".join(out)


def add_cli(sub) -> None:
    p = sub.add_parser("incidents", help="chapter 15: a learner's incidents, the causes (instructor), the roster")
    p.add_argument("--learner", help="whose deck (default: $JAP_LEARNER or the login name)")
    p.add_argument("--instructor", action="store_true", help="reveal the cause of every incident")
    p.add_argument("--roster", action="store_true", help="attempts and time to diagnosis, per learner")

    def go(args) -> int:
        if args.roster:
            print(roster_text(roster()))
        elif args.instructor:
            print(instructor(args.learner))
        else:
            for i, n in enumerate(deck(args.learner), 1):
                print(f"{i:>2}. {n}")
        return 0

    p.set_defaults(func=go)
