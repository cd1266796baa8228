"""justaprocess.apparmor: a lab profile loaded with apparmor_parser, a process and a
container started under it (the launcher writes attr/apparmor/exec), a denied write,
/proc/PID/attr read, the profile unloaded by the cleanup.

The live tests need a kernel with AppArmor (the course VM, Debian 12); elsewhere they
skip saying why, and what can run everywhere runs: the profile compiles
(``apparmor_parser -Q``), bad input is refused, the launcher refuses a profile it cannot
apply with the reason.
"""
import os
import shutil

import pytest

from justaprocess import _apparmor_parser, _launch, apparmor, lab
from justaprocess.container import Container
from justaprocess.errors import BadInput, NotSupported

root = pytest.mark.root
WHY = apparmor.why_not()
live = pytest.mark.skipif(WHY is not None, reason=f"AppArmor: {WHY}")
parser = pytest.mark.skipif(shutil.which("apparmor_parser", path=_apparmor_parser._SEARCH) is None,
                            reason="apparmor_parser is not installed (Debian package apparmor)")


@parser
def test_the_profile_compiles():
    p = apparmor.deny_writes(["/etc/**", "/data/**"])
    text = p.check()
    assert text.startswith(f"profile {p.name} flags=(attach_disconnected")
    assert "  deny /etc/** w,\n" in text and "  file,\n" in text


def test_bad_profiles_are_refused():
    with pytest.raises(BadInput, match="jap-"):
        apparmor.Profile(["file"], name="docker-default")
    with pytest.raises(BadInput, match="absolute"):
        apparmor.deny_writes(["etc/**"])
    with pytest.raises(BadInput, match="braces"):
        apparmor.Profile(["file } profile evil {"])
    with pytest.raises(BadInput, match="loaded profile"):
        Container(["/bin/true"], apparmor="")


def test_registry_takes_lab_profiles_only():
    assert lab.is_lab_object("apparmor", "jap-1a2b3c-aa")
    assert not lab.is_lab_object("apparmor", "docker-default")
    with pytest.raises(BadInput):
        _apparmor_parser.remove("docker-default")


@pytest.mark.skipif(WHY is None, reason="this kernel has AppArmor: the live tests run instead")
@root
def test_without_apparmor_the_launcher_says_why(own_objects):
    with pytest.raises(NotSupported, match="AppArmor"):
        _launch.run(_launch.Spec(argv=["true"], apparmor="jap-1a2b3c-aa"))
    with pytest.raises(NotSupported, match="course VM"):
        apparmor.deny_writes(["/etc/**"]).load()
    assert not [e for e in lab.entries() if e.kind == "apparmor"]


@live
@root
def test_a_process_under_a_lab_profile_is_denied_a_write(own_objects, tmp_path):
    target = tmp_path / "jap-target"
    target.mkdir()
    p = apparmor.deny_writes([f"{target}/**"]).load()
    assert p.mode == "enforce" and p.name in apparmor.loaded()
    assert any(e.kind == "apparmor" and e.name == p.name for e in lab.entries())
    with pytest.raises(BadInput, match="no such profile"):
        _launch.run(_launch.Spec(argv=["true"], apparmor=p.name + "-nope"))
    write = ["sh", "-c", f"cat /proc/self/attr/current; echo x > {target}/f && echo wrote"]
    r = _launch.run(_launch.Spec(argv=write, apparmor=p.name), timeout=10)
    assert r.stdout.split("\n")[0].strip("\x00") == f"{p.name} (enforce)"
    assert "wrote" not in r.stdout and "Permission denied" in r.stderr
    assert not (target / "f").exists()
    free = _launch.run(_launch.Spec(argv=write), timeout=10)        # the same, unconfined
    assert "wrote" in free.stdout and (target / "f").exists()
    assert apparmor.current() == "unconfined"                        # the caller never moved
    p.remove()
    assert p.name not in apparmor.loaded() and not lab.present(lab.Entry("apparmor", p.name))


@live
@root
def test_a_container_and_its_exec_run_under_the_profile(own_objects, image):
    with apparmor.deny_writes(["/etc/**"]) as p:
        c = Container(["/bin/sh", "-c", "echo x > /etc/jap-test; sleep 30"], rootfs=image,
                      apparmor=p.name).start()
        try:
            assert apparmor.current(c.pid) == f"{p.name} (enforce)"
            r = c.exec(["/bin/sh", "-c", "echo x > /etc/jap-test2 || echo denied"])
            assert "denied" in r.stdout
            assert not os.path.exists(os.path.join(c.root, "etc", "jap-test2"))
            assert c.exec(["/bin/sh", "-c", "echo x > /tmp/ok && echo wrote"]).stdout.strip() == "wrote"
        finally:
            c.remove()
    assert p.name not in apparmor.loaded()


@live
@root
def test_the_registry_unloads_a_profile_and_leftovers_find_an_unregistered_one(own_objects):
    p = apparmor.deny_writes(["/nonexistent/**"]).load()
    [entry] = [e for e in lab.entries() if e.kind == "apparmor" and e.name == p.name]
    lab.remove(entry)                                   # what cleanup does with the entry
    assert p.name not in apparmor.loaded()
    stray = lab.name("aa")                              # loaded, never registered (a lost entry)
    _apparmor_parser.load(stray, apparmor.Profile(["file"], name=stray).text)
    try:
        found = [e for e in lab.leftovers() if e.kind == "apparmor" and e.name == stray]
        assert found
        lab.remove(found[0])
        assert stray not in apparmor.loaded()
    finally:
        _apparmor_parser.remove(stray)


def test_the_child_writes_exec_name_to_its_own_attr_file(tmp_path):
    # _apparmor_onexec writes through the caller's /proc fd; a tree shaped like /proc
    # shows what lands where: the LSM-specific file first, the shared one on old kernels.
    from types import SimpleNamespace

    from justaprocess import _launch_child
    for have, wanted in (("self/attr/apparmor/exec", "self/attr/apparmor/exec"),
                         ("self/attr/exec", "self/attr/exec")):
        root = tmp_path / have.replace("/", "_")
        (root / os.path.dirname(have)).mkdir(parents=True)
        (root / have).write_text("")
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _launch_child._apparmor_onexec(SimpleNamespace(proc_fd=fd, apparmor="jap-1a2b3c-aa"))
        finally:
            os.close(fd)
        assert (root / wanted).read_text() == "exec jap-1a2b3c-aa"
    empty = tmp_path / "none"
    empty.mkdir()
    fd = os.open(empty, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError):
            _launch_child._apparmor_onexec(SimpleNamespace(proc_fd=fd, apparmor="jap-1a2b3c-aa"))
    finally:
        os.close(fd)


def test_loaded_profiles_are_read_from_securityfs(tmp_path, monkeypatch):
    from justaprocess import _apparmor
    f = tmp_path / "profiles"
    f.write_text("jap-1a2b3c-aa (enforce)\n/usr/bin/man (complain)\ndocker-default (enforce)\n")
    monkeypatch.setattr(_apparmor, "PROFILES", str(f))
    assert _apparmor.loaded() == {"jap-1a2b3c-aa": "enforce", "/usr/bin/man": "complain",
                                  "docker-default": "enforce"}
    assert _apparmor.present("jap-1a2b3c-aa") and not _apparmor.present("jap-000000-aa")
