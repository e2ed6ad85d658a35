"""Page "Class similarity": which classes the teacher's soft targets say are alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from kdviz import analysis, plots, scale
from kdviz.ui import cache, shell

KEY_ROW, KEY_COL, KEY_TAB = "row", "col", "sim_tab"
KEY_CELL = "sim_cell"  # the teacher heatmap's selection
KEY_LINKS, KEY_MAP, KEY_MAP_MODEL = "links", "map", "map_model"
KEY_BLOCKS, KEY_TILE_ROWS, KEY_TILE_COLS = "sim_blocks", "tile_rows", "tile_cols"
NEAREST = 10  # rows of the nearest-classes table
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


def has_images(view: shell.View) -> bool:
    """Whether the view has pictures to show (an imported logits table has none)."""
    return bool(getattr(view, "has_images", True)) and view.dataset is not None


def _similarity(view: shell.View, model: shell.Model):
    """(matrix, order, dendrogram) at T for a few dozen classes."""
    return cache.similarity_of(
        model.stem, model.mtime, view.spec, view.split, view.temperature,
        tuple(view.class_names), model.logits, view.labels,
    )  # fmt: skip


def _confusion(view: shell.View) -> pd.DataFrame:
    teacher = view.teacher
    counts = cache.confusion_counts(
        teacher.stem, teacher.mtime, view.spec, view.split, teacher.logits, view.labels
    )
    frame = pd.DataFrame(counts, index=list(view.class_names), columns=list(view.class_names))
    frame.index.name, frame.columns.name = "true class", "predicted"
    return frame


def _body(view: shell.View) -> None:
    if len(view.class_names) < 2:
        st.info("Class similarity needs at least two classes.")
        return
    if len(view.class_names) > scale.BIG_MATRIX:
        _many(view)
        return
    teacher = view.teacher
    matrix, order, tree = _similarity(view, teacher)
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
            confusion = _confusion(view)
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
    pair_images(view, row, col)
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


def pair_images(view: shell.View, row: str, col: str) -> None:
    names = list(view.class_names)
    if not has_images(view):
        st.caption(
            "These logits came without images, so the images that link two classes are hidden."
        )
        return
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
    matrix, s_order, s_tree = _similarity(view, student)
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


def _map(view: shell.View, classes: list[int] | None = None) -> None:
    """The PCA / t-SNE map of soft-target vectors; with ``classes`` (many classes), only the
    images of those classes."""
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
        if classes is None:
            shell.explain(
                f"Each dot is one image's soft-target vector at T = {view.t_label} (at most "
                f"{cap:,} images, every class represented), placed so that similar vectors lie "
                "close. Hover for the image number and its classes. t-SNE takes a few seconds "
                "the first time."
            )
        else:
            shell.explain(
                f"Each dot is one image's soft-target vector at T = {view.t_label}. With "
                f"{len(view.class_names):,} classes only the images of the chosen class and its "
                f"{len(classes) - 1} nearest classes are mapped (at most {cap:,}), so the colours "
                "stay tellable apart."
            )
    model = view.teacher if role == analysis.TEACHER else view.student
    shown = None if classes is None else tuple(classes)
    frame = cache.embedding_of(
        model.stem, model.mtime, view.spec, view.split, view.temperature, method, cap,
        tuple(view.class_names), shown, model.logits, view.labels,
    )  # fmt: skip
    of = "" if classes is None else f" of {len(classes)} classes"
    with right:
        fig = plots.embedding_scatter(
            frame,
            title=f"{plots.model_label(role)}'s soft targets at T = {view.t_label}, "
            f"{'PCA' if method == 'pca' else 't-SNE'} of {len(frame):,} images{of}",
            method=method,
            class_names=view.class_names
            if classes is None
            else [view.class_names[i] for i in classes],
        )
        shell.chart(fig, key="sim_map")


# --------------------------------------------------------------------------- many classes
# Above scale.BIG_MATRIX classes: a class search with its nearest classes, the clustered matrix
# as an overview of block averages, and one block x block tile of it to read by name.


def _grid(view: shell.View, model: shell.Model) -> scale.ClassMeansGrid:
    return cache.class_means_grid(
        model.stem, model.mtime, view.spec, view.split, model.logits, view.labels, view.temperature
    )


def _retile() -> None:
    """Picking a class or a pair moves the tile to the blocks that hold them."""
    order = st.session_state.get("_sim_order")
    names = st.session_state.get("_sim_names")
    if order is None or names is None:
        return
    for key, tile_key in ((KEY_ROW, KEY_TILE_ROWS), (KEY_COL, KEY_TILE_COLS)):
        name = st.session_state.get(key)
        if name in names:
            st.session_state[tile_key] = scale.block_of(
                names.index(name), order, scale.block_size(len(names))
            )


def _clicked(key: str) -> tuple[str, str] | None:
    """(row, column) names of the cell clicked on a light_cells heatmap, if any."""
    points = st.session_state[key].selection.points
    if points and "x" in points[0] and "y" in points[0]:
        return str(points[0]["y"]), str(points[0]["x"])
    return None


def _on_block() -> None:
    """A click on the overview zooms into that block."""
    labels = st.session_state.get("_sim_block_labels") or []
    cell = _clicked(KEY_BLOCKS)
    if cell and cell[0] in labels and cell[1] in labels:
        st.session_state[KEY_TILE_ROWS] = labels.index(cell[0])
        st.session_state[KEY_TILE_COLS] = labels.index(cell[1])


def _on_tile_cell() -> None:
    """A click on a cell of the zoomed tile picks that (true class, class) pair."""
    cell = _clicked(KEY_CELL)
    if cell:
        st.session_state[KEY_ROW], st.session_state[KEY_COL] = cell


def _mask_self(frame: pd.DataFrame) -> pd.DataFrame:
    """nan where the row's class is the column's class (shown apart, it dwarfs the rest)."""
    values = frame.to_numpy(dtype=np.float64, copy=True)
    same = np.asarray(frame.index)[:, None] == np.asarray(frame.columns)[None, :]
    values[same] = np.nan
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def _many(view: shell.View) -> None:
    names = list(view.class_names)
    k = len(names)
    block = scale.block_size(k)
    grid = _grid(view, view.teacher)
    matrix, order = grid.matrix(view.temperature), grid.order(view.temperature)  # (K, K), (K,)
    st.session_state["_sim_order"], st.session_state["_sim_names"] = order, names
    block_names = [
        f"#{s + 1}–{min(s + block, k)}" for s in range(0, k, block)
    ]  # positions in the clustered order
    st.session_state["_sim_block_labels"] = block_names
    values = np.nan_to_num(matrix, nan=-1.0).copy()
    np.fill_diagonal(values, -1.0)
    strong = np.unravel_index(int(values.argmax()), values.shape)
    search, pair, note = st.columns([1.4, 1.4, 3], vertical_alignment="bottom")
    row = search.selectbox(
        "Find a class (type to search)", names, index=int(strong[0]), key=KEY_ROW,
        bind="query-params", on_change=_retile,
        help=f"Any of the {k:,} classes; the table shows where its soft targets go.",
    )  # fmt: skip
    row_i = names.index(row)
    nearest = scale.nearest_classes(
        matrix, _grid(view, view.student).matrix(view.temperature), row_i, names, NEAREST
    )
    col = pair.selectbox(
        "with mass on class", names, index=names.index(nearest["class"].iloc[0]), key=KEY_COL,
        bind="query-params", on_change=_retile,
    )  # fmt: skip
    note.caption(
        f"{k:,} classes, clustered by their soft targets at T = {view.t_label}. Pick a class, "
        "click a block of the overview to zoom in, or click a cell of the zoomed tile."
    )
    for key, name in ((KEY_TILE_ROWS, row), (KEY_TILE_COLS, col)):
        if key not in st.session_state or not 0 <= st.session_state[key] < len(block_names):
            st.session_state[key] = scale.block_of(names.index(name), order, block)
    left, right = st.columns([1, 1])
    with left:
        _nearest_table(view, row, nearest)
    with right:
        _overview(view, block_names, block)
    tile_rows, tile_cols = _tile_pickers(block_names)
    tile = scale.tile(matrix, order, tile_rows, tile_cols, names, block)
    fig = plots.matrix_heatmap(
        _mask_self(tile),
        title=f"Teacher, T = {view.t_label}: classes {block_names[tile_rows]} × "
        f"{block_names[tile_cols]} (click a cell)",
        diagonal=analysis.diagonal(tile) if tile_rows == tile_cols else None,
        selected=(row, col), clickable=True, light_cells=True, dense=True, height=760,
    )  # fmt: skip
    shell.chart(fig, key=KEY_CELL, on_select=_on_tile_cell, selection_mode="points")
    shell.explain(
        f"One {len(tile)} × {len(tile.columns)} tile of the clustered {k:,} × {k:,} matrix: rows "
        "are true classes, columns where their images' soft targets go"
        + (
            ", the right-hand column each class's mean p of itself."
            if tile_rows == tile_cols
            else "."
        )
        + " Hover for the names the axes leave out."
    )
    _confusion_tile(view, order, (tile_rows, tile_cols), block, block_names, (row, col))
    pair_images(view, row, col)
    tabs = st.tabs(list(TABS), key=KEY_TAB, on_change="rerun", bind="query-params")
    if tabs[0].open:
        with tabs[0]:
            _student_tile(view, matrix, order, (tile_rows, tile_cols), block, block_names)
    if tabs[1].open:
        with tabs[1]:
            _graph_many(view, matrix, order)
    if tabs[2].open:
        with tabs[2]:
            _map(view, [row_i] + [names.index(c) for c in nearest["class"]])


def _nearest_table(view: shell.View, row: str, nearest: pd.DataFrame) -> None:
    st.markdown(f"**Nearest classes to {row}** (teacher's mean soft target, T = {view.t_label})")
    st.dataframe(
        nearest,
        key="sim_nearest",
        hide_index=True,
        width="stretch",
        height=35 * (len(nearest) + 1) + 3,
        column_config={
            "rank": st.column_config.NumberColumn("rank", width="small"),
            "class": st.column_config.TextColumn("class"),
            "teacher": st.column_config.NumberColumn("teacher", format="%.3g"),
            "student": st.column_config.NumberColumn("student", format="%.3g"),
        },
    )
    shell.explain(
        f"For the images of {row}: the classes that get the most probability on average, "
        f"besides {row} itself, and the student's value for the same class."
    )


def _overview(view: shell.View, block_names: list[str], block: int) -> None:
    blocks = _grid(view, view.teacher).blocks(view.temperature, block)  # (n, n)
    frame = pd.DataFrame(blocks, index=block_names, columns=block_names)
    frame.index.name, frame.columns.name = "true classes", "classes"
    fig = plots.matrix_heatmap(
        frame,
        title=f"Overview: blocks of {block} classes (click one to zoom in)",
        selected=(
            block_names[st.session_state[KEY_TILE_ROWS]],
            block_names[st.session_state[KEY_TILE_COLS]],
        ),
        clickable=True, click_diagonal=True, light_cells=True, dense=len(block_names) > 12,
        click_hint="click to zoom into this block", height=430,
    )  # fmt: skip
    shell.chart(fig, key=KEY_BLOCKS, on_select=_on_block, selection_mode="points")
    shell.explain(
        "Each cell is the mean soft target between two blocks of classes in clustered order "
        "(own-class cells left out): dark blocks on the diagonal are clusters of alike classes."
    )


def _tile_pickers(block_names: list[str]) -> tuple[int, int]:
    a, b = st.columns(2)
    options = list(range(len(block_names)))
    rows = a.selectbox(
        "Rows: classes", options, format_func=block_names.__getitem__, key=KEY_TILE_ROWS
    )
    cols = b.selectbox(
        "Columns: classes", options, format_func=block_names.__getitem__, key=KEY_TILE_COLS
    )
    return int(rows), int(cols)


def _confusion_tile(view, order, tile, block, block_names, selected) -> None:
    tile_rows, tile_cols = tile
    rows = scale.tile_classes(order, tile_rows, block)
    cols = scale.tile_classes(order, tile_cols, block)
    shown = st.toggle(
        f"Show the hard-label confusions of the same {len(rows)} × {len(cols)} classes",
        key="sim_show_confusion",
    )
    if shown:
        teacher = view.teacher
        counts = cache.confusion_counts(
            teacher.stem, teacher.mtime, view.spec, view.split, teacher.logits, view.labels
        )
        names = view.class_names
        tile = pd.DataFrame(
            counts[np.ix_(rows, cols)],
            index=[names[int(i)] for i in rows],
            columns=[names[int(i)] for i in cols],
        )
        tile.index.name, tile.columns.name = "true class", "predicted"
        fig = plots.matrix_heatmap(
            _mask_self(tile),
            title=f"Teacher: confusions (argmax), classes {block_names[tile_rows]} × "
            f"{block_names[tile_cols]}",
            kind="count",
            diagonal=analysis.diagonal(tile) if tile_rows == tile_cols else None,
            selected=selected,
            dense=True,
            height=600,
        )
        shell.chart(fig, key="sim_confusion")
        shell.explain(
            f"The full {len(view.class_names):,} × {len(view.class_names):,} confusion matrix "
            "is unreadable, so this shows the zoomed tile's classes in the same order. Most "
            "cells are empty: the hard labels hide what the soft targets above reveal."
        )


def _student_tile(view, matrix, order, tile, block, block_names) -> None:
    names = view.class_names
    tile_rows, tile_cols = tile
    s_matrix = _grid(view, view.student).matrix(view.temperature)
    t_tile = scale.tile(matrix, order, tile_rows, tile_cols, names, block)
    s_tile = scale.tile(s_matrix, order, tile_rows, tile_cols, names, block)
    where = f"classes {block_names[tile_rows]} × {block_names[tile_cols]}"
    shell.explain(
        "The student's mean soft targets on the zoomed tile, in the teacher's order, and the "
        "teacher minus the student: red cells are links the teacher makes and the student has not learnt."
    )
    left, right = st.columns(2)
    with left:
        fig = plots.matrix_heatmap(
            _mask_self(s_tile),
            title=f"Student ({view.student.name}) at T = {view.t_label}, {where}",
            diagonal=analysis.diagonal(s_tile) if tile_rows == tile_cols else None,
            dense=True,
            height=600,
        )
        shell.chart(fig, key="sim_student")
    with right:
        fig = plots.matrix_heatmap(
            _mask_self(t_tile - s_tile),
            title=f"Teacher − student at T = {view.t_label}, {where}",
            kind="difference",
            dense=True,
            height=600,
        )
        shell.chart(fig, key="sim_difference")


def _graph_many(view: shell.View, matrix, order) -> None:
    names = view.class_names
    left, right = st.columns([1, 3])
    with left:
        count = st.slider("Links shown", min_value=1, max_value=60, value=15, key=KEY_LINKS)
        shell.explain(
            f"The strongest links among all {len(names):,} classes; only the classes they join "
            "are drawn, on the circle in clustering order (all of them would not fit)."
        )
    a, b = scale.strongest_links(matrix, count)
    sym = (matrix[a, b] + matrix[b, a]) / 2.0
    links = pd.DataFrame(
        {
            "source": [names[int(i)] for i in a],
            "target": [names[int(j)] for j in b],
            "strength": sym.astype(np.float64),
            "a_to_b": matrix[a, b].astype(np.float64),
            "b_to_a": matrix[b, a].astype(np.float64),
        }
    )
    joined = set(a.tolist()) | set(b.tolist())
    nodes = [names[int(i)] for i in order if int(i) in joined]
    with right:
        fig = plots.similarity_graph(
            analysis.circle_layout(nodes),
            links,
            title=f"The {len(links)} strongest soft-target links at T = {view.t_label}",
        )
        shell.chart(fig, key="sim_graph")


if __name__ == "__main__":
    render()
