"""Chapters 11-13 leave nothing behind: after a notebook run, and after a kernel killed
in the middle of one (a debug container and its process, a service with a published port,
a root made for a demo, a container with a config volume)."""
import os
import signal

import nbformat
import pytest

from justaprocess import lab, proc

pytestmark = pytest.mark.root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["11-debug-containers.ipynb", "12-remote.ipynb", "13-dos-and-donts.ipynb"]


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
        "from justaprocess import debugcontainer as D, practices, remote\n"
        "from justaprocess.container import Container, Volume\n"
        "svc = remote.service(debug='public')\n"
        "pub = remote.publish(svc.address, remote.DEBUG_PORT)\n"
        "dc = D.debug_container(svc.container)\n"
        "h = dc.start(['sleep', '600'], stdout='null', stderr='null')\n"
        "cfg = practices.make_root(suffix='cfg', dirs=(), text={'app.conf': 'GREETING=x\\n'})\n"
        "app = Container(['/bin/sleep', '600'], volumes=[Volume(cfg.path, '/config', True)]).start()\n"
        "print('FACTS', os.getpid(), svc.pid, h.pid, app.pid, pub.port, svc.container.dir, dc.root,\n"
        "      cfg.path, app.dir, ' '.join(dc.cgroup.paths + svc.container.cgroups + app.cgroups))\n"
    )
    try:
        reply = kc.execute_interactive(code, timeout=120, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        facts = next(ln for ln in text.splitlines() if ln.startswith("FACTS ")).split()[1:]
        kernel, pids, port = int(facts[0]), [int(p) for p in facts[1:4]], int(facts[4])
        dirs, cgs = facts[5:9], facts[9:]
        starts = {p: proc.start_time(p) for p in pids if proc.running(p)}
        os.kill(kernel, signal.SIGKILL)  # no atexit, no finally
    finally:
        kc.stop_channels()
        km.cleanup_resources()
    assert _mine(kernel), "the killed kernel's objects should still be registered before cleanup"
    lab.cleanup(owner=kernel)  # what the next setup cell (stale cleanup) does for this dead kernel
    assert not _mine(kernel)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
    from justaprocess import remote
    with pytest.raises(remote.Unreachable):   # the forwarder was threads of the kernel
        remote.request("127.0.0.1", port, "/cgi-bin/env")
