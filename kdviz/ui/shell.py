"""The explorer's shell: navigation, the sidebar (dataset, teacher, student, temperature), the
loaded view every page works on, and small shared widgets (images, thumbnails, errors).

The view lives in widgets bound to the URL (``bind="query-params"``), so a copied link opens the
same page, data, models and temperature: ?dataset=mnist5k&teacher=...&student=...&T=4&image=12.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch
from plotly.basedatatypes import BaseFigure

from kdviz import analysis, data, engine, plots
from kdviz.errors import KdvizError
from kdviz.models import ModelCard
from kdviz.ui import PAGES, cache

DEFAULT_DATASET = "mnist5k"
DEFAULT_SPLIT = "test"
DEFAULT_TEACHER = "mnist5k-teacher"
DEFAULT_STUDENT = "mnist5k-mlp800-distilled"

# Widget keys, which are also the URL's query parameters.
KEY_T, KEY_DATASET, KEY_SPLIT = "T", "dataset", "split"
KEY_TEACHER, KEY_STUDENT = "teacher", "student"

HOW_TO_MAKE_CHECKPOINTS = (
    "No checkpoint was found, so there is nothing to explore yet. Build the shipped ones with "
    "`make pretrained`, or train one in a minute on the bundled digits: "
    "`kdviz train --dataset digits --arch mlp-64-64 --epochs 5` (it lands in "
    "`$KDVIZ_HOME/checkpoints`, default `~/.kdviz`), then reload this page."
)


# --------------------------------------------------------------------------- navigation


def pages() -> list:
    """st.Page objects for kdviz.ui.PAGES (the first is the default)."""
    return [
        st.Page(
            spec.path,
            title=spec.title,
            url_path=spec.url_path,
            icon=spec.icon or None,
            default=i == 0,
        )
        for i, spec in enumerate(PAGES)
    ]


def switch_to(file: str) -> None:
    """Go to the page whose module is ``file`` (e.g. "soft_targets.py")."""
    for spec in PAGES:
        if spec.file == file:
            # query_params={}: the default (None) would clear the URL itself and trip over the
            # widgets bound to it; the bound widgets put their values back on the new page.
            st.switch_page(
                st.Page(spec.path, title=spec.title, url_path=spec.url_path), query_params={}
            )


# --------------------------------------------------------------------------- sidebar


def _reset_temperature() -> None:
    st.session_state[KEY_T] = 1.0


def _use_custom_dataset() -> None:
    spec = (st.session_state.get("dataset_custom") or "").strip()
    if spec:
        st.session_state[KEY_DATASET] = spec


def dataset_options() -> list[str]:
    """Named datasets, plus the folder/IDX spec in use (from the URL or typed in)."""
    named = [s for s in data.list_datasets() if ":" not in s]
    current = st.session_state.get(KEY_DATASET) or st.query_params.get(KEY_DATASET)
    if current and current not in named:
        named.append(str(current))
    return named


def default_checkpoints(
    checkpoints: Sequence[tuple[str, str, ModelCard]], spec: str
) -> tuple[str, str]:
    """(teacher, student) display names: the shipped pair for the dataset when present, else
    checkpoints trained on it, else the first ones."""
    names = [name for name, _, _ in checkpoints]
    on_data = [name for name, _, card in checkpoints if card.dataset == spec] or names
    teacher = next(
        (
            n
            for n in (DEFAULT_TEACHER if spec == DEFAULT_DATASET else "", f"{spec}-teacher")
            if n in names
        ),
        next((n for n in on_data if "teacher" in n), on_data[0]),
    )
    preferred = [DEFAULT_STUDENT] if spec == DEFAULT_DATASET else []
    preferred += [f"{spec}-student"]
    student = next((n for n in preferred if n in names), None)
    if student is None:
        others = [n for n in on_data if n != teacher]
        student = next(
            (n for n in others if "distill" in n or "student" in n),
            others[0] if others else teacher,
        )
    return teacher, student


def _describe(card: ModelCard) -> str:
    acc = card.metrics.get("test_accuracy", card.metrics.get("accuracy"))
    parts = [card.arch or card.kind, f"trained on {card.dataset or '?'}"]
    if isinstance(acc, (int, float)):
        parts.append(f"test accuracy {100 * acc:.1f}%")
    return " · ".join(parts)


# Less empty space above the page title, so the first chart shows without scrolling.
_STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; padding-bottom: 3rem; }
</style>"""


