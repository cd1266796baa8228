"""What is a lab name, and cleanup leaves everything else alone (issue: near-lab names).

The full cleanup (``python -m justaprocess cleanup``) removes lab-named objects
it finds even when no registry entry names them.  Other runs may have live lab
objects on this machine, so the full cleanup here runs in a child that sees only
what this test made: its own state folder, its own network namespace (and
sysfs view of it), its own mount namespace (with an empty /run), and its own
cgroup in every hierarchy, beneath which its scan looks.
"""
import json
import os
import subprocess
import sys

import pytest

from justaprocess import _registry, cgroups, lab
from justaprocess.errors import BadInput

PY = sys.executable


@pytest.mark.parametrize("name", ["jap-1a2b3c", "jap-1a2b3c-br", "jap-1a2b3c-v", "jap-00ff00-cg.1_x"])
def test_lab_names(name):
    assert lab.is_lab_name(name)


@pytest.mark.parametrize("name", ["jap", "japan0", "japan1", "japanese", "japanese.scope", "japhy",
                                  "jap-", "jap-x", "jap-lab", "jap-1a2b3", "jap-1A2B3C", "jap-1a2b3cd",
                                  "jap-1a2b3c-", "jap-1a2b3c/x", "xjap-1a2b3c", ""])
def test_not_lab_names(name):
    assert not lab.is_lab_name(name)


def test_every_name_the_lab_makes_is_a_lab_name():
    ident = lab.new_id()
    for suffix in ("", "br", "v", "cg", "loop", "fcaps", "shp", "ns"):
        assert lab.is_lab_name(lab.name(suffix, ident))
    assert len(lab.name("br", ident)) < _registry.IFNAMSIZ
    with pytest.raises(BadInput, match="lab name"):
        lab.name("a/b")


def test_where_each_kind_may_be(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    run, cache = lab.run_dir(), lab.cache_dir()
    ok = [("dir", f"{run}/jap-1a2b3c"), ("dir", f"{cache}/jap-1a2b3c-x/y"),
          ("mount", f"{run}/jap-1a2b3c/rootfs/proc"), ("mount", "/run/netns/jap-1a2b3c"),
          ("loop", f"{run}/jap-1a2b3c/disk.img"), ("link", "jap-1a2b3c-br"), ("netns", "jap-1a2b3c"),
          ("cgroup", "/sys/fs/cgroup/memory/x/jap-lab/jap-1a2b3c-cg"),
          ("cgroup", "/sys/fs/cgroup/memory/x/jap-lab"), ("sysctl", "/proc/sys/kernel/printk_ratelimit")]
    bad = [("dir", f"{run}/japhy"), ("dir", run), ("dir", "/tmp/jap-1a2b3c"), ("dir", f"{run}/../jap-1a2b3c"),
           ("dir", "/run/netns/jap-1a2b3c"), ("mount", "/mnt/jap-x"), ("mount", "/mnt/jap-1a2b3c"),
           ("mount", f"{run}/jap-x/y"), ("link", "japan0"), ("link", "jap-1a2b3c-abcdefgh"),
           ("netns", "jap"), ("cgroup", "/sys/fs/cgroup/memory/japanese"),
           ("cgroup", "/sys/fs/cgroup/memory/jap"), ("cgroup", "/sys/fs/cgroup/memory/jap-1a2b3c/sub"),
           ("loop", "/var/tmp/jap-1a2b3c/disk.img"), ("sysctl", "/etc/sysctl.conf"),
           ("sysctl", "/proc/sys/../self/mem")]
    for kind, name in ok:
        assert lab.is_lab_object(kind, name), (kind, name)
    for kind, name in bad:
        assert not lab.is_lab_object(kind, name), (kind, name)
        with pytest.raises(BadInput, match="not a lab object"):
            lab.register(kind, name)


def test_cgroups_remove_refuses_near_names(tmp_path):
    for n in ("japanese", "jap", "japanese.scope"):
        (tmp_path / n).mkdir()
        with pytest.raises(BadInput, match="not a cgroup the lab created"):
            cgroups.remove(str(tmp_path / n))
        assert (tmp_path / n).is_dir()


# The child, in a lab of its own (conftest.IsolatedLab): makes near-names and real lab
# objects, runs the CLI's leftovers and cleanup, and reports what is still present.
CHILD = r"""
import json
ident, outside = sys.argv[1], sys.argv[2]
run = os.path.join(_state, "run")
_sh("ip", "link", "add", "japan0", "type", "veth", "peer", "name", "japan1")
lab_link = f"jap-{ident}-v"
_sh("ip", "link", "add", lab_link, "type", "veth", "peer", "name", f"jap-{ident}-w")
os.makedirs(outside); _sh("mount", "-t", "tmpfs", "jap-x", outside)   # a mount named jap-x
os.makedirs(run + "/japhy")
lab_mnt = f"{run}/jap-{ident}-m"
os.makedirs(lab_mnt); _sh("mount", "-t", "tmpfs", "tmpfs", lab_mnt)
cli = [sys.executable, "-m", "justaprocess"]
before = subprocess.run(cli + ["leftovers"], capture_output=True, text=True)
clean = subprocess.run(cli + ["cleanup"], capture_output=True, text=True)
after = subprocess.run(cli + ["leftovers"], capture_output=True, text=True)
mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
print(json.dumps({
    "before": before.stdout, "cleanup": clean.stdout + clean.stderr, "cleanup_rc": clean.returncode,
    "after": after.stdout, "after_rc": after.returncode,
    "japan": [n for n in ("japan0", "japan1") if os.path.lexists(f"/sys/class/net/{n}")],
    "lab_link": os.path.lexists(f"/sys/class/net/{lab_link}"),
    "outside_mounted": outside in mounts, "japhy": os.path.isdir(run + "/japhy"),
    "lab_mnt": os.path.exists(lab_mnt),
}))
"""


def test_near_lab_names_survive_cleanup_and_are_not_leftovers(tmp_path, isolated_lab):
    iso = isolated_lab
    outside = str(tmp_path / "elsewhere" / "jap-x")
    near = []
    for d in iso.cgroups:  # under the isolated lab's base: two near-names in each hierarchy
        for n in ("japanese", "jap"):
            os.mkdir(os.path.join(d, n))
            near.append(os.path.join(d, n))
    lab_cg = os.path.join(iso.cgroups[0], lab.name("cg", iso.ident))  # a lab cgroup, unregistered
    os.mkdir(lab_cg)
    try:
        r = iso.run(CHILD, iso.ident, outside)
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout.splitlines()[-1])
        for n in ("japan0", "japan1", "japanese", "japhy", "jap-x"):
            assert n not in rep["before"] and n not in rep["after"], (n, rep)
        assert f"jap-{iso.ident}-v" in rep["before"]     # the lab's own strays are found...
        assert rep["cleanup_rc"] == 0 and "nothing of the lab is left" in rep["cleanup"], rep["cleanup"]
        assert not rep["lab_link"] and not rep["lab_mnt"]  # ...and removed
        assert not os.path.exists(lab_cg)
        assert rep["after_rc"] == 0 and rep["after"] == ""
        assert rep["japan"] == ["japan0", "japan1"]      # the near-names are all still there
        assert rep["outside_mounted"] and rep["japhy"]
        assert all(os.path.isdir(d) for d in near)
    finally:
        for d in near:
            if os.path.isdir(d):
                os.rmdir(d)


