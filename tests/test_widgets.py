"""The cgroup monitor: its SVG is drawn from the readings, scales with its output,
and the live view is updated from a real cgroup's files."""
import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from justaprocess import cgroups, widgets
from justaprocess.cgroups import Stats

SVG = "{http://www.w3.org/2000/svg}"


def readings(n=11, quota=0.5):
    """A busy process capped at ``quota`` cores, read every 0.1 s."""
    return [Stats(time=100 + i / 10, cpu_usage_usec=int(i * quota * 1e5), cpu_quota=quota,
                  cpu_periods=i, cpu_throttled=i, memory_current=(8 + i) << 20,
                  memory_max=64 << 20, pids_current=1 + i // 5, pids_max=10)
            for i in range(n)]


def parse(html):
    root = ET.fromstring(html)  # well-formed XML, or this raises
    return root, root.findall(f".//{SVG}svg")


def test_one_panel_per_metric_drawn_from_the_readings():
    root, panels = parse(widgets.svg(readings(), widgets.METRICS, "a <title>"))
    assert len(panels) == 3
    titles = [t.text for p in panels for t in p.iter(f"{SVG}text")]
    assert "cpu" in titles and "memory (oom kills: 0)" in titles and "a <title>" not in titles
    assert "a <title>" in "".join(root.itertext())  # escaped in the markup, shown as text
    cpu = panels[0]
    lines = cpu.findall(f"{SVG}polyline")
    used = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert len(used) == 10                      # a rate: one point per pair of readings
    assert len({y for _, y in used}) == 1       # 0.5 cores all along: a flat line
    quota = [ln for ln in cpu.findall(f"{SVG}line") if ln.get("stroke-dasharray")]
    assert float(quota[0].get("y1")) == pytest.approx(used[0][1], abs=0.2)  # on the quota line
    xs = [x for x, _ in used]
    assert xs == sorted(xs) and xs[0] < xs[-1]


def test_scales_with_its_output_and_never_past_its_natural_size():
    _, panels = parse(widgets.svg(readings(), ("cpu", "memory")))
    for p in panels:
        assert p.get("viewBox") == f"0 0 {widgets.PANEL_W} {widgets.PANEL_H}"
        assert f"max-width:{widgets.PANEL_W}px" in p.get("style") and "height:auto" in p.get("style")
        assert p.get("width") is None and p.get("height") is None  # no fixed pixel size


def test_empty_and_single_readings_draw_a_placeholder():
    for samples, text in (([], "no readings yet"), (readings(1), "one reading")):
        root, panels = parse(widgets.svg(samples))
        assert len(panels) == 3 and text in "".join(root.itertext())


def test_a_missing_controller_has_no_panel():
    samples = [Stats(time=i, memory_current=1 << 20) for i in range(3)]
    _, panels = parse(widgets.svg(samples))
    assert len(panels) == 1


def test_nice_ticks():
    assert widgets._nice_ticks(1.05) == [0, 0.5, 1.0, 1.5]
    assert widgets._nice_ticks(130) == [0, 50, 100, 150]
    assert widgets._nice_ticks(0) == [0, 0.25, 0.5, 0.75, 1.0]


def test_snapshot_offers_svg_and_a_png_fallback():
    data, meta = widgets.Snapshot(readings(), ("cpu",), "t")._repr_mimebundle_()
    image = ET.fromstring(data["image/svg+xml"])  # a standalone SVG document, not HTML
    assert image.tag == f"{SVG}svg" and image.get("width") == str(widgets.PANEL_W)
    assert len(image.findall(f"{SVG}polyline")) == 2  # cpu used, throttled share
    import base64
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")
    assert meta["image/png"]["width"] > 0 and "cores" in data["text/plain"]


def test_bad_source_is_a_clear_error():
    with pytest.raises(TypeError, match="a cgroups.Cgroup, a PID or a callable"):
        widgets.CgroupMonitor("nope")


@pytest.mark.root
def test_live_view_follows_a_real_cgroup(own_objects):
    pytest.importorskip("ipywidgets")
    with cgroups.Cgroup(cpu=0.2, pids=5) as cg:
        mon = widgets.CgroupMonitor(cg, interval=0.05, metrics=("cpu", "pids"), redraw_every=0)
        plot, label = mon.view.children
        assert "no readings yet" in plot.value
        busy = cg.spawn([sys.executable, "-c", "while True: pass"])
        try:
            got = mon.follow(0.6)
        finally:
            busy.stop()
    assert len(got) >= 3 and got[-1].cpu_quota == pytest.approx(0.2)
    assert "no readings yet" not in plot.value and plot.value.count("<polyline") >= 2
    assert "pids.max 5" in plot.value and "quota 0.2" in plot.value
    assert re.search(r"cpu [0-9.]+ s = [0-9.]+ cores \(quota 0.2\)", label.value)
    assert os.path.basename(cg.name) in mon.title
