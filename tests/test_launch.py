"""justaprocess._launch: the one launcher, asserted through what the kernel shows.

Each test runs twice: from a single-threaded caller (the launcher clones the
process straight into its namespaces) and from a multithreaded one, like a
notebook's kernel (it forks a helper that does the joins and the clone).
Effects are read from /proc/PID/ns, cgroup.procs, /proc/PID/status.
"""
import errno
import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import wait_exit
from justaprocess import _launch as L, cgroups, lab, proc, rootfs
from justaprocess.errors import BadInput, NoSuchProcess

root = pytest.mark.root
HERE = os.path.dirname(os.path.abspath(__file__))
HELPERS = os.path.join(os.path.dirname(HERE), "helpers")


@pytest.fixture(params=["single-threaded", "multithreaded"])
def caller(request, own_objects):
    """The caller's shape; afterwards nothing this test registered may be left."""
    stop = threading.Event()
    t = None
    if request.param == "multithreaded":
        t = threading.Thread(target=stop.wait, daemon=True)
        t.start()
    yield request.param
    stop.set()
    if t is not None:
        t.join()
    # (the shared lab parent cgroup stays while another run's cgroups are in it)
    mine = [e for e in lab.entries() if e.owner == os.getpid() and lab.present(e)
            and os.path.basename(e.name) != cgroups.LAB_PARENT]
    assert mine == [], f"left behind: {mine}"


def _sleeper(**kw) -> L.Handle:
    return L.start(L.Spec(argv=["sleep", "60"], **kw))


# --- creating and joining namespaces ---------------------------------------------------

@root
def test_new_namespaces_differ_and_the_others_are_shared(caller):
    new = ("ipc", "mnt", "net", "pid", "uts", "cgroup")
    with _sleeper(new=new) as h:
        theirs, mine = proc.namespaces(h.pid), proc.namespaces("self")
        for k in proc.NS_KINDS:
            assert (theirs[k] != mine[k]) == (k in new), k
        assert h.ns_pid == 1 and proc.nspid(h.pid)[-1] == 1
        assert h.pid != os.getpid() and proc.running(h.pid)
    assert not proc.running(h.pid)


@root
def test_all_eight_kinds_at_once_with_maps_and_a_clock_offset(caller):
    r = L.run(L.Spec(fn=lambda: (os.getuid(), proc.namespaces("self"),
                                 float(open("/proc/uptime").read().split()[0])),
                     new="all", uid_map="0 0 1", offsets={"boottime": 86400}))
    uid, theirs, uptime = r.check().value
    mine = proc.namespaces("self")
    assert uid == 0 and all(theirs[k] != mine[k] for k in proc.NS_KINDS)
    assert uptime > 86400 and r.ns_pid == 1


@root
def test_join_by_pid_by_path_and_by_fd(caller):
    with _sleeper(new="net,uts,ipc") as target:
        fd = os.open(f"/proc/{target.pid}/ns/ipc", os.O_RDONLY)
        try:
            with _sleeper(join={"net": target.pid, "uts": f"/proc/{target.pid}/ns/uts",
                                "ipc": L.Fd(fd)}) as j:
                assert proc.namespaces(j.pid) == proc.namespaces(target.pid)
                assert proc.namespaces(j.pid)["net"] != proc.namespaces("self")["net"]
        finally:
            os.close(fd)


@root
def test_the_target_cannot_race_away_its_namespaces_are_held(caller):
    """The joiner opens the target's ns files before anything: a target that exits
    afterwards still leaves its namespace joinable (the fd holds it)."""
    target = _sleeper(new="uts", hostname="jap-held")
    fd = os.open(f"/proc/{target.pid}/ns/uts", os.O_RDONLY)
    target.stop()
    try:
        r = L.run(L.Spec(argv=["hostname"], join={"uts": L.Fd(fd)}))
    finally:
        os.close(fd)
    assert r.check().stdout.strip() == "jap-held"


