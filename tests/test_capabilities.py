"""justaprocess.capabilities against the real kernel and libcap's tools.

Names are checked against `capsh --decode`, file capabilities against
`getcap`; the effects of dropping a capability are real syscalls failing with
the real errno.  Nothing here assumes the full set: CAP_SYS_RESOURCE is
missing from the bounding set on the dev machines, so expectations are
derived from the sets read at run time.
"""
import json
import os
import random
import shutil
import subprocess
import threading

import pytest
from conftest import PY as HERE_PY, as_user, cli as lab_cli

from justaprocess import _libc, capabilities as caps, lab, portable, proc
from justaprocess._launch import StepFailed, Timeout
from justaprocess.errors import BadInput, NoSuchProcess

CAPSH = shutil.which("capsh")
needs_capsh = pytest.mark.skipif(CAPSH is None, reason="capsh missing: apt-get install libcap2-bin")


def capsh_decode(mask: int) -> str:
    return subprocess.run([CAPSH, f"--decode={mask:x}"], capture_output=True, text=True,
                          check=True).stdout.strip()


def have() -> set[str]:
    return set(caps.sets().effective)


# --- names and masks ------------------------------------------------------------

def test_last_cap_is_the_kernels():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert caps.last_cap() == int(f.read())
    table = caps.all_caps()
    assert [c.number for c in table] == list(range(caps.last_cap() + 1))
    assert table[0] == caps.Cap(0, "cap_chown", caps.meaning("cap_chown"))
    assert all(c.meaning for c in table)


def test_last_cap_from_a_fake_procfs(tmp_path):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/cap_last_cap").write_text("12\n")
    assert caps.last_cap(str(tmp_path)) == 12
    assert len(caps.all_caps(str(tmp_path))) == 13


@needs_capsh
def test_decode_matches_capsh():
    full = (1 << (caps.last_cap() + 1)) - 1
    own = caps.masks()
    rng = random.Random(4)
    samples = [0, 1, 3, full, own.effective, own.bounding, 1 << caps.last_cap(),
               (1 << 64) - 1, full | 1 << 45] + [rng.getrandbits(64) for _ in range(5)]
    for m in samples:
        assert caps.capsh_decode(m) == capsh_decode(m), hex(m)
        assert ",".join(caps.decode(m)) == capsh_decode(m).split("=", 1)[1]


def test_decode_accepts_status_hex():
    st = proc.status()
    assert caps.decode(st["CapEff"]) == caps.decode(int(st["CapEff"], 16))
    assert caps.decode("0x3") == ("cap_chown", "cap_dac_override")


@pytest.mark.parametrize("bad", ["zz", "0xnope", "1" * 17, -1, True])
def test_decode_rejects_bad_masks(bad):
    with pytest.raises(BadInput, match="mask"):
        caps.decode(bad)


@pytest.mark.parametrize("spelling", ["cap_net_raw", "CAP_NET_RAW", "net_raw", " NET_RAW", 13, "13"])
def test_name_spellings(spelling):
    assert caps.cap_number(spelling) == 13
    assert caps.cap_name(13) == "cap_net_raw"


@pytest.mark.parametrize("bad", ["cap_foo", "", "sys_admins", 99, None, 1.5])
def test_unknown_capability_is_a_clear_error(bad):
    with pytest.raises(BadInput) as exc:
        caps.to_mask([bad])
    msg = str(exc.value)
    assert "capabilit" in msg and ("cap_chown" in msg or "cap_last_cap" in msg)


def test_to_mask_and_back():
    assert caps.to_mask(["cap_chown", "cap_kill"]) == 1 | 1 << 5
    assert caps.to_mask("cap_kill") == 1 << 5
    assert caps.decode(caps.to_mask(caps.ENGINE_DEFAULT)) == tuple(
        sorted(caps.ENGINE_DEFAULT, key=caps.cap_number))


