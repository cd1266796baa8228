#!/usr/bin/env python3
"""Make the plain /lab URL open the course index, not the Launcher.

JupyterLab restores the layout of its *default workspace* at /lab; a new
machine has none, so the Launcher shows. `seed()` writes a default workspace
whose one open document is learner/index.ipynb - only when there is no default
workspace yet: once the learner has arranged their lab, it is theirs.

Called by tools/start-lab.sh. The folder is JupyterLab's own
(JUPYTERLAB_WORKSPACES_DIR, else <jupyter config dir>/lab/workspaces).
"""
from __future__ import annotations

import json
import sys

INDEX = "learner/index.ipynb"


def layout(path: str = INDEX) -> dict:
    """A workspace with ``path`` open as a notebook, in front, and the file browser beside it."""
    key = f"notebook:{path}"
    return {
        "data": {
            "layout-restorer:data": {
                "main": {"dock": {"type": "tab-area", "currentIndex": 0, "widgets": [key]},
                         "current": key},
            },
            key: {"data": {"path": path, "factory": "Notebook"}},
        },
        "metadata": {"id": "default"},
    }


def seed(workspaces_dir: str | None = None) -> bool:
    """Write the default workspace if there is none; True when written."""
    from jupyterlab.commands import get_workspaces_dir
    from jupyterlab_server.workspaces_handler import WorkspacesManager

    manager = WorkspacesManager(workspaces_dir or get_workspaces_dir())
    if manager.load("default")["data"]:  # an absent workspace loads as empty data
        return False
    manager.save("default", json.dumps(layout()))
    return True


if __name__ == "__main__":
    print("lab workspace:", "the index opens at /lab" if seed(*sys.argv[1:2]) else "kept (already there)")
