"""Class-by-class pictures: matrix heat maps, the class-similarity graph and the 2-D embedding map."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kdviz.plots.style import (
    DIFFERENCE_SCALE,
    MIN_LOG_PROBABILITY,
    PROBABILITY_SCALE,
    REFERENCE_COLOR,
    T_MARK_COLOR,
    _category_axis,
    _figure,
    _layout,
    _power,
    class_colors,
)


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