def sidebar() -> None:
    """The shared controls. Called by app.py on every run, before the page."""
    st.html(_STYLE)
    cache.use_one_thread()
    checkpoints = cache.checkpoint_list()
    with st.sidebar:
        st.select_slider(
            "Temperature",
            options=analysis.TEMPERATURE_GRID,
            value=1.0,
            format_func=analysis.format_temperature,
            key=KEY_T,
            bind="query-params",
            help=(
                "Soft targets are softmax(z / T). T = 1 is the ordinary softmax; a higher T moves "
                "probability onto the classes the model did not pick: the dark knowledge. "
                "The slider is logarithmic, from 0.25 to 100; arrow keys step it."
            ),
        )
        at_one = st.session_state.get(KEY_T, 1.0) == 1.0
        st.button(
            "Back to T = 1",
            key="reset_T",
            on_click=_reset_temperature,
            disabled=at_one,
            icon=":material/undo:",
        )
        st.divider()
        specs = dataset_options()
        left, right = st.columns([3, 2])
        left.selectbox(
            "Dataset",
            specs,
            index=specs.index(DEFAULT_DATASET) if DEFAULT_DATASET in specs else 0,
            key=KEY_DATASET,
            bind="query-params",
        )
        right.selectbox(
            "Split",
            data.SPLITS,
            index=data.SPLITS.index(DEFAULT_SPLIT),
            key=KEY_SPLIT,
            bind="query-params",
        )
        with st.expander("Your own images"):
            st.text_input(
                "Dataset spec",
                key="dataset_custom",
                placeholder="folder:/path/to/classes or idx:/path",
                on_change=_use_custom_dataset,
                help="A folder with one sub-folder per class, or a folder of MNIST-style IDX files.",
            )
        if not checkpoints:
            st.info("No checkpoints yet: see the page for how to make one.")
            return
        spec = st.session_state.get(KEY_DATASET, DEFAULT_DATASET)
        names = [name for name, _, _ in checkpoints]
        cards = {name: card for name, _, card in checkpoints}
        # checkpoints trained on the chosen dataset first
        ordered = sorted(names, key=lambda n: cards[n].dataset != spec)
        teacher, student = default_checkpoints(checkpoints, spec)
        for key, label, default in (
            (KEY_TEACHER, "Teacher", teacher),
            (KEY_STUDENT, "Student", student),
        ):
            asked = st.query_params.get(key)
            if asked and asked not in names and key not in st.session_state:
                st.warning(
                    f"The link asks for checkpoint {asked!r}, which is not here; showing {default!r}."
                )
            chosen = st.selectbox(
                label, ordered, index=ordered.index(default), key=key, bind="query-params"
            )
            st.caption(_describe(cards[chosen]))


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Model:
    """A loaded checkpoint on the current data."""

    name: str  # display name
    stem: str  # stem path
    mtime: float  # its files' modification time (part of every cache key)
    card: ModelCard
    logits: torch.Tensor  # (N, K)

    @property
    def ref(self) -> tuple[str, float]:
        return (self.stem, self.mtime)


@dataclass(frozen=True)
class View:
    """What every page works on: the data, the two models and the temperature."""

    dataset: data.Dataset
    teacher: Model
    student: Model
    temperature: float

    @property
    def spec(self) -> str:
        return self.dataset.spec

    @property
    def split(self) -> str:
        return self.dataset.split

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    @property
    def t_label(self) -> str:
        return analysis.format_temperature(self.temperature)

    def models(self) -> dict[str, torch.Tensor]:
        return {analysis.TEACHER: self.teacher.logits, analysis.STUDENT: self.student.logits}


def _load_model(name: str, checkpoints, ds: data.Dataset) -> Model:
    found = {n: (stem, card) for n, stem, card in checkpoints}
    if name not in found:
        raise KdvizError(f"The checkpoint {name!r} is gone; pick another in the sidebar.")
    stem, card = found[name]
    engine.check_compatible(card, ds)
    mtime = cache.stem_mtime(stem)
    return Model(name, stem, mtime, card, cache.logits(stem, mtime, ds.spec, ds.split))


DOWNLOADABLE = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100")  # torchvision's


def _offer_download(spec: str, split: str, err: KdvizError) -> None:
    """A torchvision dataset that is not on disk: say so, and offer to fetch it."""
    st.error(str(err), icon=":material/error:")
    if st.button(f"Download {spec} now (needs the internet)", key="download_dataset"):
        try:
            with st.spinner(f"Downloading {spec}…"):
                data.load_dataset(spec, split, download=True)
        except KdvizError as failed:
            st.error(str(failed), icon=":material/error:")
            return
        cache.dataset.clear()
        st.rerun()


