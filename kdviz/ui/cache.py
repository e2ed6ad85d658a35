"""Every cache of the explorer: models, datasets and logits live in st.cache_resource (shared,
never mutated); frames in st.cache_data (bounded). Logits are computed once per (checkpoint,
dataset, split) and softened at T only for what a page shows.

Cached functions take plain strings and floats, so their keys hash fast; a checkpoint is named by
its stem path and file mtime, so a checkpoint rewritten by a run is reloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from kdviz import analysis, data, engine, models, plots
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
    for suffix in (".json", ".safetensors", ".pt"):
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


@st.cache_resource(
    max_entries=16, show_spinner="Computing logits (once per checkpoint and dataset)…"
)
def logits(stem: str, mtime: float, spec: str, split: str) -> torch.Tensor:
    """(N, K) logits; the engine also caches them on disk, keyed by the weights' hash."""
    model, card = checkpoint(stem, mtime)
    torch.set_num_threads(_CORES)
    try:
        return engine.model_logits(model, card, dataset(spec, split))
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


@st.cache_data(max_entries=64, show_spinner=False)
def similarity(
    stem: str, mtime: float, spec: str, split: str, temperature: float
) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """(mean soft-target matrix at T, cluster order, dendrogram) of one model."""
    ds = dataset(spec, split)
    matrix = analysis.similarity_matrix(
        logits(stem, mtime, spec, split), ds.labels, temperature, ds.class_names
    )
    order, tree = analysis.cluster_order(matrix)
    return matrix, order, tree


@st.cache_data(max_entries=16, show_spinner=False)
def confusion(stem: str, mtime: float, spec: str, split: str) -> pd.DataFrame:
    ds = dataset(spec, split)
    return analysis.confusion_frame(logits(stem, mtime, spec, split), ds.labels, ds.class_names)


@st.cache_data(max_entries=16, show_spinner="Fitting the calibration temperature…")
def calibration_temperature(stem: str, mtime: float, spec: str, split: str) -> float:
    from kdviz import soft

    ds = dataset(spec, split)
    return soft.calibration_temperature(logits(stem, mtime, spec, split), ds.labels)


@st.cache_data(max_entries=16, show_spinner="Measuring both models…")
def metrics(
    teacher: tuple[str, float], student: tuple[str, float], spec: str, split: str
) -> pd.DataFrame:
    """The measures that do not depend on T (the page adds KL at T: analysis.with_kl)."""
    ds = dataset(spec, split)
    calib = {
        analysis.TEACHER: calibration_temperature(*teacher, spec, split),
        analysis.STUDENT: calibration_temperature(*student, spec, split),
    }
    return analysis.metrics_frame(
        logits(*teacher, spec, split),
        logits(*student, spec, split),
        ds.labels,
        None,
        calibration=calib,
    )


@st.cache_data(max_entries=32, show_spinner=False)
def per_class(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    temperature: float,
) -> pd.DataFrame:
    ds = dataset(spec, split)
    return analysis.per_class_frame(
        logits(*teacher, spec, split),
        logits(*student, spec, split),
        ds.labels,
        temperature,
        ds.class_names,
    )


@st.cache_data(max_entries=12, show_spinner="Mapping the soft targets to 2-D…")
def embedding(
    stem: str, mtime: float, spec: str, split: str, temperature: float, method: str, max_points: int
) -> pd.DataFrame:
    ds = dataset(spec, split)
    return analysis.soft_target_embedding(
        logits(stem, mtime, spec, split),
        ds.labels,
        temperature,
        ds.class_names,
        method=method,
        max_points=max_points,
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def animation_figure(
    teacher: tuple[str, float],
    student: tuple[str, float],
    spec: str,
    split: str,
    index: int,
    temperature: float,
    log_y: bool,
) -> go.Figure:
    """The Plotly-slider figure (27 frames: slow to build, so built once; never mutated)."""
    ds = dataset(spec, split)
    rows = {
        analysis.TEACHER: logits(*teacher, spec, split)[index],
        analysis.STUDENT: logits(*student, spec, split)[index],
    }
    frame = analysis.soft_target_grid_frame(rows, analysis.TEMPERATURE_GRID, ds.class_names)
    return plots.soft_target_animation(frame, active_temperature=temperature, log_y=log_y)
