"""capabilities, deeper: securebits (prctl(2) PR_SET_SECUREBITS) and the rootid of
namespaced file capabilities (revision 3 of security.capability), with real effects."""
import os
import struct
import sys

import pytest

from justaprocess import _libc, capabilities as caps
from justaprocess.errors import BadInput

root = pytest.mark.root
CHOWN = [sys.executable, "-c", "import os; os.fchown(os.memfd_create('jap'), 65534, -1); print('chown ok')"]
BIND = ["-c", "import socket; socket.socket().bind(('127.0.0.1', 80)); print('bound port 80')"]


def test_securebits_names_and_masks():
    assert caps.securebits_names(0) == ()
    assert caps.securebits_names(0b11) == ("noroot", "noroot_locked")
    assert caps.securebits_mask(["keep_caps"]) == 1 << 4
    assert caps.securebits_names(caps.securebits_mask(["no_cap_ambient_raise_locked"])) == \
        ("no_cap_ambient_raise_locked",)
    with pytest.raises(BadInput, match="noroot"):
        caps.securebits_mask(["nosuchbit"])


@root
def test_noroot_uid0_gets_nothing_back_at_execve(own_objects):
    def noroot_then_exec():
        before = _libc.prctl(_libc.PR_GET_SECUREBITS)
        _libc.prctl(_libc.PR_SET_SECUREBITS, caps.securebits_mask(["noroot", "noroot_locked"]))
        print(before, _libc.prctl(_libc.PR_GET_SECUREBITS), flush=True)
        os.execv(sys.executable, CHOWN)

    r = caps.run(noroot_then_exec)
    assert r.stdout.split() == ["0", "3"]
    assert r.uid == 0 and r.sets.effective == () and r.sets.permitted == ()
    assert "cap_chown" in r.sets.bounding                  # the ceiling stayed; root's grant went
    assert "Operation not permitted" in r.stderr
    plain = caps.run(CHOWN)                                 # without it, uid 0 execs with all
    assert plain.stdout.strip() == "chown ok"


@root
def test_securebits_need_cap_setpcap_and_locked_ones_stay(own_objects):
    r = caps.run(lambda: _libc.prctl(_libc.PR_SET_SECUREBITS, 1), drop=["cap_setpcap"], bounding=False)
    assert r.errno_name == "EPERM"

    def unlock():
        _libc.prctl(_libc.PR_SET_SECUREBITS, 0b11)
        _libc.prctl(_libc.PR_SET_SECUREBITS, 0)

    assert caps.run(unlock).errno_name == "EPERM"


@root
def test_setcap_in_a_user_namespace_stores_the_rootid(own_objects):
    copy = caps.copy_binary(sys.executable)
    fc = caps.setcap_in_userns(copy.path, ["cap_net_bind_service"], root_uid=100000)
    raw = os.getxattr(copy.path, caps.XATTR)
    magic, rootid = struct.unpack_from("<I", raw)[0], struct.unpack_from("<I", raw, 20)[0]
    assert len(raw) == 24 and magic == caps.VFS_CAP_REVISION_3 | caps.VFS_CAP_FLAGS_EFFECTIVE
    assert rootid == 100000 and fc.rootid == 100000 and fc.permitted == ("cap_net_bind_service",)
    # On the host the xattr grants nothing: 100000 is not root here ...
    host = caps.run([copy.path, *BIND], uid=65534, gid=65534, keep=[], bounding=False, unshare="net")
    assert "Permission denied" in host.stderr and host.sets.effective == ()
    # ... in a user namespace whose root is host uid 100000, it does, to a non-root uid.
    status = "; print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])"
    inside = caps.run([copy.path, BIND[0], BIND[1] + status], uid=1000, gid=1000, ambient=False,
                      unshare="user,net", uid_map="0 100000 65536")
    said = inside.stdout.splitlines()
    assert said[0] == "bound port 80"
    assert caps.decode(int(said[1].split()[1], 16)) == ("cap_net_bind_service",)
    caps.remove_copy(copy)
    assert not os.path.exists(copy.path)


def test_setcap_in_userns_only_on_lab_copies():
    with pytest.raises(BadInput, match="lab-made copies"):
        caps.setcap_in_userns(sys.executable, ["cap_net_bind_service"])
