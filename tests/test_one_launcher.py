"""One launcher, small modules (issue: one core).

Read from the source, so it fails before anything runs:
- no module of the package is over 800 lines (split by sub-topic instead);
- only the launcher's own modules start processes (see test_only_the_launcher_starts_processes).
"""
import ast
import os

import justaprocess

PKG_DIR = os.path.dirname(justaprocess.__file__)
MAX_LINES = 800


def package_files() -> list[str]:
    out = []
    for d, _, files in os.walk(PKG_DIR):
        out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    return sorted(out)


def test_no_module_over_800_lines():
    long = {}
    for path in package_files():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[os.path.relpath(path, PKG_DIR)] = n
    assert not long, f"split these by sub-topic (at most {MAX_LINES} lines each): {long}"


def test_the_launcher_is_one_api():
    # Split in three modules, still used as one: `_launch.X`.
    from justaprocess import _launch
    for name in ("Spec", "Result", "StepFailed", "Timeout", "Fd", "Bounded", "Handle",
                 "start", "run", "tool", "kinds_of", "reduce_capabilities", "step"):
        assert hasattr(_launch, name), name


# What starts a process: the call, by the name it is reached through.
STARTS = {
    "os": {"fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen", "execv", "execve",
           "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve",
           "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe"},
    "subprocess": {"Popen", "run", "call", "check_call", "check_output", "getoutput",
                   "getstatusoutput"},
    "pty": {"fork", "spawn"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "multiprocessing": {"Process", "Pool"},
    "_libc": {"clone", "fork_single_threaded"},
}
# The launcher itself: the caller side forks or clones, the child side clones and execs.
LAUNCHER = {"_launch_run.py", "_launch_child.py"}
# Anything else that must start a process by hand, and why (keep this short).
ALLOWED = {
    # Chapter 05's step-by-step container: its worker (itself started by the launcher,
    # Spec(fn=serve)) does each step when the notebook asks, the fork into the new pid
    # namespace and the final execve included: the lesson is those calls, one at a time.
    ("container_stepper.py", "_libc.fork_single_threaded"),
    ("container_stepper.py", "os.execve"),
}


def _calls(path: str) -> list[tuple[int, str]]:
    """(line, "module.name") of each call that starts a process, also through
    `from subprocess import run` or `import subprocess as sp`."""
    tree = ast.parse(open(path).read(), path)
    alias = {}   # local name -> module      (import subprocess as sp)
    direct = {}  # local name -> module.name (from subprocess import run)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[-1]
            for a in node.names:
                if a.name in STARTS:  # from . import _libc
                    alias[a.asname or a.name] = a.name
                elif mod in STARTS and a.name in STARTS[mod]:
                    direct[a.asname or a.name] = f"{mod}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            mod = alias.get(f.value.id, f.value.id)
            if f.attr in STARTS.get(mod, ()):
                out.append((node.lineno, f"{mod}.{f.attr}"))
        elif isinstance(f, ast.Name) and f.id in direct:
            out.append((node.lineno, direct[f.id]))
    return out


def test_only_the_launcher_starts_processes():
    """Every process the lab starts goes through the one launcher (``_launch``): a
    long-lived one by ``_launch.start`` (or ``lab.spawn``, ``Cgroup.spawn``: thin
    wrappers), a short tool run by ``_launch.tool`` (CONTRIBUTING.md, "One launcher")."""
    found = []
    for path in package_files():
        rel = os.path.relpath(path, PKG_DIR)
        if rel in LAUNCHER:
            continue
        for line, call in _calls(path):
            if (rel, call) not in ALLOWED:
                found.append(f"{rel}:{line}: {call}")
    assert not found, ("start processes through justaprocess._launch (start/run/tool), "
                       "not by hand:\n" + "\n".join(found))


def test_the_walk_sees_every_spelling(tmp_path):
    # The check itself can fail: each way of writing a process start is found.
    src = tmp_path / "m.py"
    src.write_text("import os, subprocess as sp\nfrom subprocess import check_output as co\n"
                   "from . import _libc\n"
                   "os.fork(); sp.run(['x']); co(['x']); _libc.clone(0); os.execvp('x', ['x'])\n"
                   "subprocess.PIPE; os.getpid()\n")
    assert sorted(c for _, c in _calls(str(src))) == [
        "_libc.clone", "os.execvp", "os.fork", "subprocess.check_output", "subprocess.run"]


def test_the_allow_list_is_still_needed():
    # An entry whose call is gone must leave the list (it would allow a new one silently).
    seen = {(os.path.relpath(p, PKG_DIR), c) for p in package_files() for _, c in _calls(p)}
    assert ALLOWED <= seen, f"no longer needed: {ALLOWED - seen}"
