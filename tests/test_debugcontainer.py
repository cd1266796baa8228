"""Debug containers (justaprocess.debugcontainer): real processes in a target's namespaces."""
import fcntl
import os
import pty
import select
import subprocess
import termios

import pytest
from conftest import PY, cli, wait_exit, wait_for

from justaprocess import cgroups, lab, proc, rootfs, runtimes, scenarios
from justaprocess import debugcontainer as D
from justaprocess.container import Container
from justaprocess.errors import BadInput, LabError

pytestmark = pytest.mark.root


@pytest.fixture
def app(own_objects):
    c = Container(["/bin/busybox", "httpd", "-f", "-p", "8080"], network=True, memory="32M", pids=16)
    c.start()
    yield c
    c.remove()


def _mine(name: str) -> list:
    return [e for e in lab.entries() if name in e.name]


def test_it_joins_all_but_mnt_and_cgroup_and_has_its_own_cgroup_and_tools(app):
    with D.debug_container(app) as dc:
        assert set(dc.share) == {"pid", "net", "ipc", "uts"}
        h = dc.start(["sleep", "60"], stdout="null", stderr="null")
        mine, theirs, host = proc.namespaces(h.pid), proc.namespaces(app.pid), proc.namespaces("self")
        for k in ("pid", "net", "ipc", "uts"):
            assert mine[k] == theirs[k], k
        for k in ("mnt", "cgroup"):
            assert mine[k] not in (theirs[k], host[k]), k
        assert h.pid in dc.cgroup.pids() and app.pid not in dc.cgroup.pids()
        assert dc.cgroup.stats().pids_max == D.DEFAULT_PIDS
        r = dc.run("ps -o pid,comm; cat /proc/1/root/etc/hostname; command -v strace; cat /proc/self/cgroup")
        assert r.returncode == 0, r.stderr
        assert "1 busybox" in " ".join(r.stdout.split()) or " 1 " in r.stdout  # the target is PID 1
        assert "/usr/local/bin/strace" in r.stdout                         # the debug root's tools
        assert not os.path.exists(f"/proc/{app.pid}/root/usr/local/bin/strace")  # not the target's
        name, root = dc.name, dc.root
    assert not os.path.exists(root) and not any(os.path.exists(p) for p in dc_paths(name))
    assert app.running()


def dc_paths(name):
    return [e.name for e in _mine(name)]


def test_share_is_chosen_and_mnt_or_cgroup_are_refused_with_why(app):
    with D.debug_container(app, share="net") as dc:
        h = dc.start(["sleep", "60"], stdout="null", stderr="null")
        assert proc.namespaces(h.pid)["net"] == proc.namespaces(app.pid)["net"]
        assert proc.namespaces(h.pid)["pid"] == proc.namespaces("self")["pid"]
    with pytest.raises(BadInput, match="never shares mnt"):
        D.DebugContainer(app, share="pid,mnt")
    with pytest.raises(BadInput, match="never shares cgroup"):
        D.DebugContainer(app, share=["cgroup"])
    with pytest.raises(BadInput, match="unknown namespace kind 'nett'"):
        D.DebugContainer(app, share="nett")
    with pytest.raises(BadInput, match="is not a folder"):
        D.DebugContainer(app, tools="/no/such/dir")


def test_strace_needs_cap_sys_ptrace(app):
    with D.debug_container(app, caps=()) as dc:
        r = dc.run("strace -p 1 -e trace=none -o /dev/null; echo rc=$?")
        assert "rc=1" in r.stdout and "Operation not permitted" in r.stderr
    with D.debug_container(app) as dc:   # the default: the engine's set + cap_sys_ptrace
        r = dc.run("strace -p 1 -e trace=none -o /dev/null & s=$!; sleep 0.2; kill $s; wait $s; echo done")
        assert "Process 1 attached" in r.stderr and "not permitted" not in r.stderr


def test_at_pids_max_exec_fails_and_the_debug_container_works(own_objects):
    with scenarios.start("pids-exhausted", seed=1) as s:
        c = s.target
        st = cgroups.read_stats(cgroups.places_of(c.pid))
        assert st.pids_current >= st.pids_max
        with pytest.raises(LabError):   # exec joins the full cgroup: its fork gets EAGAIN
            r = c.exec(["sh", "-c", "echo in"])
            r.check()
        with D.debug_container(c) as dc:
            r = dc.run("ps -o pid | wc -l")
            assert r.returncode == 0 and int(r.stdout) - 1 >= st.pids_max


