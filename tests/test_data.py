"""Tests for kdviz/data.py: every loader, on small files written here (nothing touches the network)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdviz import data, paths
from kdviz.errors import KdvizError

# ---------------------------------------------------------------------------------------------
# helpers that write files in the real formats, independently of the code under test


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x0000TTDD, big-endian uint32 dims, big-endian data; gzip when the name ends .gz."""
    array = np.asarray(array)
    code = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fake_digits(n: int, seed: int, height: int = 5, width: int = 7, classes: int = 10):
    """(n, H, W) uint8 random images and labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, height, width), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    return images, labels


def write_idx_split(folder: Path, prefix: str, images, labels, gz: bool) -> None:
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)


def rows(images: torch.Tensor) -> list[bytes]:
    """Each image as bytes, to compare splits as sets without knowing indices."""
    return [img.numpy().tobytes() for img in images]


def assert_partition(train, val, whole_images: np.ndarray) -> None:
    """train and val are disjoint and together hold exactly the images of `whole_images`."""
    train_rows, val_rows = rows(train.images), rows(val.images)
    assert not set(train_rows) & set(val_rows)
    assert sorted(train_rows + val_rows) == sorted(img.tobytes() for img in whole_images)


def expected_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on [0, 1] of (N, C, H, W) uint8, the plain float way, rounded like the loader."""
    x = images.astype(np.float64) / 255.0
    mean = tuple(round(float(v), 4) for v in x.mean(axis=(0, 2, 3)))
    std = tuple(round(float(v), 4) for v in x.std(axis=(0, 2, 3)))
    return mean, std


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket fails, as it would offline."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled by the test")

    def refuse_socket(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse_socket)
    monkeypatch.setattr(socket, "create_connection", refuse_socket)


# ---------------------------------------------------------------------------------------------
# registry, specs, splits


def test_list_datasets_matches_the_contract():
    assert data.list_datasets() == [
        "digits", "mnist5k", "mnist", "fashion-mnist", "kmnist",
        "cifar10", "cifar100", "folder:PATH", "idx:PATH",
    ]  # fmt: skip


@pytest.mark.parametrize("spec", ["imagenet", "", "mnist-5k", "folderx:/tmp"])
def test_unknown_spec_lists_the_valid_ones(spec):
    with pytest.raises(KdvizError) as info:
        data.load_dataset(spec)
    message = str(info.value)
    assert "Unknown dataset" in message
    for valid in data.list_datasets():
        assert valid in message


def test_unknown_split_lists_the_valid_ones():
    with pytest.raises(
        KdvizError, match=r"Unknown split 'validation'; use one of: train, val, test"
    ):
        data.load_dataset("mnist5k", "validation")


def test_path_spec_needs_a_path_and_fixed_spec_takes_none():
    with pytest.raises(KdvizError, match="folder:PATH"):
        data.load_dataset("folder:")
    with pytest.raises(KdvizError, match="takes no path"):
        data.load_dataset("mnist5k:/somewhere")


def test_register_dataset_adds_a_loadable_spec(monkeypatch):
    monkeypatch.setattr(data, "_REGISTRY", dict(data._REGISTRY))  # undone after the test
    images = np.arange(20 * 4, dtype=np.uint8).reshape(20, 1, 2, 2)
    labels = np.repeat(np.arange(2), 10)

    @data.register_dataset("toy")
    def load_toy(path, part, download):
        assert path is None and part in ("train", "test")
        chosen = slice(0, 16) if part == "train" else slice(16, 20)
        return data.DatasetSource(images[chosen], labels[chosen], ("a", "b"), (0.5,), (0.25,))

    assert data.list_datasets()[-1] == "toy"
    test = data.load_dataset("toy", "test")
    assert torch.equal(test.images, torch.from_numpy(images[16:]))
    assert test.class_names == ("a", "b") and test.mean == (0.5,) and test.std == (0.25,)
    # val: 10% of each class of the 16 training images (10 of class 0, 6 of class 1) -> 1 + 1
    train, val = data.load_dataset("toy", "train"), data.load_dataset("toy", "val")
    assert len(val) == 2 and sorted(val.labels.tolist()) == [0, 1]
    assert_partition(train, val, images[:16])


