"""Fixtures and helpers shared by the unit tests.

Root-only tests are marked ``@pytest.mark.root`` and skip *with a reason* when
not root. The lab is cleaned before the suite; the last item of the run
(tests/test_zz_leftovers.py) asserts that nothing of the lab is left.

Helpers (import them: ``from conftest import wait_for, wait_exit, cli, as_user``):

- ``wait_exit(pid)``: wait for a process to end on its pidfd (pidfd_open(2): the
  fd turns readable when the process exits) - an event, not a poll.
- ``wait_for(condition)``: a bounded poll, only for states the kernel sends no
  event for (a loop device detached, a server listening, a log written).
- ``cli(*args)``: ``python -m justaprocess ARGS`` with its output captured.
- ``as_user(*python_args)``: the lab's Python run as an unprivileged uid.
- the ``image`` fixture: the busybox root filesystem (built once, cached).
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from justaprocess import lab

IS_ROOT = os.geteuid() == 0
PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root: run `make test` as root in the lab VM")
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip)
    # The leftovers check goes after everything, notebooks included.
    last = [i for i in items if "last" in i.keywords]
    items[:] = [i for i in items if "last" not in i.keywords] + last


@pytest.fixture(scope="session", autouse=True)
def _clean_lab_before_suite():
    if IS_ROOT:
        lab.cleanup(stale=True)  # what dead runs and kernels left; never a live one's
    yield


@pytest.fixture
def own_objects():
    """Remove whatever the test registered, even when it failed halfway."""
    yield
    if IS_ROOT:
        lab.cleanup(owner=os.getpid())


@pytest.fixture
def naive_box(own_objects):
    """A chapter-07 NaiveContainer (justaprocess.insecure), removed after the test."""
    from justaprocess import insecure
    with insecure.NaiveContainer() as c:
        yield c
    assert not os.path.exists(c.dir)


@pytest.fixture(scope="session")
def image():
    """The busybox root filesystem (rootfs.build: made once, then cached)."""
    if not IS_ROOT:
        pytest.skip("needs root: run `make test` as root in the lab VM")
    from justaprocess import rootfs
    return rootfs.build("busybox")


# --- waiting ----------------------------------------------------------------------------

def wait_exit(pid: int, timeout: float = 10.0) -> bool:
    """True once PID has exited (or is a zombie), False if it still runs after ``timeout``.

    pidfd_open(2): "the file descriptor becomes readable when the process
    terminates" - works for any process, not only our children.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def wait_for(condition, timeout: float = 10.0, what: str = ""):
    """Poll ``condition()`` until it is truthy and return its value; fail the test after ``timeout``.

    Only for states without an event; the bound is generous (a loaded machine
    is slow, never wrong), and it is not an assertion about speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what or getattr(condition, '__name__', condition)}")
        time.sleep(0.01)


# --- running ----------------------------------------------------------------------------

def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """``python -m justaprocess ARGS``: exit code, stdout and stderr as text."""
    return subprocess.run([PY, "-m", "justaprocess", *args], capture_output=True, text=True, **kw)


def as_user(*python_args: str, uid: int = NOBODY, **kw) -> subprocess.CompletedProcess:
    """Run Python with ``python_args`` and the lab's package as ``uid`` (setpriv(1)), from /.

    As the lab's demos do (justaprocess.portable): the interpreter itself and a
    readable copy of the package, so it works wherever the checkout lies (a
    0700 home folder too). Without root there is nothing to drop: the venv's
    Python runs as the caller.
    """
    kw.setdefault("cwd", "/")
    if not IS_ROOT:
        return subprocess.run([PY, *python_args], capture_output=True, text=True, **kw)
    from justaprocess import portable
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            *portable.argv(*python_args)]
    return subprocess.run(argv, capture_output=True, text=True, env=portable.env(kw.pop("env", None)),
                          **kw)


# --- a lab of its own, for tests of the *full* cleanup ---------------------------------------
# `python -m justaprocess cleanup` also removes lab-named objects that no registry entry names,
# wherever the lab puts them: other runs' live objects on a shared machine too. A test of it
# runs it in an IsolatedLab: its own state folder, network namespace (with a sysfs and an
# rtnetlink view of it), mount namespace (with an empty /run, so no one else's /run/netns),
# and a cgroup of its own in every hierarchy, beneath which the lab's cgroup scan looks.

ISOLATION_PRELUDE = r"""
import os, subprocess, sys
def _sh(*a): subprocess.run(a, check=True)
_state = os.environ["JAP_STATE_DIR"]
os.makedirs(_state + "/sys")
_sh("mount", "-t", "sysfs", "sysfs", _state + "/sys")        # this namespace's interfaces
_sh("mount", "--bind", _state + "/sys/class/net", "/sys/class/net")
_sh("mount", "-t", "tmpfs", "jap-isolated-run", "/run")        # no one else's /run/netns here
"""


class IsolatedLab:
    def __init__(self, tmp_path):
        self.ident = lab.new_id()
        self.state = str(tmp_path / "isolated-state")
        self.cgroups: list[str] = []   # this lab's base, one per hierarchy

    def setup(self) -> "IsolatedLab":
        from justaprocess import cgroups
        for h in cgroups.hierarchies():
            try:
                own = cgroups.own_path(h)
            except Exception:  # noqa: BLE001 - a hierarchy without controllers (name=systemd)
                continue
            d = os.path.join(own, lab.name("iso", self.ident))
            lab.register("cgroup", d, note="an isolated lab's own cgroup")  # the test's registry
            os.mkdir(d)
            # A v1 cpuset takes no task until it has cpus and mems (v2 fills them in itself).
            if h.version == 1 and "cpuset" in h.controllers:
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(own, f)) as src, open(os.path.join(d, f), "w") as dst:
                        dst.write(src.read().strip() or "0")
            self.cgroups.append(d)
        return self

    def run(self, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run Python ``code`` (after the prelude) with ``args`` in the isolated lab."""
        def enter():
            for d in self.cgroups:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
        return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "--",
                               PY, "-c", ISOLATION_PRELUDE + code, *args],
                              preexec_fn=enter, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "JAP_STATE_DIR": self.state})


