"""Logit tensors -> tidy pandas DataFrames for the explorer; every number comes from kdviz.soft.

Nothing here imports streamlit or plotly: the UI caches these frames, kdviz.plots draws them.
Shapes: N images, K classes, M temperatures. ``class_names`` always has K entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from kdviz import soft

# The Temperature slider's stops: the Renard R10 preferred numbers (10 per decade, log-even)
# from 0.25 to 100. They include 1 (the ordinary softmax), 4 and 20 (Hinton et al.'s MNIST T).
TEMPERATURE_GRID: tuple[float, ...] = (
    0.25, 0.32, 0.4, 0.5, 0.63, 0.8,
    1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0,
    10.0, 12.5, 16.0, 20.0, 25.0, 32.0, 40.0, 50.0, 63.0, 80.0, 100.0,
)  # fmt: skip
T_MIN, T_MAX = TEMPERATURE_GRID[0], TEMPERATURE_GRID[-1]

GALLERY_MODES: dict[str, str] = {  # key -> label shown in the UI
    "class": "By class",
    "random": "At random",
    "dark": "Most dark knowledge",
    "disagree": "Teacher and student disagree",
    "wrong": "Teacher is wrong",
}

TEACHER, STUDENT = "teacher", "student"
_BIG_TABLE = 4_000_000  # logits; above this T* is fitted chunk by chunk (no float64 copy)


# --------------------------------------------------------------------------- small helpers


def snap_temperature(value: float | str | None, default: float = 1.0) -> float:
    """The grid temperature nearest to ``value`` in log space (``default`` if unparsable)."""
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    if not math.isfinite(t) or t <= 0:
        return default
    grid = np.log(np.asarray(TEMPERATURE_GRID))
    return TEMPERATURE_GRID[int(np.abs(grid - math.log(t)).argmin())]


def format_temperature(t: float) -> str:
    """'4', '0.25', '12.5': a grid temperature as people write it."""
    return f"{t:g}"


def curve_temperatures(points: int = 61) -> np.ndarray:
    """(M,) log-even temperatures from T_MIN to T_MAX, with the slider stops included."""
    fine = np.geomspace(T_MIN, T_MAX, points)
    return np.unique(np.concatenate([fine, np.asarray(TEMPERATURE_GRID)]))


def _names(class_names: Sequence[str], indices) -> list[str]:
    return [class_names[int(i)] for i in np.asarray(indices).reshape(-1)]


def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# --------------------------------------------------------------------------- one image


def soft_target_frame(
    logits: Mapping[str, Tensor], temperature: float, class_names: Sequence[str]
) -> pd.DataFrame:
    """One image's distributions at T and at T = 1, per model.

    Args:
        logits: model name -> (K,) logits of that image.

    Returns:
        long frame: model, class, temperature, reference (True for the T = 1 rows), probability.
    """
    models, refs, temps, probs = [], [], [], []
    for model, row in logits.items():
        for t, reference in ((temperature, False), (1.0, True)):
            models.append(model)
            refs.append(reference)
            temps.append(float(t))
            probs.append(soft.soften(row.unsqueeze(0), t)[0])  # (K,)
    k = len(class_names)
    # one frame built from flat arrays: this runs on every temperature change
    return pd.DataFrame(
        {
            "model": np.repeat(np.asarray(models, dtype=object), k),
            "class": np.tile(np.asarray(class_names, dtype=object), len(models)),
            "temperature": np.repeat(temps, k),
            "reference": np.repeat(refs, k),
            "probability": _np(torch.stack(probs)).astype(np.float64).reshape(-1),
        }
    )


def temperature_curve_frame(
    logits: Tensor,
    temperatures: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int] | np.ndarray | None = None,
    rest: bool = False,
) -> pd.DataFrame:
    """Each class's probability as T moves, for one image's (K,) logits.

    Args:
        classes: only these class indices (all when None), e.g. the top k at many classes.
        rest: with ``classes``, one more class named kdviz.scale.rest_label(K - k) holding the
            probability of all the others, so each temperature still sums to 1.

    Returns:
        long frame: temperature, class, probability (M * K rows, or M * k (+ M) with classes).
    """
    temps = np.asarray(temperatures, dtype=np.float64)
    probs = _np(soft.temperature_curve(logits.double(), torch.from_numpy(temps)))  # (M, K)
    names = np.asarray(class_names, dtype=object)
    if classes is not None:
        idx = np.asarray(classes, dtype=np.int64)
        shown = probs[:, idx]  # (M, k)
        names = names[idx]
        if rest:
            from kdviz.scale import rest_label

            others = np.clip(1.0 - shown.sum(axis=1, keepdims=True), 0.0, None)  # (M, 1)
            shown = np.hstack([shown, others])
            names = np.append(names, rest_label(probs.shape[1] - len(idx)))
        probs = shown
    k = probs.shape[1]
    return pd.DataFrame(
        {
            "temperature": np.repeat(temps, k),
            "class": np.tile(names, len(temps)),
            "probability": probs.reshape(-1),
        }
    )


def softness_frame(
    logits: Mapping[str, Tensor], temperatures: Sequence[float] | np.ndarray
) -> pd.DataFrame:
    """Entropy (nats) and dark-knowledge mass (1 - max p) against T, per model, for one image.

    Returns:
        long frame: model, temperature, entropy, dark_mass.
    """
    temps = np.asarray(temperatures, dtype=np.float64)
    parts = []
    for model, row in logits.items():
        probs = soft.temperature_curve(row.double(), torch.from_numpy(temps))  # (M, K)
        parts.append(
            pd.DataFrame(
                {
                    "model": model,
                    "temperature": temps,
                    "entropy": _np(soft.entropy(probs)),
                    "dark_mass": _np(soft.dark_mass(probs)),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def soft_target_grid_frame(
    logits: Mapping[str, Tensor],
    temperatures: Sequence[float] = TEMPERATURE_GRID,
    class_names: Sequence[str] = (),
    classes: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """One image's distribution at every slider temperature, per model (for an animation).

    Args:
        classes: only these classes plus one for the rest (see temperature_curve_frame).

    Returns:
        long frame: model, temperature, class, probability.
    """
    parts = []
    for model, row in logits.items():
        curve = temperature_curve_frame(
            row, temperatures, class_names, classes, rest=classes is not None
        )
        curve.insert(0, "model", model)
        parts.append(curve)
    return pd.concat(parts, ignore_index=True)


def image_summary(
    index: int,
    labels: Tensor,
    logits: Mapping[str, Tensor],
    temperature: float,
    class_names: Sequence[str],
) -> dict[str, object]:
    """What the caption of a picked image says: true class and each model's top class and p."""
    out: dict[str, object] = {"index": int(index), "true": class_names[int(labels[index])]}
    for model, all_logits in logits.items():
        probs = soft.soften(all_logits[index : index + 1], temperature)[0]  # (K,)
        top = int(probs.argmax())
        out[f"{model}_pred"] = class_names[top]
        out[f"{model}_p"] = float(probs[top])
        out[f"{model}_p_true"] = float(probs[int(labels[index])])
        out[f"{model}_dark"] = float(soft.dark_mass(probs.unsqueeze(0))[0])
    return out


