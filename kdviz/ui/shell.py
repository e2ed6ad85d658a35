"""The explorer's shell: navigation, the sidebar (dataset, teacher, student, temperature), the
loaded view every page works on, and small shared widgets (images, thumbnails, errors).

The view lives in widgets bound to the URL (``bind="query-params"``), so a copied link opens the
same page, data, models and temperature: ?dataset=mnist5k&teacher=...&student=...&T=4&image=12.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from plotly.basedatatypes import BaseFigure
from streamlit.errors import StreamlitAPIException

from kdviz import analysis, data, plots
from kdviz.errors import KdvizError
from kdviz.models import ModelCard
from kdviz.ui import PAGES, PageSpec, cache, own_data

DEFAULT_DATASET = "mnist5k"
DEFAULT_SPLIT = "test"
DEFAULT_TEACHER = "mnist5k-teacher"
DEFAULT_STUDENT = "mnist5k-mlp800-distilled"
# The first view: at T = 4 the bars already show the dark knowledge (at T = 1 most images are
# one ~100% bar); "Back to T = 1" is one click away.
DEFAULT_T = 4.0

# Widget keys, which are also the URL's query parameters.
KEY_T, KEY_DATASET, KEY_SPLIT = "T", "dataset", "split"
KEY_TEACHER, KEY_STUDENT = "teacher", "student"
KEY_SHOW_ALL = "all_checkpoints"

HOW_TO_MAKE_CHECKPOINTS = (
    "No checkpoint was found, so there is nothing to explore yet. Build the shipped ones with "
    "`make pretrained`, or train one in a minute on the bundled digits: "
    "`kdviz train --dataset digits --arch mlp-64-64 --epochs 5` (it lands in "
    "`$KDVIZ_HOME/checkpoints`, default `~/.kdviz`), then reload this page."
)


# --------------------------------------------------------------------------- navigation


# The default page is served at "/"; Streamlit still reserves its url_path, so it gets one
# nobody types, and its natural path (/soft-targets) is an alias like the others.
ROOT_URL_PATH = "explorer-home"


def _url_path(spec: PageSpec) -> str:
    return ROOT_URL_PATH if spec is PAGES[0] else spec.url_path


def page_aliases() -> dict[str, PageSpec]:
    """Paths people type for a page, besides its own: the default page's url_path, and each
    page's module name, url_path and title written with "_" or "-" (/soft_targets,
    /teacher-student, /experiments-lab)."""
    taken = {_url_path(spec) for spec in PAGES}
    aliases: dict[str, PageSpec] = {}
    for spec in PAGES:
        stem = Path(spec.file).stem.removesuffix("_page")
        title = "-".join(spec.title.lower().split())
        names = (spec.url_path, stem, title)
        for name in (
            variant for n in names for variant in (n, n.replace("_", "-"), n.replace("-", "_"))
        ):
            if name not in taken and name not in aliases:
                aliases[name] = spec
    return aliases


def _alias_page(alias: str, spec: PageSpec):
    def go_to_page() -> None:
        # the sidebar's widgets (already run) put their own parameters back; the page's not yet
        params = st.query_params.to_dict()
        switch_to(spec.file, {k: v for k, v in params.items() if k not in st.session_state})

    return st.Page(go_to_page, title=spec.title, url_path=alias, visibility="hidden")


def pages() -> list:
    """st.Page objects for kdviz.ui.PAGES (the first is the default), then hidden aliases that
    forward to them."""
    shown = [
        st.Page(
            spec.path,
            title=spec.title,
            url_path=_url_path(spec),
            icon=spec.icon or None,
            default=i == 0,
        )
        for i, spec in enumerate(PAGES)
    ]
    return shown + [_alias_page(alias, spec) for alias, spec in page_aliases().items()]


def switch_to(file: str, query_params: dict[str, str] | None = None) -> None:
    """Go to the page whose module is ``file`` (e.g. "soft_targets.py"), with ``query_params``
    in its URL (besides the bound widgets', which they put back themselves)."""
    for spec in PAGES:
        if spec.file == file:
            # query_params={}: the default (None) would clear the URL itself and trip over the
            # widgets bound to it; the bound widgets put their values back on the new page.
            page = st.Page(spec.path, title=spec.title, url_path=_url_path(spec))
            try:
                st.switch_page(page, query_params=query_params or {})
            except StreamlitAPIException:  # a parameter still bound to a widget of this session
                st.switch_page(page, query_params={})


# --------------------------------------------------------------------------- sidebar


def _reset_temperature() -> None:
    st.session_state[KEY_T] = 1.0


def _use_custom_dataset() -> None:
    spec = (st.session_state.get("dataset_custom") or "").strip()
    if spec:
        st.session_state[KEY_DATASET] = spec


def dataset_options(checkpoints: Sequence[tuple[str, str, ModelCard]] = ()) -> list[str]:
    """Named datasets, the user's uploads, tables of imported logits ("logits:NAME"), plus the
    folder/IDX spec in use (from the URL or typed in)."""
    named = [s for s in data.list_datasets() if ":" not in s]
    named += own_data.list_uploaded_datasets()
    named += [cache.TABLE_PREFIX + n for n, _, card in checkpoints if card.kind == "logits"]
    current = st.session_state.get(KEY_DATASET) or st.query_params.get(KEY_DATASET)
    if current and current not in named:
        named.append(str(current))
    return named


def default_checkpoints(
    checkpoints: Sequence[tuple[str, str, ModelCard]], spec: str
) -> tuple[str, str]:
    """(teacher, student) display names: the shipped pair for the dataset when present, else
    checkpoints trained on it, else the first ones. ``checkpoints`` should be those that fit."""
    names = [name for name, _, _ in checkpoints]
    on_data = [name for name, _, card in checkpoints if card.dataset == spec] or names
    table = spec[len(cache.TABLE_PREFIX) :] if cache.is_table(spec) else ""
    teacher = next(
        (
            n
            for n in (DEFAULT_TEACHER if spec == DEFAULT_DATASET else "", f"{spec}-teacher", table)
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


def data_name(spec: str) -> str:
    """A dataset spec as a reader names it: an upload by its file name."""
    upload = own_data.upload_of(spec) if spec else None
    meta = own_data.read_meta(upload) if upload else {}
    return f"your upload {meta['file']}" if meta.get("file") else spec


def _describe(card: ModelCard) -> str:
    acc = card.metrics.get("test_accuracy", card.metrics.get("accuracy"))
    what = {"onnx": "ONNX model", "logits": "logits table"}.get(card.kind, card.arch or card.kind)
    parts = [what]
    source = card.extra.get("imported_from")
    if source:
        parts.append(f"imported from {source}")
    elif card.dataset:
        parts.append(f"trained on {data_name(card.dataset)}")
    if isinstance(acc, (int, float)):
        parts.append(f"test accuracy {100 * acc:.1f}%")
    return " · ".join(parts)


# ------------------------------------------------------------------ which checkpoints fit


@dataclass(frozen=True)
class Target:
    """What a checkpoint must fit: the chosen data's classes, image shape and rows."""

    num_classes: int
    in_shape: tuple[int, int, int] | None  # None: a table of logits, no images
    rows: int

    @classmethod
    def of(cls, src: cache.DataSource) -> Target:
        return cls(len(src.class_names), src.in_shape, src.rows)


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(v)) for v in shape) or "?"


def misfit(card: ModelCard, stem: str, target: Target) -> str:
    """Why a checkpoint cannot be used on the target data ("100 classes vs 10"), "" if it can."""
    if card.num_classes != target.num_classes:
        return f"{card.num_classes} classes vs {target.num_classes}"
    if card.kind == "logits":
        rows = cache.table_rows(stem, cache.stem_mtime(stem))
        return "" if rows == target.rows else f"{rows:,} rows vs {target.rows:,}"
    if target.in_shape is None:
        return "a model needs images; this data is a table of logits"
    if tuple(card.in_shape) != tuple(target.in_shape):
        return f"input {_shape(card.in_shape)} vs {_shape(target.in_shape)}"
    return ""


def _source(spec: str, split: str) -> cache.DataSource | None:
    """The chosen data; None when it cannot load (the page says why)."""
    try:
        return cache.source(spec, split)
    except KdvizError:
        return None


def _checkpoint_pickers(checkpoints, spec: str, target: Target | None) -> None:
    """Teacher and student selectboxes that list only what fits the data ("Show all" lists the
    rest, marked with the reason); a choice that no longer fits is replaced by a default."""
    cards = {name: (stem, card) for name, stem, card in checkpoints}
    reasons = {n: misfit(card, stem, target) if target else "" for n, (stem, card) in cards.items()}
    fitting = [c for c in checkpoints if not reasons[c[0]]]
    show_all = bool(st.session_state.get(KEY_SHOW_ALL))
    if not fitting:
        st.warning(
            "No checkpoint fits this data; add a model under “Your own data”, or train one with "
            f"`kdviz train --dataset {spec}`.",
            icon=":material/warning:",
        )
    defaults = default_checkpoints(fitting or checkpoints, spec)
    roles = ((KEY_TEACHER, "Teacher"), (KEY_STUDENT, "Student"))
    for (key, label), default in zip(roles, defaults, strict=True):
        # trained on the chosen data first, then the rest; the ones that do not fit last
        listed = [n for n, _, _ in (checkpoints if show_all else fitting)] or [default]
        listed.sort(key=lambda n: (bool(reasons[n]), cards[n][1].dataset != spec))
        asked = st.query_params.get(key)
        if asked and key not in st.session_state and asked not in listed:
            why = f"does not fit this data ({reasons[asked]})" if asked in cards else "is not here"
            st.warning(f"The link asks for checkpoint {asked!r}, which {why}; showing {default!r}.")
        if st.session_state.get(key) is not None and st.session_state[key] not in listed:
            st.session_state[key] = default  # e.g. the dataset changed under it
        chosen = st.selectbox(
            label,
            listed,
            index=listed.index(default) if default in listed else 0,
            key=key,
            bind="query-params",
            format_func=lambda n: f"{n} — incompatible: {reasons[n]}" if reasons.get(n) else n,
        )
        if chosen in cards:
            st.caption(_describe(cards[chosen][1]))
    hidden = len(checkpoints) - len(fitting)
    st.toggle(
        f"Show all checkpoints ({hidden} do not fit)" if hidden else "Show all checkpoints",
        key=KEY_SHOW_ALL,
        disabled=not hidden and not show_all,
        help="The pickers list only checkpoints whose classes, input shape (or rows, for a "
        "table of logits) fit the chosen data. This lists the others too, with the reason.",
    )


# Less empty space above the page title, so the first chart shows without scrolling. Under
# NARROW_PX (a projector, a split screen) columns holding a chart stack into one column, and
# metrics wrap two to a row in a smaller font instead of cutting their numbers ("99.2…").
NARROW_PX = 1000
_STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; padding-bottom: 3rem; }
[data-testid="stMetricValue"] { font-size: clamp(1.5rem, 2.4vw, 2.25rem); }
/* labels (checkboxes, toggles, metrics) wrap instead of ending in "…" */
.stMarkdownEllipsis, .stMarkdownEllipsis p { white-space: normal; text-overflow: clip; }
@media (max-width: NARROW_MAXpx) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.25rem; padding-right: 1.25rem; }
  [data-testid="stHorizontalBlock"]:has([data-testid="stPlotlyChart"]) {
    flex-direction: column; flex-wrap: nowrap; }
  [data-testid="stHorizontalBlock"]:has([data-testid="stPlotlyChart"]) > [data-testid="stColumn"] {
    width: 100% !important; min-width: 100% !important; flex: 1 1 auto !important; }
  [data-testid="stHorizontalBlock"]:has([data-testid="stMetric"]) { flex-wrap: wrap; }
  [data-testid="stHorizontalBlock"]:has([data-testid="stMetric"]) > [data-testid="stColumn"] {
    min-width: calc(50% - 1rem) !important; }
}
</style>""".replace("NARROW_MAX", str(NARROW_PX - 1))

# Streamlit's "auto" sidebar collapses only at <= 768 px; a projector or a split screen at
# ~820 px loses ~300 px to it. Once per tab, below NARROW_PX and when the user has never opened
# or closed it (no stSidebarCollapsed-* key in localStorage), close it, then forget that click
# so that a wide window later opens with the sidebar again.
_COLLAPSE_WHEN_NARROW = """<script>
(() => {
  if (window.__kdvizSidebarChecked || window.innerWidth >= NARROW_PX) return;
  window.__kdvizSidebarChecked = true;
  const keys = () => Object.keys(localStorage).filter(k => k.startsWith("stSidebarCollapsed-"));
  if (keys().length) return;  // the user's own choice wins
  let tries = 0;
  const close = () => {
    // the collapse button exists only while the sidebar is open
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (button) {
      button.click();
      setTimeout(() => keys().forEach(k => localStorage.removeItem(k)), 0);
    } else if (++tries < 30) {
      setTimeout(close, 100);
    }
  };
  close();
})();
</script>""".replace("NARROW_PX", str(NARROW_PX))


def _data_pickers(checkpoints) -> tuple[str, str]:
    """The Dataset and Split selectboxes and a caption about them; (spec, split)."""
    specs = dataset_options(checkpoints)
    current = str(st.session_state.get(KEY_DATASET) or st.query_params.get(KEY_DATASET) or "")
    # a path spec is long: give it the sidebar's whole width, the split goes below
    left, right = st.columns([3, 2]) if ":" not in current else (st.container(), st.container())
    spec = left.selectbox(
        "Dataset",
        specs,
        index=specs.index(DEFAULT_DATASET) if DEFAULT_DATASET in specs else 0,
        key=KEY_DATASET,
        bind="query-params",
        help="A named dataset, your uploads (folder:…/uploads/…), or an imported table of "
        "logits (logits:NAME, no images).",
    )
    table = cache.is_table(spec)
    if table:  # not the bound Split widget: its value waits for the next dataset
        split = cache.TABLE_SPLIT
        right.selectbox(
            "Split", ["all rows"], key="split_table", disabled=True,
            help="A table of logits has one set of rows.",
        )  # fmt: skip
    else:
        split = right.selectbox(
            "Split",
            data.SPLITS,
            index=data.SPLITS.index(DEFAULT_SPLIT),
            key=KEY_SPLIT,
            bind="query-params",
        )
    if table:
        st.caption(
            f"The rows of the logits table {spec[len(cache.TABLE_PREFIX) :]!r}, with its labels "
            "and class names; no images."
        )
    elif spec.startswith("folder:"):
        st.caption(own_data.split_note(spec, split))
    return spec, split


def sidebar() -> None:
    """The shared controls. Called by app.py on every run, before the page."""
    st.html(_STYLE)
    st.html(_COLLAPSE_WHEN_NARROW, unsafe_allow_javascript=True)
    cache.use_one_thread()
    own_data.apply_pending()
    checkpoints = cache.checkpoint_list()
    with st.sidebar:
        st.select_slider(
            "Temperature",
            options=analysis.TEMPERATURE_GRID,
            value=DEFAULT_T,
            format_func=analysis.format_temperature,
            key=KEY_T,
            bind="query-params",
            help=(
                "Soft targets are softmax(z / T). T = 1 is the ordinary softmax; a higher T moves "
                "probability onto the classes the model did not pick: the dark knowledge. "
                "The slider is logarithmic, from 0.25 to 100; arrow keys step it."
            ),
        )
        at_one = st.session_state.get(KEY_T, DEFAULT_T) == 1.0
        st.button(
            "Back to T = 1",
            key="reset_T",
            on_click=_reset_temperature,
            disabled=at_one,
            icon=":material/undo:",
        )
        st.divider()
        spec, split = _data_pickers(checkpoints)
        src = _source(spec, split)
        with st.expander("Your own data", expanded=own_data.pending_model() is not None):
            own_data.render(src.dataset if src else None)
            _custom_spec_input()
        own_data.show_message()
        if not checkpoints:
            st.info("No checkpoints yet: see the page for how to make one.")
            return
        _checkpoint_pickers(checkpoints, spec, Target.of(src) if src else None)


def _custom_spec_input() -> None:
    st.text_input(
        "Or a folder on the server",
        key="dataset_custom",
        placeholder="folder:/path/to/classes or idx:/path",
        on_change=_use_custom_dataset,
        help="A folder with one sub-folder per class, or a folder of MNIST-style IDX files, on "
        "the machine that runs kdviz (under KDVIZ_HOME or a `kdviz app --data` folder).",
    )


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Model:
    """A checkpoint (a model, an ONNX file or a table of logits) on the current data."""

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
    """What every page works on: the rows (labels, class names, images when there are any),
    the two models' logits on them and the temperature."""

    spec: str  # the data: a dataset spec, or "logits:NAME" for a table of logits
    split: str  # "train" | "val" | "test", or cache.TABLE_SPLIT for a table
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    dataset: data.Dataset | None  # None: a table of logits, no images
    teacher: Model
    student: Model
    temperature: float

    @property
    def has_images(self) -> bool:
        return self.dataset is not None

    @property
    def t_label(self) -> str:
        return analysis.format_temperature(self.temperature)

    def models(self) -> dict[str, torch.Tensor]:
        return {analysis.TEACHER: self.teacher.logits, analysis.STUDENT: self.student.logits}


