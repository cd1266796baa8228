"""The doctor: ready here as root; refuses, with a what-to-do message, as a plain user."""
import subprocess

import pytest
from conftest import as_user, cli

from justaprocess import cgroups, doctor


def test_layout_is_detected_in_one_function_on_fake_mount_tables(tmp_path):
    def table(lines):
        p = tmp_path / f"mounts{len(list(tmp_path.iterdir()))}"
        p.write_text("\n".join(lines) + "\n")
        return str(p)
    v2 = table(["cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0"])
    hybrid = table(["tmpfs /sys/fs/cgroup tmpfs ro 0 0",
                    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0",
                    "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0"])
    v1 = table(["tmpfs /sys/fs/cgroup tmpfs ro 0 0",
                "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0"])
    none = table(["proc /proc proc rw 0 0"])
    assert cgroups.layout(mounts=v2) == "v2"
    assert cgroups.layout(mounts=hybrid) == "hybrid"
    assert cgroups.layout(mounts=v1) == "v1"
    with pytest.raises(cgroups.NotSupported, match="mount -t cgroup2"):
        cgroups.layout(mounts=none)
    assert cgroups.hierarchies(mounts=v1)[0].controllers == ("memory",)


def test_this_machine_layout_matches_the_filesystem_type():
    fstype = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True,
                            text=True).stdout.strip()
    assert (cgroups.layout() == "v2") == (fstype == "cgroup2fs")


@pytest.mark.root
def test_doctor_exits_0_here_as_root():
    r = cli("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the lab is ready" in r.stdout
    assert doctor.ready()


@pytest.mark.root
def test_doctor_as_an_unprivileged_user_says_why_and_what_to_do():
    r = as_user("-m", "justaprocess", "doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL root" in r.stdout and "run as root" in r.stdout
    assert "NOT ready" in r.stdout


@pytest.mark.root
def test_cleanup_as_an_unprivileged_user_is_a_clear_error():
    r = as_user("-m", "justaprocess", "cleanup")
    assert r.returncode == 2
    assert r.stderr.startswith("error: cleanup needs root: run the lab as root")
    assert "Traceback" not in r.stderr


def test_a_failed_check_carries_a_fix():
    results = doctor.checks()
    assert all(c.fix for c in results if not c.ok)
    broken = [doctor.Check("tool frob", False, "not found", "apt-get install frob")]
    assert "-> apt-get install frob" in doctor.report(broken)
    assert not doctor.ready(broken)
