"""The lab's life cycle, for real: register, cleanup (also after a crash), leftovers."""
import json
import os
import signal
import subprocess

import pytest
from conftest import PY, cli, wait_exit

from justaprocess import cgroups, lab
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


def memory_parent() -> str:
    """Our own cgroup of the memory controller: its v1 hierarchy, or the v2 tree."""
    return cgroups.own_path(cgroups.controllers()["memory"])


def test_names_carry_the_prefix_and_fit_an_interface_name():
    n = lab.name("h")
    assert n.startswith("jap-") and len(n) <= 15


def test_register_refuses_objects_without_the_prefix():
    with pytest.raises(BadInput, match="jap"):
        lab.register("netns", "some-host-namespace")
    with pytest.raises(BadInput, match="unknown kind"):
        lab.register("volcano", "jap-x")


def test_each_kind_is_removed_and_forgotten(tmp_path, own_objects):
    ident = lab.new_id()
    made = []
    ns = lab.name("ns", ident)
    made.append(lab.register("netns", ns))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    link = lab.name("d", ident)
    made.append(lab.register("link", link))
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"], check=True)
    cg = os.path.join(memory_parent(), lab.name("cg", ident))
    made.append(lab.register("cgroup", cg))
    os.mkdir(cg)
    d = os.path.join(lab.run_dir(), lab.name("dir", ident))
    made.append(lab.register("dir", d))
    os.makedirs(d + "/mnt")
    made.append(lab.register("mount", d + "/mnt"))
    subprocess.run(["mount", "-t", "tmpfs", "jap-test", d + "/mnt"], check=True)
    p = lab.spawn(["sleep", "60"])
    # Something inside the cgroup keeps it busy: cleanup must kill it first.
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(p.pid))

    assert all(lab.present(e) for e in made) and lab.present(p.entry)
    removed = lab.cleanup(owner=os.getpid())
    assert {e.kind for e in removed} >= {"process", "netns", "link", "cgroup", "dir", "mount"}
    assert not os.path.exists(f"/run/netns/{ns}")
    assert not os.path.exists(f"/sys/class/net/{link}")
    assert not os.path.exists(cg) and not os.path.exists(d)
    assert p.popen.wait(2) == -signal.SIGKILL
    assert not [e for e in lab.entries() if e.owner == os.getpid()]
    assert lab.cleanup(owner=os.getpid()) == []  # safe to run twice


def test_a_dir_with_a_bind_mount_inside_loses_the_mount_not_the_source(tmp_path, own_objects):
    src = tmp_path / "precious"
    src.mkdir()
    (src / "keep").write_text("data")
    d = os.path.join(lab.run_dir(), lab.name("vol"))
    lab.register("dir", d)
    os.makedirs(d + "/v")
    subprocess.run(["mount", "--bind", str(src), d + "/v"], check=True)
    lab.cleanup(owner=os.getpid())
    assert (src / "keep").read_text() == "data"
    assert not os.path.exists(d)


def test_a_recycled_pid_is_never_killed(own_objects):
    p = lab.spawn(["sleep", "60"])
    e = p.entry
    # Forge the entry's start time: as if PID were reused by another process.
    fake = lab.Entry(**{**e.__dict__, "start": e.start + 1})
    assert not lab.present(fake)
    lab.remove(fake)
    assert p.alive()
    p.stop()
    assert not p.alive()


CRASHING_KERNEL = """
import os, subprocess, sys, time
from justaprocess import cgroups, lab
ident = sys.argv[1]
lab.register("netns", lab.name("ns", ident)); subprocess.run(["ip", "netns", "add", lab.name("ns", ident)], check=True)
lab.register("link", lab.name("v", ident))
subprocess.run(["ip", "link", "add", lab.name("v", ident), "type", "veth", "peer", "name", lab.name("p", ident)], check=True)
cg = os.path.join(cgroups.own_path(cgroups.controllers()["memory"]), lab.name("cg", ident))
lab.register("cgroup", cg); os.mkdir(cg)
sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)  # no pdeathsig: survives us
open(os.path.join(cg, "cgroup.procs"), "w").write(str(sleeper.pid))
lab.register("process", "pid-%d" % sleeper.pid, pid=sleeper.pid)
child = lab.spawn(["sleep", "300"])
print(sleeper.pid, child.pid, cg, flush=True)
time.sleep(300)
"""


