#!/usr/bin/env python3
"""CPU cost of the live cgroup dashboard at 4 Hz, in a real Jupyter kernel.

  svg          justaprocess.widgets.CgroupMonitor as the notebooks use it: readings
               drawn as SVG into an HTML widget (the lab's own drawing)
  matplotlib   the path it replaced: the same monitor drawing matplotlib PNGs into
               an Image widget (the peer, measured in the same run)
  psutil poll  a plain poll of the worker's CPU and memory with psutil, no drawing
               (the floor: what any live view costs at least)

Each runs in the same kernel for SECONDS, sampling and redrawing every 0.25 s,
on a lab cgroup (memory 128M, cpu 0.5, pids 10) with a small worker in it; the
window of 150 readings is filled first, so every frame draws a full window
(the steady state). The kernel's own CPU time (all its threads, read from
/proc by psutil; its children excluded) is measured over each phase, less the
idle kernel's, and printed as a share of one core and as a ratio to the
matplotlib path. The last line is the verdict: the issue's bar is at most 2% of
a core. Run as root:  .venv/bin/python bench/dashboard.py [-s 10]
Not a timed test.  The cgroup and the worker are registered with the lab and removed.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers"))

from justaprocess import lab  # noqa: E402

HZ = 4
BAR = 0.02  # at most 2% of one core

SETUP = f'''
import os, sys, threading, time
import ipywidgets as w, psutil
from IPython.display import display
from justaprocess import cgroups, widgets

cg = cgroups.Cgroup(memory="128M", cpu=0.5, pids=10).create()
worker = cg.spawn([sys.executable, "-c",
                   "import time\\nb = []\\nwhile True:\\n    b = (b + [bytearray(1 << 16)])[-400:]\\n"
                   "    time.sleep(0.02)"], note="bench/dashboard.py worker")

class MatplotlibMonitor(widgets.CgroupMonitor):
    """The monitor as it was: matplotlib PNGs pushed into an Image widget."""
    @property
    def view(self):
        if self._view is None:
            self._image = w.Image(format="png", value=widgets.png([], self.metrics, self.title))
            self._label = w.HTML(value="<code>waiting for readings</code>")
            self._view = w.VBox([self._image, self._label])
        return self._view

    def _redraw(self):
        self._drawn = time.monotonic()
        if self._view is not None:
            self._image.value = widgets.png(self.samples, self.metrics, self.title)
            self._label.value = f"<code>{{widgets.summary(self.samples)}}</code>"

def full(mon):
    """Fill the window with real readings, so every frame draws 150 points per line."""
    while len(mon.samples) < mon.window:
        mon.sample()
        time.sleep(0.001)
    return mon

class Poll:
    """A plain psutil poll of the worker, no drawing."""
    def __init__(self):
        self._stop = threading.Event()
    def start(self):
        p = psutil.Process(worker.pid)
        def loop():
            while not self._stop.wait({1 / HZ}):
                p.cpu_times(); p.memory_info(); p.num_threads()
        threading.Thread(target=loop, daemon=True).start()
        return self
    def stop(self):
        self._stop.set()

widgets.png([])  # import matplotlib and draw once before measuring
print(os.getpid())
'''

PHASES = {
    "idle": ("run = None", "None"),
    "svg": (f"run = full(widgets.CgroupMonitor(cg, interval={1 / HZ}, redraw_every={1 / HZ}, "
            "title='bench')); display(run); run.start()", "run.stop()"),
    "matplotlib": (f"run = full(MatplotlibMonitor(cg, interval={1 / HZ}, redraw_every={1 / HZ}, "
                   "title='bench')); display(run); run.start()", "run.stop()"),
    "psutil poll": ("run = Poll().start()", "run.stop()"),
}


def execute(kc, code: str) -> str:
    out = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise SystemExit("kernel error:\n" + "\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"kernel error: {reply['content'].get('evalue')}")
    return "".join(out)


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(kc, kernel: psutil.Process, seconds: float) -> tuple[float, int]:
    """Kernel CPU seconds per second over ``seconds``, draining its messages as a frontend does."""
    c0, t0, msgs = cpu(kernel), time.monotonic(), 0
    end = t0 + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            kc.get_iopub_msg(timeout=left)  # wakes on each message: no sleep
            msgs += 1
        except queue.Empty:
            pass
    return (cpu(kernel) - c0) / (time.monotonic() - t0), msgs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-s", "--seconds", type=float, default=10.0, help="per phase (default 10)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (the lab's VM): the dashboard follows a lab cgroup")
        return 2
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    kpid = None
    shares: dict[str, tuple[float, int]] = {}
    try:
        kpid = int(execute(kc, SETUP).split()[-1])
        kernel = psutil.Process(kpid)
        for name, (start, stop) in PHASES.items():
            execute(kc, start)
            shares[name] = measure(kc, kernel, args.seconds)
            execute(kc, stop)
        execute(kc, "worker.stop(); cg.remove()")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        if kpid:
            lab.cleanup(owner=kpid)  # what the kernel registered, had it failed halfway
    idle = shares.pop("idle")[0]
    base = shares["matplotlib"][0] - idle
    print(f"kernel CPU at {HZ} Hz, {args.seconds:g} s each, less the idle kernel's "
          f"({idle * 100:.2f}% of a core)")
    for name, (share, msgs) in shares.items():
        print(f"  {name:<12} {(share - idle) * 100:6.2f}% of a core  "
              f"({(share - idle) / base:.3f}x matplotlib; {msgs} messages)")
    svg = max(shares["svg"][0] - idle, 0.0)
    ok = svg <= BAR
    print(f"dashboard (svg) at {HZ} Hz: {svg * 100:.2f}% of a core (bar {BAR * 100:g}%), "
          f"{svg / base:.3f}x the matplotlib path: {'ok' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
