"""The container network: a lab bridge, a veth pair per container, lab addresses.

What an engine does (``ip link add ... type veth``; network_namespaces(7), veth(4)):

* a **bridge** on the host (``jap-<id>-br``, one per lab process) holding the
  gateway address of a **lab subnet** (a /24 out of ``10.213.0.0/16`` by
  default, ``$JAP_SUBNET_POOL`` to change it) - chosen only after reading the
  host's routes, and refused when every candidate clashes with one;
* per container a **veth pair**: the host end (``jap-<id>-v``) enslaved to the
  bridge, the other end created directly *inside* the container's network
  namespace as ``eth0``;
* inside: ``lo`` up, the address on ``eth0``, a default route via the bridge;
* the namespace gets a name (``/run/netns/jap-<id>``, a bind mount of
  /proc/PID/ns/net, what ``ip netns attach`` does) so ``ip netns exec`` works.

Traffic stays between the host and the lab's namespaces: the host does not
forward or NAT (net.ipv4.ip_forward untouched), so a container reaches its
bridge and its neighbours, nothing beyond.

Everything is named from the container id and registered (``link``,
``netns``) before it is made.  rtnetlink through pyroute2 0.9 (``_netlink``: it
works inside a Jupyter kernel, and its errors arrive as lab errors).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from . import _libc, _netlink, _registry, lab
from .errors import BadInput, NeedsPrivilege, NotSupported, needs

DEFAULT_POOL = "10.213.0.0/16"
PREFIXLEN = 24
INSIDE_IFNAME = "eth0"
NETNS_DIR = lab.NETNS_DIR

_lock = threading.Lock()
_bridge: "Bridge | None" = None
_made_netns_dir = False


def pool() -> ipaddress.IPv4Network:
    """The range lab subnets are taken from ($JAP_SUBNET_POOL or 10.213.0.0/16)."""
    raw = os.environ.get("JAP_SUBNET_POOL", DEFAULT_POOL)
    try:
        net = ipaddress.ip_network(raw)
    except ValueError:
        raise BadInput(f"JAP_SUBNET_POOL={raw!r} is not a network like 10.213.0.0/16") from None
    if net.version != 4 or net.prefixlen > PREFIXLEN:
        raise BadInput(f"JAP_SUBNET_POOL={raw!r}: an IPv4 range of /{PREFIXLEN} or larger")
    return net


class Route(NamedTuple):
    dst: ipaddress.IPv4Network
    dev: str


def host_routes() -> list[Route]:
    """The host's IPv4 routes (every table) except default routes, with their device."""
    def read(ip) -> list[Route]:
        out = []
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ip.get_links()}
        for r in ip.get_routes(family=socket.AF_INET):  # every table: main, local, others
            if r["dst_len"] == 0:
                continue
            dst = r.get_attr("RTA_DST")
            if dst is None:
                continue
            net = ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)
            out.append(Route(net, names.get(r.get_attr("RTA_OIF"), "?")))
        return out
    return _netlink.call(read, "reading the host's routes")


def choose_subnet(routes: list[Route] | None = None,
                  candidates: ipaddress.IPv4Network | None = None) -> ipaddress.IPv4Network:
    """The first /24 of the pool that overlaps no route of the host (nor of other labs)."""
    routes = host_routes() if routes is None else routes
    candidates = candidates or pool()
    clashes: set[str] = set()
    for sub in candidates.subnets(new_prefix=PREFIXLEN):
        hit = [r for r in routes if r.dst.overlaps(sub)]
        if not hit:
            return sub
        clashes.update(f"{r.dst} dev {r.dev}" for r in hit if not lab.is_lab_name(r.dev))
    raise NotSupported(
        f"every /{PREFIXLEN} of the lab's range {candidates} clashes with a route of this host "
        f"({', '.join(sorted(clashes)) or 'other lab bridges'}): set JAP_SUBNET_POOL to a free "
        "private range, e.g. JAP_SUBNET_POOL=172.31.240.0/20")


_index = _netlink.index


