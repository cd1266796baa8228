"""Control groups, v1 and v2 behind one API (cgroups(7), Documentation/admin-guide/cgroup-v2.rst).

``from justaprocess import cgroups`` gives all of it as ``cgroups.X``; the
modules tell the story:

==============  ===============================================================
``tree``        the machine's layout (v1, hybrid, v2), hierarchies, a process's
                cgroups, where the lab's cgroups go (its base) and delegation
``limits``      limits in human units, checked before anything is made
``stats``       limits and usage in one reading, whichever version's files
``group``       :class:`Cgroup`, a lab cgroup: create, run inside, read, remove
``cli``         ``python -m justaprocess cgroup PID``
``files``       the cgroup filesystem (the unit tests' fake tree swaps it)
==============  ===============================================================

The lab's block device for the io controller is :class:`LoopDevice` (module
``justaprocess._loop``); sizes are parsed by ``justaprocess._units``.
"""
from __future__ import annotations

from .._loop import (  # noqa: F401 - names this module always had (the loop device is _loop's)
    LO_FLAGS_AUTOCLEAR, LOOP_CLR_FD, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LoopDevice, attach_loop,
    detach_loops, loops_backed_by)
from .._bpfdev import exists as device_program_loaded  # noqa: F401 - is a program id still loaded?
from .._units import human, parse_size  # noqa: F401
from ..errors import BadInput, LabError, NeedsPrivilege, NotSupported, StillPresent  # noqa: F401
from .files import (  # noqa: F401
    _int, _keyed, _v1_limit)
from .tree import (  # noqa: F401
    CORE, HYBRID, Hierarchy, LAB_PARENT, MOUNTS, Place, ROOT, V1, V1_CONTROLLERS, V2,
    V2_CONTROLLERS, _V1_OPTIONS, _enable, _mount_table, _rmdir_if_empty,
    _xattr, controllers, delegated, enter_leaf, hierarchies, lab_base, layout, own_path,
    pids_in, places_of, remove)
from .limits import (  # noqa: F401
    IoLimit, Limits, _DEVRULE, _check_device_rule, _quota_usec, _swap_active, device_number,
    parse_count, parse_cpu, parse_io)
from .stats import (  # noqa: F401
    PSI_RESOURCES, Pressure, Stats, _io_bytes, _populated_v1, parse_pressure, read_pressure, read_stats)
from .group import (  # noqa: F401
    Cgroup)
from .cli import (  # noqa: F401
    _LABELS, _cli, add_cli, describe, format_description)
from . import files  # noqa: F401 - cgroups.files: what the unit tests' fake tree replaces
