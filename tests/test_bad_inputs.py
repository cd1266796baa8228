"""Bad inputs, as one table: every public helper and command that takes a PID, a
namespace kind, a capability, a size, a path or a name, given a wrong one.

Each answer is a one-line lab error (errors.py) that says what to do - never a
traceback, never a bare OSError - and nothing of the lab is left afterwards.
Where an input is valid for a helper (a kernel thread's namespaces can be
read), the table says "ok" and the helper must answer.
"""
import os
import re
import subprocess

import pytest
from conftest import PY, cli

from justaprocess import (capabilities as caps, cgroups, container, debug, insecure, lab,
                          namespaces as ns, overlay, proc, remote, rootfs, runtimes, seccomp)
from justaprocess.errors import BadInput, LabError, NoSuchProcess

pytestmark = pytest.mark.root

KTHREAD = 2  # kthreadd: the parent of every kernel thread (PF_KTHREAD)
# A remedy: a verb of what to do, an example, a list to choose from, or a command.
REMEDY = re.compile(r"\b(use|give|run|one of|check|start|remove|choose|set|add|call|pass|make|"
                    r"write|install|list|lists|at least|from 1|try|read|look|build|has it exited)\b"
                    r"|\be\.g\.|`", re.I)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


DEAD = _dead_pid()


@pytest.fixture(scope="module")
def cg():
    """A lab cgroup to move processes into (created, removed at the end)."""
    c = cgroups.Cgroup(pids=8).create()
    yield c
    c.remove()


@pytest.fixture(scope="module")
def box():
    with insecure.NaiveContainer() as c:
        yield c


def assert_lab_error(fn, expected=LabError):
    with pytest.raises(LabError) as exc:
        fn()
    msg = str(exc.value)
    assert isinstance(exc.value, expected), f"{type(exc.value).__name__}: {msg}"
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    assert REMEDY.search(msg), f"says what is wrong, not what to do: {msg!r}"
    assert "Errno" not in msg and "Traceback" not in msg, msg
    return msg


# --- PIDs ----------------------------------------------------------------------------------

# (name, call) of the helpers that take a PID; "reads" answer a kernel thread, "acts" refuse it.
READS = [
    ("proc.namespaces", proc.namespaces), ("proc.status", proc.status), ("proc.cgroups", proc.cgroups),
    ("proc.caps", proc.caps), ("proc.nspid", proc.nspid), ("proc.start_time", proc.start_time),
    ("proc.facts", proc.facts), ("proc.check_pid", proc.check_pid),
    ("namespaces.of", ns.of), ("namespaces.members", lambda p: ns.members(p, "net")),
    ("namespaces.compare", lambda p: ns.compare(p, "self")),
    ("capabilities.sets", caps.sets), ("capabilities.masks", caps.masks),
    ("cgroups.describe", cgroups.describe), ("cgroups.places_of", cgroups.places_of),
    ("runtimes.facts", runtimes.facts),
]
ACTS = [
    ("namespaces.enter", lambda p: ns.enter(p, ["true"])),
    ("proc.check_pid(user_space)", lambda p: proc.check_pid(p, user_space=True)),
    ("debug.inspect", debug.inspect),
    ("debug.target", debug.target),
    ("debug.exec_in", lambda p: debug.exec_in(p, ["true"])),
    ("debug.sidecar", debug.sidecar),
    ("debug.strace", debug.strace),
]


@pytest.mark.parametrize("name,call", READS + ACTS, ids=[n for n, _ in READS + ACTS])
@pytest.mark.parametrize("pid,expected", [(DEAD, LabError), (0, BadInput), (-1, BadInput)],
                         ids=["dead", "zero", "negative"])
def test_a_pid_that_names_no_process(name, call, pid, expected, own_objects):
    msg = assert_lab_error(lambda: call(pid), expected)
    assert str(pid) in msg


@pytest.mark.parametrize("name,call", READS, ids=[n for n, _ in READS])
def test_a_kernel_thread_can_be_read(name, call):
    assert call(KTHREAD) is not None


@pytest.mark.parametrize("name,call", ACTS, ids=[n for n, _ in ACTS])
def test_a_kernel_thread_cannot_be_acted_on(name, call, own_objects):
    assert "kernel thread" in assert_lab_error(lambda: call(KTHREAD), BadInput)


