"""Commands of the lab itself: doctor, cleanup, leftovers."""
from __future__ import annotations

import json

from . import doctor, lab


def _doctor(args) -> int:
    results = doctor.checks()
    if args.json:
        print(json.dumps([c._asdict() for c in results], indent=2))
    else:
        print(doctor.report(results))
    return 0 if doctor.ready(results) else 1


def _describe(e: lab.Entry) -> str:
    what = f"pid {e.pid}" if e.kind == "process" else e.name
    extra = f"  ({e.note})" if e.note else ""
    return f"{e.kind:<8} {what}{extra}"


def _cleanup(args) -> int:
    failed: list[str] = []
    try:
        removed = lab.cleanup()
    except lab.CleanupIncomplete as exc:
        removed, failed = exc.removed, exc.failed
    for e in removed:
        print("removed", _describe(e))
    # Say "nothing is left" only after looking: what removal missed, or what
    # appeared meanwhile, is listed instead.
    left = lab.leftovers()
    for e in left:
        print("still present", _describe(e))
    for msg in failed:
        print("could not remove", msg)
    if left or failed:
        print(f"cleanup: removed {len(removed)} object(s); {len(left) or len(failed)} still "
              "present (above): run `python -m justaprocess cleanup` again; if they stay, "
              "reboot the VM")
        return 1
    if not args.quiet:
        print(f"cleanup: removed {len(removed)} object(s); nothing of the lab is left"
              if removed else "cleanup: nothing of the lab to remove")
    return 0


def _leftovers(args) -> int:
    found = lab.leftovers()
    for e in found:
        print(_describe(e))
    return 1 if found else 0


def add_cli(sub) -> None:
    p = sub.add_parser("doctor", help="check that this machine can run the lab")
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=_doctor)
    p = sub.add_parser("cleanup", help="remove every kernel object the lab created")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cleanup)
    p = sub.add_parser("leftovers", help="list what of the lab is still present (exit 1 if any)")
    p.set_defaults(func=_leftovers)