def test_at_memory_max_the_tool_is_killed_inside_and_works_in_the_debug_container(own_objects):
    with scenarios.start("tool-oom", seed=1) as s:
        c = s.target
        tool = list(scenarios.get("tool-oom").tool)
        r = c.exec(tool)
        assert r.returncode == -9
        with D.debug_container(c, memory="1536M") as dc:   # above the tool's buffer
            r = dc.run(tool)
            assert r.returncode == 0, r.stderr
        assert c.running()


def test_the_sharing_table_is_read_from_live_processes(app):
    rows = {r.approach: r for r in D.sharing(app)}
    assert list(rows) == list(D.APPROACHES)
    ex, sc, dc, ns, kd = (rows[a] for a in D.APPROACHES)
    assert all(ex.namespaces[k] for k in D.TABLE_KINDS) and ex.cgroup and ex.root
    assert ex.tools == "target"
    assert [sc.namespaces[k] for k in D.TABLE_KINDS] == [True, True, True, False, False, False]
    assert not sc.cgroup and not sc.root and sc.tools == "its own"
    assert [dc.namespaces[k] for k in D.TABLE_KINDS] == [True, True, True, True, False, False]
    assert not dc.cgroup and dc.tools == "its own"
    assert all(ns.namespaces[k] for k in D.TABLE_KINDS) and not ns.cgroup and ns.root
    assert kd.namespaces == dc.namespaces
    assert "kubectl debug --target" in D.format_table(list(rows.values()))


# --- the command line, driven through a pseudo-terminal -------------------------------------

def _drive(target: str, commands: bytes, timeout: float = 30.0, env=None) -> tuple[int, str, int]:
    """Run `python -m justaprocess debug TARGET` on a pty, type ``commands``; (exit, output, pid)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([PY, "-m", "justaprocess", "debug", target], stdin=slave, stdout=slave,
                         stderr=slave, start_new_session=True, env=env)
    os.close(slave)
    out = b""
    typed = False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                p.kill()
                pytest.fail(f"the debug shell did not answer: {out.decode(errors='replace')}")
            try:
                chunk = os.read(master, 4096)
            except OSError:      # EIO: every writer of the pty has gone
                break
            if not chunk:
                break
            out += chunk
            if not typed and b"# " in out:     # the shell's prompt: type
                os.write(master, commands)
                typed = True
    finally:
        os.close(master)
    return p.wait(timeout), out.decode(errors="replace"), p.pid


def _descendants(pid: int) -> list[str]:
    """The names of a process's descendants (proc(5) task/*/children)."""
    from justaprocess.container import children_of
    names, todo = [], [pid]
    while todo:
        try:
            kids = children_of(todo.pop())
        except FileNotFoundError:
            continue
        todo += kids
        for k in kids:
            try:
                names.append(proc.status(k)["Name"])
            except LabError:
                pass
    return names


def _controlling_tty():
    # After start_new_session's setsid: make the pty our controlling terminal, as a
    # login shell's terminal is, so that ^C typed on it sends SIGINT (termios(3)).
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_cli_ctrl_c_interrupts_the_command_in_the_debug_shell_not_the_shell(app):
    master, slave = pty.openpty()
    p = subprocess.Popen([PY, "-m", "justaprocess", "debug", str(app.pid)], stdin=slave, stdout=slave,
                         stderr=slave, start_new_session=True, preexec_fn=_controlling_tty)
    os.close(slave)
    out = b""

    def until(text: bytes, after: int = 0) -> None:
        nonlocal out
        while text not in out[after:]:
            assert select.select([master], [], [], 30)[0], out.decode(errors="replace")
            out += os.read(master, 4096)

    try:
        until(b"# ")
        os.write(master, b"sleep 1000\n")
        until(b"sleep 1000\r\n")           # echoed: the shell has read the line ...
        wait_for(lambda: "sleep" in _descendants(p.pid), what="the sleep in the debug shell")
        mark = len(out)                   # ... and runs it, the terminal back in cooked mode
        os.write(master, b"\x03")          # ^C: the terminal sends SIGINT to its foreground group
        until(b"# ", after=mark)          # a new prompt (typing earlier: ^C flushes the input)
        os.write(master, b"echo status=$?; exit 7\n")
        until(b"status=130")              # 128 + SIGINT: the sleep was interrupted ...
        assert p.wait(30) == 7            # ... and the shell carried on to its exit
    finally:
        os.close(master)
    _gone(p.pid)


