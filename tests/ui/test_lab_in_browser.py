"""The course as a learner meets it: JupyterLab in a real browser (`make test-ui`).

Starts the lab as `make lab` does (tools/start-lab.sh, on a free port), opens
the index from the URL it prints, in Debian's chromium driven by Playwright,
and runs, cell by cell, the learner copy of every chapter whose cells show a
widget (found in the stored chapters' outputs, so a new chapter with a widget
is covered without editing this file). It asserts that

* every widget renders as a widget: not "Error displaying widget", not the
  model's text (what the lab shows when the widget extension is missing);
* a widget followed live (a cell calling ``.follow(``: 03's cgroup monitor, 14's
  fleet table) changes what it shows while its cell runs;
* in the capability widget, ticking a box changes the probe result;
* the browser console shows no widget errors.

Screenshots of every widget and of each notebook go to build/ui-screenshots/
(JAP_UI_SHOTS), with the console log, for a person to look at. The lab server
is stopped by its PID; what its kernels registered must be gone after it.
The learner copies are generated afresh for the run (cells are found by their
index in the chapter) and the ones there before are put back afterwards; autosave
is off (the lab's settings live in a temporary folder here), and the copies are
compared byte for byte after the run: the lab must not have saved over them.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import nbformat
import psutil
import pytest

from justaprocess import lab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NB_DIR = os.path.join(ROOT, "notebooks")
LEARNER = os.path.join(NB_DIR, "learner")
SHOTS = os.environ.get("JAP_UI_SHOTS", os.path.join(ROOT, "build", "ui-screenshots"))
CHROMIUM = os.environ.get("JAP_CHROMIUM", "/usr/bin/chromium")  # Debian's (system-packages.txt)
WIDGET = "application/vnd.jupyter.widget-view+json"
# Debian's chromium as root, on a machine without a network: no sandbox (root),
# no GPU, and none of the background connections it would try at start.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CELL_TIMEOUT_MS = 120_000   # nbval's per-cell budget (pytest.ini)
# Console messages that name the widget machinery.
WIDGET_ERROR = re.compile(r"widget|comm|jupyter-widgets|model", re.I)

pytestmark = pytest.mark.root


def widget_chapters() -> list[tuple[str, dict[int, int], set[int], int]]:
    """(chapter, {cell index: number of widget outputs}, cells that follow a live widget,
    number of capability widgets: cells calling ``caps.widget(``).

    Read from the stored chapters (they are run with outputs, CONTRIBUTING.md):
    the learner copies have the same cells in the same order.
    """
    found = []
    for name in sorted(os.listdir(NB_DIR)):
        if not re.match(r"\d\d-.*\.ipynb$", name):
            continue
        nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
        cells = {i: sum(WIDGET in o.get("data", {}) for o in c.get("outputs", []))
                 for i, c in enumerate(nb.cells) if c.cell_type == "code"}
        cells = {i: n for i, n in cells.items() if n}
        live = {i for i in cells if ".follow(" in nb.cells[i].source}
        probes = sum(len(re.findall(r"\b(?:caps|capabilities)\.widget\(", nb.cells[i].source))
                     for i in cells)
        if cells:
            found.append((name, cells, live, probes))
    return found


CHAPTERS = widget_chapters()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """tools/start-lab.sh as `make lab` runs it, on a port of its own; stopped by PID."""

    def __init__(self, settings: str):
        self.port = free_port()
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=os.path.join(settings, "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=os.path.join(settings, "workspaces"))
        self.proc = subprocess.Popen(["bash", "tools/start-lab.sh", str(self.port)], cwd=ROOT,
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        self.kernels: set[tuple[int, float]] = set()

    def _read(self, stream):
        for line in stream:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")  # end of one stream

    def url(self, timeout: float = 180) -> str:
        """The URL start-lab.sh prints, once the server says it is running."""
        url, ended = None, 0
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("the lab did not start:\n" + "".join(self.log)) from None
            if line == "":
                ended += 1
                if ended == 2:
                    raise AssertionError("the lab exited:\n" + "".join(self.log))
                continue
            m = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)
            if m and url is None:
                url = m.group(1)
            if url and "is running at" in line:
                break
        assert f":{self.port}/" in url, url
        if "token=" not in url:  # the printed URL may leave the token out: it is in the state folder
            token = open(os.path.join(lab.state_dir(), "jupyter-token")).read().strip()
            url += ("&" if "?" in url else "?") + "token=" + token
        return url

    def note_kernels(self):
        for c in psutil.Process(self.proc.pid).children(recursive=True):
            self.kernels.add((c.pid, c.create_time()))

    def stop(self):
        """SIGTERM to the server's PID: Jupyter shuts its kernels down, then exits."""
        if self.proc.poll() is None:
            self.note_kernels()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid, created in self.kernels:  # a kernel that outlived its server, by PID
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    p.kill()
                    p.wait(10)
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def shots():
    shutil.rmtree(SHOTS, ignore_errors=True)
    os.makedirs(SHOTS)
    return SHOTS


@pytest.fixture(scope="module")
def browser_lab(shots):
    sync_api = pytest.importorskip("playwright.sync_api", reason="run `make test-ui` (installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: run `make test-ui` (installs Debian's chromium)")
    # The learner copies as the chapters are now (the test maps cells by index); a learner's
    # own copies are kept aside (in memory and in build/ui-learner-backup/) and put back after.
    os.makedirs(LEARNER, exist_ok=True)
    own = {n: open(os.path.join(LEARNER, n), "rb").read()
           for n in os.listdir(LEARNER) if n.endswith(".ipynb")}
    backup = os.path.join(ROOT, "build", "ui-learner-backup")
    shutil.rmtree(backup, ignore_errors=True)
    os.makedirs(backup)
    for n, data in own.items():
        with open(os.path.join(backup, n), "wb") as f:
            f.write(data)
    subprocess.run([sys.executable, "tools/notebooks.py", "learner", "--force"], cwd=ROOT, check=True)
    before = {n: open(os.path.join(LEARNER, n), "rb").read()
              for n in os.listdir(LEARNER) if n.endswith(".ipynb")}
    settings = tempfile.mkdtemp(prefix="jap-test-ui-")
    # No autosave; every cell in the page (the default windowing attaches cells lazily,
    # and the test finds cells by their index in the notebook).
    for plugin, values in (("@jupyterlab/docmanager-extension/plugin", {"autosave": False}),
                           ("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"})):
        path = os.path.join(settings, "settings", plugin + ".jupyterlab-settings")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(values, f)
    server = Lab(settings)
    console: list[str] = []
    try:
        url = server.url()
        with sync_api.sync_playwright() as pw:
            # Debian's chromium, started in a network namespace of its own (chromium_netns.py)
            browser = pw.chromium.launch(
                executable_path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "chromium_netns.py"),
                headless=True, args=FLAGS,
                env=dict(os.environ, JAP_UI_PORT=str(server.port), JAP_CHROMIUM=CHROMIUM))
            page = browser.new_page(viewport={"width": 1366, "height": 1000})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            # The plain /lab URL (what people type) opens the course index, not the Launcher.
            plain = browser.new_page(viewport={"width": 1366, "height": 1000})
            plain.goto(re.sub(r"/lab/tree/[^?]*", "/lab", url))
            plain.locator("#jupyterlab-splash").wait_for(state="detached", timeout=CELL_TIMEOUT_MS)
            plain.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current",
                          has_text="index.ipynb").wait_for()
            idle(plain)
            panel(plain).locator(".jp-RenderedMarkdown").first.wait_for()
            plain.screenshot(path=os.path.join(shots, "lab-plain-url.png"))
            assert not plain.locator(".jp-Launcher:visible").count(), "the plain /lab URL shows the Launcher"
            plain.close()
            page.goto(url)  # what make lab prints
            page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=CELL_TIMEOUT_MS)
            idle(page)  # the index's kernel: the lab has finished opening
            yield page, server, console
            browser.close()
    finally:
        server.stop()
        with open(os.path.join(shots, "console.log"), "w") as f:
            f.write("\n".join(console) + "\n")
        with open(os.path.join(shots, "lab.log"), "w") as f:
            f.write("".join(server.log))
        shutil.rmtree(settings, ignore_errors=True)
        changed = [n for n, data in before.items()
                   if open(os.path.join(LEARNER, n), "rb").read() != data]
        for n in before:  # as they were: the learner's own, or none
            if n in own:
                with open(os.path.join(LEARNER, n), "wb") as f:
                    f.write(own[n])
            else:
                os.unlink(os.path.join(LEARNER, n))
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(os.path.join(LEARNER, ".ipynb_checkpoints"), ignore_errors=True)
        left = [e for pid, _ in server.kernels for e in lab.cleanup(owner=pid)]
        assert not changed, f"the lab saved over learner copies (the earlier ones are back): {changed}"
        assert not left, f"the kernels left lab objects behind (now removed): {left}"


