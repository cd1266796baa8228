"""The last item of every run: nothing of the lab is left (STYLE: teardown after the suite)."""
import pytest
from conftest import cli


@pytest.mark.last
@pytest.mark.root
def test_nothing_of_the_lab_is_left():
    r = cli("leftovers")
    assert r.returncode == 0 and r.stdout == "", "the lab left behind:\n" + r.stdout + r.stderr
