"""Checks of 07 · Why a DIY container is insecure.

The checks do not compare with a stored answer: they run the real breakouts
against the learner's engine steps, in a naive container of their own, and say
which still work.
"""
from __future__ import annotations

import contextlib
import os

from .. import capabilities as caps
from .. import escapes, insecure
from ..errors import BadInput, LabError
from . import Rows, describe, expect_bool, expect_str, exercise, right, wrong

STEP_KEYS = ("pivot_root", "pid_ns", "ro_proc_sys", "drop")


def _breakouts(box: insecure.NaiveContainer, steps: dict) -> dict[str, insecure.Outcome]:
    """Run the chapter's four breakouts with ``steps``; every target is the lab's own."""
    out = {}
    secret = box.host_file("jap-check-secret.txt", "check secret")
    out["chroot escape"] = box.run(insecure.chroot_escape(secret), **steps)
    old = insecure.read_sysctl()
    try:
        out["write /proc/sys"] = box.run(insecure.sysctl_write(), **steps)
    finally:
        insecure.restore_sysctl(old)
    old = insecure.read_sysctl()
    try:
        # CAP_SYS_ADMIN undoes the read-only /proc/sys: a fresh procfs has a writable one
        out["write /proc/sys through a new procfs"] = box.run(insecure.sysctl_fresh_proc(), **steps)
    finally:
        insecure.restore_sysctl(old)
    with insecure.HostDisk(os.path.join(box.dir, "jap-check-disk.img"), "check disk") as d:
        out["mknod a disk"] = box.run(insecure.mknod_read(d.major, d.minor), **steps)
        # ... and the missing CAP_MKNOD: devtmpfs already holds a node for every device
        out["a disk through devtmpfs"] = box.run(insecure.devtmpfs_read(d.major, d.minor), **steps)
    victim, target = insecure.start_victim("chapter 07 check: the 'host' process")
    try:
        out["kill a host process"] = box.run(insecure.kill_target(target), **steps)
    finally:
        victim.stop()
    return out


# Each breakout that still works: (verdict kind, the idea, closer: the step's keyword).
OPEN = {
    "chroot escape": ("chroot",
                      "the chroot escape still works: a chroot only changes where / points for "
                      "path lookups. Which step really replaces the root of the mount namespace?",
                      "the chroot escape: pivot_root=True makes the rootfs the mount namespace's "
                      "root and detaches the old one (pivot_root(2))"),
    "write /proc/sys": ("sysctl",
                        "the container could still write a /proc/sys file: most sysctls are global "
                        "to the kernel. Which step makes them read-only inside?",
                        "writing /proc/sys: ro_proc_sys=True remounts /proc/sys read-only"),
    "mknod a disk": ("mknod",
                     "the container could still make a device node of a host disk: root inside "
                     "still holds the capability that allows mknod(2) of devices",
                     "mknod a disk: drop the capability that allows it - "
                     "drop=('CAP_MKNOD',), a tuple (mind the comma)"),
    "write /proc/sys through a new procfs": (
        "sys-admin",
        "with CAP_SYS_ADMIN the container mounted a fresh procfs, whose /proc/sys is writable: "
        "a read-only bind mount only holds while the container cannot mount",
        "drop CAP_SYS_ADMIN too (mount(2) needs it; capabilities(7) calls it 'the new root')"),
    "a disk through devtmpfs": (
        "sys-admin",
        "with CAP_SYS_ADMIN the container mounted devtmpfs, which already holds a node for every "
        "device: no mknod(2) needed, so dropping CAP_MKNOD alone does not keep the disk out",
        "drop CAP_SYS_ADMIN too: without it nothing can be mounted inside"),
    "kill a host process": ("kill",
                            "the container could still see and kill a host process: which "
                            "namespace decides which processes it can see?",
                            "killing a host process: pid_ns=True gives it its own PID namespace "
                            "(pid_namespaces(7))"),
}


