"""Chapters 14-15 leave nothing behind: after a notebook run, and after a kernel killed in
the middle of one (a fleet of containers, the lab's podman store with a pod whose processes
conmon keeps running, an incident with its mount)."""
import os
import signal

import nbformat
import pytest

from justaprocess import lab, podman, proc

pytestmark = pytest.mark.root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["14-at-scale.ipynb", "15-incidents.ipynb"]


def _mine(owner: int):
    return [e for e in lab.leftovers() if e.owner == owner]


@pytest.fixture(autouse=True)
def _own_roster(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "progress.jsonl"))


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
        "from justaprocess import fleet as fl, podman, incidents\n"
        "f = fl.Fleet(4).start()\n"
        "st = podman.Store().create()\n"
        "st.kube_play({'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'k'}, 'spec': {\n"
        "    'containers': [{'name': 'c', 'image': podman.IMAGE, 'command': ['sleep', '600'],\n"
        "                    'resources': {'limits': {'memory': '16Mi'}}}]}})\n"
        "inc = incidents.Incident('volume-full', 'killed').start()\n"
        "print('FACTS', os.getpid(), st.pid('k-c'), f.members[0].pid, inc.target.pid,\n"
        "      st.dir, st.runroot, f.members[0].container.dir, inc.target.dir,\n"
        "      ' '.join(podman.leftover_cgroups(st.dir)))\n"
    )
    try:
        reply = kc.execute_interactive(code, timeout=180, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        facts = next(ln for ln in text.splitlines() if ln.startswith("FACTS ")).split()[1:]
        kernel, pids, dirs, cgs = int(facts[0]), [int(p) for p in facts[1:4]], facts[4:8], facts[8:]
        assert cgs, "the pod's cgroups (libpod_parent/<id>) are there while it runs"
        starts = {p: proc.start_time(p) for p in pids if proc.running(p)}
        os.kill(kernel, signal.SIGKILL)  # no atexit, no finally
    finally:
        kc.stop_channels()
        km.cleanup_resources()
    assert _mine(kernel), "the killed kernel's objects should still be registered before cleanup"
    assert proc.running(pids[0]), "conmon keeps podman's container running after the kernel died"
    lab.cleanup(stale=True)  # what the next notebook's setup cell does
    assert not _mine(kernel)
    assert podman.wait_pids_gone(starts)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