def _load_model(name: str, checkpoints, src: cache.DataSource) -> Model:
    found = {n: (stem, card) for n, stem, card in checkpoints}
    if name not in found:
        raise KdvizError(f"The checkpoint {name!r} is gone; pick another in the sidebar.")
    stem, card = found[name]
    why = misfit(card, stem, Target.of(src))
    if why:
        where = "this table of logits" if src.dataset is None else f"{src.spec} ({src.split})"
        raise KdvizError(
            f"{name!r} does not fit {where}: {why}; pick one that fits in the sidebar, or "
            "add one under “Your own data”."
        )
    mtime = cache.stem_mtime(stem)
    return Model(name, stem, mtime, card, cache.logits(stem, mtime, src.spec, src.split))


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


def _check_pair(teacher: Model, student: Model) -> None:
    if teacher.logits.shape != student.logits.shape:
        raise KdvizError(
            f"The teacher has {tuple(teacher.logits.shape)} logits (rows, classes) but the "
            f"student {tuple(student.logits.shape)}; pick two with the same rows and classes."
        )


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
            src = cache.source(spec, split)
        except KdvizError as err:
            if spec in DOWNLOADABLE:
                _offer_download(spec, split, err)
                return None
            raise
        if src.rows == 0:
            raise KdvizError(
                f"The {split} split of {spec!r} has no images; pick another split or dataset."
            )
        default_teacher, default_student = default_checkpoints(checkpoints, src.spec)
        teacher = _load_model(state.get(KEY_TEACHER) or default_teacher, checkpoints, src)
        student = _load_model(state.get(KEY_STUDENT) or default_student, checkpoints, src)
        _check_pair(teacher, student)
    except KdvizError as err:
        st.error(str(err), icon=":material/error:")
        return None
    temperature = analysis.snap_temperature(state.get(KEY_T, DEFAULT_T))
    return View(
        src.spec, src.split, src.labels, src.class_names, src.dataset, teacher, student, temperature
    )


NO_IMAGES_NOTE = "These logits came without images, so the image panes are hidden."


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
