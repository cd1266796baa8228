"""Remote troubleshooting: a tiny control and debug web API inside a container (chapter 12).

The talk's advice, "add a tiny web API for control/debug": the service carries
a few endpoints of its own, so an operator can ask it questions over the
network instead of entering the container.  Here the API is busybox
``httpd`` serving CGI scripts (RFC 3875) from the container's own root - no
Python, no package inside:

=====================  =========================================================
``GET  /cgi-bin/health``   liveness, no token (what a probe asks)
``GET  /cgi-bin/config``   the configuration the service runs with now
``POST /cgi-bin/loglevel`` ``level=debug``: change the log level at run time
                           (SIGHUP to PID 1, no restart)
``GET  /cgi-bin/state``    PID 1's /proc status and open file descriptors
``GET  /cgi-bin/metrics``  memory and pids from its *own* cgroup, Prometheus text
=====================  =========================================================

Every endpoint but ``health`` wants ``Authorization: Bearer <token>``; the
token is a file in the container's root readable by root only
(``/run/secrets/api-token``), made per container by :func:`service`.

The risk, shown with :func:`publish`: an unprotected debug endpoint (here one
that dumps PID 1's environment, secrets included) on a *published* port - a
host port forwarded into the container, what ``docker run -p`` does - answers
anybody who reaches the host.  Bound to 127.0.0.1 *inside* the container and
not published, it answers only a process in the container's network
namespace (``exec`` in, or a sidecar sharing ``net``).

The container's cgroup directories are bind-mounted read-only at
``/sys/fs/cgroup`` (v2) or ``/sys/fs/cgroup/{memory,pids}`` (v1 and the
hybrid), so the metrics endpoint reads its own limits and use, as a
container with a cgroup namespace sees them.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import selectors
import socket
import threading
from typing import NamedTuple

from . import cgroups, lab, network
from .container import Container, Volume
from .errors import BadInput, LabError, needs

API_PORT = 8080
DEBUG_PORT = 9090
LEVELS = ("error", "warn", "info", "debug")

# --- the service's files (its "image" on top of the busybox root) -----------------------

APP = r"""#!/bin/sh
# The service, PID 1 of its container.  Config from /etc/app/app.conf; the log
# level can change at run time: SIGHUP makes it re-read /run/app/level.
. /etc/app/app.conf                       # NAME=..., LEVEL=...
mkdir -p /run/app
echo "$LEVEL" > /run/app/level
rm -f /run/app/ack && mkfifo /run/app/ack # the API waits here for "done" (fifo(7))
exec 9<> /run/app/ack                     # held open: our writes to it never block
log() { echo "$(date -u +%H:%M:%S) $1: $2"; }
publish() {   # the configuration in effect, as GET /cgi-bin/config shows it
  printf '{"name":"%s","level":"%s","pid":%s,"started":"%s"}\n' \
    "$NAME" "$LEVEL" "$$" "$STARTED" > /run/app/effective.new
  mv /run/app/effective.new /run/app/effective
}
reload() {
  LEVEL=$(cat /run/app/level); publish
  log info "log level now $LEVEL (no restart: still PID $$)"
  echo "$(cat /run/app/request) $LEVEL" > /run/app/ack   # tell the waiting API: done
}
trap reload HUP
trap 'log info "stopping"; exit 0' TERM
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ); publish
log info "$NAME starting, log level $LEVEL"
httpd -f -v -p "$API_PORT" -h /srv/api 2>&1 &              # the control API
[ -n "$DEBUG_ADDR" ] && httpd -f -p "$DEBUG_ADDR" -h /srv/debug 2>&1 &
n=0; sleeper=""
while :; do   # one tick a second; a signal ends `wait` early, never the tick's sleep
  if [ -z "$sleeper" ] || ! kill -0 "$sleeper" 2>/dev/null; then
    n=$((n + 1))
    [ "$LEVEL" = debug ] && log debug "tick $n, $(grep -c . /proc/1/maps) mappings"
    sleep 1 & sleeper=$!
  fi
  wait "$sleeper"
