"""One image's soft targets across temperature: the bars, the T animation, the per-class curves,
the softness curves and the mark of the current T."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdviz.plots.style import (
    REFERENCE_COLOR,
    T_MARK_COLOR,
    _category_axis,
    _figure,
    _layout,
    _log_range,
    _probability_axis,
    _t,
    _t_axis,
    _unit_axis,
    class_colors,
    model_color,
    model_label,
)

_T_MARK = "temperature"  # name of the shapes and annotations that mark the current T


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
