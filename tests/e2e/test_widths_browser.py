"""Every page at three window sizes in Chromium: no sideways scrolling, no cut-off metric,
button, label, select or input value, no table cell whose text runs past its column, every chart
inside the window, no two titles of one chart on top of each other, and the sidebar collapsed
when the window is narrow. Screenshots go to screenshots/widths/.

One server (its KDVIZ_HOME holds the tiny checkpoints and a few finished runs, so the Runs table
has rows) and one browser; each size opens every page of kdviz.ui.PAGES in one tab.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import REPO, VIEW, run_app
from kdviz_tiny import make_tiny_checkpoints

from kdviz.ui import PAGES

pytestmark = pytest.mark.e2e

SIZES = [(820, 1000), (1280, 720), (1920, 1080)]
NARROW = 1000  # below this the columns stack and the sidebar starts collapsed

# Streamlit's tables (st.dataframe) are drawn on a canvas: nothing in the DOM says a cell is cut.
# Before the page loads, wrap the canvas calls to note each text the table draws, where, how wide,
# and the column it is clipped to (the grid clips each column with rect() + clip()).
RECORD_TABLE_TEXT = """(() => {
  const P = CanvasRenderingContext2D.prototype;
  const rect = P.rect, clip = P.clip, save = P.save, restore = P.restore, fill = P.fillText;
  window.__kdvizCells = [];
  P.rect = function (x, y, w, h) { this.__rect = [x, y, w, h]; return rect.apply(this, arguments); };
  P.clip = function () { this.__clip = this.__rect; return clip.apply(this, arguments); };
  P.save = function () { (this.__clips = this.__clips || []).push(this.__clip);
    return save.apply(this, arguments); };
  P.restore = function () { this.__clip = (this.__clips || []).pop();
    return restore.apply(this, arguments); };
  P.fillText = function (text, x, y) {
    if (this.__clip && this.canvas.closest && this.canvas.closest('[data-testid=stDataFrame]')) {
      const t = this.getTransform(), s = String(text);
      window.__kdvizCells.push({text: s, x: x + t.e / t.a, w: this.measureText(s).width,
        align: this.textAlign, clip: this.__clip});
    }
    return fill.apply(this, arguments);
  };
})();"""

# Everything the checks need, measured in the page in one call.
MEASURE = """() => {
    const box = el => { const r = el.getBoundingClientRect();
        return {l: r.left, r: r.right, t: r.top, b: r.bottom, w: r.width, h: r.height}; };
    const cut = el => el.scrollWidth > el.clientWidth + 1;
    const named = el => (el.textContent || '').trim().slice(0, 60);
    const charts = Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]'));
    const titles = charts.map(chart => Array.from(chart.querySelectorAll(
            '.gtitle, .g-xtitle text, .g-ytitle text, .g-x2title text, .g-y2title text, '
            + '.g-x3title text, .g-y3title text, .annotation-text'))
        .filter(t => named(t) && t.getBoundingClientRect().width > 0)
        .map(t => ({text: named(t), ...box(t)})));
    const metrics = Array.from(document.querySelectorAll('[data-testid=stMetricValue]'));
    const sidebar = document.querySelector('[data-testid=stSidebar]');
    const open = sidebar ? sidebar.getBoundingClientRect().right > 40 : false;
    const scope = open ? 'main, [data-testid=stSidebar]' : 'main';
    // a select's value or a number is an <input>; a value wider than its box is cut
    const inputs = Array.from(document.querySelectorAll(
            scope.split(', ').map(s => s + ' input:not([type=checkbox]):not([type=range])')
                .join(', ')))
        .filter(i => i.getBoundingClientRect().width > 0 && i.value && cut(i));
    const buttons = Array.from(document.querySelectorAll(
            open ? 'main button, [data-testid=stSidebar] button' : 'main button'))
        .filter(b => b.getBoundingClientRect().width > 0);
    return {
        inner: window.innerWidth,
        scroll: document.documentElement.scrollWidth,
        charts: charts.map(box),
        titles,
        cutMetrics: metrics.filter(m => cut(m) || Array.from(m.querySelectorAll('*')).some(cut))
            .map(named),
        cutLabels: Array.from(document.querySelectorAll(
                open ? 'main .stMarkdownEllipsis, [data-testid=stSidebar] .stMarkdownEllipsis'
                    : 'main .stMarkdownEllipsis'))
            .filter(l => l.getBoundingClientRect().width > 0 && cut(l)).map(named),
        cutButtons: buttons.filter(b => cut(b) || Array.from(b.querySelectorAll('p')).some(cut))
            .map(named),
        cutInputs: inputs.map(i => `${i.getAttribute('aria-label') || '?'}: ${i.value}`),
        tables: document.querySelectorAll('[data-testid=stDataFrame]').length,
        sidebarOpen: open,
        sidebarWidth: sidebar ? sidebar.getBoundingClientRect().width : 0,
        exception: !!document.querySelector('[data-testid=stException]'),
        notFound: document.body.innerText.includes('Page not found'),
    };
}"""


def add_finished_runs(home) -> None:
    """Four finished runs written into home's run store (no worker): a KD student and its
    baseline, a failed DKD run with a long message, a cancelled `kdviz train` run; each with a
    short accuracy curve. The names and messages are the ones kdviz.jobs gives real runs."""
    script = """