@pytest.fixture
def isolated_lab(tmp_path, own_objects):
    """An :class:`IsolatedLab` (root only); its cgroups go with the test (own_objects)."""
    if not IS_ROOT:
        pytest.skip("needs root: run `make test` as root in the lab VM")
    return IsolatedLab(tmp_path).setup()


# --- a chapter leaves nothing behind -------------------------------------------------------

def leftovers_of(owner: int) -> list:
    """What of the lab is still present and was made by process ``owner`` (a kernel)."""
    return [e for e in lab.leftovers() if e.owner == owner]


def run_notebook_kernel(name: str, timeout: int = 120) -> int:
    """Run notebooks/NAME top to bottom in a fresh kernel; return that kernel's PID
    (its registry entries carry it as owner)."""
    import nbformat
    from nbclient import NotebookClient
    path = os.path.join(REPO, "notebooks", name)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import os; print('KERNEL', os.getpid())"))
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return int(out.split()[1])


def facts_of_a_killed_kernel(code: str, timeout: int = 120, before_kill=None):
    """Run ``code`` in a real Jupyter kernel, then SIGKILL the kernel (no atexit, no
    finally). ``code`` prints one line ``FACTS <kernel pid> ...``. Returns its words and
    what ``before_kill(words)`` returned (read what must be read while the kernel lives)."""
    import signal
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    outputs: list = []
    try:
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        facts = next(ln for ln in text.splitlines() if ln.startswith("FACTS ")).split()[1:]
        seen = before_kill(facts) if before_kill else None
        os.kill(int(facts[0]), signal.SIGKILL)
    finally:
        kc.stop_channels()
        km.cleanup_resources()
    return facts, seen


def start_times(pids) -> dict[int, int]:
    """{pid: start time} of those of these PIDs that run (so a recycled PID is not mistaken)."""
    from justaprocess import proc
    return {int(p): proc.start_time(int(p)) for p in pids if proc.running(int(p))}
