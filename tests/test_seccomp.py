"""_seccomp: Docker's allowlist built with libseccomp, loaded for real; what a denylist misses.

Real effects only: each call is made in a child under the filter and its errno read back.
"""
import errno

import pytest

from justaprocess import container, proc, runtimes
from justaprocess import seccomp as _seccomp
from justaprocess.errors import BadInput

root = pytest.mark.root


def test_the_allowlist_is_a_bpf_program_with_an_errno_default():
    prog = _seccomp.allowlist()
    assert len(prog) % 8 == 0 and len(prog) // 8 > 100          # struct sock_filter, 8 bytes each
    # its return instructions (BPF_RET|BPF_K = 6): allow, the default SECCOMP_RET_ERRNO|EPERM,
    # ENOSYS for clone3, and a kill for a foreign architecture
    rets = {int.from_bytes(prog[i + 4:i + 8], "little") for i in range(0, len(prog), 8)
            if int.from_bytes(prog[i:i + 2], "little") == 6}
    assert {_seccomp.SCMP_ACT_ALLOW, _seccomp.SCMP_ACT_ERRNO(errno.EPERM),
            _seccomp.SCMP_ACT_ERRNO(errno.ENOSYS)} <= rets
    assert "mount" not in _seccomp.DOCKER_ALLOW and "unshare" not in _seccomp.DOCKER_ALLOW
    assert {"read", "write", "execve", "arch_prctl"} <= set(_seccomp.DOCKER_ALLOW)


@root
def test_a_denylist_misses_what_it_does_not_name_the_allowlist_does_not(own_objects):
    none = _seccomp.attempt(None)
    assert none == {"fsopen": "allowed", "io_uring_setup": "allowed", "unshare": "allowed"}
    deny = _seccomp.attempt(list(runtimes.SECCOMP_DENIED))
    assert deny == {"fsopen": "allowed", "io_uring_setup": "allowed", "unshare": "EPERM"}
    allow = _seccomp.attempt(_seccomp.allowlist())
    assert allow == {"fsopen": "EPERM", "io_uring_setup": "EPERM", "unshare": "EPERM"}


@root
def test_the_hand_built_engine_loads_it_and_programs_still_run(own_objects, image):
    with container.Container(["sleep", "30"], rootfs=image, seccomp=True) as c:
        c.create(); c.start()
        status = proc.status(c.pid)
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
        r = c.exec(["sh", "-c", "echo ok; unshare -U id -u"])
        assert r.stdout.startswith("ok") and r.returncode != 0 and "not permitted" in r.stderr
    with container.Container(["sleep", "30"], rootfs=image) as plain:
        plain.create(); plain.start()
        assert proc.status(plain.pid)["Seccomp"] == "0"


def test_bad_input_says_what_to_do():
    with pytest.raises(BadInput, match="system call names"):
        _seccomp.allowlist("read")
    with pytest.raises(BadInput, match="errno"):
        _seccomp.allowlist(default="EWHAT")
    with pytest.raises(BadInput, match="True"):
        container.Container(["true"], seccomp="default")
    with pytest.raises(BadInput, match="no harmless probe"):
        _seccomp.attempt(None, calls=("reboot",))
