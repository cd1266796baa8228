#!/usr/bin/env python3
"""Maintain the course notebooks.

  tools/notebooks.py nav            rewrite the navigation cell of every notebook and the index's table
  tools/notebooks.py check          exit 1 when `nav` would change something (the meta-test runs this)
  tools/notebooks.py learner [--force]
                                    write learner copies (solutions emptied) to notebooks/learner/;
                                    existing copies are kept unless --force (a learner's work is theirs)
  tools/notebooks.py run NB...      execute notebooks in place and store their outputs (as root)
  tools/notebooks.py times          each chapter's stated time next to the estimate below (exit 1 when
                                    one is off by more than the tolerance; the meta-test runs this)

Navigation and the index are generated, never edited by hand: a notebook's
last cell carries the tag ``nav``; the index's table carries the tag ``toc``.
The index shows each chapter's time from its title cell ("**Time:** N minutes").

How long a chapter takes a learner (``times``; the constants are below):
  prose at 180 words a minute (the "Going further" list is for later); each
  demo cell 15 s to run and look at, plus its code at 120 words a minute, plus
  its run time as measured by the last ``run`` (the cells' execution timestamps);
  each exercise 3 min plus half a minute per line of the worked solution, or the
  minutes its prompt states ("(about 10 minutes)").
"""
from __future__ import annotations

import argparse
import ast
import copy
import datetime
import glob
import os
import re
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
NB_DIR = os.path.join(os.path.dirname(HERE), "notebooks")
LEARNER_DIR = os.path.join(NB_DIR, "learner")
INDEX = "index.ipynb"

# The syllabus (../shared/COURSE.md); notebooks not yet written show as "coming".
SYLLABUS = [
    ("00", "welcome", "Welcome: the lab, the doctor, cleanup, exercises"),
    ("01", "just-a-process", "A container is just a process"),
    ("02", "namespaces", "Namespaces: a private view of the kernel"),
    ("03", "cgroups", "Control groups: metering and limits"),
    ("04", "capabilities", "Capabilities: root with limits"),
    ("05", "container-by-hand", "A container built by hand"),
    ("06", "runtimes", "Many runtimes, the same building blocks"),
    ("07", "why-diy-is-insecure", "Why a DIY container is insecure"),
    ("08", "in-container", "Troubleshooting from inside the container"),
    ("09", "sidecar", "A sidecar with the tools"),
    ("10", "from-the-host", "Troubleshooting from the host"),
    ("11", "debug-containers", "Debug containers"),
    ("12", "remote", "Remote troubleshooting"),
    ("13", "dos-and-donts", "Container do's and don'ts"),
    ("14", "at-scale", "Troubleshooting at scale"),
    ("15", "incidents", "Incidents: the capstone"),
]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

# The estimate of a learner's time (see the module's docstring).
PROSE_WPM = 180          # words of markdown a minute
CODE_WPM = 120           # words of a demo cell's code a minute
CELL_SECONDS = 15        # to run a demo cell and look at its output
EXERCISE_MINUTES = 3.0   # per exercise, plus EXERCISE_LINE_MINUTES per line of its solution
EXERCISE_LINE_MINUTES = 0.5
TOLERANCE = (5, 0.25)    # stated time vs estimate: off by at most 5 minutes or 25 %, the larger
TIME_RE = re.compile(r"\*\*Time:\*\*\s*(\d+)\s*minutes")
STATED_EXERCISE_RE = re.compile(r"\(about (\d+) minutes\)")


def chapters() -> list[str]:
    """The chapter notebooks present, in order (NN-name.ipynb)."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(NB_DIR, "[0-9][0-9]-*.ipynb")))


def title(path: str) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return os.path.basename(path)


def stated_minutes(path: str) -> int | None:
    """The time a chapter's title cell states ("**Time:** N minutes"), or None."""
    nb = nbformat.read(path, as_version=4)
    m = TIME_RE.search(nb.cells[0].source) if nb.cells else None
    return int(m.group(1)) if m else None


