"""Chapters 08-10 leave nothing behind: after a notebook run, and after a kernel killed
in the middle of one (scenarios, sidecars, exec'd processes, their cgroups and folders)."""
import os
import signal

import nbformat
import pytest

from justaprocess import lab, proc

pytestmark = pytest.mark.root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["08-in-container.ipynb", "09-sidecar.ipynb", "10-from-the-host.ipynb"]


def _mine(owner: int):
    return [e for e in lab.leftovers() if e.owner == owner]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_run_leaves_nothing_of_its_kernel(name, pytestconfig):
    from nbclient import NotebookClient
    path = os.path.join(ROOT, "notebooks", name)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import os; print('KERNEL', os.getpid())"))
    timeout = int(pytestconfig.getoption("nbval_cell_timeout", None) or 120)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    kernel = int(out.split()[1])
    assert not _mine(kernel), f"{name} left: {_mine(kernel)}"


def test_a_kernel_killed_mid_chapter_leaves_nothing_after_stale_cleanup():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    outputs = []
    code = (
        "%load_ext justaprocess\n"
        "import os\n"
        "from justaprocess import debug, scenarios, _launch\n"
        "s = scenarios.start('loopback-only')\n"
        "c = scenarios.start('config-missing')\n"
        "sc = debug.sidecar(s)\n"
        "h = _launch.start(debug.exec_spec(debug.target(s), ['sleep', '600']))\n"
        "print('FACTS', os.getpid(), s.target.pid, c.target.pid, sc.pid, h.pid, sc.dir,\n"
        "      c.params['host_dir'], s.target.dir, ' '.join(sc.cgroup.paths + s.target.cgroup.paths))\n"
    )
    try:
        reply = kc.execute_interactive(code, timeout=120, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        facts = next(ln for ln in text.splitlines() if ln.startswith("FACTS ")).split()[1:]
        kernel, pids, dirs, cgs = int(facts[0]), [int(p) for p in facts[1:5]], facts[5:8], facts[8:]
        starts = {p: proc.start_time(p) for p in pids if proc.running(p)}
        os.kill(kernel, signal.SIGKILL)  # no atexit, no finally
    finally:
        kc.stop_channels()
        km.cleanup_resources()
    assert _mine(kernel), "the killed kernel's objects should still be registered before cleanup"
    lab.cleanup(stale=True)  # what the next notebook's setup cell does
    assert not _mine(kernel)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