def idle(page):
    """Wait for "Idle" in the status bar (the kernel of the notebook in front)."""
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(
        timeout=CELL_TIMEOUT_MS)


def panel(page):
    """The notebook in the front tab."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def prompt(cell) -> str:
    return cell.locator(".jp-InputArea-prompt").inner_text().strip()


# A MutationObserver records, per cell, the distinct texts its widgets showed while the
# cell was still running ("[*]"): a live view updating, as the browser saw it.
WATCH_LIVE = """() => {
  window.japLive = {};
  const obs = new MutationObserver(muts => {
    const done = new Set();
    for (const m of muts) {
      const el = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      const cell = el && el.closest && el.closest('.jp-CodeCell');
      if (!cell || done.has(cell) || !el.closest('.jupyter-widgets')) continue;
      done.add(cell);
      const p = cell.querySelector('.jp-InputArea-prompt');
      if (!p || !p.textContent.includes('*')) continue;
      const cells = [...cell.parentElement.children].filter(c => c.classList.contains('jp-Cell'));
      const i = cells.indexOf(cell);
      const text = [...cell.querySelectorAll('.jp-Cell-outputArea .jupyter-widgets')]
        .map(w => w.textContent).join('|');
      (window.japLive[i] = window.japLive[i] || new Set()).add(text);
    }
  });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
LIVE_STATES = """() => Object.fromEntries(Object.entries(window.japLive).map(([k, v]) => [k, v.size]))"""


def open_chapter(page, name: str):
    """From the index (open in the lab), follow its link to the learner copy of ``name``."""
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=CELL_TIMEOUT_MS)
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="index.ipynb")
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    panel(page).locator(f'a[href*="{name}"]').first.click()
    # The lab may still bring the index to the front (it opens the URL's document late):
    # bring the chapter's tab to the front, as a learner would.
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=name)
    tab.wait_for()
    idle(page)
    tab.click()
    page.locator(".lm-TabBar-tab.lm-mod-current", has_text=name).wait_for()
    nb = panel(page)
    nb.locator(".jp-Cell").first.wait_for()
    return nb


