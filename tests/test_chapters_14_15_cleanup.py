"""Chapters 14-15 leave nothing behind after a kernel killed in
the middle of one (a fleet of containers, the lab's podman store with a pod whose processes
conmon keeps running, an incident with its mount)."""
import os

import pytest

from conftest import facts_of_a_killed_kernel, leftovers_of, start_times
from justaprocess import lab, podman, proc

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _own_roster(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "progress.jsonl"))


def test_a_kernel_killed_mid_chapter_leaves_nothing_after_stale_cleanup():
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
    facts, starts = facts_of_a_killed_kernel(code, 180, lambda f: start_times(f[1:4]))
    kernel, pids, dirs, cgs = int(facts[0]), [int(p) for p in facts[1:4]], facts[4:8], facts[8:]
    assert cgs, "the pod's cgroups (libpod_parent/<id>) are there while it runs"
    assert leftovers_of(kernel), "the killed kernel's objects should still be registered before cleanup"
    assert proc.running(pids[0]), "conmon keeps podman's container running after the kernel died"
    lab.cleanup(stale=True)  # what the next notebook's setup cell does
    assert not leftovers_of(kernel)
    assert podman.wait_pids_gone(starts)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