# --------------------------------------------------------------------------- galleries


def gallery_indices(
    mode: str,
    labels: Tensor,
    teacher_logits: Tensor,
    student_logits: Tensor,
    temperature: float,
    *,
    n: int = 12,
    class_index: int = 0,
    seed: int = 0,
    teacher_top_p: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of up to ``n`` images for a gallery mode (see GALLERY_MODES).

    ``teacher_top_p``: (N,) the teacher's top probability per image at T when already known
    (kdviz.scale.ClassMeansGrid.top_probability), so "dark" need not soften the whole table.

    "class": images of ``class_index`` (seeded shuffle); "random": a seeded sample;
    "dark": the largest teacher mass off the argmax at T; "disagree": teacher and student top-1
    differ, largest KL(teacher || student) at T first; "wrong": the teacher's top-1 is not the
    label, most confident first.
    """
    if mode not in GALLERY_MODES:
        raise ValueError(f"unknown gallery mode {mode!r}; valid: {', '.join(GALLERY_MODES)}")
    count = len(labels)
    rng = np.random.default_rng(seed)
    if mode == "random":
        return np.sort(rng.choice(count, size=min(n, count), replace=False))
    if mode == "class":
        members = np.flatnonzero(_np(labels) == class_index)
        return np.sort(rng.permutation(members)[:n])
    if mode == "dark":
        if teacher_top_p is not None:
            dark = 1.0 - torch.as_tensor(teacher_top_p, dtype=torch.float64)  # (N,)
        else:
            dark = soft.dark_mass(soft.soften(teacher_logits, temperature))  # (N,)
        return _np(torch.topk(dark, min(n, count)).indices)  # largest first
    if mode == "disagree":
        differ = teacher_logits.argmax(-1) != student_logits.argmax(-1)  # (N,)
        idx = torch.nonzero(differ).reshape(-1)
        kl = soft.kl_divergence(teacher_logits[idx], student_logits[idx], temperature)
        return _np(idx[torch.argsort(kl, descending=True, stable=True)][:n])
    # "wrong"
    wrong = torch.nonzero(teacher_logits.argmax(-1) != labels).reshape(-1)
    confidence = soft.soften(teacher_logits[wrong], 1.0).max(-1).values
    return _np(wrong[torch.argsort(confidence, descending=True, stable=True)][:n])


def gallery_frame(
    indices: Sequence[int] | np.ndarray,
    labels: Tensor,
    teacher_logits: Tensor,
    student_logits: Tensor,
    temperature: float,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One row per gallery image: index, true, teacher/student top class and its p at T, dark mass.

    Returns:
        frame: index, true, teacher, teacher_p, student, student_p, dark_mass (teacher, at T).
    """
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    t_probs = soft.soften(teacher_logits[idx], temperature)  # (n, K)
    s_probs = soft.soften(student_logits[idx], temperature)
    t_p, t_top = t_probs.max(-1) if len(idx) else (torch.empty(0), torch.empty(0, dtype=torch.long))
    s_p, s_top = s_probs.max(-1) if len(idx) else (torch.empty(0), torch.empty(0, dtype=torch.long))
    return pd.DataFrame(
        {
            "index": _np(idx),
            "true": _names(class_names, _np(labels[idx])),
            "teacher": _names(class_names, _np(t_top)),
            "teacher_p": _np(t_p).astype(np.float64),
            "student": _names(class_names, _np(s_top)),
            "student_p": _np(s_p).astype(np.float64),
            "dark_mass": _np(soft.dark_mass(t_probs)).astype(np.float64)
            if len(idx)
            else np.empty(0),
        }
    )


# --------------------------------------------------------------------------- class similarity


def similarity_matrix(
    logits: Tensor, labels: Tensor, temperature: float, class_names: Sequence[str]
) -> pd.DataFrame:
    """Mean soft target at T per true class (soft.class_similarity) as a K x K frame.

    Rows: true class; columns: class. Rows of classes without images are nan.
    """
    probs = soft.soften(logits, temperature)  # (N, K)
    matrix = soft.class_similarity(probs, labels, len(class_names))  # (K, K)
    return _square(_np(matrix).astype(np.float64), class_names)


def confusion_frame(logits: Tensor, labels: Tensor, class_names: Sequence[str]) -> pd.DataFrame:
    """The hard-label confusion matrix (soft.confusion_matrix): rows true, columns predicted."""
    counts = soft.confusion_matrix(logits, labels, len(class_names))  # (K, K)
    frame = _square(_np(counts), class_names)
    frame.columns.name = "predicted"
    return frame


def _square(values: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(values, index=list(class_names), columns=list(class_names))
    frame.index.name, frame.columns.name = "true class", "class"
    return frame


def off_diagonal(matrix: pd.DataFrame) -> pd.DataFrame:
    """A copy with the diagonal set to nan (it is shown apart: it dwarfs the dark knowledge)."""
    values = matrix.to_numpy(dtype=np.float64, copy=True)
    np.fill_diagonal(values, np.nan)
    return pd.DataFrame(values, index=matrix.index, columns=matrix.columns)


def diagonal(matrix: pd.DataFrame) -> pd.Series:
    """The diagonal of a square frame (e.g. each class's mean probability of itself)."""
    values = matrix.to_numpy(dtype=np.float64)
    return pd.Series(np.diag(values).copy(), index=matrix.index, name="diagonal")


def _affinity(matrix: pd.DataFrame) -> np.ndarray:
    """Symmetric class affinity from a mean-soft-target matrix: (K, K), zero diagonal.

    Each row's off-diagonal mass is renormalised to sum to 1 (where the class's dark knowledge
    goes, independent of how confident the model is at this T), then A = (R + R^T) / 2.
    """
    values = np.nan_to_num(matrix.to_numpy(dtype=np.float64, copy=True), nan=0.0)
    np.fill_diagonal(values, 0.0)
    sums = values.sum(axis=1, keepdims=True)
    rows = np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)
    return (rows + rows.T) / 2.0


def cluster_order(matrix: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """Order classes by average-linkage hierarchical clustering of their soft-target affinity.

    Distance d_ij = 1 - A_ij / max(A) with A from ``_affinity``; scipy's optimal leaf ordering
    puts the most alike classes side by side.

    Returns:
        (class names in leaf order, dendrogram frame: segment, x, y), x in leaf positions
        0..K-1 and y the merge distance; the frame is empty when K < 3 or nothing is alike.
    """
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    names = [str(n) for n in matrix.index]
    empty = pd.DataFrame({"segment": [], "x": [], "y": []})
    affinity = _affinity(matrix)
    if len(names) < 3 or not np.isfinite(affinity).all() or affinity.max() <= 0:
        return names, empty
    distance = 1.0 - affinity / affinity.max()
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    dendro = dendrogram(tree, no_plot=True)
    order = [names[i] for i in dendro["leaves"]]
    rows = []
    for seg, (xs, ys) in enumerate(zip(dendro["icoord"], dendro["dcoord"], strict=True)):
        for x, y in zip(xs, ys, strict=True):
            rows.append((seg, (x - 5.0) / 10.0, y))  # scipy puts leaf i at x = 10 i + 5
    return order, pd.DataFrame(rows, columns=["segment", "x", "y"])


def reorder(matrix: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Rows and columns of a square frame in ``order``."""
    return matrix.loc[list(order), list(order)]


def similarity_links(matrix: pd.DataFrame, top_k: int = 15) -> pd.DataFrame:
    """The strongest class pairs by symmetrised mean soft target (S_ab + S_ba) / 2.

    Returns:
        frame: source, target, strength, a_to_b (S_ab), b_to_a (S_ba); strongest first.
    """
    values = np.nan_to_num(matrix.to_numpy(dtype=np.float64), nan=0.0)
    sym = (values + values.T) / 2.0
    rows, cols = np.triu_indices(len(values), k=1)
    order = np.argsort(-sym[rows, cols], kind="stable")[: max(0, top_k)]
    names = list(matrix.index)
    return pd.DataFrame(
        {
            "source": [names[rows[i]] for i in order],
            "target": [names[cols[i]] for i in order],
            "strength": sym[rows[order], cols[order]],
            "a_to_b": values[rows[order], cols[order]],
            "b_to_a": values[cols[order], rows[order]],
        }
    )


def circle_layout(order: Sequence[str]) -> pd.DataFrame:
    """Node positions on a circle in ``order`` (alike classes neighbour): class, x, y."""
    angles = np.pi / 2 - 2 * np.pi * np.arange(len(order)) / max(1, len(order))
    return pd.DataFrame({"class": list(order), "x": np.cos(angles), "y": np.sin(angles)})


def strongest_pair(matrix: pd.DataFrame) -> tuple[str, str]:
    """The off-diagonal cell (true class, class) with the largest mean soft target."""
    values = np.nan_to_num(off_diagonal(matrix).to_numpy(), nan=-1.0)
    i, j = np.unravel_index(int(values.argmax()), values.shape)
    return str(matrix.index[i]), str(matrix.columns[j])


def pair_images(
    logits: Tensor,
    labels: Tensor,
    temperature: float,
    true_class: int,
    other_class: int,
    n: int = 8,
) -> pd.DataFrame:
    """Images of ``true_class`` on which the model puts the most mass on ``other_class`` at T.

    Returns:
        frame: index, probability (p_other at T), p_true (at T); largest probability first.
    """
    members = torch.nonzero(labels == true_class).reshape(-1)
    probs = soft.soften(logits[members], temperature)  # (n_c, K)
    p_other = probs[:, other_class]
    top = torch.argsort(p_other, descending=True, stable=True)[:n]
    return pd.DataFrame(
        {
            "index": _np(members[top]),
            "probability": _np(p_other[top]).astype(np.float64),
            "p_true": _np(probs[top, true_class]).astype(np.float64),
        }
    )


def subsample(labels: Tensor, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` images, seeded and stratified by class."""
    y = _np(labels)
    if len(y) <= max_points:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_points / len(y))).astype(int)
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, size=min(q, len(members)), replace=False))
    return np.sort(np.concatenate(picked))[:max_points]


