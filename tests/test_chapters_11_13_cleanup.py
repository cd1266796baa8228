"""Chapters 11-13 leave nothing behind after a kernel killed
in the middle of one (a debug container and its process, a service with a published port,
a root made for a demo, a container with a config volume)."""
import os

import pytest

from conftest import facts_of_a_killed_kernel, leftovers_of, start_times
from justaprocess import lab

pytestmark = pytest.mark.root


def test_a_kernel_killed_mid_chapter_leaves_nothing_after_stale_cleanup():
    code = (
        "%load_ext justaprocess\n"
        "import os\n"
        "from justaprocess import debugcontainer as D, practices, remote\n"
        "from justaprocess.container import Container, Volume\n"
        "svc = remote.service(debug='public')\n"
        "pub = remote.publish(svc.address, remote.DEBUG_PORT)\n"
        "dc = D.debug_container(svc.container)\n"
        "h = dc.start(['sleep', '600'], stdout='null', stderr='null')\n"
        "cfg = practices.make_root(suffix='cfg', dirs=(), text={'app.conf': 'GREETING=x\\n'})\n"
        "app = Container(['/bin/sleep', '600'], volumes=[Volume(cfg.path, '/config', True)]).start()\n"
        "print('FACTS', os.getpid(), svc.pid, h.pid, app.pid, pub.port, svc.container.dir, dc.root,\n"
        "      cfg.path, app.dir, ' '.join(dc.cgroup.paths + svc.container.cgroups + app.cgroups))\n"
    )
    facts, starts = facts_of_a_killed_kernel(code, 120, lambda f: start_times(f[1:4]))
    kernel, port, dirs, cgs = int(facts[0]), int(facts[4]), facts[5:9], facts[9:]
    assert leftovers_of(kernel), "the killed kernel's objects should still be registered before cleanup"
    lab.cleanup(owner=kernel)  # what the next setup cell (stale cleanup) does for this dead kernel
    assert not leftovers_of(kernel)
    for p, start in starts.items():
        assert not lab._alive(p, start), f"process {p} survived"
    for d in dirs + cgs:
        assert not os.path.exists(d), f"{d} is still there"
    from justaprocess import remote
    with pytest.raises(remote.Unreachable):   # the forwarder was threads of the kernel
        remote.request("127.0.0.1", port, "/cgi-bin/env")