def test_engine_default_is_the_moby_list():
    assert len(caps.ENGINE_DEFAULT) == len(set(caps.ENGINE_DEFAULT)) == 14
    for dangerous in ("cap_sys_admin", "cap_net_admin", "cap_sys_module", "cap_sys_ptrace"):
        assert dangerous not in caps.ENGINE_DEFAULT
    caps.to_mask(caps.ENGINE_DEFAULT)  # every name valid


# --- the sets of a process ----------------------------------------------------

@needs_capsh
def test_sets_match_status_and_capsh():
    st = proc.status()
    s = caps.sets()
    for name, key in (("effective", "CapEff"), ("permitted", "CapPrm"),
                      ("inheritable", "CapInh"), ("bounding", "CapBnd"), ("ambient", "CapAmb")):
        decoded = capsh_decode(int(st[key], 16)).split("=", 1)[1]
        assert ",".join(getattr(s, name)) == decoded


def test_sets_of_a_fake_process(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42/status").write_text(
        "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000021\n"
        "CapEff:\t0000000000000001\nCapBnd:\t00000000000000ff\nCapAmb:\t0000000000000000\n")
    s = caps.sets(42, procfs=str(tmp_path))
    assert s.effective == ("cap_chown",)
    assert s.permitted == ("cap_chown", "cap_kill")
    assert len(s.bounding) == 8 and s.ambient == ()
    assert s.as_json()["permitted"] == ["cap_chown", "cap_kill"]


def test_sets_of_a_gone_process():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(NoSuchProcess):
        caps.sets(p.pid)
    with pytest.raises(BadInput):
        caps.sets("nope")


@pytest.mark.root
def test_compare_two_processes(own_objects):
    dropped = sorted(have() & {"cap_chown", "cap_net_raw"})
    child = lab.spawn(["sleep", "10"], preexec=lambda: caps.restrict(drop=dropped))
    try:  # Popen returns after the exec: the preexec has run
        d = caps.compare(os.getpid(), child.pid)
        assert d["effective"].only_a == tuple(dropped)
        assert d["bounding"].only_a == tuple(dropped)
        assert d["effective"].only_b == () and not d["effective"].same
        assert d["ambient"].same
    finally:
        child.stop()


def test_diff_with_the_engine_default():
    d = caps.diff(caps.sets().effective, caps.ENGINE_DEFAULT)
    assert set(d.both) | set(d.only_b) == set(caps.ENGINE_DEFAULT)
    if os.geteuid() == 0:
        assert "cap_sys_admin" in d.only_a


# --- restrict(): for a child's set-up -----------------------------------------------

def test_restrict_refuses_in_a_multithreaded_process():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        before = caps.masks()
        with pytest.raises(BadInput, match="forked child"):
            caps.restrict(drop=["cap_chown"])
        assert caps.masks() == before
    finally:
        stop.set()
        t.join()


@pytest.mark.root
def test_restrict_as_preexec_fn():
    keep = sorted(have() & {"cap_kill", "cap_chown"})
    out = subprocess.run(["grep", "^Cap", "/proc/self/status"], capture_output=True, text=True,
                         preexec_fn=lambda: caps.restrict(keep=keep), check=True).stdout
    st = dict(line.split(":\t") for line in out.splitlines())
    assert caps.decode(st["CapEff"]) == caps.decode(caps.to_mask(keep))
    assert caps.decode(st["CapBnd"]) == caps.decode(caps.to_mask(keep))


# --- run() ----------------------------------------------------------------------------

def chown_memfd():
    fd = os.memfd_create("jap-test")
    try:
        os.fchown(fd, 65534, -1)
    finally:
        os.close(fd)
    return "chowned"


CHOWN_CMD = [HERE_PY, "-c", "import os; fd = os.memfd_create('jap'); os.fchown(fd, 65534, -1)"]


@pytest.mark.root
def test_run_keeps_only_what_was_asked():
    keep = ["cap_chown", "cap_kill", "cap_sys_resource"]
    r = caps.run(lambda: caps.sets().effective, keep=keep)
    expected = tuple(n for n in caps.decode(caps.to_mask(keep)) if n in have())
    assert r.ok and r.value == expected == r.sets.effective == r.sets.bounding
    assert r.uid == 0 and not r.no_new_privs
    assert caps.sets().effective == tuple(sorted(have(), key=caps.cap_number))  # we never change