def test_cleanup_after_a_killed_kernel():
    ident = lab.new_id()
    k = subprocess.Popen([PY, "-c", CRASHING_KERNEL, ident], stdout=subprocess.PIPE, text=True)
    sleeper, child, cg = k.stdout.readline().split()
    k.kill(); k.wait()  # SIGKILL: no atexit, no finally
    stale = [e for e in lab.entries() if e.owner == k.pid]
    assert len(stale) == 5 and all(lab.present(e) for e in stale if e.kind != "process" or e.pid == int(sleeper))
    # What a notebook's setup cell does: remove what dead kernels left.
    lab.cleanup(stale=True)
    assert not [e for e in lab.entries() if e.owner == k.pid]
    assert not os.path.exists(f"/run/netns/jap-{ident}-ns")
    assert not os.path.exists(f"/sys/class/net/jap-{ident}-v")
    assert not os.path.exists(cg)
    for pid in (int(sleeper), int(child)):
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


CLI_AFTER_A_KILLED_KERNEL = r"""
import json
ident, kernel = sys.argv[1], sys.argv[2]
k = subprocess.Popen([sys.executable, "-c", kernel, ident], stdout=subprocess.PIPE, text=True)
k.stdout.readline()
k.kill(); k.wait()  # SIGKILL: no atexit, no finally
out = []
for cmd in ("leftovers", "cleanup", "leftovers"):
    r = subprocess.run([sys.executable, "-m", "justaprocess", cmd], capture_output=True, text=True)
    out.append([r.returncode, r.stdout, r.stderr])
print(json.dumps(out))
"""


def test_cli_cleanup_and_leftovers_after_a_killed_kernel(isolated_lab):
    """The full CLI cleanup, in a lab of its own (conftest.IsolatedLab): it also removes
    lab-named objects of other runs, which a shared machine may have."""
    ident = isolated_lab.ident
    r = isolated_lab.run(CLI_AFTER_A_KILLED_KERNEL, ident, CRASHING_KERNEL)
    assert r.returncode == 0, r.stderr
    (rc1, before, _), (rc2, cleaned, err), (rc3, after, _) = json.loads(r.stdout.splitlines()[-1])
    assert rc1 == 1 and f"jap-{ident}-ns" in before
    assert rc2 == 0 and f"jap-{ident}-ns" in cleaned, err
    assert "nothing of the lab is left" in cleaned
    assert rc3 == 0 and after == ""


def test_prefixed_objects_lost_from_the_registry_are_still_found():
    n = lab.name("l")
    subprocess.run(["ip", "link", "add", n, "type", "veth", "peer", "name", n + "p"], check=True)
    try:
        assert any(e.name == n and e.kind == "link" for e in lab.leftovers())
    finally:
        subprocess.run(["ip", "link", "del", n], check=False)


def test_cleanup_leaves_unprefixed_objects_alone(own_objects):
    other = "xlab" + lab.new_id()  # not a lab name: cleanup must not touch it
    subprocess.run(["ip", "link", "add", other, "type", "veth", "peer", "name", other + "p"], check=True)
    try:
        lab.cleanup(owner=os.getpid())
        lab.cleanup(stale=True)
        assert os.path.exists(f"/sys/class/net/{other}")
    finally:
        subprocess.run(["ip", "link", "del", other], check=False)


def test_half_written_registry_files_are_ignored():
    os.makedirs(os.path.join(lab.state_dir(), "registry"), exist_ok=True)
    junk = os.path.join(lab.state_dir(), "registry", "netns--jap-broken--0.json")
    with open(junk, "w") as f:
        f.write('{"kind": "netns", "na')
    try:
        assert all(e.name != "jap-broken" for e in lab.entries())
    finally:
        os.unlink(junk)


def test_the_registry_survives_the_process_that_wrote_it():
    ident = lab.new_id()
    code = f"from justaprocess import lab; lab.register('dir', '{lab.run_dir()}/jap-{ident}')"
    subprocess.run([PY, "-c", code], check=True)
    found = [e for e in lab.entries() if e.name.endswith(f"jap-{ident}")]
    assert len(found) == 1
    assert json.loads(open(os.path.join(lab.state_dir(), "registry", found[0].key)).read())["kind"] == "dir"
    lab.remove(found[0])


def test_objects_registered_together_share_a_file_and_are_removed_one_by_one(own_objects):
    from justaprocess import _registry
    a, b = (f"{lab.run_dir()}/{lab.name()}" for _ in range(2))
    es = _registry.register_all([("dir", a, "first"), ("dir", b, "second")])
    group = os.path.join(lab.state_dir(), "registry", es[0].file)
    assert [r["name"] for r in json.loads(open(group).read())] == [a, b]
    os.makedirs(a)
    os.makedirs(b)
    mine = {e.name: e for e in lab.entries() if e.name in (a, b)}
    assert {n: e.note for n, e in mine.items()} == {a: "first", b: "second"}
    lab.remove(mine[a])  # the folder goes, and its record from the shared file
    assert not os.path.exists(a) and os.path.isdir(b)
    assert [e.name for e in lab.entries() if e.name in (a, b)] == [b]
    _registry.renote(mine[b], "renamed")
    assert [e.note for e in lab.entries() if e.name == b] == ["renamed"]
    lab.remove(mine[b])
    assert not os.path.exists(b) and not os.path.exists(group)
    assert not [e for e in lab.entries() if e.name in (a, b)]