def run_cell_by_cell(page, nb, chapter: str, shots: str) -> None:
    """Run each code cell with Shift+Enter and wait for it (an error does not stop the rest)."""
    cells_in_file = nbformat.read(os.path.join(LEARNER, chapter), as_version=4).cells
    cells = nb.locator(".jp-Notebook .jp-Cell")
    cells.nth(len(cells_in_file) - 1).wait_for(state="attached")
    assert cells.count() == len(cells_in_file), \
        f"{chapter}: {cells.count()} cells in the page, {len(cells_in_file)} in the file"
    # A cell run before the kernel is connected is silently not run.
    idle(page)
    current = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    assert chapter in current.inner_text(), f"{current.inner_text()!r} is in front, not {chapter}"
    for i, source in enumerate(cells_in_file):
        if source.cell_type != "code":
            continue
        cell = cells.nth(i)
        cell.locator(".jp-InputArea-prompt").click()  # selects this cell, command mode
        page.keyboard.press("Shift+Enter")
        try:
            cell.locator(".jp-InputArea-prompt", has_text=re.compile(r"\[\d+\]")).wait_for(
                timeout=CELL_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=os.path.join(shots, f"{chapter[:-6]}-stuck-cell{i}.png"))
            raise AssertionError(f"{chapter} cell {i} did not finish ({prompt(cell)!r}): "
                                 f"{source.source[:80]!r}") from None
    nb.screenshot(path=os.path.join(shots, f"{chapter[:-6]}-notebook.png"))


def check_widgets(page, nb, chapter: str, expected: dict[int, int], shots: str) -> list[str]:
    cells = nb.locator(".jp-Notebook .jp-Cell")
    problems = []
    for i, n in expected.items():
        cell = cells.nth(i)
        area = cell.locator(".jp-Cell-outputArea")  # the cell's own, not a widget's Output inside
        outputs = area.locator("> .jp-OutputArea-child > .jp-OutputArea-output")
        # The widget manager's renderer puts the widget's view (.jupyter-widgets) straight in
        # the output; without it the lab shows the model's text/plain in a jp-RenderedText.
        heights = outputs.evaluate_all(
            "els => els.filter(e => [...e.children].some(c => c.classList.contains('jupyter-widgets')))"
            ".map(e => e.getBoundingClientRect().height)")
        text = area.inner_text()
        cell.scroll_into_view_if_needed()
        area.screenshot(path=os.path.join(shots, f"{chapter[:-6]}-cell{i}.png"))
        if "Error displaying widget" in text:
            problems.append(f"{chapter} cell {i}: 'Error displaying widget'")
        if len(heights) != n:
            problems.append(f"{chapter} cell {i}: {len(heights)} widget views of {n}; "
                            f"outputs: {outputs.evaluate_all(DESCRIBE)}, text: {text[:120]!r}")
        model_text = re.search(r"^(VBox|HBox|GridBox|Box|HTML|Image|Output)\(", text, re.M)
        if model_text:
            problems.append(f"{chapter} cell {i}: the model's text instead of a widget: {text[:120]!r}")
        if any(h < 10 for h in heights):
            problems.append(f"{chapter} cell {i}: a widget without a size (heights {heights})")
    return problems