def test_stratified_carve_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 20, 31, 1])
    kept, carved = data._stratified_carve(labels, fraction=0.1)
    # round(0.1 * n) per class, but a class never loses its only image
    assert np.bincount(labels[carved], minlength=4).tolist() == [1, 2, 3, 0]
    assert not set(kept) & set(carved) and len(kept) + len(carved) == len(labels)
    assert (np.diff(kept) > 0).all() and (np.diff(carved) > 0).all()
    again = data._stratified_carve(labels, fraction=0.1)
    assert np.array_equal(kept, again[0]) and np.array_equal(carved, again[1])
    other_seed = data._stratified_carve(labels, fraction=0.5, seed=1)[1]
    assert not np.array_equal(data._stratified_carve(labels, fraction=0.5)[1], other_seed)
    _, per_class = data._stratified_carve(labels, per_class=5)
    assert np.bincount(labels[per_class], minlength=4).tolist() == [5, 5, 5, 1]


# ---------------------------------------------------------------------------------------------
# Dataset and normalize


def make_dataset(images: torch.Tensor, mean, std) -> data.Dataset:
    labels = torch.zeros(len(images), dtype=torch.int64)
    return data.Dataset("toy", "train", images, labels, ("a", "b", "c"), tuple(mean), tuple(std))


def test_dataset_properties_and_frozen():
    images = torch.zeros(4, 3, 5, 6, dtype=torch.uint8)
    ds = make_dataset(images, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert ds.num_classes == 3 and ds.in_shape == (3, 5, 6) and len(ds) == 4
    assert "n=4" in repr(ds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.split = "test"  # type: ignore[misc]


def test_normalize_matches_the_formula_per_channel():
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    out = data.normalize(images, (0.5, 0.2), (0.25, 0.1))
    expected = torch.tensor([[[[(0 - 0.5) / 0.25, (1 - 0.5) / 0.25]], [[0.0, (0.4 - 0.2) / 0.1]]]])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_normalize_float_input_equals_uint8_and_is_not_mutated():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 4, 4), dtype=np.uint8))
    floats = images.float()
    before = floats.clone()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    torch.testing.assert_close(data.normalize(floats, mean, std), data.normalize(images, mean, std))
    assert torch.equal(floats, before)
    single = data.normalize(images[0], mean, std)  # (C, H, W) works too
    torch.testing.assert_close(single, data.normalize(images, mean, std)[0])


def test_normalize_rejects_a_channel_mismatch():
    with pytest.raises(KdvizError, match="3 channel"):
        data.normalize(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), (0.1, 0.2), (0.3, 0.3))


def test_dataset_normalized_uses_its_mean_and_std():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    ds = make_dataset(images, (0.1307,), (0.3081,))
    expected = (torch.tensor([[[[0, 128, 255]]]]) / 255.0 - 0.1307) / 0.3081
    torch.testing.assert_close(ds.normalized(), expected)
    torch.testing.assert_close(ds.normalized(device="cpu"), expected)


# ---------------------------------------------------------------------------------------------
# bundled datasets: mnist5k and digits


def _sha(images: torch.Tensor) -> str:
    return hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]


def test_mnist5k_splits_sizes_disjoint_and_stratified():
    train, val, test = (data.load_dataset("mnist5k", s) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (4000, 500, 500)
    for ds in (train, val, test):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert ds.labels.dtype == torch.int64
        assert ds.class_names == tuple("0123456789")
        assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert test.labels.bincount(minlength=10).tolist() == [50] * 10
    assert val.labels.bincount(minlength=10).tolist() == [50] * 10
    assert train.labels.bincount(minlength=10).tolist() == [400] * 10
    train_rows, val_rows, test_rows = (set(rows(ds.images)) for ds in (train, val, test))
    assert len(train_rows | val_rows | test_rows) == 5000  # disjoint, and nothing lost
    with np.load(paths.PACKAGE_DATA_DIR / "mnist5k.npz") as npz:
        assert npz["images"].dtype == np.uint8 and npz["images"].shape == (5000, 28, 28)
        assert train_rows | val_rows | test_rows == {
            img.tobytes() for img in npz["images"][:, None]
        }
    # real digits: mostly-black background, ink up to 255
    assert test.images.max() == 255 and (test.images == 0).float().mean() > 0.7


def test_mnist5k_splits_are_deterministic_and_pinned():
    first = {s: data.load_dataset("mnist5k", s) for s in ("val", "test")}
    data._cached_dataset.cache_clear()
    data._cached_source.cache_clear()
    for split, ds in first.items():
        again = data.load_dataset("mnist5k", split)
        assert again is not ds  # really recomputed
        assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)
    # fixed forever: if numpy's Generator stream or the bundled file changed, these would move
    assert _sha(first["test"].images) == PINNED_MNIST5K_TEST
    assert _sha(first["val"].images) == PINNED_MNIST5K_VAL