done
"""

LIB = r"""# Shared by the API's CGI scripts.  busybox httpd passes request headers as
# HTTP_* variables and sends a CGI's output as it is when it starts with "HTTP/".
BODY=$(head -c "${CONTENT_LENGTH:-0}")    # read it all, even when refusing
reply() {   # reply "STATUS TEXT" BODY [CONTENT-TYPE]
  printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n\r\n%s\n' \
    "$1" "${3:-application/json}" "$2"
  exit 0
}
need_token() {
  [ -n "$HTTP_AUTHORIZATION" ] && \
  [ "$HTTP_AUTHORIZATION" = "Bearer $(cat /run/secrets/api-token)" ] && return 0
  reply "401 Unauthorized" '{"error":"this endpoint needs the header Authorization: Bearer <token>"}'
}
"""

CGI = {
    "health": r"""#!/bin/sh
. /srv/api/lib.sh
kill -0 1 2>/dev/null && [ -s /run/app/effective ] && reply "200 OK" '{"status":"ok"}'
reply "503 Service Unavailable" '{"status":"down"}'
""",
    "config": r"""#!/bin/sh
. /srv/api/lib.sh
need_token
reply "200 OK" "$(cat /run/app/effective)"
""",
    "loglevel": r"""#!/bin/sh
. /srv/api/lib.sh
need_token
[ "$REQUEST_METHOD" = POST ] || reply "405 Method Not Allowed" '{"error":"POST level=..."}'
level=${BODY#level=}
case "$level" in
  error|warn|info|debug) ;;
  *) reply "400 Bad Request" '{"error":"level is one of error, warn, info, debug"}' ;;
esac
exec 3<> /run/app/ack                        # listen for the answer before asking
echo "$level" > /run/app/level; echo $$ > /run/app/request
kill -HUP 1                                  # PID 1 re-reads the level: no restart
while read -t 10 id got <&3; do              # answers to older requests are skipped
  [ "$id" = $$ ] && reply "200 OK" "$(cat /run/app/effective)"
done
reply "504 Gateway Timeout" '{"error":"the service did not answer within 10 s"}'
""",
    "state": r"""#!/bin/sh
. /srv/api/lib.sh
need_token
field() { awk -v k="$1:" '$1 == k { print $2 }' /proc/1/status; }
fds=""
for fd in $(ls /proc/1/fd | sort -n); do
  fds="$fds{\"fd\":$fd,\"target\":\"$(readlink /proc/1/fd/$fd)\"},"
done
reply "200 OK" "{\"pid\":1,\"name\":\"$(field Name)\",\"state\":\"$(field State)\",\
\"threads\":$(field Threads),\"vmrss_kb\":$(field VmRSS),\"fds\":[${fds%,}]}"
""",
    "metrics": r"""#!/bin/sh
. /srv/api/lib.sh
need_token
cg=/sys/fs/cgroup
if [ -e $cg/memory.current ]; then            # cgroup v2: one directory
  mem=$(cat $cg/memory.current); max=$(cat $cg/memory.max)
  oom=$(awk '$1 == "oom_kill" { print $2 }' $cg/memory.events); p=$cg
else                                           # cgroup v1: one per controller
  mem=$(cat $cg/memory/memory.usage_in_bytes); max=$(cat $cg/memory/memory.limit_in_bytes)
  oom=$(awk '$1 == "oom_kill" { print $2 }' $cg/memory/memory.oom_control); p=$cg/pids
