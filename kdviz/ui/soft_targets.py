"""Page "Soft targets": one image's teacher and student distributions as the temperature moves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kdviz import analysis, plots, scale
from kdviz.ui import cache, shell

KEY_IMAGE, KEY_GALLERY, KEY_CLASS, KEY_SCALE = "image", "gallery", "class", "scale"
KEY_TAB, KEY_CURVES, KEY_SEED = "tab", "curves", "gallery_seed"
TABS = ("How softening unfolds", "Class means at T", "Animate T in the browser")
GALLERY_SIZE = 12
CAPTIONS = {  # what the caption under each thumbnail says, per gallery mode
    "class": "Captions: the true class. Hover for the models' answers; click to pick.",
    "random": "Captions: the true class. Hover for the models' answers; click to pick.",
    "dark": "Captions: true class · the teacher's mass off its top class at this T. Click to pick.",
    "disagree": "Captions: the teacher's (T) and the student's (S) top class. Click to pick.",
    "wrong": "Captions: true class → the teacher's top class. Click to pick.",
}
IMAGE_SIZE = 160


def _pick(index: int) -> None:
    st.session_state[KEY_IMAGE] = index


def _shuffle() -> None:
    st.session_state[KEY_SEED] = st.session_state.get(KEY_SEED, 0) + 1


def render() -> None:
    st.header("Soft targets", anchor=False)
    shell.explain(
        "A trained network also says how much each image resembles the classes it did *not* pick: "
        "that is its dark knowledge. Raising the temperature T in the sidebar (softmax of z / T) "
        "lifts those small probabilities so that a student can learn from them."
    )
    shell.render_with_view(_body)


def has_images(view: shell.View) -> bool:
    """Whether the view has pictures to show (an imported logits table has none)."""
    return bool(getattr(view, "has_images", True)) and view.dataset is not None


NO_IMAGES = "These logits came without images, so the pictures are hidden."


def _shown_classes(view: shell.View, index: int):
    """None at a few classes (every class is drawn); else the top k classes of this image by the
    teacher's p, the true class always among them (the same k for teacher and student)."""
    if len(view.class_names) <= scale.MANY_CLASSES:
        return None
    return scale.top_classes(view.teacher.logits[index], int(view.labels[index]), scale.TOP_K)


def _body(view: shell.View) -> None:
    n = len(view.labels)
    if not 0 <= int(st.session_state.get(KEY_IMAGE, 0)) < n:  # e.g. a number from a bigger dataset
        st.session_state[KEY_IMAGE] = 0
    if has_images(view):
        left, right = st.columns([1, 3.2], vertical_alignment="top")
        with left:
            picture = st.container()
            index, scale_axis = _controls(view, n)
    else:  # no picture: the controls in a row above a full-width chart
        first, second, picture = st.columns([1, 1, 3], vertical_alignment="top")
        with first:
            index, _ = _controls(view, n, axis=False)
        with second:
            scale_axis = _axis_control()
        right = st.container()
    # The gallery sits under the bars but runs after them: Streamlit sends each element as it is
    # drawn and the browser re-plots every changed chart from scratch, so on a T change the bars
    # (what a user watches) arrive and repaint before the strip is even computed.
    strip = st.container(border=True) if has_images(view) else None
    with picture:
        _picture(view, index)
    with right:
        _bars(view, index, scale_axis)
    if strip is not None:
        with strip:
            _gallery(view, index)
    _details(view, index)


def _controls(view: shell.View, n: int, axis: bool = True) -> tuple[int, str]:
    """The image number (and the probability axis): (index, "linear" | "log")."""
    where = "or pick one below" if has_images(view) else "these logits came without images"
    index = int(
        st.number_input(
            "Image #", min_value=0, max_value=n - 1, step=1, key=KEY_IMAGE, bind="query-params",
            help=f"Any of the {n:,} images of the {view.split} split; {where}.",
        )
    )  # fmt: skip
    return index, (_axis_control() if axis else "linear")


def _axis_control() -> str:
    return st.segmented_control(
        "Probability axis",
        ("linear", "log"),
        default="linear",
        key=KEY_SCALE,
        required=True,
        bind="query-params",
        help="A log axis shows the tiny probabilities of the other classes at low T.",
    )


def _picture(view: shell.View, index: int) -> None:
    info = analysis.image_summary(
        index, view.labels, view.models(), view.temperature, view.class_names
    )
    if has_images(view):
        st.image(cache.image_png(view.spec, view.split, index, IMAGE_SIZE), width=IMAGE_SIZE)
    else:
        st.caption(NO_IMAGES)
    st.markdown(
        f"True class **{info['true']}**. At T = {view.t_label}: teacher **{info['teacher_pred']}** "
        f"({info['teacher_p']:.0%}), student **{info['student_pred']}** ({info['student_p']:.0%}); "
        f"teacher's dark mass {info['teacher_dark']:.1%}."
    )


