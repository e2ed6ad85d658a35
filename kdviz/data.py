"""Datasets: a registry of loaders that turn a spec string into uint8 images, labels and class names.

Specs: `digits`, `mnist5k`, `mnist`, `fashion-mnist`, `kmnist`, `cifar10`, `cifar100`,
`folder:PATH`, `idx:PATH` (see `list_datasets()`). Splits `train`, `val`, `test` are disjoint;
`val` is a seeded class-stratified carve-out of the original training data and `train` the rest.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdviz import datafiles, paths
from kdviz.datafiles import (  # noqa: F401  (read_idx and IMAGE_EXTENSIONS are part of this API)
    IMAGE_EXTENSIONS,
    _Walk,
    class_dirs,
    decode_images,
    image_files,
    read_idx,
    stack_images,
    walk_files,
)
from kdviz.errors import KdvizError

SPLITS = ("train", "val", "test")
SEED = 0  # every carve-out (val, and test where a dataset has none) uses this seed
VAL_FRACTION = 0.1  # share of each class of the original training data that becomes `val`
TEST_FRACTION = 0.2  # share of each class that becomes `test` when a dataset ships no test set

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # romanised hiragana
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")  # fmt: skip
CIFAR100_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The dataset object


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is ambiguous
class Dataset:
    """One split of one dataset, in memory. The tensors may be shared with a cache: never mutate them."""

    spec: str  # e.g. "mnist5k", "idx:/path"
    split: str  # "train" | "val" | "test"
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(spec={self.spec!r}, split={self.split!r}, n={len(self)}, "
            f"in_shape={self.in_shape}, num_classes={self.num_classes})"
        )

    def normalized(self, device: torch.device | str | None = None) -> torch.Tensor:
        """float32 (N, C, H, W): (images / 255 - mean) / std, computed on `device` (default: where images are)."""
        # move the uint8 images, not floats: a quarter of the bytes to copy
        images = self.images if device is None else self.images.to(device)
        return normalize(images, self.mean, self.std)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(images / 255 - mean) / std per channel, as float32; images uint8 or float on the 0..255 scale.

    images: (N, C, H, W) or (C, H, W); mean, std: one value per channel (or one for all channels).
    """
    if images.dim() < 3:
        raise KdvizError(
            f"Images must be shaped (N, C, H, W) or (C, H, W), not {tuple(images.shape)}."
        )
    channels = images.shape[-3]
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).reshape(-1)
    for name, values in (("mean", mean_t), ("std", std_t)):
        if values.numel() not in (1, channels):
            raise KdvizError(
                f"The images have {channels} channel(s) but the normalisation {name} has "
                f"{values.numel()} values; use a model trained on data with {channels} channel(s)."
            )
    x = images.to(torch.float32) / 255.0  # a new tensor, so the in-place ops below are safe
    return x.sub_(mean_t.view(-1, 1, 1)).div_(std_t.view(-1, 1, 1))


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True, eq=False)
class DatasetSource:
    """What a registered loader returns: one part ("train" or "test") of a dataset, before `val` is carved.

    The "train" part is all of the original training data; load_dataset carves `val` from it.
    """

    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, [0, 1] scale; the same for both parts of a dataset
    std: tuple[float, ...]
    val_per_class: int | None = None  # carve this many per class for `val` instead of VAL_FRACTION


# loader(path, part, download) -> DatasetSource; path is None for specs without ":PATH"
Loader = Callable[[str | None, str, bool], DatasetSource]


