"""A strip of input thumbnails drawn as one chart, with captions, hover texts and a selection."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from kdviz.plots.style import T_MARK_COLOR, _figure, _layout


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
