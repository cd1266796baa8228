"""Live dashboards for notebooks (ipywidgets; SVG drawn here, matplotlib on demand).

:class:`CgroupMonitor` follows any lab cgroup - or any process's cgroups - and
draws CPU, memory and pids as they change, from the same readings as
``cgroups.Cgroup.stats()``.  Other chapters may add widgets here.

Why an ``HTML`` widget holding an SVG, and not an ``Output`` widget: the monitor
can run in a background thread while other cells execute, and an ``Output``
widget captures by hooking the kernel's *current* cell, so a thread's prints
land in whatever cell runs at that moment.  Setting an HTML widget's value is
one comm message, safe from any thread.

Why SVG drawn here, and not matplotlib PNGs in an ``Image`` widget (as before):
a PNG has a fixed pixel size, and the lab stretched it to the output's width
(a 272x208 picture drawn at 964x737: blurry, the summary line pushed off
screen).  An SVG is vector: sharp at any width; it scales down to a narrow
output and never grows past its natural size.  Writing a few polylines as text
also costs about a hundredth of a matplotlib draw (bench/dashboard.py), so
the dashboard can redraw at 4 Hz.  ``figure()`` still gives a matplotlib
figure for your own annotations.
"""
from __future__ import annotations

import html
import io
import math
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
                ax.axhline(last.memory_high / 2**20, ls=":", color="tab:purple", label="high (throttle)")
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


# -- SVG, drawn here ------------------------------------------------------------------
# matplotlib's "tab" colours, so the live view and figure() look alike.
_COLOURS = {"blue": "#1f77b4", "orange": "#ff7f0e", "green": "#2ca02c", "red": "#d62728",
            "purple": "#9467bd", "brown": "#8c564b"}
# One panel's natural size, in CSS pixels: the SVG is drawn at this size (a
# viewBox) and shown at most this wide, so text keeps its size on a wide output.
PANEL_W, PANEL_H = 320, 196
_PLOT = (46, 22, 258, 140)  # x, y, width, height of the plotting area inside a panel


