"""Checks of 09 · A sidecar with the tools.

The share matrix is checked by trying it: each task runs in a real sidecar that
shares exactly the namespaces the learner chose, and the kernel says whether it works.
"""
from __future__ import annotations

import contextlib

from .. import debug, scenarios
from . import Rows, describe, exercise, right, run_first, wrong

KINDS = ("pid", "net", "ipc", "uts")
NOT_SHARED = ("mnt", "cgroup", "user", "time")

# The tasks of the matrix: a shell line run in the sidecar, and what proves it worked.
TASKS = {
    "ps": ("ps -o comm", lambda out, app: app["comm"] in out.split()),
    "ss": ("ss -Hltn", lambda out, app: f":{app['port']} " in out),
    # fetch the app on 127.0.0.1 (busybox nc: the static busybox's wget crashes in a root
    # without glibc's NSS modules)
    "http": (None, lambda out, app: out.startswith("HTTP/1.")),
    "files": ("ls /proc/1/root/www", lambda out, app: "index.html" in out.split()),
    "hostname": ("hostname", lambda out, app: out.strip() == app["hostname"]),
}


def _app(scenario) -> dict:
    c = scenario.target
    return {"comm": "httpd", "port": 8080, "hostname": c.hostname}


_truths: dict = {}


def truth(scenario) -> dict[str, set[str]]:
    """For each task, the single kinds that make it work - found by trying each alone
    (once per running app: it does not change while the app runs)."""
    key = (scenario.target.pid, scenario.target.name)
    if key in _truths:
        return _truths[key]
    out: dict[str, set[str]] = {t: set() for t in TASKS}
    app = _app(scenario)
    script = []
    for task, (line, _) in TASKS.items():
        line = line or (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 "
                        f"{app['port']} | head -1")
        script.append(f"echo '@@{task}'; {line}; echo \"@@rc=$?\"")
    for kind in ("pid", "net", "uts"):   # no task of the matrix looks at ipc objects
        with debug.sidecar(scenario, share=(kind,)) as sc:
            r = sc.run(["sh", "-c", "\n".join(script)], timeout=30)
        task, body = None, []
        for line in r.stdout.splitlines():
            if line.startswith("@@rc="):
                if task and line == "@@rc=0" and TASKS[task][1]("\n".join(body) + "\n", app):
                    out[task].add(kind)
                task, body = None, []
            elif line.startswith("@@") and line[2:] in TASKS:
                task, body = line[2:], []
            else:
                body.append(line)
    _truths[key] = out
    return out


def _matrix(value) -> dict[str, set[str]]:
    if not isinstance(value, dict):
        raise wrong("type", f"`share` should be a dict {{task: set of namespace kinds}}, like "
                            f"{{'ps': {{'pid'}}}}; it is {describe(value)}")
    unknown = [t for t in value if t not in TASKS]
    if unknown:
        raise wrong("unknown-task", f"{unknown[0]!r} is not a task of the matrix: the tasks are "
                                    + ", ".join(TASKS))
    missing = [t for t in TASKS if t not in value]
    if missing:
        raise wrong("incomplete", "the matrix has a row per task: add " + ", ".join(
            repr(t) for t in missing))
    out = {}
    for t, kinds in value.items():
        if isinstance(kinds, str):
            raise wrong("type", f"share[{t!r}] should be a set of kinds, even for one: {{{kinds!r}}}")
        if not isinstance(kinds, (set, frozenset, list, tuple)):
            raise wrong("type", f"share[{t!r}] should be a set of kinds like {{'pid'}}; it is "
                                + describe(kinds))
        bad = [k for k in kinds if k not in KINDS + NOT_SHARED]
        if bad:
            raise wrong("unknown-kind", f"{bad[0]!r} is not a namespace kind: pid, net, ipc, uts "
                                        "(mnt, cgroup, user, time exist too)")
        out[t] = set(kinds)
    return out


