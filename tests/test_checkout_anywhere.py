"""The course runs from a checkout in a folder only root may enter (root's home: mode 0700).

The demos and tests that run as an unprivileged uid take the interpreter itself
and a readable copy of the package (justaprocess.portable), never the
checkout's venv.  Proof: those tests and notebook 04 run again from this very
checkout, seen at its own path, with its parent folder made mode 0700 - in a
private mount namespace (mount_namespaces(7)), so the machine sees nothing of it.
"""
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.root

# Every path that runs Python as uid 65534 (issue 10, item 2).
UNPRIVILEGED = [
    "tests/test_capabilities.py::test_non_root_keeps_caps_through_ambient",
    "tests/test_capabilities.py::test_run_needs_root",
    "tests/test_capabilities.py::test_restrict_without_privilege_says_so",
    "tests/test_capabilities.py::test_file_caps_on_a_lab_copy",
    "tests/test_doctor.py::test_doctor_as_an_unprivileged_user_says_why_and_what_to_do",
    "tests/test_doctor.py::test_cleanup_as_an_unprivileged_user_is_a_clear_error",
    "tests/test_namespaces.py::test_not_root_is_a_clear_error",
    "notebooks/04-capabilities.ipynb",
]

# In a private mount namespace: an empty 0700 folder holding a bind mount of
# the checkout is mounted over the checkout's parent, so the checkout keeps its
# path (the venv's links and its editable install still resolve for root) but
# uid 65534 can no longer pass the parent (path_resolution(7)).
HIDE = """
set -e
hidden=$(mktemp -d)            # mode 0700
mkdir "$hidden/$NAME"
mount --bind "$REPO" "$hidden/$NAME"
mount --rbind "$hidden" "$PARENT"
setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$REPO/.venv/bin/python" \
    && { echo "uid 65534 still reaches the venv"; exit 99; }
exec "$@"
"""


def test_unprivileged_paths_work_from_a_checkout_under_a_0700_folder(tmp_path):
    parent = os.path.dirname(REPO)
    if parent == "/":
        pytest.skip("the checkout sits directly under /: no parent folder to close")
    venv_python = os.path.join(REPO, ".venv", "bin", "python")
    env = {**os.environ, "REPO": REPO, "PARENT": parent, "NAME": os.path.basename(REPO),
           "TMPDIR": str(tmp_path)}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, "sh",
                        venv_python if os.path.exists(venv_python) else sys.executable,
                        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        *UNPRIVILEGED],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
    assert r.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail and "deselected" not in tail, tail
    # ... and none of it reached this (the host's) mount namespace.
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if ln.split()[4] in (parent, REPO)]
