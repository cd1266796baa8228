"""The troubleshooting chapters leave nothing behind: a run of each notebook (08-15), and
chapters 08-10 after a kernel killed in the middle of one (scenarios, sidecars, exec'd
processes, their cgroups and folders). Chapters 11-13 and 14-15 have their killed-kernel
tests in test_chapters_11_13_cleanup.py and test_chapters_14_15_cleanup.py."""
import os

import pytest

from conftest import facts_of_a_killed_kernel, leftovers_of, run_notebook_kernel, start_times
from justaprocess import lab

pytestmark = pytest.mark.root
NOTEBOOKS = ["08-in-container.ipynb", "09-sidecar.ipynb", "10-from-the-host.ipynb",
             "11-debug-containers.ipynb", "12-remote.ipynb", "13-dos-and-donts.ipynb",
             "14-at-scale.ipynb", "15-incidents.ipynb"]


@pytest.fixture(autouse=True)
def _own_roster(tmp_path, monkeypatch):
    """Chapter 15's attempts go to a roster of the test's own, not the machine's."""
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "progress.jsonl"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_run_leaves_nothing_of_its_kernel(name, pytestconfig):
    kernel = run_notebook_kernel(name, int(pytestconfig.getoption("nbval_cell_timeout", None) or 120))
    assert not leftovers_of(kernel), f"{name} left: {leftovers_of(kernel)}"


def test_a_kernel_killed_mid_chapter_leaves_nothing_after_stale_cleanup():
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
    facts, starts = facts_of_a_killed_kernel(code, 120, lambda f: start_times(f[1:5]))
    kernel, dirs, cgs = int(facts[0]), facts[5:8], facts[8:]
    assert leftovers_of(kernel), "the killed kernel's objects should still be registered before cleanup"
    lab.cleanup(stale=True)  # what the next notebook's setup cell does
    assert not leftovers_of(kernel)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
