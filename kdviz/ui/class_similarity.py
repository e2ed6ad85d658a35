"""Page "Class similarity": which classes the teacher's soft targets say are alike."""

from __future__ import annotations

import streamlit as st

from kdviz import analysis, plots
from kdviz.ui import cache, shell

KEY_ROW, KEY_COL, KEY_TAB = "row", "col", "sim_tab"
KEY_CELL = "sim_cell"  # the teacher heatmap's selection
KEY_LINKS, KEY_MAP, KEY_MAP_MODEL = "links", "map", "map_model"
TABS = ("Student and difference", "Similarity graph", "Soft-target map")
PAIR_IMAGES = 12
MAP_POINTS = {"pca": 2000, "tsne": 1000}  # t-SNE is slow: a capped, stratified subsample


def _on_cell() -> None:
    """A click on a heatmap cell picks that (true class, class) pair."""
    points = st.session_state[KEY_CELL].selection.points
    if points and len(points[0].get("customdata") or []) >= 2:
        st.session_state[KEY_ROW], st.session_state[KEY_COL] = points[0]["customdata"][:2]


def render() -> None:
    st.header("Class similarity", anchor=False)
    shell.explain(
        "Average the teacher's soft targets over all images of one class and you learn which "
        "other classes it thinks that class resembles, even where it never confuses them. "
        "The classes are ordered by hierarchical clustering, which is redone as T moves."
    )
    shell.render_with_view(_body)


def _body(view: shell.View) -> None:
    if len(view.class_names) < 2:
        st.info("Class similarity needs at least two classes.")
        return
    teacher = view.teacher
    matrix, order, tree = cache.similarity(
        teacher.stem, teacher.mtime, view.spec, view.split, view.temperature
    )
    top = st.container()
    row, col = _pair_picker(view, matrix)
    with top:
        left, right = st.columns([3, 2])
        with left:
            fig = plots.matrix_heatmap(
                analysis.off_diagonal(analysis.reorder(matrix, order)),
                title=f"Teacher: mean soft target at T = {view.t_label} (click a cell)",
                diagonal=analysis.diagonal(matrix),
                dendrogram=tree,
                selected=(row, col),
                clickable=True,
            )
            shell.chart(fig, key=KEY_CELL, on_select=_on_cell, selection_mode="points")
        with right:
            confusion = cache.confusion(teacher.stem, teacher.mtime, view.spec, view.split)
            fig = plots.matrix_heatmap(
                analysis.off_diagonal(analysis.reorder(confusion, order)),
                title="Teacher: hard-label confusions (argmax)",
                kind="count",
                diagonal=analysis.diagonal(confusion),
                selected=(row, col),
                height=440,
            )
            shell.chart(fig, key="sim_confusion")
            shell.explain(_confusion_note(matrix, confusion))
    _pair_images(view, row, col)
    tabs = st.tabs(list(TABS), key=KEY_TAB, on_change="rerun", bind="query-params")
    if tabs[0].open:
        with tabs[0]:
            _student(view, matrix, order)
    if tabs[1].open:
        with tabs[1]:
            _graph(view, matrix, order)
    if tabs[2].open:
        with tabs[2]:
            _map(view)


