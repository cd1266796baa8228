"""Checks of 15 · Incidents.

Each exercise is one incident: the diagnosis (``scenarios.Diagnosis``) is judged by
the incident's scenario against the live kernel (its cgroup files, /proc, its
mounts), hints escalate with the wrong attempts, and every attempt also goes to
the workshop roster with the seconds since the incident started
(``incidents.Incident.judge``).
"""
from __future__ import annotations

import contextlib

from .. import incidents as _incidents
from ..scenarios import Diagnosis
from . import Rows, exercise, run_first


def _judge(diagnosis, incident):
    if incident is None or getattr(incident, "target", None) is None:
        raise run_first("the cell that starts the incident")
    return incident.judge(diagnosis)


@exercise(1, context=("incident",), title="warm-up: the same incident for everyone")
def check_warmup(diagnosis, incident):
    return _judge(diagnosis, incident)


@exercise(2, context=("incident",), title="your first incident")
def check_first(diagnosis, incident):
    return _judge(diagnosis, incident)


@exercise(3, context=("incident",), title="your second incident")
def check_second(diagnosis, incident):
    return _judge(diagnosis, incident)


# --- the table of right and wrong answers (tests/test_exercises.py) ------------------------

def _setup(name):
    @contextlib.contextmanager
    def ctx():
        with _incidents.Incident(name, "table") as inc:
            yield {"incident": inc}
    return ctx


def _rows(name, wrong_cause, wrong_evidence):
    def dx(c, **kw):
        return {"diagnosis": Diagnosis(c["incident"].scenario.cause, kw)}
    return Rows(setup=_setup(name),
                right=lambda c: {"diagnosis": c["incident"].answer()},
                wrong={
                    "type": lambda c: {"diagnosis": "the limit"},
                    "unknown-cause": lambda c: {"diagnosis": Diagnosis("gremlins", {})},
                    "wrong-cause": lambda c: {"diagnosis": Diagnosis(wrong_cause, {})},
                    "evidence-missing": lambda c: dx(c),
                    "evidence-wrong": lambda c: dx(c, **wrong_evidence),
                })


TABLE = {
    1: _rows("zombies", "pids-limit", {"parent": 2}),
    2: _rows("cpu-throttled", "memory-limit", {"limit": "cpu", "cores": 1.5}),
    3: _rows("volume-full", "volume-missing", {"path": "/tmp"}),
}