STEP_OF = {"chroot escape": "pivot_root=True", "write /proc/sys": "ro_proc_sys=True",
           "mknod a disk": "CAP_MKNOD in drop", "kill a host process": "pid_ns=True",
           "write /proc/sys through a new procfs": "CAP_SYS_ADMIN in drop",
           "a disk through devtmpfs": "CAP_SYS_ADMIN in drop"}

# Capabilities that open the host without any breakout above, and that the check does not
# try (it would load code into the host's kernel or poke its hardware): a right answer
# drops them too, as runc's default set (`runc spec`) and Docker's do (capabilities(7)).
MUST_DROP = {
    "CAP_SYS_MODULE": ("sys-module", "init_module(2) loads code into the host's kernel: whoever "
                       "holds CAP_SYS_MODULE owns the machine, whatever the namespaces"),
    "CAP_SYS_RAWIO": ("sys-rawio", "CAP_SYS_RAWIO allows raw I/O: iopl(2)/ioperm(2) ports and "
                      "/dev/mem or /dev/port, the host's hardware and memory below every namespace"),
}


def _did(steps: dict, dropped: list[str]) -> str:
    """What the learner's steps did, in words (for the success message)."""
    parts = []
    if steps.get("pivot_root"):
        parts.append("pivot_root instead of chroot")
    if steps.get("pid_ns"):
        parts.append("an own PID namespace")
    if steps.get("ro_proc_sys"):
        parts.append("a read-only /proc/sys")
    if dropped:
        parts.append("dropped " + ", ".join(dropped))
    return "; ".join(parts)


@exercise(1, title="a safer engine")
def check_steps(steps):
    """Exercise 1: one set of engine steps that blocks every breakout of the chapter - also
    those CAP_SYS_ADMIN reopens - and drops CAP_SYS_MODULE and CAP_SYS_RAWIO."""
    if not isinstance(steps, dict):
        raise wrong("type", f"`steps` should be a dict of the steps' keywords, e.g. "
                            f"dict(pid_ns=True); it is {describe(steps)}")
    unknown = [k for k in steps if k not in STEP_KEYS]
    if unknown:
        return wrong("unknown-step", f"{unknown[0]!r} is not a step of this exercise: the keys are "
                                     f"the keywords of the chapter's first table: {', '.join(STEP_KEYS)}")
    for k in ("pivot_root", "pid_ns", "ro_proc_sys"):
        if k in steps:
            expect_bool(steps[k], f"steps[{k!r}]")
    drop = steps.get("drop", ())
    if isinstance(drop, str):
        return wrong("drop-string",
                     f"drop should be a tuple of capability names; it is the string {drop!r}, "
                     "which Python reads as a sequence of letters: put it in a tuple, "
                     f"({drop!r},) - the comma makes the tuple")
    if not isinstance(drop, (list, tuple, set, frozenset)) or \
            not all(isinstance(c, str) for c in drop):
        raise wrong("type", f"drop should be a tuple of capability names like ('CAP_MKNOD',); it "
                            f"is {describe(drop)}")
    for c in drop:
        try:
            caps.cap_number(c)
        except BadInput:
            return wrong("unknown-cap", f"{c!r} is not a capability: names look like 'CAP_MKNOD' "
                                        "(capabilities(7) lists them)")
    dropped = sorted({caps.cap_name(caps.cap_number(c)).upper() for c in drop})
    try:
        with insecure.NaiveContainer() as box:
            results = _breakouts(box, dict(steps))
    except LabError as exc:
        return wrong("lab", f"the container did not run with these steps: {exc}")
    still = [name for name, o in results.items() if o.ok]
    if not still:
        kept = [c for c in MUST_DROP if c not in dropped]
        if kept:
            kind, why = MUST_DROP[kept[0]]
            return wrong(kind, f"the {len(results)} breakouts tried are blocked, but the container "
                               f"still holds {', '.join(kept)}: " + why,
                         f"add {', '.join(map(repr, kept))} to drop")
        return right(f"all {len(results)} breakouts are blocked by your steps: "
                     f"{_did(steps, dropped)}")
    kinds = {OPEN[n][0] for n in still}
    if len(still) == 1 or len(kinds) == 1:
        kind, idea, closer = OPEN[still[0]]
        return wrong(kind, idea, closer)
    more = f" ({len(still) - 1} more still work)" if len(still) > 1 else ""
    return wrong("several-open",
                 f"these still work: {', '.join(still)}. Which step of the chapter's table "
                 "blocks each?",
                 f"first {OPEN[still[0]][1][0].lower()}{OPEN[still[0]][1][1:]}{more}",
                 "the steps: " + ", ".join(STEP_OF[n] for n in still))


