"""overlay: one lower directory shared read-only, one upper directory per container.

Real effects only: files written and deleted inside, read back from the host's side of
each layer; the shared lower directory checked untouched; nothing left after remove().
"""
import os
import stat

import pytest

from justaprocess import overlay, proc
from justaprocess.errors import BadInput

pytestmark = pytest.mark.root


def test_two_containers_share_the_lower_layer_and_write_their_own(own_objects, image):
    with overlay.Layers(image) as layers:
        a = layers.run("a", ["sh", "-c", "echo by a > /etc/jap-note && rm /bin/ls && cat /etc/jap-note"])
        assert a.returncode == 0 and a.stdout == "by a\n"
        b = layers.run("b", ["sh", "-c", "cat /etc/jap-note; test -e /bin/ls"])
        assert b.returncode == 0 and "can't open" in b.stderr        # b never sees a's file
        with open(os.path.join(layers.upper("a"), "etc/jap-note")) as f:
            assert f.read() == "by a\n"                               # copied up into a's layer
        wh = os.lstat(os.path.join(layers.upper("a"), "bin/ls"))        # a whiteout: char 0:0
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
        assert not any(files for _, _, files in os.walk(layers.upper("b")))
        assert os.path.exists(os.path.join(image.path, "bin/ls"))
        assert not os.path.exists(os.path.join(image.path, "etc/jap-note"))
        # the overlay lived in each container's mount namespace only
        assert not any(m.fstype == "overlay" and layers.dir in m.target for m in proc.mountinfo())
        folder = layers.dir
    assert not os.path.exists(folder)


def test_bad_input_says_what_to_do(own_objects, tmp_path):
    with pytest.raises(BadInput, match="root filesystem"):
        overlay.Layers(str(tmp_path)).create()
    with pytest.raises(BadInput, match="create"):
        overlay.Layers().run("a", ["true"])
    with overlay.Layers() as layers:
        with pytest.raises(BadInput, match="layer name"):
            layers.run("../x", ["true"])
        with pytest.raises(BadInput, match="argv"):
            layers.run("a", "ls /")