@pytest.mark.root
def test_run_drop_shows_the_real_errno():
    ok = caps.run(chown_memfd)
    assert ok.ok and ok.value == "chowned"
    r = caps.run(chown_memfd, drop=["cap_chown"])
    assert not r.ok and r.returncode == 1
    assert isinstance(r.exception, PermissionError) and r.errno_name == "EPERM"
    assert "cap_chown" not in r.sets.effective


@pytest.mark.root
def test_bounding_bites_only_after_exec():
    # Effective dropped, bounding kept: the call fails now, but execve gives root
    # its permitted set back from the bounding set (capabilities(7)).
    r = caps.run(chown_memfd, drop=["cap_chown"], bounding=False)
    assert r.errno_name == "EPERM"
    r = caps.run(CHOWN_CMD, drop=["cap_chown"], bounding=False)
    assert r.ok and "cap_chown" in r.sets.effective

    def bounding_only():
        _libc.prctl(_libc.PR_CAPBSET_DROP, caps.cap_number("cap_chown"))
        first = chown_memfd()          # still in effective: works
        os.execv(HERE_PY, CHOWN_CMD)   # after exec: gone
        return first

    r = caps.run(bounding_only)
    assert r.returncode == 1 and "PermissionError" in r.stderr
    assert "cap_chown" not in r.sets.effective and "cap_chown" not in r.sets.bounding


@pytest.mark.root
def test_reducing_without_cap_setpcap_refuses_only_what_is_still_bounded():
    # The bounding set is reduced by dropping every capability not kept, without reading
    # it first; dropping one that is not there is no error, but without CAP_SETPCAP the
    # kernel refuses every PR_CAPBSET_DROP (prctl(2)): that must still work while the set
    # holds nothing to drop, and fail with EPERM when it does.
    from justaprocess._launch import reduce_capabilities
    two = caps.to_mask(["cap_chown", "cap_kill"])

    def nothing_left_to_drop():
        reduce_capabilities(two, 0)     # bounding, permitted, effective = the two: no SETPCAP
        return reduce_capabilities(two, 0)

    r = caps.run(nothing_left_to_drop)
    assert r.ok, r.exception
    assert set(r.sets.bounding) == {"cap_chown", "cap_kill"} & have()

    def kill_still_bounded():
        reduce_capabilities(two | caps.to_mask(["cap_setpcap"]), 0)
        _libc.capset(two, two, 0)       # SETPCAP out of effective and permitted
        return reduce_capabilities(caps.to_mask(["cap_chown"]), 0)

    r = caps.run(kill_still_bounded)
    assert not r.ok and isinstance(r.exception, PermissionError), r


# Run as uid 65534: the interpreter itself, which that uid may execute wherever the checkout lies.
BIND80 = [portable.python(), "-c", "import socket; socket.socket().bind(('127.0.0.1', 80)); print('bound')"]


@pytest.mark.root
def test_non_root_keeps_caps_through_ambient():
    r = caps.run(BIND80, keep=["cap_net_bind_service"], uid=65534, gid=65534,
                 unshare=_libc.CLONE_NEWNET)
    assert r.ok and r.stdout.strip() == "bound", r.stderr
    assert r.uid == 65534 and r.sets.ambient == ("cap_net_bind_service",)
    r = caps.run(BIND80, keep=["cap_net_bind_service"], uid=65534, gid=65534, ambient=False,
                 unshare=_libc.CLONE_NEWNET)
    assert r.returncode == 1 and "Permission denied" in r.stderr
    assert r.sets.effective == () and r.sets.permitted == ()


@pytest.mark.root
def test_run_no_new_privs_and_exec_errors():
    r = caps.run(["true"], keep=[], no_new_privs=True)
    assert r.ok and r.no_new_privs and r.sets.bounding == ()
    with pytest.raises(BadInput, match="no such program"):
        caps.run(["jap-no-such-program"])
    with pytest.raises(BadInput, match="as a list"):
        caps.run("id -u")
    with pytest.raises(BadInput, match="unknown capability"):
        caps.run(["true"], keep=["cap_nope"])


