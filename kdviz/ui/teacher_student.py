"""Page "Teacher vs student": accuracy, agreement, KL, calibration, per-class and DKD views."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from kdviz import analysis, plots, scale, stats
from kdviz.ui import cache, shell

KEY_CALIBRATED, KEY_TAB, KEY_OPEN = "calibrated", "ts_tab", "_open_image"
TABS = ("Decoupled KD", "Per class", "Disagreements")
DISAGREEMENTS = 24
DKD_CLASSES = 40  # at many classes the DKD chart shows this many classes (largest KL)


def _open_in_soft_targets(index: int) -> None:
    st.session_state[KEY_OPEN] = index


def render() -> None:
    st.header("Teacher vs student", anchor=False)
    shell.explain(
        "How close has the student come to its teacher? Accuracy and NLL against the labels, "
        "top-1 agreement and KL(teacher ‖ student) against the teacher, and calibration: whether "
        "a model's confidence matches how often it is right."
    )
    if KEY_OPEN in st.session_state:  # a click in the disagreement gallery
        index = st.session_state.pop(KEY_OPEN)
        st.session_state["image"] = index
        shell.switch_to("soft_targets.py", {"image": str(index)})  # a copied link keeps it
    shell.render_with_view(_body)


def _percent(value: float) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.2f}%"
    )


def _number(digits: int):
    def fmt(value: float) -> str:
        return (
            "—"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.{digits}f}"
        )

    return fmt


def _display(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics frame as text, each row in its own unit."""
    out = {}
    for name, row in metrics.iterrows():
        if name.startswith(("Accuracy", "Top-1", "ECE")):
            fmt = _percent
        elif name.startswith("Calibration"):
            fmt = _number(2)
        else:
            fmt = _number(4)
        out[name] = [fmt(row[analysis.TEACHER]), fmt(row[analysis.STUDENT])]
    frame = pd.DataFrame.from_dict(out, orient="index", columns=["Teacher", "Student"])
    frame.index.name = "measure"
    return frame


def _body(view: shell.View) -> None:
    teacher, student = view.teacher, view.student
    metrics = analysis.with_kl(
        cache.metrics_of(
            teacher.ref,
            student.ref,
            view.spec,
            view.split,
            teacher.logits,
            student.logits,
            view.labels,
        ),
        teacher.logits,
        student.logits,
        view.temperature,
        kl=_per_class_at_t(view)[1],
    )
    t_acc, s_acc = (
        metrics.loc["Accuracy", analysis.TEACHER],
        metrics.loc["Accuracy", analysis.STUDENT],
    )
    kl_name = analysis.kl_label(view.temperature)
    cols = st.columns(4)
    cols[0].metric("Teacher accuracy", _percent(t_acc), help=f"{teacher.name} on {view.split}")
    cols[1].metric(
        "Student accuracy", _percent(s_acc), delta=f"{100 * (s_acc - t_acc):+.2f} pts vs teacher",
        help=f"{student.name} on {view.split}",
    )  # fmt: skip
    cols[2].metric("Top-1 agreement", _percent(metrics.loc["Top-1 agreement", analysis.STUDENT]))
    cols[3].metric(
        f"KL(teacher ‖ student), T = {view.t_label}", _number(4)(metrics.loc[kl_name, analysis.STUDENT]),
        help="Mean over images, in nats: the soft-target term of the distillation loss (without T²).",
    )  # fmt: skip
    shell.explain(_noise_sentence(view))

    left, right = st.columns([2, 3])
    t_star = {
        m: metrics.loc["Calibration temperature T*", m]
        for m in (analysis.TEACHER, analysis.STUDENT)
    }
    with left:
        st.dataframe(_display(metrics), key="ts_metrics", width="stretch")
        ece_t = metrics.loc["ECE (15 bins)", analysis.TEACHER]
        ece_t_star = metrics.loc["ECE at T*", analysis.TEACHER]
        t_t = t_star[analysis.TEACHER]
        shell.explain(
            f"T* is the temperature that minimises each model's NLL on this split (temperature "
            f"scaling; fit it on val for an honest test figure). Dividing the teacher's logits by "
            f"T* = {t_t:.2f} moves its ECE from {_percent(ece_t)} to {_percent(ece_t_star)}: "
            + (
                "it was over-confident, T* > 1 softens it."
                if t_t > 1
                else "it was under-confident, T* < 1 sharpens it."
            )
            + (
                " T* minimises NLL, not ECE, so ECE can also go up a little."
                if ece_t_star > ece_t
                else ""
            )
        )
    with right:
        calibrated = st.toggle(
            "After temperature scaling (divide the logits by T*)", key=KEY_CALIBRATED
        )
        ece_row = "ECE at T*" if calibrated else "ECE (15 bins)"

        def build():  # does not depend on T: built once per pair of models
            logits = view.models()
            if calibrated:
                logits = {m: z / t_star[m] for m, z in logits.items()}
            return plots.reliability_diagram(
                analysis.reliability_frame(logits, view.labels, n_bins=15),
                title="Reliability: accuracy per confidence bin"
                + (" (after T*)" if calibrated else ""),
                ece={m: metrics.loc[ece_row, m] for m in (analysis.TEACHER, analysis.STUDENT)},
            )

        fig = shell.memo_figure(
            ("reliability", teacher.ref, student.ref, view.spec, view.split, calibrated), build
        )
        shell.chart(fig, key="ts_reliability")
        shell.explain(
            "Bars below the dashed diagonal (red gaps above them) mean the model is more confident "
            "than it is accurate. ECE is the gap averaged over images."
        )

    tabs = st.tabs(list(TABS), key=KEY_TAB, on_change="rerun", bind="query-params")
    if tabs[0].open:
        with tabs[0]:
            _dkd(view)
    if tabs[1].open:
        with tabs[1]:
            _per_class(view)
    if tabs[2].open:
        with tabs[2]:
            _disagreements(view)


