"""Exercise checks: right or wrong, with a hint - never a traceback.

The pattern (nbgrader's): an exercise cell holds the worked solution between
``### BEGIN SOLUTION`` / ``### END SOLUTION``; ``tools/notebooks.py learner``
writes learner copies where each ``name = ...`` line of the solution becomes
``name = ...`` (Ellipsis).  The check cell calls a function of this package
(one module per chapter: ``ch01``...).

A check is a function decorated with :func:`exercise`::

    from . import exercise, expect_int, right, wrong

    @exercise(1, context=("ctr",))           # exercise 1 of this module's chapter
    def check_thing(answer, ctr):             # answers first, then context objects
        n = expect_int(answer, "answer")      # type and shape first (raises Wrong "type")
        if n == truth - 1:
            return wrong("off-by-one",        # a named wrong answer ...
                         "idea: where does counting start?",        # ... hint 1 (first attempt)
                         "closer: ... (the man page's words)")      # hint 2 (later attempts)
        if n != truth:
            return wrong("other", "...")
        return right("what the learner just saw, in one sentence")

The decorator does the rest, the same for every exercise:
- an answer still ``...`` -> "fill in `answer` in the exercise cell above" (not an attempt);
- a :class:`Wrong` returned or raised -> its hint for this attempt: the hints of a
  wrong answer escalate with the number of wrong attempts at this exercise in this
  kernel (the first points at the idea, later ones get closer);
- a ``LabError`` -> its message (it says what to do); any other exception -> a
  clear verdict, never a traceback;
- every graded attempt is appended to the progress file (:mod:`.progress`).

A check cell run before its exercise cell raises ``NameError`` before any check
runs: the extension (``%load_ext justaprocess``) shows "run the exercise cell
above first" instead (:func:`name_error_verdict`).

Tests: each chapter module has a ``TABLE`` of :class:`Rows` (the right answer and
plausible wrong ones, each with the kind of verdict it must give) that
``tests/test_exercises.py`` walks.
"""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from ..errors import LabError

# Kinds that are not attempts: nothing answered yet, a cell above not run.
NOT_ATTEMPTS = ("missing", "setup")
# The kind of verdict when the check itself failed (a bug of the check: tests forbid it).
CHECK_ERROR = "check-error"


@dataclass
class Verdict:
    ok: bool
    message: str
    kind: str = ""       # "right", or which wrong answer it was ("type", "off-by-one", ...)
    level: int = 0       # the hint shown: 1 = the first hint (0 when right / not an attempt)
    levels: int = 0      # how many hints this wrong answer has
    exercise: str = ""   # "04.1"

    def __repr__(self) -> str:
        if self.ok:
            return "✔ right: " + self.message
        more = f"  [hint {self.level} of {self.levels}]" if self.levels > 1 else ""
        return "✘ not yet: " + self.message + more

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else "#cf222e"
        # only what would break the HTML ("/proc/<PID>/root" in a hint); '>' stays as stored
        text = repr(self).replace("&", "&amp;").replace("<", "&lt;")
        return f'<div style="color:{colour};font-weight:600">{text}</div>'


class Wrong(Exception):
    """A wrong answer of a named kind, with hints from the idea to the nearly-answer."""

    def __init__(self, kind: str, *hints: str):
        if not hints:
            raise ValueError("a wrong answer needs at least one hint")
        super().__init__(hints[0])
        self.kind, self.hints = kind, tuple(hints)


def wrong(kind: str, *hints: str) -> Wrong:
    """A wrong answer (return it, or raise it from a helper): ``hints`` escalate over attempts."""
    return Wrong(kind, *hints)


def right(message: str) -> Verdict:
    return Verdict(True, message, kind="right")


def run_first(what: str) -> Wrong:
    """A cell above was not run (not the learner's answer's fault; not an attempt)."""
    return Wrong("setup", f"run {what} first, then this cell again")


# --- type and shape of an answer: say exactly what is expected ------------------------