def _bars(view: shell.View, index: int, scale_axis: str) -> None:
    rows = {
        analysis.TEACHER: view.teacher.logits[index],
        analysis.STUDENT: view.student.logits[index],
    }
    classes = _shown_classes(view, index)
    if classes is None:
        frame = analysis.soft_target_frame(rows, view.temperature, view.class_names)
        what = "soft targets"
    else:
        frame = scale.top_k_frame(rows, view.temperature, view.class_names, classes)
        what = f"top {len(classes)} of {len(view.class_names):,} classes"
    title = f"Image #{index}: teacher and student {what} at T = {view.t_label} (ticks: T = 1)"
    fig = shell.memo_figure(
        ("soft_bars", view.teacher.ref, view.student.ref, view.spec, view.split, index, scale_axis),
        lambda: plots.soft_target_bars(frame, log_y=scale_axis == "log", title=title),
    )
    plots.set_soft_targets(fig, frame, title=title)
    shell.chart(fig, key="soft_bars")
    if classes is not None:
        shell.explain(
            f"With {len(view.class_names):,} classes the bars show the {len(classes)} the teacher "
            "finds most likely for this image (the true class always among them); the last bar "
            "sums all the others. Softening never changes this ranking, only the heights."
        )
    shell.explain(
        "At T = 1 (dark ticks) nearly all the mass sits on one class. As T grows the bars of the "
        "other classes rise in the order the model ranks them: which classes this image "
        "resembles. A student trained on these bars learns that ranking too."
    )


def _gallery(view: shell.View, index: int) -> None:
    mode = st.segmented_control(
        "Pick an image",
        list(analysis.GALLERY_MODES),
        format_func=analysis.GALLERY_MODES.get,
        default="dark",
        key=KEY_GALLERY,
        required=True,
        bind="query-params",
        help="Most dark knowledge: the teacher's largest probability off its top class at the current T.",
    )
    class_index = 0
    if mode in ("class", "random"):
        a, b, _ = st.columns([1.2, 1, 4], vertical_alignment="bottom")
        if mode == "class":
            name = a.selectbox("Class", view.class_names, key=KEY_CLASS, bind="query-params")
            class_index = view.class_names.index(name)
        b.button("Shuffle", key="gallery_shuffle", on_click=_shuffle, icon=":material/shuffle:")
    indices, _ = cache.gallery_of(
        view.teacher.ref, view.student.ref, view.spec, view.split, view.temperature, mode,
        GALLERY_SIZE, class_index, st.session_state.get(KEY_SEED, 0),
        view.teacher.logits, view.student.logits, view.labels,
        _grid(view, view.teacher).top_probability(view.temperature) if mode == "dark" else None,
    )  # fmt: skip
    frame = analysis.gallery_frame(
        indices,
        view.labels,
        view.teacher.logits,
        view.student.logits,
        view.temperature,
        view.class_names,
    )
    if frame.empty:
        st.info(
            "No image fits: the teacher is never wrong here."
            if mode == "wrong"
            else "No image fits: teacher and student agree on every image."
        )
        return
    captions = [_caption(mode, row) for row in frame.itertuples()]
    hover = [
        f"<b>image #{r.index}</b>, true class {r.true}<br>teacher: {r.teacher} ({r.teacher_p:.0%}), "
        f"student: {r.student} ({r.student_p:.0%}) at T = {view.t_label}<br>"
        f"teacher's dark mass {r.dark_mass:.1%}<br>click to show it above"
        for r in frame.itertuples()
    ]
    shell.image_strip(
        view.dataset,
        frame["index"].tolist(),
        captions,
        hover,
        key="gallery_strip",
        selected=index,
        on_pick=_pick,
    )
    st.caption(CAPTIONS[mode])


def _caption(mode: str, row) -> str:
    if mode == "dark":
        return f"{row.true} · {row.dark_mass:.0%}"
    if mode == "disagree":
        return f"T {row.teacher} · S {row.student}"
    if mode == "wrong":
        return f"{row.true} → {row.teacher}"
    return f"true {row.true}"


def _details(view: shell.View, index: int) -> None:
    tabs = st.tabs(list(TABS), key=KEY_TAB, on_change="rerun", bind="query-params")
    if tabs[0].open:
        with tabs[0]:
            _unfolding(view, index)
    if tabs[1].open:
        with tabs[1]:
            _class_means(view, index)
    if tabs[2].open:
        with tabs[2]:
            _animation(view, index)