PINNED_MNIST5K_TEST = "a348bc39c80869f4"
PINNED_MNIST5K_VAL = "a9a0a9a8489c2e34"


def test_load_dataset_is_cached_in_process():
    assert data.load_dataset("mnist5k", "train") is data.load_dataset("mnist5k", "train")


def test_digits_scaled_and_split():
    from sklearn.datasets import load_digits

    raw = load_digits()
    expected = np.clip(raw.images * 16, 0, 255).astype(np.uint8)[:, None]
    train, val, test = (data.load_dataset("digits", s) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (1293, 145, 359)
    assert train.in_shape == (1, 8, 8) and train.class_names == tuple("0123456789")
    all_rows = rows(train.images) + rows(val.images) + rows(test.images)
    assert sorted(all_rows) == sorted(img.tobytes() for img in expected)
    all_labels = torch.cat([train.labels, val.labels, test.labels])
    assert all_labels.bincount().tolist() == np.bincount(raw.target).tolist()
    assert int(test.images.max()) == 255 and int(test.images.min()) == 0
    # about 20% of each class in test, 10% of the rest in val
    counts = np.bincount(raw.target)
    assert np.abs(test.labels.bincount().numpy() - 0.2 * counts).max() <= 1
    # statistics come from the training pool (train + val), not from the test images
    pool = np.concatenate([train.images.numpy(), val.images.numpy()])
    assert train.mean == test.mean == expected_stats(pool)[0]
    assert train.std == expected_stats(pool)[1]


# ---------------------------------------------------------------------------------------------
# idx:PATH


def test_idx_gz_and_plain_both_splits(tmp_path):
    train_images, train_labels = fake_digits(100, seed=1)
    test_images, test_labels = fake_digits(30, seed=2)
    write_idx_split(tmp_path, "train", train_images, train_labels, gz=True)
    write_idx_split(tmp_path, "t10k", test_images, test_labels, gz=False)
    spec = f"idx:{tmp_path}"
    train, val, test = (data.load_dataset(spec, s) for s in data.SPLITS)
    assert train.spec == spec and test.split == "test"
    assert (len(train), len(val), len(test)) == (90, 10, 30)
    assert train.in_shape == (1, 5, 7)  # (rows, cols) from the header, not transposed
    assert torch.equal(test.images, torch.from_numpy(test_images[:, None]))
    assert torch.equal(test.labels, torch.from_numpy(test_labels.astype(np.int64)))
    assert val.labels.bincount(minlength=10).tolist() == [1] * 10
    assert_partition(train, val, train_images[:, None])
    assert train.class_names == tuple("0123456789")
    # mean and std from the training file's images, the same for every split
    assert train.mean == test.mean == expected_stats(train_images[:, None])[0]
    assert val.std == expected_stats(train_images[:, None])[1]


def test_idx_train_only_and_test_only_folders(tmp_path):
    train_dir, test_dir = tmp_path / "train_only", tmp_path / "test_only"
    write_idx_split(train_dir, "train", *fake_digits(60, seed=3), gz=False)
    write_idx_split(test_dir, "t10k", *fake_digits(20, seed=4), gz=True)

    assert (
        len(data.load_dataset(f"idx:{train_dir}", "train")) == 50
    )  # 6 per class, 1 of each to val
    with pytest.raises(KdvizError) as info:
        data.load_dataset(f"idx:{train_dir}", "test")
    assert "t10k-images-idx3-ubyte" in str(info.value) and "t10k-labels-idx1-ubyte" in str(
        info.value
    )
    assert str(train_dir) in str(info.value)

    test = data.load_dataset(f"idx:{test_dir}", "test")
    assert len(test) == 20
    assert test.mean == expected_stats(test.images.numpy())[0]  # no training file: its own stats
    for split in ("train", "val"):
        with pytest.raises(KdvizError, match="train-images-idx3-ubyte.*train-labels-idx1-ubyte"):
            data.load_dataset(f"idx:{test_dir}", split)


def test_idx_missing_folder_and_bad_files(tmp_path):
    with pytest.raises(KdvizError, match="not a folder"):
        data.load_dataset(f"idx:{tmp_path / 'nope'}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x08\x03\x00\x00garbage")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(KdvizError, match="bad magic"):
        data.load_dataset(f"idx:{tmp_path}")
    images, labels = fake_digits(3, seed=5)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    with open(tmp_path / "train-images-idx3-ubyte", "r+b") as f:
        f.truncate(16 + 50)  # header + less than 3 * 35 bytes
    with pytest.raises(KdvizError, match="truncated"):
        data.load_dataset(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:2])
    with pytest.raises(KdvizError, match="3 images but .* 2 labels"):
        data.load_dataset(f"idx:{tmp_path}")