@exercise(2, context=("secret_path", "text"), title="no escape needed")
def check_proc_root(path, secret_path: str, text: str):
    """Exercise 2: reach a host file through a host process's /proc/PID/root."""
    p = expect_str(path, "path", "a string: a path that starts with /proc/<PID>/root")
    if p == secret_path:
        return wrong("host-path",
                     "that is the file's path as the host sees it: inside the container, / is "
                     "the container's own root, so that path leads nowhere",
                     "go through a host process: /proc/<its PID>/root is *its* root directory "
                     "(proc(5)), followed by the file's host path")
    if not p.startswith("/proc/"):
        return wrong("not-proc",
                     "the way out is through /proc: every process's /proc/PID/root is a door to "
                     "its root directory (proc(5))",
                     "the path is /proc/<the host process's PID>/root followed by the file's "
                     "host path")
    if p.startswith(("/proc/self/", "/proc/1/")):
        who = "/proc/self is the process that opens the path" if p.startswith("/proc/self/") \
            else "PID 1 inside is the container's first process"
        return wrong("own-root",
                     f"{who}: its root is the container's root. Whose root is the host's / ?",
                     "use the PID of the host process `neighbour` (neighbour.pid, its PID as the "
                     "host numbers it)")
    if "/root/" not in p or not p.endswith(secret_path):
        return wrong("no-file",
                     "the path is /proc/<the host process's PID>/root followed by the file's path "
                     "as the host sees it",
                     f"/proc/<PID>/root + {secret_path}")

    def attack() -> str:
        with open(p) as f:
            return f.read().strip()

    with insecure.NaiveContainer() as box:
        naive = box.run(attack)
        isolated = box.run(attack, pid_ns=True)
    if not naive.ok or naive.value != text:
        return wrong("wrong-pid",
                     f"from inside the naive container that path gave {naive!r}: is the PID "
                     "the host process's?",
                     "use neighbour.pid: the PID of the host process, as the host numbers it")
    if isolated.ok:
        return wrong("lab", f"the path also worked with a PID namespace ({isolated!r}): "
                            "unexpected - run the cell again")
    return right("the host process's /proc/PID/root is the host's /: no chroot escape needed "
                 "while the PID namespace is shared. With its own PID namespace that PID "
                 f"does not exist inside ({isolated.error})")