@root
def test_exec_in_joins_every_namespace_the_cgroup_and_the_root(caller, tmp_path):
    fs = rootfs.build("busybox")
    cg = cgroups.Cgroup(lab.name("t"), pids=32).create()
    try:
        with _sleeper(new="mnt,pid,uts,ipc,net,cgroup", root=fs.path, mount_proc=True,
                      hostname="jap-box", cgroup=cg, env={"PATH": "/bin"}) as box:
            kinds = [k for k in proc.NS_KINDS
                     if proc.namespaces(box.pid)[k] != proc.namespaces("self")[k]]
            with L.start(L.Spec(argv=["/bin/sh", "-c", "cat /proc/1/comm; hostname; ls /"],
                                join={k: box.pid for k in kinds}, cgroup=box.pid,
                                target_root=box.pid, env={"PATH": "/bin"})) as x:
                r = x.wait(10)
            out = r.check().stdout.split()
            assert out[:2] == ["sleep", "jap-box"]
            assert "bin" in out and os.path.basename(HERE) not in out  # the box's root, not ours
            assert r.ns_pid != 1 and r.host_pid != box.pid
            assert str(box.pid) in open(os.path.join(cg.path, "cgroup.procs")).read().split()
    finally:
        cg.remove()


@root
def test_sidecar_sees_the_targets_processes_with_its_own_mounts(caller):
    with _sleeper(new="pid,net,ipc,mnt", mount_proc=True) as target:
        r = L.run(L.Spec(argv=["sh", "-c", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"],
                         join={"pid": target.pid, "net": target.pid, "ipc": target.pid},
                         new="mnt,cgroup", mount_proc=True))
        comm, count = r.check().stdout.split()
        assert comm == "sleep" and int(count) >= 2  # sleep, sh (and its children)
        assert r.ns_pid > 1


# --- cgroups ------------------------------------------------------------------------------

@root
def test_joins_a_cgroup_before_exec(caller):
    cg = cgroups.Cgroup(lab.name("t"), pids=16).create()
    try:
        with _sleeper(cgroup=cg) as h:
            for d in cg.paths:
                assert h.pid in cgroups.pids_in(d)
    finally:
        cg.remove()


@root
def test_only_the_process_is_in_its_cgroup_not_the_helper_that_made_it(caller):
    # A new pid namespace: from a multithreaded caller a helper clones PID 1 (_launch's
    # layout).  It joins the cgroup for the clone, then goes back to the caller's.
    cg = cgroups.Cgroup(lab.name("t"), memory="64M", pids=16).create()
    try:
        with _sleeper(cgroup=cg, new="pid") as h:
            for d in cg.paths:
                assert cgroups.pids_in(d) == [h.pid], d
                if os.path.exists(os.path.join(d, "pids.current")):
                    assert open(os.path.join(d, "pids.current")).read().split() == ["1"]
            if h._first != h.pid:  # the helper: where its caller is, in every hierarchy
                assert proc.cgroups(h._first) == proc.cgroups("self")
    finally:
        cg.remove()


@root
def test_a_clone_into_a_full_cgroup_is_refused_with_eagain(caller):
    if caller == "single-threaded":
        pytest.skip("no helper: PID 1 is cloned in the caller's cgroup and moves itself in, "
                    "and a move is allowed past pids.max (cgroup-v2.rst, PID)")
    cg = cgroups.Cgroup(lab.name("t"), pids=1).create()
    try:
        with _sleeper(cgroup=cg):
            r = L.run(L.Spec(argv=["true"], cgroup=cg, new="pid"))
            assert r.error is not None and r.error.errno == errno.EAGAIN, r
    finally:
        cg.remove()


@root
def test_bounded_runs_in_a_lab_cgroup_that_goes_afterwards(caller):
    def where():
        return open("/proc/self/cgroup").read()
    r = L.run(L.Spec(fn=where, cgroup="bounded"))
    lines = r.check().value
    assert "/jap-" in lines
    paths = {ln.split(":", 2)[2] for ln in lines.splitlines() if "/jap-" in ln}
    for h in cgroups.hierarchies():
        for p in paths:
            assert not os.path.exists(os.path.join(h.mountpoint, p.lstrip("/")))


def _fork_bomb():
    kids, refused = [], 0
    for _ in range(200):
        try:
            pid = os.fork()
        except BlockingIOError:
            refused += 1
            break
        if pid == 0:
            signal.pause()
            os._exit(0)
        kids.append(pid)
    return len(kids), refused


@root
def test_bounded_contains_a_fork_bomb(caller):
    r = L.run(L.Spec(fn=_fork_bomb, cgroup=L.Bounded(pids=20)))
    made, refused = r.check().value
    assert refused == 1 and made < 20


@root
def test_bounded_contains_a_memory_hog(caller):
    def hog():
        blocks = []
        for _ in range(64):
            blocks.append(bytearray(16 << 20))  # 1 GiB in all, page by page
        return len(blocks)
    r = L.run(L.Spec(fn=hog, cgroup=L.Bounded(memory="64M")), timeout=60)
    assert r.signal == signal.SIGKILL and r.value is None


@root
def test_a_death_before_exec_is_a_failed_start_not_a_running_process(caller):
    # A real OOM kill during the set-up: the pages the child touches before its exec are
    # charged to the cgroup it joined.  The wire's EOF alone reads the same as an exec.
    def hog():
        bytearray(b"x") * (256 << 20)
    h = L.start(L.Spec(argv=["sleep", "60"], cgroup=L.Bounded(memory="32M"), prepare=hog))
    assert h.error is not None and h.error.step == "set-up", h.error
    assert "killed by SIGKILL before its exec" in str(h.error) and "OOM" in str(h.error)
    with pytest.raises(L.StepFailed, match="set-up: killed by SIGKILL"):
        h.check()
    r = h.wait(5)
    assert r.signal == signal.SIGKILL and r.error is h.error
    # The same launch without the hog execs, and reports no error
    with _sleeper(cgroup=L.Bounded(memory="32M")) as h:
        assert h.error is None and proc.running(h.pid)


@root
def test_a_filter_that_refuses_write_does_not_hide_the_exec(caller):
    # The last frame before exec goes out before the seccomp filter is loaded.
    r = L.run(L.Spec(argv=["true"], no_new_privs=True, seccomp={"write": "EPERM"}))
    assert r.returncode == 0 and r.error is None, r
    r = L.run(L.Spec(argv=["sh", "-c", "echo hi"], no_new_privs=True, seccomp={"write": "EPERM"}))
    assert r.error is None and r.stdout == "" and r.returncode != 0, r  # the filter bites


# --- identity and privileges ------------------------------------------------------------------

@root
def test_caps_kept_are_all_that_is_left_in_every_set(caller):
    with _sleeper(caps=["cap_kill", "cap_net_raw"]) as h:
        m = proc.caps(h.pid)
    want = 1 << 5 | 1 << 13
    assert m.effective == m.permitted == m.bounding == want and m.ambient == 0


@root
def test_drop_removes_one_and_keeps_the_rest(caller):
    with _sleeper(drop=["cap_sys_admin"]) as h:
        m = proc.caps(h.pid)
    mine = proc.caps("self")
    assert not m.effective >> 21 & 1 and not m.bounding >> 21 & 1
    assert m.effective == mine.effective & ~(1 << 21)


@root
def test_a_non_root_uid_keeps_caps_through_ambient(caller):
    with _sleeper(uid=65534, gid=65534, caps=["cap_net_bind_service"], ambient=True) as h:
        st = proc.status(h.pid)
    assert st["Uid"].split()[1] == "65534" and st["Gid"].split()[1] == "65534"
    assert int(st["CapAmb"], 16) == int(st["CapEff"], 16) == 1 << 10


@root
def test_no_new_privs_and_seccomp_are_in_force(caller):
    def try_sethostname():
        from justaprocess import _libc
        st = proc.status("self")
        try:
            _libc.sethostname("jap-nope")
            return st["Seccomp"], st["NoNewPrivs"], "worked"
        except OSError as exc:
            return st["Seccomp"], st["NoNewPrivs"], errno.errorcode[exc.errno]
    r = L.run(L.Spec(fn=try_sethostname, new="uts", no_new_privs=True,
                     seccomp=["sethostname"]))
    assert r.check().value == ("2", "1", "EPERM")
    r = L.run(L.Spec(fn=try_sethostname, new="uts", seccomp={"sethostname": "ENOSYS"}))
    assert r.value[2] == "ENOSYS"
    r = L.run(L.Spec(fn=try_sethostname, new="uts"))
    assert r.value == ("0", "0", "worked")


# --- failures, timeouts, life and death -------------------------------------------------------

def _nested_unshare():
    r = L.run(L.Spec(argv=["true"], new="uts"))
    return r.error.step, r.error.errno, r.returncode


def _nested_setns(fd):
    r = L.run(L.Spec(argv=["true"], join={"net": L.Fd(fd)}))
    return r.error.step, r.error.errno, str(r.error)


@root
def test_a_step_refused_with_eperm_names_the_step_and_what_to_do(caller):
    r = L.run(L.Spec(fn=_nested_unshare, caps=[]))
    assert r.check().value == ("unshare uts", errno.EPERM, L.EXIT_SETUP)
    with _sleeper(new="net") as target:
        fd = os.open(f"/proc/{target.pid}/ns/net", os.O_RDONLY)  # opened with our capabilities
        try:
            r = L.run(L.Spec(fn=lambda: _nested_setns(fd), caps=[]))
        finally:
            os.close(fd)
    step, no, text = r.check().value
    assert (step, no) == ("setns net", errno.EPERM)
    assert "EPERM" in text and "root" in text


@root
def test_a_missing_command_is_a_step_failure_not_a_traceback(caller):
    r = L.run(L.Spec(argv=["jap-no-such-program"]))
    assert r.returncode == L.EXIT_EXEC and r.error.step == "exec"
    assert r.error.errno == errno.ENOENT and "not found" in str(r.error)
    with pytest.raises(L.StepFailed, match="exec: ENOENT"):
        r.check()


@root
def test_timeout_raises_and_kills(caller):
    with pytest.raises(L.Timeout, match="timeout=") as info:
        L.run(L.Spec(argv=["sh", "-c", "echo started; exec sleep 60"], new="pid"), timeout=0.5)
    r = info.value.result
    assert r.signal == signal.SIGKILL and not proc.running(r.host_pid)


@root
def test_kill_gives_the_signal(caller):
    h = _sleeper(new="pid")
    h.kill()
    r = h.wait(5)
    assert r.returncode == -signal.SIGKILL and r.signal == signal.SIGKILL
    assert not proc.running(r.host_pid)


def test_callable_results_and_exceptions_come_back(caller):
    r = L.run(L.Spec(fn=lambda: {"pid": os.getpid()}))
    assert r.ok and r.value["pid"] == r.host_pid != os.getpid()

    def fails():
        print("about to fail")
        raise PermissionError(errno.EPERM, "nope")
    r = L.run(L.Spec(fn=fails))
    assert not r.ok and r.returncode == 1 and r.errno_name == "EPERM"
    assert isinstance(r.exception, PermissionError) and "about to fail" in r.stdout
    assert "Traceback" in r.stderr


def test_input_output_and_env(caller):
    r = L.run(L.Spec(argv=["sh", "-c", "cat; echo $JAP_X >&2"], env={"JAP_X": "y", "PATH": "/usr/bin:/bin"}),
              input="abc")
    assert (r.stdout, r.stderr, r.returncode) == ("abc", "y\n", 0)


@root
def test_dies_with_its_parent():
    """A kernel that is SIGKILLed takes what it launched with it (PR_SET_PDEATHSIG)."""
    code = ("import sys; sys.path.insert(0, %r); from justaprocess import _launch as L; "
            "h = L.start(L.Spec(argv=['sleep', '60'], new='pid')); print(h.pid, flush=True); "
            "sys.stdin.read()" % HELPERS)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env={**os.environ, "JAP_STATE_DIR": os.environ.get("JAP_STATE_DIR", "")}
                         if os.environ.get("JAP_STATE_DIR") else None)
    pid = int(p.stdout.readline())
    assert proc.running(pid)
    p.kill()
    p.wait()
    assert wait_exit(pid)
    lab.cleanup(stale=True)  # its registry entries: their owner is dead