@dataclass(frozen=True)
class _Entry:
    spec: str  # as listed by list_datasets(): "mnist" or "folder:PATH"
    loader: Loader
    takes_path: bool
    cache_key: Callable[[str | None], Hashable]  # what the loaded data depends on besides the spec


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, *, cache_key: Callable[[str | None], Hashable] | None = None):
    """Decorator: register `loader(path, part, download) -> DatasetSource` under `name`.

    `name` is a lowercase spec: "mnist", or "folder:PATH" for one that takes a path after the
    colon. `cache_key(path)` says what the data depends on (results are cached in-process under
    it); by default the data folder for fixed datasets and the files' sizes and times for paths.
    """
    key, _, placeholder = name.partition(":")
    takes_path = bool(placeholder)
    if cache_key is None:
        cache_key = _files_fingerprint if takes_path else _data_dir_key

    def decorator(loader: Loader) -> Loader:
        _REGISTRY[key] = _Entry(name, loader, takes_path, cache_key)
        _cached_source.cache_clear()
        _cached_dataset.cache_clear()
        return loader

    return decorator


def list_datasets() -> list[str]:
    """The dataset specs, in registration order ("folder:PATH" style for those that take a path)."""
    return [entry.spec for entry in _REGISTRY.values()]


def load_dataset(spec: str, split: str = "train", *, download: bool = True) -> Dataset:
    """Load one split of a dataset spec. Cached in-process: the returned tensors must not be mutated.

    download: for torchvision datasets missing from the data folder, fetch them (with progress);
    with False, or offline, a KdvizError names the folder and the files to put there.
    """
    key, path = _parse_spec(spec)
    check_data_root(spec)  # only where `kdviz app` restricted the folders
    split_key = split.strip().lower() if isinstance(split, str) else split
    if split_key not in SPLITS:
        raise KdvizError(f"Unknown split {split!r}; use one of: {', '.join(SPLITS)}.")
    entry = _REGISTRY[key]
    dataset = _cached_dataset(key, path, split_key, entry.cache_key(path), download)
    if len(dataset) == 0 and split_key != "train":
        raise KdvizError(
            f"The {split_key} split of {dataset.spec} has no images (a class needs 3 images to "
            "give one each to train, val and test, and a test/ folder needs images of its own); "
            "add images or use another split."
        )
    return dataset


DATA_ROOTS_ENV = paths.DATA_ROOTS_ENV  # set by `kdviz app`: os.pathsep-separated folders


def data_roots() -> list[Path] | None:
    """The folders folder:/idx: specs may name, or None for no restriction (the default).

    `kdviz app --data DIR` (or an app bound beyond localhost) sets $KDVIZ_DATA_ROOTS; KDVIZ_HOME
    (downloads, uploads) is always allowed then. Its worker processes inherit the restriction.
    """
    raw = os.environ.get(DATA_ROOTS_ENV)
    if raw is None:
        return None
    folders = [
        paths.kdviz_home(),
        *(Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()),
    ]
    return [folder.resolve() for folder in folders]


def check_data_root(spec: str) -> None:
    """KdvizError when a folder:/idx: spec names a folder outside data_roots() (symlinks resolved)."""
    if not isinstance(spec, str):
        return
    key, _, path = spec.strip().partition(":")
    entry = _REGISTRY.get(key.strip().lower().replace("_", "-"))
    roots = data_roots()
    if entry is None or not entry.takes_path or not path.strip() or roots is None:
        return
    target = user_path(path.strip()).resolve()
    if not any(target == root or root in target.parents for root in roots):
        raise KdvizError(
            f"This app may read only uploads and the folders its operator allowed with "
            f"`kdviz app --data DIR`; {path.strip()[:200]} is not among them."
        )


MAX_PATH_CHARS = 4096  # Linux's PATH_MAX: a longer path cannot name a folder anyway


def user_path(text: str) -> Path:
    """A path a user typed, with ~ expanded, or KdvizError (NUL or control characters, too long,
    a component over 255 bytes, an unknown ~user)."""
    bad = any(ord(ch) < 32 for ch in text) or len(text) > MAX_PATH_CHARS
    if bad or any(len(part.encode(errors="replace")) > 255 for part in text.split("/")):
        raise KdvizError(
            f"{text[:80]!r} is not a usable path (control characters, or longer than the file "
            "system allows); give the folder's path as plain text."
        )
    try:
        return Path(text).expanduser()
    except RuntimeError as err:  # ~someone who does not exist
        raise KdvizError(f"{text[:80]!r} starts with an unknown ~user; give a full path.") from err


