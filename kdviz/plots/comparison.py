"""Teacher against student: the reliability diagram, DKD's TCKD / NCKD parts and per-class accuracy."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdviz.plots.style import (
    NCKD_COLOR,
    REFERENCE_COLOR,
    STUDENT_COLOR,
    T_MARK_COLOR,
    TCKD_COLOR,
    TEACHER_COLOR,
    _category_axis,
    _figure,
    _layout,
    _t,
    _unit_axis,
    model_color,
    model_label,
)


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
