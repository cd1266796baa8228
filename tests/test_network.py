"""network: lab bridge, veth pairs, lab subnet, named netns - and all of it gone after.

Real effects: the links in /sys/class/net, the bridge port, the addresses a
process in the container's netns sees, a TCP connection from the host, and the
helpers working inside a real Jupyter kernel (the pyroute2 0.9 event-loop trap,
docs/kernel-notes.md).
"""
import ipaddress
import os
import subprocess

import pytest
from conftest import wait_for

from justaprocess import lab, network
from justaprocess.container import Container
from justaprocess.errors import BadInput, NotSupported
from justaprocess.network import Route

NET = ipaddress.ip_network


# --- choosing a subnet (no root needed) ------------------------------------------------

def test_choose_subnet_skips_routes_that_overlap():
    routes = [Route(NET("10.213.0.0/24"), "jap-aaaaaa-br"), Route(NET("10.213.1.0/25"), "eth9")]
    assert network.choose_subnet(routes, NET("10.213.0.0/16")) == NET("10.213.2.0/24")


def test_choose_subnet_refuses_to_clash_and_names_the_route():
    routes = [Route(NET("10.0.0.0/8"), "tun0")]
    with pytest.raises(NotSupported, match=r"10\.0\.0\.0/8 dev tun0.*JAP_SUBNET_POOL"):
        network.choose_subnet(routes, NET("10.213.0.0/16"))


def test_pool_from_the_environment(monkeypatch):
    monkeypatch.setenv("JAP_SUBNET_POOL", "172.31.240.0/20")
    assert network.pool() == NET("172.31.240.0/20")
    monkeypatch.setenv("JAP_SUBNET_POOL", "not-a-net")
    with pytest.raises(BadInput, match="10.213.0.0/16"):
        network.pool()
    monkeypatch.setenv("JAP_SUBNET_POOL", "10.1.2.0/28")
    with pytest.raises(BadInput, match="/24 or larger"):
        network.pool()


def test_traffic_only_to_lab_addresses():
    with pytest.raises(BadInput, match="not a lab address"):
        network.reachable("192.0.2.1", 80)
    with pytest.raises(BadInput, match="not a lab address"):
        network.http_get("8.8.8.8")


@pytest.mark.root
def test_the_host_routes_are_read_and_the_choice_avoids_them():
    routes = network.host_routes()
    assert routes, "a host without a single route?"
    sub = network.choose_subnet()
    assert not any(r.dst.overlaps(sub) for r in routes)


# --- the real thing ----------------------------------------------------------------------

def links():
    return set(os.listdir("/sys/class/net"))


def netns_names():
    return set(os.listdir(lab.NETNS_DIR)) if os.path.isdir(lab.NETNS_DIR) else set()


@pytest.mark.root
def test_container_network_end_to_end_and_gone_after(own_objects):
    before_links = links()
    script = "echo up; exec /bin/busybox httpd -f -p 8080 -h /var/www"
    c = Container(["/bin/sh", "-c", script], network=True).start()
    try:
        lease = c.net.lease
        br = c.net.bridge.name
        # Host side: a bridge with the gateway address, the veth's host end enslaved to it.
        assert {br, lease.host_ifname} <= links()
        assert os.path.realpath(f"/sys/class/net/{lease.host_ifname}/master").endswith("/" + br)
        assert ipaddress.ip_address(lease.address) in network.pool()
        # The container's end is not on the host: it was made inside as eth0.
        assert "eth0" not in links() - before_links
        # Inside: lo and eth0 up with the lease, the default route via the bridge.
        addr = c.exec(["ip", "-o", "-4", "addr"]).stdout
        assert f"inet {lease.address}/24" in addr and "lo" in addr
        assert f"default via {lease.gateway}" in c.exec(["ip", "route"]).stdout
        # The netns has a name: `ip netns exec` works, and it is the container's.
        assert lease.name in netns_names()
        r = subprocess.run(["ip", "netns", "exec", lease.name, "cat", "/proc/self/net/dev"],
                           capture_output=True, text=True, check=True)
        assert "eth0" in r.stdout
        assert os.stat(f"{lab.NETNS_DIR}/{lease.name}").st_ino == os.stat(f"/proc/{c.pid}/ns/net").st_ino
        # From the host, over the veth: TCP, then HTTP.
        wait_for(lambda: network.reachable(lease.address, 8080, timeout=0.2), what="httpd listening")
        status, body = network.http_get(lease.address, 8080)
        assert status == 200 and "container built by hand" in body
        assert c.logs() == "up\n"
        # The bridge's gateway answers the container (ICMP through the veth).
        ping = c.exec(["ping", "-c", "1", "-W", "2", lease.gateway])
        assert ping.returncode == 0, ping
    finally:
        c.remove()
    # Only this test's names: other runs on the machine make and remove lab links meanwhile.
    assert not {br, lease.host_ifname} & links()   # veth (both ends) and bridge gone
    assert lease.name not in netns_names()         # the name is gone
    with open("/proc/self/mountinfo") as f:
        assert f"{lab.NETNS_DIR}/{lease.name}" not in f.read()
    assert not [e for e in lab.entries() if e.owner == os.getpid() and e.kind in ("link", "netns")]


