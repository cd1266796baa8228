"""The one launcher: every process the lab starts goes through here.

A :class:`Spec` says what the process is (a command to exec, or a Python
callable to run) and what it lives in: namespaces to create or to join (any of
the eight, joined by PID, by a namespace file or by an open fd), a cgroup,
uid/gid and user-namespace maps, capabilities, no_new_privs, a seccomp filter,
a root (pivot_root or chroot), cwd, env, stdio.  :func:`start` returns a
registered :class:`Handle` (with a pidfd); :func:`run` waits for its
:class:`Result`; :func:`tool` runs a short command whose output is read.

The launcher is three modules, all of it reachable as ``_launch.X``: the request
and the answer (``_launch_spec``: Spec, Result, StepFailed, the checks), the
caller's side (``_launch_run``: start, Handle, run), the children's side
(``_launch_child``: the steps).  This module adds what needs the ``cgroups``
package (``cgroup="bounded"``, ``cgroup=PID``); modules below ``cgroups`` (the
registered ``_spawn.LabProcess``, ``Cgroup.run/spawn``) call ``_launch_run``
with cgroup directories.

Process layout.  The caller (a notebook's kernel: multithreaded) never changes
its own namespaces, cgroup or capabilities.  It forks a *helper* (single
threaded: unshare(CLONE_NEWUSER) and setns(mnt) work there, unshare(2),
setns(2)) that does the steps in this order, each named in a failure::

    caller --fork--> H: cgroup, setns each joined kind, chroot into a target's root,
                        unshare time  --clone(CLONE_NEW*)--> T: maps, mounts, root, caps, exec
                     H goes back to the caller's cgroups, writes T's uid/gid maps,
                     reports T's PID and exits as T exits.

H clones a separate T only when it must: a new or joined pid namespace applies
to children only (pid_namespaces(7)), a new user namespace's maps are written
from outside it (user_namespaces(7)), and a new time namespace too applies to
children (time_namespaces(7)).  Otherwise H itself unshares and becomes T.
A single-threaded caller that joins nothing (a script, the benchmark) skips H:
it clones T straight into its new namespaces, as runc does.  A T that execs is
cloned without the interpreter's fork hooks (``_libc.clone(hooks=False)``): one
thread, and only the launcher's steps run in it before the exec.

One wire format from the children: frames of a 4-byte length and a pickled
``(kind, payload)`` on a close-on-exec pipe.  ``pid``/``ns_pid`` say where T
is; ``error`` is a failed step (step, errno, detail); ``running`` says a
callable started, ``value``/``raised`` what it returned or raised.  EOF on the
pipe means "exec'd" (or died), as subprocess's exec-error pipe does.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from . import _launch_run, _launch_spec, _registry, proc
from ._launch_child import (EXIT_EXEC, EXIT_SETUP, FLAGS, _die_with_parent, _fail, _helper,  # noqa: F401
                            _prelude, _Step, _target, reduce_capabilities, step)
from ._launch_run import Handle, _direct_ok, _flush_std  # noqa: F401
from ._launch_spec import (BOUNDED_MEMORY, BOUNDED_PIDS, JOIN_ORDER, KINDS, Bounded, Fd,  # noqa: F401
                           Result, Spec, StepFailed, Timeout, _Plan, _prepare, idmap_text,
                           join_files, kinds_of)
from .errors import BadInput, NoSuchProcess


def _cgroup_dirs(cg) -> tuple[list[str], Any]:
    """cgroup= resolved: the directories to join and, for "bounded", the Cgroup made for it
    (removed when the process is collected)."""
    from . import cgroups
    if isinstance(cg, str) and cg == "bounded" or isinstance(cg, Bounded):
        b = cg if isinstance(cg, Bounded) else Bounded()
        made = cgroups.Cgroup(_registry.name("run"), memory=b.memory, pids=b.pids).create()
        return list(made.paths), made
    if isinstance(cg, int) and not isinstance(cg, bool):
        if cg <= 0:
            raise BadInput(f"cgroup={cg}: not a valid PID")
        if not proc.exists(cg):
            raise NoSuchProcess(cg)
        dirs = []
        for place in cgroups.places_of(cg).values():
            if place.path not in dirs:
                dirs.append(place.path)
        return dirs, None
    return _launch_spec._cgroup_dirs(cg)


def start(spec: Spec, *, start_timeout: float = 10.0) -> Handle:
    """Start the process of ``spec``; return once it has exec'd (or its callable runs), or failed.

    A failed set-up step does not raise here: ``handle.error`` (and the Result's
    ``error``) is a :class:`StepFailed`; ``handle.check()`` raises it.
    """
    return _launch_run.start(spec, start_timeout=start_timeout, resolve=_cgroup_dirs)


def run(spec: Spec, input: bytes | str | None = None, timeout: float | None = 30.0,
        start_timeout: float = 10.0) -> Result:
    """start() and wait: the Result.  Past ``timeout`` the process is killed and
    :class:`Timeout` raised (a lab error saying what to do)."""
    return _launch_run.run(spec, input, timeout, start_timeout, resolve=_cgroup_dirs)


def tool(argv: Sequence[str], *, timeout: float | None = 30.0, input: bytes | str | None = None,
         env: dict[str, str] | None = None, cwd: str | None = None, cgroup=None,
         stdout: Any = "pipe", stderr: Any = "pipe", kill_group: bool = True,
         note: str = "") -> Result:
    """Run a short command whose output is read (``runc state``, ``tar``, ``ldd``,
    ``podman inspect``...): no namespaces, the caller's cgroup unless ``cgroup=``.

    The one way the package runs a tool.  A missing program is not an exception here:
    ``r.error`` is ``StepFailed(step="exec", errno=ENOENT)`` (``r.check()`` raises it);
    past ``timeout`` the command is killed and :class:`Timeout` raised.  ``kill_group=False``
    for a command that leaves a daemon behind on purpose (``runc run -d``).
    """
    spec = Spec(argv=[os.fspath(a) for a in argv], env=env, cwd=cwd, cgroup=cgroup,
                stdout=stdout, stderr=stderr, kill_group=kill_group, note=note or str(argv[0]))
    return run(spec, input=input, timeout=timeout)


def _replace(spec: Spec, **kw) -> Spec:
    from dataclasses import replace
    return replace(spec, **kw)

