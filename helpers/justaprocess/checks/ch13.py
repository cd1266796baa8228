"""Checks of 13 · Container do's and don'ts.

Each check asks the kernel: the ELF headers of the binaries, a live reload in
the running container (its log and PID 1's start time), a write in a fresh
container with a read-only root.
"""
from __future__ import annotations

import contextlib
import os

from .. import proc
from . import Rows, describe, expect_collection, expect_str, exercise, right, run_first, wrong

# --- exercise 1: which binaries run in a bare root ---------------------------------------

# Those present here (a static-pie ldconfig on Debian; on Ubuntu /sbin/ldconfig is a script).
CANDIDATES = tuple(p for p in ("/bin/busybox", "/usr/bin/id", "/sbin/ldconfig", "/usr/bin/inotifywait")
                   if os.path.exists(p))


def _static(paths) -> set[str]:
    """The ELF files that name no interpreter (a script or a dynamic binary needs one)."""
    from ..errors import BadInput
    from ..practices import elf_interpreter
    out = set()
    for p in paths:
        try:
            if elf_interpreter(os.path.realpath(p)) is None:
                out.add(p)
        except (BadInput, OSError):
            pass   # not an ELF file: a script needs its interpreter too
    return out


@exercise(1, context=("candidates",), title="static or dynamic")
def check_static(runs_bare, candidates=CANDIDATES):
    items = expect_collection(runs_bare, "runs_bare", "a set of paths from `candidates`", str,
                              "a path like '/bin/busybox'")
    answer = set(items)
    unknown = sorted(answer - set(candidates))
    if unknown:
        return wrong("unknown-path", f"{unknown[0]!r} is not one of `candidates`: answer with "
                                     "their paths as they are written there")
    truth = _static(candidates)
    dynamic = sorted(answer - truth)
    if dynamic:
        return wrong("dynamic",
                     f"{dynamic[0]} names an ELF interpreter: in a root without it, execve(2) "
                     "fails with ENOENT",
                     f"practices.elf_interpreter({dynamic[0]!r}) is not None: it is dynamic")
    if answer != truth:
        return wrong("incomplete",
                     "one more of them needs no ELF interpreter: check each with "
                     "practices.elf_interpreter(path)",
                     f"{sorted(truth - answer)[0]} has no PT_INTERP: static (a static-pie "
                     "binary counts too)")
    return right("only the binaries without an ELF interpreter run in a bare root; a dynamic "
                 "one fails with ENOENT although the file is there")


# --- exercise 2: change the config on its volume, no restart ------------------------------

GREETING = "hello, volume"


@exercise(2, context=("app", "config_dir", "started"), title="reload without restart")
def check_reload(config_file, app, config_dir, started):
    path = expect_str(config_file, "config_file", "a host path (a string)")
    if app is None or not app.running():
        raise run_first("the cell that starts `app` (it is not running)")
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(config_dir):
        return wrong("not-on-volume",
                     "that file is not on the config volume: the container sees the host "
                     "folder `config_dir` at /config",
                     "os.path.join(config_dir, 'app.conf') is the file the app reads")
    if os.path.basename(real) != "app.conf":
        return wrong("wrong-file", "the app reloads only when /config/app.conf changes")
    with open(real) as f:
        text = f.read()
    if f'GREETING="{GREETING}"' not in text and f"GREETING='{GREETING}'" not in text:
        return wrong("content", f"the file should set GREETING to {GREETING!r}: write "
                                f'GREETING="{GREETING}" (shell syntax: quotes around the space)')
    from ..practices import NoSuchLine, last_line, wait_until
    want = f"GREETING={GREETING} "
    try:
        line = wait_until(app, lambda log: (l := last_line(log, "config loaded")) and want in l and l,
                          timeout=5, what="the reload")
    except NoSuchLine:
        return wrong("not-reloaded", "the file is right but the app did not reload it: is "
                                     "/config/app.conf the file you wrote?")
    if proc.start_time(app.pid) != started:
        return wrong("restarted", "PID 1 is a new process: change the file, do not restart")
    return right(f"the log says {line.split(': ', 1)[1]!r}: inotify saw the file change on the "
                 "volume, and the same PID 1 reloaded it")


# --- exercise 3: where a read-only container can write -------------------------------------

@exercise(3, context=("volume_dir",), title="immutable and stateless")
def check_writable(writable, volume_dir):
    path = expect_str(writable, "writable", "a path inside the container (a string)")
    if not path.startswith("/"):
        return wrong("relative", "give the absolute path inside the container, starting with '/'")
    from ..container import Container, Volume
    name = "written-by-the-check"
    with Container(["/bin/sh", "-c", f'touch "{path.rstrip("/")}/{name}"'],
                   readonly_paths=["/"], volumes=[Volume(volume_dir, "/data")]) as c:
        r = c.run()
    on_host = os.path.join(volume_dir, name)
    kept = os.path.exists(on_host)
    if kept:
        os.unlink(on_host)
    if r.returncode != 0:
        return wrong("read-only",
                     f"touch failed there: {r.stderr.strip() or r.stdout.strip()}",
                     "the root is read-only; only the volume (mounted at /data) is writable")
    if not kept:
        return wrong("not-kept", "writable, but not on the volume: it dies with the container")
    return right("only the volume is writable: the root stays as the image made it, the state "
                 "outlives the container")


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

@contextlib.contextmanager
def _reloading():
    from .. import practices
    from ..container import Container, Volume
    with practices.make_root(suffix="cfg", dirs=(), text={"app.conf": 'GREETING="hello"\n'}) as cfg:
        with Container(["/bin/sh", "/app"], volumes=[Volume(cfg.path, "/config", True)]) as app:
            app.create()
            with open(os.path.join(app.root, "app"), "w") as f:
                f.write(practices.RELOADING_APP)
            practices.inotify_tools(app.root)
            app.start()
            practices.wait_line(app, practices.READY)
            yield {"app": app, "config_dir": cfg.path, "started": proc.start_time(app.pid)}


def _write(c, name="app.conf", text=f'GREETING="{GREETING}"\n') -> dict:
    path = os.path.join(c["config_dir"], name)
    with open(path, "w") as f:
        f.write(text)
    return dict(config_file=path)


@contextlib.contextmanager
def _volume():
    from .. import practices
    with practices.make_root(suffix="data", dirs=()) as vol:
        yield {"volume_dir": vol.path}


TABLE = {
    1: Rows(right=lambda c: dict(runs_bare=sorted(_static(CANDIDATES))),
            wrong={
                "type": lambda c: dict(runs_bare="/bin/busybox"),
                "unknown-path": lambda c: dict(runs_bare=["busybox"]),
                "dynamic": lambda c: dict(runs_bare=list(CANDIDATES)),
                "incomplete": lambda c: dict(runs_bare=sorted(_static(CANDIDATES))[:1]),
            }),
    2: Rows(setup=_reloading,
            right=lambda c: _write(c),
            wrong={
                "type": lambda c: dict(config_file=3),
                "not-on-volume": lambda c: dict(config_file=os.path.join(c["app"].root, "app")),
                "wrong-file": lambda c: _write(c, "other.conf"),
                "content": lambda c: _write(c, text="GREETING=hello, volume\n"),
            }),
    3: Rows(setup=_volume,
            right=lambda c: dict(writable="/data"),
            wrong={
                "type": lambda c: dict(writable=["/data"]),
                "relative": lambda c: dict(writable="data"),
                "read-only": lambda c: dict(writable="/var/lib"),
            }),
}