def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def describe(value: Any) -> str:
    """What a value is, in a learner's words: 'the string '1735'', 'a list of 2 ints'."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"the bool {value}"
    if isinstance(value, int):
        return f"the int {value}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, str):
        return f"the string {_short(repr(value))}"
    if isinstance(value, bytes):
        return f"the bytes {_short(repr(value))}"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:4]) + (", ..." if len(value) > 4 else "")
        return f"a dict with keys {keys}" if value else "an empty dict"
    if isinstance(value, (list, tuple, set, frozenset)):
        kinds = sorted({type(v).__name__ for v in value})
        if not value:
            return f"an empty {type(value).__name__}"
        n = len(value)
        return f"a {type(value).__name__} of {n} {'item' if n == 1 else 'items'} ({', '.join(kinds)})"
    return f"a {type(value).__name__} object"


def _type_wrong(name: str, what: str, value: Any, extra: str = "", kind: str = "type") -> Wrong:
    msg = f"`{name}` should be {what}; it is {describe(value)}"
    if value is None and not extra:
        extra = "did you assign what a call returned that returns nothing (like list.sort())?"
    return Wrong(kind, msg + (": " + extra if extra else ""))


def expect_int(value: Any, name: str, what: str = "an int") -> int:
    """``value`` as an int, or a Wrong("type") saying so (a digit string gets its own words)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        raise _type_wrong(name, what, value, "a number without the quotes (int(...) converts)")
    if isinstance(value, float) and value.is_integer():
        raise _type_wrong(name, what, value, "a whole number without the '.0' (int(...) converts)")
    raise _type_wrong(name, what, value)


def expect_bool(value: Any, name: str, what: str = "True or False") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        raise _type_wrong(name, what, value, "True and False are written without quotes")
    raise _type_wrong(name, what, value)


def expect_str(value: Any, name: str, what: str = "a string") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        raise _type_wrong(name, what, value, ".decode() turns bytes into a string")
    raise _type_wrong(name, what, value)


def expect_collection(value: Any, name: str, what: str, item: type | tuple[type, ...],
                      item_what: str) -> list:
    """The items of a list/tuple/set of ``item``s (a bare string, a dict, ... -> Wrong("type"))."""
    if isinstance(value, (str, bytes)):
        raise _type_wrong(name, what, value, f"a collection, even for one item: [{value!r}]")
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise _type_wrong(name, what, value)
    items = list(value)
    types = item if isinstance(item, tuple) else (item,)
    for v in items:
        if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
            raise _type_wrong(name, what, value, f"{describe(v)} is not {item_what}")
    return items


# --- the exercise decorator: missing answers, attempts, escalation, the record ----------

@dataclass
class Exercise:
    chapter: str
    number: int
    check: Callable
    answers: tuple[str, ...]
    context: tuple[str, ...]
    title: str = ""

    @property
    def key(self) -> str:
        return f"{self.chapter}.{self.number}"


EXERCISES: dict[str, Exercise] = {}     # "04.1" -> Exercise, filled as chapter modules import
_wrong_attempts: dict[str, int] = {}    # per exercise, in this kernel: the hint level
_attempts: dict[str, int] = {}


def attempts(key: str) -> int:
    return _attempts.get(key, 0)


def reset_attempts(key: str | None = None) -> None:
    """Forget the attempts of one exercise ("04.1") or of all (hints start at the first again)."""
    for d in (_attempts, _wrong_attempts):
        if key is None:
            d.clear()
        else:
            d.pop(key, None)


def _chapter_of(module: str) -> str:
    m = re.search(r"ch(\d+)$", module)
    if not m:
        raise ValueError(f"{module}: give exercise(..., chapter='NN')")
    return m.group(1)


def missing(**answers) -> Verdict | None:
    """A 'not answered yet' verdict when any answer is still ``...``."""
    todo = [k for k, v in answers.items() if v is ...]
    if todo:
        return Verdict(False, "fill in " + ", ".join(f"`{k}`" for k in todo)
                       + " in the exercise cell above, run it, then run this cell again",
                       kind="missing")
    return None


def verdict(ok: bool, right_message: str, hint: str) -> Verdict:
    """Older checks' shortcut (kept for them): prefer ``right()`` / ``wrong()``."""
    return right(right_message) if ok else Verdict(False, hint, kind="wrong", level=1, levels=1)


