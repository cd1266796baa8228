"""rtnetlink through pyroute2 0.9, usable inside a Jupyter kernel; its errors as lab errors.

pyroute2 0.9's synchronous ``IPRoute`` drives an asyncio loop of its own with
``run_until_complete``; in a thread whose loop is already running - a Jupyter
kernel runs every cell inside one - that raises "This event loop is already
running" (docs/kernel-notes.md, "Networking").  So where a loop is running in
the calling thread, :func:`call` runs the synchronous API in a short-lived
worker thread, which has none; elsewhere (pytest, the CLI, a container's first
process: asyncio ties a running loop to the PID that started it, so a forked
child has none) it calls it directly.  A worker thread inherits the network
namespace of the thread that starts it.

``NetlinkError`` never reaches the learner: :func:`translate` turns it into a
lab error that says what is wrong and what to do (rtnetlink(7) errors).
"""
from __future__ import annotations

import errno
import sys
import threading
from typing import Callable, TypeVar

from .errors import BadInput, LabError, NeedsPrivilege, NotSupported

T = TypeVar("T")


def translate(exc: BaseException, doing: str) -> BaseException:
    """A lab error for a pyroute2 ``NetlinkError`` (other exceptions are returned as they are)."""
    from pyroute2.netlink.exceptions import NetlinkError
    if not isinstance(exc, NetlinkError):
        return exc
    code = exc.code
    name = errno.errorcode.get(code, str(code))
    if code in (errno.EPERM, errno.EACCES):
        return NeedsPrivilege("CAP_NET_ADMIN", f"{doing}:")
    if code == errno.EEXIST:
        return LabError(f"{doing}: it exists already (EEXIST): a leftover of an earlier run? "
                        "`python -m justaprocess leftovers` lists it, `cleanup` removes it")
    if code == errno.ENODEV:
        return LabError(f"{doing}: no such network interface (ENODEV): it is gone, or it is in "
                        "another network namespace")
    if code in (errno.ERANGE, errno.EINVAL):
        return BadInput(f"{doing}: the kernel refused the request ({name}: {exc.args[1]}): "
                        "interface names have at most 15 characters, addresses must fit the "
                        "subnet (rtnetlink(7))")
    if code in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
        return NotSupported(f"{doing}: this kernel does not support it ({name}): load the module "
                            "(modprobe veth / bridge) or use the course VM")
    return LabError(f"{doing}: the kernel answered {name} ({exc.args[1]}): see `dmesg`; "
                    "`python -m justaprocess doctor` checks the machine")


def _loop_running() -> bool:
    # Not imported, not running: asyncio is imported on use only, as pyroute2 does, for
    # its 5 MB of memory make every fork of a script that imports the lab dearer.
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def call(fn: Callable[..., T], doing: str, **iproute) -> T:
    """``fn(ip)`` with a fresh ``IPRoute(**iproute)``; a ``NetlinkError`` becomes a lab error.

    ``doing`` says what for, in the error ("creating the lab bridge jap-...").
    """
    from pyroute2 import IPRoute
    box: dict = {}

    def work() -> None:
        try:
            with IPRoute(**iproute) as ip:
                box["value"] = fn(ip)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    if _loop_running():  # a Jupyter kernel's cell: pyroute2 needs a thread without one
        t = threading.Thread(target=work, name="jap-netlink", daemon=True)
        t.start()
        t.join()
    else:
        work()
    if "error" in box:
        err = box["error"]
        new = translate(err, doing)
        if new is err:
            raise err
        raise new from err
    return box["value"]


def index(ip, ifname: str) -> int:
    """The interface index of ``ifname`` (in ``ip``'s namespace), or a lab error."""
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no network interface {ifname!r} here: is it gone, or in another "
                       "network namespace?")
    return found[0]


def link_exists(ifname: str) -> bool:
    """Is there an interface ``ifname`` in this process's network namespace?"""
    return call(lambda ip: bool(ip.link_lookup(ifname=ifname)), f"looking up {ifname}")


def link_delete(ifname: str) -> None:
    """Delete the interface (both ends of a veth pair go); nothing if it is gone."""
    from pyroute2.netlink.exceptions import NetlinkError

    def delete(ip) -> None:
        found = ip.link_lookup(ifname=ifname)
        if found:
            try:
                ip.link("del", index=found[0])
            except NetlinkError as exc:
                # ENODEV: gone meanwhile - a veth goes with its peer's namespace, which the
                # kernel tears down asynchronously after the namespace's last process exits.
                if exc.code != errno.ENODEV:
                    raise
    call(delete, f"deleting the interface {ifname}")


def netns_remove(name: str) -> None:
    """``ip netns del NAME``: unmount /run/netns/NAME and remove the file (ip-netns(8))."""
    from pyroute2 import netns
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        raise NeedsPrivilege("CAP_SYS_ADMIN", f"removing the network namespace name {name}:") from exc