def test_bad_input_is_refused_before_anything_starts():
    with pytest.raises(BadInput, match="namespace kind"):
        L.start(L.Spec(argv=["true"], new="pidd"))
    with pytest.raises(BadInput, match="not both"):
        L.start(L.Spec(argv=["true"], new="net", join={"net": 1}))
    with pytest.raises(BadInput, match="uts"):
        L.start(L.Spec(argv=["true"], hostname="x"))
    with pytest.raises(BadInput, match="one of the two"):
        L.start(L.Spec())
    with pytest.raises(BadInput, match="valid PID"):
        L.start(L.Spec(argv=["true"], join={"net": 0}))
    with pytest.raises(BadInput, match="capabilit"):
        L.start(L.Spec(argv=["true"], caps=["cap_flying"]))
    with pytest.raises(BadInput, match="seccomp"):
        L.start(L.Spec(argv=["true"], seccomp=["no_such_call"]))


@root
def test_a_dead_pid_is_a_clear_error():
    h = L.start(L.Spec(argv=["true"]))
    dead = h.wait(5).host_pid
    with pytest.raises(NoSuchProcess):
        L.start(L.Spec(argv=["true"], join={"net": dead}))


# --- the learner's callables of the chapters run bounded (issue: unbounded learner code) ----

@root
def test_learner_callables_are_bounded_everywhere(own_objects):
    from justaprocess import capabilities, insecure, namespaces
    made, refused = namespaces.run(_fork_bomb, kinds="uts").value
    assert refused == 1 and made < L.BOUNDED_PIDS
    made, refused = capabilities.run(_fork_bomb).value
    assert refused == 1 and made < L.BOUNDED_PIDS
    with insecure.NaiveContainer() as box:
        made, refused = box.run(_fork_bomb).value
    assert refused == 1 and made < L.BOUNDED_PIDS


