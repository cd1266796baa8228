"""The workshop VM's guest firewall (vagrant/lab-firewall.nft), loaded for real in a
network namespace that plays the guest: the lab's port answers on loopback and on the
path of a NAT port forward (10.0.2.2 -> 10.0.2.15), and refuses every other path - a
neighbour on the guest's network, or another address of the guest.

Nothing of it touches this machine's network: both namespaces are private
(network_namespaces(7)) and go with their processes. `make test-vm` shows the
same refusal in the booted VM (vagrant/image/guest/test-vm.sh).
"""
import os
import shutil
import subprocess

import pytest
from conftest import REPO, wait_for

from justaprocess import lab, portable, proc

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("nft") is None, reason="nft missing: apt-get install nftables")]
RULES = os.path.join(REPO, "vagrant", "lab-firewall.nft")
PORT = 8888
CONNECT = """
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.settimeout(5)
if src != "-":
    s.bind((src, 0))
try:
    s.connect((dst, port))
    print("reached")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc)
"""
LISTEN = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
          f"s.bind(('0.0.0.0', {PORT})); s.listen(16)\nwhile True: s.accept()[0].close()")


def _in(pid, *argv, check=True):
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True,
                          check=check)


def _netns(pid):
    return proc.namespaces(pid)["net"]


@pytest.fixture
def guest_and_neighbour(own_objects):
    """Two private network namespaces joined by a veth pair, as a guest and a machine
    on its network; the guest listens on 0.0.0.0:8888 as the VM's JupyterLab does."""
    guest = lab.spawn(["unshare", "--net", "sleep", "120"], note="test: VM guest netns")
    neighbour = lab.spawn(["unshare", "--net", "sleep", "120"], note="test: its neighbour")
    for p in (guest, neighbour):
        wait_for(lambda: _netns(p.pid) != _netns(os.getpid()), what="unshare --net switched")
    g, n = guest.pid, neighbour.pid
    _in(g, "ip", "link", "set", "lo", "up")
    _in(n, "ip", "link", "set", "lo", "up")
    _in(g, "ip", "link", "add", "g0", "type", "veth", "peer", "name", "n0", "netns", str(n))
    for addr in ("10.0.2.15/24", "192.0.2.1/24"):   # its NAT address; another address of it
        _in(g, "ip", "addr", "add", addr, "dev", "g0")
    for addr in ("10.0.2.2/24", "10.0.2.77/24", "192.0.2.2/24"):  # the NAT's host; a neighbour
        _in(n, "ip", "addr", "add", addr, "dev", "n0")
    _in(g, "ip", "link", "set", "g0", "up")
    _in(n, "ip", "link", "set", "n0", "up")
    server = lab.spawn(["nsenter", "-t", str(g), "-n", portable.python(), "-c", LISTEN],
                       note="test: the lab's port in the guest")

    def listening():
        return "reached" in _in(g, portable.python(), "-c", CONNECT, "-", "127.0.0.1", str(PORT)).stdout
    wait_for(listening, what="the guest's listener")
    yield g, n
    for p in (server, guest, neighbour):
        p.stop()


def _connect(pid, src, dst):
    out = _in(pid, portable.python(), "-c", CONNECT, src, dst, str(PORT)).stdout.strip()
    assert out in ("reached", "refused"), out
    return out


def test_the_lab_port_answers_only_through_the_forward(guest_and_neighbour):
    g, n = guest_and_neighbour
    paths = {  # (who connects, from, to)
        "loopback (ssh -L, vagrant-libvirt)": (g, "-", "127.0.0.1"),
        "the NAT port forward": (n, "10.0.2.2", "10.0.2.15"),
        "a neighbour to the NAT address": (n, "10.0.2.77", "10.0.2.15"),
        "a neighbour to another guest address": (n, "192.0.2.2", "192.0.2.1"),
    }
    open_ = {name: _connect(*how) for name, how in paths.items()}
    assert set(open_.values()) == {"reached"}  # control: without the firewall every path is open
    _in(g, "nft", "-D", f"port={PORT}", "-f", RULES)
    _in(g, "nft", "-D", f"port={PORT}", "-f", RULES)  # loading it again replaces it (the unit restarts)
    assert _in(g, "nft", "list", "ruleset").stdout.count("reject with tcp reset") == 1
    closed = {name: _connect(*how) for name, how in paths.items()}
    assert closed == {"loopback (ssh -L, vagrant-libvirt)": "reached", "the NAT port forward": "reached",
                      "a neighbour to the NAT address": "refused",
                      "a neighbour to another guest address": "refused"}