def _gone(cli_pid: int) -> None:
    assert not [e for e in lab.entries() if e.owner == cli_pid], "the CLI left registered objects"


def test_cli_debug_shell_on_a_hand_built_container(app):
    with open(os.path.join(app.root, "marker"), "w") as f:
        f.write("in the target's root\n")
    code, out, pid = _drive(str(app.pid), b"echo comm=$(cat /proc/1/comm) host=$(hostname); "
                                          b"echo marker=$(cat /proc/1/root/marker); exit 3\n")
    assert code == 3, out
    assert "comm=busybox" in out and f"host={app.hostname}" in out
    assert "marker=in the target's root" in out
    assert "its files are at /proc/1/root" in out
    _gone(pid)
    assert app.running()


def test_cli_debug_shell_on_a_runc_container(own_objects):
    runc = runtimes.find("runc")
    if not runc.available:
        pytest.skip(f"runc not usable here: {runc.reason}")
    with runtimes.OCIContainer(rootfs.build("busybox"), ["sleep", "300"], memory="64M",
                               pids=32) as c:
        code, out, pid = _drive(c.name, b"ps -o pid,comm; command -v strace; exit\n")
        assert code == 0, out
        assert "sleep" in out and "/usr/local/bin/strace" in out
        _gone(pid)


def test_cli_debug_shell_on_a_plain_host_pid(own_objects):
    code, out, pid = _drive(str(os.getpid()), b"echo seen=$(cat /proc/%d/comm); exit\n" % os.getpid())
    assert code == 0, out
    assert "seen=python" in out        # this test's own process, through the host's pid namespace
    _gone(pid)


def test_cli_debug_refuses_a_bad_target_with_what_to_do():
    r = cli("debug", "999999999")
    assert r.returncode == 2 and "999999999" in r.stderr and "Traceback" not in r.stderr
    r = cli("debug", "1", "--share", "mnt")
    assert r.returncode == 2 and "never shares mnt" in r.stderr


def test_a_killed_cli_leaves_nothing_after_the_stale_cleanup(app):
    master, slave = pty.openpty()
    p = subprocess.Popen([PY, "-m", "justaprocess", "debug", str(app.pid)], stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    while b"# " not in out:
        assert select.select([master], [], [], 30)[0], out
        out += os.read(master, 4096)
    left = [e for e in lab.entries() if e.owner == p.pid]
    assert left, "the CLI registers what it makes"
    p.kill()
    p.wait()
    os.close(master)
    shells = [e.pid for e in left if e.kind == "process"]
    for pid in shells:   # PR_SET_PDEATHSIG: the shell dies with the CLI
        assert wait_exit(pid)
    lab.cleanup(owner=p.pid)   # what a stale cleanup does for this dead owner (others may run theirs now)
    assert not [e for e in lab.entries() if e.owner == p.pid]
    assert not any(os.path.exists(e.name) for e in left if e.kind in ("dir", "cgroup"))
    assert app.running()


def test_cli_debug_shell_on_a_podman_container(own_objects):
    from justaprocess import podman
    why = podman.missing()
    if why:
        pytest.skip(why)
    with podman.Store().create() as st:
        name = lab.name("web")
        st.run(name, ["sh", "-c", "echo podman-app > /tmp/mark; exec httpd -f -p 8080"], detach=True)
        pid = st.pid(name)
        # By name: podman finds the lab store's container through its configuration (st.env).
        env = {**os.environ, **st.env}
        for target in (name, str(pid)):
            code, out, cli_pid = _drive(target, b"cat /proc/1/root/tmp/mark; netstat -ltn | grep -c :8080; exit\n",
                                        env=env)
            assert code == 0, out
            assert "podman-app" in out and "\r\n1\r\n" in out, out
            _gone(cli_pid)


def test_cli_debug_without_root_says_what_to_do():
    from conftest import as_user
    r = as_user("-m", "justaprocess", "debug", "1")
    assert r.returncode == 2, r.stderr
    assert "root" in r.stderr and "Traceback" not in r.stderr
