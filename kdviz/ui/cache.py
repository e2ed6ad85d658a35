"""Every cache of the explorer: models, datasets and logits live in st.cache_resource (shared,
never mutated); frames in st.cache_data (bounded). Logits are computed once per (checkpoint,
dataset, split) and softened at T only for what a page shows.

Cached functions take plain strings and floats, so their keys hash fast; a checkpoint is named by
its stem path and file mtime, so a checkpoint rewritten by a run is reloaded.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from kdviz import analysis, data, engine, models, plots, scale
from kdviz.errors import KdvizError
from kdviz.models import ModelCard

_CORES = torch.get_num_threads()


def use_one_thread() -> None:
    """A rerun does small tensor ops (softening a few thousand rows) in a fresh thread each time;
    an OpenMP thread team costs far more than it saves on those (10x on a busy 2-core machine).
    Only the one-off logit computation below asks for all cores."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def stem_mtime(stem: str | Path) -> float:
    """The newest modification time of a checkpoint's files (0 if none exist)."""
    stem = Path(stem)
    times = []
    for suffix in (".json", ".safetensors", ".pt", ".onnx", ".npz"):
        file = stem.with_name(stem.name + suffix)
        try:
            times.append(file.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def image_array(ds: data.Dataset, index: int, size: int) -> np.ndarray:
    """Image ``index`` as uint8 (H', W') or (H', W', 3), scaled up by whole pixels to about
    ``size`` (nearest neighbour: pixels stay crisp)."""
    image = ds.images[int(index)].numpy()  # (C, H, W)
    scale = max(1, math.ceil(size / max(image.shape[1:])))
    image = image.repeat(scale, axis=1).repeat(scale, axis=2)
    return image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)


@st.cache_resource(ttl=5, max_entries=1, show_spinner=False)
def checkpoint_list() -> list[tuple[str, str, ModelCard]]:
    """(display name, stem path, card) of every checkpoint: shipped, KDVIZ_HOME, runs."""
    return [(name, str(stem), card) for name, stem, card in models.list_checkpoints()]


@st.cache_resource(max_entries=6, show_spinner="Loading the dataset…")
def dataset(spec: str, split: str) -> data.Dataset:
    """One split of a dataset (never downloads from the app: the error says how to get it)."""
    return data.load_dataset(spec, split, download=False)


@st.cache_resource(max_entries=8, show_spinner="Loading the checkpoint…")
def checkpoint(stem: str, mtime: float) -> tuple[torch.nn.Module, ModelCard]:
    return models.load_checkpoint(stem)


# --------------------------------------------------------------------------- data sources
# The explorer's data is a dataset split, or a table of logits with its labels and class names
# (the spec "logits:NAME", NAME a checkpoint of kind "logits"): no images then.

TABLE_PREFIX = "logits:"
TABLE_SPLIT = "all"  # a logits table has one set of rows


def is_table(spec: str) -> bool:
    return str(spec).startswith(TABLE_PREFIX)


@dataclass(frozen=True, eq=False)
class DataSource:
    """What the rows are: labels and class names, and the images when there are any."""

    spec: str
    split: str
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    dataset: data.Dataset | None  # None: a logits table, no images

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_shape(self) -> tuple[int, int, int] | None:
        return None if self.dataset is None else self.dataset.in_shape


@st.cache_resource(max_entries=8, show_spinner="Reading the logits table…")
def table(stem: str, mtime: float):
    """The LogitsTable of a "logits" checkpoint (kdviz.importers.load_logits_table)."""
    from kdviz import importers

    return importers.load_logits_table(stem)


@st.cache_resource(max_entries=64, show_spinner=False)
def table_rows(stem: str, mtime: float) -> int:
    """Rows of a "logits" checkpoint, from the .npz header when it can (no 200 MB read)."""
    try:
        npz = Path(stem).with_name(Path(stem).name + ".npz")
        with zipfile.ZipFile(npz) as archive, archive.open("logits.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0
            if major != 1:
                read = np.lib.format.read_array_header_2_0
            return int(read(member)[0][0])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, IndexError):
        return int(table(stem, mtime).logits.shape[0])


def _table_stem(spec: str) -> str:
    name = spec[len(TABLE_PREFIX) :]
    stem = models.resolve_checkpoint(name)
    if models.load_card(stem).kind != "logits":
        raise KdvizError(
            f"{name!r} is a model, not a table of logits; pick a dataset for it in the sidebar."
        )
    return str(stem)