def _grid(view: shell.View, model: shell.Model) -> scale.ClassMeansGrid:
    """The model's mean soft targets over the T grid (swept in the background once)."""
    return cache.class_means_grid(
        model.stem, model.mtime, view.spec, view.split, model.logits, view.labels, view.temperature
    )


def _unfolding(view: shell.View, index: int) -> None:
    temps = analysis.curve_temperatures(25)
    rows = {
        analysis.TEACHER: view.teacher.logits[index],
        analysis.STUDENT: view.student.logits[index],
    }
    model = st.segmented_control(
        "Class curves of", (analysis.TEACHER, analysis.STUDENT), default=analysis.TEACHER,
        format_func=plots.model_label, key=KEY_CURVES, required=True, label_visibility="collapsed",
    )  # fmt: skip
    many = len(view.class_names) > scale.MANY_CLASSES
    left, right = st.columns(2)
    with left:
        ref = view.teacher.ref if model == analysis.TEACHER else view.student.ref

        def build_curves():
            info = analysis.image_summary(
                index, view.labels, {model: view.models()[model]}, 1.0, view.class_names
            )
            classes = scale.curve_classes(rows[model], int(view.labels[index])) if many else None
            return plots.temperature_curves(
                analysis.temperature_curve_frame(rows[model], temps, view.class_names, classes),
                temperature=view.temperature,
                highlight=[info["true"], info[f"{model}_pred"]],
                title=f"{plots.model_label(model)}: each class's probability as T moves",
            )

        fig = shell.memo_figure(("soft_curves", ref, view.spec, view.split, index), build_curves)
        shell.chart(plots.mark_temperature(fig, view.temperature), key="soft_curves")
        shell.explain(
            "Thick lines: the true and the predicted class. Low T makes the top class take all; "
            "every curve tends to 1/K as T grows. Where a curve lifts off early, that class is "
            "the model's runner-up for this image."
            + (
                f" Of the {len(view.class_names):,} classes only the model's top 6 for this image "
                "and the true class are drawn."
                if many
                else ""
            )
        )
    with right:
        fig = shell.memo_figure(
            ("soft_entropy", view.teacher.ref, view.student.ref, view.spec, view.split, index),
            lambda: plots.softness_curves(
                analysis.softness_frame(rows, temps),
                temperature=view.temperature,
                num_classes=len(view.class_names),
            ),
        )
        shell.chart(plots.mark_temperature(fig, view.temperature), key="soft_entropy")
        shell.explain(
            "Entropy (nats) and the mass off the top class both grow with T. Hinton et al. "
            "distilled MNIST at T = 20, where much of the mass is dark; a less confident model "
            "(often the student) gets there at a lower T."
        )


def _class_means(view: shell.View, index: int) -> None:
    classes = _shown_classes(view, index)
    names = view.class_names
    shell.explain(
        f"Row c is the mean soft target at T = {view.t_label} over the images whose true class is c. "
        "The diagonal (the right-hand column) is taken out so the off-diagonal colours, on a log "
        "scale, show which classes each class is said to resemble."
        + (
            f" Only the rows and columns of this image's top {len(classes)} classes (of "
            f"{len(names):,}) are shown; Class similarity shows and searches them all."
            if classes is not None
            else ""
        )
    )
    cols = st.columns(2)
    for col, model in zip(cols, (view.teacher, view.student), strict=True):
        values = _grid(view, model).matrix(view.temperature)  # (K, K) float32, shared
        if classes is not None:
            values = values[np.ix_(classes, classes)]
        kept = names if classes is None else [names[int(i)] for i in classes]
        matrix = pd.DataFrame(values.astype(np.float64), index=list(kept), columns=list(kept))
        matrix.index.name, matrix.columns.name = "true class", "class"
        role = analysis.TEACHER if model is view.teacher else analysis.STUDENT
        with col:
            fig = plots.matrix_heatmap(
                analysis.off_diagonal(matrix),
                title=f"{plots.model_label(role)} ({model.name}): mean soft target at T = {view.t_label}",
                diagonal=analysis.diagonal(matrix),
                height=430,
            )
            shell.chart(fig, key=f"class_means_{role}")


def _animation(view: shell.View, index: int) -> None:
    shell.explain(
        "Drag the slider under the chart, or press Play: the bars move in your browser, with no "
        "trip to the server. It starts at the sidebar's T; the rest of the page follows the sidebar."
    )
    classes = _shown_classes(view, index)
    fig = cache.animation_of(
        view.teacher.ref,
        view.student.ref,
        view.spec,
        view.split,
        index,
        view.temperature,
        st.session_state.get(KEY_SCALE) == "log",
        None if classes is None else tuple(int(c) for c in classes),
        view.class_names,
        view.teacher.logits[index],
        view.student.logits[index],
    )
    shell.chart(fig, key="soft_animation")


if __name__ == "__main__":
    render()
