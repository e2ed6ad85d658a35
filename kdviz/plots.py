"""Tidy DataFrames (from kdviz.analysis) -> plotly.graph_objects.Figure. Never imports streamlit.

Every figure has a title, axis labels and hover text, and names classes by name. Category axes
are declared as such, so class names like "3" are not read as numbers.

Figures are written as Plotly JSON (dicts) and wrapped without Plotly's per-property validation:
validating costs ~10 ms a figure, a third of the explorer's 30 ms budget for a rerun. The tests
rebuild every figure with validation on, so a misspelt property still fails there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import diverging, qualitative, sequential

TEACHER_COLOR = "#1f6fb4"  # blue
STUDENT_COLOR = "#e8710a"  # orange: the blue/orange pair stays distinct for colour-blind readers
REFERENCE_COLOR = "#303030"
MODEL_COLORS = {"teacher": TEACHER_COLOR, "student": STUDENT_COLOR}
MODEL_LABELS = {"teacher": "Teacher", "student": "Student"}
TCKD_COLOR = "#8c8c8c"
NCKD_COLOR = "#2ca02c"
T_MARK_COLOR = "#d62728"
MIN_LOG_PROBABILITY = 1e-8  # floor of log-scale probability axes and colours
T_AXIS_RANGE = [math.log10(0.25), 2.0]  # the slider's 0.25 .. 100, on a log axis
T_TICKS = [0.25, 0.5, 1, 2, 4, 10, 20, 50, 100]
PROBABILITY_SCALE = [[i / 8, c] for i, c in enumerate(sequential.Blues)]  # light = small
DIFFERENCE_SCALE = [
    [i / 10, c] for i, c in enumerate(reversed(diverging.RdBu))
]  # red = teacher more

# A slim stand-in for "plotly_white": the full template is ~100 kB of trace defaults copied into
# every figure; these few keys give the same look.
_AXIS_STYLE = {
    "gridcolor": "#e5e8ee",
    "linecolor": "#b0b5bf",
    "zerolinecolor": "#d0d4dc",
    "automargin": True,
}
TEMPLATE = {
    "layout": {
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": list(qualitative.D3),
        "font": {"size": 13},
        "xaxis": _AXIS_STYLE,
        "yaxis": _AXIS_STYLE,
        "hovermode": "closest",
    }
}
_T_MARK = "temperature"  # name of the shapes and annotations that mark the current T


def model_color(model: str) -> str:
    return MODEL_COLORS.get(model, REFERENCE_COLOR)


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def _class_order(name: str) -> tuple:
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def class_colors(class_names: Sequence[str]) -> dict[str, str]:
    """One colour per class on every page: D3's 10 for up to 10 classes, Alphabet's 26 (cycled)
    beyond, given out in a fixed order of the names (numbers by value, then the rest
    alphabetically), so the similarity graph, the PCA map and the curves agree whatever order
    they list the classes in."""
    names = [str(name) for name in class_names]
    palette = qualitative.D3 if len(set(names)) <= 10 else qualitative.Alphabet
    ordered = sorted(set(names), key=_class_order)
    return {name: palette[i % len(palette)] for i, name in enumerate(ordered)}


def _t(t: float) -> str:
    return f"{t:g}"


def _power(exponent: float) -> str:
    """10^e as people write probabilities: 1, 0.1, 0.01, 1e-3 ..."""
    value = 10.0**exponent
    return f"{value:g}" if value >= 0.01 else f"{value:.0e}".replace("e-0", "e-")


def _figure(data: list[dict], layout: dict, frames: list[dict] | None = None) -> go.Figure:
    """A Figure from Plotly JSON, without per-property validation (see the module docstring)."""
    spec = {"data": data, "layout": layout}
    if frames:
        spec["frames"] = frames
    return go.Figure(spec, _validate=False)


def _layout(title: str, height: int, **extra) -> dict:
    layout = {
        "title": {
            "text": title,
            "x": 0.0,
            "xanchor": "left",
            "y": 0.98,
            "yanchor": "top",
            "font": {"size": 15},
        },
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 72, "b": 50},
        "template": TEMPLATE,
        "legend": {"orientation": "h", "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _log_range(values: np.ndarray) -> list[float]:
    """A log-axis range [log10 lo, log10 hi] that shows every value down to MIN_LOG_PROBABILITY."""
    positive = values[np.isfinite(values) & (values > 0)]
    lo = max(float(positive.min()) if positive.size else 1e-3, MIN_LOG_PROBABILITY)
    return [math.floor(math.log10(lo)) - 0.2, 0.05]


def _probability_axis(log_y: bool, values: np.ndarray) -> dict:
    if log_y:
        return {
            "title": {"text": "probability (log scale)"},
            "type": "log",
            "range": _log_range(values),
            "exponentformat": "power",
        }
    return {"title": {"text": "probability"}, "range": [0, 1.02]}


def _t_axis() -> dict:
    return {
        "title": {"text": "temperature T (log scale)"}, "type": "log", "range": T_AXIS_RANGE,
        "tickvals": T_TICKS, "ticktext": [_t(t) for t in T_TICKS],
    }  # fmt: skip


def _unit_axis(title: str, **extra) -> dict:
    """A 0..1 axis with fixed ticks (a right-hand axis otherwise inherits odd tick values)."""
    return {
        "title": {"text": title},
        "range": [0, 1.0],
        "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0],
        **extra,
    }


def _category_axis(title: str, classes: Sequence[str], **extra) -> dict:
    return {
        "title": {"text": title},
        "type": "category",
        "categoryorder": "array",
        "categoryarray": list(classes),
        **extra,
    }


# --------------------------------------------------------------------------- one image


def soft_target_bars(
    frame: pd.DataFrame, *, log_y: bool = False, title: str | None = None
) -> go.Figure:
    """Grouped bars of each model's distribution at T, with the T = 1 distribution as ticks.

    Args:
        frame: analysis.soft_target_frame (model, class, temperature, reference, probability).
        log_y: log-scale probabilities (shows the tiny off-target mass at low T).
    """
    classes = list(dict.fromkeys(frame["class"]))
    data = []
    for reference in (False, True):
        for model in dict.fromkeys(frame["model"]):
            trace = {
                "x": classes,
                "offsetgroup": model,
                "meta": [model, reference],
                # the name carries the temperature, so the hover text need not change with it
                "hovertemplate": "class %{x}<br>%{fullData.name}: p = %{y:.3g}<extra></extra>",
            }
            if reference:
                trace.update(
                    type="scatter",
                    mode="markers",
                    marker={
                        "symbol": "line-ew",
                        "size": 18,
                        "line": {"width": 3, "color": REFERENCE_COLOR},
                    },
                )
            else:
                trace.update(type="bar", marker={"color": model_color(model)})
            data.append(trace)
    layout = _layout(
        "",
        360,
        barmode="group",
        scattermode="group",
        bargap=0.25,
        xaxis=_category_axis("class", classes),
        yaxis=_probability_axis(log_y, frame["probability"].to_numpy()),
    )
    return set_soft_targets(_figure(data, layout), frame, title=title)


def set_soft_targets(fig: go.Figure, frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Put another analysis.soft_target_frame (another T) into a soft_target_bars figure, in
    place: much cheaper than building the figure again."""
    reference_col = frame["reference"].to_numpy()
    model_col = frame["model"].to_numpy()
    probability = frame["probability"].to_numpy()
    temperature = float(frame["temperature"].to_numpy()[~reference_col][0])
    for trace in fig.data:
        model, reference = trace.meta
        trace.y = probability[(model_col == model) & (reference_col == reference)]
        trace.name = f"{model_label(model)}, T = {_t(1.0 if reference else temperature)}"
        if reference:  # at T = 1 the ticks sit on the bars' tops and would repeat their legend
            trace.visible = temperature != 1.0
    fig.layout.title.text = title or f"Soft targets at T = {_t(temperature)} (ticks: T = 1)"
    if fig.layout.yaxis.type == "log":
        fig.layout.yaxis.range = _log_range(frame["probability"].to_numpy())
    return fig


