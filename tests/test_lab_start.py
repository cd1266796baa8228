"""tools/start-lab.sh (what `make lab` runs) around JupyterLab: a taken port, the
default workspace, the learner copies' language_info."""
import json
import os
import socket
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import lab_workspace  # noqa: E402
import notebooks as nbtool  # noqa: E402


@pytest.mark.root
def test_a_taken_port_is_said_before_any_url(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        r = subprocess.run(["bash", "tools/start-lab.sh", str(port)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, JAP_SHOW_TOKEN="1"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {port} is taken" in r.stderr and f"make lab PORT={port + 1}" in r.stderr
    assert "http://" not in r.stdout  # no URL to whatever holds the port


def test_the_default_workspace_opens_the_index_and_is_seeded_once(tmp_path):
    from jupyterlab_server.workspaces_handler import WorkspacesManager

    assert lab_workspace.seed(str(tmp_path)) is True
    ws = WorkspacesManager(str(tmp_path)).load("default")
    main = ws["data"]["layout-restorer:data"]["main"]
    assert main["dock"]["widgets"] == ["notebook:learner/index.ipynb"]
    assert ws["data"]["notebook:learner/index.ipynb"]["data"]["path"] == "learner/index.ipynb"
    # a learner's own layout is kept
    mine = {"data": {"layout-restorer:data": {"main": {"dock": None}}}, "metadata": {"id": "default"}}
    WorkspacesManager(str(tmp_path)).save("default", json.dumps(mine))
    assert lab_workspace.seed(str(tmp_path)) is False
    assert WorkspacesManager(str(tmp_path)).load("default")["data"] == mine["data"]


def test_learner_copies_carry_the_kernels_language_info(tmp_path, monkeypatch):
    from ipykernel.ipkernel import IPythonKernel

    monkeypatch.setattr(nbtool, "LEARNER_DIR", str(tmp_path))
    written = nbtool.learner(force=True)
    assert "index.ipynb" in written
    for name in written:
        nb = nbformat.read(os.path.join(tmp_path, name), as_version=4)
        assert nb.metadata["language_info"] == IPythonKernel.language_info, name
