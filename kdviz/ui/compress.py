"""Page "Compress": what the student is worth once deployed. ONNX exports of the teacher and the
student, in fp32 and int8, with size, CPU latency, accuracy and agreement, and a Pareto chart.

The math lives in kdviz.export; this module lays it out. Exports are cached on disk
(KDVIZ_HOME/exports) and measurements in st.cache_data.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kdviz import export, plots
from kdviz.ui import cache, shell

KEY_ALL = "compress_all"  # session flag: (spec, split) whose other checkpoints were measured
MAX_CHECKPOINTS = 12  # the Pareto chart's cap: each one costs two exports and four timings
LATENCY_BUDGET_S = 0.3  # per latency figure; the median of at least 5 runs either way
PRECISION_SYMBOLS = {"fp32": "circle", "int8": "diamond"}


@st.cache_data(max_entries=64, show_spinner=False)
def measure(stem: str, mtime: float, precision: str, spec: str, split: str) -> dict:
    """One row of the table (export made or reused on disk, then timed on this machine)."""
    result = export.cached_export(stem, precision)
    return export.measure_export(result, cache.dataset(spec, split), budget_s=LATENCY_BUDGET_S)


def render() -> None:
    st.header("Compress", anchor=False)
    shell.explain(
        "What the student is worth once deployed: the teacher and the student exported to ONNX, "
        "in fp32 and quantized to int8, with their size, their speed on this machine's CPU, and "
        "what they still get right. Exports are made once and kept in KDVIZ_HOME/exports."
    )
    shell.render_with_view(_body)


def _body(view: shell.View) -> None:
    if not view.has_images:
        st.info(
            "These logits came without images, so there is no model here to export or time; "
            "pick a dataset in the sidebar to compare the files of a teacher and a student.",
            icon=":material/info:",
        )
        return
    pairs = [(view.teacher, "teacher"), (view.student, "student")]
    rows = []
    with st.spinner("Exporting to ONNX and timing on the CPU (once per checkpoint)…"):
        for model, role in pairs:
            for precision in export.PRECISIONS:
                row = dict(measure(model.stem, model.mtime, precision, view.spec, view.split))
                row.update(model=model.name, role=role)
                rows.append(row)
    reference = view.teacher.logits.argmax(dim=1).numpy()
    frame = export.compress_frame(rows, view.labels, reference)
    by = {(r.role, r.precision): r._asdict() for r in frame.itertuples(index=False)}
    st.markdown("**" + export.summary_sentence(by["teacher", "fp32"], by["student", "fp32"]) + "**")
    same = float(np.mean(rows[2]["predictions"] == rows[3]["predictions"]))  # student fp32 vs int8
    st.markdown(_int8_sentence(by["student", "fp32"], by["student", "int8"], same))
    _table(frame)
    shell.explain(
        f"Latency: median wall time of one onnxruntime forward pass on {export.LATENCY_THREADS} "
        f"CPU thread, at batch 1 and 256, measured here ({export.machine_description()}, shared "
        "with whatever else runs); compare the ratios, not the milliseconds. Accuracy on the "
        f"{view.split} split of {view.spec} ({len(view.labels):,} images) with its 95% Wilson "
        "interval; agreement is top-1 agreement with the teacher in PyTorch."
    )
    _pareto(view, frame)


def _int8_sentence(fp32: dict, int8: dict, same: float) -> str:
    size = int8["size_bytes"] / fp32["size_bytes"]
    speed = fp32["latency_b1_ms"] / int8["latency_b1_ms"]
    points = 100 * (int8["accuracy"] - fp32["accuracy"])
    runs = f" and runs {speed:.1f}x as fast at batch 1" if math.isfinite(speed) else ""
    return (
        f"Quantized to int8, the student's file is {size:.0%} of its fp32 export{runs}; its "
        f"accuracy moves by {points:+.1f} points, and it picks the same class as the fp32 "
        f"student on {100 * same:.1f}% of the images."
    )


def _table(frame: pd.DataFrame) -> None:
    shown = pd.DataFrame(
        {
            "file": [f"{r} · {p}" for r, p in zip(frame["role"], frame["precision"], strict=True)],
            "model": frame["model"],
            "parameters": frame["parameters"],
            "size_mb": frame["size_mb"],
            "latency_b1_ms": frame["latency_b1_ms"],
            "latency_b256_ms": frame["latency_b256_ms"],
            "accuracy": 100 * frame["accuracy"],
            "interval": [
                f"{100 * lo:.1f}–{100 * hi:.1f}%"
                for lo, hi in zip(frame["accuracy_low"], frame["accuracy_high"], strict=True)
            ],
            "agreement": 100 * frame["agreement"],
        }
    )
    st.dataframe(
        shown,
        key="compress_table",
        hide_index=True,
        width="stretch",
        column_config={
            "file": st.column_config.TextColumn("file", pinned=True),
            "model": st.column_config.TextColumn("checkpoint"),
            "parameters": st.column_config.NumberColumn("parameters", format="localized"),
            "size_mb": st.column_config.NumberColumn("MB", format="%.2f"),
            "latency_b1_ms": st.column_config.NumberColumn("batch 1 (ms)", format="%.3f"),
            "latency_b256_ms": st.column_config.NumberColumn("batch 256 (ms)", format="%.1f"),
            "accuracy": st.column_config.NumberColumn("accuracy", format="%.1f%%"),
            "interval": st.column_config.TextColumn("95% interval"),
            "agreement": st.column_config.NumberColumn("agrees w. teacher", format="%.1f%%"),
        },
    )


def candidates(view: shell.View) -> list[tuple[str, str, float]]:
    """(display name, stem, mtime) of the checkpoints that run on the view's data: the teacher
    and the student first, then others trained on this dataset; at most MAX_CHECKPOINTS."""
    ds = view.dataset
    fits = [
        (name, stem, card)
        for name, stem, card in cache.checkpoint_list()
        if card.kind in ("model", "ensemble", "onnx")
        and card.num_classes == ds.num_classes
        and list(card.in_shape) == list(ds.in_shape)
    ]
    first = {view.teacher.name: 0, view.student.name: 1}
    fits.sort(key=lambda f: (first.get(f[0], 2), f[2].dataset != ds.spec))
    return [(n, stem, cache.stem_mtime(stem)) for n, stem, _ in fits[:MAX_CHECKPOINTS]]


def _pareto(view: shell.View, frame: pd.DataFrame) -> None:
    st.subheader("Accuracy against cost", anchor=False)
    found = candidates(view)
    others = [c for c in found if c[0] not in (view.teacher.name, view.student.name)]
    measured = st.session_state.get(KEY_ALL) == (view.spec, view.split)
    if (
        others
        and not measured
        and st.button(
            f"Measure the other {len(others)} checkpoint(s) that fit this data",
            key="compress_measure_all",
            icon=":material/speed:",
            help="Exports each to ONNX in fp32 and int8 and times it; a few seconds each.",
        )
    ):
        progress = st.progress(0.0, text="Measuring…")
        for i, (name, stem, mtime) in enumerate(others):
            for precision in export.PRECISIONS:
                progress.progress(i / len(others), text=f"{name} ({precision})…")
                measure(stem, mtime, precision, view.spec, view.split)
        st.session_state[KEY_ALL] = (view.spec, view.split)
        st.rerun()  # draw the page again without the button, from the cached measurements
    rows = frame.to_dict("records")
    if measured and others:
        extra = []
        for name, stem, mtime in others:
            for precision in export.PRECISIONS:
                row = dict(measure(stem, mtime, precision, view.spec, view.split))
                extra.append({**row, "model": name, "role": "other"})
        reference = view.teacher.logits.argmax(dim=1).numpy()
        rows += export.compress_frame(extra, view.labels, reference).to_dict("records")
    points = pd.DataFrame(rows)
    left, right = st.columns(2)
    with left:
        shell.chart(
            pareto_figure(points, "latency_b1_ms", "latency at batch 1 (ms)"),
            key="compress_pareto_latency",
        )
    with right:
        shell.chart(
            pareto_figure(points, "size_mb", "file size (MB)"),
            key="compress_pareto_size",
        )
    shell.explain(
        "Each point is one ONNX file: blue the teacher, orange the student, grey the other "
        "checkpoints; circles fp32, diamonds int8; the bars are 95% intervals of its accuracy, and "
        "both cost axes are logarithmic. The dashed line is the Pareto front: the files no other "
        "file beats on both accuracy and cost. "
        + ("" if others else "Only the teacher and the student fit this data.")
    )


ROLE_COLORS = {"teacher": plots.TEACHER_COLOR, "student": plots.STUDENT_COLOR, "other": "#7f7f7f"}


def pareto_figure(points: pd.DataFrame, cost: str, x_title: str) -> go.Figure:
    """Accuracy (%) against ``cost`` for the rows of compress_frame, one trace per role and
    precision, with the Pareto front (pareto_mask) drawn as a dashed step line."""
    fig = go.Figure(layout={"template": plots.TEMPLATE})
    for (role, precision), group in points.groupby(["role", "precision"], sort=False):
        fig.add_trace(
            go.Scatter(
                x=group[cost], y=100 * group["accuracy"], mode="markers",
                name=f"{role} {precision}",
                marker={"color": ROLE_COLORS.get(role, "#7f7f7f"), "size": 11,
                        "symbol": PRECISION_SYMBOLS.get(precision, "circle"),
                        "line": {"width": 1, "color": "white"}},
                error_y={"type": "data", "symmetric": False, "thickness": 1, "width": 3,
                         "array": 100 * (group["accuracy_high"] - group["accuracy"]),
                         "arrayminus": 100 * (group["accuracy"] - group["accuracy_low"])},
                customdata=np.stack([group["model"], group["precision"],
                                     100 * group["accuracy_low"], 100 * group["accuracy_high"]],
                                    axis=1),
                hovertemplate=("<b>%{customdata[0]}</b> (%{customdata[1]})<br>accuracy %{y:.1f}% "
                               "[%{customdata[2]:.1f}, %{customdata[3]:.1f}]<br>"
                               f"{x_title.split(' (')[0]}: %{{x:.3g}}<extra></extra>"),
            )
        )  # fmt: skip
    front = points[export.pareto_mask(points[cost].tolist(), points["accuracy"].tolist())]
    front = front.sort_values(cost)
    fig.add_trace(
        go.Scatter(
            x=front[cost], y=100 * front["accuracy"], mode="lines", name="Pareto front",
            line={"color": plots.REFERENCE_COLOR, "dash": "dash", "width": 1, "shape": "hv"},
            hoverinfo="skip",
        )
    )  # fmt: skip
    fig.update_layout(
        height=340,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"type": "log", "title": x_title, **log_ticks(points[cost].tolist())},
        yaxis={"title": "accuracy (%)"},
        showlegend=False,  # the caption under both charts says what colours and symbols mean
    )
    return fig


def log_ticks(values: list[float]) -> dict:
    """tickvals / ticktext at 1-2-5 steps covering ``values``, for a log axis that plotly would
    otherwise label with bare minor digits ("5  0.1  2  5  1")."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    if not finite:
        return {}
    low, high = math.floor(math.log10(min(finite))), math.ceil(math.log10(max(finite)))
    ticks = [m * 10.0**e for e in range(low, high + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if min(finite) / 2.5 <= t <= max(finite) * 2.5]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


if __name__ == "__main__":
    render()
