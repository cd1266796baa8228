"""Honest errors (issue: one core): a refusal is a lab error saying what is needed, never a
bare PermissionError, a quiet None/False, or a freeze that returns without freezing."""
import json
import os

import pytest
from conftest import as_user

from test_cgroups import fake_v2  # noqa: F401 - the fake cgroup v2 tree fixture

from justaprocess import _netlink, cgroups, lab
from justaprocess.errors import BadInput, LabError, NeedsPrivilege, NotSupported

root = pytest.mark.root

PROBE = r"""
import json, sys
from justaprocess import _loop, cgroups, lab
def attempt(fn, *a, **kw):
    try:
        return ["ok", repr(fn(*a, **kw))]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
print(json.dumps({
    "delegated": attempt(cgroups.delegated, sys.argv[1]),
    "attach_loop": attempt(_loop.attach_loop, "/etc/hostname", read_only=True),
    "remove_cgroup": attempt(cgroups.remove, sys.argv[1]),
    "register": attempt(lab.register, "dir", lab.run_dir() + "/" + lab.name("x")),
}))
"""


@root
def test_unprivileged_callers_get_needs_privilege_not_a_wrong_answer(own_objects):
    """systemd marks a delegated cgroup with trusted.delegate=1; trusted.* is hidden without
    CAP_SYS_ADMIN, so delegated() as another user must not answer False (xattr(7))."""
    cg = cgroups.Cgroup().create()
    try:
        path = cg.places[cgroups.CORE].path if cgroups.CORE in cg.places else cg.path
        try:
            os.setxattr(path, "trusted.delegate", b"1")
        except OSError as exc:
            pytest.skip(f"this cgroup filesystem takes no trusted xattrs ({exc})")
        assert cgroups.delegated(path) is True
        r = as_user("-c", PROBE, path, env={"JAP_STATE_DIR": lab.state_dir()})
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        for call in ("delegated", "attach_loop", "remove_cgroup", "register"):
            kind, msg = got[call]
            assert kind == "NeedsPrivilege" and "needs" in msg and "run the lab as root" in msg, (call, got)
        assert "CAP_SYS_ADMIN" in got["delegated"][1] and "CAP_SYS_ADMIN" in got["attach_loop"][1]
        assert os.path.isdir(path)            # the refused removal removed nothing
    finally:
        cg.remove()


def test_xattr_not_set_is_none_but_refused_is_an_error(tmp_path):
    assert cgroups._xattr(str(tmp_path), "user.jap-not-set") is None
    with pytest.raises(FileNotFoundError):
        cgroups._xattr(str(tmp_path / "missing"), "user.delegate")


def test_a_freeze_that_never_completes_raises(fake_v2, monkeypatch):
    """The fake kernel takes the write to cgroup.freeze but never reports "frozen 1"."""
    monkeypatch.setenv("JAP_CGROUP_BASE", os.path.join(fake_v2.root, "system.slice/jupyter.service"))
    cg = fake_v2.cgroup().create()
    with pytest.raises(LabError, match="did not freeze within 0.2 s"):
        cg.freeze(timeout=0.2)
    fake_v2.put(cg.path, "cgroup.events", "populated 0\nfrozen 1\n")  # now it did
    cg.freeze(timeout=0.2)
    cg.remove()


def test_netlink_errors_become_lab_errors_with_a_remedy():
    import errno
    from pyroute2.netlink.exceptions import NetlinkError
    cases = {errno.EPERM: (NeedsPrivilege, "CAP_NET_ADMIN"), errno.EEXIST: (LabError, "cleanup"),
             errno.ERANGE: (BadInput, "15 characters"), errno.EOPNOTSUPP: (NotSupported, "modprobe"),
             errno.ENODEV: (LabError, "no such network interface"), errno.EBUSY: (LabError, "EBUSY")}
    for code, (kind, words) in cases.items():
        err = _netlink.translate(NetlinkError(code), "making jap-000000-br")
        assert isinstance(err, kind) and words in str(err) and "making jap-000000-br" in str(err), err
    plain = ValueError("x")
    assert _netlink.translate(plain, "x") is plain


@root
def test_a_real_netlink_refusal_is_a_lab_error():
    """An interface name over IFNAMSIZ: the kernel answers ERANGE (netdevice(7))."""
    with pytest.raises(BadInput, match="15 characters"):
        _netlink.call(lambda ip: ip.link("add", ifname="jap-000000-toolongname", kind="dummy"),
                      "making a dummy link")
