#!/usr/bin/python3
"""Debian's chromium in a network namespace of its own: the browser of `make test-ui`.

Why: chromium aborts every request in flight, loopback ones included, with
ERR_NETWORK_CHANGED whenever an address or link of its network namespace
changes - and the course's demos (and anything else on the machine) add and
remove veth pairs on the host. Seen here: the lab's theme stylesheet failed to
load, an error dialog covered the page. In a namespace of its own the browser
sees no such change.

How: this process forks; the child unshares a network namespace
(network_namespaces(7)), brings its loopback up, listens on 127.0.0.1:PORT
there, hands the listening socket to the parent over a socket pair
(SCM_RIGHTS, unix(7)), then execs chromium with the arguments it was given
(Playwright's, including its pipes on fds 3 and 4). A socket stays in the
namespace it was made in, so the parent, still in the host's namespace,
accepts the browser's connections and relays each to the lab at the host's
127.0.0.1:PORT. The namespace has no name and holds no interface but its own
loopback: it goes when the browser exits. Nothing else of the host is touched.

Environment: JAP_UI_PORT (the lab's port), JAP_CHROMIUM (default /usr/bin/chromium).
"""
import ctypes
import os
import socket
import subprocess
import sys
import threading

CLONE_NEWNET = 0x40000000  # sched.h


def child(port: int, chan: socket.socket, chromium: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        sys.exit(f"chromium_netns: unshare(CLONE_NEWNET): {os.strerror(err)} (needs root)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    lst = socket.socket()
    lst.bind(("127.0.0.1", port))
    lst.listen(64)
    socket.send_fds(chan, [b"L"], [lst.fileno()])
    lst.close()
    chan.close()
    os.execv(chromium, [chromium, *sys.argv[1:]])


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listener: socket.socket, port: int) -> None:
    while True:
        try:
            inside, _ = listener.accept()
        except OSError:
            return
        try:
            host = socket.create_connection(("127.0.0.1", port))
        except OSError:
            inside.close()
            continue
        for a, b in ((inside, host), (host, inside)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main() -> int:
    port = int(os.environ["JAP_UI_PORT"])
    chromium = os.environ.get("JAP_CHROMIUM", "/usr/bin/chromium")
    parent_end, child_end = socket.socketpair()  # not inherited by chromium (O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        child(port, child_end, chromium)
    child_end.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent_end, 1, 1)
    except OSError:
        fds = []
    if not fds:  # the child failed before exec: its message is on stderr
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) or 1
    listener = socket.socket(fileno=fds[0])
    threading.Thread(target=relay, args=(listener, port), daemon=True).start()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
