"""The table test: every exercise's check, fed its right answer and plausible wrong ones.

Each chapter module ``justaprocess.checks.chNN`` has ``TABLE = {exercise number: Rows(...)}``
(see ``justaprocess.checks.Rows``): the right answer must pass; each wrong row must give
the verdict kind its key names (before any ':'), a hint of its own (no two rows the same
message) and never a traceback (no "check-error" verdict); a repeated wrong answer gets
the next hint. Rows are computed live from this machine (its layout, PIDs, namespaces),
so the same table runs on the hybrid dev machine and on the pure cgroup v2 VM (`make test-v2`
runs every test file that names cgroups, this one included).
"""
import contextlib
import importlib
import os
import pkgutil

import pytest

from justaprocess import checks
from justaprocess.checks import CHECK_ERROR, EXERCISES, NOT_ATTEMPTS, Rows, progress, reset_attempts

CHAPTERS = sorted(m.name for m in pkgutil.iter_modules(checks.__path__) if m.name.startswith("ch"))


def _cases():
    for name in CHAPTERS:
        mod = importlib.import_module(f"justaprocess.checks.{name}")
        table = getattr(mod, "TABLE", None)
        if table is None:
            yield pytest.param(name, None, None, id=f"{name}-no-table")
            continue
        for number, rows in table.items():
            yield pytest.param(name, number, rows, id=f"{name}-ex{number}")


@contextlib.contextmanager
def _context(rows: Rows):
    if rows.setup is None:
        yield {}
    else:
        with rows.setup() as ctx:
            yield ctx or {}


def _call(ex, ctx: dict, answers: dict):
    kwargs = {k: ctx[k] for k in ex.context if k in ctx}
    kwargs.update(answers)
    return _checked(ex)(**kwargs)


def _checked(ex):
    mod = importlib.import_module(ex.check.__module__)
    return getattr(mod, ex.check.__name__)


@pytest.fixture(autouse=True)
def _own_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("JAP_PROGRESS", str(tmp_path / "progress.jsonl"))
    reset_attempts()
    yield
    reset_attempts()


def test_every_check_is_an_exercise_with_table_rows():
    for name in CHAPTERS:
        mod = importlib.import_module(f"justaprocess.checks.{name}")
        plain = [f for f, obj in vars(mod).items() if f.startswith("check_") and callable(obj)
                 and getattr(obj, "__module__", "") == mod.__name__ and not hasattr(obj, "exercise")]
        assert not plain, f"{name}: decorate with @exercise(n): {plain}"
        mine = {e.number for e in EXERCISES.values() if e.check.__module__ == mod.__name__}
        table = getattr(mod, "TABLE", {})
        assert mine <= set(table), f"{name}: exercises without table rows: {sorted(mine - set(table))}"


@pytest.mark.root
@pytest.mark.parametrize("chapter,number,rows", list(_cases()))
def test_exercise_table(chapter, number, rows, own_objects):
    if rows is None:
        pytest.skip(f"{chapter} has no TABLE yet")
    ex = EXERCISES[f"{chapter[2:]}.{number}"]
    with _context(rows) as ctx:
        good = _call(ex, ctx, rows.right(ctx))
        assert good.ok, f"the right answer failed: {good!r}"
        assert good.kind == "right"

        assert len(rows.wrong) >= 3, "at least three plausible wrong answers"
        messages = {}
        escalating = []
        for key, row in rows.wrong.items():
            answers = row(ctx)
            if answers is None:          # does not apply on this layout
                continue
            reset_attempts(ex.key)
            v = _call(ex, ctx, answers)
            assert not v.ok, f"{key}: a wrong answer passed: {answers!r} -> {v!r}"
            assert v.kind != CHECK_ERROR, f"{key}: the check failed on {answers!r}: {v!r}"
            assert v.kind == key.split(":")[0], f"{key}: expected kind {key!r}, got {v!r}"
            assert v.kind not in NOT_ATTEMPTS and v.level == 1, v
            assert "Traceback" not in v.message
            assert v.message not in messages.values(), \
                f"{key} gives the same hint as {[k for k, m in messages.items() if m == v.message]}"
            messages[key] = v.message
            if v.levels > 1:
                again = _call(ex, ctx, answers)
                assert again.level == 2 and again.message != v.message, (v, again)
                escalating.append(key)
        assert escalating, "no wrong answer's hints escalate over attempts"

        # Every graded attempt was recorded for the progress view.
        recorded = progress.attempts()
        assert recorded and all(r["chapter"] == ex.chapter and r["exercise"] == number
                                for r in recorded)
        assert recorded[0]["ok"] is True and recorded[1]["ok"] is False


