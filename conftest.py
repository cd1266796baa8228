"""Keep Jupyter and IPython state of test runs out of the home folder.

At the repository's root so it applies to notebooks (nbval) and unit tests alike.
"""
import os
import tempfile

_state = tempfile.mkdtemp(prefix="jap-test-jupyter-")
for var, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "config"),
                 ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime")):
    os.environ.setdefault(var, os.path.join(_state, sub))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_state, "matplotlib"))
# Exercise attempts of test runs are not a learner's progress.
os.environ.setdefault("JAP_PROGRESS", os.path.join(_state, "progress.jsonl"))


def pytest_unconfigure(config):
    import shutil
    shutil.rmtree(_state, ignore_errors=True)
