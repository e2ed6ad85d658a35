"""Colours, the slim template and the layout and axis helpers that every kdviz figure shares."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
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
