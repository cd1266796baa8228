"""The do's and don'ts of chapter 13 (justaprocess.practices): each one run for real."""
import os

import pytest

from justaprocess import container, lab, practices, proc, rootfs
from justaprocess.container import Container, ContainerError, Volume
from justaprocess.errors import BadInput, LabError

pytestmark = pytest.mark.root


def test_elf_interpreter_reads_pt_interp():
    assert practices.elf_interpreter("/usr/bin/id").startswith("/lib")       # dynamic
    assert practices.elf_interpreter(rootfs.busybox_binary()) is None        # static
    assert practices.elf_interpreter("/sbin/ldconfig") is None               # static-pie
    with pytest.raises(BadInput, match="not an ELF"):
        practices.elf_interpreter("/etc/passwd")


def test_a_dynamic_binary_in_a_bare_root_fails_with_enoent_until_its_libraries_come(own_objects):
    with practices.make_root({"/id": "/usr/bin/id", "/busybox": rootfs.busybox_binary()}) as bare:
        assert os.path.exists(bare.file("/id"))
        with pytest.raises(ContainerError, match="No such file or directory"):
            container.run(["/id"], rootfs=bare.path, mount_proc=False, mount_dev=False)
        ok = container.run(["/busybox", "echo", "static"], rootfs=bare.path, mount_proc=False,
                           mount_dev=False)
        assert ok.stdout == "static\n"
        added = practices.add_binary(bare, "/usr/bin/id")
        assert practices.elf_interpreter("/usr/bin/id") in added
        r = container.run(["/usr/bin/id", "-u"], rootfs=bare.path, mount_proc=False, mount_dev=False)
        assert r.returncode == 0 and r.stdout == "0\n"
    assert not os.path.exists(bare.path)


def test_stdout_is_collected_a_log_file_inside_dies_with_the_container(own_objects):
    out = Container(["/bin/sh", "-c", "echo fatal: db down; exit 1"])
    inside = Container(["/bin/sh", "-c", "echo fatal: db down >> /var/log/app.log; exit 1"])
    try:
        assert out.run().stdout == "fatal: db down\n" and out.logs() == "fatal: db down\n"
        assert inside.run().returncode == 1 and inside.logs() == ""
        log = os.path.join(inside.root, "var/log/app.log")
        with open(log) as f:
            assert f.read() == "fatal: db down\n"
    finally:
        out.remove()
        inside.remove()
    assert not os.path.exists(log)


def test_config_on_a_volume_reloads_on_change_without_a_restart(own_objects):
    with practices.make_root(suffix="cfg", dirs=(), text={"app.conf": 'GREETING="one"\n'}) as cfg, \
            Container(["/bin/sh", "/app"], volumes=[Volume(cfg.path, "/config", True)]) as app:
        app.create()
        with open(os.path.join(app.root, "app"), "w") as f:
            f.write(practices.RELOADING_APP)
        practices.inotify_tools(app.root)
        app.start()
        assert "GREETING=one" in practices.wait_line(app, "config loaded")
        practices.wait_line(app, practices.READY)
        started, mark = proc.start_time(app.pid), practices.log_size(app)
        with open(cfg.file("app.conf"), "w") as f:
            f.write('GREETING="two"\n')
        assert "GREETING=two (PID 1)" in practices.wait_line(app, "config loaded", after=mark)
        assert proc.start_time(app.pid) == started


def test_the_debug_flag_traces_to_stdout(own_objects):
    quiet = container.run(["/bin/sh", "-c", practices.QUIET_APP])
    traced = container.run(["/bin/sh", "-c", practices.QUIET_APP], env={"DEBUG": "1"})
    assert quiet.returncode == traced.returncode == 3
    assert quiet.stdout == ""
    assert "+ cat /config/port" in traced.stdout


def test_no_installs_at_run_time_the_lab_network_leads_nowhere(own_objects):
    r = container.run(["/bin/sh", "-c", "wget -q -O /tmp/x http://deb.debian.org/ 2>&1; echo rc=$?"],
                      network=True)
    assert "bad address" in r.stdout and "rc=1" in r.stdout


def test_read_only_root_and_state_on_a_volume(own_objects):
    assert container.run(["/bin/sh", "-c", practices.COUNTER_APP]).stdout == "start number 1\n"
    assert container.run(["/bin/sh", "-c", practices.COUNTER_APP]).stdout == "start number 1\n"
    ro = container.run(["/bin/sh", "-c", practices.COUNTER_APP], readonly_paths=["/"])
    assert ro.returncode == 1 and "Read-only file system" in ro.stderr
    with practices.make_root(suffix="data", dirs=()) as vol:
        runs = [container.run(["/bin/sh", "-c", practices.COUNTER_APP], readonly_paths=["/"],
                              volumes=[(vol.path, "/data")], env={"STATE": "/data/starts"})
                for _ in range(2)]
        assert [r.stdout for r in runs] == ["start number 1\n", "start number 2\n"]
        with open(vol.file("starts")) as f:
            assert f.read() == "2\n"


def test_sizes_and_tools_of_a_fat_and_a_minimal_root(own_objects):
    tools = rootfs.build("tools")
    with practices.make_root({"/httpd": rootfs.busybox_binary()}) as minimal:
        assert practices.root_size(minimal.path) < practices.root_size(tools.path)
        assert practices.executables(minimal.path) == []
        assert {"sh", "strace", "wget"} <= set(practices.executables(tools.path))
        with Container(["/httpd", "-f", "-p", "8080"], rootfs=minimal.path) as c:
            c.start()
            with pytest.raises(LabError, match="not found"):
                c.exec(["sh", "-c", "id"])   # no shell for an intruder


def test_wait_line_gives_up_with_a_clear_error(own_objects):
    with Container(["/bin/sleep", "30"]) as c:
        c.start()
        with pytest.raises(practices.NoSuchLine, match="did not appear"):
            practices.wait_line(c, "never", timeout=0.2)


def test_make_root_refuses_a_missing_file_and_leaves_nothing(own_objects):
    def mine():   # only this test's own entries: other runs register theirs meanwhile
        return {e.name for e in lab.entries() if e.owner == os.getpid()}
    before = mine()
    with pytest.raises(BadInput, match="not a file"):
        practices.make_root({"/x": "/no/such/file"})
    assert mine() == before
