"""Troubleshooting any container on the machine: one idea of a target, and the host's view of it.

Every tool of chapters 08-15 takes a *target* and resolves it once
(../TROUBLESHOOTING.md): a hand-built :class:`~justaprocess.container.Container`,
a runc container (an :class:`~justaprocess.runtimes.OCIContainer` or its id),
a podman container (where podman is installed), or a bare host PID - all
become the same :class:`Target` record: the host PID, the eight namespace
files opened as fds (so the target cannot race away between "look" and
"join": setns(2) takes an fd), its cgroup directories (v1, hybrid or v2), its
root as the host reaches it (``/proc/PID/root``, proc(5)), uid/gid maps,
capability sets, seccomp mode and no_new_privs.

:func:`inspect` is the container-aware host view that host tools lack
(``python -m justaprocess inspect PID [--json]``): which namespaces differ
from the host's, the PID chain (NSpid), root and cwd, the cgroup with limits
and use, capabilities, seccomp, listening sockets *inside* its network
namespace (sock_diag(7) through pyroute2) and its mounts.

The Jupyter kernel never joins anything itself: the socket listing runs in a
child process that joined the target's network namespace.
"""
from __future__ import annotations

import json

# The parts, one module each (each under 800 lines); this module is the one to import.
from .debug_enter import (SIDECAR_CAPS, SIDECAR_SHARE, InsideFailed, Sidecar,  # noqa: F401
                          _all_cgroup_dirs, _environ, exec_in, exec_spec, inside_cell, sidecar)
from .debug_inspect import (Call, Inspection, NsRow, Proc, Socket, Trace, _mounts,  # noqa: F401
                            _sockdiag_in, calls, host_pid_of, inspect, listening, processes,
                            strace, uid_inside)
from .debug_target import (NS_KINDS, PF_KTHREAD, PROCFS, RUNC_ROOTS, SECCOMP_MODES,  # noqa: F401
                           NotAContainer, Target, TargetError, podman_pid, runc_state, target)


# --- command line ----------------------------------------------------------------------

def _cli_inspect(args) -> int:
    insp = inspect(args.target)
    print(json.dumps(insp.asdict(), indent=2) if args.json else insp.format())
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("inspect", help="the container-aware host view of a container or PID")
    p.add_argument("target", help="a host PID, a runc container id, or a podman container name")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=_cli_inspect)