def _bools(answer, name: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(answer, dict):
        raise wrong("type", f"`{name}` should be a dict like dict({keys[0]}=True); it is "
                            f"{describe(answer)}")
    unknown = [k for k in answer if k not in keys]
    if unknown:
        raise wrong("unknown-option", f"{unknown[0]!r} is not one of the keywords here: "
                                      f"{', '.join(keys)}")
    for k, v in answer.items():
        expect_bool(v, f"{name}[{k!r}]")
    return answer


@exercise(3, title="close the leak")
def check_leak(fixes):
    """Exercise 3: the runtime fixes that block both forms of the leaked-fd escape."""
    fixes = _bools(fixes, "fixes", ("cloexec", "verify_cwd"))
    try:
        with insecure.NaiveContainer() as box:
            box.host_file("jap-check-secret.txt", "leaked")
            _, by_fd = escapes.leaky_run(box.root, box.dir, "cat /proc/self/fd/$FD/jap-check-secret.txt",
                                         **fixes)
            _, by_cwd = escapes.leaky_run(box.root, box.dir, "cat jap-check-secret.txt",
                                          cwd_trick=True, **fixes)
    except LabError as exc:
        return wrong("lab", f"the container did not run: {exc}")
    fd_open = by_fd.returncode == 0 and by_fd.stdout.strip() == "leaked"
    cwd_open = by_cwd.returncode == 0 and by_cwd.stdout.strip() == "leaked"
    if fd_open and cwd_open:
        return wrong("both-open", "both still read the host's file: the fd survives execve, and "
                                  "the cwd is set through it. What does the kernel do with an fd "
                                  "at execve(2)?",
                     "one fix per form: cloexec=True (O_CLOEXEC: closed at execve), and "
                     "verify_cwd=True (getcwd(3) after chdir)")
    if cwd_open:
        return wrong("cwd-open", "the program no longer gets the fd, but its working directory "
                                 "was set through /proc/self/fd/N *before* execve - while the fd "
                                 "was still open. What can the runtime check after chdir?",
                     "verify_cwd=True: a cwd outside the root makes getcwd(3) fail "
                     "('(unreachable)', getcwd(2)); runc >= 1.1.12 refuses to start then")
    if fd_open:
        return wrong("fd-open", "the cwd check refuses the /proc/self/fd cwd, but the program "
                                "still gets the open fd of a host folder through execve",
                     "cloexec=True: O_CLOEXEC closes the fd at execve(2) (open(2))")
    return right("the inherited fd is closed at execve (O_CLOEXEC) and a cwd outside the root "
                 f"is refused ({by_cwd.error.step if by_cwd.error else 'refused'}): both forms of "
                 "CVE-2024-21626 are blocked, as runc 1.1.12 does")


ROOTLESS_KEYS = ("pivot_root", "pid_ns", "ro_proc_sys", "user_ns", "drop")


@exercise(4, title="root without the host's power")
def check_rootless(steps):
    """Exercise 4: steps that block every breakout while keeping every capability."""
    if not isinstance(steps, dict):
        raise wrong("type", f"`steps` should be a dict of the steps' keywords, e.g. "
                            f"dict(user_ns=True); it is {describe(steps)}")
    unknown = [k for k in steps if k not in ROOTLESS_KEYS]
    if unknown:
        return wrong("unknown-step", f"{unknown[0]!r} is not a keyword of insecure.run: "
                                     f"{', '.join(ROOTLESS_KEYS)}")
    if steps.get("drop"):
        return wrong("drop", "this exercise keeps every capability: leave `drop` out. The point "
                             "is what the capabilities are worth, not how many are kept",
                     "capabilities are over the user namespace that owns a resource "
                     "(user_namespaces(7)): which keyword gives the container one of its own?")
    for k in ROOTLESS_KEYS[:-1]:
        if k in steps:
            expect_bool(steps[k], f"steps[{k!r}]")
    try:
        with insecure.NaiveContainer() as box:
            results = _breakouts(box, dict(steps))
            world = box.host_file("jap-check-public.txt", "public", mode=0o644)
            results["chroot escape to a world-readable file"] = box.run(
                insecure.chroot_escape(world), **steps)
    except LabError as exc:
        return wrong("lab", f"the container did not run with these steps: {exc}")
    still = [name for name, o in results.items() if o.ok]
    if not steps.get("user_ns") and len(still) > 1:
        return wrong("no-user-ns", f"with every capability, {len(still)} breakouts still work "
                                   f"({', '.join(still[:3])}...): uid 0 inside is uid 0 on the "
                                   "host. Which namespace changes that?",
                     "user_ns=True: root inside is uid 100000 outside, and its capabilities "
                     "count only over what its user namespace owns")
    if still == ["chroot escape to a world-readable file"]:
        return wrong("chroot", "everything is blocked but the chroot climb: the user namespace "
                               "stopped root's 0600 secret, yet a file every user may read is "
                               "read from the host's / it climbed to",
                     "the user namespace does not replace pivot_root=True (pivot_root(2))")
    if still:
        return wrong("several-open", f"these still work: {', '.join(still)}",
                     "user_ns=True for the capabilities, pivot_root=True for the root")
    kept = "every capability kept (in its own user namespace)"
    return right(f"all {len(results)} breakouts are blocked with {kept}: "
                 + "; ".join(k for k in ("user_ns", "pivot_root", "pid_ns", "ro_proc_sys")
                             if steps.get(k)))


# --- the table of right and wrong answers (tests/test_exercises.py) ---------------------

SAFE = dict(pivot_root=True, pid_ns=True, ro_proc_sys=True,
            drop=("CAP_MKNOD", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO"))


def _steps(**change):
    return lambda c: dict(steps={k: v for k, v in {**SAFE, **change}.items() if v is not None})


@contextlib.contextmanager
def _with_neighbour():
    with insecure.NaiveContainer() as box:
        neighbour, _ = insecure.start_victim("chapter 07 table test: a host process")
        try:
            secret = box.host_file("jap-secret2.txt", "second secret")
            yield {"pid": neighbour.pid, "secret_path": secret, "text": "second secret"}
        finally:
            neighbour.stop()


TABLE = {
    1: Rows(right=_steps(),
            wrong={
                "type": lambda c: dict(steps=["pivot_root", "pid_ns"]),
                "unknown-step": _steps(user_ns=True),
                "drop-string": _steps(drop="CAP_MKNOD"),
                "unknown-cap": _steps(drop=("CAP_MAKENODE",)),
                "mknod": _steps(drop=("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO")),
                "sys-admin": _steps(drop=("CAP_MKNOD", "CAP_SYS_MODULE", "CAP_SYS_RAWIO")),
                "sys-module": _steps(drop=("CAP_MKNOD", "CAP_SYS_ADMIN", "CAP_SYS_RAWIO")),
                "sys-rawio": _steps(drop=("cap_mknod", "cap_sys_admin", "cap_sys_module")),
                "sysctl": _steps(ro_proc_sys=None),
                "chroot": _steps(pivot_root=None),
                "kill": _steps(pid_ns=False),
                "several-open": lambda c: dict(steps={}),
            }),
    2: Rows(setup=_with_neighbour,
            right=lambda c: dict(path=f"/proc/{c['pid']}/root{c['secret_path']}"),
            wrong={
                "type": lambda c: dict(path=c["pid"]),
                "host-path": lambda c: dict(path=c["secret_path"]),
                "not-proc": lambda c: dict(path=f"/{c['pid']}/root{c['secret_path']}"),
                "own-root": lambda c: dict(path=f"/proc/self/root{c['secret_path']}"),
                "no-file": lambda c: dict(path=f"/proc/{c['pid']}/root"),
                "wrong-pid": lambda c: dict(path=f"/proc/{c['pid'] + 100000}/root{c['secret_path']}"),
            }),
    3: Rows(right=lambda c: dict(fixes=dict(cloexec=True, verify_cwd=True)),
            wrong={
                "type": lambda c: dict(fixes=["cloexec"]),
                "unknown-option": lambda c: dict(fixes=dict(close_fds=True)),
                "both-open": lambda c: dict(fixes={}),
                "cwd-open": lambda c: dict(fixes=dict(cloexec=True)),
                "fd-open": lambda c: dict(fixes=dict(verify_cwd=True, cloexec=False)),
            }),
    4: Rows(right=lambda c: dict(steps=dict(user_ns=True, pivot_root=True)),
            wrong={
                "type": lambda c: dict(steps="user_ns"),
                "unknown-step": lambda c: dict(steps=dict(userns=True)),
                "drop": lambda c: dict(steps=dict(user_ns=True, pivot_root=True,
                                                  drop=("CAP_SYS_ADMIN",))),
                "no-user-ns": lambda c: dict(steps=dict(pivot_root=True, pid_ns=True)),
                "chroot": lambda c: dict(steps=dict(user_ns=True, pid_ns=True)),
            }),
}
