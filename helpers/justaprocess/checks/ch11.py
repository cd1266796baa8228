"""Checks of 11 · Debug containers.

Each check starts a debug container with the learner's answer and asks the
kernel: does `ps` see the app, does netstat see its socket, does strace attach;
the table exercise reads the rows built from live /proc.
"""
from __future__ import annotations

import contextlib

from .. import capabilities as caps
from ..errors import BadInput
from . import (Rows, describe, expect_collection, expect_str, exercise, right, run_first,
               wrong)

KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def _need_running(app) -> None:
    if app is None or not hasattr(app, "running") or not app.running():
        raise run_first("the cell that starts `app` (it is not running)")


# --- exercise 1: the smallest share that sees processes and sockets ------------------------

def _sees(app, share) -> tuple[bool, bool]:
    """(sees the app's processes, sees its listening socket) from a debug container."""
    from ..debugcontainer import DebugContainer
    with DebugContainer(app, share=share) as dc:
        r = dc.run("ps -o args | grep -c '[h]ttpd'; netstat -ltn | grep -c ':8080 '")
    counts = [int(x) for x in r.stdout.split()[:2]] if r.returncode in (0, 1) else [0, 0]
    return counts[0] > 0, counts[1] > 0


@exercise(1, context=("app",), title="the smallest share")
def check_share(share, app):
    items = expect_collection(share, "share", "a set of namespace kinds like {'ipc'}", str,
                              "a kind like 'net'")
    kinds = {k.strip().lower() for k in items}
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        return wrong("unknown-kind", f"{unknown[0]!r} is not a namespace kind: one of {', '.join(KINDS)}")
    never = sorted(kinds & {"mnt", "cgroup"})
    if never:
        return wrong("never-shared",
                     f"a debug container never joins {never[0]}: it keeps its own root and its own "
                     "cgroup (that is the point); which kinds hold processes and sockets?")
    _need_running(app)
    procs, socks = _sees(app, sorted(kinds))
    if not (procs and socks):
        missing = ("its processes (ps)" if not procs else "") + \
                  (" and " if not procs and not socks else "") + \
                  ("its listening socket (netstat)" if not socks else "")
        return wrong("too-few",
                     f"with {sorted(kinds) or 'nothing'} the debug container does not see {missing}",
                     "processes live in a pid namespace (pid_namespaces(7)), sockets in a network "
                     "namespace (network_namespaces(7))")
    extra = sorted(kinds - {"pid", "net"})
    if extra:
        return wrong("extra", f"it works, but {', '.join(extra)} is not needed for ps and netstat: "
                              "the smallest set joins less of the target")
    return right("pid for ps, net for netstat: /proc/1/root reaches the files without the mount "
                 "namespace, and the tools stay the debug container's own")


# --- exercise 2: the capability strace needs -----------------------------------------------

def _attaches(app, keep: list[str]) -> tuple[bool, str]:
    from ..debugcontainer import DebugContainer
    with DebugContainer(app, caps=keep) as dc:
        # strace's first line says whether it attached ("Process 1 attached") or why not:
        # read it through a fifo (an event, not a fixed wait: a slow VM takes its time).
        r = dc.run("mkfifo /tmp/strace.out; strace -p 1 -e trace=none -o /dev/null 2>/tmp/strace.out & "
                   "s=$!; read -r line < /tmp/strace.out; echo \"$line\" >&2; kill $s 2>/dev/null; "
                   "wait $s; rm -f /tmp/strace.out; echo done")
    return "Process 1 attached" in r.stderr, r.stderr.strip().splitlines()[-1:] and \
        r.stderr.strip().splitlines()[-1] or ""