def test_read_idx_parses_big_endian_wider_types(tmp_path):
    values = np.array([[1, -2, 70000], [2**31 - 1, 0, -(2**31)]], dtype=np.int32)
    write_idx(tmp_path / "x.gz", values)
    parsed = data.read_idx(tmp_path / "x.gz")
    assert parsed.shape == (2, 3) and parsed.tolist() == values.tolist()


def test_idx_more_than_ten_classes_and_cache_invalidation(tmp_path):
    images, _ = fake_digits(26, seed=6)
    write_idx_split(tmp_path, "train", images, np.arange(26, dtype=np.uint8) % 13, gz=False)
    first = data.load_dataset(f"idx:{tmp_path}")
    assert first.num_classes == 13 and first.class_names[-1] == "12"
    assert data.load_dataset(f"idx:{tmp_path}") is first
    # rewriting the files (a different size) is noticed: no stale cache
    write_idx_split(tmp_path, "train", images[:20], np.arange(20, dtype=np.uint8) % 10, gz=False)
    second = data.load_dataset(f"idx:{tmp_path}")
    # 2 images per class: one of each goes to val, one stays in train
    assert second.num_classes == 10 and len(second) == 10


# ---------------------------------------------------------------------------------------------
# folder:PATH


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_without_split_carves_test_and_val(tmp_path):
    rng = np.random.default_rng(7)
    originals = {}
    for name in ("cat", "dog", "emu"):
        for i in range(10):
            img = rng.integers(0, 256, (6, 5), dtype=np.uint8)  # gray, H=6, W=5
            save_png(tmp_path / name / f"{i:02d}.png", img)
            originals[img.tobytes()] = name
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    spec = f"folder:{tmp_path}"
    train, val, test = (data.load_dataset(spec, s) for s in data.SPLITS)
    assert train.class_names == ("cat", "dog", "emu")
    assert train.in_shape == (1, 6, 5)
    # 20% of 10 per class -> 2 test; 10% of the remaining 8 -> 1 val; 7 train
    assert (len(train), len(val), len(test)) == (21, 3, 6)
    assert test.labels.bincount().tolist() == [2, 2, 2] and val.labels.bincount().tolist() == [
        1,
        1,
        1,
    ]
    everything = rows(train.images) + rows(val.images) + rows(test.images)
    assert sorted(everything) == sorted(originals)  # PNG is lossless: pixels survive exactly
    for ds in (train, val, test):  # every image keeps its folder's label
        for img, label in zip(ds.images, ds.labels, strict=True):
            assert originals[img.numpy().tobytes()] == ds.class_names[label]
    pool = np.concatenate([train.images.numpy(), val.images.numpy()])
    assert train.mean == expected_stats(pool)[0] and train.std == expected_stats(pool)[1]


def test_folder_with_train_test_rgb_and_resize(tmp_path):
    rng = np.random.default_rng(8)
    for split, n in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            for i in range(n):
                save_png(
                    tmp_path / split / name / f"{i}.png",
                    rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
                )
    special = np.full((4, 6, 3), (10, 20, 30), dtype=np.uint8)
    save_png(tmp_path / "test" / "b" / "9.png", special)
    save_png(
        tmp_path / "test" / "a" / "big.png", np.zeros((8, 12, 3), dtype=np.uint8)
    )  # gets resized
    spec = f"folder:{tmp_path}"
    train, test = data.load_dataset(spec, "train"), data.load_dataset(spec, "test")
    assert train.class_names == ("a", "b") and train.in_shape == (3, 4, 6) == test.in_shape
    assert len(test) == 6 and test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(train) + len(data.load_dataset(spec, "val")) == 8
    found = [img for img in test.images if img[:, 0, 0].tolist() == [10, 20, 30]]
    assert len(found) == 1 and (found[0].permute(1, 2, 0).numpy() == special).all()


