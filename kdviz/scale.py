"""The explorer at 100 to 1,000 classes: top-k soft targets with "the rest", the per-class mean
soft targets over the temperature grid (computed ahead in a background thread), the clustered
matrix cut into tiles and block averages, and each class's nearest classes.

Nothing here imports streamlit. Numbers are float32 and reductions run over chunks of rows, so
a 50,000 x 1,000 table is never softened whole at once (one chunk is 4,096 x K).
Shapes: N images, K classes, B classes per block.
"""

from __future__ import annotations

import atexit
import math
import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from kdviz import soft
from kdviz.analysis import TEMPERATURE_GRID

MANY_CLASSES = 20  # above this many classes the soft-target bars show the top k and "the rest"
TOP_K = 10  # classes shown by name in the bars at many classes
BIG_MATRIX = 60  # above this many classes a K x K heatmap is shown as blocks and tiles
BLOCK = 50  # classes per tile / block of the clustered matrix
CHUNK = 4096  # rows softened at a time
_OPTIMAL_ORDERING_MAX_K = 300  # scipy's optimal leaf ordering takes ~1 s at K = 1,000


def rest_label(hidden: int) -> str:
    """The name of the bar that sums the classes not shown."""
    return f"the rest ({hidden:,} classes)"


def top_classes(teacher_logits: Tensor, label: int | None, k: int = TOP_K) -> np.ndarray:
    """The k classes with the largest teacher probability, the true class always among them.

    softmax(z / T) keeps the order of z for every T > 0, so the choice is the same at every
    temperature and the bars keep their places as T moves.

    Args:
        teacher_logits: (K,) one image's teacher logits.
        label: the true class, or None / -1 when unknown.

    Returns:
        (min(k, K),) class indices, most probable first.
    """
    z = teacher_logits.detach().float()
    k = min(k, z.numel())
    top = torch.topk(z, k).indices.numpy()
    if label is not None and label >= 0 and label not in top:
        top = np.append(top[: k - 1], int(label))
    return top.astype(np.int64)


def top_k_frame(
    logits: dict[str, Tensor],
    temperature: float,
    class_names: Sequence[str],
    classes: np.ndarray,
) -> pd.DataFrame:
    """analysis.soft_target_frame for the chosen ``classes`` plus one bar for the rest.

    Each model's probabilities at T and at T = 1 over all K classes are computed, the chosen
    classes kept, and the others summed into rest_label(K - k): every (model, reference) group
    still sums to 1.

    Returns:
        long frame: model, class, temperature, reference, probability ((k + 1) rows per group).
    """
    names = [class_names[int(i)] for i in classes] + [rest_label(len(class_names) - len(classes))]
    idx = torch.as_tensor(classes, dtype=torch.long)
    parts = []
    for model, row in logits.items():
        for t, reference in ((temperature, False), (1.0, True)):
            probs = soft.soften(row.detach().double().unsqueeze(0), t)[0]  # (K,)
            shown = probs[idx]
            rest = (1.0 - shown.sum()).clamp(min=0.0)
            parts.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "class": names,
                        "temperature": float(t),
                        "reference": reference,
                        "probability": torch.cat([shown, rest.reshape(1)]).numpy(),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def curve_classes(logits: Tensor, label: int | None, n: int = 6) -> np.ndarray:
    """The classes whose temperature curves are drawn at many classes: this model's top n for
    the image (its predicted class first) and the true class.

    Returns:
        (n,) or (n + 1,) class indices.
    """
    top = torch.topk(logits.detach().float(), min(n, logits.numel())).indices.numpy()
    if label is not None and label >= 0 and label not in top:
        top = np.append(top, int(label))
    return top.astype(np.int64)


# --------------------------------------------------------------------------- class means