def _parse_spec(spec: str) -> tuple[str, str | None]:
    """'folder:/a/b' -> ('folder', '/a/b'); 'MNIST' -> ('mnist', None)."""
    valid = ", ".join(list_datasets())
    if not isinstance(spec, str) or not spec.strip():
        raise KdvizError(f"Unknown dataset {spec!r}; use one of: {valid}.")
    key, colon, path = spec.strip().partition(":")
    key = key.strip().lower().replace("_", "-")
    entry = _REGISTRY.get(key)
    if entry is None:
        raise KdvizError(f"Unknown dataset {spec!r}; use one of: {valid}.")
    if entry.takes_path and not path.strip():
        raise KdvizError(f"Dataset {key!r} needs a folder: write it as {entry.spec}.")
    if not entry.takes_path and colon:
        raise KdvizError(f"Dataset {key!r} takes no path; write it as just {key!r}.")
    if entry.takes_path:
        user_path(path.strip())  # a NUL byte or an endless name: one sentence, here
    return key, (path.strip() if entry.takes_path else None)


@functools.lru_cache(maxsize=6)
def _cached_source(key: str, path: str | None, part: str, cache_key: Hashable, download: bool):
    return _REGISTRY[key].loader(path, part, download)


@functools.lru_cache(maxsize=16)
def _cached_dataset(key: str, path: str | None, split: str, cache_key: Hashable, download: bool):
    source = _cached_source(key, path, "test" if split == "test" else "train", cache_key, download)
    images, labels = source.images, source.labels
    if split != "test":
        fraction = None if source.val_per_class is not None else VAL_FRACTION
        keep, val = _stratified_carve(labels, fraction=fraction, per_class=source.val_per_class)
        chosen = val if split == "val" else keep
        images, labels = images[chosen], labels[chosen]
    return Dataset(
        spec=key if path is None else f"{key}:{path}",
        split=split,
        images=_as_tensor(images, torch.uint8),
        labels=_as_tensor(labels, torch.int64),
        class_names=tuple(source.class_names),
        mean=tuple(float(m) for m in source.mean),
        std=tuple(float(s) for s in source.std),
    )


def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only arrays
        array = array.copy()
    return torch.from_numpy(array).to(dtype)


def _data_dir_key(path: str | None) -> str:
    return str(paths.data_dir())  # KDVIZ_HOME is read on every call: tests move it


def _package_key(path: str | None) -> None:
    return None  # bundled data never changes within a process