def _nice_ticks(top: float, n: int = 4) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 x 10^k) up to at least ``top``."""
    if not top > 0:
        top = 1.0
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _series(samples: list[Stats], metric: str):
    """(title, [(label, colour, xs, ys, dash)], [(label, colour, y, dash)]) of one panel."""
    t0 = samples[0].time if samples else 0.0
    t = [s.time - t0 for s in samples]
    last = samples[-1] if samples else Stats(time=0.0)
    lines, limits = [], []
    if metric == "cpu":
        use = _rate([s.cpu_usage_usec for s in samples], t, 1e6)
        lines.append(("CPU used (cores)", "blue", t[1:], use))
        if last.cpu_quota is not None:
            limits.append((f"quota {last.cpu_quota:g}", "red", last.cpu_quota, "6 4"))
        per = _rate([s.cpu_periods for s in samples], t, 1.0)
        if any(per):
            thr = _rate([s.cpu_throttled for s in samples], t, 1.0)
            lines.append(("throttled periods (share)", "orange", t[1:],
                          [a / b if b else 0.0 for a, b in zip(thr, per)]))
        return "cpu", lines, limits, 1.0  # at least one core tall: a quota reads as a share
    if metric == "memory":
        lines.append(("current (MiB)", "green", t, [(s.memory_current or 0) / 2**20 for s in samples]))
        if last.memory_max is not None:
            limits.append(("max (hard)", "red", last.memory_max / 2**20, "6 4"))
        if last.memory_high is not None:
            limits.append(("high (throttle)", "purple", last.memory_high / 2**20, "2 3"))
        return f"memory (oom kills: {last.oom_kills or 0})", lines, limits, 1.0
    lines.append(("pids", "brown", t, [s.pids_current or 0 for s in samples]))
    if last.pids_max is not None:
        limits.append((f"pids.max {last.pids_max}", "red", last.pids_max, "6 4"))
    return f"pids (forks refused: {last.pids_max_events or 0})", lines, limits, 1.0


def _panel(samples: list[Stats], metric: str, dx: float, dy: float) -> list[str]:
    title, lines, limits, floor = _series(samples, metric)
    px, py, pw, ph = _PLOT
    x0, y0 = dx + px, dy + py
    span = max([1.0] + [xs[-1] for _, _, xs, _ in lines if xs])
    top = max([floor] + [v for _, _, _, ys in lines for v in ys] + [y for _, _, y, _ in limits]) * 1.05
    yt = _nice_ticks(top)
    ymax = yt[-1]
    xt = _nice_ticks(span, 5)
    xmax = xt[-1]

    def X(v):
        return x0 + pw * v / xmax

    def Y(v):
        return y0 + ph * (1 - v / ymax)

    out = [f'<text x="{dx + px + pw / 2:.1f}" y="{dy + 14}" text-anchor="middle" '
           f'font-size="12">{html.escape(title)}</text>']
    for v in yt:  # horizontal grid and y labels
        out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" '
                   f'stroke="currentColor" stroke-opacity="0.15"/>')
        out.append(f'<text x="{x0 - 4}" y="{Y(v) + 3.5:.1f}" text-anchor="end" font-size="10">'
                   f'{_fmt(v)}</text>')
    for v in xt:
        out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0}" y2="{y0 + ph}" '
                   f'stroke="currentColor" stroke-opacity="0.15"/>')
        out.append(f'<text x="{X(v):.1f}" y="{y0 + ph + 13}" text-anchor="middle" font-size="10">'
                   f'{_fmt(v)}</text>')
    out.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 28}" text-anchor="middle" '
               f'font-size="10">seconds</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" '
               f'stroke="currentColor" stroke-opacity="0.5"/>')
    for label, colour, y, dash in limits:
        out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{Y(y):.1f}" y2="{Y(y):.1f}" '
                   f'stroke="{_COLOURS[colour]}" stroke-width="1.5" stroke-dasharray="{dash}"/>')
    for label, colour, xs, ys in lines:
        if len(xs) >= 1:
            pts = " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in zip(xs, ys))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{_COLOURS[colour]}" '
                       f'stroke-width="1.8" stroke-linejoin="round"/>')
    legend = [(label, colour, "") for label, colour, _, _ in lines] + \
             [(label, colour, dash) for label, colour, _, dash in limits]
    if legend:  # top left, inside the plot, on the page's background so lines do not hide it
        wide = max(len(label) for label, _, _ in legend)
        out.append(f'<rect x="{x0 + 2}" y="{y0 + 2}" width="{28 + 5.6 * wide:.0f}" '
                   f'height="{12 * len(legend) + 4}" rx="2" '
                   f'style="fill:var(--jp-layout-color0,#fff);fill-opacity:0.85"/>')
    for i, (label, colour, dash) in enumerate(legend):
        ly = y0 + 11 + 12 * i
        out.append(f'<line x1="{x0 + 6}" x2="{x0 + 22}" y1="{ly - 3.5}" y2="{ly - 3.5}" '
                   f'stroke="{_COLOURS[colour]}" stroke-width="1.8"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        out.append(f'<text x="{x0 + 26}" y="{ly}" font-size="9.5">{html.escape(label)}</text>')
    return out


def svg(samples: list[Stats], metrics=METRICS, title: str = "") -> str:
    """The readings as HTML: a title and one SVG panel per metric, side by side.

    Vector, so sharp at any width. Each panel is shown at most at its natural
    size (PANEL_W x PANEL_H pixels) and shrinks down to 240 pixels wide; on a
    narrower output the panels wrap onto further rows instead of shrinking
    further. Text and axes take the notebook's text colour (``currentColor``),
    so it reads on light and dark themes alike.
    """
    panels = [m for m in metrics if _has(samples, m)]  # all of them until the first reading
    colour = "color:var(--jp-content-font-color1,#222);font-family:var(--jp-ui-font-family,sans-serif)"
    out = [f'<div class="jap-plot" role="img" aria-label="{html.escape(title or "cgroup readings")}" '
           f'style="{colour};line-height:normal;white-space:normal">']
    if title:
        out.append(f'<div style="font-size:13px;margin:2px 0 0 4px">{html.escape(title)}</div>')
    out.append('<div style="display:flex;flex-wrap:wrap;gap:0 8px">')
    for i, m in enumerate(panels):
        out.append(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PANEL_W} {PANEL_H}" '
                   f'style="flex:1 1 240px;max-width:{PANEL_W}px;height:auto" fill="currentColor">')
        out += _panel(samples, m, 0, 0)
        if len(samples) < 2 and i == 0:
            px, py, pw, ph = _PLOT
            out.append(f'<text x="{px + pw / 2}" y="{py + ph / 2}" text-anchor="middle" '
                       f'font-size="12">{"no readings yet" if not samples else "one reading"}</text>')
        out.append("</svg>")
    out.append("</div></div>")
    return "\n".join(out)


def svg_image(samples: list[Stats], metrics=METRICS, title: str = "") -> str:
    """The same panels as one standalone SVG document (image/svg+xml), for static output.

    An SVG shown as an image does not see the page's styles: drawn dark on white.
    """
    panels = [m for m in metrics if _has(samples, m)]
    top = 20 if title else 0
    width, height = PANEL_W * len(panels), PANEL_H + top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" fill="#222" color="#222">',
           '<rect width="100%" height="100%" fill="#fff"/>']
    if title:
        out.append(f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="13">'
                   f'{html.escape(title)}</text>')
    for i, m in enumerate(panels):
        out += _panel(samples, m, PANEL_W * i, top)
    out.append("</svg>")
    return "\n".join(out)

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
        """The ipywidgets box (an SVG plot and a line of numbers); made on first use."""
        if self._view is None:
            import ipywidgets as w
            self._plot = w.HTML(value=svg([], self.metrics, self.title))
            self._plot.add_class("jap-monitor-plot")
            self._label = w.HTML(value="<code>waiting for readings</code>")
            self._label.add_class("jap-monitor-summary")
            self._view = w.VBox([self._plot, self._label])
            self._view.add_class("jap-monitor")
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
        self._plot.value = svg(self.samples, self.metrics, self.title)
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

    def snapshot(self) -> "Snapshot":
        """The current readings as a static picture for the notebook (saved notebooks show it)."""
        return Snapshot(list(self.samples), self.metrics, self.title)

    def summary(self) -> str:
        return summary(self.samples)


class Snapshot:
    """A static picture of readings: SVG, with a PNG beside it for where SVG is not shown.

    JupyterLab renders SVG output only in trusted notebooks (an SVG can carry
    script); a saved notebook opened afresh is untrusted, and falls back to the
    PNG, drawn at twice its displayed size so it stays sharp on HiDPI screens.
    """

    def __init__(self, samples: list[Stats], metrics=METRICS, title: str = ""):
        self.samples, self.metrics, self.title = samples, tuple(metrics), title

    def _repr_mimebundle_(self, include=None, exclude=None):
        import base64
        fig = _figure(self.samples, self.metrics, self.title)
        w, h = fig.get_size_inches() * fig.dpi
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi * 2)
        data = {"image/svg+xml": svg_image(self.samples, self.metrics, self.title),
                "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                "text/plain": f"<cgroup readings: {summary(self.samples)}>"}
        return data, {"image/png": {"width": round(w), "height": round(h)}}
