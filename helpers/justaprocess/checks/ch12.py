"""Checks of 12 · Remote troubleshooting.

Each check asks the live service: the kernel's view of its PID 1 (/proc/PID/fd,
its start time), the level file in its root, the secret in its environment.
"""
from __future__ import annotations

import contextlib
import os

from .. import proc
from . import Rows, describe, expect_int, expect_str, exercise, right, run_first, wrong


def _need_running(svc) -> None:
    c = getattr(svc, "container", None)
    if c is None or not c.running():
        raise run_first("the cells of 'A service with a control API' (the service is not running)")


# --- exercise 1: a number only the API was asked for ------------------------------------

@exercise(1, context=("svc",), title="ask the API, not the host")
def check_fd_count(fd_count, svc):
    if isinstance(fd_count, (list, tuple)):
        raise wrong("list", f"`fd_count` should be a number; it is {describe(fd_count)}: "
                            "len(...) of that list is the count")
    n = expect_int(fd_count, "fd_count", "an int (how many file descriptors)")
    _need_running(svc)
    truth = len(os.listdir(f"/proc/{svc.pid}/fd"))
    if n != truth:
        return wrong("other",
                     "not the number PID 1 has open: ask svc.api('state', token=svc.token) and "
                     "count the entries of its .data['fds']",
                     "len(svc.api('state', token=svc.token).data['fds']) - the state endpoint lists "
                     "every entry of /proc/1/fd inside the container")
    return right("the same number the host sees in /proc/HOSTPID/fd: the API read /proc/1/fd "
                 "inside the container, and PID 1 there is the service")


# --- exercise 2: control at run time -----------------------------------------------------

@exercise(2, context=("svc", "started"), title="no restart")
def check_warn(reply, svc, started):
    from ..remote import Response
    if not isinstance(reply, Response):
        raise wrong("type", f"`reply` should be what svc.api(...) returned (a Response); it is "
                            f"{describe(reply)}")
    _need_running(svc)
    if reply.status == 401:
        return wrong("unauthorized", "401 Unauthorized: the API wants the token - svc.api(..., "
                                     "token=svc.token, ...)")
    if reply.status in (400, 405):
        return wrong("bad-request",
                     f"{reply.status}: the loglevel endpoint takes a POST with the level as data",
                     f"{reply.status}: svc.api('loglevel', token=svc.token, data={{'level': 'warn'}})")
    with open(f"/proc/{svc.pid}/root/run/app/level") as f:
        level = f.read().strip()
    if proc.start_time(svc.pid) != started:
        return wrong("restarted", "PID 1 is not the process it was: the level must change "
                                  "without a restart")
    if level != "warn":
        return wrong("wrong-level", f"the service logs at {level!r} now; the exercise asks for 'warn'")
    return right("the level is 'warn' and PID 1 is the same process (same start time): "
                 "changed at run time by a signal, no restart")


# --- exercise 3: what a published, unprotected endpoint gives away -----------------------

@exercise(3, context=("secret",), title="the published port")
def check_leak(leaked, secret):
    value = expect_str(leaked, "leaked", "a string (the value of DB_PASSWORD)").strip()
    if value == f"DB_PASSWORD={secret}":
        return wrong("with-name", "only the value: the part after 'DB_PASSWORD='")
    if value != secret:
        return wrong("other",
                     "not the password: request /cgi-bin/env through the published port "
                     "(remote.request('127.0.0.1', pub.port, ...)) and read its body",
                     "the body has one VAR=value per line: take the line that starts with "
                     "'DB_PASSWORD=' and the text after '='")
    return right("anybody who reaches the published port reads it - no token, no access to "
                 "the container needed")


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

@contextlib.contextmanager
def _service():
    from .. import remote
    with remote.service() as svc:
        yield {"svc": svc, "started": proc.start_time(svc.pid)}


def _fds(c) -> int:
    return len(os.listdir(f"/proc/{c['svc'].pid}/fd"))


def _level(c, level, **kw):
    return dict(reply=c["svc"].api("loglevel", data={"level": level}, **kw))


SECRET = "correct-horse-battery"

TABLE = {
    1: Rows(setup=_service,
            right=lambda c: dict(fd_count=len(c["svc"].api("state", token=c["svc"].token).data["fds"])),
            wrong={
                "type": lambda c: dict(fd_count=str(_fds(c))),
                "list": lambda c: dict(fd_count=c["svc"].api("state", token=c["svc"].token).data["fds"]),
                "other": lambda c: dict(fd_count=_fds(c) + 1),
            }),
    2: Rows(setup=_service,
            right=lambda c: _level(c, "warn", token=c["svc"].token),
            wrong={
                "type": lambda c: dict(reply="warn"),
                "unauthorized": lambda c: _level(c, "warn"),
                "bad-request": lambda c: _level(c, "warning", token=c["svc"].token),
                "wrong-level": lambda c: _level(c, "error", token=c["svc"].token),
            }),
    3: Rows(setup=lambda: contextlib.nullcontext({"secret": SECRET}),
            right=lambda c: dict(leaked=SECRET),
            wrong={
                "type": lambda c: dict(leaked=SECRET.encode()),
                "with-name": lambda c: dict(leaked=f"DB_PASSWORD={SECRET}"),
                "other": lambda c: dict(leaked="hunter2"),
            }),
}
