"""The last item of every run: nothing of the lab is left (STYLE: teardown after the suite)."""
import re

import psutil
import pytest
from conftest import cli


def ancestors() -> set[int]:
    """The PIDs above this test process (psutil, as the lab's other process facts)."""
    return {p.pid for p in psutil.Process().parents()}


@pytest.mark.last
@pytest.mark.root
def test_nothing_of_the_lab_is_left():
    r = cli("leftovers")
    # A lab process above this run is what started it, not something it left behind: the
    # instructor's `ready` on the seat `local` runs `make test` from a process the lab
    # launched (and registered), and that process lives until the run ends.
    above = ancestors()
    left = [ln for ln in r.stdout.splitlines()
            if not ((m := re.match(r"process\s+pid (\d+)\b", ln)) and int(m.group(1)) in above)]
    # rc 0: nothing; rc 1: it listed something (only ancestors, then). Anything else, or rc 1
    # with nothing listed (a traceback: the command failed), is a failure of its own.
    listed = r.returncode == 1 and r.stdout.strip() != ""
    assert r.returncode == 0 or listed, f"leftovers failed (rc {r.returncode}):\n{r.stderr}"
    assert not left, "the lab left behind:\n" + r.stdout + r.stderr