@exercise(1, context=("scenario",), title="which namespaces to share")
def check_share(share, scenario):
    m = _matrix(share)
    if scenario is None or getattr(scenario, "target", None) is None:
        raise run_first("the cell that starts the scenario `s`")
    for t, kinds in m.items():
        bad = kinds & set(NOT_SHARED)
        if bad:
            return wrong("own-mnt-cgroup",
                         f"share[{t!r}] names {', '.join(sorted(bad))}: a sidecar keeps its own "
                         "mount and cgroup namespaces - its tools live in its own root, its limits "
                         "in its own cgroup",
                         "sharing mnt would swap the sidecar's root (and tools) for the app's; "
                         "sharing cgroup (and the cgroup) would put it under the app's limits: "
                         "chapter 08's trap")
    live = truth(scenario)
    for t, kinds in m.items():
        if not kinds & live[t]:
            return wrong("does-not-work",
                         f"with {sorted(kinds) or 'nothing'} shared, {t!r} does not work: which "
                         "namespace holds what that task looks at?",
                         f"{t!r} reads {'processes (/proc)' if live[t] == {'pid'} else 'sockets' if live[t] == {'net'} else 'the hostname' if live[t] == {'uts'} else 'something'}: "
                         f"share {' or '.join(sorted(live[t]))}")
    extra = {t: kinds - live[t] for t, kinds in m.items() if kinds - live[t]}
    if extra:
        t, k = next(iter(extra.items()))
        return wrong("too-many",
                     f"it works, but share[{t!r}] shares more than the task needs ({', '.join(sorted(k))}): "
                     "share as little as you can",
                     f"{t!r} works with {sorted(live[t])} alone: drop {', '.join(sorted(k))}")
    return right("each task needs one namespace of the app, and the sidecar keeps its own mount "
                 "and cgroup namespaces: docker run --pid/--net=container:app, or a pod's shared "
                 "namespaces, do exactly this")


# --- exercise 2: a diagnosis made from the sidecar -----------------------------------

@exercise(2, context=("scenario",), title="diagnose with a sidecar")
def check_diagnosis(diagnosis, scenario):
    if scenario is None or getattr(scenario, "target", None) is None:
        raise run_first("the cell that starts the scenario")
    return scenario.judge(diagnosis)


# --- the table (tests/test_exercises.py) -----------------------------------------------

RIGHT = {"ps": {"pid"}, "ss": {"net"}, "http": {"net"}, "files": {"pid"}, "hostname": {"uts"}}


@contextlib.contextmanager
def _scenario(name):
    with scenarios.start(name, seed=0) as s:
        yield {"scenario": s}


def _dx(cause, **evidence):
    return {"diagnosis": scenarios.Diagnosis(cause, evidence)}


TABLE = {
    1: Rows(setup=lambda: _scenario("distroless"),
            right=lambda c: dict(share=RIGHT),
            wrong={
                "type": lambda c: dict(share=[("ps", "pid")]),
                "type:str": lambda c: dict(share={**RIGHT, "ps": "pid"}),
                "unknown-task": lambda c: dict(share={**RIGHT, "top": {"pid"}}),
                "incomplete": lambda c: dict(share={"ps": {"pid"}}),
                "unknown-kind": lambda c: dict(share={**RIGHT, "ss": {"network"}}),
                "own-mnt-cgroup": lambda c: dict(share={**RIGHT, "files": {"mnt"}}),
                "does-not-work": lambda c: dict(share={**RIGHT, "ss": {"pid"}}),
                "too-many": lambda c: dict(share={**RIGHT, "ps": {"pid", "net"}}),
            }),
    2: Rows(setup=lambda: _scenario("config-missing"),
            right=lambda c: _dx("volume-missing", path=c["scenario"].params["dir"]),
            wrong={
                "type": lambda c: dict(diagnosis={"cause": "volume-missing"}),
                "wrong-cause": lambda c: _dx("no-tools", missing="sh"),
                "evidence-missing": lambda c: _dx("volume-missing"),
                "evidence-wrong": lambda c: _dx("volume-missing", path="/var/www"),
            }),
}