def soft_target_embedding(
    logits: Tensor,
    labels: Tensor,
    temperature: float,
    class_names: Sequence[str],
    *,
    method: str = "pca",
    max_points: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """A 2-D map of per-image soft targets at T: PCA, or t-SNE (slow: keep max_points small).

    Returns:
        frame: index, class, predicted, x, y, p_top (teacher's top p at T).
    """
    idx = subsample(labels, max_points, seed)
    probs = soft.soften(logits[torch.as_tensor(idx)], temperature)  # (n, K)
    features = _np(probs).astype(np.float64)
    if len(idx) < 3:
        xy = np.zeros((len(idx), 2))
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3.0)))
        xy = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(features)
    elif method == "pca":
        from sklearn.decomposition import PCA

        n_comp = min(2, features.shape[1], len(idx))
        xy = PCA(n_components=n_comp, random_state=seed).fit_transform(features)
        if xy.shape[1] < 2:
            xy = np.hstack([xy, np.zeros((len(idx), 2 - xy.shape[1]))])
    else:
        raise ValueError(f"unknown embedding method {method!r}; valid: pca, tsne")
    top_p, top = probs.max(-1)
    return pd.DataFrame(
        {
            "index": idx,
            "class": _names(class_names, _np(labels[torch.as_tensor(idx)])),
            "predicted": _names(class_names, _np(top)),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "p_top": _np(top_p).astype(np.float64),
        }
    )


