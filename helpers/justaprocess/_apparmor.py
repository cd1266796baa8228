"""AppArmor as the kernel shows it: is it on, which profiles are loaded, load and remove one.

Below the launcher's spec (which checks a profile is loaded before a child switches
to it), so this module only reads; loading and unloading run ``apparmor_parser``
through the launcher: ``_apparmor_parser`` (below ``lab``, which unloads entries of
kind ``apparmor`` with it).  The kernel's interface is securityfs
(``/sys/kernel/security/apparmor``); profiles are compiled and loaded by
``apparmor_parser`` (apparmor_parser(8)), the tool every engine's set-up uses.
Kernel doc: Documentation/admin-guide/LSM/apparmor.rst.
"""
from __future__ import annotations

import os

ENABLED = "/sys/module/apparmor/parameters/enabled"    # "Y" when the LSM is active
SECURITYFS = "/sys/kernel/security"
PROFILES = SECURITYFS + "/apparmor/profiles"           # "name (mode)" per loaded profile


def why_not() -> str | None:
    """None when profiles can be loaded and applied here, else the reason (a sentence)."""
    try:
        with open(ENABLED) as f:
            on = f.read().strip() == "Y"
    except OSError:
        on = False
    if not on:
        lsm = ""
        try:
            with open(SECURITYFS + "/lsm") as f:
                lsm = f.read().strip()
        except OSError:
            pass
        if lsm:
            seen = f"its active LSMs are {lsm}"
        elif os.path.exists(ENABLED):
            seen = f"{ENABLED} is not Y"
        else:
            seen = "no /sys/module/apparmor: not built in, or no LSM at all"
        return f"this kernel runs without AppArmor ({seen}): the course VM (Debian 12) has it"
    if not os.path.exists(PROFILES):
        return f"AppArmor is on but securityfs is not mounted at {SECURITYFS}: mount -t securityfs securityfs {SECURITYFS}"
    if os.geteuid() != 0:
        return "loading an AppArmor profile needs root (CAP_MAC_ADMIN)"
    return None


def loaded() -> dict[str, str]:
    """{profile name: mode} of every loaded profile (empty when AppArmor is off)."""
    try:
        with open(PROFILES) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:  # "jap-1a2b3c-web (enforce)"
        name, _, mode = line.rpartition(" (")
        out[name] = mode.rstrip(")")
    return out


def present(name: str) -> bool:
    return name in loaded()