from kdviz import jobs
from kdviz.engine import TrainConfig
from kdviz.runs import RunStore

store = RunStore()
kd = jobs.default_config("tiny-teacher", dataset="digits", epochs=3)
dkd = jobs.default_config("tiny-teacher", dataset="digits", method="dkd", beta=8.0, epochs=2)
nan = "The loss became NaN at epoch 2; lower the learning rate or use fp32 and start it again."
for cfg, role, status, message, metrics in [
    (kd, "student", "done", "3 epochs", {"accuracy": 0.953, "agreement": 0.962}),
    (jobs.baseline_config(kd), "baseline", "done", "3 epochs", {"accuracy": 0.941}),
    (dkd, "student", "failed", nan, {}),
    (TrainConfig(dataset="digits", arch="lenet", epochs=2), "student", "cancelled", "", {}),
]:
    config = cfg.to_dict()
    run = store.create_run(config, name=jobs.run_title(config), role=role, device="CPU")
    store.claim_slot(run.id)
    curve = [(10 * e, float(e), "test/accuracy", 0.8 + 0.05 * e) for e in range(1, cfg.epochs + 1)]
    store.log_metrics(run.id, curve)
    store.finish(run.id, status, message, metrics=metrics)
"""
    env = {**os.environ, "KDVIZ_HOME": str(home)}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """conftest's server, with finished runs in its KDVIZ_HOME (the Runs page shows a table)."""
    home = tmp_path_factory.mktemp("widths_home")
    make_tiny_checkpoints(home / "checkpoints")
    add_finished_runs(home)
    with run_app(home) as url:
        yield url


def _overlaps(a: dict, b: dict) -> bool:
    """Two boxes share more than a pixel or two each way."""
    return (
        min(a["r"], b["r"]) - max(a["l"], b["l"]) > 2
        and min(a["b"], b["b"]) - max(a["t"], b["t"]) > 2
    )


