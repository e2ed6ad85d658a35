"""Every page at three window sizes in Chromium: no sideways scrolling, no cut-off metric or
button, every chart inside the window, no two titles of one chart on top of each other, and the
sidebar collapsed when the window is narrow. Screenshots go to screenshots/widths/.

One server and one browser; each size opens every page of kdviz.ui.PAGES in one tab.
"""

from __future__ import annotations

import pytest
from conftest import VIEW

from kdviz.ui import PAGES

pytestmark = pytest.mark.e2e

SIZES = [(820, 1000), (1280, 720), (1920, 1080)]
NARROW = 1000  # below this the columns stack and the sidebar starts collapsed

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
        sidebarOpen: open,
        sidebarWidth: sidebar ? sidebar.getBoundingClientRect().width : 0,
        exception: !!document.querySelector('[data-testid=stException]'),
        notFound: document.body.innerText.includes('Page not found'),
    };
}"""


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


def _problems(found: dict, width: int) -> list[str]:
    problems = []
    if found["scroll"] > found["inner"] + 1:
        problems.append(f"scrolls sideways: {found['scroll']} px wide in a {found['inner']} window")
    problems += [f"metric cut off: {m!r}" for m in found["cutMetrics"]]
    problems += [f"button cut off: {b!r}" for b in found["cutButtons"]]
    problems += [f"label cut off: {b!r}" for b in found["cutLabels"]]
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
    tab = context.new_page()
    problems = []
    try:
        for spec in PAGES:
            # T = 4: the bars' dark knowledge and the legends at their widest
            tab.goto(f"{server}/{spec.url_path}?{VIEW}&T=4")
            _settle(tab)
            found = tab.evaluate(MEASURE)
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