@pytest.mark.parametrize("pid,expected", [(DEAD, NoSuchProcess), (0, BadInput), (-1, BadInput),
                                          (KTHREAD, BadInput)], ids=["dead", "zero", "negative", "kthread"])
def test_a_cgroup_takes_only_a_live_user_process(cg, pid, expected):
    assert_lab_error(lambda: cg.add(pid), expected)
    assert pid not in cg.pids()


# The commands: a one-line "error: ..." on stderr, exit 2, never a traceback.
@pytest.mark.parametrize("command", ["ns", "cgroup", "caps", "inspect"])
@pytest.mark.parametrize("pid", [str(DEAD), "0", "-1", "abc"], ids=["dead", "zero", "negative", "text"])
def test_commands_given_a_bad_pid(command, pid):
    r = cli(command, "--", pid)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: ", "python -m justaprocess")) and REMEDY.search(last) or \
        "invalid" in last, r.stderr
    if pid in ("0", "-1"):
        assert "not a valid" in r.stderr and "exited" not in r.stderr  # not "has it exited?"


def test_commands_given_a_kernel_thread():
    for command in ("ns", "cgroup", "caps"):  # its facts: shown
        r = cli(command, str(KTHREAD))
        assert r.returncode == 0 and r.stdout, (command, r.stderr)
    r = cli("inspect", str(KTHREAD))  # a container view of it: refused
    assert r.returncode == 2 and "kernel thread" in r.stderr and "Traceback" not in r.stderr


# --- kinds, capabilities, sizes, paths, names ------------------------------------------------

def _nothing_made(fn):
    """Run fn; afterwards none of this process's registered objects is present."""
    before = {e.key for e in lab.entries() if e.owner == os.getpid()}
    try:
        return fn()
    finally:
        new = [e for e in lab.entries() if e.owner == os.getpid() and e.key not in before]
        assert not [e for e in new if lab.present(e)], new


CASES = {
    # an unknown namespace kind
    "namespaces.kinds_of": lambda: ns.kinds_of("pidd"),
    "namespaces.members kind": lambda: ns.members(os.getpid(), "pidd"),
    "namespaces.inventory": lambda: ns.inventory("pidd"),
    "namespaces.share_map": lambda: ns.share_map(kinds="pidd"),
    "namespaces.run": lambda: ns.run("true", kinds="pidd"),
    "namespaces.spawn": lambda: ns.spawn(["true"], kinds="pidd"),
    "namespaces.enter kind": lambda: ns.enter(os.getppid(), ["true"], kinds="pidd"),
    "container.Container namespaces": lambda: container.Container(["/bin/true"], namespaces=("pidd", "mnt")),
    # an unknown capability
    "capabilities.cap_number": lambda: caps.cap_number("cap_nope"),
    "capabilities.to_mask": lambda: caps.to_mask(["cap_nope"]),
    "capabilities.run keep": lambda: caps.run(["true"], keep=["cap_nope"]),
    "capabilities.run drop": lambda: caps.run(["true"], drop=["cap_nope"]),
    "capabilities.probe": lambda: caps.probe(keep=["cap_nope"]),
    "container.Container caps": lambda: container.Container(["/bin/true"], caps=["cap_nope"]),
    "runtimes.config caps": lambda: runtimes.config(rootfs.build().path, ["true"], caps=("CAP_NOPE",)),
    "runtimes.OCIContainer caps": lambda: runtimes.OCIContainer(rootfs.build().path, caps=("cap_nope",)),
    # paths with '..', names with '/'
    "rootfs.extract ..": lambda: rootfs.extract(rootfs.build(), os.path.join(lab.run_dir(), "jap-abc123", "..", "x")),
    "runtimes.config ..": lambda: runtimes.config(rootfs.build().path + "/../rootfs-busybox", ["true"]),
    "container.Volume ..": lambda: container.Container(["/bin/true"], volumes=[container.Volume("/tmp", "/data/../../etc")]),
    "cgroups.remove ..": lambda: cgroups.remove("/nonexistent/jap-abc123/.."),
    "lab.register ..": lambda: lab.register("dir", os.path.join(lab.run_dir(), "jap-abc123", "..", "..", "x")),
    "capabilities.set_file_caps ..": lambda: caps.set_file_caps(os.path.join(lab.run_dir(), "..", "x"), ["cap_chown"]),
    "cgroups.Cgroup name /": lambda: cgroups.Cgroup(name="a/b"),
    "cgroups.Cgroup name ..": lambda: cgroups.Cgroup(name=".."),
    "container.Container name /": lambda: container.Container(["/bin/true"], name="a/b"),
    "runtimes.OCIContainer ident /": lambda: runtimes.OCIContainer(rootfs.build().path, ident="a/b"),
    "lab.name /": lambda: lab.name("a/b"),
    "rootfs.build /": lambda: rootfs.build("a/b"),
    "runtimes.find /": lambda: runtimes.find("a/b"),
    "debug.inspect /": lambda: debug.inspect("a/b"),
    # seccomp allowlists and overlay layers
    "seccomp.allowlist names": lambda: seccomp.allowlist("read"),
    "seccomp.allowlist default": lambda: seccomp.allowlist(default="EWHAT"),
    "seccomp.number": lambda: seccomp.number("no_such_call"),
    "container.Container seccomp": lambda: container.Container(["/bin/true"], seccomp="default"),
    "overlay.Layers lower": lambda: overlay.Layers("/nonexistent/jap-abc123").create(),
}
for size in ("64Q", "-1M", "0"):
    CASES.update({
        f"cgroups.Cgroup memory={size}": lambda s=size: cgroups.Cgroup(memory=s),
        f"cgroups.Cgroup memory_low={size}": lambda s=size: cgroups.Cgroup(memory_low=s),
        f"container.Container memory={size}": lambda s=size: container.Container(["/bin/true"], memory=s),
        f"runtimes.config memory={size}": lambda s=size: runtimes.config(rootfs.build().path, ["true"], memory=s),
        f"runtimes.OCIContainer memory={size}": lambda s=size: runtimes.OCIContainer(rootfs.build().path, memory=s),
        f"remote.Service memory={size}": lambda s=size: remote.Service(memory=s),
        f"cgroups.LoopDevice {size}": lambda s=size: cgroups.LoopDevice(s),
    })
