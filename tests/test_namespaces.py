"""justaprocess.namespaces: real namespaces, made and read through the real kernel files.

Every test that creates namespaces is root-only; each asserts an effect the
kernel shows (a hostname, an interface list, /proc/PID/ns links, a clock),
and the error cases assert that the message says what to do.
"""
import json
import os
import socket
import subprocess
import time

import pytest
from conftest import IS_ROOT, PY, as_user, cli, wait_exit, wait_for

from justaprocess import lab, namespaces as ns, proc
from justaprocess.errors import BadInput, LabError, NoSuchProcess

root = pytest.mark.root


def _gone(pid):
    return not proc.running(pid)


# --- the eight kinds, and reading ------------------------------------------------

def test_kinds_are_the_eight_with_their_clone_flags():
    assert ns.KIND_NAMES == ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
    assert ns.KIND_NAMES == proc.NS_KINDS
    flags = [k.flag for k in ns.KINDS.values()]
    assert len(set(flags)) == 8 and all(f & (f - 1) == 0 for f in flags)  # distinct single bits
    assert ns.KINDS["mnt"].flag == 0x00020000 and ns.KINDS["net"].flag == 0x40000000
    for k in ns.KINDS.values():
        assert k.man.endswith("(7)") and k.isolates and k.option.startswith("--")


def test_kind_names_are_normalised_and_unknown_ones_refused():
    assert ns.kinds_of("uts,net") == ("net", "uts")
    assert ns.kinds_of(["mount", "network"]) == ("mnt", "net")
    assert ns.kinds_of("all") == ns.KIND_NAMES
    with pytest.raises(BadInput, match="unknown namespace kind 'pidd'.*cgroup, ipc"):
        ns.kinds_of(["pidd"])


def test_of_self_matches_the_proc_links():
    mine = ns.of()
    for k, ino in mine.items():
        assert os.readlink(f"/proc/self/ns/{k}") == f"{k}:[{ino}]"


def test_compare_a_plain_child_shares_everything():
    child = subprocess.Popen(["sleep", "10"])
    try:
        s = ns.compare(child.pid, os.getpid())
        assert set(s.shared) == set(ns.of()) and s.separate == ()
    finally:
        child.kill()
        child.wait()


def test_dead_pid_is_a_clear_error():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(NoSuchProcess, match="has it exited"):
        ns.of(child.pid)
    with pytest.raises(NoSuchProcess):
        ns.compare(child.pid, "self")
    with pytest.raises(NoSuchProcess):
        ns.enter(child.pid, ["true"])


def test_inventory_agrees_with_lsns():
    lsns = subprocess.run(["lsns", "--json", "--list"], capture_output=True, text=True, check=True)
    theirs = json.loads(lsns.stdout)["namespaces"]
    mine = {(n.ns, n.type): n for n in ns.inventory()}
    # Processes come and go between the two reads (other tests run too): compare
    # the namespaces of processes that are still alive and whose namespace we both list.
    common = 0
    for t in theirs:
        if not proc.exists(t["pid"]):
            continue
        n = mine.get((t["ns"], t["type"]))
        assert n is not None, f"lsns lists {t} and inventory() does not"
        assert n.pid == t["pid"] and n.user == t["user"]
        assert set(n.lsns()) == set(t)
        common += 1
    assert common >= 8  # at least the host's eight


def test_members_of_our_net_namespace_include_us_and_a_child():
    child = subprocess.Popen(["sleep", "10"])
    try:
        pids = ns.members(os.getpid(), "net")
        assert os.getpid() in pids and child.pid in pids
    finally:
        child.kill()
        child.wait()
    with pytest.raises(BadInput):
        ns.members(os.getpid(), "nett")