def source(spec: str, split: str) -> DataSource:
    """The rows a view works on (cheap: the dataset and the table are cached)."""
    if not is_table(spec):
        ds = dataset(spec, split)
        return DataSource(ds.spec, ds.split, ds.labels, ds.class_names, ds)
    stem = _table_stem(spec)
    found = table(stem, stem_mtime(stem))
    if found.labels is None:
        raise KdvizError(
            f"The logits table {spec[len(TABLE_PREFIX) :]!r} has no labels, so it cannot stand "
            "alone; pick the dataset its rows belong to, or import it again with labels."
        )
    return DataSource(spec, TABLE_SPLIT, found.labels, tuple(found.class_names), None)


def _table_on(stem: str, mtime: float, src: DataSource) -> torch.Tensor:
    """A logits checkpoint's table as the logits of ``src``'s rows, or KdvizError."""
    found = table(stem, mtime)
    name = Path(stem).name
    rows, classes = found.logits.shape
    where = src.spec if src.dataset is None else f"the {src.split} split of {src.spec!r}"
    if rows != src.rows or classes != len(src.class_names):
        raise KdvizError(
            f"The logits table {name!r} has {rows:,} rows of {classes} classes but {where} has "
            f"{src.rows:,} of {len(src.class_names)}; pick data with the same rows."
        )
    if found.labels is not None and not torch.equal(found.labels, src.labels):
        wrong = int((found.labels != src.labels).sum())
        raise KdvizError(
            f"The logits table {name!r} has labels that differ from {where} in {wrong:,} rows, "
            "so its rows are other images; pick the data they were computed on."
        )
    return found.logits


@st.cache_resource(
    max_entries=16, show_spinner="Computing logits (once per checkpoint and dataset)…"
)
def logits(stem: str, mtime: float, spec: str, split: str) -> torch.Tensor:
    """(N, K) logits; the engine also caches them on disk, keyed by the weights' hash. A
    "logits" checkpoint gives its table when its rows are these rows."""
    src = source(spec, split)
    if models.load_card(stem).kind == "logits":
        return _table_on(stem, mtime, src)
    if src.dataset is None:
        raise KdvizError(
            f"{Path(stem).name!r} is a model and needs images, but {spec!r} is a table of "
            "logits; pick a dataset in the sidebar."
        )
    model, card = checkpoint(stem, mtime)
    try:  # the key `kdviz` runs and the shipped teacher's logit files use (no weights hashing)
        fingerprint = models.card_fingerprint(stem)
    except Exception:  # e.g. a file it cannot read: the engine hashes the loaded tensors
        fingerprint = ""
    torch.set_num_threads(_CORES)
    try:
        return engine.model_logits(model, card, src.dataset, fingerprint=fingerprint)
    finally:
        torch.set_num_threads(1)


