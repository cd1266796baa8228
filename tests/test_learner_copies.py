"""A learner's copy, run top to bottom before any exercise is done, must not break:
each check cell says what is missing ("fill in ..."), and no cell raises."""
import copy
import glob
import os
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import notebooks as nbtool  # noqa: E402

CHAPTERS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "[0-9][0-9]-*.ipynb")))


def _text(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
        elif o.get("output_type") == "error":
            parts.append("\n".join(o.get("traceback", [])))
    return "\n".join(parts)


@pytest.mark.root
@pytest.mark.parametrize("path", CHAPTERS, ids=os.path.basename)
def test_learner_copy_runs_and_its_checks_say_what_is_missing(path, tmp_path, pytestconfig):
    from nbclient import NotebookClient

    nb = copy.deepcopy(nbformat.read(path, as_version=4))
    exercise_seen, check_cells = False, []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if nbtool.BEGIN in cell.source:
            cell.source = nbtool.learner_source(cell.source)
            exercise_seen = True
        elif exercise_seen and "check" in cell.source:
            check_cells.append(cell)
            exercise_seen = False
    assert check_cells, "no check cell follows an exercise"
    # The same per-cell budget as nbval's (pytest.ini; the emulated VM raises it).
    timeout = int(pytestconfig.getoption("nbval_cell_timeout", None) or 120)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    for cell in check_cells:
        out = _text(cell.outputs)
        assert "not yet" in out and "fill in" in out, f"check cell said: {out!r}\n{cell.source}"