def soft_target_animation(
    frame: pd.DataFrame, *, active_temperature: float, log_y: bool = False
) -> go.Figure:
    """Bars of each model's distribution with a Plotly slider over T: dragging animates in the
    browser, with no round trip to the server.

    Args:
        frame: analysis.soft_target_grid_frame (model, temperature, class, probability).
        active_temperature: the slider's starting stop (nearest grid value).
    """
    temps = sorted(frame["temperature"].unique())
    start = int(np.abs(np.log(temps) - math.log(active_temperature)).argmin())
    classes = list(dict.fromkeys(frame["class"]))
    models = list(dict.fromkeys(frame["model"]))
    by_t = {t: rows for t, rows in frame.groupby("temperature", sort=True)}

    def bars(t: float) -> list[dict]:
        rows = by_t[t]
        return [
            {
                "type": "bar",
                "x": classes,
                "y": rows.loc[rows["model"] == model, "probability"].to_numpy(),
                "name": model_label(model),
                "marker": {"color": model_color(model)},
                "hovertemplate": f"class %{{x}}<br>{model_label(model)}, T = {_t(t)}: p = %{{y:.3g}}<extra></extra>",
            }
            for model in models
        ]

    frames = [{"data": bars(t), "name": _t(t)} for t in temps]
    instant = {
        "mode": "immediate",
        "frame": {"duration": 0, "redraw": True},
        "transition": {"duration": 0},
    }
    play = {
        "frame": {"duration": 180, "redraw": True},
        "transition": {"duration": 0},
        "fromcurrent": True,
    }
    layout = _layout(
        "Soft targets as T moves: drag the slider (it runs in your browser)",
        440,
        barmode="group",
        xaxis=_category_axis("class", classes),
        yaxis=_probability_axis(log_y, frame["probability"].to_numpy()),
        margin={"l": 60, "r": 20, "t": 72, "b": 120},
        updatemenus=[
            {
                "type": "buttons", "direction": "left", "showactive": False,
                "x": 0.0, "xanchor": "left", "y": -0.3, "yanchor": "top",
                "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, play]}],
            }
        ],
        sliders=[
            {
                "active": start, "x": 0.1, "len": 0.9, "y": -0.22, "yanchor": "top",
                "currentvalue": {"prefix": "T = ", "font": {"size": 14}},
                "steps": [
                    {"label": _t(t), "method": "animate", "args": [[_t(t)], instant]} for t in temps
                ],
            }
        ],
    )  # fmt: skip
    return _figure(bars(temps[start]), layout, frames)