def test_missing_answer_is_not_an_attempt_and_names_the_answer():
    mod = importlib.import_module("justaprocess.checks.ch00")
    v = mod.check_kernel(..., ...)
    assert not v.ok and v.kind == "missing" and "`kernel_pid`" in v.message
    assert progress.attempts() == []


def test_hints_escalate_then_stay_at_the_last():
    mod = importlib.import_module("justaprocess.checks.ch00")
    levels = [mod.check_kernel(1, 0).level for _ in range(4)]
    assert levels == [1, 2, 2, 2]
    assert [r["hint_level"] for r in progress.attempts()] == [1, 2, 2, 2]


def test_an_unexpected_exception_is_a_verdict_not_a_traceback():
    from justaprocess.checks import exercise

    @exercise(99, chapter="99")
    def check_broken(answer):
        return {}[answer]

    try:
        v = check_broken("x")
        assert not v.ok and v.kind == CHECK_ERROR and "KeyError" in v.message
        assert "`answer` is the string 'x'" in v.message
    finally:
        EXERCISES.pop("99.99")


def test_a_check_cell_run_before_its_exercise_says_so():
    from justaprocess.checks import name_error_verdict
    v = name_error_verdict("# NBVAL_CHECK_OUTPUT\nch03.check_memory_limit(limit)\n", "limit")
    assert v.kind == "setup" and "run the exercise cell above first" in v.message
    v = name_error_verdict("ch03.check_memory_limit(limit)", "ch03")
    assert "run the cells above first" in v.message
    assert name_error_verdict("print(x)", "x") is None


def test_progress_command_summarises_the_attempts(capsys):
    import json

    from justaprocess.__main__ import main
    mod = importlib.import_module("justaprocess.checks.ch00")
    mod.check_kernel(1, 0)
    mod.check_kernel(os.getpid(), os.stat("/proc/self/ns/net").st_ino)
    assert main(["progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = next(e for e in out["exercises"] if (e["chapter"], e["exercise"]) == ("00", 1))
    assert row["attempts"] == 2 and row["solved"] and row["hints_seen"] == 1
    assert main(["progress"]) == 0
    text = capsys.readouterr().out
    assert "00.1" in text and "solved" in text and "not started" in text


def test_a_check_cell_run_before_its_exercise_says_so_in_a_real_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext justaprocess"),
                nbformat.v4.new_code_cell("from justaprocess.checks import ch03\n"
                                          "ch03.check_memory_limit(limit)"),
                nbformat.v4.new_code_cell("ch05.check_bind_cap(needed_cap)"),
                nbformat.v4.new_code_cell("print(not_a_check)")]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    (ext, early, unimported, other) = nb.cells

    def text(cell):
        return "\n".join("\n".join(o.get("traceback", [])) + o.get("text", "") for o in cell.outputs)

    assert "`limit` is not defined yet: run the exercise cell above first" in text(early)
    assert "Traceback" not in text(early) and "line 2" not in text(early)
    assert "`ch05` is not imported yet" in text(unimported)
    assert "NameError" in text(other) and "not_a_check" in text(other)  # other cells: as before
