"""Meta-tests: every notebook is collected, linked from the index, its navigation current,
and follows the course's anatomy; learner copies are generated correctly."""
import glob
import os
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB = os.path.join(ROOT, "notebooks")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import notebooks as nbtool  # noqa: E402

CHAPTERS = sorted(glob.glob(os.path.join(NB, "[0-9][0-9]-*.ipynb")))


def test_every_notebook_is_collected_by_the_test_run():
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly"],
                       cwd=ROOT, capture_output=True, text=True)
    collected = {line.split("::")[0] for line in r.stdout.splitlines() if ".ipynb::" in line}
    expected = {os.path.relpath(p, ROOT) for p in CHAPTERS}
    assert expected and expected <= collected, f"not collected: {expected - collected}"
    assert not any("learner/" in c for c in collected)


def test_every_notebook_is_linked_from_the_index():
    index = nbformat.read(os.path.join(NB, "index.ipynb"), as_version=4)
    text = "\n".join(c.source for c in index.cells)
    missing = [os.path.basename(p) for p in CHAPTERS if f"]({os.path.basename(p)})" not in text]
    assert not missing, f"not linked from index.ipynb: {missing} - run tools/notebooks.py nav"


def test_navigation_is_generated_and_current():
    assert nbtool.nav(write=False) == [], "run: .venv/bin/python tools/notebooks.py nav"


@pytest.mark.parametrize("path", CHAPTERS, ids=os.path.basename)
def test_notebook_anatomy(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "%load_ext justaprocess" in code[0].source, "first code cell: the setup cell"
    assert any("%lab_cleanup" in c.source for c in code), "a cleanup cell"
    assert any(nbtool.BEGIN in c.source for c in code), "at least one exercise"
    assert "What you learned" in md and "Going further" in md
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=os.path.basename)
def test_learner_copy_hides_solutions_and_still_runs_its_checks(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and nbtool.BEGIN in cell.source:
            learner = nbtool.learner_source(cell.source)
            assert nbtool.BEGIN not in learner and "# YOUR CODE HERE" in learner
            compile(learner.replace("%", "#"), path, "exec")  # still valid Python (magics aside)


def test_learner_source_turns_assignments_into_ellipsis():
    src = "x = 1\n### BEGIN SOLUTION\nanswer = os.getpid()\nprint(answer)\nb: int = 3\n### END SOLUTION\ny = 2"
    assert nbtool.learner_source(src) == "x = 1\n# YOUR CODE HERE\nanswer = ...\nb = ...\ny = 2"


def test_each_chapter_states_a_time_close_to_what_a_learner_needs():
    """The title cell's "**Time:** N minutes" (shown in the index) against the estimate of
    tools/notebooks.py: prose, demo cells with their measured run time, exercises."""
    off = {}
    for path in CHAPTERS:
        stated, est = nbtool.stated_minutes(path), nbtool.estimate(path)["total"]
        if nbtool._off(stated, est):
            off[os.path.basename(path)] = (stated, round(est, 1))
    assert not off, (f"stated vs estimated minutes: {off} - set '**Time:** N minutes' in the title "
                     "cell (tools/notebooks.py times shows the parts), then tools/notebooks.py nav")


def test_time_estimate_counts_prose_cells_and_exercises(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z",
                                  "shell.execute_reply": "2026-01-01T00:01:00.000000Z"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 · T\n\n**Time:** 10 minutes. " + "word " * 162),
        cell,                                                               # 1 demo cell, ran 60 s
        nbformat.v4.new_markdown_cell("### Exercise 1\n\nDo it."),
        nbformat.v4.new_code_cell(f"{nbtool.BEGIN}\na = 1\nb = 2\n{nbtool.END}"),  # 2 lines
        nbformat.v4.new_code_cell("check(a, b)"),                           # its check cell
        nbformat.v4.new_markdown_cell("### Exercise 2 (about 7 minutes)"),
        nbformat.v4.new_code_cell(f"{nbtool.BEGIN}\nc = 3\n{nbtool.END}"),
        nbformat.v4.new_code_cell("check(c)"),
        nbformat.v4.new_markdown_cell("## Going further\n" + "later " * 500),
    ]
    path = tmp_path / "99-t.ipynb"
    nbformat.write(nb, str(path))
    e = nbtool.estimate(str(path))
    assert nbtool.stated_minutes(str(path)) == 10
    assert e["prose"] == 180 / nbtool.PROSE_WPM          # 7 + 162 + 5 + 6 words before "Going further"
    assert e["cells"] == nbtool.CELL_SECONDS / 60 and e["run"] == 1.0
    assert e["exercises"] == nbtool.EXERCISE_MINUTES + 2 * nbtool.EXERCISE_LINE_MINUTES + 7
    assert nbtool._off(10, e["total"]) == (abs(10 - e["total"]) > 5)