def test_objects_registered_together_are_cleaned_up_after_their_owner_died():
    a, b = (f"{lab.run_dir()}/{lab.name()}" for _ in range(2))
    code = ("import os; from justaprocess import _registry; "
            f"_registry.register_all([('dir', {a!r}, ''), ('dir', {b!r}, '')]); "
            f"os.makedirs({a!r}); os.makedirs({b!r})")
    subprocess.run([PY, "-c", code], check=True)
    assert {e.name for e in lab.leftovers()} >= {a, b}
    lab.cleanup(stale=True)
    assert not os.path.exists(a) and not os.path.exists(b)
    assert not [e for e in lab.entries() if e.name in (a, b)]


def test_a_killed_jupyter_kernel_leaves_nothing_after_cleanup():
    """The real thing: a Jupyter kernel builds a container-like process in a cgroup,
    with a network namespace, and is SIGKILLed mid-notebook."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    outputs = []
    code = (
        "%load_ext justaprocess\n"
        "import os, subprocess\n"
        "from justaprocess import cgroups, lab, namespaces, proc\n"
        "cg = cgroups.Cgroup(memory='64M', pids=10).create()\n"
        "box = namespaces.spawn(['sleep', '600'])\n"
        "cg.add(box.host_pid)\n"
        "ns = lab.name('k'); lab.register('netns', ns); subprocess.run(['ip', 'netns', 'add', ns], check=True)\n"
        "print('FACTS', os.getpid(), box.host_pid, proc.start_time(box.host_pid), ns, cg.path)\n"
    )
    reply = kc.execute_interactive(code, timeout=60, output_hook=outputs.append)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith("FACTS "))
    kernel_pid, box_pid, box_start, ns, cg_path = line.split()[1:]
    kc.stop_channels()
    os.kill(int(kernel_pid), signal.SIGKILL)  # no atexit, no finally
    assert wait_exit(int(kernel_pid))
    km.cleanup_resources()
    left = [e for e in lab.leftovers() if e.owner == int(kernel_pid) or ns in e.name]
    assert left, "the killed kernel's objects should still be there before cleanup"
    lab.cleanup(stale=True)  # what the next notebook's setup cell (or `cleanup`) does
    assert not os.path.exists(f"/run/netns/{ns}")
    assert not os.path.exists(cg_path)
    assert not lab._alive(int(box_pid), int(box_start))
    assert not [e for e in lab.leftovers() if e.owner == int(kernel_pid) or ns in e.name]


def test_the_run_netns_mount_made_by_ip_netns_add_goes_with_the_last_lab_namespace(own_objects):
    if lab._mounted(lab.NETNS_DIR):
        pytest.skip("/run/netns was already a mount (someone else's `ip netns add`): not the lab's to remove")
    names = [lab.name("ns"), lab.name("ns")]
    entries = []
    for n in names:
        entries.append(lab.register("netns", n))
        subprocess.run(["ip", "netns", "add", n], check=True)
    assert lab._mounted(lab.NETNS_DIR)  # ip-netns(8) made it a shared bind mount
    lab.remove(entries[0])
    assert lab._mounted(lab.NETNS_DIR)  # still in use by the second namespace
    lab.remove(entries[1])
    assert not lab._mounted(lab.NETNS_DIR)
    assert not [e for e in lab.leftovers() if e.name == lab.NETNS_DIR]


def test_two_cleanups_emptying_one_folder_at_once_both_succeed(tmp_path):
    """Two stale cleanups (two test runs, two setup cells) may remove the same folder at
    once; each finds files the other already unlinked. Seen: CleanupIncomplete with
    "No such file or directory" for a folder that was gone."""
    import threading

    from justaprocess import _registry

    for _ in range(5):
        base = tmp_path / "jap-0a1b2c"
        for i in range(300):
            (base / f"d{i % 20}").mkdir(parents=True, exist_ok=True)
            (base / f"d{i % 20}" / f"f{i}").touch()
        errors = []

        def remove():
            try:
                _registry.remove_dir(str(base))
            except OSError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=remove) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and not base.exists()