DESCRIBE = "els => els.map(e => e.className + ' ' + JSON.stringify(e.dataset) + ' > ' + [...e.children].map(c => c.className + ' > ' + [...c.children].map(d => d.className).join(',')).join(' ; '))"


def probe_line(out_text: str, probe: str) -> str:
    for line in out_text.splitlines():
        if line.startswith(probe):
            return line
    raise AssertionError(f"no {probe} line in the probe report:\n{out_text}")


def toggle_changes_probe(page, nb, chapter: str, expected: int, shots: str) -> list[str]:
    """In each capability widget: engine default -> sethostname EPERM; tick cap_sys_admin -> ok."""
    problems = []
    widgets = nb.locator(".jupyter-widgets.widget-vbox", has=page.locator("button", has_text="run probes"))
    if widgets.count() != expected:
        return [f"{chapter}: {widgets.count()} capability widgets with a 'run probes' button, "
                f"{expected} expected"]
    for k in range(widgets.count()):
        w = widgets.nth(k)
        w.scroll_into_view_if_needed()
        out = w.locator(".widget-output")

        def run() -> str:
            before = out.inner_text()
            w.locator("button", has_text="run probes").click()
            page.wait_for_function(
                "([el, before]) => el.innerText !== before && el.innerText.includes('sethostname')",
                arg=[out.element_handle(), before], timeout=60_000)
            return out.inner_text()

        w.locator("button", has_text="engine default").click()
        box = w.locator("label", has_text="cap_sys_admin").locator("input[type=checkbox]")
        page.wait_for_function("el => !el.checked", arg=box.element_handle())
        without = probe_line(run(), "sethostname")
        box.check()  # the toggle click
        with_it = probe_line(run(), "sethostname")
        w.screenshot(path=os.path.join(shots, f"{chapter[:-6]}-capability-widget-{k}.png"))
        if not ("EPERM" in without and " ok" in with_it):
            problems.append(f"ticking cap_sys_admin did not change sethostname: "
                            f"{without!r} -> {with_it!r}")
    return problems


@pytest.mark.skipif(not CHAPTERS, reason="no chapter shows a widget")
def test_widgets_render_and_respond_in_the_browser(browser_lab, shots):
    page, server, console = browser_lab
    page.evaluate(WATCH_LIVE)
    problems, seen = [], []
    for chapter, expected, live, probes in CHAPTERS:
        nb = open_chapter(page, chapter)
        server.note_kernels()
        run_cell_by_cell(page, nb, chapter, shots)
        server.note_kernels()
        problems += check_widgets(page, nb, chapter, expected, shots)
        states = page.evaluate(LIVE_STATES)
        for i in live:
            # follow() redraws while it samples: its widget shows several states while "[*]"
            if states.get(str(i), 0) < 3:
                problems.append(f"{chapter} cell {i}: its widget showed {states.get(str(i), 0)} "
                                f"different states while the cell ran (.follow(): live, at least 3)")
        if probes:
            problems += toggle_changes_probe(page, nb, chapter, probes, shots)
        dialogs = page.locator(".jp-Dialog")
        if dialogs.count():  # an error dialog in the learner's way
            page.screenshot(path=os.path.join(shots, f"{chapter[:-6]}-dialog.png"))
            problems.append(f"{chapter}: a dialog is open: {dialogs.first.inner_text()[:200]!r}")
        seen.append(f"{chapter}: widget cells {sorted(expected)}, live {sorted(live)}, "
                    f"capability widgets {probes}")
        page.evaluate("() => { window.japLive = {}; }")
        page.keyboard.press("Control+Home")
    # Opening the index must not mark it modified (its language_info is already the kernel's).
    index_tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="index.ipynb")
    if "jp-mod-dirty" in (index_tab.get_attribute("class") or ""):
        problems.append("learner/index.ipynb is marked modified, though nobody changed it")
    # Kernels talk over IPC sockets (tools/start-lab.sh), not TCP ports.
    for pid, _ in server.kernels:
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if "-f" in argv:
            info = json.load(open(argv[argv.index("-f") + 1]))
            if info.get("transport") != "ipc":
                problems.append(f"kernel {pid} uses transport {info.get('transport')!r}, not ipc")
    errors = [m for m in console if (m.startswith("error") or m.startswith("pageerror"))
              and WIDGET_ERROR.search(m)]
    problems += [f"browser console: {m}" for m in errors]
    assert not problems, "\n".join(problems + ["checked: " + "; ".join(seen)])
    print("checked:", *seen, sep="\n  ")


def test_the_chapters_with_widgets_are_found():
    """The list is read from the chapters: 03's monitors (one live) and 04's capability widget."""
    found = {ch[:2]: (sorted(cells), sorted(live), probes) for ch, cells, live, probes in CHAPTERS}
    assert found["03"][1] and set(found["03"][1]) <= set(found["03"][0])
    assert found["04"][2] == 1