def load_view() -> View | None:
    """The current view, or None after showing on the page why there is none (no checkpoint, a
    dataset that cannot load, a checkpoint that does not fit the data)."""
    checkpoints = cache.checkpoint_list()
    if not checkpoints:
        st.info(HOW_TO_MAKE_CHECKPOINTS, icon=":material/info:")
        return None
    state = st.session_state
    spec = state.get(KEY_DATASET, DEFAULT_DATASET)
    split = state.get(KEY_SPLIT, DEFAULT_SPLIT)
    try:
        try:
            ds = cache.dataset(spec, split)
        except KdvizError as err:
            if spec in DOWNLOADABLE:
                _offer_download(spec, split, err)
                return None
            raise
        if len(ds) == 0:
            raise KdvizError(
                f"The {split} split of {spec!r} has no images; pick another split or dataset."
            )
        default_teacher, default_student = default_checkpoints(checkpoints, ds.spec)
        teacher = _load_model(state.get(KEY_TEACHER, default_teacher), checkpoints, ds)
        student = _load_model(state.get(KEY_STUDENT, default_student), checkpoints, ds)
    except KdvizError as err:
        st.error(str(err), icon=":material/error:")
        return None
    temperature = analysis.snap_temperature(state.get(KEY_T, 1.0))
    return View(ds, teacher, student, temperature)


def render_with_view(body: Callable[[View], None]) -> None:
    """Load the sidebar's view and draw a page's body with it; a KdvizError from the body shows
    as its one sentence on the page, and the rest of the app keeps working."""
    view = load_view()
    if view is None:
        return
    try:
        body(view)
    except KdvizError as err:
        st.error(str(err), icon=":material/error:")


# --------------------------------------------------------------------------- images


def memo_figure(key: tuple, build: Callable[[], Any]) -> Any:
    """A figure kept for this session under ``key``: built once, then updated in place by the
    caller (e.g. only the T marker moves), which is much cheaper than building it again.
    Per session, not cache_resource, because callers mutate it."""
    store = st.session_state.setdefault("_kdviz_figures", {})
    fig = store.get(key)
    if fig is None:
        if len(store) >= 24:
            store.clear()
        fig = store[key] = build()
    return fig


def image_strip(
    ds: data.Dataset,
    indices: Sequence[int],
    captions: Sequence[str],
    hover: Sequence[str],
    *,
    key: str,
    selected: int | None = None,
    on_pick: Callable[[int], None] | None = None,
    tile: int = 64,
    title: str = "",
) -> None:
    """A row of thumbnails as one chart: captions under them, details on hover; with
    ``on_pick``, clicking a thumbnail calls on_pick(image number)."""
    if not len(indices):
        return
    indices = [int(i) for i in indices]
    fig = memo_figure(
        ("strip", key, ds.spec, ds.split, tuple(indices), tile, title),
        lambda: plots.image_strip(
            cache.strip_uri(ds.spec, ds.split, tuple(indices), tile), indices, tile=tile,
            captions=captions, hover=hover, title=title,
        ),
    )  # fmt: skip
    plots.label_strip(fig, captions=captions, hover=hover, selected=selected)
    if on_pick is None:
        chart(fig, key=key)
        return

    def picked() -> None:
        points = st.session_state[key].selection.points
        if points:
            on_pick(int(points[0]["customdata"]))

    chart(fig, key=key, on_select=picked, selection_mode="points")


def explain(text: str) -> None:
    """One or two plain sentences: what the reader is looking at and what to notice."""
    st.caption(text)


class _Prebuilt(BaseFigure):
    """A figure handed to st.plotly_chart as its plain spec.

    st.plotly_chart calls ``Figure.to_dict()``, which deep-copies every trace and re-encodes each
    array as base64: about 3 ms a chart, most of a temperature change's server time. The
    figure's own data and layout are already plain JSON-able dicts (numpy arrays included), so
    this hands them over as they are; nothing mutates them while they are encoded.
    """

    def __init__(self, fig: BaseFigure) -> None:  # no BaseFigure.__init__: nothing to validate
        spec = {"data": fig._data, "layout": fig._layout}
        if fig._frame_objs:
            spec["frames"] = [frame.to_plotly_json() for frame in fig._frame_objs]
        object.__setattr__(self, "_spec", spec)

    def to_dict(self) -> dict:
        return self._spec


def chart(fig, key: str, **kwargs):
    """st.plotly_chart with the explorer's defaults (full width, no Plotly logo)."""
    config = {"displaylogo": False, "displayModeBar": "hover", **kwargs.pop("config", {})}
    if isinstance(fig, BaseFigure):
        fig = _Prebuilt(fig)
    return st.plotly_chart(fig, key=key, width="stretch", config=config, **kwargs)