def _noise_sentence(view: shell.View) -> str:
    """How sure the accuracies are: 95% Wilson intervals, and a paired (Newcombe) interval for
    student minus teacher on the same images, saying when the difference is within noise."""
    n = len(view.labels)
    teacher = stats.correct_vector(view.teacher.logits, view.labels)
    student = stats.correct_vector(view.student.logits, view.labels)
    diff = stats.paired_difference(student, teacher)
    return (
        f"On these {n:,} images (95% Wilson intervals): teacher "
        f"{stats.format_accuracy(float(teacher.float().mean()), n)}, student "
        f"{stats.format_accuracy(float(student.float().mean()), n)}. Student minus teacher: "
        f"{stats.paired_difference_text(diff, 'the student', 'the teacher')}"
    )


def _per_class_at_t(view: shell.View) -> tuple:
    """(per-class frame, mean KL) at T: from the background sweep over the slider's
    temperatures (one pass costs seconds at 50,000 x 1,000), computed now if not swept yet."""
    sweep = cache.per_class_sweep(
        view.teacher.ref, view.student.ref, view.spec, view.split, tuple(view.class_names),
        view.teacher.logits, view.student.logits, view.labels, view.temperature,
    )  # fmt: skip
    return sweep.get(view.temperature)


def _per_class_frame(view: shell.View):
    return _per_class_at_t(view)[0]


def _dkd(view: shell.View) -> None:
    frame = _per_class_frame(view)
    many = len(frame) > scale.BIG_MATRIX
    if many:
        frame = frame.nlargest(DKD_CLASSES, "kl")
    shell.explain(
        "Decoupled KD (Zhao et al. 2022) splits KL(teacher ‖ student) at T into TCKD, how well the "
        "student matches the teacher's confidence in the true class, and NCKD, how well it matches "
        "the teacher's spread over the other classes: the dark knowledge. NCKD enters multiplied "
        "by the teacher's 1 − p_t, so where the teacher is confident (purple line near 0) its dark "
        "knowledge barely reaches the loss, however large NCKD itself (diamonds) is. Raise T to "
        "see the weight, and with it the green part, grow."
        + (
            f" Of the {len(view.class_names):,} classes, the {DKD_CLASSES} with the largest KL "
            "are drawn; the Per class tab lists them all."
            if many
            else ""
        )
    )
    shell.chart(plots.dkd_bars(frame, temperature=view.temperature), key="ts_dkd")


def _per_class(view: shell.View) -> None:
    frame = _per_class_frame(view)
    shell.explain(
        f"One row per true class; KL, the teacher's p(true class) and the DKD parts are at "
        f"T = {view.t_label}, averaged over the class's images. Click a column head to sort."
    )
    t = view.t_label
    st.dataframe(
        frame,
        key="ts_per_class",
        hide_index=True,
        width="stretch",
        column_config={
            "class": st.column_config.TextColumn("class"),
            "images": st.column_config.NumberColumn("images"),
            "teacher_accuracy": st.column_config.NumberColumn("teacher acc.", format="percent"),
            "student_accuracy": st.column_config.NumberColumn("student acc.", format="percent"),
            "agreement": st.column_config.NumberColumn("agreement", format="percent"),
            "kl": st.column_config.NumberColumn(f"KL at T={t}", format="%.4f"),
            "teacher_p_true": st.column_config.NumberColumn(
                f"teacher p(true) at T={t}", format="%.3f"
            ),
            "tckd": st.column_config.NumberColumn("TCKD", format="%.4f"),
            "nckd": st.column_config.NumberColumn("NCKD", format="%.4f"),
            "weight": st.column_config.NumberColumn("1 − p_t", format="%.3f"),
            "weighted_nckd": st.column_config.NumberColumn("(1 − p_t)·NCKD", format="%.4f"),
        },
    )


def _disagreements(view: shell.View) -> None:
    if not (getattr(view, "has_images", True) and view.dataset is not None):
        st.caption("These logits came without images, so the disagreement gallery is hidden.")
        return
    indices, total = cache.gallery_of(
        view.teacher.ref, view.student.ref, view.spec, view.split, view.temperature, "disagree",
        DISAGREEMENTS, 0, 0, view.teacher.logits, view.student.logits, view.labels,
    )  # fmt: skip
    if len(indices) == 0:
        st.info("Teacher and student agree on every image of this split.")
        return
    frame = analysis.gallery_frame(
        indices,
        view.labels,
        view.teacher.logits,
        view.student.logits,
        view.temperature,
        view.class_names,
    )
    shell.explain(
        f"Teacher and student pick different classes on {total:,} images; here are the "
        f"{len(frame)} where their soft targets at T = {view.t_label} differ most (largest KL). "
        "Captions: true class, then teacher / student. Click one to open it in Soft targets."
    )
    for start in range(0, len(frame), 12):
        part = frame.iloc[start : start + 12]
        shell.image_strip(
            view.dataset,
            part["index"].tolist(),
            [f"{r.true}: {r.teacher} / {r.student}" for r in part.itertuples()],
            [
                f"<b>image #{r.index}</b>, true class {r.true}<br>teacher: {r.teacher} "
                f"({r.teacher_p:.0%}), student: {r.student} ({r.student_p:.0%}) at T = {view.t_label}"
                "<br>click to open it in Soft targets"
                for r in part.itertuples()
            ],
            key=f"ts_disagree_{start}",
            on_pick=_open_in_soft_targets,
        )


if __name__ == "__main__":
    render()