for size in ("64Q", "-1M"):
    CASES[f"cgroups.parse_size {size}"] = lambda s=size: cgroups.parse_size(s)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_a_lab_error_and_makes_nothing(name, own_objects):
    _nothing_made(lambda: assert_lab_error(CASES[name], BadInput))


def test_naive_container_host_files_stay_in_its_folder(box, own_objects):
    for bad in ("../jap-out.txt", "a/b", ".."):
        assert_lab_error(lambda: box.host_file(bad, "x"), BadInput)
    assert not os.path.exists(os.path.join(os.path.dirname(box.dir), "jap-out.txt"))


@pytest.mark.parametrize("args", [["container", "--memory", "64Q", "/bin/true"],
                                  ["container", "--memory=-1M", "/bin/true"],
                                  ["container", "--memory", "0", "/bin/true"],
                                  ["caps", "--decode", "64Q"],
                                  ["inspect", "a/b"], ["inspect", "../x"]],
                         ids=lambda a: " ".join(a))
def test_commands_given_bad_sizes_paths_and_names(args):
    p = subprocess.Popen([PY, "-m", "justaprocess", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and REMEDY.search(lines[0]), err
    assert not [e for e in lab.leftovers() if e.owner == p.pid]  # it made nothing (or took it away)


# --- an exercise check given a plausible wrong answer ------------------------------------------

def test_check_06_given_the_other_cgroup_versions_file_answers_without_a_traceback(own_objects):
    from justaprocess.checks import ch06
    if not runtimes.find("runc").available:
        pytest.skip(f"runc: {runtimes.find('runc').reason}")
    with runtimes.OCIContainer(rootfs.build(), ["sleep", "30"]) as c:
        place = cgroups.places_of(c.pid)["memory"]
        other = "memory.max" if place.hierarchy.version == 1 else "memory.limit_in_bytes"
        for wrong in (os.path.join(place.path, other),              # the other version's name
                      os.path.join(cgroups.ROOT, "memory.max"),     # the root's (absent on v1)
                      os.path.join(place.path, "jap-absent", "memory.max")):
            v = ch06.check_limit_file(wrong, c)
            assert not v.ok and v.message and "Traceback" not in v.message, v


# --- and nothing of this module's objects is left -----------------------------------------------

def test_zz_nothing_of_this_test_is_left(cg):
    cg.remove()
    assert not [e for e in lab.leftovers() if e.owner == os.getpid()]
