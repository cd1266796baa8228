"""Live dashboards for notebooks (ipywidgets + matplotlib).

:class:`CgroupMonitor` follows any lab cgroup - or any process's cgroups - and
draws CPU, memory and pids as they change, from the same readings as
``cgroups.Cgroup.stats()``.  Other chapters may add widgets here.

Why an ``Image`` widget and not an ``Output`` widget: the monitor can run in a
background thread while other cells execute, and an ``Output`` widget captures
by hooking the kernel's *current* cell, so a thread's prints land in whatever
cell runs at that moment.  Setting an image's bytes is one comm message, safe
from any thread.  Figures are drawn with matplotlib's Agg backend, off screen.
"""
from __future__ import annotations

import io
import threading
import time
from typing import Callable

from . import cgroups
from .cgroups import Stats

METRICS = ("cpu", "memory", "pids")


def _figure(samples: list[Stats], metrics=METRICS, title: str = ""):
    """A matplotlib figure of a series of readings: one panel per metric."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    panels = [m for m in metrics if _has(samples, m)]
    # Fixed margins: matplotlib's constrained/tight layouts cost ~3x the drawing itself.
    fig = Figure(figsize=(3.4 * max(1, len(panels)), 2.6), dpi=80)
    fig.subplots_adjust(left=0.08 if len(panels) > 1 else 0.15, right=0.97, bottom=0.18,
                        top=0.80 if title else 0.88, wspace=0.25)
    if title:
        fig.suptitle(title, fontsize=10)
    if not samples or not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no readings yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    t0 = samples[0].time
    t = [s.time - t0 for s in samples]
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    last = samples[-1]
    for ax, m in zip(axes, panels):
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
        if m == "cpu":
            use = _rate([s.cpu_usage_usec for s in samples], t, 1e6)
            thr = _rate([s.cpu_throttled for s in samples], t, 1.0)
            per = _rate([s.cpu_periods for s in samples], t, 1.0)
            ax.plot(t[1:], use, label="CPU used (cores)", color="tab:blue")
            if last.cpu_quota is not None:
                ax.axhline(last.cpu_quota, ls="--", color="tab:red", label=f"quota {last.cpu_quota:g}")
            if any(per):
                frac = [a / b if b else 0.0 for a, b in zip(thr, per)]
                ax.plot(t[1:], frac, color="tab:orange", label="throttled periods (share)")
            ax.set_ylim(0, max([1.05, *use]) * 1.05)
            ax.set_title("cpu", fontsize=9)
        elif m == "memory":
            mib = [(s.memory_current or 0) / 2**20 for s in samples]
            ax.plot(t, mib, label="current (MiB)", color="tab:green")
            if last.memory_max is not None:
                ax.axhline(last.memory_max / 2**20, ls="--", color="tab:red", label="max (hard)")
            if last.memory_high is not None:
                ax.axhline(last.memory_high / 2**20, ls=":", color="tab:purple", label="high / soft")
            ax.set_ylim(bottom=0)
            ax.set_title(f"memory (oom kills: {last.oom_kills or 0})", fontsize=9)
        elif m == "pids":
            ax.plot(t, [s.pids_current or 0 for s in samples], label="pids", color="tab:brown")
            if last.pids_max is not None:
                ax.axhline(last.pids_max, ls="--", color="tab:red", label=f"pids.max {last.pids_max}")
            ax.set_ylim(bottom=0)
            ax.set_title(f"pids (forks refused: {last.pids_max_events or 0})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def _has(samples: list[Stats], metric: str) -> bool:
    key = {"cpu": "cpu_usage_usec", "memory": "memory_current", "pids": "pids_current"}[metric]
    return any(getattr(s, key) is not None for s in samples) or not samples


def _rate(values, t, scale):
    """Per-second increase between readings (a counter → a rate)."""
    out = []
    for i in range(1, len(values)):
        a, b = values[i - 1], values[i]
        dt = t[i] - t[i - 1]
        out.append(0.0 if a is None or b is None or dt <= 0 else (b - a) / scale / dt)
    return out


def png(samples: list[Stats], metrics=METRICS, title: str = "") -> bytes:
    buf = io.BytesIO()
    _figure(samples, metrics, title).savefig(buf, format="png")
    return buf.getvalue()


def summary(samples: list[Stats]) -> str:
    """One line of numbers over the readings: what the plot shows, in figures."""
    if len(samples) < 2:
        return "not enough readings"
    a, b = samples[0], samples[-1]
    wall = b.time - a.time
    parts = [f"{wall:.1f} s"]
    if a.cpu_usage_usec is not None and b.cpu_usage_usec is not None:
        cpu = (b.cpu_usage_usec - a.cpu_usage_usec) / 1e6
        parts.append(f"cpu {cpu:.2f} s = {cpu / wall:.2f} cores" if wall else f"cpu {cpu:.2f} s")
        if b.cpu_quota is not None:
            parts[-1] += f" (quota {b.cpu_quota:g})"
    if b.cpu_throttled is not None and a.cpu_throttled is not None:
        parts.append(f"throttled in {b.cpu_throttled - a.cpu_throttled} of "
                     f"{(b.cpu_periods or 0) - (a.cpu_periods or 0)} periods")
    if b.memory_current is not None:
        peak = max(s.memory_current or 0 for s in samples)
        parts.append(f"memory peak {cgroups.human(peak)}")
    if b.pids_current is not None:
        parts.append(f"pids max seen {max(s.pids_current or 0 for s in samples)}")
    return "; ".join(parts)


class CgroupMonitor:
    """A live dashboard of one cgroup: CPU use vs quota and throttling, memory vs limits, pids.

    ``source`` is a :class:`cgroups.Cgroup`, a PID (its cgroups are followed),
    or any callable returning a :class:`cgroups.Stats`.

    Two ways to drive it:

    * ``mon.follow(seconds)`` samples in the calling cell, updating the view
      live, and returns the readings (deterministic: used by the notebooks);
    * ``mon.start()`` / ``mon.stop()`` samples in a background thread while
      you run other cells (for the workshop).
    """

    def __init__(self, source, *, interval: float = 0.2, window: int = 150,
                 metrics=METRICS, title: str = "", redraw_every: float = 0.5):
        if isinstance(source, cgroups.Cgroup):
            self._read: Callable[[], Stats] = source.stats
            title = title or source.name
        elif isinstance(source, int):
            places = cgroups.places_of(source)
            self._read = lambda: cgroups.read_stats(places)
            title = title or f"cgroups of PID {source}"
        elif callable(source):
            self._read = source
        else:
            raise TypeError("source: a cgroups.Cgroup, a PID or a callable returning Stats")
        self.interval = interval
        self.redraw_every = redraw_every
        self._drawn = 0.0
        self.window = window
        self.metrics = tuple(metrics)
        self.title = title
        self.samples: list[Stats] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._view = None

    # -- the widget ----------------------------------------------------------------
    @property
    def view(self):
        """The ipywidgets box (an image and a line of numbers); made on first use."""
        if self._view is None:
            import ipywidgets as w
            self._image = w.Image(format="png", value=png([], self.metrics, self.title))
            self._label = w.HTML(value="<code>waiting for readings</code>")
            self._view = w.VBox([self._image, self._label])
        return self._view

    def _ipython_display_(self):
        from IPython.display import display
        display(self.view)

    def _maybe_redraw(self) -> None:
        # Drawing costs far more than reading the files: redraw at most every
        # redraw_every seconds, sample at every interval.
        if time.monotonic() - self._drawn >= self.redraw_every:
            self._redraw()

    def _redraw(self) -> None:
        self._drawn = time.monotonic()
        if self._view is None:
            return
        self._image.value = png(self.samples, self.metrics, self.title)
        self._label.value = f"<code>{summary(self.samples)}</code>"

    # -- sampling --------------------------------------------------------------------
    def sample(self) -> Stats | None:
        try:
            s = self._read()
        except Exception:  # noqa: BLE001 - the cgroup went away: stop following it
            return None
        self.samples.append(s)
        del self.samples[:-self.window]
        return s

    def follow(self, seconds: float, until: Callable[[], bool] | None = None) -> list[Stats]:
        """Sample for ``seconds`` (or until ``until()`` is true), redrawing as it goes."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.sample() is None or (until and until()):
                break
            self._maybe_redraw()
            time.sleep(self.interval)
        self.sample()
        self._redraw()
        return list(self.samples)

    def start(self) -> "CgroupMonitor":
        """Sample in a background thread (a daemon: it never keeps the kernel alive)."""
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                if self.sample() is None:
                    break
                self._maybe_redraw()
                self._stop.wait(self.interval)
            self._redraw()

        self._thread = threading.Thread(target=loop, name="jap-cgroup-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Stats]:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        return list(self.samples)

    def figure(self):
        """The current readings as a matplotlib Figure (for your own annotations)."""
        return _figure(self.samples, self.metrics, self.title)

    def snapshot(self):
        """The current readings as a static PNG for the notebook (saved notebooks show it)."""
        from IPython.display import Image
        return Image(data=png(self.samples, self.metrics, self.title))

    def summary(self) -> str:
        return summary(self.samples)