# --------------------------------------------------------------------------- teacher vs student


def kl_label(temperature: float) -> str:
    """The metrics frame's row name for KL(teacher || student) at T."""
    return f"KL(teacher ‖ student) at T = {format_temperature(temperature)}"


def metrics_frame(
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float | None,
    calibration: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The standard measures for both models, one row per measure (pair measures: student column).

    Args:
        temperature: T of the KL row; None leaves the row out (the rest does not depend on T,
            see with_kl).
        calibration: precomputed soft.calibration_temperature per model (computed if None).

    Returns:
        frame indexed by measure with columns teacher, student (nan where it does not apply).
    """
    rows: dict[str, tuple[float, float]] = {}
    calib = dict(calibration or {})
    for model, z in ((TEACHER, teacher_logits), (STUDENT, student_logits)):
        if model not in calib:
            calib[model] = (
                soft.calibration_temperature_chunked(z, labels)
                if z.numel() > _BIG_TABLE
                else soft.calibration_temperature(z, labels)
            )
    nan = math.nan
    rows["Accuracy"] = (
        soft.accuracy(teacher_logits, labels),
        soft.accuracy(student_logits, labels),
    )
    rows["Top-1 agreement"] = (nan, soft.agreement(teacher_logits, student_logits))
    rows["NLL"] = (soft.nll(teacher_logits, labels), soft.nll(student_logits, labels))
    rows["ECE (15 bins)"] = (soft.ece(teacher_logits, labels), soft.ece(student_logits, labels))
    rows["Calibration temperature T*"] = (calib[TEACHER], calib[STUDENT])
    rows["NLL at T*"] = (
        soft.nll(teacher_logits, labels, calib[TEACHER]),
        soft.nll(student_logits, labels, calib[STUDENT]),
    )
    rows["ECE at T*"] = (
        soft.ece(teacher_logits / calib[TEACHER], labels),
        soft.ece(student_logits / calib[STUDENT], labels),
    )
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[TEACHER, STUDENT])
    frame.index.name = "measure"
    if temperature is None:
        return frame
    return with_kl(frame, teacher_logits, student_logits, temperature)


def with_kl(
    frame: pd.DataFrame,
    teacher_logits: Tensor,
    student_logits: Tensor,
    temperature: float,
    kl: float | None = None,
) -> pd.DataFrame:
    """A metrics frame with the row KL(teacher || student) at T (mean over images) after
    Top-1 agreement; ``kl`` when it is known already (per_class_and_kl)."""
    from kdviz.scale import mean_kl  # chunked: 50,000 x 1,000 logits stay one copy

    if kl is None:
        kl = mean_kl(teacher_logits, student_logits, temperature)
    row = pd.DataFrame({TEACHER: [math.nan], STUDENT: [kl]}, index=[kl_label(temperature)])
    at = list(frame.index).index("Top-1 agreement") + 1 if "Top-1 agreement" in frame.index else 0
    out = pd.concat([frame.iloc[:at], row, frame.iloc[at:]])
    out.index.name = "measure"
    return out


def reliability_frame(
    logits: Mapping[str, Tensor], labels: Tensor, n_bins: int = 15
) -> pd.DataFrame:
    """Reliability-diagram bins per model (soft.reliability_bins).

    Returns:
        long frame: model, lower, upper, center, confidence, accuracy, count.
    """
    parts = []
    for model, z in logits.items():
        bins = soft.reliability_bins(z, labels, n_bins)
        frame = pd.DataFrame({k: _np(v) for k, v in bins.items()})
        frame.insert(0, "model", model)
        frame["center"] = (frame["lower"] + frame["upper"]) / 2.0
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def per_class_frame(
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """Per true class: count, both accuracies, agreement, KL at T and the DKD split at T.

    Returns:
        frame: class, images, teacher_accuracy, student_accuracy, agreement, kl,
        teacher_p_true (mean at T), tckd, nckd, weight (1 - p_t), weighted_nckd.
    """
    return per_class_and_kl(teacher_logits, student_logits, labels, temperature, class_names)[0]


def per_class_and_kl(
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float,
    class_names: Sequence[str],
) -> tuple[pd.DataFrame, float]:
    """(per_class_frame, mean KL(teacher || student) at T over all images) from one pass."""
    parts, p_true = _dkd_per_image(teacher_logits, student_logits, labels, temperature)
    mean_kl = float(parts["kd"].double().mean()) if len(labels) else math.nan
    t_right = (teacher_logits.argmax(-1) == labels).double()
    s_right = (student_logits.argmax(-1) == labels).double()
    agree = (teacher_logits.argmax(-1) == student_logits.argmax(-1)).double()
    per_image = pd.DataFrame(
        {
            "label": _np(labels),
            "teacher_accuracy": _np(t_right),
            "student_accuracy": _np(s_right),
            "agreement": _np(agree),
            "kl": _np(parts["kd"]).astype(np.float64),
            "teacher_p_true": _np(p_true).astype(np.float64),
            "tckd": _np(parts["tckd"]).astype(np.float64),
            "nckd": _np(parts["nckd"]).astype(np.float64),
            "weight": _np(parts["weight"]).astype(np.float64),
        }
    )
    per_image["weighted_nckd"] = per_image["weight"] * per_image["nckd"]
    per_image = per_image[per_image["label"] >= 0]
    grouped = per_image.groupby("label").mean()
    grouped.insert(0, "images", per_image.groupby("label").size())
    grouped = grouped.reindex(range(len(class_names)))
    grouped["images"] = grouped["images"].fillna(0).astype(int)
    grouped.insert(0, "class", list(class_names))
    return grouped.reset_index(drop=True), mean_kl


def _dkd_per_image(
    teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[dict[str, Tensor], Tensor]:
    """soft.dkd_parts and the teacher's p(true class) at T per image, 4,096 rows at a time (a
    50,000 x 1,000 table would otherwise make several full-size temporaries)."""
    chunk = 4096
    pieces: list[dict[str, Tensor]] = []
    p_true = []
    for s in range(0, len(labels), chunk):
        t, st, y = (
            teacher_logits[s : s + chunk],
            student_logits[s : s + chunk],
            labels[s : s + chunk],
        )
        pieces.append(soft.dkd_parts(t, st, y, temperature))  # (n,) each
        p_true.append(soft.soften(t, temperature).gather(-1, y.clamp(min=0)[:, None])[:, 0])
    if not pieces:
        return soft.dkd_parts(teacher_logits, student_logits, labels, temperature), labels.float()
    parts = {key: torch.cat([p[key] for p in pieces]) for key in pieces[0]}
    return parts, torch.cat(p_true)


def disagreement_indices(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float, n: int = 12
) -> np.ndarray:
    """Images where teacher and student top-1 differ, largest KL(teacher || student) at T first."""
    dummy = torch.zeros(len(teacher_logits), dtype=torch.long)
    return gallery_indices("disagree", dummy, teacher_logits, student_logits, temperature, n=n)