@pytest.mark.root
def test_a_name_survives_a_later_ip_netns_add_and_both_go(own_objects):
    """ip netns add binds /run/netns over itself when it is not a mount yet: a lab name
    mounted before would be hidden under it (EBUSY on removal) unless the lab made
    /run/netns a mount first, as ip does."""
    c = Container(["/bin/sleep", "60"], network=True).start()
    other = lab.name("ipadd")
    try:
        lab.register("netns", other, note="made by ip netns add")
        subprocess.run(["ip", "netns", "add", other], check=True, capture_output=True)
        assert {c.net.lease.name, other} <= netns_names()
        lease = c.net.lease.name
    finally:
        c.remove()
        lab.cleanup(owner=os.getpid())
    assert not {lease, other} & netns_names()
    with open("/proc/self/mountinfo") as f:
        assert f"{lab.NETNS_DIR}/{lease}" not in f.read()


@pytest.mark.root
def test_two_containers_share_the_bridge_and_reach_each_other(own_objects):
    a = Container(["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/var/www"], network=True)
    b = Container(["/bin/sleep", "30"], network=True)
    with a, b:
        a.start()
        b.start()
        assert a.net.bridge is b.net.bridge
        assert a.address != b.address
        def fetch():
            r = b.exec(["wget", "-q", "-O", "-", f"http://{a.address}/"])
            return r.returncode == 0 and r
        r = wait_for(fetch, what=f"a's httpd answering b at {a.address}")
        assert "hello" in r.stdout, r
        br = a.net.bridge.name
    assert br not in links()                  # the last container took the bridge with it


@pytest.mark.root
def test_failed_start_gives_the_lease_back(own_objects):
    br = network.bridge().name   # this process's bridge, made now rather than by start()
    c = Container(["/no/such/program"], network=True)
    with pytest.raises(Exception, match="not found|No such file"):
        c.start()
    c.remove()
    # Only this test's names: other runs on the machine make and remove lab links meanwhile.
    assert not {br, network.host_ifname(c.name)} & links()
    assert network._bridge is None


# --- inside a Jupyter kernel ------------------------------------------------------------------

KERNEL_CODE = """
import pyroute2
from justaprocess.container import Container
from justaprocess import lab, network
from justaprocess.errors import LabError
print("pyroute2", pyroute2.__version__.split(".")[:2])
c = Container(['/bin/busybox', 'httpd', '-f', '-p', '80', '-h', '/var/www'], network=True)
c.start()
import time
ok = any(network.reachable(c.address, 80, 0.2) or time.sleep(0.02) for _ in range(100))
status = network.http_get(c.address)[0]
br = c.net.bridge
found = {e.name for e in lab.leftovers() if e.kind == "link"}   # lists links over netlink
print("listed", br.name in found and c.net.lease.host_ifname in found)
try:                                    # a NetlinkError arrives as a lab error
    network.Bridge(br.name, br.subnet).create()
except LabError as exc:
    print("lab error", type(exc).__name__, "exists already" in str(exc))
c.remove()
print(ok, status, network._bridge, lab.present(br.entry) if br.entry else "gone")
"""


@pytest.mark.root
def test_helpers_work_inside_a_jupyter_kernel(tmp_path):
    """pyroute2 0.9's synchronous IPRoute fails where an event loop runs, as in a Jupyter
    kernel; the network helpers and lab cleanup must work there (docs/kernel-notes.md)."""
    from jupyter_client.manager import start_new_kernel
    env = {k: str(tmp_path / k) for k in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR")}
    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, **env})
    outputs = []
    try:
        reply = kc.execute_interactive(KERNEL_CODE, timeout=60, output_hook=outputs.append)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert reply["content"]["status"] == "ok" and not errors, (reply["content"], errors, text)
    assert text.splitlines() == ["pyroute2 ['0', '9']", "listed True", "lab error LabError True",
                                 "True 200 None gone"], text