def _run_seconds(cell) -> float:
    """How long the cell took in the last run (its execution timestamps; 0 if it has none)."""
    ex = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.datetime.fromisoformat(ex["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, (end - start).total_seconds())


def estimate(path: str) -> dict:
    """The minutes a learner needs for a chapter, by part (see the module's docstring)."""
    nb = nbformat.read(path, as_version=4)
    prose = code = cells = run = exercises = 0.0
    prompt = ""
    skip_next = False
    for cell in nb.cells:
        if "nav" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "markdown":
            text = cell.source.split("## Going further")[0]
            prose += len(text.split())
            prompt += text            # the markdown since the last exercise: its prompt
            continue
        run += _run_seconds(cell)
        if BEGIN in cell.source:
            stated = STATED_EXERCISE_RE.search(prompt)
            lines = [l for l in cell.source.split(BEGIN, 1)[1].split(END, 1)[0].splitlines()
                     if l.strip() and not l.strip().startswith("#")]
            exercises += (int(stated.group(1)) if stated else
                          EXERCISE_MINUTES + EXERCISE_LINE_MINUTES * len(lines))
            skip_next, prompt = True, ""   # the check cell below belongs to the exercise
            continue
        if skip_next:
            skip_next = False
            continue
        cells += 1
        code += len(cell.source.split())
    parts = {"prose": prose / PROSE_WPM, "code": code / CODE_WPM, "cells": cells * CELL_SECONDS / 60,
             "run": run / 60, "exercises": exercises}
    parts["total"] = sum(parts.values())
    return parts


def _off(stated: int | None, est: float) -> bool:
    return stated is None or abs(stated - est) > max(TOLERANCE[0], TOLERANCE[1] * est)


def times() -> list[str]:
    """One line per chapter: stated time, estimate and its parts; return the chapters that are off."""
    off = []
    print(f"{'chapter':<26} {'stated':>6} {'estimate':>8}   prose  code cells  run  exercises")
    for name in chapters():
        path = os.path.join(NB_DIR, name)
        st, e = stated_minutes(path), estimate(path)
        bad = _off(st, e["total"])
        if bad:
            off.append(name)
        print(f"{name[:26]:<26} {st if st is not None else '-':>6} {e['total']:8.1f}   "
              f"{e['prose']:5.1f} {e['code']:5.1f} {e['cells']:5.1f} {e['run']:4.1f} {e['exercises']:6.1f}"
              + ("   <- off" if bad else ""))
    return off


def _tagged(nb, tag: str):
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def _nav_text(i: int, names: list[str]) -> str:
    parts = []
    if i > 0:
        parts.append(f"[← {title(os.path.join(NB_DIR, names[i-1]))}]({names[i-1]})")
    parts.append(f"[Index]({INDEX})")
    if i + 1 < len(names):
        parts.append(f"[{title(os.path.join(NB_DIR, names[i+1]))} →]({names[i+1]})")
    return "---\n" + " · ".join(parts)


def _toc_text(names: list[str]) -> str:
    present = {n[:2]: n for n in names}
    rows = ["| # | notebook | time |", "|---|---|---|"]
    total = 0
    for num, _slug, what in SYLLABUS:
        if num in present:
            path = os.path.join(NB_DIR, present[num])
            minutes = stated_minutes(path)
            total += minutes or 0
            rows.append(f"| {num} | [{title(path)}]({present[num]}) | "
                        f"{f'{minutes} min' if minutes else ''} |")
        else:
            rows.append(f"| {num} | {what} *(coming)* | |")
    rows.append(f"| | **all chapters** | **{total // 60} h {total % 60:02d} min** |")
    rows.append("\nA chapter's time covers reading it, running its cells and doing its exercises.")
    return "\n".join(rows)


def _set_source(cell, text: str) -> bool:
    if cell.source != text:
        cell.source = text
        return True
    return False


def nav(write: bool = True) -> list[str]:
    """Bring nav cells and the index table up to date; return the files that changed."""
    names = chapters()
    changed = []
    for i, name in enumerate(names):
        path = os.path.join(NB_DIR, name)
        nb = nbformat.read(path, as_version=4)
        cells = _tagged(nb, "nav")
        if not cells:
            cell = nbformat.v4.new_markdown_cell("", metadata={"tags": ["nav"]})
            nb.cells.append(cell)
            cells = [cell]
        if _set_source(cells[0], _nav_text(i, names)):
            changed.append(name)
            if write:
                nbformat.write(nb, path)
    path = os.path.join(NB_DIR, INDEX)
    nb = nbformat.read(path, as_version=4)
    toc = _tagged(nb, "toc")
    if not toc:
        raise SystemExit(f"{path}: no cell tagged 'toc'")
    if _set_source(toc[0], _toc_text(names)):
        changed.append(INDEX)
        if write:
            nbformat.write(nb, path)
    return changed


def learner_source(src: str) -> str:
    """A solution cell as the learner sees it: each assignment's value becomes `...`."""
    out, inside, sol = [], False, []
    for line in src.splitlines():
        if line.strip() == BEGIN:
            inside, sol = True, []
            indent = line[: len(line) - len(line.lstrip())]
            continue
        if line.strip() == END:
            inside = False
            names = []
            try:
                for node in ast.parse("\n".join(l[len(indent):] for l in sol)).body:
                    if isinstance(node, (ast.Assign, ast.AnnAssign)):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        names += [ast.unparse(t) for t in targets]
            except SyntaxError:
                pass
            out.append(f"{indent}# YOUR CODE HERE")
            out += [f"{indent}{n} = ..." for n in dict.fromkeys(names)]
            continue
        if not inside:
            out.append(line)
        else:
            sol.append(line)
    if inside:
        raise ValueError(f"unclosed {BEGIN}")
    return "\n".join(out)


def language_info() -> dict:
    """The language_info this machine's Python kernel sends (ipykernel, the course's kernel)."""
    from ipykernel.ipkernel import IPythonKernel

    return copy.deepcopy(IPythonKernel.language_info)


def learner(force: bool = False) -> list[str]:
    os.makedirs(LEARNER_DIR, exist_ok=True)
    written = []
    for name in chapters() + [INDEX]:
        dest = os.path.join(LEARNER_DIR, name)
        if os.path.exists(dest) and not force:
            continue
        nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
        nb = copy.deepcopy(nb)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            if BEGIN in cell.source:
                cell.source = learner_source(cell.source)
            cell.outputs, cell.execution_count = [], None
        # What the kernel will report (kernel_info): without it the lab fills it in on
        # opening and marks the copy modified before the learner did anything.
        nb.metadata["language_info"] = language_info()
        nbformat.write(nb, dest)
        written.append(name)
    return written


def run(paths: list[str]) -> None:
    from nbclient import NotebookClient

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
        nbformat.write(nb, path)
        print("ran", path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("nav")
    sub.add_parser("check")
    lp = sub.add_parser("learner")
    lp.add_argument("--force", action="store_true")
    rp = sub.add_parser("run")
    rp.add_argument("paths", nargs="+")
    sub.add_parser("times")
    args = p.parse_args(argv)
    if args.cmd == "nav":
        for name in nav():
            print("updated", name)
    elif args.cmd == "check":
        stale = nav(write=False)
        if stale:
            print("navigation out of date in: " + ", ".join(stale) + " - run tools/notebooks.py nav")
            return 1
    elif args.cmd == "learner":
        written = learner(args.force)
        print(f"learner copies: wrote {len(written)} in notebooks/learner/" if written
              else "learner copies: up to date (make learner-reset rewrites them)")
    elif args.cmd == "run":
        run(args.paths)
    elif args.cmd == "times":
        off = times()
        if off:
            print("stated time off the estimate in: " + ", ".join(off)
                  + " - set '**Time:** N minutes' in the title cell, then tools/notebooks.py nav")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
