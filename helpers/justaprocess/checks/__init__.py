"""Exercise checks: right or wrong, with a hint - never a traceback.

The pattern (nbgrader's): an exercise cell holds the worked solution between
``### BEGIN SOLUTION`` / ``### END SOLUTION``; ``tools/notebooks.py learner``
writes learner copies where each ``name = ...`` line of the solution becomes
``name = ...`` (Ellipsis).  The check cell calls a function of this package
(one module per chapter: ``ch01``...); it first makes sure every answer was
given, so running it before the exercise says what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    ok: bool
    message: str

    def __repr__(self) -> str:
        return ("✔ right: " if self.ok else "✘ not yet: ") + self.message

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else "#cf222e"
        return f'<div style="color:{colour};font-weight:600">{self!r}</div>'


def missing(**answers) -> Verdict | None:
    """A 'not answered yet' verdict when any answer is still ``...`` or None."""
    todo = [k for k, v in answers.items() if v is ... or v is None]
    if todo:
        return Verdict(False, "fill in " + ", ".join(f"`{k}`" for k in todo)
                       + " in the exercise cell above, run it, then run this cell again")
    return None


def verdict(ok: bool, right: str, hint: str) -> Verdict:
    return Verdict(True, right) if ok else Verdict(False, hint)