# --- a host setting a demo changes: registered, put back by cleanup ---------------------

# Not the sysctl notebook 07 writes, so that a run of 07 meanwhile is not disturbed.
SYSCTL = "/proc/sys/kernel/printk_ratelimit"

KILLED_KERNEL = r"""
import sys, time
from justaprocess import insecure
attack = insecure.sysctl_write(sys.argv[1])   # registers the value it has now
print(attack(), flush=True)                   # and changes it, as the demo does from inside
time.sleep(300)
"""


@pytest.mark.root
def test_a_sysctl_changed_by_a_killed_kernel_is_restored_by_cleanup(tmp_path, monkeypatch):
    from justaprocess import insecure
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    old = insecure.read_sysctl(SYSCTL)
    k = subprocess.Popen([PY, "-c", KILLED_KERNEL, SYSCTL], stdout=subprocess.PIPE, text=True)
    try:
        new = int(k.stdout.readline())
        k.kill()
        k.wait()  # SIGKILL: no atexit, no finally
        assert new == old + 1 and insecure.read_sysctl(SYSCTL) == new
        [e] = [e for e in lab.entries() if e.kind == "sysctl"]
        assert (e.name, e.value, e.owner) == (SYSCTL, str(old), k.pid)
        # (leftovers also scans the machine: other runs' live objects may show; only ours here)
        assert [e.name for e in lab.leftovers() if e.kind == "sysctl"] == [SYSCTL]
        removed = lab.cleanup(stale=True)   # what the next notebook's setup cell does
        assert [r.kind for r in removed] == ["sysctl"]
        assert insecure.read_sysctl(SYSCTL) == old
        assert lab.entries() == [] and not [e for e in lab.leftovers() if e.kind == "sysctl"]
    finally:
        k.kill()
        k.wait()
        insecure.restore_sysctl(old, SYSCTL)


@pytest.mark.root
def test_a_restored_sysctl_is_forgotten_and_registered_once(tmp_path, monkeypatch):
    from justaprocess import insecure
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    old = insecure.read_sysctl(SYSCTL)
    try:
        insecure.sysctl_write(SYSCTL)()
        insecure.sysctl_write(SYSCTL)()            # a second demo: the value to put back stays
        assert insecure.read_sysctl(SYSCTL) == old + 2
        assert [(e.kind, e.value) for e in lab.entries()] == [("sysctl", str(old))]
        insecure.restore_sysctl(old, SYSCTL)       # what the notebook's cell does
        assert lab.entries() == [] and insecure.read_sysctl(SYSCTL) == old
    finally:
        insecure.restore_sysctl(old, SYSCTL)