@pytest.mark.root
def test_run_timeout_kills_the_child():
    with pytest.raises(Timeout, match="timeout=") as info:
        caps.run(["sleep", "5"], timeout=0.3)
    assert info.value.result.returncode == -9


@pytest.mark.root
def test_run_leaves_no_process_registered():
    caps.run(["true"])
    assert not [e for e in lab.entries() if e.owner == os.getpid() and e.kind == "process"]


def test_run_needs_root():
    code = ("from justaprocess import capabilities as c\n"
            "try:\n    c.run(['true'])\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = as_user("-c", code).stdout
    assert out.startswith("NeedsPrivilege") and "needs root" in out


# --- probes ----------------------------------------------------------------------------

@pytest.mark.root
def test_probes_follow_the_capabilities(own_objects):
    full = caps.probe()
    for r in full.results:
        assert r.ok == (r.cap in have()), r
    none = caps.probe(keep=[])
    assert none.as_dict() == {"sethostname": "EPERM", "bind80": "EACCES", "chown": "EPERM",
                              "rawsock": "EPERM", "ptrace": "EACCES", "netadmin": "EPERM"}
    assert none.sets.effective == ()
    engine = caps.probe(keep=caps.ENGINE_DEFAULT)
    for r in engine.results:
        assert r.ok == (r.cap in caps.ENGINE_DEFAULT and r.cap in have()), r
    assert "sethostname" in engine.table()
    # the host's hostname is untouched: the probe had a UTS namespace of its own
    assert os.uname().nodename != "jap-probe"


@pytest.mark.root
def test_one_probe_one_capability(own_objects):
    for name, p in caps.PROBES.items():
        if p.cap not in have():
            continue
        assert caps.probe([name], keep=[p.cap]).results[0].ok
        assert not caps.probe([name], drop=[p.cap]).results[0].ok


def test_unknown_probe():
    with pytest.raises(BadInput, match="unknown probe"):
        caps.probe(["fly"])


# --- file capabilities ------------------------------------------------------------------

@pytest.mark.root
def test_file_caps_on_a_lab_copy(own_objects):
    cp = caps.copy_binary(HERE_PY)
    assert cp.path.startswith(lab.run_dir() + "/jap-") and caps.get_file_caps(cp.path) is None
    fc = caps.set_file_caps(cp.path, ["cap_net_bind_service"])
    assert fc == caps.FileCaps(("cap_net_bind_service",), (), True, None)
    if shutil.which("getcap"):
        out = subprocess.run(["getcap", cp.path], capture_output=True, text=True).stdout.split()
        assert out == [cp.path, fc.text]
    # An unprivileged uid binds port 80 through the copy; no_new_privs stops the gain.
    argv = [cp.path] + BIND80[1:]
    r = caps.run(argv, keep=[], bounding=False, uid=65534, gid=65534, unshare=_libc.CLONE_NEWNET)
    assert r.ok and r.sets.effective == ("cap_net_bind_service",), r.stderr
    r = caps.run(argv, keep=[], bounding=False, uid=65534, gid=65534, no_new_privs=True,
                 unshare=_libc.CLONE_NEWNET)
    assert r.returncode == 1 and r.sets.effective == ()
    assert caps.set_file_caps(cp.path, []) == caps.FileCaps((), (), False)
    assert caps.get_file_caps(cp.path) is None
    caps.remove_copy(cp)
    assert not os.path.exists(cp.path)


@pytest.mark.root
def test_setcap_tool_agrees(own_objects):
    if not shutil.which("setcap"):
        pytest.skip("setcap missing: apt-get install libcap2-bin")
    cp = caps.copy_binary("true")
    # libcap refuses a partial effective flag: one bit for the whole file.
    subprocess.run(["setcap", "cap_chown,cap_kill=p cap_net_raw=i", cp.path], check=True)
    fc = caps.get_file_caps(cp.path)
    assert fc.permitted == ("cap_chown", "cap_kill") and fc.inheritable == ("cap_net_raw",)
    assert not fc.effective
    caps.remove_copy(cp)


def test_file_caps_only_on_lab_copies(tmp_path):
    f = tmp_path / "prog"
    f.write_text("")
    with pytest.raises(BadInput, match="lab-made copies"):
        caps.set_file_caps(str(f), ["cap_chown"])
    with pytest.raises(BadInput, match="lab-made copies"):
        caps.set_file_caps(os.path.join(lab.run_dir(), "..", "x"), ["cap_chown"])
    with pytest.raises(BadInput, match="no such"):
        caps.get_file_caps(str(tmp_path / "absent"))
    with pytest.raises(BadInput, match="no such program"):
        caps.copy_binary("jap-no-such-program")


# --- command line ------------------------------------------------------------------------

def cli(*args):
    return lab_cli("caps", *args)


def test_cli_json():
    p = subprocess.Popen(["sleep", "5"])
    try:
        r = cli(str(p.pid), "--json")
        assert r.returncode == 0
        data = json.loads(r.stdout)
        assert list(data) == ["effective", "permitted", "inheritable", "bounding", "ambient"]
        s = caps.sets(p.pid)
        for k, v in data.items():
            assert v == sorted(v) == sorted(getattr(s, k))
    finally:
        p.kill()
        p.wait()


def test_cli_text_and_list():
    r = cli(str(os.getpid()))
    assert r.returncode == 0 and r.stdout.splitlines()[0].split()[0] == "effective"
    r = cli("--list")
    assert len(r.stdout.splitlines()) == caps.last_cap() + 1


@needs_capsh
def test_cli_decode_like_capsh():
    for m in ("000001fffeffffff", "0x3", "0"):
        r = cli("--decode", m)
        assert r.returncode == 0
        assert r.stdout.strip() == capsh_decode(int(m, 16))


def test_cli_errors():
    r = cli("--decode", "zz")
    assert r.returncode == 2 and "not a hex capability mask" in r.stderr and "Traceback" not in r.stderr
    r = cli("999999999")
    assert r.returncode == 2 and "no process with PID" in r.stderr
    r = cli()
    assert r.returncode == 2 and "give a PID" in r.stderr


# --- widget -------------------------------------------------------------------------------

@pytest.mark.root
def test_widget_ticks_and_probes(capsys, own_objects):
    pytest.importorskip("ipywidgets")
    grid, buttons, out = caps.widget().children
    btn = {b.description: b for b in buttons.children}
    assert [b.description for b in grid.children] == list(caps.sets().permitted)
    btn["engine default"].click()
    ticked = {b.description for b in grid.children if b.value}
    assert ticked == set(caps.ENGINE_DEFAULT) & have()
    btn["run probes"].click()  # outside a kernel the Output widget lets prints through
    text = capsys.readouterr().out
    assert "sethostname  cap_sys_admin         EPERM" in text
    assert "chown        cap_chown             ok" in text
    summary = text.split("\nprobe ")[0]     # "kept N of M ...; removed: ..." above the table
    assert all(len(line) <= 100 for line in summary.splitlines())   # wrapped between names
    assert all(n in summary.split() or n + "," in summary.split() for n in have() - ticked)


@pytest.mark.root
def test_setup_errors_come_back_to_the_caller():
    with pytest.raises(BadInput, match="not a CLONE_NEW"):
        caps.run(["true"], unshare=0x1)   # refused before anything starts
    with pytest.raises(StepFailed, match="setuid 65534: EINVAL .* not mapped"):
        caps.run(["true"], keep=[], uid=65534, unshare="user")  # a user namespace without a map
    assert not [e for e in lab.entries() if e.owner == os.getpid() and e.kind == "process"]


def test_restrict_without_privilege_says_so():
    code = ("from justaprocess import capabilities as c\n"
            "try:\n    c.restrict(drop=['cap_chown'])\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)")
    out = as_user("-c", code).stdout
    assert out.startswith("NeedsPrivilege") and "CAP_SETPCAP" in out