def _t_markers(temperature: float) -> list[dict]:
    """The current T (red, dashed) and T = 1 (grey, dotted; under the red one when T = 1)."""
    return [
        {
            "type": "line", "xref": "x", "yref": "paper", "x0": temperature, "x1": temperature,
            "y0": 0, "y1": 1, "line": {"color": T_MARK_COLOR, "width": 2, "dash": "dash"}, "name": _T_MARK,
        },
        {
            "type": "line", "xref": "x", "yref": "paper", "x0": 1.0, "x1": 1.0, "y0": 0,
            "y1": 1, "line": {"color": "#9e9e9e", "width": 1, "dash": "dot"}, "name": "T = 1",
        },
    ]  # fmt: skip


def _t_labels(temperature: float) -> list[dict]:
    return [
        {
            "x": math.log10(temperature), "xref": "x", "y": 1.0, "yref": "paper",
            "text": f"T = {_t(temperature)}", "showarrow": False, "yanchor": "bottom",
            "font": {"color": T_MARK_COLOR}, "name": _T_MARK,
        }
    ]  # fmt: skip


def mark_temperature(fig: go.Figure, temperature: float) -> go.Figure:
    """Move the current-T marker of a figure over T (log x axis) to ``temperature``, in place.

    The curves themselves do not depend on T, so the UI keeps the figure and only moves this.
    The marker is edited in the figure's own layout dict: going through plotly's validated
    property setters cost ~5 ms a figure on every temperature change.
    """
    layout = fig._layout  # the plain dict behind fig.layout
    line = next((s for s in layout.get("shapes", ()) if s.get("name") == _T_MARK), None)
    label = next((a for a in layout.get("annotations", ()) if a.get("name") == _T_MARK), None)
    if line is None or label is None:  # a figure without a marker yet
        shapes = [s.to_plotly_json() for s in fig.layout.shapes]
        notes = [a.to_plotly_json() for a in fig.layout.annotations]
        fig.layout.shapes = _t_markers(temperature) + shapes
        fig.layout.annotations = _t_labels(temperature) + notes
        return fig
    line["x0"] = line["x1"] = temperature
    label["x"] = math.log10(temperature)
    label["text"] = f"T = {_t(temperature)}"
    return fig


