#!/usr/bin/env python3
"""Maintain the course notebooks.

  tools/notebooks.py nav            rewrite the navigation cell of every notebook and the index's table
  tools/notebooks.py check          exit 1 when `nav` would change something (the meta-test runs this)
  tools/notebooks.py learner [--force]
                                    write learner copies (solutions emptied) to notebooks/learner/;
                                    existing copies are kept unless --force (a learner's work is theirs)
  tools/notebooks.py run NB...      execute notebooks in place and store their outputs (as root)

Navigation and the index are generated, never edited by hand: a notebook's
last cell carries the tag ``nav``; the index's table carries the tag ``toc``.
"""
from __future__ import annotations

import argparse
import ast
import copy
import glob
import os
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
    rows = ["| # | notebook |", "|---|---|"]
    for num, _slug, what in SYLLABUS:
        if num in present:
            rows.append(f"| {num} | [{title(os.path.join(NB_DIR, present[num]))}]({present[num]}) |")
        else:
            rows.append(f"| {num} | {what} *(coming)* |")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