fi
reply "200 OK" "# read from the container's own cgroup
container_memory_usage_bytes $mem
container_memory_limit_bytes $max
container_oom_kills_total ${oom:-0}
container_pids_current $(cat $p/pids.current)
container_pids_limit $(cat $p/pids.max)" "text/plain; version=0.0.4"
""",
}

DEBUG_ENV = r"""#!/bin/sh
# An unprotected debug endpoint: PID 1's environment, as it is.
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n'
tr '\0' '\n' < /proc/1/environ
"""


def files(token: str, *, name: str, level: str) -> dict[str, tuple[str, int]]:
    """{path in the root: (content, mode)}: what the service adds to a busybox root."""
    out = {
        "srv/app/run": (APP, 0o755),
        "etc/app/app.conf": (f"NAME={name}\nLEVEL={level}\n", 0o644),
        "run/secrets/api-token": (token + "\n", 0o400),
        "srv/api/lib.sh": (LIB, 0o644),
        "srv/api/index.html": ("control API: /cgi-bin/{health,config,loglevel,state,metrics}\n", 0o644),
        "srv/debug/cgi-bin/env": (DEBUG_ENV, 0o755),
    }
    for endpoint, text in CGI.items():
        out[f"srv/api/cgi-bin/{endpoint}"] = (text, 0o755)
    return out


def cgroup_volumes(cg: cgroups.Cgroup) -> list[Volume]:
    """The container's own cgroup directories, read-only, where it expects them.

    What a container with a cgroup namespace sees when its engine mounts
    cgroupfs (cgroup_namespaces(7)): its own cgroup as the root of the tree.
    """
    if cg.version == 2:
        return [Volume(cg.path, "/sys/fs/cgroup", True)]
    return [Volume(cg.places[c].path, f"/sys/fs/cgroup/{c}", True)
            for c in ("memory", "pids") if c in cg.places]


# --- talking to it ------------------------------------------------------------------------

class Response(NamedTuple):
    status: int
    body: str
    data: object = None     # the JSON body, decoded, when there is one

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body.strip()[:60]!r}>"


def request(address: str, port: int, path: str, *, token: str | None = None,
            method: str = "GET", data: dict | None = None, timeout: float = 15.0) -> Response:
    """One HTTP request to a lab address (loopback or the lab subnet, never elsewhere).

    ``timeout`` exceeds the loglevel endpoint's own 10 s wait for PID 1's answer, so
    that a slow answer (a loaded machine, an emulated VM) is its 504, not a lost reply.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadInput(f"path {path!r}: an absolute URL path such as '/cgi-bin/health'")
    network._check_lab_address(address)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if data is not None:
        body = "&".join(f"{k}={v}" for k, v in data.items())
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
        except ConnectionRefusedError:
            raise Unreachable(f"{address}:{port} refused the connection: nothing listens "
                              "there for this network namespace") from None
        except (socket.timeout, OSError) as exc:
            raise Unreachable(f"{address}:{port} did not answer ({exc})") from None
    finally:
        conn.close()
    try:
        parsed = json.loads(text) if text.strip().startswith(("{", "[")) else None
    except ValueError:
        parsed = None
    return Response(r.status, text, parsed)


class Unreachable(LabError):
    """Nothing answered at that address and port."""


def wait_listening(address: str, port: int, timeout: float = 5.0) -> None:
    """Until something accepts TCP connections at address:port (a fresh server starts)."""
    import time
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not network.reachable(address, port, timeout=0.2):
        if time.monotonic() > deadline:
            raise Unreachable(f"nothing listens at {address}:{port} after {timeout} s")
        time.sleep(delay)   # a listen(2) has no event another namespace could wait for
        delay = min(delay * 2, 0.1)


# --- the service ----------------------------------------------------------------------------