def temperature_curves(
    frame: pd.DataFrame,
    *,
    temperature: float,
    highlight: Sequence[str] = (),
    title: str = "Each class's probability as T moves",
) -> go.Figure:
    """One line per class: p_class(T) on a log T axis, the current T marked.

    Args:
        frame: analysis.temperature_curve_frame (temperature, class, probability).
        highlight: classes drawn thick (e.g. the true class and the predicted one).
    """
    classes = list(dict.fromkeys(frame["class"]))
    colors = class_colors(classes)
    data = []
    for name, rows in frame.groupby("class", sort=False):
        bold = name in highlight
        data.append(
            {
                "type": "scatter",
                "x": rows["temperature"].to_numpy(),
                "y": rows["probability"].to_numpy(),
                "name": str(name),
                "mode": "lines",
                "line": {"color": colors[str(name)], "width": 3.5 if bold else 1.5},
                "hovertemplate": f"class {name}<br>T = %{{x:.3g}}<br>p = %{{y:.3g}}<extra></extra>",
            }
        )
    layout = _layout(
        title,
        370,
        xaxis=_t_axis(),
        yaxis={"title": {"text": "probability"}, "range": [0, 1.02]},
        legend={"title": {"text": "class"}},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return mark_temperature(_figure(data, layout), temperature)


def softness_curves(frame: pd.DataFrame, *, temperature: float, num_classes: int) -> go.Figure:
    """Entropy (left axis, nats) and dark-knowledge mass (right axis) against T, per model.

    Args:
        frame: analysis.softness_frame (model, temperature, entropy, dark_mass).
        num_classes: K, for the entropy ceiling log K (the uniform distribution).
    """
    data = []
    for model, rows in frame.groupby("model", sort=False):
        label, color = model_label(model), model_color(model)
        x = rows["temperature"].to_numpy()
        data.append(
            {
                "type": "scatter", "x": x, "y": rows["entropy"].to_numpy(), "mode": "lines",
                "name": f"{label} entropy", "line": {"color": color, "width": 2.5},
                "hovertemplate": f"{label}<br>T = %{{x:.3g}}<br>entropy = %{{y:.3f}} nats<extra></extra>",
            }
        )  # fmt: skip
        data.append(
            {
                "type": "scatter", "x": x, "y": rows["dark_mass"].to_numpy(), "mode": "lines",
                "name": f"{label} dark mass", "yaxis": "y2",
                "line": {"color": color, "width": 2.5, "dash": "dot"},
                "hovertemplate": f"{label}<br>T = %{{x:.3g}}<br>1 − max p = %{{y:.3f}}<extra></extra>",
            }
        )  # fmt: skip
    ceiling = math.log(max(num_classes, 2))
    layout = _layout(
        "Entropy (solid) and dark mass (dotted) as T moves",
        370,
        xaxis=_t_axis(),
        yaxis={"title": {"text": "entropy (nats)"}, "range": [0, ceiling * 1.08]},
        yaxis2=_unit_axis("dark mass: 1 − max p", overlaying="y", side="right", showgrid=False),
        shapes=[
            {
                "type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": ceiling,
                "y1": ceiling, "line": {"color": "#9e9e9e", "width": 1, "dash": "dash"},
            }
        ],
        annotations=[
            {
                "x": 0.01, "xref": "paper", "y": ceiling, "yref": "y", "showarrow": False,
                "text": f"uniform: log {num_classes} = {ceiling:.2f} nats", "xanchor": "left",
                "yanchor": "bottom", "font": {"size": 11, "color": "#757575"},
            }
        ],
        margin={"l": 60, "r": 60, "t": 50, "b": 50},
        legend={"orientation": "h", "x": 0.0, "y": -0.2, "yanchor": "top"},
    )  # fmt: skip
    return mark_temperature(_figure(data, layout), temperature)


# --------------------------------------------------------------------------- image strips


def image_strip(
    source: str,
    indices: Sequence[int],
    *,
    tile: int,
    captions: Sequence[str],
    hover: Sequence[str],
    selected: int | None = None,
    title: str = "",
    height: int = 120,
) -> go.Figure:
    """Thumbnails drawn as one picture, a caption under each; hovering shows ``hover``.

    One chart instead of a dozen image elements keeps a rerun cheap. Each tile carries an
    invisible marker whose customdata is the image number, so a click selects it (Streamlit's
    on_select).

    Args:
        source: the picture, e.g. a PNG data URI: len(indices) tiles of tile x tile px in a row.
        indices: the image number of each tile.
        selected: an image number to outline.
    """
    indices = [int(i) for i in indices]
    n = len(indices)
    centers = (np.arange(n) + 0.5) * tile
    data = [
        {"type": "image", "source": source, "x0": 0, "dx": 1, "y0": 0, "dy": 1, "hoverinfo": "skip", "name": "images"},
        {
            "type": "scatter", "x": centers, "y": np.full(n, tile / 2), "mode": "markers",
            "marker": {"size": 40, "opacity": 0.0, "symbol": "square"}, "customdata": indices,
            "hovertemplate": "%{text}<extra></extra>", "name": "pick", "showlegend": False,
        },
    ]  # fmt: skip
    layout = _layout(
        title,
        height,
        xaxis={
            "range": [0, max(n, 1) * tile], "tickvals": centers, "showgrid": False,
            "zeroline": False, "showline": False, "ticks": "", "constrain": "domain",
            "fixedrange": True, "tickfont": {"size": 12},
        },
        yaxis={
            "range": [tile, 0], "visible": False, "scaleanchor": "x", "constrain": "domain",
            "fixedrange": True,
        },
        margin={"l": 0, "r": 0, "t": 26 if title else 4, "b": 4},
        showlegend=False,
        dragmode=False,
        meta={"tile": tile},
    )  # fmt: skip
    return label_strip(_figure(data, layout), captions=captions, hover=hover, selected=selected)


def label_strip(
    fig: go.Figure, *, captions: Sequence[str], hover: Sequence[str], selected: int | None = None
) -> go.Figure:
    """Set an image_strip's captions, hover texts and outlined image, in place (they change
    with T while the images stay)."""
    # edited in the figure's own dicts, not through plotly's (slow) validated setters
    layout, trace = fig._layout, fig._data[1]
    tile = layout["meta"]["tile"]
    indices = [int(i) for i in trace["customdata"]]
    layout["xaxis"]["ticktext"] = list(captions)
    trace["text"] = list(hover)
    shapes = []
    if selected is not None and selected in indices:
        i = indices.index(selected)
        shapes.append(
            {
                "type": "rect", "xref": "x", "yref": "y", "x0": i * tile + 1, "x1": (i + 1) * tile - 1,
                "y0": 1, "y1": tile - 1, "line": {"color": T_MARK_COLOR, "width": 3},
            }
        )  # fmt: skip
    fig.layout.shapes = shapes  # a new list: through plotly, so its shape objects stay in sync
    return fig


# --------------------------------------------------------------------------- matrices


def matrix_heatmap(
    matrix: pd.DataFrame,
    *,
    title: str,
    kind: str = "probability",
    diagonal: pd.Series | None = None,
    dendrogram: pd.DataFrame | None = None,
    selected: tuple[str, str] | None = None,
    clickable: bool = False,
    click_diagonal: bool = False,
    click_hint: str = "click to show these images",
    light_cells: bool = False,
    dense: bool = False,
    height: int = 470,
) -> go.Figure:
    """A class-by-class heatmap (rows: true class, top to bottom; columns: class).

    Args:
        matrix: square frame in display order; nan cells (e.g. the masked diagonal) stay blank.
        kind: "probability" (log colour: dark knowledge spans decades), "difference" (diverging
            around 0) or "count" (a confusion matrix; counts written in the cells).
        diagonal: the values taken off the diagonal, shown apart in a column on the right.
        dendrogram: analysis.cluster_order's frame (segment, x, y), drawn above the columns.
        selected: a (row, column) cell to outline.
        clickable: add an invisible marker per cell so a click selects it in Streamlit.
        click_diagonal: with ``clickable``, cells whose row and column share a name can be
            clicked too (e.g. the diagonal blocks of a block overview).
        click_hint: the last line of a clickable cell's hover text.
        light_cells: the click markers carry only the value as customdata (a clicked point's
            row and column are its y and x): a 50 x 50 tile encodes several times faster.
        dense: up to ~60 classes a side: names in small type, the columns' written upwards.
    """
    rows, cols = [str(r) for r in matrix.index], [str(c) for c in matrix.columns]
    values = matrix.to_numpy(dtype=np.float64)
    row_name, col_name = matrix.index.name or "true class", matrix.columns.name or "class"
    where = f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>"
    has_tree = dendrogram is not None and len(dendrogram) > 0
    heat: dict = {"type": "heatmap", "x": cols, "y": rows, "xgap": 1, "ygap": 1, "name": "matrix"}
    colorbar: dict = {
        "len": 0.8 if has_tree else 1.0,
        "y": 0.0,
        "yanchor": "bottom",
        "thickness": 14,
    }
    if kind == "probability":
        finite = values[np.isfinite(values) & (values > 0)]
        # colour from the smallest to the largest value shown (at most 6 decades): full contrast
        zmax = math.log10(finite.max()) if finite.size else 0.0
        zmin = max(
            math.log10(finite.min()) if finite.size else -4.0,
            zmax - 6.0,
            math.log10(MIN_LOG_PROBABILITY),
        )
        if zmax - zmin < 0.5:
            zmin = zmax - 0.5
        ticks = list(range(math.ceil(zmin), math.floor(zmax) + 1)) or [round(zmax, 1)]
        heat.update(
            z=np.log10(np.clip(values, MIN_LOG_PROBABILITY, None)),  # nan stays nan
            customdata=values,
            zmin=zmin,
            zmax=zmax,
            colorscale=PROBABILITY_SCALE,
            colorbar={**colorbar, "title": {"text": "mean p"}, "tickvals": ticks,
                      "ticktext": [_power(t) for t in ticks]},
            hovertemplate=where + "mean p = %{customdata:.3g}<extra></extra>",
        )  # fmt: skip
    elif kind == "difference":
        span = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        heat.update(
            z=values,
            zmin=-(span or 1.0),
            zmax=span or 1.0,
            zmid=0.0,
            colorscale=DIFFERENCE_SCALE,
            colorbar={**colorbar, "title": {"text": "teacher − student"}},
            hovertemplate=where + "teacher − student = %{z:.3g}<extra></extra>",
        )
    elif kind == "count":
        shown = np.isfinite(values) & (values > 0)
        heat.update(
            z=values,
            zmin=0,
            colorscale=[[0.0, "#ffffff"], [1e-9, "#fde0c5"], [1.0, "#c0392b"]],
            text=np.where(shown, np.nan_to_num(values).astype(np.int64).astype(str), ""),
            texttemplate="%{text}",
            # whole images: integer ticks (a 0..1 matrix of counts got 0, 0.2, 0.4 ...)
            colorbar={
                **colorbar,
                "title": {"text": "images"},
                "tickformat": "d",
                "tick0": 0,
                "dtick": max(1, math.ceil(float(np.nanmax(values, initial=1.0)) / 5)),
            },
            hovertemplate=where + "%{z:.0f} images<extra></extra>",
        )
    else:
        raise ValueError(f"unknown heatmap kind {kind!r}; valid: probability, difference, count")
    if clickable:
        heat["hoverinfo"] = "skip"
        heat.pop("hovertemplate")
    data: list[dict] = [heat]
    has_diag = diagonal is not None
    x_domain = [0.0, 0.84 if has_diag else 1.0]
    layout = _layout(
        title,
        height,
        xaxis={
            **_category_axis(col_name, cols), "domain": x_domain, "tickangle": 0,
            "range": [-0.5, len(cols) - 0.5], "showgrid": False,
        },
        yaxis={
            **_category_axis(row_name, rows), "autorange": "reversed",
            "domain": [0.0, 0.8 if has_tree else 1.0], "showgrid": False,
        },
        showlegend=False,
        margin={"l": 70, "r": 20, "t": 50, "b": 50},
    )  # fmt: skip
    if dense:  # Plotly leaves out names that would overlap (on a narrow screen)
        layout["xaxis"].update(tickfont={"size": 9}, tickangle=-90)
        layout["yaxis"].update(tickfont={"size": 9})
    cells: list = []
    if clickable:
        cells = [
            (r, c, values[i, j])
            for i, r in enumerate(rows)
            for j, c in enumerate(cols)
            if click_diagonal or r != c
        ]
        value_text = (
            "%{customdata[2]:.0f} images" if kind == "count" else "mean p = %{customdata[2]:.3g}"
        )
        if light_cells:
            data.append(_light_cells(cells, row_name, col_name, kind, click_hint, len(cols)))
            cells = []
    if clickable and cells:
        data.append(
            {
                "type": "scatter", "x": [c for _, c, _ in cells], "y": [r for r, _, _ in cells],
                "customdata": [[r, c, v] for r, c, v in cells], "mode": "markers", "name": "cells",
                "marker": {"size": max(8, int(340 / max(len(cols), 1))), "opacity": 0.0, "symbol": "square"},
                "hovertemplate": f"{row_name} %{{customdata[0]}}<br>{col_name} %{{customdata[1]}}<br>"
                + value_text + f"<br>{click_hint}<extra></extra>",
            }
        )  # fmt: skip
    if has_diag:
        diag = diagonal.reindex(matrix.index).to_numpy(dtype=np.float64)
        fmt = "{:.0f}" if kind == "count" else "{:.0%}"
        data.append(
            {
                "type": "heatmap", "x": ["own class"], "y": rows, "z": diag.reshape(-1, 1),
                "text": [[fmt.format(v) if np.isfinite(v) else ""] for v in diag],
                "texttemplate": "%{text}", "textfont": {"size": 8 if dense else 11}, "colorscale": "Greys",
                "zmin": 0, "zmax": float(np.nanmax(diag)) * 1.6 if np.isfinite(diag).any() else 1,
                "showscale": False, "xaxis": "x3", "yaxis": "y", "ygap": 1, "name": "diagonal",
                "hovertemplate": f"{row_name} %{{y}}<br>on its own class: %{{z:.3g}}<extra></extra>",
            }
        )  # fmt: skip
        layout["xaxis3"] = {
            "domain": [0.87, 0.97], "anchor": "y", "type": "category", "tickangle": 0,
            "showgrid": False, "fixedrange": True, "side": "top", "tickfont": {"size": 11},
        }  # fmt: skip
        heat["colorbar"].update(x=1.0, xanchor="left")
        layout["margin"]["r"] = 70
    if has_tree:
        xs: list = []
        ys: list = []
        for _, seg in dendrogram.groupby("segment", sort=True):
            xs += [*seg["x"].tolist(), None]
            ys += [*seg["y"].tolist(), None]
        data.append(
            {
                "type": "scatter", "x": xs, "y": ys, "mode": "lines", "xaxis": "x2", "yaxis": "y2",
                "line": {"color": "#616161", "width": 1.2}, "hoverinfo": "skip", "name": "dendrogram",
            }
        )  # fmt: skip
        layout["xaxis2"] = {
            "domain": x_domain,
            "anchor": "y2",
            "range": [-0.5, len(cols) - 0.5],
            "visible": False,
        }
        layout["yaxis2"] = {
            "domain": [0.82, 1.0],
            "anchor": "x2",
            "visible": False,
            "rangemode": "tozero",
        }
    if selected is not None and selected[0] in rows and selected[1] in cols:
        i, j = rows.index(selected[0]), cols.index(selected[1])
        layout["shapes"] = [
            {
                "type": "rect", "xref": "x", "yref": "y", "x0": j - 0.5, "x1": j + 0.5,
                "y0": i - 0.5, "y1": i + 0.5, "line": {"color": T_MARK_COLOR, "width": 3},
            }
        ]  # fmt: skip
    return _figure(data, layout)


def _light_cells(cells, row_name: str, col_name: str, kind: str, hint: str, n_cols: int) -> dict:
    value = "%{customdata:.0f} images" if kind == "count" else "mean p = %{customdata:.3g}"
    return {
        "type": "scatter", "mode": "markers", "name": "cells",
        "x": np.asarray([c for _, c, _ in cells], dtype=object),
        "y": np.asarray([r for r, _, _ in cells], dtype=object),
        "customdata": np.asarray([v for _, _, v in cells], dtype=np.float64),
        "marker": {"size": max(8, int(340 / max(n_cols, 1))), "opacity": 0.0, "symbol": "square"},
        "hovertemplate": f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>{value}<br>{hint}<extra></extra>",
    }  # fmt: skip


def similarity_graph(nodes: pd.DataFrame, links: pd.DataFrame, *, title: str) -> go.Figure:
    """Classes as nodes, the strongest soft-target links as edges (width: strength).

    Args:
        nodes: analysis.circle_layout (class, x, y).
        links: analysis.similarity_links (source, target, strength, a_to_b, b_to_a).
    """
    pos = {str(c): (x, y) for c, x, y in zip(nodes["class"], nodes["x"], nodes["y"], strict=True)}
    top = float(links["strength"].max()) if len(links) else 1.0
    data: list[dict] = []
    mid_x, mid_y, mid_text = [], [], []
    for link in links.itertuples():
        (x0, y0), (x1, y1) = pos[str(link.source)], pos[str(link.target)]
        rel = float(link.strength) / top if top > 0 else 0.0
        data.append(
            {
                "type": "scatter", "x": [x0, x1], "y": [y0, y1], "mode": "lines", "hoverinfo": "skip",
                "showlegend": False, "name": f"{link.source}–{link.target}",
                "line": {"width": 1 + 9 * rel, "color": f"rgba(31,111,180,{0.25 + 0.6 * rel:.2f})"},
            }
        )  # fmt: skip
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        mid_text.append(
            f"{link.source} ↔ {link.target}<br>"
            f"images of {link.source}: mean p({link.target}) = {link.a_to_b:.3g}<br>"
            f"images of {link.target}: mean p({link.source}) = {link.b_to_a:.3g}"
        )
    data.append(
        {
            "type": "scatter", "x": mid_x, "y": mid_y, "mode": "markers", "text": mid_text,
            "marker": {"size": 12, "opacity": 0.0}, "hovertemplate": "%{text}<extra></extra>",
            "showlegend": False, "name": "links",
        }
    )  # fmt: skip
    colors = class_colors(list(nodes["class"]))
    k = len(nodes)
    labelled = k <= 30  # beyond that the names would overlap: hover tells the class
    # short names fit inside the dots; longer ones go outside the circle, away from its centre
    inside = max((len(str(c)) for c in nodes["class"]), default=0) <= 3
    xs, ys = nodes["x"].to_numpy(), nodes["y"].to_numpy()
    outside = [
        ("middle right" if x > 0.35 else "middle left" if x < -0.35 else
         "top center" if y > 0 else "bottom center")
        for x, y in zip(xs, ys, strict=True)
    ]  # fmt: skip
    data.append(
        {
            "type": "scatter", "x": xs, "y": ys,
            "mode": "markers+text" if labelled else "markers", "text": list(nodes["class"]),
            "textposition": "middle center" if inside else outside,
            "textfont": {"color": "white", "size": 12} if inside else {"color": REFERENCE_COLOR, "size": 10},
            "name": "classes", "showlegend": False,
            "marker": {
                "size": max(8, min(34 if inside else 14, int(600 / max(k, 1)))),
                "color": [colors[str(c)] for c in nodes["class"]], "line": {"width": 1, "color": "white"},
            },
            "hovertemplate": "class %{text}<extra></extra>",
        }
    )  # fmt: skip
    span = 1.25 if inside or not labelled else 1.6  # room for the names outside the circle
    hidden = {"visible": False, "range": [-span, span], "fixedrange": True}
    layout = _layout(
        title,
        440,
        xaxis=hidden,
        yaxis={**hidden, "scaleanchor": "x", "scaleratio": 1},
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return _figure(data, layout)


def embedding_scatter(
    frame: pd.DataFrame, *, title: str, method: str = "pca", class_names: Sequence[str] = ()
) -> go.Figure:
    """Per-image soft targets in 2-D, coloured by true class; hover names the image and class.

    Args:
        frame: analysis.soft_target_embedding (index, class, predicted, x, y, p_top).
        class_names: all classes, in order (fixes the colours).
    """
    axis = "PC" if method == "pca" else "t-SNE"
    colors = class_colors(list(class_names) or list(dict.fromkeys(frame["class"])))
    present = set(frame["class"])
    data = []
    for name in [c for c in colors if c in present]:
        rows = frame[frame["class"] == name]
        data.append(
            {
                "type": "scattergl", "x": rows["x"].to_numpy(), "y": rows["y"].to_numpy(),
                "mode": "markers", "name": str(name),
                "marker": {"size": 6, "color": colors[name], "opacity": 0.8},
                "customdata": np.stack(
                    [rows["index"].to_numpy(), rows["predicted"].to_numpy(), rows["p_top"].round(3).to_numpy()],
                    axis=1,
                ).tolist(),
                "hovertemplate": (
                    f"image #%{{customdata[0]}}<br>true class {name}<br>"
                    "top class %{customdata[1]} (p = %{customdata[2]})<extra></extra>"
                ),
            }
        )  # fmt: skip
    layout = _layout(
        title,
        480,
        xaxis={"title": {"text": f"{axis} 1"}, "zeroline": False},
        yaxis={"title": {"text": f"{axis} 2"}, "zeroline": False},
        legend={"title": {"text": "true class"}},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return _figure(data, layout)


# --------------------------------------------------------------------------- teacher vs student


def reliability_diagram(
    frame: pd.DataFrame, *, title: str, ece: Mapping[str, float] | None = None
) -> go.Figure:
    """Reliability diagrams side by side: per confidence bin, accuracy (bars) against the
    diagonal of perfect calibration; the red part is the gap to the bin's mean confidence.

    Args:
        frame: analysis.reliability_frame (model, lower, upper, center, confidence, accuracy, count).
        ece: model -> ECE, written above its panel.
    """
    models = list(dict.fromkeys(frame["model"]))
    gap = 0.08
    width = (1.0 - gap * (len(models) - 1)) / max(len(models), 1)
    data: list[dict] = []
    extra: dict = {}
    annotations = []
    for i, model in enumerate(models):
        rows = frame[frame["model"] == model]
        suffix = "" if i == 0 else str(i + 1)
        xa, ya = f"x{suffix}", f"y{suffix}"
        label = model_label(model)
        bin_width = float((rows["upper"] - rows["lower"]).iloc[0]) if len(rows) else 0.1
        custom = np.stack([rows["confidence"], rows["count"], rows["lower"], rows["upper"]], axis=1)
        data.append(
            {
                "type": "bar", "x": rows["center"].to_numpy(), "y": rows["accuracy"].to_numpy(),
                "width": bin_width * 0.95, "xaxis": xa, "yaxis": ya, "name": f"{label}: accuracy",
                "marker": {"color": model_color(model)}, "customdata": custom, "legendgroup": model,
                "hovertemplate": (
                    f"{label}<br>confidence %{{customdata[2]:.2f}}–%{{customdata[3]:.2f}}<br>"
                    "accuracy %{y:.3f}<br>mean confidence %{customdata[0]:.3f}<br>"
                    "%{customdata[1]} images<extra></extra>"
                ),
            }
        )  # fmt: skip
        data.append(
            {
                "type": "bar", "x": rows["center"].to_numpy(),
                "y": (rows["confidence"] - rows["accuracy"]).to_numpy(),
                "base": rows["accuracy"].to_numpy(), "width": bin_width * 0.95, "xaxis": xa,
                "yaxis": ya, "name": "gap to confidence", "legendgroup": "gap", "showlegend": i == 0,
                "marker": {"color": "rgba(214,39,40,0.3)", "line": {"color": T_MARK_COLOR, "width": 1}},
                "hovertemplate": "confidence − accuracy = %{y:.3f}<extra></extra>",
            }
        )  # fmt: skip
        data.append(
            {
                "type": "scatter", "x": [0, 1], "y": [0, 1], "mode": "lines", "xaxis": xa, "yaxis": ya,
                "name": "perfect calibration", "legendgroup": "diag", "showlegend": i == 0,
                "line": {"color": "#757575", "dash": "dash"}, "hoverinfo": "skip",
            }
        )  # fmt: skip
        x0 = i * (width + gap)
        extra[f"xaxis{suffix}"] = {
            "domain": [x0, x0 + width], "range": [0, 1], "anchor": ya,
            "title": {"text": "confidence (top p)"},
        }  # fmt: skip
        extra[f"yaxis{suffix}"] = {
            "domain": [0, 0.86], "range": [0, 1], "anchor": xa,
            "title": {"text": "accuracy" if i == 0 else ""},
        }  # fmt: skip
        text = label if not ece or model not in ece else f"{label}: ECE = {100 * ece[model]:.2f}%"
        annotations.append(
            {
                "text": f"<b>{text}</b>", "x": x0 + width / 2, "xref": "paper", "y": 0.88,
                "yref": "paper", "showarrow": False, "yanchor": "bottom",
                # centred on its panel ("auto" anchors a paper x > 2/3 by its right end)
                "xanchor": "center",
            }
        )  # fmt: skip
    layout = _layout(
        title, 400, barmode="overlay", annotations=annotations,
        margin={"l": 60, "r": 20, "t": 80, "b": 50}, **extra,
    )  # fmt: skip
    return _figure(data, layout)


def dkd_bars(frame: pd.DataFrame, *, temperature: float) -> go.Figure:
    """Per class, the distillation loss KL = TCKD + (1 - p_t) * NCKD as stacked bars, the
    unweighted NCKD as open diamonds and the teacher's (1 - p_t) on the right axis.

    Args:
        frame: analysis.per_class_frame (class, tckd, nckd, weight, weighted_nckd, ...).
    """
    x = frame["class"].astype(str).tolist()
    data = [
        {
            "type": "bar", "x": x, "y": frame["tckd"].to_numpy(), "name": "TCKD (target vs the rest)",
            "marker": {"color": TCKD_COLOR}, "hovertemplate": "class %{x}<br>TCKD = %{y:.3g} nats<extra></extra>",
        },
        {
            "type": "bar", "x": x, "y": frame["weighted_nckd"].to_numpy(),
            "name": "(1 − p_t) · NCKD: the dark knowledge, as weighted", "marker": {"color": NCKD_COLOR},
            "hovertemplate": "class %{x}<br>(1 − p_t) · NCKD = %{y:.3g} nats<extra></extra>",
        },
        {
            "type": "scatter", "x": x, "y": frame["nckd"].to_numpy(), "mode": "markers",
            "name": "NCKD before weighting",
            "marker": {"symbol": "diamond-open", "size": 11, "color": NCKD_COLOR, "line": {"width": 2}},
            "hovertemplate": "class %{x}<br>NCKD = %{y:.3g} nats<extra></extra>",
        },
        {
            "type": "scatter", "x": x, "y": frame["weight"].to_numpy(), "mode": "lines+markers",
            "name": "teacher's 1 − p_t (right axis)", "yaxis": "y2",
            "line": {"color": "#9467bd", "width": 2}, "marker": {"size": 7},
            "hovertemplate": "class %{x}<br>1 − p_t = %{y:.3g}<extra></extra>",
        },
    ]  # fmt: skip
    layout = _layout(
        f"How KL(teacher ‖ student) at T = {_t(temperature)} splits, per class (means over images)",
        430,
        barmode="stack",
        xaxis=_category_axis("true class", x),
        yaxis={"title": {"text": "nats"}, "rangemode": "tozero"},
        yaxis2=_unit_axis("1 − p_t (teacher)", overlaying="y", side="right", showgrid=False),
        margin={"l": 60, "r": 60, "t": 96, "b": 50},
    )  # fmt: skip
    return _figure(data, layout)


def class_accuracy_bars(
    frame: pd.DataFrame, *, highlight: str = "", title: str = "Accuracy per class"
) -> go.Figure:
    """Grouped bars of accuracy per class, one group per model; ``highlight``'s bars outlined.

    Args:
        frame: class, model, accuracy (0..1), one row per (class, model).
    """
    classes = list(dict.fromkeys(frame["class"].astype(str)))
    models = list(dict.fromkeys(frame["model"]))
    palette = (STUDENT_COLOR, NCKD_COLOR, TEACHER_COLOR, T_MARK_COLOR)
    data = []
    for model, rows in frame.groupby("model", sort=False):
        names = rows["class"].astype(str).to_numpy()
        data.append(
            {
                "type": "bar",
                "x": names,
                "y": rows["accuracy"].to_numpy(),
                "name": str(model),
                "marker": {
                    "color": palette[models.index(model) % len(palette)],
                    "line": {
                        "width": [4 if c == highlight else 0 for c in names],
                        "color": REFERENCE_COLOR,
                    },
                },
                "hovertemplate": f"{model}<br>class %{{x}}: %{{y:.1%}}<extra></extra>",
            }
        )
    layout = _layout(
        title,
        420,
        barmode="group",
        bargap=0.25,
        xaxis=_category_axis("true class", classes),
        yaxis=_unit_axis("accuracy", tickformat=".0%"),
    )
    return _figure(data, layout)