@st.cache_data(max_entries=1024, show_spinner=False)
def image_png(spec: str, split: str, index: int, size: int) -> bytes:
    """Image ``index`` as PNG bytes, scaled up by whole pixels to about ``size`` px."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(image_array(dataset(spec, split), index, size)).save(buffer, format="PNG")
    return buffer.getvalue()


@st.cache_data(max_entries=256, show_spinner=False)
def strip_uri(spec: str, split: str, indices: tuple[int, ...], tile: int) -> str:
    """Images side by side, each scaled to ``tile`` x ``tile`` px, as a PNG data URI."""
    import base64
    from io import BytesIO

    from PIL import Image

    ds = dataset(spec, split)
    inner = tile - 2  # a 1 px white frame around each image
    tiles = []
    for index in indices:
        image = Image.fromarray(image_array(ds, index, 1)).convert("RGB")
        image = np.asarray(image.resize((inner, inner), Image.Resampling.NEAREST))
        tiles.append(np.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=255))
    strip = np.concatenate(tiles, axis=1)  # (tile, n * tile, 3)
    buffer = BytesIO()
    Image.fromarray(strip.astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --------------------------------------------------------------------------- derived frames
# A "ref" is (stem, mtime); spec and split name the data.


@st.cache_resource(max_entries=4, show_spinner=False)
def class_means_grid(
    stem: str,
    mtime: float,
    spec: str,
    split: str,
    _logits: torch.Tensor,
    _labels: torch.Tensor,
    _first: float = 1.0,
) -> scale.ClassMeansGrid:
    """The model's mean soft targets over the temperature grid, swept once per (model, data) in a
    background thread that starts at the current T (kdviz.scale.ClassMeansGrid)."""
    return scale.ClassMeansGrid(_logits, _labels).start(first=_first)


@st.cache_data(max_entries=64, show_spinner=False)
def similarity_of(
    stem: str,
    mtime: float,
    spec: str,
    split: str,
    temperature: float,
    class_names: tuple[str, ...],
    _logits: torch.Tensor,
    _labels: torch.Tensor,
) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """(mean soft-target matrix at T, cluster order, dendrogram) at a few dozen classes."""
    matrix = analysis.similarity_matrix(_logits, _labels, temperature, class_names)
    order, tree = analysis.cluster_order(matrix)
    return matrix, order, tree


@st.cache_resource(max_entries=8, show_spinner=False)
def confusion_counts(
    stem: str, mtime: float, spec: str, split: str, _logits: torch.Tensor, _labels: torch.Tensor
) -> np.ndarray:
    """(K, K) int64 hard-label confusion counts (rows: true class); shared, never modified."""
    from kdviz import soft

    return soft.confusion_matrix(_logits, _labels, _logits.shape[-1]).numpy()


@st.cache_data(max_entries=12, show_spinner="Mapping the soft targets to 2-D…")
def embedding_of(
    stem: str,
    mtime: float,
    spec: str,
    split: str,
    temperature: float,
    method: str,
    max_points: int,
    class_names: tuple[str, ...],
    classes: tuple[int, ...] | None,
    _logits: torch.Tensor,
    _labels: torch.Tensor,
) -> pd.DataFrame:
    """analysis.soft_target_embedding, on the images of ``classes`` only when given."""
    if classes is None:
        return analysis.soft_target_embedding(
            _logits, _labels, temperature, class_names, method=method, max_points=max_points
        )
    keep = torch.nonzero(torch.isin(_labels, torch.tensor(classes))).reshape(-1)
    frame = analysis.soft_target_embedding(
        _logits[keep],
        _labels[keep],
        temperature,
        class_names,
        method=method,
        max_points=max_points,
    )
    frame["index"] = keep.numpy()[frame["index"].to_numpy()]  # back to the split's numbering
    return frame


@st.cache_resource(max_entries=16, show_spinner=False)
def animation_of(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    index: int,
    temperature: float,
    log_y: bool,
    classes: tuple[int, ...] | None,
    class_names: tuple[str, ...],
    _teacher_row: torch.Tensor,
    _student_row: torch.Tensor,
) -> go.Figure:
    """The Plotly-slider figure of one image (27 frames: built once; never mutated), over
    ``classes`` plus "the rest" when given."""
    rows = {analysis.TEACHER: _teacher_row, analysis.STUDENT: _student_row}
    frame = analysis.soft_target_grid_frame(
        rows, analysis.TEMPERATURE_GRID, class_names, None if classes is None else list(classes)
    )
    return plots.soft_target_animation(frame, active_temperature=temperature, log_y=log_y)


@st.cache_data(max_entries=16, show_spinner="Measuring both models…")
def metrics_of(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    _teacher_logits: torch.Tensor,
    _student_logits: torch.Tensor,
    _labels: torch.Tensor,
) -> pd.DataFrame:
    """The measures that do not depend on T, from the view's logits (see metrics)."""
    return analysis.metrics_frame(_teacher_logits, _student_logits, _labels, None)


@st.cache_data(max_entries=64, show_spinner=False)
def gallery_of(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    temperature: float,
    mode: str,
    n: int,
    class_index: int,
    seed: int,
    _teacher_logits: torch.Tensor,
    _student_logits: torch.Tensor,
    _labels: torch.Tensor,
    _teacher_top_p: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """(analysis.gallery_indices, how many images teacher and student disagree on), once per
    T and mode: "disagree" and "wrong" look at every image, too slow for each rerun at 50,000."""
    indices = analysis.gallery_indices(
        mode,
        _labels,
        _teacher_logits,
        _student_logits,
        temperature,
        n=n,
        class_index=class_index,
        seed=seed,
        teacher_top_p=_teacher_top_p,
    )
    differ = int((_teacher_logits.argmax(-1) != _student_logits.argmax(-1)).sum())
    return indices, differ


@st.cache_resource(max_entries=2, show_spinner=False)
def per_class_sweep(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    class_names: tuple[str, ...],
    _teacher_logits: torch.Tensor,
    _student_logits: torch.Tensor,
    _labels: torch.Tensor,
    _first: float = 1.0,
) -> scale.TemperatureSweep:
    """analysis.per_class_and_kl at every slider temperature, swept once per (teacher,
    student, data) in a background thread: a few seconds per T at 50,000 x 1,000."""

    def compute(temperature: float) -> tuple[pd.DataFrame, float]:
        return analysis.per_class_and_kl(
            _teacher_logits, _student_logits, _labels, temperature, class_names
        )

    return scale.TemperatureSweep(compute).start(first=_first)
