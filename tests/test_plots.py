"""kdviz.plots: figures from synthetic frames; assertions look inside fig.data and fig.layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from kdviz import analysis, plots

NAMES = ("0", "1", "2", "3")


@pytest.fixture
def rows():
    return {
        "teacher": torch.tensor([1.0, 6.0, 3.0, -2.0]),
        "student": torch.tensor([0.5, 4.0, 3.5, -1.0]),
    }


@pytest.fixture
def matrix():
    values = np.array(
        [
            [0.9, 0.05, 0.03, 0.02],
            [0.01, 0.8, 0.15, 0.04],
            [0.02, 0.2, 0.75, 0.03],
            [0.1, 0.1, 0.1, 0.7],
        ]
    )
    frame = pd.DataFrame(values, index=list(NAMES), columns=list(NAMES))
    frame.index.name, frame.columns.name = "true class", "class"
    return frame


def _json_ok(fig: go.Figure) -> None:
    """Serialisable, as st.plotly_chart needs, and valid: plots builds figures without Plotly's
    validation, so rebuild each one with it (a misspelt property raises here)."""
    go.Figure(fig.to_dict())
    json.loads(fig.to_json())


def test_plots_and_analysis_never_import_streamlit():
    files = [Path(analysis.__file__), *Path(plots.__file__).parent.glob("*.py")]  # the package
    assert len(files) > 2
    for file in files:
        source = file.read_text(encoding="utf-8")
        assert "import streamlit" not in source and "from streamlit" not in source


def test_soft_target_bars(rows):
    frame = analysis.soft_target_frame(rows, 4.0, NAMES)
    fig = plots.soft_target_bars(frame)
    bars = [t for t in fig.data if t.type == "bar"]
    ticks = [t for t in fig.data if t.type == "scatter"]
    assert [t.name for t in bars] == ["Teacher, T = 4", "Student, T = 4"]
    assert [t.name for t in ticks] == ["Teacher, T = 1", "Student, T = 1"]
    np.testing.assert_allclose(bars[0].y, torch.softmax(rows["teacher"] / 4, -1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(ticks[1].y, torch.softmax(rows["student"], -1).numpy(), rtol=1e-6)
    assert list(bars[0].x) == list(NAMES)
    assert fig.layout.xaxis.type == "category"  # class names "0".."3" are names, not numbers
    assert fig.layout.xaxis.title.text == "class" and fig.layout.yaxis.title.text == "probability"
    assert "T = 4" in fig.layout.title.text
    assert "%{y" in bars[0].hovertemplate
    _json_ok(fig)


def test_soft_target_bars_log_scale(rows):
    frame = analysis.soft_target_frame(rows, 0.25, NAMES)
    fig = plots.soft_target_bars(frame, log_y=True)
    assert fig.layout.yaxis.type == "log"
    low, high = fig.layout.yaxis.range
    assert low >= np.log10(plots.MIN_LOG_PROBABILITY) - 1 and high > -0.01


def test_soft_target_animation_has_a_frame_per_stop(rows):
    frame = analysis.soft_target_grid_frame(rows, class_names=NAMES)
    fig = plots.soft_target_animation(frame, active_temperature=4.0)
    grid = analysis.TEMPERATURE_GRID
    assert len(fig.frames) == len(grid)
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == len(grid) and slider.steps[slider.active].label == "4"
    # the figure opens on the active stop's data
    np.testing.assert_allclose(
        fig.data[0].y, torch.softmax(rows["teacher"] / 4, -1).numpy(), rtol=1e-6
    )
    last = fig.frames[-1]
    assert last.name == "100"
    np.testing.assert_allclose(
        last.data[0].y, torch.softmax(rows["teacher"] / 100, -1).numpy(), rtol=1e-6
    )
    _json_ok(fig)


def test_temperature_curves(rows):
    temps = analysis.curve_temperatures(21)
    frame = analysis.temperature_curve_frame(rows["teacher"], temps, NAMES)
    fig = plots.temperature_curves(frame, temperature=2.5, highlight=["1"])
    assert [t.name for t in fig.data] == list(NAMES)
    assert fig.data[1].line.width > fig.data[0].line.width
    assert fig.layout.xaxis.type == "log"
    markers = [s for s in fig.layout.shapes if s.x0 == 2.5]
    assert markers, "the current T is marked"
    assert any(a.text == "T = 2.5" for a in fig.layout.annotations)
    assert fig.layout.xaxis.title.text.startswith("temperature")
    _json_ok(fig)


def test_softness_curves(rows):
    frame = analysis.softness_frame(rows, analysis.curve_temperatures(11))
    fig = plots.softness_curves(frame, temperature=4.0, num_classes=4)
    names = [t.name for t in fig.data]
    assert names == ["Teacher entropy", "Teacher dark mass", "Student entropy", "Student dark mass"]
    assert fig.data[1].yaxis == "y2"
    assert fig.layout.yaxis.range[1] >= np.log(4)
    assert any(s.x0 == 4.0 for s in fig.layout.shapes)
    _json_ok(fig)


def test_matrix_heatmap_probability_with_dendrogram(matrix):
    order, tree = analysis.cluster_order(matrix)
    ordered = analysis.reorder(matrix, order)
    diag = pd.Series(np.diag(ordered.to_numpy()), index=ordered.index)
    fig = plots.matrix_heatmap(
        analysis.off_diagonal(ordered), title="Mean soft target", diagonal=diag, dendrogram=tree,
        selected=("1", "2"), clickable=True,
    )  # fmt: skip
    heat, cells, strip, dendro = fig.data
    assert heat.type == "heatmap" and list(heat.x) == order and list(heat.y) == order
    assert np.isnan(np.diag(np.asarray(heat.customdata, dtype=float))).all()
    i, j = order.index("1"), order.index("2")
    assert heat.customdata[i][j] == pytest.approx(0.15)
    assert heat.z[i][j] == pytest.approx(np.log10(0.15))  # log colour
    assert cells.type == "scatter" and len(cells.x) == 4 * 3  # one marker per off-diagonal cell
    assert strip.x == ("own class",) and np.asarray(strip.z).ravel() == pytest.approx(
        np.diag(ordered)
    )
    assert dendro.xaxis == "x2" and dendro.yaxis == "y2"
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.shapes[0].x0 == j - 0.5 and fig.layout.shapes[0].y0 == i - 0.5
    _json_ok(fig)


def test_matrix_heatmap_difference_and_count(matrix):
    diff = plots.matrix_heatmap(matrix - matrix.T, title="diff", kind="difference")
    heat = diff.data[0]
    assert heat.zmid == 0 and heat.zmin == -heat.zmax
    counts = pd.DataFrame([[5, 0], [2, 7]], index=["a", "b"], columns=["a", "b"])
    fig = plots.matrix_heatmap(analysis.off_diagonal(counts), title="confusion", kind="count")
    assert np.asarray(fig.data[0].text).tolist() == [["", ""], ["2", ""]]
    with pytest.raises(ValueError):
        plots.matrix_heatmap(matrix, title="x", kind="nope")


def test_similarity_graph(matrix):
    links = analysis.similarity_links(matrix, top_k=3)
    nodes = analysis.circle_layout(list(NAMES))
    fig = plots.similarity_graph(nodes, links, title="links")
    edges = [t for t in fig.data if t.mode == "lines"]
    assert len(edges) == 3
    assert edges[0].line.width > edges[-1].line.width  # strongest first, widest
    node_trace = fig.data[-1]
    assert list(node_trace.text) == list(NAMES)
    hover = fig.data[-2]
    assert "1 ↔ 2" in hover.text[0]
    _json_ok(fig)


def test_embedding_scatter():
    frame = pd.DataFrame(
        {"index": [0, 1, 2], "class": ["1", "0", "1"], "predicted": ["1", "0", "0"],
         "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 1.0], "p_top": [0.9, 0.8, 0.5]}
    )  # fmt: skip
    fig = plots.embedding_scatter(frame, title="map", method="tsne", class_names=NAMES)
    assert [t.name for t in fig.data] == ["0", "1"]
    assert list(fig.data[1].x) == [0.0, 2.0]
    assert "image #" in fig.data[0].hovertemplate
    assert fig.layout.xaxis.title.text == "t-SNE 1"
    _json_ok(fig)


def test_reliability_diagram():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=gen)
    logits = {
        "teacher": torch.randn(200, 4, generator=gen) * 3,
        "student": torch.randn(200, 4, generator=gen),
    }
    frame = analysis.reliability_frame(logits, labels, n_bins=10)
    fig = plots.reliability_diagram(frame, title="rel", ece={"teacher": 0.1, "student": 0.05})
    bars = [t for t in fig.data if t.name.endswith("accuracy")]
    assert [b.name for b in bars] == ["Teacher: accuracy", "Student: accuracy"]
    assert bars[1].xaxis == "x2"
    assert fig.layout.xaxis2.domain[0] > fig.layout.xaxis.domain[1]
    assert any("ECE = 10.00%" in a.text for a in fig.layout.annotations)
    _json_ok(fig)


def test_dkd_bars():
    frame = pd.DataFrame(
        {"class": ["0", "1"], "tckd": [0.1, 0.2], "nckd": [0.5, 0.4], "weight": [0.1, 0.5],
         "weighted_nckd": [0.05, 0.2]}
    )  # fmt: skip
    fig = plots.dkd_bars(frame, temperature=4.0)
    assert fig.layout.barmode == "stack"
    assert list(fig.data[1].y) == [0.05, 0.2]
    assert fig.data[3].yaxis == "y2"
    assert "T = 4" in fig.layout.title.text
    _json_ok(fig)


def test_class_colors_are_stable():
    colors = plots.class_colors([str(i) for i in range(12)])
    assert len(set(colors.values())) == 12
    assert plots.class_colors(["a", "b"])["a"] == plots.class_colors(["a", "b", "c"])["a"]


def test_set_soft_targets_updates_in_place(rows):
    fig = plots.soft_target_bars(analysis.soft_target_frame(rows, 1.0, NAMES))
    same = plots.set_soft_targets(fig, analysis.soft_target_frame(rows, 8.0, NAMES), title="at 8")
    assert same is fig and fig.layout.title.text == "at 8"
    assert fig.data[0].name == "Teacher, T = 8" and fig.data[2].name == "Teacher, T = 1"
    np.testing.assert_allclose(
        fig.data[1].y, torch.softmax(rows["student"] / 8, -1).numpy(), rtol=1e-6
    )
    _json_ok(fig)


def test_mark_temperature_moves_only_the_marker(rows):
    frame = analysis.softness_frame(rows, analysis.curve_temperatures(11))
    fig = plots.softness_curves(frame, temperature=4.0, num_classes=4)
    plots.mark_temperature(fig, 16.0)
    marks = [s for s in fig.layout.shapes if s.name == "temperature"]
    assert len(marks) == 1 and marks[0].x0 == marks[0].x1 == 16.0
    assert [s.x0 for s in fig.layout.shapes if s.name == "T = 1"] == [1.0]  # the reference stays
    assert len(fig.layout.shapes) == 3  # with the log K ceiling
    assert [a.text for a in fig.layout.annotations if a.name == "temperature"] == ["T = 16"]
    plots.mark_temperature(fig, 1.0)
    assert [s.x0 for s in fig.layout.shapes if s.name == "temperature"] == [1.0]
    _json_ok(fig)


def test_image_strip_and_its_labels():
    fig = plots.image_strip(
        "data:image/png;base64,iVBORw0KGgo=", [5, 9, 2], tile=64, captions=["a", "b", "c"],
        hover=["x", "y", "z"], selected=9, title="three",
    )  # fmt: skip
    image, pick = fig.data
    assert image.type == "image" and list(pick.customdata) == [5, 9, 2]
    assert list(pick.x) == [32, 96, 160] and list(fig.layout.xaxis.ticktext) == ["a", "b", "c"]
    assert fig.layout.shapes[0].x0 == 65 and fig.layout.yaxis.scaleanchor == "x"
    plots.label_strip(fig, captions=["1", "2", "3"], hover=["p", "q", "r"], selected=None)
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "3"] and list(fig.data[1].text) == [
        "p",
        "q",
        "r",
    ]
    assert not fig.layout.shapes
    _json_ok(fig)


def test_matrix_heatmap_light_dense_cells_for_tiles(matrix):
    fig = plots.matrix_heatmap(
        matrix, title="tile", clickable=True, light_cells=True, click_diagonal=True, dense=True,
        click_hint="click to zoom",
    )  # fmt: skip
    heat, cells = fig.data
    assert len(cells.x) == 16  # the diagonal cells too (blocks of an overview)
    values = np.asarray(cells.customdata, dtype=float)  # only the value: row, column are y, x
    assert values.shape == (16,) and values[1] == pytest.approx(matrix.iloc[0, 1])
    assert (cells.y[1], cells.x[1]) == ("0", "1")
    assert "click to zoom" in cells.hovertemplate
    assert fig.layout.xaxis.tickangle == -90 and fig.layout.xaxis.tickfont.size == 9
    _json_ok(fig)


def test_one_colour_per_class_whatever_the_order():
    # the similarity graph lists classes in its circle's order, the PCA map in the data's
    digits = [str(i) for i in range(10)]
    shuffled = ["3", "7", "0", "9", "1", "4", "8", "2", "6", "5"]
    assert plots.class_colors(shuffled) == plots.class_colors(digits)
    assert plots.class_colors(digits)["0"] != plots.class_colors(digits)["1"]


def test_count_heatmap_colour_bar_has_integer_ticks():
    counts = pd.DataFrame([[0, 1], [1, 0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.matrix_heatmap(counts, title="confusions", kind="count")
    bar = fig.data[0].colorbar
    assert bar.tickformat == "d" and bar.dtick == 1 and bar.tick0 == 0
