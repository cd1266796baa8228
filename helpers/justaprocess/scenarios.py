"""Broken containers as named, registered, removable fixtures (chapters 08-15).

A scenario is a container the lab breaks on purpose (../TROUBLESHOOTING.md,
"Scenarios").  Each has a ``name``, ``start(seed)``, the ``symptom`` as a user
would report it, ``verify(diagnosis)`` -> a verdict with hints that escalate
over attempts, and an instructor's ``explain()``.  Everything it makes is a
lab object (a hand-built container, a folder), registered before it exists
and gone with ``remove()`` or the lab's cleanup.

A diagnosis is structured, never a sentence to string-match::

    Diagnosis("capability-dropped", {"capability": "CAP_NET_RAW"})

``cause`` is one of :data:`CAUSES`; ``evidence`` names the facts that prove
it - which limit, which file, which address - and ``verify`` compares them
with what the kernel says *now* about the live container (/proc, its cgroup).

Chapter 15 draws its incidents from the same catalogue: subclass
:class:`Scenario`, decorate with :func:`register`, add a cause with
:func:`add_cause` when none fits.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from . import capabilities, cgroups, container, lab, rootfs
from .checks import NOT_ATTEMPTS, Verdict, describe, right, wrong
from .errors import BadInput, LabError

# --- causes and diagnoses --------------------------------------------------------

CAUSES: dict[str, str] = {
    "no-tools": "the image has no shell or tools to troubleshoot with",
    "loopback-only": "the app listens on a loopback address inside its own network namespace",
    "memory-limit": "the cgroup's memory limit: the OOM killer ends what goes over it",
    "pids-limit": "the cgroup's pids.max is reached: fork/clone fail with EAGAIN",
    "capability-dropped": "a capability the program needs is not in the container's sets",
    "volume-missing": "a volume the app expects is not mounted",
}


def add_cause(name: str, meaning: str) -> None:
    """Add a kind of cause (chapter 15's incidents may need new ones)."""
    if not isinstance(name, str) or not name or not isinstance(meaning, str):
        raise BadInput("add_cause(name, meaning): two non-empty strings")
    CAUSES.setdefault(name, meaning)


@dataclass(frozen=True)
class Diagnosis:
    """What a learner concludes: the kind of cause and the evidence for it."""
    cause: str
    evidence: dict = field(default_factory=dict)


# --- evidence: how a given value is compared with the truth ---------------------------

def _cap(v) -> str:
    s = str(v).strip().upper()
    return s if s.startswith("CAP_") else "CAP_" + s


def _path(v) -> str:
    return os.path.normpath("/" + str(v).strip().lstrip("/"))


def _size(v) -> int | None:
    return cgroups.parse_size(v, "limit") if not isinstance(v, bool) else None


def _lower(v) -> str:
    return str(v).strip().lower()


def _int(v) -> int:
    if isinstance(v, bool):
        raise ValueError(v)
    return int(v)


NORMALIZE: dict[str, Callable[[Any], Any]] = {
    "capability": _cap, "path": _path, "max": _size, "limit": _lower, "port": _int,
    "address": lambda v: str(v).strip(), "missing": lambda v: str(v).strip().split("/")[-1],
}


# --- the catalogue ---------------------------------------------------------------------

CATALOGUE: dict[str, type["Scenario"]] = {}


def register(cls: type["Scenario"]) -> type["Scenario"]:
    """Class decorator: add a scenario to the catalogue under its ``name``."""
    if not cls.name or cls.name in CATALOGUE and CATALOGUE[cls.name] is not cls:
        raise BadInput(f"a scenario needs a unique name: {cls.name!r}")
    if cls.cause not in CAUSES:
        raise BadInput(f"scenario {cls.name}: unknown cause {cls.cause!r} (add_cause it first)")
    CATALOGUE[cls.name] = cls
    return cls


def catalogue() -> list[tuple[str, str, str]]:
    """(name, title, cause) of every scenario, in registration order."""
    return [(c.name, c.title, c.cause) for c in CATALOGUE.values()]


def get(name: str) -> "Scenario":
    """A new, not yet started scenario by name."""
    if name not in CATALOGUE:
        raise BadInput(f"no scenario {name!r}: one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name]()


def start(name: str, seed: int = 0) -> "Scenario":
    """Start a scenario by name (``seed`` varies its details, per learner in chapter 15)."""
    return get(name).start(seed)


class Scenario:
    """A broken container. Subclasses set the class attributes and ``_make``/``_truth``."""
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    cause: ClassVar[str] = ""
    hints: ClassVar[tuple[str, ...]] = ()
    evidence_keys: ClassVar[tuple[str, ...]] = ()   # what a right diagnosis must name

    def __init__(self):
        self.seed: int | None = None
        self.params: dict = {}
        self.target: container.Container | None = None   # the broken container
        self.attempts = 0
        self._entries: list[lab.Entry] = []
        self._made: list = []

    # -- life cycle --
    def start(self, seed: int = 0) -> "Scenario":
        if self.seed is not None:
            raise BadInput(f"scenario {self.name} is already started: remove() it, start a new one")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise BadInput(f"seed is an int (a learner's number), not {seed!r}")
        self.seed = seed
        self.params = self._choose(random.Random(f"{self.name}:{seed}"))
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every container and folder the scenario made (safe twice)."""
        for obj in reversed(self._made):
            obj.remove()
        self._made.clear()
        for e in reversed(self._entries):
            lab.remove(e)
        self._entries.clear()
        self.target = None

    def __enter__(self) -> "Scenario":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = f"seed={self.seed}" if self.seed is not None else "not started"
        return f"<scenario {self.name} {state}>"

    # -- what a subclass provides --
    def _choose(self, rng: random.Random) -> dict:
        return {}

    def _make(self) -> None:
        raise NotImplementedError

    def _truth(self) -> dict:
        """The evidence, read live from the kernel."""
        raise NotImplementedError

    @property
    def symptom(self) -> str:
        raise NotImplementedError

    def explain(self) -> str:
        raise NotImplementedError

    # -- helpers for subclasses --
    def _container(self, argv, **kw) -> container.Container:
        c = container.Container(argv, **kw)
        self._made.append(c)
        c.start()
        return c

    def _dir(self, suffix: str) -> str:
        path = os.path.join(lab.run_dir(), lab.name(suffix))
        self._entries.append(lab.register("dir", path, note=f"scenario {self.name}"))
        os.makedirs(path)
        return path

    def _need(self) -> container.Container:
        if self.target is None:
            raise BadInput(f"scenario {self.name} is not started: start(seed) it first")
        return self.target

    # -- checking a diagnosis --
    def judge(self, diagnosis):
        """The verdict on a diagnosis without counting attempts: ``checks.right(...)`` or a
        ``checks.Wrong`` of a named kind whose hints escalate (the checks' decorator, or
        :meth:`verify`, picks the hint for the attempt).  Type and shape first."""
        self._need()
        if diagnosis is ... or diagnosis is None:
            return wrong("missing", "fill in `diagnosis` with scenarios.Diagnosis(cause, evidence), "
                                    "run it, then run this cell again")
        if not isinstance(diagnosis, Diagnosis):
            return wrong("type", "a diagnosis is scenarios.Diagnosis(cause=..., evidence={...}); "
                                 f"it is {describe(diagnosis)}")
        if not isinstance(diagnosis.cause, str) or diagnosis.cause not in CAUSES:
            return wrong("unknown-cause", f"unknown cause {diagnosis.cause!r}: one of "
                                          + ", ".join(sorted(CAUSES)))
        if not isinstance(diagnosis.evidence, dict):
            return wrong("type", "evidence is a dict of facts, e.g. {'port': 8080}; it is "
                                 + describe(diagnosis.evidence))
        if diagnosis.cause != self.cause:
            head = f"not {diagnosis.cause!r}: {CAUSES[diagnosis.cause]} does not explain this symptom."
            return wrong("wrong-cause", *[f"{head} Hint: {h}" for h in self.hints or ("look again",)])
        missing_keys = [k for k in self.evidence_keys if k not in diagnosis.evidence]
        if missing_keys:
            return wrong("evidence-missing", "the right cause. Now the evidence: add "
                         + ", ".join(f"evidence[{k!r}]" for k in missing_keys))
        truth = self._truth()
        bad = []
        for k in self.evidence_keys:
            try:
                ok = self._match(k, diagnosis.evidence[k], truth[k])
            except (ValueError, TypeError, LabError):
                ok = False
            if not ok:
                bad.append(k)
        if bad:
            head = ("the right cause, but the kernel says otherwise about "
                    + ", ".join(f"evidence[{k!r}]={diagnosis.evidence[k]!r}" for k in bad) + ".")
            return wrong("evidence-wrong", *[f"{head} Hint: {h}" for h in self.hints[1:] or ("look again",)])
        return right(f"{self.title}: {CAUSES[self.cause]}. {self.fix}")

    def verify(self, diagnosis) -> Verdict:
        """Right, or a hint: hints escalate with this scenario's wrong attempts."""
        r = self.judge(diagnosis)
        if isinstance(r, Verdict):
            return r
        if r.kind in NOT_ATTEMPTS:
            return Verdict(False, r.hints[0], kind=r.kind)
        self.attempts += 1
        level = min(self.attempts, len(r.hints))
        return Verdict(False, r.hints[level - 1], kind=r.kind, level=level, levels=len(r.hints))

    fix: ClassVar[str] = ""

    def _match(self, key: str, given, truth) -> bool:
        norm = NORMALIZE.get(key, lambda v: v)
        if isinstance(truth, (set, frozenset, list, tuple)):
            return norm(given) in {norm(t) for t in truth}
        return norm(given) == norm(truth)



def _exec(s: "Scenario", argv: list[str], timeout: float = 10.0):
    """What `docker exec` into the broken container does: debug.exec_in (the one launcher)."""
    from . import debug
    return debug.exec_in(s._need(), argv, timeout=timeout)


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a condition the kernel gives no event for (a counter, a log line), bounded."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LabError(f"{what} within {timeout:g} s: is the machine very busy? remove() and retry")
        time.sleep(0.01)


# --- the six of chapters 08-10 ---------------------------------------------------------

def _image_without_tools(root: str) -> None:
    """A 'distroless' image: one static program (busybox under the name httpd,
    so it is only an HTTP server) and its files - no shell, no ps, no ls."""
    for d in ("bin", "proc", "dev", "etc", "www", "tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(rootfs.busybox_binary(), os.path.join(root, "bin", "httpd"))
    with open(os.path.join(root, "www", "index.html"), "w") as f:
        f.write("<h1>distroless app</h1>\n")
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/nonexistent\n")


@register
class NoTools(Scenario):
    name = "distroless"
    title = "No shell, no tools"
    cause = "no-tools"
    evidence_keys = ("missing",)
    hints = ("what did `exec sh` answer: not 'permission denied' but 'not found'? Look at the "
             "image's files from the host: /proc/PID/root.",
             "list /proc/PID/root/bin from the host: which programs are there at all?",
             "Diagnosis('no-tools', {'missing': 'sh'}): the program you wanted is not in the image.")
    fix = ("Bring the tools in without changing the image: a sidecar or debug container sharing "
           "its namespaces (chapters 09, 11), or work from the host (10).")

    def _make(self):
        root = self._dir("img")
        _image_without_tools(root)
        self.target = self._container(["/bin/httpd", "-f", "-p", "8080", "-h", "/www"], rootfs=root,
                                      network=True, memory="64M", pids=32)

    def _truth(self):
        root = f"/proc/{self._need().pid}/root"
        absent = [t for t in ("sh", "bash", "ash", "ps", "ls", "cat", "ss", "netstat", "ip", "top",
                              "strace", "busybox")
                  if not any(os.path.lexists(os.path.join(root, d, t))
                             for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin"))]
        return {"missing": absent}

    @property
    def symptom(self):
        return (f"`docker exec -it {self._need().name} sh` answers: exec: \"sh\": executable file "
                "not found in $PATH. The app serves pages, but nobody can look inside.")

    def reproduce(self) -> str:
        r = _exec(self, ["sh"])
        return f"exit {r.returncode}: {r.error or r.stderr.strip()}"

    def explain(self):
        return ("The image holds one static program and its data, as distroless and scratch images "
                "do (smaller, fewer CVEs). exec_in runs a program *from the target's root*, so there "
                "is nothing to run. Copying a busybox in at run time works but changes the container "
                "(an anti-pattern: chapter 13). Bring tools from elsewhere: a sidecar (09) or the host (10).")


@register
class LoopbackOnly(Scenario):
    name = "loopback-only"
    title = "Listening, but only on loopback"
    cause = "loopback-only"
    evidence_keys = ("address", "port")
    hints = ("the app's own log says it listens. Listens *where*? Sockets live in network "
             "namespaces (network_namespaces(7)).",
             "from the host, `ss -ltn` shows the host's namespace only: list the sockets inside "
             "the container's (nsenter -t PID -n ss -ltn, or debug.inspect(target).sockets).",
             "an address of 127.0.0.0/8 is loopback: reachable only from inside the same namespace. "
             "Diagnosis('loopback-only', {'address': ..., 'port': ...}).")
    fix = "Bind to 0.0.0.0 (all addresses) inside the container, as `-p 0.0.0.0:PORT` would."

    def _choose(self, rng):
        return {"port": rng.choice((8000, 8080, 8888, 9000, 5000, 3000))}

    def _make(self):
        self.target = self._container(["httpd", "-f", "-p", f"127.0.0.1:{self.params['port']}", "-h", "/var/www"],
                                      network=True, memory="64M", pids=32)

    def _truth(self):
        from . import debug
        with debug.target(self._need()) as t:
            socks = debug.listening(t)
        return {"address": [s.address for s in socks if s.loopback_only] or ["?"],
                "port": [s.port for s in socks if s.loopback_only] or [-1]}

    @property
    def symptom(self):
        c = self._need()
        return (f"`curl http://{c.address}:{self.params['port']}/` from the host: Connection refused. "
                f"The app runs and its log says it listens on port {self.params['port']}.")

    def reproduce(self) -> str:
        return self.try_from_host()

    def try_from_host(self) -> str:
        """The symptom, live: connect from the host to the container's address."""
        c = self._need()
        try:
            with socket.create_connection((c.address, self.params["port"]), timeout=2):
                return "connected"
        except OSError as exc:
            return f"{os.strerror(exc.errno) if exc.errno else exc} ({type(exc).__name__})"

    def explain(self):
        return ("Each network namespace has its own loopback device. 127.0.0.1 inside the "
                "container is the container's lo, unreachable from any other namespace - also "
                "from the host and through a published port. Seen only from inside its netns: "
                "`nsenter -t PID -n ss -ltn`, a sidecar sharing net, or inspect.")


@register
class ToolOOM(Scenario):
    name = "tool-oom"
    title = "The debugging tool is OOM-killed"
    cause = "memory-limit"
    evidence_keys = ("limit", "max")
    hints = ("exit status 137 (or -9 here) is 128 + 9: SIGKILL. The tool did not crash: something "
             "killed it. Who sends SIGKILL unasked?",
             "the tool ran *inside the container's cgroup*: read its memory counters - "
             "memory.events (v2) or memory.oom_control (v1) - before and after.",
             "Diagnosis('memory-limit', {'limit': 'memory', 'max': <the limit in bytes>}): "
             "debug.inspect(target).stats has memory_max and oom_kills.")
    fix = ("A tool exec'd into a container shares its memory limit with the app. Run it from "
           "outside the cgroup: a sidecar with its own cgroup (09) or the host (10).")
    tool = ("dd", "if=/dev/zero", "of=/dev/null", "bs=1G", "count=1")

    def _choose(self, rng):
        # Any limit below the tool's 1G buffer: the tool is then the biggest process in the
        # cgroup, and the OOM killer's choice (cgroup-v2.rst, "OOM").
        return {"memory": rng.choice((64, 96, 128)) << 20}

    def _make(self):
        self.target = self._container(["httpd", "-f", "-p", "8080"], memory=self.params["memory"],
                                      pids=32)
        # No swap beyond the limit: on a machine with swap (many VMs) the tool would be
        # swapped out instead of killed (cgroup-v2.rst memory.swap.max; v1 memory.memsw.*).
        place = cgroups.places_of(self.target.pid)["memory"]
        name, value = (("memory.swap.max", "0") if place.hierarchy.version == 2
                       else ("memory.memsw.limit_in_bytes", str(self.params["memory"])))
        if os.path.exists(os.path.join(place.path, name)):
            cgroups.files._write(os.path.join(place.path, name), value)

    def _truth(self):
        from . import debug
        with debug.target(self._need()) as t:
            st = cgroups.read_stats(cgroups.places_of(t.pid))
        return {"limit": "memory", "max": st.memory_max}

    @property
    def symptom(self):
        return ("`docker exec app " + " ".join(self.tool) + "` (a diagnosis that needs a 1G "
                "buffer) dies at once: Killed, exit status 137. It works on the host.")

    def reproduce(self) -> str:
        c = self._need()
        before = cgroups.read_stats(cgroups.places_of(c.pid)).oom_kills
        r = _exec(self, list(self.tool), timeout=30)
        after = cgroups.read_stats(cgroups.places_of(c.pid)).oom_kills
        how = "Killed (SIGKILL)" if r.returncode == -9 else f"exit {r.returncode}"
        return f"{' '.join(self.tool)}: {how}; the cgroup's oom_kill count {before} -> {after}"

    def explain(self):
        return ("exec_in (docker exec) puts the tool into the target's cgroup: its memory counts "
                "against the app's limit. Over it, the OOM killer picks the biggest process - the "
                "tool here, the app on a worse day. memory.events oom_kill (v2) / "
                "memory.oom_control oom_kill (v1) counts it.")


@register
class PidsExhausted(Scenario):
    name = "pids-exhausted"
    title = "pids.max reached: exec fails"
    cause = "pids-limit"
    evidence_keys = ("limit", "max")
    hints = ("EAGAIN from fork means 'try again': a limit on processes, not on memory. Which ones "
             "does the kernel keep per cgroup?",
             "compare pids.current with pids.max in the container's pids cgroup; pids.events "
             "counts the refused forks.",
             "Diagnosis('pids-limit', {'limit': 'pids', 'max': <pids.max>}).")
    fix = ("Find what forks (ps from a sidecar sharing pid, or from the host); raise pids.max or "
           "fix the leak. A debug container outside the cgroup can still fork.")

    def _choose(self, rng):
        return {"workers": rng.choice((5, 7, 9, 11))}

    def _make(self):
        k = self.params["workers"]
        # The app: a shell that forks k workers which never exit.
        script = f"i=0; while [ $i -lt {k} ]; do sleep 100000 & i=$((i+1)); done; wait"
        c = self._container(["sh", "-c", script], memory="64M", pids=64)
        self.target = c
        from . import debug
        with debug.target(c) as t:
            # Until all k workers run (the kernel has no event for it; bounded).
            _wait_for(lambda: len(debug.processes(t)) >= k + 1,
                      f"scenario {self.name}: the app did not start its {k} workers")
        # Then the limit is set to what the cgroup holds now: full (read, not computed
        # from k: it is exact whatever else the app started).
        place = cgroups.places_of(c.pid)["pids"]
        current = cgroups.read_stats({"pids": place}).pids_current
        cgroups.files._write(os.path.join(place.path, "pids.max"), str(current))
        self.params["pids"] = current

    def _truth(self):
        st = cgroups.read_stats(cgroups.places_of(self._need().pid))
        return {"limit": "pids", "max": st.pids_max}

    @property
    def symptom(self):
        return ("`docker exec app sh` fails: 'fork: Resource temporarily unavailable' (EAGAIN). "
                "The app still answers.")

    def reproduce(self) -> str:
        c = self._need()
        before = cgroups.read_stats(cgroups.places_of(c.pid)).pids_max_events
        r = _exec(self, ["sh", "-c", "echo in"])
        said = f"exit {r.returncode}: {r.error or r.stderr.strip() or r.stdout.strip()}"
        after = cgroups.read_stats(cgroups.places_of(c.pid)).pids_max_events
        return f"{said}; pids.events max {before} -> {after}"

    def explain(self):
        return ("pids.max caps the tasks of the cgroup (cgroup-v2.rst, pids). The app's workers fill "
                "it; exec_in joins the same cgroup, so its fork() gets EAGAIN and pids.events max "
                "counts one more. Migration into a full cgroup is allowed, forking in it is not.")


@register
class NetRawDropped(Scenario):
    name = "net-raw-dropped"
    title = "ping: permission denied, as root"
    cause = "capability-dropped"
    evidence_keys = ("capability",)
    hints = ("uid 0 is not all of root: privileges are capabilities (capabilities(7)). Which one "
             "does opening a raw ICMP socket need?",
             "decode the container's CapEff (/proc/PID/status) - capabilities.decode(), or "
             "debug.inspect(target).caps - and compare with an engine's default set.",
             "Diagnosis('capability-dropped', {'capability': 'CAP_...'}): raw sockets need CAP_NET_RAW.")
    fix = ("Add the capability back (`docker run --cap-add NET_RAW`), or use a tool that needs "
           "none (ICMP datagram sockets: net.ipv4.ping_group_range).")

    def _make(self):
        keep = [c for c in container.ENGINE_DEFAULT if capabilities.cap_number(c) != 13]
        self.target = self._container(["httpd", "-f", "-p", "8080"], network=True, caps=keep,
                                      memory="64M", pids=32)

    def _truth(self):
        from . import debug
        with debug.target(self._need()) as t:
            eff = {c.upper() for c in t.caps.effective}
        engine = {_cap(c) for c in container.ENGINE_DEFAULT}
        return {"capability": sorted(engine - eff)}

    @property
    def symptom(self):
        return ("Inside the container, `ping 127.0.0.1` says: ping: permission denied (are you "
                "root?) - and `id` says uid=0(root).")

    def reproduce(self) -> str:
        r = _exec(self, ["ping", "-c", "1", "-W", "1", "127.0.0.1"])
        return f"exit {r.returncode}: {r.stderr.strip()}"

    def explain(self):
        return ("The container runs as uid 0 but without CAP_NET_RAW in its sets; ping's raw "
                "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) is refused with EPERM (raw(7)). Docker "
                "keeps NET_RAW by default; hardened profiles and Kubernetes' restricted policy drop it.")


@register
class ConfigMissing(Scenario):
    name = "config-missing"
    title = "The config volume is missing"
    cause = "volume-missing"
    evidence_keys = ("path",)
    hints = ("the app's log names a file it cannot read. Is it missing from the image, or from a "
             "volume that should be mounted there?",
             "list the container's mounts from the host (/proc/PID/mountinfo, or "
             "debug.inspect(target).mounts): is anything mounted on that folder?",
             "Diagnosis('volume-missing', {'path': <where the volume should be mounted>}).")
    fix = ("Start the container with the volume (`docker run -v HOSTDIR:PATH:ro`); the host folder "
           "with the config exists, the deployment forgot to mount it.")

    def _choose(self, rng):
        return {"dir": rng.choice(("/config", "/etc/app", "/srv/config")),
                "file": rng.choice(("app.conf", "settings.ini", "server.toml"))}

    def _make(self):
        conf = self._dir("conf")  # the volume's host folder: there, but never mounted
        with open(os.path.join(conf, self.params["file"]), "w") as f:
            f.write("listen = 0.0.0.0:8080\n")
        self.params["host_dir"] = conf
        p = f"{self.params['dir']}/{self.params['file']}"
        script = (f"while [ ! -f {p} ]; do echo \"app: cannot read {p}: No such file or "
                  f"directory\" >&2; sleep 5; done; exec httpd -f -p 8080")
        self.target = self._container(["sh", "-c", script], memory="64M", pids=32)
        _wait_for(lambda: "cannot read" in self.target.logs("stderr"),
                  f"scenario {self.name}: the app wrote no log line")

    def _truth(self):
        from . import debug
        mounted = {m["target"] for m in debug._mounts(self._need().pid)}
        d = self.params["dir"]
        return {"path": [] if d in mounted else [d, f"{d}/{self.params['file']}"]}

    @property
    def symptom(self):
        p = f"{self.params['dir']}/{self.params['file']}"
        return (f"The app never starts serving; its log repeats: app: cannot read {p}: "
                "No such file or directory.")

    def reproduce(self) -> str:
        lines = self._need().logs("stderr").strip().splitlines()
        return lines[-1] if lines else "(no log yet)"

    def explain(self):
        return (f"The config lives in a host folder meant to be bind-mounted at {self.params['dir']} "
                "(mount(2) MS_BIND: a volume). The container was started without it, so the path "
                "is the image's empty folder (or none). /proc/PID/mountinfo shows no mount there.")
