"""Listening sockets of the network namespace this process is in: pyroute2's socket diagnostics.

sock_diag(7): a NETLINK_SOCK_DIAG socket asks the kernel for the sockets of
*the network namespace the asking socket was made in*.  That is why
:mod:`justaprocess.debug` runs this module in a child that joined the target's
network namespace (``python -m justaprocess._sockdiag`` prints JSON): the
notebook's kernel never moves (COURSE.md), and a fresh interpreter has no
running event loop, which pyroute2 0.9's synchronous API trips over inside a
Jupyter kernel (docs/kernel-notes.md, "Networking").

The one place the lab speaks to pyroute2's diag API: its module moved and its
``get_sock_stats`` signature is marked work in progress, so it is wrapped here
and nowhere else.
"""
from __future__ import annotations

import json
import socket
import sys
from typing import NamedTuple

# include/net/tcp_states.h: TCP_LISTEN = 10, TCP_CLOSE = 7 (an unconnected UDP socket).
TCP_LISTEN = 10
TCP_CLOSE = 7


class Listening(NamedTuple):
    """One listening socket: what ``ss -ltun`` prints, plus the socket's inode (to find its process)."""
    proto: str        # "tcp" or "udp"
    address: str      # the local address: 0.0.0.0 / :: (all), 127.0.0.1 (loopback only) ...
    port: int
    inode: int
    uid: int


def _diag_socket():
    try:  # pyroute2 0.7/0.8 and 0.9 export it at the top level
        from pyroute2 import DiagSocket
    except ImportError:  # pragma: no cover - a layout that moved it
        from pyroute2.netlink.diag import DiagSocket
    return DiagSocket


def listening() -> list[Listening]:
    """The TCP sockets in LISTEN and the bound UDP sockets of *this* process's network namespace."""
    DiagSocket = _diag_socket()
    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto, states in (("tcp", 1 << TCP_LISTEN), ("udp", 1 << TCP_CLOSE)):
                ipproto = socket.IPPROTO_TCP if proto == "tcp" else socket.IPPROTO_UDP
                for m in ds.get_sock_stats(family=family, states=states, protocol=ipproto):
                    port = int(m.get("idiag_sport"))
                    if proto == "udp" and not port:
                        continue
                    out.append(Listening(proto, str(m.get("idiag_src")), port,
                                         int(m.get("idiag_inode")), int(m.get("idiag_uid"))))
    return sorted(set(out), key=lambda s: (s.proto, s.port, s.address))


def main() -> int:
    json.dump([s._asdict() for s in listening()], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
