"""``python -m justaprocess COMMAND``: the lab from a terminal.

Each module that offers commands defines ``add_cli(subparsers)``; its parser
sets ``func`` to a callable taking the parsed args and returning an exit code.
A ``LabError`` is printed as one line (what is wrong, what to do), exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import LabError

# Modules that may add subcommands; missing ones are skipped, so a chapter's
# module adds its command by defining add_cli() - no edit here needed.
CLI_MODULES = ("cli_lab", "namespaces", "cgroups", "capabilities", "network",
               "container", "runtimes", "debug", "debugcontainer", "checks.progress",
               "workshop", "incidents")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m justaprocess",
                                description="Just a Process: the lab's command line")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in CLI_MODULES:
        try:
            mod = importlib.import_module(f"justaprocess.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"justaprocess.{name}":
                continue
            raise
        if hasattr(mod, "add_cli"):
            mod.add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
