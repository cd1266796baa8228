"""The control API inside a container (justaprocess.remote): real requests over the lab network."""
import json
import os
import subprocess

import pytest
from conftest import PY, wait_exit

from justaprocess import cgroups, lab, proc, remote
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


@pytest.fixture
def svc(own_objects):
    s = remote.service(env={"DB_PASSWORD": "not-for-you"})
    yield s
    s.remove()


def test_health_answers_without_a_token_the_rest_only_with_it(svc):
    assert svc.api("health").status == 200
    for endpoint in ("config", "state", "metrics"):
        assert svc.api(endpoint).status == 401, endpoint
        assert svc.api(endpoint, token="wrong-" + svc.token).status == 401, endpoint
        assert svc.api(endpoint, token=svc.token).status == 200, endpoint
    assert svc.api("loglevel", data={"level": "debug"}).status == 401
    assert svc.api("config", token=svc.token).data["level"] == "info"  # unchanged by the refusal


def test_the_token_is_a_root_only_file_in_the_container(svc):
    st = os.stat(f"/proc/{svc.pid}/root/run/secrets/api-token")
    assert st.st_mode & 0o777 == 0o400 and st.st_uid == 0
    with open(f"/proc/{svc.pid}/root/run/secrets/api-token") as f:
        assert f.read().strip() == svc.token


def test_loglevel_changes_at_run_time_without_a_restart(svc):
    start = proc.start_time(svc.pid)
    r = svc.api("loglevel", token=svc.token, data={"level": "debug"})
    assert r.status == 200 and r.data["level"] == "debug"
    assert proc.start_time(svc.pid) == start and svc.container.running()
    assert "log level now debug" in svc.logs()
    with open(f"/proc/{svc.pid}/root/run/app/level") as f:
        assert f.read().strip() == "debug"
    assert svc.api("config", token=svc.token).data["level"] == "debug"


def test_a_bad_level_or_method_is_refused(svc):
    assert svc.api("loglevel", token=svc.token, data={"level": "loud"}).status == 400
    assert svc.api("loglevel", token=svc.token).status == 405
    assert svc.api("config", token=svc.token).data["level"] == "info"


def test_state_lists_pid_1s_open_fds_as_the_host_sees_them(svc):
    r = svc.api("state", token=svc.token)
    assert r.status == 200 and r.data["pid"] == 1
    assert {f["fd"] for f in r.data["fds"]} == {int(x) for x in os.listdir(f"/proc/{svc.pid}/fd")}
    assert r.data["name"] == proc.status(svc.pid)["Name"]


def test_metrics_come_from_its_own_cgroup(svc):
    m = remote.parse_metrics(svc.api("metrics", token=svc.token).body)
    st = svc.container.cgroup.stats()
    assert m["container_memory_limit_bytes"] == st.memory_max == cgroups.parse_size("64M")
    assert m["container_pids_limit"] == st.pids_max == 64
    assert 1 <= m["container_pids_current"] <= 64
    assert m["container_oom_kills_total"] == 0


def test_a_published_unprotected_endpoint_gives_secrets_to_anyone_on_the_host(own_objects):
    with remote.service(debug="public", env={"DB_PASSWORD": "hunter2"}) as s, \
            remote.publish(s.address, remote.DEBUG_PORT) as pub:
        r = remote.request("127.0.0.1", pub.port, "/cgi-bin/env")   # no token
        assert r.status == 200 and "DB_PASSWORD=hunter2" in r.body
    with pytest.raises(remote.Unreachable):
        remote.request("127.0.0.1", pub.port, "/cgi-bin/env")      # closed with it


def test_a_local_debug_endpoint_answers_only_inside_its_network_namespace(own_objects):
    with remote.service(debug="local", env={"DB_PASSWORD": "hunter2"}) as s:
        with pytest.raises(remote.Unreachable):
            remote.request(s.address, remote.DEBUG_PORT, "/cgi-bin/env")
        r = s.container.exec(["wget", "-qO-", f"http://127.0.0.1:{remote.DEBUG_PORT}/cgi-bin/env"])
        assert r.returncode == 0 and "DB_PASSWORD=hunter2" in r.stdout


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(BadInput, match="one of error"):
        remote.Service(level="loud")
    with pytest.raises(BadInput, match="'public' or 'local'"):
        remote.Service(debug="yes")
    with pytest.raises(BadInput, match="not a lab address"):
        remote.request("8.8.8.8", 80, "/")
    with pytest.raises(BadInput, match="absolute URL path"):
        remote.request("127.0.0.1", 80, "cgi-bin/health")


def test_remove_leaves_nothing(own_objects):
    s = remote.service()
    names = {s.name, s.container.dir}
    s.remove()
    left = [e for e in lab.leftovers() if any(n in e.name for n in names)]
    assert left == []


KILLED_OWNER = """
import json, os, signal, sys
from justaprocess import remote
s = remote.service(debug="public")
pub = remote.publish(s.address, remote.DEBUG_PORT)
print(json.dumps({"owner": os.getpid(), "pid": s.pid, "dir": s.container.dir, "cgroups": s.container.cgroups,
                  "veth": s.container.net.lease.host_ifname, "port": pub.port}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # a kernel killed mid-notebook: no remove(), no atexit
"""


def test_a_killed_owner_leaves_nothing_after_the_stale_cleanup():
    r = subprocess.run([PY, "-c", KILLED_OWNER], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    left = json.loads(r.stdout)
    # PR_SET_PDEATHSIG: the container's PID 1 dies with its creator
    assert wait_exit(left["pid"]), "the service outlived its creator"
    with pytest.raises(remote.Unreachable):   # the published port went with the process
        remote.request("127.0.0.1", left["port"], "/cgi-bin/env")
    lab.cleanup(owner=left["owner"])   # what a stale cleanup does for this dead owner
    assert not os.path.exists(left["dir"])
    assert not any(os.path.exists(d) for d in left["cgroups"])
    assert not os.path.exists(f"/sys/class/net/{left['veth']}")


def test_an_address_reused_at_once_is_reachable(own_objects):
    """network.attach forgets the host's neighbour entry of a reused address (arp(7)):
    else the host keeps sending to the MAC of the container that had it a moment ago."""
    with remote.service() as keep:          # keeps the bridge (and its neighbour cache) alive
        first = remote.service(debug="public")
        assert first.api("health").status == 200
        address = first.address
        first.remove()
        with remote.service() as second:
            assert second.address == address   # the lowest free lease: the same address
            assert second.api("health").status == 200
        assert keep.api("health").status == 200