class Service:
    """A container running the service with its control API. Nothing happens in the constructor.

    ``debug``: None (no debug endpoint), ``"public"`` (the unprotected one on
    0.0.0.0:9090 of the container) or ``"local"`` (the same on 127.0.0.1:9090
    inside, reachable from its network namespace only).  ``env``: variables of
    PID 1, e.g. a secret that an unprotected endpoint would give away.
    """

    def __init__(self, *, level: str = "info", debug: str | None = None,
                 env: dict[str, str] | None = None, memory: str = "64M", pids: int = 64,
                 token: str | None = None, name: str | None = None):
        if level not in LEVELS:
            raise BadInput(f"level {level!r}: one of {', '.join(LEVELS)}")
        if debug not in (None, "public", "local"):
            raise BadInput(f"debug={debug!r}: None, 'public' or 'local'")
        self.token = token or secrets.token_urlsafe(18)
        self.level = level
        self.debug = debug
        addr = {None: "", "public": f"0.0.0.0:{DEBUG_PORT}", "local": f"127.0.0.1:{DEBUG_PORT}"}[debug]
        self.container = Container(
            ["/srv/app/run"], network=True, memory=memory, pids=pids, name=name,
            env={"API_PORT": str(API_PORT), "DEBUG_ADDR": addr, **(env or {})})
        self.name = self.container.name

    @needs("root", "starting the service's container:")
    def start(self) -> "Service":
        c = self.container
        c.create()
        try:
            for path, (text, mode) in files(self.token, name=self.name, level=self.level).items():
                full = os.path.join(c.root, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
                    f.write(text)
                os.chmod(full, mode)
            c.volumes = c.volumes + tuple(cgroup_volumes(c.cgroup))
            c.start()
            wait_listening(c.address, API_PORT)
            if self.debug == "public":
                wait_listening(c.address, DEBUG_PORT)
        except BaseException:
            c.remove()
            raise
        return self

    @property
    def address(self) -> str:
        return self.container.address

    @property
    def pid(self) -> int:
        return self.container.pid

    def api(self, endpoint: str, *, token: str | None = None, data: dict | None = None) -> Response:
        """Ask the control API from this process, over the lab network (host side of the bridge)."""
        method = "POST" if data is not None else "GET"
        return request(self.address, API_PORT, f"/cgi-bin/{endpoint}", token=token,
                       method=method, data=data)

    def logs(self) -> str:
        return self.container.logs()

    def remove(self) -> None:
        self.container.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self) -> str:
        return f"<Service {self.name} {self.container.state} at {self.address}:{API_PORT}>"


def service(**kw) -> Service:
    """Start a service container with its control API (see :class:`Service`)."""
    return Service(**kw).start()


def parse_metrics(text: str) -> dict[str, int]:
    """Prometheus text format (``name value`` lines, '#' comments) into a dict."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition(" ")
            try:
                out[k] = int(v)
            except ValueError:
                out[k] = v.strip()
    return out


# --- a published port -----------------------------------------------------------------------

class Published:
    """A host port forwarded into a container: what ``docker run -p`` sets up.

    Docker does it with a DNAT rule plus a user-space proxy (docker-proxy) for
    connections from the host itself; here only the proxy, as threads of this
    process, and only on 127.0.0.1: the lab sends no traffic beyond loopback
    and its own namespaces.  ``close()`` stops it (safe twice); nothing of it
    outlives this process.
    """

    def __init__(self, address: str, port: int, host_port: int = 0):
        network._check_lab_address(address)
        self.target = (address, port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", host_port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"jap-publish-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stop":
                        return
                    if key.data == "accept":
                        client, _ = self._listener.accept()
                        try:
                            upstream = socket.create_connection(self.target, timeout=3)
                        except OSError:
                            client.close()
                            continue
                        peers[client], peers[upstream] = upstream, client
                        sel.register(client, selectors.EVENT_READ, "pipe")
                        sel.register(upstream, selectors.EVENT_READ, "pipe")
                        continue
                    src = key.fileobj
                    dst = peers.get(src)
                    try:
                        chunk = src.recv(65536)
                    except OSError:
                        chunk = b""
                    if chunk and dst is not None:
                        try:
                            dst.sendall(chunk)
                            continue
                        except OSError:
                            pass
                    for s in (src, dst):
                        if s is not None and s in peers:
                            sel.unregister(s)
                            peers.pop(s, None)
                            s.close()
        finally:
            for s in list(peers):
                s.close()
            sel.close()

    def close(self) -> None:
        if self._stop_w is not None:
            os.write(self._stop_w, b"x")
            self._thread.join()
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)
            self._stop_w = None
            self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<Published 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}>"


def publish(address: str, port: int, host_port: int = 0) -> Published:
    """Forward 127.0.0.1:host_port (0: any free port) to a container's address:port."""
    return Published(address, port, host_port)