def _files_fingerprint(path: str | None, recursive: bool = True) -> tuple:
    """(relative path, size, mtime) of every visible file under path: changes when the data does.

    The walk is bounded (datafiles.MAX_FOLDER_FILES) and skips dangling symlinks.
    """
    root = user_path(path or "")
    if not root.is_dir():
        return (str(root),)
    entries: list[tuple[str, int, int]] = [(str(root.resolve()), 0, 0)]
    spec = f"{'folder' if recursive else 'idx'}:{path}"
    for full, stat in walk_files(root, spec, recursive=recursive):
        entries.append((str(full.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


# --------------------------------------------------------------------------------------------
# Shared helpers: seeded stratified splits, channel statistics


def _stratified_carve(
    labels: np.ndarray,
    *,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, carved), class by class; each sorted ascending.

    From each class, `per_class` images (all if fewer), or round(fraction * n) -- at least 1 for a
    class of 2 or more, so small classes still reach val and test, and at most n - 1, so every class
    keeps one -- are carved. Order within a class comes from argsorting uniform draws of a seeded
    numpy Generator (PCG64), whose float stream is the most stable part of its API.
    """
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.argsort(rng.random(members.size), kind="stable")]
        if per_class is not None:
            count = min(per_class, members.size)
        else:
            count = int(np.floor(fraction * members.size + 0.5))
            if fraction > 0 and members.size >= 2:
                count = max(count, 1)
            count = min(count, max(members.size - 1, 0))
        carved.append(members[:count])
        kept.append(members[count:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(kept or [empty])), np.sort(np.concatenate(carved or [empty]))


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale of uint8 images (N, C, H, W), exactly.

    Uses a 256-bin histogram per channel so no float copy of the images is ever made.
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for channel in range(images.shape[1]):
        hist = np.bincount(images[:, channel].ravel(), minlength=256).astype(np.float64)
        count = hist.sum()
        if count == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        mean = hist @ values / count
        var = max(hist @ values**2 / count - mean**2, 0.0)
        std = float(np.sqrt(var)) / 255.0
        means.append(round(float(mean) / 255.0, 4))
        # constant (or nearly constant) images: a std that rounds below 1e-4 would divide by ~0
        # and fail the card's minimum std, so such a channel is left unscaled
        stds.append(round(std, 4) if std >= 1e-4 else 1.0)
    return tuple(means), tuple(stds)


def _split_source(
    images: np.ndarray,
    labels: np.ndarray,
    part: str,
    class_names: tuple[str, ...],
    *,
    test_fraction: float | None = None,
    test_per_class: int | None = None,
    val_per_class: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> DatasetSource:
    """For datasets without a test set: carve `test` (seeded, stratified) and return `part`.

    Mean and std, unless given, come from the remaining training images.
    """
    train_idx, test_idx = _stratified_carve(
        labels, fraction=test_fraction, per_class=test_per_class
    )
    if mean is None or std is None:
        mean, std = _channel_stats(images[train_idx])
    chosen = test_idx if part == "test" else train_idx
    return DatasetSource(images[chosen], labels[chosen], class_names, mean, std, val_per_class)


# --------------------------------------------------------------------------------------------
# digits and mnist5k: bundled, always offline


@register_dataset("digits", cache_key=_package_key)
def _load_digits(path: str | None, part: str, download: bool) -> DatasetSource:
    """scikit-learn's 1,797 8x8 digits (values 0..16) scaled to uint8: clip(x * 16, 0, 255)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return _split_source(images, labels, part, DIGIT_NAMES, test_fraction=TEST_FRACTION)


MNIST5K_FILE = "mnist5k.npz"  # written by scripts/make_mnist5k.py
MNIST5K_PER_CLASS = 50  # test and val each take 50 images of every class: 500 + 500, train 4,000


@register_dataset("mnist5k", cache_key=_package_key)
def _load_mnist5k(path: str | None, part: str, download: bool) -> DatasetSource:
    """5,000 real MNIST training digits, 500 per class, bundled in kdviz/_data/mnist5k.npz."""
    file = paths.PACKAGE_DATA_DIR / MNIST5K_FILE
    if not file.is_file():
        raise KdvizError(
            f"The bundled {file} is missing; rebuild it with `python scripts/make_mnist5k.py`."
        )
    with np.load(file, allow_pickle=False) as npz:
        images = npz["images"][:, None]  # (5000, 1, 28, 28) uint8
        labels = npz["labels"].astype(np.int64)
    return _split_source(
        images,
        labels,
        part,
        DIGIT_NAMES,
        test_per_class=MNIST5K_PER_CLASS,
        val_per_class=MNIST5K_PER_CLASS,
        mean=(0.1307,),  # full MNIST's well-known statistics, as for `mnist`
        std=(0.3081,),
    )


# --------------------------------------------------------------------------------------------
# IDX files (MNIST family): our own parser, gzip or plain

IDX_FILES = {  # part -> (images file, labels file), without the optional ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx_file(folder: Path, base: str) -> Path | None:
    """The file for `base` in folder: plain or .gz, also the 'train-images.idx3-ubyte' spelling."""
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (N, 1, H, W) uint8, labels (N,) int64) of one part, or None if a file is missing."""
    image_base, label_base = IDX_FILES[part]
    image_file, label_file = _find_idx_file(folder, image_base), _find_idx_file(folder, label_base)
    if image_file is None or label_file is None:
        return None
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise KdvizError(
            f"{image_file} must hold uint8 images (N, H, W), not {images.dtype} {images.shape}."
        )
    if images.size == 0:
        raise KdvizError(f"{image_file} holds no images (shape {images.shape}); use a full file.")
    if len(images) > datafiles.MAX_IMAGES:
        raise KdvizError(
            f"{image_file} holds {len(images):,} images, over kdviz's limit of "
            f"{datafiles.MAX_IMAGES:,} per file; use a smaller file."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise KdvizError(f"{label_file} must hold one non-negative integer label per image.")
    if labels.size and labels.max() >= datafiles.MAX_CLASSES:
        raise KdvizError(
            f"{label_file} has label {labels.max()}, over kdviz's limit of "
            f"{datafiles.MAX_CLASSES:,} classes; labels must count classes from 0."
        )
    if len(images) != len(labels):
        raise KdvizError(
            f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels; "
            "use a matching pair."
        )
    return images[:, None], labels.astype(np.int64)


def _missing_idx_message(folder: Path, part: str, spec: str) -> str:
    image_base, label_base = IDX_FILES[part]
    missing = [b + "[.gz]" for b in (image_base, label_base) if _find_idx_file(folder, b) is None]
    return f"{spec} has no {part} data: put {' and '.join(missing)} into {folder}."


def _read_idx_labels(folder: Path, base: str) -> np.ndarray:
    file = _find_idx_file(folder, base)
    return np.zeros(0, dtype=np.int64) if file is None else read_idx(file).astype(np.int64)


def _read_idx_images(folder: Path, base: str) -> np.ndarray | None:
    file = _find_idx_file(folder, base)
    return None if file is None else read_idx(file)[:, None]


# --------------------------------------------------------------------------------------------
# torchvision datasets: files in torchvision's layout under data_dir(); torchvision downloads them


@dataclass(frozen=True)
class _TorchvisionInfo:
    class_name: str  # torchvision.datasets class; MNIST family: data_dir()/CLASS/raw/
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # well-known per-channel statistics of the training set
    std: tuple[float, ...]
    homepage: str
    cifar_folder: str = ""  # CIFAR: data_dir()/FOLDER/ holds the pickled batches
    cifar_files: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # (train, test) batch files
    cifar_label_key: str = ""


_TORCHVISION = {
    "mnist": _TorchvisionInfo(
        "MNIST", DIGIT_NAMES, (0.1307,), (0.3081,), "http://yann.lecun.com/exdb/mnist/"
    ),
    "fashion-mnist": _TorchvisionInfo(
        "FashionMNIST", FASHION_MNIST_NAMES, (0.2860,), (0.3530,),
        "https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": _TorchvisionInfo(
        "KMNIST", KMNIST_NAMES, (0.1918,), (0.3483,), "https://github.com/rois-codh/kmnist"
    ),
    "cifar10": _TorchvisionInfo(
        "CIFAR10", CIFAR10_NAMES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz, unpacked)",
        "cifar-10-batches-py",
        (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",)),
        "labels",
    ),
    "cifar100": _TorchvisionInfo(
        "CIFAR100", CIFAR100_NAMES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz, unpacked)",
        "cifar-100-python",
        (("train",), ("test",)),
        "fine_labels",
    ),
}  # fmt: skip


def _torchvision_folder(info: _TorchvisionInfo) -> Path:
    if info.cifar_folder:
        return paths.data_dir() / info.cifar_folder
    return paths.data_dir() / info.class_name / "raw"


def _torchvision_files(info: _TorchvisionInfo, part: str | None = None) -> list[str]:
    """Files of one part (None: all) as a user would place them."""
    parts = ("train", "test") if part is None else (part,)
    if info.cifar_folder:
        return [f for p in parts for f in info.cifar_files[p == "test"]]
    return [base + ".gz" for p in parts for base in IDX_FILES[p]]


def _torchvision_missing(info: _TorchvisionInfo, part: str) -> list[str]:
    folder = _torchvision_folder(info)
    if info.cifar_folder:
        return [f for f in _torchvision_files(info, part) if not (folder / f).is_file()]
    return [b for b in IDX_FILES[part] if _find_idx_file(folder, b) is None]


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _download_torchvision(info: _TorchvisionInfo, spec: str) -> None:
    """Fetch the dataset with torchvision's own code (mirrors, md5 checks, a tqdm progress bar)."""
    from torchvision import datasets as tv_datasets  # slow to import: only when downloading

    folder = _torchvision_folder(info)
    try:
        getattr(tv_datasets, info.class_name)(str(paths.data_dir()), train=True, download=True)
    except Exception as err:  # no network, a mirror down, a bad checksum: all fixed the same way
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(err).__name__)[:160]
        raise KdvizError(
            f"Could not download {spec} ({reason}); put the files {_and_list(_torchvision_files(info))} "
            f"from {info.homepage} into {folder} and try again."
        ) from err


def _load_torchvision(spec: str, path: str | None, part: str, download: bool) -> DatasetSource:
    """Read the files torchvision downloads (MNIST family: IDX, .gz or not; CIFAR: pickled batches)."""
    info = _TORCHVISION[spec]
    folder = _torchvision_folder(info)
    if _torchvision_missing(info, part):
        if not download:
            raise KdvizError(
                f"{spec} is not in the data folder: put the files {_and_list(_torchvision_files(info))} "
                f"from {info.homepage} into {folder}, or load it with downloading allowed."
            )
        _download_torchvision(info, spec)
        if missing := _torchvision_missing(info, part):
            raise KdvizError(
                f"{spec} downloaded but {', '.join(missing)} is missing from {folder}; put it there."
            )
    if info.cifar_folder:
        batches = [
            _read_cifar_batch(folder / f, info.cifar_label_key)
            for f in info.cifar_files[part == "test"]
        ]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
    else:
        loaded = _read_idx_part(folder, part)
        assert loaded is not None  # presence checked above
        images, labels = loaded
    if labels.size and labels.max() >= len(info.class_names):
        raise KdvizError(
            f"{spec} files in {folder} have label {labels.max()}; replace them with the real files."
        )
    return DatasetSource(images, labels, info.class_names, info.mean, info.std)


for _spec in _TORCHVISION:
    register_dataset(_spec)(functools.partial(_load_torchvision, _spec))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a CIFAR batch can run no code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core."):  # numpy >= 2 moved numpy.core to numpy._core
            try:
                return super().find_class("numpy._core." + module[len("numpy.core.") :], name)
            except ImportError:
                pass
        return super().find_class(module, name)


def _read_cifar_batch(file: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> images (N, 3, 32, 32) uint8 (rows are stored CHW), labels (N,)."""
    try:
        with open(file, "rb") as f:
            entry = _NumpyOnlyUnpickler(f, encoding="latin1").load()  # latin1: Python 2 pickles
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as err:  # any unpickling failure means the same thing: a bad file
        raise KdvizError(
            f"{file} is not a readable CIFAR batch ({err}); delete it and download it again."
        ) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise KdvizError(
            f"{file} does not hold 3x32x32 images with one label each; delete it and download it again."
        )
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------------------------
# folder:PATH — one sub-folder of images per class, like torchvision's ImageFolder


def _names(items: list[str], most: int = 5) -> str:
    """'a, b, c' -- the first `most` of a long list, then how many more."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


@functools.lru_cache(maxsize=2)
def _read_image_folder(root: str, fingerprint: Hashable):
    """Decode a whole image folder once: ((train images, labels), (test images, labels), names, mean, std)."""
    folder = Path(root)
    spec = f"folder:{root}"
    has_split = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_root = folder / "train" if has_split else folder
    classes = class_dirs(train_root, spec)
    if not classes:
        raise KdvizError(
            f"{spec} has no class sub-folders; put each class's images in its own sub-folder, "
            f"e.g. {train_root / 'cat' / '001.png'}."
        )
    class_names = tuple(c.name for c in classes)
    walk = _Walk(spec)  # one budget of files for the whole dataset
    per_class = [image_files(c, spec, walk) for c in classes]
    if not any(per_class):
        raise KdvizError(
            f"{spec} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders of {train_root}; add some."
        )
    empty = [c.name for c, files in zip(classes, per_class, strict=True) if not files]
    if empty:
        raise KdvizError(
            f"The class folder(s) {_names(empty)} in {train_root} hold no images; add images or remove them."
        )
    train_files = [(f, i) for i, files in enumerate(per_class) for f in files]
    test_files: list[tuple[Path, int]] = []
    if has_split:
        index = {name: i for i, name in enumerate(class_names)}
        test_classes = class_dirs(folder / "test", spec)
        extra = [c.name for c in test_classes if c.name not in index]
        if extra:
            raise KdvizError(
                f"{folder / 'test'} has classes {_names(extra)} that {train_root} lacks; give both the same class folders."
            )
        test_files = [(f, index[c.name]) for c in test_classes for f in image_files(c, spec, walk)]

    all_files = train_files + test_files
    arrays, gray, size = decode_images([f for f, _ in all_files])
    images = stack_images(arrays, rgb=not all(gray), size=size)
    labels = np.array([label for _, label in all_files], dtype=np.int64)
    n_train = len(train_files)
    if has_split:
        train = (images[:n_train], labels[:n_train])
        test = (images[n_train:], labels[n_train:])
    else:
        train_idx, test_idx = _stratified_carve(labels, fraction=TEST_FRACTION)
        train, test = (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
    mean, std = _channel_stats(train[0])
    return train, test, class_names, mean, std


@register_dataset("folder:PATH")
def _load_folder(path: str | None, part: str, download: bool) -> DatasetSource:
    """One sub-folder per class; PATH/train + PATH/test when both exist, else a seeded 20% test carve-out."""
    folder = user_path(path or "")
    if not folder.is_dir():
        raise KdvizError(
            f"folder:{path}: {folder} is not a folder; give a folder with one sub-folder of images per class."
        )
    resolved = str(folder.resolve())
    train, test, class_names, mean, std = _read_image_folder(resolved, _files_fingerprint(resolved))
    images, labels = test if part == "test" else train
    return DatasetSource(images, labels, class_names, mean, std)


# --------------------------------------------------------------------------------------------
# idx:PATH — registered last so list_datasets() ends with the two path specs, folder then idx


@register_dataset("idx:PATH", cache_key=functools.partial(_files_fingerprint, recursive=False))
def _load_idx(path: str | None, part: str, download: bool) -> DatasetSource:
    """A folder of MNIST-family IDX files; each part loads when its two files are there."""
    folder = user_path(path or "")
    if not folder.is_dir():
        raise KdvizError(
            f"idx:{path}: {folder} is not a folder; give the folder that holds the IDX files."
        )
    loaded = _read_idx_part(folder, part)
    if loaded is None:
        raise KdvizError(_missing_idx_message(folder, part, f"idx:{path}"))
    images, labels = loaded
    other = "train" if part == "test" else "test"
    other_labels = _read_idx_labels(folder, IDX_FILES[other][1])
    train_images = images if part == "train" else _read_idx_images(folder, IDX_FILES["train"][0])
    # MNIST-family files hold 10 classes; more when the labels say so (e.g. EMNIST letters)
    max_label = max([9, int(labels.max(initial=0)), int(other_labels.max(initial=0))])
    mean, std = _channel_stats(train_images if train_images is not None else images)
    return DatasetSource(images, labels, tuple(str(i) for i in range(max_label + 1)), mean, std)
