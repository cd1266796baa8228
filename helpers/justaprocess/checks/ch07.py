"""Checks of 07 · Why a DIY container is insecure.

The checks do not compare with a stored answer: they run the real breakouts
against the learner's engine steps, in a naive container of their own, and say
which still work.
"""
from __future__ import annotations

import os

from .. import insecure
from . import Verdict, missing, verdict

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
    with insecure.HostDisk(os.path.join(box.dir, "jap-check-disk.img"), "check disk") as d:
        out["mknod a disk"] = box.run(insecure.mknod_read(d.major, d.minor), **steps)
    victim, target = insecure.start_victim("chapter 07 check: the 'host' process")
    try:
        out["kill a host process"] = box.run(insecure.kill_target(target), **steps)
    finally:
        victim.stop()
    return out


def check_steps(steps) -> Verdict:
    """Exercise 1: one set of engine steps that blocks all four breakouts."""
    if (m := missing(steps=steps)):
        return m
    if not isinstance(steps, dict) or set(steps) - set(STEP_KEYS):
        return Verdict(False, "steps is a dict whose keys are among "
                       + ", ".join(STEP_KEYS) + ", e.g. dict(pid_ns=True)")
    try:
        with insecure.NaiveContainer() as box:
            results = _breakouts(box, steps)
    except Exception as exc:  # noqa: BLE001 - a verdict, never a traceback
        return Verdict(False, f"the container did not run with these steps: {exc}")
    still = [name for name, o in results.items() if o.ok]
    return verdict(not still,
                   "all four breakouts are blocked: pivot_root, a PID namespace, a read-only "
                   "/proc/sys and no CAP_MKNOD - what runc's default config does (and more)",
                   "these still work: " + ", ".join(still) + ". Which step of the chapter's "
                   "table blocks each? (drop takes capability names, e.g. drop=('CAP_MKNOD',))")


def check_proc_root(path, secret_path: str, text: str) -> Verdict:
    """Exercise 2: reach a host file through a host process's /proc/PID/root."""
    if (m := missing(path=path)):
        return m
    if not isinstance(path, str) or not path.startswith("/proc/"):
        return Verdict(False, "path is a string that starts with /proc/<PID>/root")
    if "/root/" not in path or not path.endswith(secret_path):
        return Verdict(False, "the path is /proc/<the host process's PID>/root followed by the "
                       "file's path as the host sees it")

    def attack() -> str:
        with open(path) as f:
            return f.read().strip()

    with insecure.NaiveContainer() as box:
        naive = box.run(attack)
        isolated = box.run(attack, pid_ns=True)
    if not naive.ok or naive.value != text:
        return Verdict(False, f"from inside the naive container that path gave {naive!r}: is the "
                       "PID the host process's PID (its PID as the host sees it)?")
    return verdict(not isolated.ok,
                   "the host process's /proc/PID/root is the host's /: no chroot escape needed "
                   "while the PID namespace is shared. With its own PID namespace that PID "
                   f"does not exist inside ({isolated.error})",
                   f"the path also worked with a PID namespace ({isolated!r}): unexpected - "
                   "run the cell again")