def _hog():
    blocks = [bytearray(64 << 20) for _ in range(8)]  # 512M, over the 256M bound
    return len(blocks)


@root
def test_a_memory_hog_in_a_learner_callable_is_killed(own_objects):
    from justaprocess import namespaces
    r = namespaces.run(_hog, kinds="uts", timeout=60)
    assert r.signal == signal.SIGKILL and r.value is None


@root
def test_the_exit_is_relayed_as_it_was(caller):
    """Through a helper too (a new pid namespace): a code stays a code, a signal a signal."""
    h = _sleeper(new="pid")
    os.kill(h.pid, signal.SIGKILL)  # PID 1 of a namespace takes SIGKILL from an ancestor
    assert h.wait(10).returncode == -signal.SIGKILL
    assert L.run(L.Spec(argv=["sh", "-c", "exit 137"], new="pid")).returncode == 137


@root
def test_lab_cleanup_of_its_owner_kills_what_it_launched(own_objects):
    h = _sleeper(new="pid")
    pid = h.pid
    assert any(e.pid == pid for e in lab.entries() if e.kind == "process")
    lab.cleanup(owner=os.getpid())   # what %lab_cleanup does for a kernel
    assert wait_exit(pid)
    assert h.wait(5).signal == signal.SIGKILL


def test_a_caller_ignoring_sighup_does_not_pass_that_on(own_objects):
    # As under `nohup make lab`: SIGHUP ignored in the caller. The started program gets the
    # default disposition (signal(7): ignored signals survive execve), so a shell's
    # `trap ... HUP` works in it (chapter 12's PID 1).
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        r = L.run(L.Spec(argv=["sh", "-c", "grep SigIgn /proc/self/status"]), timeout=10)
    finally:
        signal.signal(signal.SIGHUP, old)
    ignored = int(r.stdout.split()[1], 16)
    assert r.returncode == 0 and not ignored & (1 << (signal.SIGHUP - 1))


# --- the interpreter's fork hooks --------------------------------------------------------

_FORKED = {"log": None}


def _note_fork() -> None:
    """An after-fork hook of this test process: which process ran it (its host PID, from
    the host's /proc, which a new pid namespace does not change before a new mount)."""
    if _FORKED["log"]:
        with open(_FORKED["log"], "a") as f:
            f.write(os.readlink("/proc/self") + "\n")


os.register_at_fork(after_in_child=_note_fork)


@root
def test_a_child_that_execs_skips_the_fork_hooks_and_a_callable_runs_them(caller, tmp_path):
    """The process that execs runs only the launcher's steps: it skips the interpreter's
    after-fork work (~0.3 ms on its way to the exec, bench/README.md).  A Python callable
    gets it: random is reseeded there, so it draws other numbers than its caller."""
    import random
    log = tmp_path / "forked"
    _FORKED["log"] = str(log)
    try:
        r = L.run(L.Spec(argv=["true"], new="pid"))
        c = L.run(L.Spec(fn=random.random, new="pid"))
    finally:
        _FORKED["log"] = None
    ran = log.read_text().split() if log.exists() else []
    assert r.check().returncode == 0 and str(r.host_pid) not in ran
    assert str(c.host_pid) in ran and c.check().value != random.random()