def class_means(logits: Tensor, labels: Tensor, temperature: float, chunk: int = CHUNK) -> Tensor:
    """soft.class_similarity(soft.soften(logits, T), labels, K), softening ``chunk`` rows at a
    time (peak memory: one chunk, not the whole table).

    Returns:
        (K, K) float32; rows of classes with no images are nan.
    """
    sums, counts, _ = _sweep(logits, labels, temperature, chunk, want_top=False)
    rows = sums / counts.clamp(min=1).unsqueeze(-1)
    return torch.where(counts.unsqueeze(-1) > 0, rows, torch.nan)


def _sweep(
    logits: Tensor, labels: Tensor, temperature: float, chunk: int, want_top: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One chunked pass: per-class sums of soft targets (K, K), class counts (K,), and each
    image's top probability (N,) when ``want_top``."""
    k = logits.shape[-1]
    sums = torch.zeros(k, k, dtype=torch.float32)
    counts = torch.zeros(k, dtype=torch.float32)
    top = torch.empty(len(logits), dtype=torch.float32) if want_top else None
    for start in range(0, len(logits), chunk):
        probs = soft.soften(logits[start : start + chunk].float(), temperature)  # (chunk, K)
        y = labels[start : start + chunk]
        keep = y >= 0
        sums.index_add_(0, y[keep], probs[keep])
        counts += torch.bincount(y[keep], minlength=k).float()
        if top is not None:
            top[start : start + len(probs)] = probs.amax(-1)
    return sums, counts, top


def cluster_indices(matrix: np.ndarray) -> np.ndarray:
    """Class indices in average-linkage leaf order of the soft-target affinity (as
    analysis.cluster_order; optimal leaf ordering only up to a few hundred classes)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    k = len(matrix)
    values = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    np.fill_diagonal(values, 0.0)
    sums = values.sum(axis=1, keepdims=True)
    rows = np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)
    affinity = (rows + rows.T) / 2.0
    if k < 3 or affinity.max() <= 0:
        return np.arange(k)
    distance = 1.0 - affinity / affinity.max()
    np.fill_diagonal(distance, 0.0)
    tree = linkage(
        squareform(distance, checks=False),
        method="average",
        optimal_ordering=k <= _OPTIMAL_ORDERING_MAX_K,
    )
    return leaves_list(tree).astype(np.int64)


class TemperatureSweep:
    """``compute(T)`` for every grid temperature, computed ahead in a background thread (the
    temperatures nearest ``first`` first); ``get(T)`` serves a stored T at once and computes one
    that is not there yet on the caller's thread. For what costs seconds per T at 50,000 x
    1,000, e.g. the Teacher vs student page's per-class DKD split."""

    def __init__(
        self,
        compute: Callable[[float], object],
        temperatures: Sequence[float] = TEMPERATURE_GRID,
        name: str = "kdviz-sweep",
    ) -> None:
        self._compute_fn = compute
        self.temperatures = tuple(float(t) for t in temperatures)
        self._results: dict[float, object] = {}
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.done = threading.Event()
        _LIVE.add(self)

    def start(self, first: float = 1.0) -> TemperatureSweep:
        """Start the background sweep once (later calls do nothing); returns self."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(first,), name=self._name, daemon=True
                )
                self._thread.start()
        return self

    def _run(self, first: float) -> None:
        try:
            for t in sorted(self.temperatures, key=lambda t: abs(math.log(t / first))):
                if self._stop.is_set():
                    return
                self._visit(t)
        finally:
            self.done.set()

    def _visit(self, t: float) -> None:
        """What the background thread does at one temperature."""
        self.get(t)

    def get(self, t: float) -> object:
        """The result at T (do not modify it)."""
        t = float(t)
        if t not in self._results:
            result = self._compute_fn(t)
            with self._lock:
                self._results.setdefault(t, result)
        return self._results[t]

    def ready(self) -> int:
        """How many temperatures are stored."""
        return len(self._results)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background sweep after the temperature it is on, and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class ClassMeansGrid(TemperatureSweep):
    """One model's mean soft-target matrices at every grid temperature, computed ahead.

    ``start()`` runs a daemon thread that sweeps the temperatures nearest ``first`` first; each
    sweep softens the table chunk by chunk (float32) and stores the (K, K) means, the cluster
    order and each image's top probability. ``matrix(T)`` serves a stored T at once and computes
    a T that is not there yet on the caller's thread (chunked too), so a page never waits for
    the whole grid. Memory: 27 x K x K float32 (108 MB at K = 1,000) plus 27 x N floats.
    """

    def __init__(
        self,
        logits: Tensor,
        labels: Tensor,
        temperatures: Sequence[float] = TEMPERATURE_GRID,
        chunk: int = CHUNK,
    ) -> None:
        super().__init__(self._means_at, temperatures, name="kdviz-class-means")
        self._logits, self._labels, self._chunk = logits, labels, chunk
        self.num_classes = int(logits.shape[-1])
        self._top: dict[float, np.ndarray] = {}  # T -> (N,) float32
        self._orders: dict[float, np.ndarray] = {}  # T -> (K,) int64
        self._blocks: dict[tuple[float, int], np.ndarray] = {}  # (T, B) -> (n, n) float64

    def _visit(self, t: float) -> None:
        self.get(t)
        self.order(t)
        self.blocks(t, block_size(self.num_classes))

    def _means_at(self, t: float) -> np.ndarray:
        """(K, K) float32 means at T; stores each image's top probability on the way."""
        sums, counts, top = _sweep(self._logits, self._labels, t, self._chunk, want_top=True)
        rows = sums / counts.clamp(min=1).unsqueeze(-1)
        with self._lock:
            self._top.setdefault(t, top.numpy())
        return torch.where(counts.unsqueeze(-1) > 0, rows, torch.nan).numpy()

    def matrix(self, t: float) -> np.ndarray:
        """(K, K) float32 mean soft targets at T (rows: true class); do not modify it."""
        return self.get(t)

    def top_probability(self, t: float) -> np.ndarray:
        """(N,) each image's largest probability at T (1 - dark mass)."""
        self.get(t)  # computes the top probabilities together with the means
        return self._top[float(t)]

    def blocks(self, t: float, block: int = BLOCK) -> np.ndarray:
        """block_average of the clustered matrix at T, computed once per (T, block)."""
        key = (float(t), block)
        if key not in self._blocks:
            averages = block_average(self.matrix(t), self.order(t), block)
            with self._lock:
                self._blocks.setdefault(key, averages)
        return self._blocks[key]

    def order(self, t: float) -> np.ndarray:
        """(K,) class indices in clustered order at T, computed once per T."""
        t = float(t)
        if t not in self._orders:
            order = cluster_indices(self.matrix(t))
            with self._lock:
                self._orders.setdefault(t, order)
        return self._orders[t]


_LIVE: weakref.WeakSet[TemperatureSweep] = weakref.WeakSet()


@atexit.register
def stop_all() -> None:
    """Stop every background sweep (at exit: a thread inside torch when the interpreter ends
    aborts the process)."""
    for grid in list(_LIVE):
        grid.stop()


# --------------------------------------------------------------------------- tiles and blocks


def block_size(num_classes: int) -> int:
    """Classes per block: 25 up to 250 classes (at least 4 x 4 blocks at 100), else BLOCK."""
    return 25 if num_classes <= 250 else BLOCK


def block_average(matrix: np.ndarray, order: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """The clustered matrix averaged over block x block tiles, diagonal cells left out.

    Args:
        matrix: (K, K) mean soft targets; order: (K,) clustered order.

    Returns:
        (ceil(K / B), ceil(K / B)) float64: cell (a, b) is the mean of the off-diagonal cells of
        rows order[aB : (a+1)B] and columns order[bB : (b+1)B] (nan where there are none).
    """
    values = np.asarray(matrix, dtype=np.float64)[np.ix_(order, order)]
    np.fill_diagonal(values, np.nan)
    k = len(order)
    n = math.ceil(k / block)
    pad = n * block - k
    padded = np.pad(values, ((0, pad), (0, pad)), constant_values=np.nan)
    tiles = padded.reshape(n, block, n, block)
    finite = np.isfinite(tiles)
    sums = np.where(finite, tiles, 0.0).sum(axis=(1, 3))
    counts = finite.sum(axis=(1, 3))
    return np.divide(sums, counts, out=np.full((n, n), np.nan), where=counts > 0)


def block_labels(class_names: Sequence[str], order: np.ndarray, block: int = BLOCK) -> list[str]:
    """One label per block: its first and last class in clustered order."""
    names = [class_names[int(i)] for i in order]
    return [
        f"{names[s]} … {names[min(s + block, len(names)) - 1]}" for s in range(0, len(names), block)
    ]


def block_of(class_index: int, order: np.ndarray, block: int = BLOCK) -> int:
    """The block that holds ``class_index`` in clustered order."""
    return int(np.flatnonzero(np.asarray(order) == class_index)[0]) // block


def tile(
    matrix: np.ndarray,
    order: np.ndarray,
    row_block: int,
    col_block: int,
    class_names: Sequence[str],
    block: int = BLOCK,
) -> pd.DataFrame:
    """One block x block tile of the clustered matrix as a frame (rows: true class)."""
    rows = np.asarray(order)[row_block * block : (row_block + 1) * block]
    cols = np.asarray(order)[col_block * block : (col_block + 1) * block]
    frame = pd.DataFrame(
        np.asarray(matrix, dtype=np.float64)[np.ix_(rows, cols)],
        index=[class_names[int(i)] for i in rows],
        columns=[class_names[int(i)] for i in cols],
    )
    frame.index.name, frame.columns.name = "true class", "class"
    return frame


def nearest_classes(
    teacher: np.ndarray,
    student: np.ndarray | None,
    class_index: int,
    class_names: Sequence[str],
    n: int = 10,
) -> pd.DataFrame:
    """The classes on which the teacher's soft targets for images of ``class_index`` put the
    most mean mass (itself left out), with the student's mean p for the same cells.

    Returns:
        frame: rank (1 = nearest), class, teacher (mean p), student (mean p or nan).
    """
    row = np.nan_to_num(np.asarray(teacher[class_index], dtype=np.float64), nan=-1.0)
    row[class_index] = -np.inf
    n = max(0, min(n, len(row) - 1))
    picked = np.argsort(-row, kind="stable")[:n]
    s_row = (
        np.asarray(student[class_index], dtype=np.float64)[picked]
        if student is not None
        else np.full(n, np.nan)
    )
    return pd.DataFrame(
        {
            "rank": np.arange(1, n + 1),
            "class": [class_names[int(i)] for i in picked],
            "teacher": np.asarray(teacher[class_index], dtype=np.float64)[picked],
            "student": s_row,
        }
    )


def strongest_links(matrix: np.ndarray, top_k: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) index arrays of the top_k class pairs a < b by (S_ab + S_ba) / 2, strongest first;
    argpartition keeps it fast at K = 1,000 (500,000 pairs)."""
    values = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    sym = values + values.T
    rows, cols = np.triu_indices(len(values), k=1)
    scores = sym[rows, cols]
    top_k = max(0, min(top_k, len(scores)))
    if top_k == 0:
        return rows[:0], cols[:0]
    part = np.argpartition(-scores, top_k - 1)[:top_k]
    part = part[np.argsort(-scores[part], kind="stable")]
    return rows[part], cols[part]


def mean_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> float:
    """mean over images of soft.kl_divergence at T, over chunks of rows (low peak memory)."""
    total = 0.0
    for start in range(0, len(teacher_logits), CHUNK):
        end = start + CHUNK
        kl = soft.kl_divergence(teacher_logits[start:end], student_logits[start:end], temperature)
        total += float(kl.double().sum())
    return total / max(1, len(teacher_logits))


def tile_classes(order: np.ndarray, block_index: int, block: int = BLOCK) -> np.ndarray:
    """The class indices of one block of the clustered order."""
    return np.asarray(order)[block_index * block : (block_index + 1) * block]