@exercise(2, context=("app",), title="ptrace")
def check_ptrace(needed, app):
    if isinstance(needed, (list, tuple, set, frozenset)):
        raise wrong("type", f"`needed` should be one capability name (a string); it is "
                            f"{describe(needed)}")
    name = expect_str(needed, "needed", "one capability name like 'cap_chown'").strip().lower()
    try:
        name = caps.cap_name(caps.cap_number(name))
    except (BadInput, ValueError, KeyError):
        return wrong("unknown-name", f"{needed!r} is not a capability this kernel knows: names "
                                     "look like 'cap_chown' (capabilities(7))")
    _need_running(app)
    ok, said = _attaches(app, [name])
    if not ok:
        return wrong("wrong-cap",
                     f"with only {name}, strace still fails: {said}",
                     "ptrace(2), 'Ptrace access mode checking': a tracer whose capabilities are "
                     "not a superset of the target's needs one capability named after ptrace")
    return right(f"{name} lets the debug container attach strace to the app although the app "
                 "holds capabilities the debugger does not (ptrace(2) access mode checking)")


# --- exercise 3: which ways in survive the target's pids.max --------------------------------

def _rows_truth(rows) -> set[str]:
    return {r.approach for r in rows if not r.cgroup}


@exercise(3, context=("rows",), title="who survives pids.max")
def check_survivors(survivors, rows):
    from ..debugcontainer import APPROACHES, Sharing
    if not isinstance(rows, list) or not rows or not all(isinstance(r, Sharing) for r in rows):
        raise run_first("the cell that builds `rows` with debugcontainer.sharing(app)")
    items = expect_collection(survivors, "survivors", "a set of approach names from the table",
                              str, "an approach name like 'sidecar'")
    answer = set(items)
    unknown = sorted(answer - set(APPROACHES))
    if unknown:
        return wrong("unknown-approach", f"{unknown[0]!r} is not a row of the table: use the names "
                                         f"in its first column ({', '.join(APPROACHES)})")
    truth = _rows_truth(rows)
    inside = sorted(answer - truth)
    if inside:
        return wrong("in-the-cgroup",
                     f"{inside[0]} runs in the target's cgroup: its fork meets the same pids.max",
                     "look at the 'cgroup (limits)' column: target's means the same pids.max")
    if answer != truth:
        return wrong("incomplete", "more of them run outside the target's cgroup: every row whose "
                                   "'cgroup (limits)' column says own")
    return right("every way in that keeps a cgroup of its own can still fork when the target is "
                 "at pids.max; only exec shares the target's limits")


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

@contextlib.contextmanager
def _app():
    from ..container import Container
    with Container(["/bin/busybox", "httpd", "-f", "-p", "8080"], network=True, memory="32M",
                   pids=16) as app:
        app.start()
        yield {"app": app}


@contextlib.contextmanager
def _rows():
    from ..debugcontainer import sharing
    with _app() as ctx:
        yield {"rows": sharing(ctx["app"])}


TABLE = {
    1: Rows(setup=_app,
            right=lambda c: dict(share={"pid", "net"}),
            wrong={
                "type": lambda c: dict(share="pid,net"),
                "unknown-kind": lambda c: dict(share={"pid", "network"}),
                "never-shared": lambda c: dict(share={"pid", "net", "mnt"}),
                "too-few": lambda c: dict(share={"pid"}),
                "extra": lambda c: dict(share={"pid", "net", "ipc", "uts"}),
            }),
    2: Rows(setup=_app,
            right=lambda c: dict(needed="cap_sys_ptrace"),
            wrong={
                "type": lambda c: dict(needed=["cap_sys_ptrace"]),
                "unknown-name": lambda c: dict(needed="cap_ptrace"),
                "wrong-cap": lambda c: dict(needed="cap_sys_admin"),
            }),
    3: Rows(setup=_rows,
            right=lambda c: dict(survivors=_rows_truth(c["rows"])),
            wrong={
                "type": lambda c: dict(survivors="sidecar"),
                "unknown-approach": lambda c: dict(survivors={"docker exec"}),
                "in-the-cgroup": lambda c: dict(survivors=_rows_truth(c["rows"]) | {"exec"}),
                "incomplete": lambda c: dict(survivors={"sidecar"}),
            }),
}
