"""A learner's progress: every graded attempt at an exercise, one JSON line each.

The file is ``$JAP_PROGRESS``, else ``$XDG_DATA_HOME/justaprocess/progress.jsonl``
(``~/.local/share/...``): the learner's own data, kept across kernels, lab
cleanups and learner-copy resets. One line per attempt::

    {"time": "2026-11-29T14:05:09Z", "chapter": "04", "exercise": 1, "ok": false,
     "kind": "bit-numbers", "hint_level": 1, "attempt": 1, "check": "check_bounding"}

``python -m justaprocess progress [--json]`` summarises it per exercise.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import time
from typing import NamedTuple


def path() -> str:
    if os.environ.get("JAP_PROGRESS"):
        return os.environ["JAP_PROGRESS"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "justaprocess", "progress.jsonl")


def record(ex, verdict, attempt: int) -> str | None:
    """Append one attempt; on failure return why (the verdict says it was not recorded)."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "chapter": ex.chapter, "exercise": ex.number, "ok": verdict.ok,
            "kind": verdict.kind, "hint_level": verdict.level, "attempt": attempt,
            "check": ex.check.__name__}
    return append(path(), line)


def append(target: str, line: dict) -> str | None:
    """Append one JSON line to ``target``; on failure return why (for the verdict to say)."""
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # O_APPEND: one write per line, so kernels writing at once do not interleave.
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{target}: {exc.strerror}"
    return None


def attempts(file: str | None = None) -> list[dict]:
    """Every recorded attempt, oldest first (lines that are not JSON are skipped)."""
    out = []
    try:
        with open(file or path()) as f:
            for text in f:
                try:
                    out.append(json.loads(text))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def known_exercises() -> dict[str, object]:
    """Every exercise of the course: importing each chapter's check module registers them."""
    from . import EXERCISES
    from .. import checks
    for mod in pkgutil.iter_modules(checks.__path__):
        if mod.name.startswith("ch"):
            try:
                importlib.import_module(f"{checks.__name__}.{mod.name}")
            except Exception:  # noqa: BLE001 - a broken chapter must not hide the others
                continue
    return dict(EXERCISES)


class Progress(NamedTuple):
    chapter: str
    exercise: int
    attempts: int
    solved: bool
    hints_seen: int      # the highest hint level shown
    last: str            # time of the last attempt ("" if none)


def summary(records: list[dict] | None = None, exercises: dict | None = None) -> list[Progress]:
    records = attempts() if records is None else records
    exercises = known_exercises() if exercises is None else exercises
    keys = {(e.chapter, e.number) for e in exercises.values()}
    keys |= {(str(r.get("chapter")), int(r.get("exercise", 0))) for r in records}
    rows = []
    for chapter, number in sorted(keys):
        mine = [r for r in records if (str(r.get("chapter")), r.get("exercise")) == (chapter, number)]
        rows.append(Progress(chapter, number, len(mine), any(r.get("ok") for r in mine),
                             max((r.get("hint_level") or 0 for r in mine), default=0),
                             mine[-1].get("time", "") if mine else ""))
    return rows


def report(rows: list[Progress]) -> str:
    lines = [f"{'exercise':<9} {'status':<12} {'attempts':>8} {'hints seen':>10}  last attempt"]
    for p in rows:
        status = "solved" if p.solved else ("not yet" if p.attempts else "not started")
        lines.append(f"{p.chapter + '.' + str(p.exercise):<9} {status:<12} {p.attempts:>8} "
                     f"{p.hints_seen:>10}  {p.last}")
    solved = sum(p.solved for p in rows)
    lines.append(f"{solved} of {len(rows)} exercises solved  ({path()})")
    return "\n".join(lines)


def _cli(args) -> int:
    rows = summary()
    if args.json:
        print(json.dumps({"file": path(), "exercises": [p._asdict() for p in rows]}, indent=2))
    else:
        print(report(rows))
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("progress", help="your exercises: solved, attempts, hints seen")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=_cli)