def _settle(page) -> None:
    """Wait until the script has run and every Plotly chart on the page is drawn."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=90_000)
    page.wait_for_function(
        """() => {
            const charts = document.querySelectorAll('[data-testid=stPlotlyChart]');
            const drawn = document.querySelectorAll('[data-testid=stPlotlyChart] .main-svg');
            return drawn.length >= charts.length && !document.querySelector('[data-testid=stSkeleton]');
        }""",
        timeout=90_000,
    )
    page.wait_for_timeout(400)  # Plotly's layout pass, the column reflow


def _cut_cells(tab) -> list[str]:
    """Table cells (and headers) whose text runs past their column, in every table of the page:
    what was drawn since the page loaded, then what is drawn once each table is scrolled to its
    right end.

    A cell starting left of its clip is scrolled partly out of view, not cut. The message column
    (free text, shown in full under the table) may be cut."""
    tab.wait_for_selector("[data-testid=stDataFrame] .dvn-scroller", timeout=30_000)
    cells = tab.evaluate("() => window.__kdvizCells")  # everything drawn since the page loaded
    tab.evaluate(
        "() => { window.__kdvizCells = []; document.querySelectorAll("
        "'[data-testid=stDataFrame] .dvn-scroller').forEach(s => s.scrollLeft = s.scrollWidth); }"
    )
    tab.wait_for_timeout(500)  # the grid redraws on the next frames
    cells += tab.evaluate("() => window.__kdvizCells")
    headers = {tuple(c["clip"][:1]): c["text"] for c in cells if c["clip"][1] == 0}
    cut = set()
    for c in cells:
        left, width = c["clip"][0], c["clip"][2]
        if c["align"] in ("right", "end"):
            start, end = c["x"] - c["w"], c["x"]
        else:
            start, end = c["x"], c["x"] + c["w"]
        if start < left or headers.get((left,)) == "message":
            continue
        if end > left + width - 2:
            cut.add(c["text"][:60])
    return sorted(cut)


def _problems(found: dict, width: int) -> list[str]:
    problems = []
    if found["scroll"] > found["inner"] + 1:
        problems.append(f"scrolls sideways: {found['scroll']} px wide in a {found['inner']} window")
    problems += [f"metric cut off: {m!r}" for m in found["cutMetrics"]]
    problems += [f"button cut off: {b!r}" for b in found["cutButtons"]]
    problems += [f"label cut off: {b!r}" for b in found["cutLabels"]]
    problems += [f"value cut off: {v!r}" for v in found["cutInputs"]]
    for i, chart in enumerate(found["charts"]):
        if chart["l"] < -1 or chart["r"] > found["inner"] + 1:
            problems.append(f"chart {i} outside the window: {chart['l']:.0f}..{chart['r']:.0f}")
    for i, titles in enumerate(found["titles"]):
        chart = found["charts"][i]
        problems += [
            f"chart {i}: {t['text']!r} runs out of its chart ({t['l']:.0f}..{t['r']:.0f} in "
            f"{chart['l']:.0f}..{chart['r']:.0f})"
            for t in titles
            if t["l"] < chart["l"] - 2 or t["r"] > chart["r"] + 2
        ]
        for j, a in enumerate(titles):
            problems += [
                f"chart {i}: {a['text']!r} overlaps {b['text']!r}"
                for b in titles[j + 1 :]
                if _overlaps(a, b)
            ]
    if found["exception"] or found["notFound"]:
        problems.append("an exception or 'Page not found' on the page")
    if width < NARROW and found["sidebarOpen"]:
        problems.append("the sidebar is open in a narrow window")
    return problems


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_page_fits_the_window(server, browser, screenshots, width, height):
    folder = screenshots / "widths"
    folder.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(RECORD_TABLE_TEXT)
    tab = context.new_page()
    problems = []
    try:
        for spec in PAGES:
            # T = 4: the bars' dark knowledge and the legends at their widest
            tab.goto(f"{server}/{spec.url_path}?{VIEW}&T=4")
            _settle(tab)
            found = tab.evaluate(MEASURE)
            if spec.url_path == "runs":
                assert found["tables"], "the Runs page shows no table of the runs in KDVIZ_HOME"
            if found["tables"]:
                found["cutInputs"] += [f"table cell {t!r}" for t in _cut_cells(tab)]
            tab.screenshot(path=folder / f"{spec.url_path}_{width}x{height}.png", full_page=True)
            problems += [f"{spec.title} at {width}x{height}: {p}" for p in _problems(found, width)]
            if spec is PAGES[0]:
                # the image and the bars sit side by side in a wide window, stacked in a narrow one
                charts = [c for c in found["charts"] if c["w"] > 100]
                beside = [(a, b) for i, a in enumerate(charts) for b in charts[i + 1 :]
                          if min(a["b"], b["b"]) - max(a["t"], b["t"]) > 20]  # fmt: skip
                if width < NARROW and beside:
                    problems.append(f"{spec.title} at {width}: charts side by side")
    finally:
        context.close()
    assert not problems, "\n".join(problems)
