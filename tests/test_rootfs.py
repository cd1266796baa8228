"""rootfs: busybox and tools root filesystems, cached, as folder and tarball.

Real effects: the binaries run inside the built tree (chroot), the applet links
resolve *inside* it, the tarball holds the same tree, a missing cache is rebuilt.
"""
import os
import subprocess
import tarfile

import pytest

from justaprocess import rootfs
from justaprocess.errors import BadInput, LabError

pytestmark = pytest.mark.root


def _chroot(root, *argv):
    return subprocess.run(["chroot", root, *argv], capture_output=True, text=True, timeout=20)


def test_busybox_rootfs_runs_a_shell_inside(image):
    r = _chroot(image.path, "/bin/sh", "-c", "echo hello from $(cat /etc/hostname)")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from container\n"


def test_applet_links_point_inside_the_rootfs(image):
    # Made by running busybox --install inside: links name /bin/busybox of the rootfs,
    # and resolve to the copy in the tree, never to the host's binary.
    link = os.path.join(image.path, "bin", "ls")
    assert os.readlink(link) == "/bin/busybox"
    apps = [n for n in os.listdir(os.path.join(image.path, "bin")) if n != "busybox"]
    assert len(apps) > 100
    assert _chroot(image.path, "/bin/ls", "/etc").stdout.split() >= ["group", "hostname"]


def test_busybox_is_static_and_etc_has_the_basics(image):
    assert rootfs.libraries(os.path.join(image.path, "bin", "busybox")) == []
    with open(os.path.join(image.path, "etc", "passwd")) as f:
        assert f.readline().startswith("root:x:0:0:")
    assert oct(os.stat(os.path.join(image.path, "tmp")).st_mode & 0o7777) == "0o1777"
    for d in ("proc", "sys", "dev"):
        assert os.path.isdir(os.path.join(image.path, d))


def test_tarball_holds_the_same_tree(image):
    with tarfile.open(image.tarball) as t:
        names = {os.path.normpath(n) for n in t.getnames()}
    assert {"bin/busybox", "bin/sh", "etc/passwd", "var/www/index.html"} <= names
    on_disk = set()
    for d, dirs, files in os.walk(image.path):
        for n in dirs + files:
            on_disk.add(os.path.relpath(os.path.join(d, n), image.path))
    on_disk.discard(rootfs.MARKER)
    assert on_disk == names - {"."}


def test_extract_is_tar_x_into_a_new_folder(image, tmp_path):
    dest = str(tmp_path / "jap-copy")
    rootfs.extract(image, dest)
    assert os.path.islink(os.path.join(dest, "bin", "sh"))
    assert _chroot(dest, "/bin/true").returncode == 0
    with pytest.raises(BadInput, match="exists.*new folder"):
        rootfs.extract(image, dest)  # never over an existing tree


def test_cached_then_rebuilt_when_missing(tmp_path, monkeypatch):
    # A private cache: the shared one may be in use by another test run.
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    first = rootfs.build("busybox")
    assert first.path.startswith(str(tmp_path))
    marker = os.path.join(first.path, rootfs.MARKER)
    made = os.stat(marker).st_mtime_ns
    assert rootfs.build("busybox") == first
    assert os.stat(marker).st_mtime_ns == made          # cached: not rebuilt
    os.unlink(first.tarball)                            # incomplete: rebuilt
    again = rootfs.build("busybox")
    assert os.path.getsize(again.tarball) > 1 << 20
    assert os.stat(marker).st_mtime_ns != made
    rootfs.remove_cache("busybox")
    assert not os.path.exists(first.path) and not os.path.exists(first.tarball)


def test_tools_rootfs_runs_dynamically_linked_strace():
    tools = rootfs.build("tools")
    assert "strace" in tools.tools
    strace = os.path.join(tools.path, "usr/local/bin/strace")
    libs = rootfs.libraries(strace)
    assert any("libc.so" in lib for lib in libs)
    for lib in libs:  # each library ldd names is in the tree at the same path
        assert os.path.exists(os.path.join(tools.path, lib.lstrip("/"))), lib
    r = _chroot(tools.path, "/usr/local/bin/strace", "-V")
    assert r.returncode == 0 and r.stdout.startswith("strace -- version"), r.stderr
    # strace really traces inside the tools rootfs (ptrace of its own child).
    r = _chroot(tools.path, "/usr/local/bin/strace", "-f", "-e", "trace=execve", "/bin/true")
    assert 'execve("/bin/true"' in r.stderr


def test_extract_refuses_bad_input_before_making_anything(image, tmp_path):
    for dest, match in ((str(tmp_path / ".." / "jap-up"), "'..'"), ("relative/jap-x", "absolute")):
        with pytest.raises(BadInput, match=match):
            rootfs.extract(image, dest)
    with pytest.raises(BadInput, match="rootfs.build"):
        rootfs.extract(image.tarball, str(tmp_path / "jap-x"))
    assert not os.path.exists(tmp_path / "jap-x") and not os.path.exists(tmp_path.parent / "jap-up")


def test_a_damaged_image_is_a_lab_error_that_says_what_to_do(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_text("not a tarball\n")
    broken = rootfs.Rootfs("busybox", str(tmp_path / "none"), str(junk))
    with pytest.raises(LabError, match="build it again") as exc:
        rootfs.extract(broken, str(tmp_path / "jap-x"))
    assert not isinstance(exc.value, OSError) and "\n" not in str(exc.value)


def test_a_failed_build_is_a_lab_error_and_leaves_no_half_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(rootfs, "busybox_binary", lambda: "/bin/true")  # dynamic: cannot run inside
    with pytest.raises(LabError, match="busybox --install.*build again") as exc:
        rootfs.build("busybox", force=True)
    assert not isinstance(exc.value, OSError)
    assert [n for n in os.listdir(tmp_path / "cache") if n.startswith("rootfs-")] == []


def test_unknown_kind_is_refused():
    with pytest.raises(BadInput, match="busybox"):
        rootfs.build("alpine")


def test_only_a_static_busybox_is_taken():
    assert rootfs._is_static(rootfs.busybox_binary())
    assert not rootfs._is_static("/bin/ls")  # dynamically linked: would not run inside the rootfs