@dataclass
class Bridge:
    """The lab bridge of this process: the containers' switch, with the gateway address."""
    name: str
    subnet: ipaddress.IPv4Network
    entry: lab.Entry | None = None
    used: set = field(default_factory=set)   # host numbers handed out (.2, .3 ...)
    users: int = 0

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def create(self) -> "Bridge":
        self.entry = lab.register("link", self.name, note=f"lab bridge {self.subnet}")

        def make(ip) -> None:
            ip.link("add", ifname=self.name, kind="bridge")
            idx = _index(ip, self.name)
            ip.addr("add", index=idx, address=self.gateway, prefixlen=PREFIXLEN)
            ip.link("set", index=idx, state="up")
        _netlink.call(make, f"creating the lab bridge {self.name}")
        return self

    def lease(self) -> str:
        for n in range(2, self.subnet.num_addresses - 1):
            if n not in self.used:
                self.used.add(n)
                return str(self.subnet.network_address + n)
        raise NotSupported(f"the lab subnet {self.subnet} is full: remove some containers")

    def release(self, address: str) -> None:
        self.used.discard(int(ipaddress.ip_address(address)) - int(self.subnet.network_address))

    def remove(self) -> None:
        if self.entry is not None:
            lab.remove(self.entry)
            self.entry = None


def bridge() -> Bridge:
    """This process's lab bridge, made on first use (subnet chosen from the host's routes)."""
    global _bridge
    with _lock:
        if _bridge is None or not os.path.exists(f"/sys/class/net/{_bridge.name}"):
            if os.geteuid() != 0:
                raise NeedsPrivilege("CAP_NET_ADMIN", "creating the lab bridge")
            _bridge = Bridge(lab.name("br"), choose_subnet()).create()
        return _bridge


class Lease(NamedTuple):
    """Addresses chosen for one container before its process exists."""
    name: str            # the container's name: jap-<id>
    address: str
    prefixlen: int
    gateway: str
    host_ifname: str     # the bridge side of the veth pair
    ifname: str = INSIDE_IFNAME


@dataclass
class Attachment:
    """A container's network: its lease, the registered objects, and how to undo them."""
    lease: Lease
    pid: int
    bridge: Bridge
    entries: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.lease.address

    @property
    def netns(self) -> str:
        return self.lease.name

    def remove(self) -> None:
        """Delete the veth pair (both ends go) and the netns name; the bridge when unused."""
        for e in reversed(self.entries):
            lab.remove(e)
        self.entries.clear()
        forget_netns_dir()
        if self.lease.address:
            release(self.lease)
            self.lease = self.lease._replace(address="")


def release(lease: Lease) -> None:
    """Give a lease back; the bridge goes with this process's last container."""
    global _bridge
    with _lock:
        br = _bridge
        if br is None:
            return
        br.release(lease.address)
        br.users -= 1
        if br.users <= 0:
            br.remove()
            _bridge = None


def plan(name: str) -> Lease:
    """Pick the container's address (in the caller, before the fork)."""
    if not lab.is_lab_name(name):
        raise BadInput(f"{name!r} is not a lab name: a container network is named "
                       "jap-<id>[-suffix] (lab.name())")
    br = bridge()
    with _lock:
        address = br.lease()
        br.users += 1
    return Lease(name, address, PREFIXLEN, br.gateway, host_ifname(name))


def host_ifname(name: str) -> str:
    """The veth's host end: ``jap-<id>-v`` from a name ``jap-<id>[-suffix]``.

    Interface names have at most 15 characters (IFNAMSIZ - 1, netdevice(7)):
    the kernel answers a longer one with ERANGE.
    """
    base = "-".join(name.split("-")[:2])
    return f"{base[:13]}-v"


def attach(lease: Lease, pid: int) -> Attachment:
    """Host side: the veth pair, one end inside ``pid``'s netns; the netns named."""
    br = bridge()
    att = Attachment(lease, pid, br)  # from here on, att.remove() releases the lease
    try:
        att.entries.append(lab.register("link", lease.host_ifname, note=f"veth of {lease.name}"))

        def make(ip) -> None:
            # The peer is created directly in the container's netns (IFLA_NET_NS_PID),
            # so it never appears on the host and may be called eth0 (veth(4)).
            ip.link("add", ifname=lease.host_ifname, kind="veth",
                    peer={"ifname": lease.ifname, "net_ns_pid": pid})
            idx = _index(ip, lease.host_ifname)
            ip.link("set", index=idx, master=_index(ip, br.name), state="up")
            forget_neighbour(ip, lease.address, br.name)
        _netlink.call(make, f"creating the veth pair {lease.host_ifname} for {lease.name}")
        att.entries.append(name_netns(lease.name, pid))
    except BaseException:
        att.remove()
        raise
    return att


