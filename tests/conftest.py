"""Fixtures shared by the unit tests.

Root-only tests are marked ``@pytest.mark.root`` and skip *with a reason* when
not root. The lab is cleaned before the suite; the last item of the run
(tests/test_zz_leftovers.py) asserts that nothing of the lab is left.
"""
import os

import pytest

from justaprocess import lab

IS_ROOT = os.geteuid() == 0


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
