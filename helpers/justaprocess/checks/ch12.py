"""Checks of 12 · Remote troubleshooting.

Each check asks the live service: the kernel's view of its PID 1 (/proc/PID/fd,
its start time), the level file in its root, the secret in its environment.
An answer of the wrong type gets a verdict saying what type is wanted.
"""
from __future__ import annotations

import os

from .. import proc
from . import Verdict, missing, verdict


def _alive(svc) -> Verdict | None:
    c = getattr(svc, "container", None)
    if c is None or not c.running():
        return Verdict(False, "the service is not running: run the cells of the section "
                              "'A service with a control API' again, then this exercise")
    return None


def check_fd_count(fd_count, svc) -> Verdict:
    """Exercise 1: how many file descriptors PID 1 has open, asked through the API."""
    if (m := missing(fd_count=fd_count)):
        return m
    if isinstance(fd_count, bool) or not isinstance(fd_count, int):
        return Verdict(False, f"give a whole number (an int), not {type(fd_count).__name__}: "
                              "len(...) of the 'fds' list in the state endpoint's answer")
    if (m := _alive(svc)):
        return m
    truth = len(os.listdir(f"/proc/{svc.pid}/fd"))
    return verdict(fd_count == truth,
                   "the same number the host sees in /proc/HOSTPID/fd: the API read "
                   "/proc/1/fd inside the container, and PID 1 there is the service",
                   "ask svc.api('state', token=svc.token) and count the entries of .data['fds']")


def check_warn(reply, svc, started: int) -> Verdict:
    """Exercise 2: the log level set to 'warn' through the API, without a restart."""
    if (m := missing(reply=reply)):
        return m
    from ..remote import Response
    if not isinstance(reply, Response):
        return Verdict(False, f"store what svc.api(...) returned (a Response), not "
                              f"{type(reply).__name__}")
    if (m := _alive(svc)):
        return m
    if reply.status == 401:
        return Verdict(False, "401: the API refused the request - pass token=svc.token")
    if reply.status in (400, 405):
        return Verdict(False, f"{reply.status}: POST the new level as data={{'level': 'warn'}}")
    with open(f"/proc/{svc.pid}/root/run/app/level") as f:
        level = f.read().strip()
    same = proc.start_time(svc.pid) == started
    return verdict(reply.status == 200 and level == "warn" and same,
                   "the level is 'warn' and PID 1 is the same process (same start time): "
                   "changed at run time, no restart",
                   f"the service's level is {level!r}" + ("" if same else
                   " and PID 1 was restarted") + ": svc.api('loglevel', token=svc.token, "
                   "data={'level': 'warn'})")


def check_leak(leaked, secret: str) -> Verdict:
    """Exercise 3: the secret the unprotected, published endpoint gives away."""
    if (m := missing(leaked=leaked)):
        return m
    if not isinstance(leaked, str):
        return Verdict(False, f"give the value as a string, not {type(leaked).__name__}")
    return verdict(leaked.strip() == secret,
                   "anybody who reaches the published port reads it - no token, no "
                   "container access needed",
                   "request /cgi-bin/env through the published port (127.0.0.1, "
                   "pub.port) and take the value after DB_PASSWORD=")