def _confusion_note(matrix, confusion) -> str:
    links = analysis.similarity_links(matrix, top_k=min(10, len(matrix) * (len(matrix) - 1) // 2))
    never = sum(
        int(confusion.loc[a, b] == 0 and confusion.loc[b, a] == 0)
        for a, b in zip(links.source, links.target, strict=True)
    )
    return (
        f"Same order as the soft targets. {never} of the {len(links)} most alike class pairs on the "
        "left are never confused here: the hard labels hide what the soft targets reveal."
    )


def _pair_picker(view: shell.View, matrix) -> tuple[str, str]:
    names = list(view.class_names)
    strong_row, strong_col = analysis.strongest_pair(matrix)
    a, b, note = st.columns([1.2, 1.2, 5], vertical_alignment="bottom")
    row = a.selectbox(
        "Images of class", names, index=names.index(strong_row), key=KEY_ROW, bind="query-params"
    )
    col = b.selectbox(
        "with mass on class", names, index=names.index(strong_col), key=KEY_COL, bind="query-params"
    )
    note.caption("Pick a pair here or click a cell of the teacher's matrix.")
    return row, col


def _pair_images(view: shell.View, row: str, col: str) -> None:
    names = list(view.class_names)
    if row == col:
        st.info("Pick two different classes to see the images that link them.")
        return
    for true_class, other in ((row, col), (col, row)):
        frame = analysis.pair_images(
            view.teacher.logits,
            view.labels,
            view.temperature,
            names.index(true_class),
            names.index(other),
            PAIR_IMAGES,
        )
        if frame.empty:
            st.caption(f"No image of class {true_class} in this split.")
            continue
        hover = [
            f"<b>image #{r.index}</b> (class {true_class})<br>teacher at T = {view.t_label}: "
            f"p({other}) = {r.probability:.3g}, p({true_class}) = {r.p_true:.3g}"
            for r in frame.itertuples()
        ]
        shell.image_strip(
            view.dataset,
            frame["index"].tolist(),
            [f"p = {p:.0%}" if p >= 0.01 else f"p = {p:.0e}" for p in frame["probability"]],
            hover,
            key=f"pair_{true_class}_{other}".replace(" ", "_"),
            title=f"Images of {true_class} on which the teacher puts the most mass on {other} (T = {view.t_label})",
        )


def _student(view: shell.View, teacher_matrix, order) -> None:
    student = view.student
    matrix, s_order, s_tree = cache.similarity(
        student.stem, student.mtime, view.spec, view.split, view.temperature
    )
    shell.explain(
        "The student's own matrix, clustered on its own, and the teacher minus the student in the "
        "teacher's order: red cells are links the teacher makes and the student has not learnt."
    )
    left, right = st.columns(2)
    with left:
        fig = plots.matrix_heatmap(
            analysis.off_diagonal(analysis.reorder(matrix, s_order)),
            title=f"Student ({student.name}): mean soft target at T = {view.t_label}",
            diagonal=analysis.diagonal(matrix),
            dendrogram=s_tree,
        )
        shell.chart(fig, key="sim_student")
    with right:
        diff = analysis.off_diagonal(analysis.reorder(teacher_matrix - matrix, order))
        fig = plots.matrix_heatmap(
            diff, title=f"Teacher − student at T = {view.t_label}", kind="difference", height=470
        )
        shell.chart(fig, key="sim_difference")


def _graph(view: shell.View, matrix, order) -> None:
    k = len(view.class_names)
    most = k * (k - 1) // 2
    left, right = st.columns([1, 3])
    with left:
        count = st.slider(
            "Links shown", min_value=1, max_value=min(most, 60), value=min(15, most), key=KEY_LINKS
        )
        shell.explain(
            "Each line joins two classes; the thicker it is, the more mass the teacher's soft "
            "targets put on one class for images of the other (both ways averaged). Classes sit "
            "on the circle in clustering order, so alike classes are neighbours."
        )
    with right:
        links = analysis.similarity_links(matrix, top_k=count)
        fig = plots.similarity_graph(
            analysis.circle_layout(order),
            links,
            title=f"The {len(links)} strongest soft-target links at T = {view.t_label}",
        )
        shell.chart(fig, key="sim_graph")


def _map(view: shell.View) -> None:
    left, right = st.columns([1, 3])
    with left:
        method = st.segmented_control(
            "Map", ("pca", "tsne"), default="pca", format_func={"pca": "PCA", "tsne": "t-SNE"}.get,
            key=KEY_MAP, required=True,
        )  # fmt: skip
        role = st.segmented_control(
            "Soft targets of", (analysis.TEACHER, analysis.STUDENT), default=analysis.TEACHER,
            format_func=plots.model_label, key=KEY_MAP_MODEL, required=True,
        )  # fmt: skip
        cap = MAP_POINTS[method]
        shell.explain(
            f"Each dot is one image's soft-target vector at T = {view.t_label} (at most {cap:,} "
            "images, every class represented), placed so that similar vectors lie close. "
            "Hover for the image number and its classes. t-SNE takes a few seconds the first time."
        )
    model = view.teacher if role == analysis.TEACHER else view.student
    frame = cache.embedding(
        model.stem, model.mtime, view.spec, view.split, view.temperature, method, cap
    )
    with right:
        fig = plots.embedding_scatter(
            frame,
            title=f"{plots.model_label(role)}'s soft targets at T = {view.t_label}, "
            f"{'PCA' if method == 'pca' else 't-SNE'} of {len(frame):,} images",
            method=method,
            class_names=view.class_names,
        )
        shell.chart(fig, key="sim_map")


if __name__ == "__main__":
    render()