def _judge(ex: Exercise, args: dict) -> Verdict:
    if (m := missing(**{k: args[k] for k in ex.answers if k in args})):
        return m
    try:
        result = ex.check(**args)
    except Wrong as w:
        result = w
    except LabError as exc:
        return Verdict(False, str(exc), kind="lab", level=1, levels=1)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a check never shows a traceback
        shown = ", ".join(f"`{k}` is {describe(args[k])}" for k in ex.answers if k in args)
        return Verdict(False, f"the check could not judge this answer ({type(exc).__name__}: "
                              f"{_short(str(exc), 120)}). {shown}: is that what the exercise asks "
                              "for? If it is, tell the instructor: this is a bug of the check",
                       kind=CHECK_ERROR, level=1, levels=1)
    if isinstance(result, Verdict):
        return result
    if isinstance(result, Wrong):
        if result.kind in NOT_ATTEMPTS:
            return Verdict(False, result.hints[0], kind=result.kind)
        seen = _wrong_attempts.get(ex.key, 0)
        level = min(seen, len(result.hints) - 1)
        return Verdict(False, result.hints[level], kind=result.kind, level=level + 1,
                       levels=len(result.hints))
    return Verdict(False, f"the check returned {describe(result)}: tell the instructor, "
                          "this is a bug of the check", kind=CHECK_ERROR)


def exercise(number: int, *, context: tuple[str, ...] = (), chapter: str | None = None,
             title: str = "") -> Callable:
    """Make ``check(answers..., context...)`` an exercise check (see the module's docstring).

    ``context`` names the parameters that are not answers (a container of the section...).
    """
    def wrap(fn: Callable) -> Callable:
        params = list(inspect.signature(fn).parameters)
        ex = Exercise(chapter or _chapter_of(fn.__module__), number, fn,
                      tuple(p for p in params if p not in context), tuple(context), title)
        EXERCISES[ex.key] = ex

        @functools.wraps(fn)
        def check(*args, **kwargs) -> Verdict:
            try:
                bound = inspect.signature(fn).bind(*args, **kwargs)
            except TypeError as exc:
                return Verdict(False, f"call it as {fn.__name__}{inspect.signature(fn)}: {exc}",
                               kind=CHECK_ERROR)
            bound.apply_defaults()
            v = _judge(ex, dict(bound.arguments))
            v.exercise = ex.key
            if v.kind not in NOT_ATTEMPTS:
                _attempts[ex.key] = _attempts.get(ex.key, 0) + 1
                if not v.ok:
                    _wrong_attempts[ex.key] = _wrong_attempts.get(ex.key, 0) + 1
                from . import progress
                problem = progress.record(ex, v, _attempts[ex.key])
                if problem:
                    v.message += f" (this attempt was not recorded: {problem})"
            return v

        check.exercise = ex
        return check
    return wrap


# --- a check cell run before its exercise cell -----------------------------------------

_CHECK_CALL = re.compile(r"\b(ch\d+)\.check_\w+\(")


def name_error_verdict(cell_source: str, missing_name: str) -> Verdict | None:
    """The verdict for ``NameError: missing_name`` in a check cell (None if not a check cell)."""
    m = _CHECK_CALL.search(cell_source or "")
    if not m:
        return None
    if missing_name == m.group(1):
        return Verdict(False, f"`{missing_name}` is not imported yet: run the cells above first "
                              "(the setup cell, then the exercise cell)", kind="setup")
    return Verdict(False, f"`{missing_name}` is not defined yet: run the exercise cell above "
                          "first (fill it in), then this cell again", kind="setup")


# --- the table of right and wrong answers, for tests/test_exercises.py ----------------

@dataclass
class Rows:
    """One exercise's table rows.

    ``setup()`` (optional) is a context manager yielding a dict ``ctx`` of what the
    notebook has made by then (a container...); the check's parameters named in
    ``ctx`` are passed from it. ``right(ctx)`` and each ``wrong[kind](ctx)`` return the
    answers as a dict; a wrong row's key is the verdict kind it must give (a suffix
    after ':' tells rows of the same kind apart, e.g. "type:str"). A row returning
    None does not apply here (e.g. a v1/v2 mix-up on the other layout).
    """
    right: Callable[[dict], dict]
    wrong: dict[str, Callable[[dict], dict | None]] = field(default_factory=dict)
    setup: Callable[[], ContextManager[dict]] | None = None
