"""The explorer in Chromium: the temperature moved with the keyboard, clicks on thumbnails and
heatmap cells, the in-browser T animation, and a screenshot of every page at 1400 x 1000."""

from __future__ import annotations

import os

import pytest
from conftest import HEIGHT, VIEW, WIDTH, chart_data, move_temperature, wait_chart_change, wait_idle

pytestmark = pytest.mark.e2e

PAGES = [
    ("", "soft_targets"),
    ("class-similarity", "class_similarity"),
    ("teacher-vs-student", "teacher_vs_student"),
]


def _points(page, key: str, trace: int) -> list[tuple[float, float, object]]:
    """Viewport (x, y, customdata) of each point of a trace of a keyed Plotly chart."""
    return page.evaluate(
        """([key, index]) => {
            const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
            const box = gd.getBoundingClientRect();
            const t = gd._fullData[index];
            const xa = gd._fullLayout[(t.xaxis || 'x').replace('x', 'xaxis')];
            const ya = gd._fullLayout[(t.yaxis || 'y').replace('y', 'yaxis')];
            // category axes: place by the category's index (class names like "8" look numeric)
            const pos = (axis, v) => axis._offset + (axis.type === 'category'
                ? axis.l2p(axis._categories.indexOf(String(v))) : axis.d2p(v));
            return Array.from(t.x).map((x, i) => [
                box.left + pos(xa, x), box.top + pos(ya, t.y[i]), t.customdata[i],
            ]);
        }""",
        [key, trace],
    )


def test_temperature_from_the_keyboard_changes_the_chart(server, page, screenshots):
    page.goto(f"{server}/?{VIEW}&T=1")
    wait_idle(page)
    before = chart_data(page, "soft_bars")
    assert before[0]["name"] == "Teacher, T = 1"
    move_temperature(page, "ArrowRight")
    after = wait_chart_change(page, "soft_bars", before)
    assert after[0]["name"] == "Teacher, T = 1.25"
    assert max(after[0]["y"]) < max(before[0]["y"])  # a softer distribution
    assert "T=1.25" in page.url  # the view is in the URL
    move_temperature(page, "End")
    hot = wait_chart_change(page, "soft_bars", after)
    assert hot[0]["name"] == "Teacher, T = 100"
    assert max(hot[0]["y"]) < 0.2  # near uniform over 10 classes
    page.screenshot(path=screenshots / "soft_targets_T100.png")
    page.get_by_role("button", name="Back to T = 1").click()
    back = wait_chart_change(page, "soft_bars", hot)
    assert back[0]["name"] == "Teacher, T = 1"


@pytest.mark.parametrize(("path", "name"), PAGES)
def test_every_page_shows_a_chart_without_scrolling(server, page, screenshots, path, name):
    page.goto(f"{server}/{path}?{VIEW}&T=4")
    wait_idle(page)
    page.screenshot(path=screenshots / f"{name}.png")
    first = page.locator("[data-testid=stPlotlyChart]").first.bounding_box()
    assert first is not None and first["y"] + 150 < HEIGHT, first
    assert not page.locator("[data-testid=stException]").count()
    if os.environ.get("KDVIZ_FULL_SCREENSHOTS"):  # the whole page, for a look
        page.set_viewport_size({"width": WIDTH, "height": 2600})
        wait_idle(page)
        page.screenshot(path=screenshots / f"{name}_full.png")


def test_clicking_a_thumbnail_picks_that_image(server, page):
    page.goto(f"{server}/?{VIEW}&T=4")
    wait_idle(page)
    before = chart_data(page, "soft_bars")
    x, y, index = _points(page, "gallery_strip", 1)[3]
    page.mouse.click(x, y)
    wait_chart_change(page, "soft_bars", before)
    assert page.locator(".st-key-image input").input_value() == str(index)
    assert f"image={index}" in page.url


def test_clicking_a_heatmap_cell_picks_that_pair(server, page, screenshots):
    page.goto(f"{server}/class-similarity?{VIEW}&T=4")
    wait_idle(page)
    current = page.locator(".st-key-row input").input_value()
    x, y, (row, col, _) = next(
        cell for cell in _points(page, "sim_cell", 1) if cell[2][0] != current
    )
    page.mouse.click(x, y)
    # the click reruns the app with that pair picked: the pickers follow, the cell is outlined
    page.wait_for_function(
        "row => document.querySelector('.st-key-row input')?.value === row", arg=row, timeout=30_000
    )
    wait_idle(page)
    rows = next(t for t in chart_data(page, "sim_cell") if t["name"] == "matrix")["y"]
    outlined = page.evaluate(
        """key => (document.querySelector(`.st-key-${key} .js-plotly-plot`).layout.shapes || [])
            .map(s => s.y0)""",
        "sim_cell",
    )
    assert rows.index(row) - 0.5 in outlined
    assert page.locator(".st-key-row input").input_value() == row
    assert page.locator(".st-key-col input").input_value() == col
    assert page.locator(f".st-key-pair_{row}_{col}").count() == 1
    assert f"row={row}" in page.url
    page.screenshot(path=screenshots / "class_similarity_clicked.png")


def test_plotly_slider_animates_in_the_browser(server, page, screenshots):
    page.goto(f"{server}/?{VIEW}&T=4&tab=Animate+T+in+the+browser")
    wait_idle(page)
    before = chart_data(page, "soft_animation")
    page.locator(".st-key-soft_animation").scroll_into_view_if_needed()
    rail = page.locator(".st-key-soft_animation .slider-rail-rect").bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)  # T = 100
    page.wait_for_function(
        """before => {
            const gd = document.querySelector('.st-key-soft_animation .js-plotly-plot');
            return Math.max(...gd._fullData[0].y) < before;
        }""",
        arg=max(before[0]["y"]),
        timeout=10_000,
    )
    # no rerun: the server was not asked
    assert page.locator("[data-testid=stApp][data-test-script-state=notRunning]").count() == 1
    page.screenshot(path=screenshots / "soft_targets_animation.png")


def test_a_disagreement_click_opens_the_image_with_it_in_the_url(server, page):
    page.goto(f"{server}/teacher-vs-student?{VIEW}&T=4")
    wait_idle(page)
    page.get_by_role("tab", name="Disagreements").click()
    strip = page.locator("[class*=st-key-ts_disagree] .js-plotly-plot").first
    strip.wait_for(timeout=60_000)
    strip.scroll_into_view_if_needed()
    wait_idle(page)
    key = strip.evaluate("gd => gd.closest('[class*=st-key-ts_disagree]').className")
    key = next(c for c in key.split() if c.startswith("st-key-"))[len("st-key-") :]
    trace = page.evaluate(
        "key => document.querySelector(`.st-key-${key} .js-plotly-plot`)._fullData"
        ".findIndex(t => t.customdata)",
        key,
    )
    x, y, index = _points(page, key, trace)[1]
    page.mouse.click(x, y)
    page.wait_for_url(f"**image={index}**", timeout=30_000)
    wait_idle(page)
    assert page.locator(".st-key-image input").input_value() == str(index)