def test_fake_procfs(tmp_path):
    for pid, net in ((1, 4026531840), (7, 4026531840), (9, 4026532000)):
        d = tmp_path / str(pid) / "ns"
        d.mkdir(parents=True)
        os.symlink(f"net:[{net}]", d / "net")
        (tmp_path / str(pid) / "cmdline").write_bytes(b"prog\0-x\0")
    inv = ns.inventory("net", procfs=str(tmp_path))
    assert [(n.ns, n.nprocs, n.pid, n.command) for n in inv] == \
        [(4026531840, 2, 1, "prog -x"), (4026532000, 1, 9, "prog -x")]
    assert ns.members(9, "net", procfs=str(tmp_path)) == [9]
    m = ns.share_map(procfs=str(tmp_path), kinds="net", highlight=[9])
    assert [(r.pid, r.labels["net"], r.highlight) for r in m.rows] == [(1, "host", False), (9, "A", True)]


def test_cli_table_and_json():
    out = cli("ns", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["namespaces"]
    assert {"ns", "type", "nprocs", "pid", "command"} <= set(data[0])
    assert {d["type"] for d in data} >= {"mnt", "net", "pid", "uts"}
    one = cli("ns", str(os.getpid()), "--json")
    rows = json.loads(one.stdout)["namespaces"]
    assert all(r["shared_with_host"] for r in rows if r["type"] in ("net", "uts"))
    table = cli("ns")
    assert table.stdout.splitlines()[0].split() == ["NS", "TYPE", "NPROCS", "PID", "USER", "COMMAND"]
    bad = cli("ns", "999999999")
    assert bad.returncode == 2 and "no process with PID 999999999" in bad.stderr
    assert "Traceback" not in bad.stderr


# --- creating: each kind isolates something real ---------------------------------

@root
def test_uts_hostname_changes_inside_only(own_objects):
    r = ns.run(["hostname"], kinds="uts", hostname="jap-inside")
    assert r.returncode == 0 and r.stdout.strip() == "jap-inside"
    assert socket.gethostname() != "jap-inside"


@root
def test_net_has_only_lo(own_objects):
    r = ns.run(["cat", "/proc/net/dev"], kinds="net")
    names = {line.split(":")[0].strip() for line in r.stdout.splitlines() if ":" in line}
    assert names == {"lo"}
    assert len(os.listdir("/sys/class/net")) > 1  # the host has more
    routes = ns.run("ip route; ip -6 route", kinds="net")
    assert routes.returncode == 0 and routes.stdout == ""  # and no routes at all


@root
def test_ipc_queue_invisible_across(own_objects):
    made = ns.run("ipcmk -Q >/dev/null && ipcs -q | grep -c '^0x'", kinds="ipc")
    assert made.stdout.strip() == "1"
    # The queue died with its namespace: none of ours is visible on the host.
    assert ns.run("ipcs -q | grep -c '^0x' || true", kinds="ipc").stdout.strip() == "0"


@root
def test_mnt_mount_visible_inside_only(own_objects, tmp_path):
    r = ns.run(f"mount -t tmpfs jap-test {tmp_path} && grep -c ' {tmp_path} ' /proc/self/mounts",
               kinds="mnt")
    assert r.stdout.strip() == "1"
    assert str(tmp_path) not in open("/proc/self/mounts").read()


@root
def test_mounts_stay_inside_even_when_root_is_shared(own_objects, tmp_path):
    # On a systemd host "/" is mounted rshared: without making the copy private,
    # a mount made in the new namespace would propagate back (mount_namespaces(7)).
    # This machine's "/" is private, so build a shared one in a throwaway namespace.
    def on_a_shared_host():
        subprocess.run(["mount", "--make-rshared", "/"], check=True)
        assert "shared:" in next(l for l in open("/proc/self/mountinfo") if l.split()[4] == "/")
        inner = ns.run(f"mount -t tmpfs jap-shared-test {tmp_path} && grep -c jap-shared-test "
                       "/proc/self/mounts", kinds="mnt,pid")  # pid+mnt: a fresh /proc too
        leaked = [l for l in open("/proc/self/mounts") if "jap-shared-test" in l]
        procs = len([d for d in os.listdir("/proc") if d.isdigit()])
        return inner.stdout.strip(), leaked, procs
    r = ns.run(on_a_shared_host, kinds="mnt")
    assert r.ok, r.stderr
    inside, leaked, procs_outside = r.value
    assert inside == "1" and leaked == [] and procs_outside > 5


@root
def test_pid_with_fresh_proc_sees_only_itself(own_objects):
    r = ns.run("echo $$; ls /proc | grep -c '^[0-9]'", kinds="pid,mnt")
    pid_inside, visible = r.stdout.split()
    assert pid_inside == "1" and r.ns_pid == 1
    assert int(visible) <= 3  # sh, ls, grep
    assert proc.exists(r.host_pid) is False  # it ran to the end


@root
def test_pid_without_mnt_says_the_proc_is_the_hosts(own_objects):
    r = ns.run("echo $$; ls /proc | grep -c '^[0-9]'", kinds="pid")
    pid_inside, visible = r.stdout.split()
    assert pid_inside == "1" and int(visible) > 5
    assert any("host's /proc" in n for n in r.notes)
    with pytest.raises(BadInput, match="needs both 'pid'.*'mnt'"):
        ns.run("true", kinds="pid", fresh_proc=True)


@root
def test_user_root_inside_is_unprivileged_outside(own_objects):
    with ns.spawn(["sleep", "30"], kinds="user,uts", uid_map="0 100000 65536") as p:
        uid_outside = int(proc.status(p.host_pid)["Uid"].split()[0])
        assert uid_outside == 100000
        assert proc.uid_map(p.host_pid)[0] == (0, 100000, 65536)
    r = ns.run("id -u; cat /etc/shadow >/dev/null 2>&1 && echo read || echo denied",
               kinds="user", uid_map=100000)
    assert r.stdout.split() == ["0", "denied"]


@root
def test_cgroup_namespace_root_is_slash(own_objects):
    r = ns.run(["cat", "/proc/self/cgroup"], kinds="cgroup")
    assert r.stdout and all(line.split(":", 2)[2] == "/" for line in r.stdout.splitlines())


@root
def test_time_namespace_shifts_boottime(own_objects):
    # Read between two readings of the host's clock: the inside reading, minus
    # the offset, lies between them (no tolerance to tune, nothing timed).
    def uptime():
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    day = 86400
    before = uptime()
    r = ns.run(["cat", "/proc/uptime"], kinds="time", boottime=3 * day)
    after = uptime()
    inside = float(r.stdout.split()[0]) - 3 * day
    assert before - 0.01 <= inside <= after + 0.01  # /proc/uptime has 1/100 s
    # monotonic too, read by a Python callable (CLOCK_MONOTONIC)
    before = time.monotonic()
    r2 = ns.run(lambda: time.monotonic(), kinds="time", monotonic=1000)
    after = time.monotonic()
    assert before <= r2.value - 1000 <= after


@root
def test_all_eight_at_once_each_is_new(own_objects):
    with ns.spawn(["sleep", "30"], kinds="all", uid_map="0 100000 65536", hostname="jap-all") as p:
        s = ns.compare(p.host_pid, os.getpid())
        assert set(s.separate) == set(ns.of()) and s.shared == ()
        assert p.ns_pid == 1 and proc.nspid(p.host_pid)[-1] == 1
        assert proc.status(p.host_pid)["Name"] == "sleep"  # the process itself, not a wrapper


@root
def test_run_a_callable_returns_value_and_output(own_objects):
    def inside():
        print("hello from inside")
        return os.getpid(), socket.gethostname()
    r = ns.run(inside, kinds="pid,uts,mnt", hostname="jap-fn")
    assert r.value == (1, "jap-fn") and r.stdout == "hello from inside\n" and r.ok
    bad = ns.run(lambda: 1 / 0, kinds="uts")
    assert bad.returncode == 1 and "ZeroDivisionError" in bad.stderr


@root
def test_exit_codes_signals_and_input(own_objects):
    assert ns.run("exit 3", kinds="uts").returncode == 3
    assert ns.run("kill -TERM $$", kinds="uts").returncode == -15
    # PID 1 of a namespace ignores signals it has no handler for (pid_namespaces(7))
    assert ns.run("kill -TERM $$; echo survived", kinds="pid,mnt").stdout == "survived\n"
    assert ns.run(["cat"], kinds="uts", input="abc").stdout == "abc"
    with pytest.raises(LabError, match="exited with 3"):
        ns.run("exit 3", kinds="uts").check()


@root
def test_timeout_kills_and_says_so(own_objects):
    with pytest.raises(LabError, match="did not finish within 0.3 s"):
        ns.run(["sleep", "20"], kinds="pid,mnt", timeout=0.3)
    assert not [e for e in lab.entries() if e.owner == os.getpid() and lab.present(e)]


@root
def test_spawn_is_registered_and_stop_kills_it(own_objects):
    p = ns.spawn(["sleep", "30"], kinds="pid,mnt,uts", hostname="jap-sp")
    # the launcher's helper, or (from a single-threaded caller) the process itself
    host_pid, tramp = p.host_pid, p.launcher.pid
    assert p.alive()
    registered = {e.pid for e in lab.entries() if e.kind == "process"}
    assert {host_pid, tramp} <= registered
    p.stop()
    p.stop()  # twice is fine
    assert not p.alive() and not proc.exists(tramp)
    # ... and the lab's cleanup of this process's objects (%lab_cleanup) stops one too
    q = ns.spawn(["sleep", "30"], kinds="pid,mnt")
    lab.cleanup(owner=os.getpid())
    assert not q.alive() and _gone(q.launcher.pid)  # a zombie until its Popen reaps it
    assert not p.alive() and not proc.exists(tramp)
    registered = {e.pid for e in lab.entries() if e.kind == "process"}
    assert not {host_pid, tramp} & registered


@root
def test_spawn_of_a_command_that_exits_at_once(own_objects):
    for _ in range(20):  # the race: it may be gone before spawn() registers it
        p = ns.spawn(["true"], kinds="uts,pid,mnt")
        assert p.wait(5) == 0 and not p.alive()
        p.stop()
    p = ns.spawn("exit 7", kinds="uts")
    assert p.wait(5) == 7
    p.stop()


@root
def test_spawn_dies_with_its_parent(own_objects):
    code = ("from justaprocess import namespaces as ns; import os; "
            "p = ns.spawn(['sleep', '30'], kinds='pid,mnt'); print(p.host_pid, flush=True); "
            "os._exit(0)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=20)
    pid = int(out.stdout.split()[0])
    assert wait_exit(pid) and _gone(pid)
    for e in lab.entries():  # the dead parent's registry entries (its objects are gone)
        if e.kind == "process" and e.pid == pid or e.note.startswith("namespaces.spawn sleep") \
                and not lab.owner_alive(e) and not lab.present(e):
            lab.remove(e)


@root
def test_enter_joins_a_running_processes_namespaces(own_objects):
    with ns.spawn(["sleep", "30"], kinds="pid,mnt,uts,net,ipc", hostname="jap-target") as p:
        r = ns.enter(p.host_pid, "hostname; echo $$; ls /proc | grep -c '^[0-9]'")
        name, pid, visible = r.stdout.split()
        assert name == "jap-target" and pid == "2" and int(visible) <= 4
        assert set(r.kinds) == {"pid", "mnt", "uts", "net", "ipc"}
        only = ns.enter(p.host_pid, ["hostname"], kinds="uts")
        assert only.stdout.strip() == "jap-target" and only.kinds == ("uts",)
        # pid without mnt: the host's /proc, and a note saying so
        half = ns.enter(p.host_pid, "echo $$; ls /proc | grep -c '^[0-9]'", kinds="pid")
        pid, visible = half.stdout.split()
        assert 1 < int(pid) < 50 and int(visible) > 5 and half.notes
        joined = ns.enter(p.host_pid, lambda: sorted(ns.compare("self", 1).separate), kinds="all")
        assert joined.value == []


@root
def test_no_helper_process_lingers_in_the_new_namespaces(own_objects):
    # The target is cloned into its namespaces; the launcher's helper that waits for it
    # stays in ours (unlike `unshare --fork`, whose parent stays in all but pid).
    with ns.spawn("sleep 30 & sleep 30; wait", kinds="all", uid_map="0 100000 65536") as p:
        wait_for(lambda: len(ns.members(p.host_pid, "net")) >= 3, what="both sleeps started")
        for kind in ns.KIND_NAMES:
            assert p.launcher.pid not in ns.members(p.host_pid, kind), kind
        assert sorted(ns.members(p.host_pid, "net")) == sorted(ns.members(p.host_pid, "pid"))
        assert len(ns.members(p.host_pid, "pid")) == 3
        assert set(ns.compare(p.launcher.pid, os.getpid()).shared) == set(ns.of())


@root
def test_enter_all_eight_of_a_user_and_time_container(own_objects):
    with ns.spawn(["sleep", "30"], kinds="all", uid_map="0 100000 65536", boottime=86400,
                  hostname="jap-all8") as p:
        r = ns.enter(p.host_pid, "cut -d' ' -f1 /proc/uptime; id -u; hostname")
        up, uid, name = r.stdout.split()
        assert float(up) - float(open("/proc/uptime").read().split()[0]) > 86000
        assert (uid, name) == ("0", "jap-all8") and set(r.kinds) == set(ns.of())


@root
def test_enter_a_user_namespace(own_objects):
    with ns.spawn(["sleep", "30"], kinds="user,uts,pid,mnt", uid_map="0 100000 65536",
                  hostname="jap-u") as p:
        r = ns.enter(p.host_pid, "id -u; hostname; cat /proc/self/uid_map")
        assert r.stdout.split()[:2] == ["0", "jap-u"]
        assert r.stdout.split()[2:] == ["0", "100000", "65536"]


@root
def test_share_map_highlights_a_container(own_objects):
    with ns.spawn(["sleep", "30"], kinds="uts,net,pid,mnt") as p:
        m = ns.share_map(highlight=[p.host_pid], reference=os.getpid())
        row = m.row(p.host_pid)
        assert row.highlight
        assert {k for k, v in row.labels.items() if v == "host"} == {"cgroup", "ipc", "time", "user"}
        assert m.rows[0].pid == os.getpid() and set(m.rows[0].labels.values()) == {"host"}
        assert "host" in repr(m) and "<table>" in m._repr_html_()


def test_bad_options_say_which_kind_is_missing():
    with pytest.raises(BadInput, match="add 'uts'"):
        ns.run("true", kinds="net", hostname="x")
    with pytest.raises(BadInput, match="add 'user'"):
        ns.run("true", kinds="uts", uid_map="0 100000 1")
    with pytest.raises(BadInput, match="add 'time'"):
        ns.run("true", kinds="uts", boottime=5)
    with pytest.raises(BadInput, match="INSIDE OUTSIDE COUNT"):
        ns.run("true", kinds="user", uid_map="0 100000")
    with pytest.raises(BadInput, match="a command"):
        ns.run(42, kinds="uts")


@root
def test_missing_command_is_a_clear_error(own_objects):
    with pytest.raises(BadInput, match="'jap-no-such-command' not found"):
        ns.run(["jap-no-such-command"], kinds="uts")
    with pytest.raises(BadInput, match="not found"):
        ns.spawn(["jap-no-such-command"], kinds="pid,mnt")


def test_not_root_is_a_clear_error():
    code = ("from justaprocess import namespaces as ns\n"
            "from justaprocess.errors import NeedsPrivilege\n"
            "try:\n    ns.run('true', kinds='net')\nexcept NeedsPrivilege as e:\n    print(e)\n"
            "try:\n    ns.enter(1, 'true')\nexcept NeedsPrivilege as e:\n    print(e)\n")
    if not IS_ROOT:
        pytest.skip("needs root to drop to nobody for this test")
    out = as_user("-c", code)
    lines = out.stdout.splitlines()
    assert "needs CAP_SYS_ADMIN" in lines[0] and "run the lab as root" in lines[0]
    assert "needs root" in lines[1]


