"""The lab's token: only in its 0600 file and on the terminal of whoever started the lab.

tools/start-lab.sh is started as the VM's service starts it - stdout and
stderr a pipe, as the journal gets them - and must print neither the token
nor put it on a command line (proc(5): /proc/PID/cmdline is readable by every
user); JupyterLab must still accept it.
"""
import os
import socket
import stat
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import REPO, wait_for

pytestmark = pytest.mark.root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int, token: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status")
    if token:
        req.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_start_lab_keeps_the_token_out_of_logs_and_command_lines(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "jupyter-token").write_text("0123456789abcdef" * 3 + "\n")  # an older file: with a newline
    token = "0123456789abcdef" * 3
    port = _free_port()
    out = open(tmp_path / "journal", "w+")
    lab = subprocess.Popen(["bash", os.path.join(REPO, "tools", "start-lab.sh"), str(port)],
                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, "JAP_STATE_DIR": str(state)})
    try:
        wait_for(lambda: lab.poll() is not None or _status(port, token) == 200, timeout=120,
                 what="JupyterLab answering with the token")
        assert lab.poll() is None, open(tmp_path / "journal").read()
        assert _status(port, None) == 403 and _status(port, "wrong") == 403  # the token guards it
        assert stat.S_IMODE(os.stat(state / "jupyter-token").st_mode) == 0o600
        # On no command line and in no environment: the server's and every process of its tree.
        tree = [lab.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(lab.pid)], capture_output=True, text=True).stdout.split()]
        for pid in tree:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert token.encode() not in f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert token.encode() not in f.read()
    finally:
        lab.terminate()
        lab.wait(30)
    journal = open(tmp_path / "journal").read()
    assert "JupyterLab at" in journal and f"127.0.0.1:{port}" in journal  # it did print the URL ...
    assert token not in journal                                         # ... without the token
    assert "sudo cat" in journal                                        # ... and where to find it