def forget_neighbour(ip, address: str, ifname: str) -> None:
    """Drop the host's neighbour-cache entry for ``address`` on ``ifname`` (``ip neigh del``).

    A lease's address may have belonged, a moment ago, to a container that is
    gone: the host would go on sending to the old MAC address (arp(7): a
    REACHABLE or STALE entry is used until it is probed again, seconds later),
    and the new container would look unreachable.
    """
    from pyroute2 import NetlinkError
    try:
        ip.neigh("del", dst=address, ifindex=_index(ip, ifname))
    except NetlinkError:
        pass  # ENOENT: no entry, nothing to forget


@needs("CAP_SYS_ADMIN", "naming a network namespace (a bind mount):")
def name_netns(name: str, pid: int) -> lab.Entry:
    """Give ``pid``'s network namespace a name: bind-mount /proc/PID/ns/net to /run/netns/NAME.

    This is what ``ip netns attach NAME PID`` does (ip-netns(8)), /run/netns made
    a shared mount of its own first, as ip does: ``ip netns exec NAME ...`` works,
    and ``lab.remove`` of the entry does what ``ip netns del`` does.
    """
    global _made_netns_dir
    entry = lab.register("netns", name, pid=0, note=f"netns of pid {pid}")
    if not os.path.isdir(NETNS_DIR):
        os.makedirs(NETNS_DIR)
        _made_netns_dir = True  # ours: removed again once empty (forget_netns_dir)
    _share_netns_dir()
    path = os.path.join(NETNS_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        _libc.mount(f"/proc/{pid}/ns/net", path, None, _libc.MS_BIND)
    except OSError:
        os.unlink(path)
        raise
    return entry


def _share_netns_dir() -> None:
    """Make /run/netns a shared bind mount of itself, as `ip netns add` does (ip-netns(8)).

    Without it, a later `ip netns add` (notebook 00 runs one) binds /run/netns over
    itself and hides a name mounted before under the new mount: ``ip netns del`` and
    lab cleanup then find it busy (EBUSY) and cannot remove it.  register() marked
    the mount as the lab's; cleanup unmounts it once no namespace is named there.
    """
    if _registry.mounted(NETNS_DIR):
        return
    _libc.mount(NETNS_DIR, NETNS_DIR, None, _libc.MS_BIND | _libc.MS_REC)
    _libc.mount(None, NETNS_DIR, None, _libc.MS_SHARED | _libc.MS_REC)


def forget_netns_dir() -> None:
    """Remove /run/netns if this process made it and it is empty again."""
    global _made_netns_dir
    if _made_netns_dir:
        try:
            os.rmdir(NETNS_DIR)
            _made_netns_dir = False
        except OSError:
            pass  # not empty: other namespaces are named there now


def configure_inside(lease: Lease) -> None:
    """In the container's netns (its PID 1, before exec): lo up, eth0 address, default route.

    The same as ``ip link set lo up; ip addr add A/24 dev eth0; ip link set eth0
    up; ip route add default via GW`` run inside.
    """
    def configure(ip) -> None:
        ip.link("set", index=_index(ip, "lo"), state="up")
        idx = _index(ip, lease.ifname)
        ip.addr("add", index=idx, address=lease.address, prefixlen=lease.prefixlen)
        ip.link("set", index=idx, state="up")
        ip.route("add", dst="0.0.0.0/0", gateway=lease.gateway)
    _netlink.call(configure, f"configuring {lease.ifname} inside {lease.name}")


def reachable(address: str, port: int, timeout: float = 2.0) -> bool:
    """Can the host open a TCP connection to ``address:port``?  Only lab addresses."""
    _check_lab_address(address)
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(address: str, port: int = 80, path: str = "/", timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of an HTTP GET to a container, over the lab network only."""
    import http.client
    _check_lab_address(address)
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def _check_lab_address(address: str) -> None:
    a = ipaddress.ip_address(address)
    if not (a.is_loopback or a in pool()):
        raise BadInput(f"{address} is not a lab address: the lab only talks to loopback and "
                       f"its own subnet ({pool()})")