def test_folder_mixed_gray_and_rgb_becomes_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    save_png(tmp_path / "x" / "0.png", gray)
    save_png(tmp_path / "x" / "1.png", gray)
    save_png(tmp_path / "y" / "0.png", np.zeros((3, 4, 3), dtype=np.uint8))
    save_png(tmp_path / "y" / "1.png", np.zeros((3, 4, 3), dtype=np.uint8))
    # 2 images per class: one each to train and test, none left for val
    splits = ("train", "test")
    everything = torch.cat([data.load_dataset(f"folder:{tmp_path}", s).images for s in splits])
    assert everything.shape == (4, 3, 3, 4)
    gray_rgb = [img for img in everything if img.any()]
    assert len(gray_rgb) == 2
    for img in gray_rgb:  # a gray image becomes three equal channels
        assert all(torch.equal(img[c], torch.from_numpy(gray)) for c in range(3))


def test_folder_errors(tmp_path):
    with pytest.raises(KdvizError, match="not a folder"):
        data.load_dataset(f"folder:{tmp_path / 'missing'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KdvizError, match="no class sub-folders"):
        data.load_dataset(f"folder:{empty}")
    (empty / "cat").mkdir()
    (empty / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(KdvizError, match="no images"):
        data.load_dataset(f"folder:{empty}")
    save_png(empty / "dog" / "0.png", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(KdvizError, match="cat .*hold no images"):
        data.load_dataset(f"folder:{empty}")
    (empty / "cat" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(KdvizError, match="broken.png"):
        data.load_dataset(f"folder:{empty}")


# ---------------------------------------------------------------------------------------------
# torchvision datasets, from files in torchvision's on-disk layout under KDVIZ_HOME/data


@pytest.mark.parametrize(
    ("spec", "folder", "first_class", "mean", "gz"),
    [
        ("mnist", "MNIST", "0", 0.1307, True),
        ("fashion-mnist", "FashionMNIST", "T-shirt/top", 0.2860, False),
        ("kmnist", "KMNIST", "o", 0.1918, True),
    ],
)
def test_mnist_family_reads_torchvision_layout(spec, folder, first_class, mean, gz, no_network):
    raw = paths.data_dir() / folder / "raw"
    train_images, train_labels = fake_digits(200, seed=9, height=28, width=28)
    test_images, test_labels = fake_digits(50, seed=10, height=28, width=28)
    write_idx_split(raw, "train", train_images, train_labels, gz=gz)
    write_idx_split(raw, "t10k", test_images, test_labels, gz=gz)
    train, val, test = (data.load_dataset(spec, s, download=False) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (180, 20, 50)
    assert torch.equal(test.images, torch.from_numpy(test_images[:, None]))
    assert torch.equal(test.labels, torch.from_numpy(test_labels.astype(np.int64)))
    assert_partition(train, val, train_images[:, None])
    assert train.class_names[0] == first_class and train.num_classes == 10
    assert train.mean == (mean,) and train.in_shape == (1, 28, 28)


def test_torchvision_uses_the_current_data_dir(monkeypatch, tmp_path):
    """The cache must not hand back one KDVIZ_HOME's files after KDVIZ_HOME moved."""
    for home, seed in ((tmp_path / "a", 11), (tmp_path / "b", 12)):
        monkeypatch.setenv("KDVIZ_HOME", str(home))
        images, labels = fake_digits(10, seed=seed, height=28, width=28)
        write_idx_split(paths.data_dir() / "MNIST" / "raw", "t10k", images, labels, gz=False)
        loaded = data.load_dataset("mnist", "test", download=False)
        assert torch.equal(loaded.images, torch.from_numpy(images[:, None]))


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """A CIFAR python batch: dict with 'data' (N, 3072) uint8, rows in CHW order, and a label list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "batch_label": "fake",
        "data": images.reshape(len(images), -1),
        label_key: labels.tolist(),
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def fake_cifar(n: int, seed: int, classes: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), np.arange(n) % classes


def test_cifar10_reads_the_python_batches(no_network):
    folder = paths.data_dir() / "cifar-10-batches-py"
    train_parts = [fake_cifar(20, seed=20 + i, classes=10) for i in range(5)]
    for i, (images, labels) in enumerate(train_parts, start=1):
        write_cifar_batch(folder / f"data_batch_{i}", images, labels, "labels")
    test_images, test_labels = fake_cifar(30, seed=30, classes=10)
    write_cifar_batch(folder / "test_batch", test_images, test_labels, "labels")

    train, val, test = (data.load_dataset("cifar10", s, download=False) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (90, 10, 30)
    assert test.in_shape == (3, 32, 32)
    assert torch.equal(test.images, torch.from_numpy(test_images))  # channels-first, not HWC
    assert test.labels.tolist() == test_labels.tolist()
    assert_partition(train, val, np.concatenate([images for images, _ in train_parts]))
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)


def test_cifar100_reads_fine_labels(no_network):
    folder = paths.data_dir() / "cifar-100-python"
    train_images, train_labels = fake_cifar(200, seed=40, classes=100)
    test_images, test_labels = fake_cifar(100, seed=41, classes=100)
    write_cifar_batch(folder / "train", train_images, train_labels, "fine_labels")
    write_cifar_batch(folder / "test", test_images, test_labels, "fine_labels")
    train, test = (
        data.load_dataset("cifar100", download=False),
        data.load_dataset("cifar100", "test", download=False),
    )
    assert len(train) == 100 and len(test) == 100  # 2 per class: 1 carved for val, 1 kept
    assert torch.equal(test.images, torch.from_numpy(test_images))
    assert train.num_classes == 100 and train.class_names[:2] == ("apple", "aquarium_fish")
    assert list(train.class_names) == sorted(
        train.class_names
    )  # CIFAR-100 fine labels are alphabetical


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_cifar_batch_with_code_is_refused_and_not_run(tmp_path, no_network):
    folder = paths.data_dir() / "cifar-100-python"
    marker = tmp_path / "pwned"
    folder.mkdir(parents=True)
    with open(folder / "test", "wb") as f:
        pickle.dump({"data": _Exploit(marker), "fine_labels": [0]}, f)
    with pytest.raises(KdvizError, match="not a readable CIFAR batch"):
        data.load_dataset("cifar100", "test", download=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("spec", "where", "files"),
    [
        ("mnist", "MNIST/raw", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
        ("fashion-mnist", "FashionMNIST/raw", ["train-labels-idx1-ubyte.gz"]),
        ("cifar10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"]),
        ("cifar100", "cifar-100-python", ["train", "test"]),
    ],
)
def test_offline_download_fails_with_folder_and_files(spec, where, files, no_network):
    with pytest.raises(KdvizError) as info:
        data.load_dataset(spec, "test")  # download allowed: torchvision tries, the network refuses
    message = str(info.value)
    assert message.startswith(f"Could not download {spec}")
    assert str(paths.data_dir() / where) in message
    for name in files:
        assert name in message


def test_no_download_allowed_names_folder_without_trying(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(data, "_download_torchvision", fail)
    with pytest.raises(KdvizError) as info:
        data.load_dataset("kmnist", "train", download=False)
    assert str(paths.data_dir() / "KMNIST" / "raw") in str(info.value)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_download_then_load(monkeypatch):
    """When files are missing, the torchvision download runs once and its files are then read."""
    calls = []
    images, labels = fake_digits(20, seed=50, height=28, width=28)

    def fake_download(info, spec):
        calls.append(spec)
        raw = paths.data_dir() / info.class_name / "raw"
        write_idx_split(raw, "train", images, labels, gz=True)
        write_idx_split(raw, "t10k", images, labels, gz=True)

    monkeypatch.setattr(data, "_download_torchvision", fake_download)
    test = data.load_dataset("mnist", "test")
    assert calls == ["mnist"] and torch.equal(test.images, torch.from_numpy(images[:, None]))
    data.load_dataset("mnist", "train")  # files now present: no second download
    assert calls == ["mnist"]
