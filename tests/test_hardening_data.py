"""Hostile and careless data: every bomb, loop and tiny class ends in one KdvizError sentence.

Limits are lowered with monkeypatch so each fixture stays a few kilobytes.
"""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdviz import data, datafiles
from kdviz.errors import KdvizError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic 0x0000 08 NDIM, big-endian uint32 dims, uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def image_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (4, 5)) -> Path:
    """root/CLASS/NN.png, each image different (its index in its pixels)."""
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        for i in range(count):
            save_png(root / name / f"{i:02d}.png", rng.integers(0, 256, size, dtype=np.uint8))
    return root


def one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and text.endswith(".")
    return text


# --------------------------------------------------------------------------------------------
# IDX


def test_idx_header_whose_shape_overflows_int64_is_refused_before_reading(tmp_path):
    file = tmp_path / "huge-idx3-ubyte"
    # 3 dims of 2^32 - 1: 2^96 bytes, which np.prod(dtype=int64) would wrap around
    file.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + b"\0" * 64)
    with pytest.raises(KdvizError, match="over kdviz's limit of 2,048 MiB") as err:
        data.read_idx(file)
    assert "(4294967295, 4294967295, 4294967295)" in one_sentence(err)


def test_idx_over_the_byte_budget_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", 1000)
    file = tmp_path / "x-idx3-ubyte"
    file.write_bytes(idx_bytes(np.zeros((2, 28, 28))))  # 1,568 data bytes
    with pytest.raises(KdvizError, match="1,568 bytes"):
        data.read_idx(file)
    file.write_bytes(idx_bytes(np.zeros((1, 28, 28))))  # 784: under the budget
    assert data.read_idx(file).shape == (1, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_empty_and_truncated_idx_files(tmp_path, gz):
    def write(name: str, payload: bytes) -> Path:
        file = tmp_path / (name + (".gz" if gz else ""))
        file.write_bytes(gzip.compress(payload) if gz else payload)
        return file

    with pytest.raises(KdvizError, match="is empty") as err:
        data.read_idx(write("empty", b""))
    one_sentence(err)
    with pytest.raises(KdvizError, match="truncated inside its header"):
        data.read_idx(write("header", bytes([0, 0, 8, 3]) + b"\0\0\0\x05"))
    whole = idx_bytes(np.ones((4, 5, 7)))
    with pytest.raises(KdvizError, match=r"truncated \(100 of 140 data bytes"):
        data.read_idx(write("data", whole[:-40]))


def test_idx_folder_with_zero_images_says_so(tmp_path):
    write_idx_pair(tmp_path, np.zeros((0, 5, 7)), np.zeros(0))
    with pytest.raises(KdvizError, match="holds no images") as err:
        data.load_dataset(f"idx:{tmp_path}")
    one_sentence(err)


def test_idx_label_over_the_class_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_CLASSES", 50)
    write_idx_pair(tmp_path, np.zeros((3, 5, 7)), np.array([0, 1, 77]))
    with pytest.raises(KdvizError, match="label 77, over kdviz's limit of 50 classes"):
        data.load_dataset(f"idx:{tmp_path}")


def test_idx_over_the_image_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_IMAGES", 3)
    write_idx_pair(tmp_path, np.zeros((4, 2, 2)), np.zeros(4))
    with pytest.raises(KdvizError, match="holds 4 images, over kdviz's limit of 3 per file"):
        data.load_dataset(f"idx:{tmp_path}")


class CountingGzip(gzip.GzipFile):
    unpacked = 0

    def read(self, size=-1):
        out = super().read(size)
        CountingGzip.unpacked += len(out)
        return out


def test_gzip_bomb_unpacks_only_what_the_header_declares(tmp_path, monkeypatch):
    """A small .gz whose stream unpacks to far more than its header declares: only the declared
    bytes are unpacked; a header that declares more than the budget is refused unread."""
    monkeypatch.setattr(datafiles.gzip, "open", lambda file, mode: CountingGzip(file, mode))
    images = np.arange(4 * 5 * 7).reshape(4, 5, 7) % 256
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(idx_bytes(images) + b"\0" * 20_000_000, compresslevel=1))
    assert bomb.stat().st_size < 100_000  # about a thousandth of what it unpacks to
    CountingGzip.unpacked = 0
    parsed = data.read_idx(bomb)
    assert np.array_equal(parsed, images)
    assert CountingGzip.unpacked == 4 + 12 + 140  # magic, dims, data: not one byte of the tail

    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", 1_000_000)
    liar = tmp_path / "liar-idx3-ubyte.gz"
    payload = bytes([0, 0, 8, 3]) + struct.pack(">3I", 20_000, 28, 28)  # 15.7 MB declared
    liar.write_bytes(gzip.compress(payload + b"\0" * 15_680_000, compresslevel=1))
    CountingGzip.unpacked = 0
    with pytest.raises(KdvizError, match="15,680,000 bytes.*over kdviz's limit of 1 MiB"):
        data.read_idx(liar)
    assert CountingGzip.unpacked == 16  # the header only


# --------------------------------------------------------------------------------------------
# folder: images


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_IMAGE_PIXELS", 100)
    image_folder(tmp_path, {"a": 3, "b": 3}, size=(10, 10))
    save_png(tmp_path / "b" / "big.png", np.zeros((11, 10), dtype=np.uint8))
    with pytest.raises(KdvizError, match="10 x 11 pixels, over kdviz's limit of 100 pixels") as err:
        data.load_dataset(f"folder:{tmp_path}")
    assert "big.png" in one_sentence(err)


@pytest.mark.parametrize("pil_limit", [60, 40])  # 100 pixels: over 1x (warning) / 2x (error)
def test_pil_decompression_bomb_warning_and_error_become_a_sentence(
    tmp_path, monkeypatch, pil_limit
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    image_folder(tmp_path, {"a": 3, "b": 3}, size=(10, 10))
    with pytest.raises(KdvizError, match="too large to decode safely") as err:
        data.load_dataset(f"folder:{tmp_path}")
    one_sentence(err)


def test_unreadable_images_are_a_sentence_whatever_the_decoder_raises(tmp_path, monkeypatch):
    import struct as struct_module

    image_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(KdvizError, match="Could not read the image .*zz.png") as err:
        data.load_dataset(f"folder:{tmp_path}")
    one_sentence(err)
    (tmp_path / "a" / "zz.png").unlink()

    def broken_load(self):  # a decoder tripping over a malformed file in its own way
        raise struct_module.error("unpack requires a buffer of 4 bytes")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(KdvizError, match="error: unpack requires a buffer"):
        data.load_dataset(f"folder:{tmp_path}")


def test_total_decoded_bytes_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", 500)
    image_folder(tmp_path, {"a": 15, "b": 15}, size=(4, 5))  # 30 x 20 bytes = 600
    with pytest.raises(
        KdvizError, match="30 images of 5 x 4 pixels need 0 MiB, over kdviz's limit"
    ):
        data.load_dataset(f"folder:{tmp_path}")
    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", 600)
    assert len(data.load_dataset(f"folder:{tmp_path}", "test")) == 6


def test_dangling_symlink_is_skipped(tmp_path):
    image_folder(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "ghost.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "c").symlink_to(tmp_path / "no-such-class")  # a dangling class folder
    splits = [data.load_dataset(f"folder:{tmp_path}", s) for s in data.SPLITS]
    assert splits[0].class_names == ("a", "b")
    assert sum(len(ds) for ds in splits) == 10


def test_symlink_loop_is_walked_once(tmp_path):
    image_folder(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # a -> a/loop -> a ...
    (tmp_path / "b" / "up").symlink_to(tmp_path)  # b -> the whole dataset again
    start = time.monotonic()
    splits = [data.load_dataset(f"folder:{tmp_path}", s) for s in data.SPLITS]
    assert time.monotonic() - start < 10
    counts = np.bincount(np.concatenate([ds.labels.numpy() for ds in splits]))
    assert counts[0] == 5  # a's images once, not once per trip round the loop
    assert counts[1] == 10  # b's own 5, and a's 5 reached through b/up/a (a real second path)


def test_too_many_files_names_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_FOLDER_FILES", 12)
    image_folder(tmp_path, {"a": 7, "b": 7})
    with pytest.raises(KdvizError, match="more than 12 files") as err:
        data.load_dataset(f"folder:{tmp_path}")
    one_sentence(err)


def test_too_deep_and_too_many_classes_name_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_FOLDER_DEPTH", 2)
    deep = image_folder(tmp_path / "deep", {"a": 3, "b": 3})
    save_png(deep / "a" / "1" / "2" / "3" / "x.png", np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(KdvizError, match="more than 2 levels deep"):
        data.load_dataset(f"folder:{deep}")
    monkeypatch.setattr(datafiles, "MAX_CLASSES", 3)
    wide = image_folder(tmp_path / "wide", {"a": 1, "b": 1, "c": 1, "d": 1})
    with pytest.raises(KdvizError, match="more than 3 class sub-folders"):
        data.load_dataset(f"folder:{wide}")


@pytest.mark.parametrize("root", ["/etc", "/"])
def test_system_folders_end_in_a_sentence_quickly(root, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_FOLDER_FILES", 5_000)  # the real limit takes seconds longer
    start = time.monotonic()
    with pytest.raises(KdvizError) as err:
        data.load_dataset(f"folder:{root}")
    one_sentence(err)
    assert time.monotonic() - start < 20


# --------------------------------------------------------------------------------------------
# small classes


def test_small_classes_still_fill_every_split(tmp_path):
    image_folder(tmp_path, {"n1": 1, "n2": 2, "n3": 3, "n4": 4})
    train, val, test = (data.load_dataset(f"folder:{tmp_path}", s) for s in data.SPLITS)
    per_class = [np.bincount(ds.labels.numpy(), minlength=4).tolist() for ds in (train, val, test)]
    # every class keeps one in train; the 2-image class gives one to test; 3 and 4 give to both
    assert per_class == [[1, 1, 1, 2], [0, 0, 1, 1], [0, 1, 1, 1]]


def test_an_empty_split_is_a_sentence_not_an_index_error(tmp_path):
    image_folder(tmp_path, {"a": 1, "b": 1})
    assert len(data.load_dataset(f"folder:{tmp_path}", "train")) == 2
    for split in ("val", "test"):
        with pytest.raises(
            KdvizError, match=f"The {split} split of folder:.* has no images"
        ) as err:
            data.load_dataset(f"folder:{tmp_path}", split)
        one_sentence(err)


def test_training_on_a_folder_of_tiny_classes_runs(tmp_path):
    from kdviz.engine import TrainConfig, fit

    image_folder(tmp_path / "imgs", {"a": 3, "b": 4, "c": 2})
    cfg = TrainConfig(
        dataset=f"folder:{tmp_path / 'imgs'}",
        arch="mlp-8",
        epochs=1,
        batch_size=4,
        eval_split="val",
        device="cpu",
        out=str(tmp_path / "ck" / "tiny"),
    )
    result = fit(cfg, save=False)
    assert result.status == "done" and 0.0 <= result.metrics["accuracy"] <= 1.0


def test_bounded_walk_keeps_the_fingerprint_order(tmp_path):
    image_folder(tmp_path, {"b": 2, "a": 2})
    (tmp_path / "a" / "sub").mkdir()
    save_png(tmp_path / "a" / "sub" / "z.png", np.zeros((4, 5), dtype=np.uint8))
    names = [str(entry[0]) for entry in data._files_fingerprint(str(tmp_path))[1:]]
    expected = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs
    )
    assert names == ["a/00.png", "a/01.png", "a/sub/z.png", "b/00.png", "b/01.png"]
    assert sorted(names) == expected


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("/tmp/a\x00b", "not a usable path"),  # a NUL byte: os.stat would raise ValueError
        ("x" * 5000, "not a usable path"),  # over PATH_MAX
        ("/" + "y" * 300, "not a usable path"),  # a name over 255 bytes: ENAMETOOLONG
        ("~no-such-user-kdviz/x", "unknown ~user"),
    ],
)
@pytest.mark.parametrize("kind", ["folder", "idx"])
def test_unusable_paths_are_a_sentence(kind, path, match, monkeypatch):
    for roots in (None, ""):
        if roots is None:
            monkeypatch.delenv(data.DATA_ROOTS_ENV, raising=False)
        else:
            monkeypatch.setenv(data.DATA_ROOTS_ENV, roots)
        with pytest.raises(KdvizError, match=match) as err:
            data.load_dataset(f"{kind}:{path}")
        one_sentence(err)


# --------------------------------------------------------------------------------------------
# which folders the web app may read


def test_data_roots_unset_means_unrestricted_and_set_means_home_plus_listed(
    tmp_path, monkeypatch, kdviz_home
):
    image_folder(tmp_path / "outside", {"a": 3, "b": 3})
    image_folder(tmp_path / "allowed" / "set", {"a": 3, "b": 3})
    monkeypatch.delenv(data.DATA_ROOTS_ENV, raising=False)
    assert data.data_roots() is None
    data.check_data_root(f"folder:{tmp_path / 'outside'}")  # the CLI and library: anything

    monkeypatch.setenv(data.DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    assert data.data_roots() == [kdviz_home.resolve(), (tmp_path / "allowed").resolve()]
    for spec in (f"folder:{tmp_path / 'outside'}", "idx:/etc", "folder:/", f"folder:{tmp_path}"):
        with pytest.raises(KdvizError, match="kdviz app --data DIR.*is not among them") as err:
            data.load_dataset(spec)
        one_sentence(err)
    assert len(data.load_dataset(f"folder:{tmp_path / 'allowed' / 'set'}")) > 0
    uploads = image_folder(kdviz_home / "uploads" / "abc" / "images", {"a": 3, "b": 3})
    assert len(data.load_dataset(f"folder:{uploads}")) > 0  # KDVIZ_HOME is always allowed
    data.check_data_root("digits")  # named datasets are not folders: nothing to check
    data.check_data_root("logits:whatever")  # not a data spec at all: left to its own loader


def test_a_symlink_out_of_an_allowed_root_is_refused(tmp_path, monkeypatch, kdviz_home):
    image_folder(tmp_path / "secret", {"a": 3, "b": 3})
    (kdviz_home / "link").symlink_to(tmp_path / "secret")
    monkeypatch.setenv(data.DATA_ROOTS_ENV, "")
    with pytest.raises(KdvizError, match="is not among them"):
        data.load_dataset(f"folder:{kdviz_home / 'link'}")


def test_kdviz_app_sets_the_roots_from_data_and_address(tmp_path, monkeypatch):
    from kdviz.ui import launch

    monkeypatch.setenv(data.DATA_ROOTS_ENV, "")  # so that the teardown undoes what launch sets
    monkeypatch.delenv(data.DATA_ROOTS_ENV)
    assert launch.restrict_data("127.0.0.1", []) is None and data.DATA_ROOTS_ENV not in os.environ
    for address in ("0.0.0.0", "192.168.1.5", "::"):
        monkeypatch.delenv(data.DATA_ROOTS_ENV, raising=False)
        assert "only under KDVIZ_HOME" in launch.restrict_data(address, [])
        assert os.environ[data.DATA_ROOTS_ENV] == ""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    note = launch.restrict_data("0.0.0.0", [str(tmp_path / "a"), str(tmp_path / "b")])
    assert os.environ[data.DATA_ROOTS_ENV].split(os.pathsep) == [
        str((tmp_path / "a").resolve()),
        str((tmp_path / "b").resolve()),
    ]
    assert str(tmp_path / "b") in note
    with pytest.raises(KdvizError, match="--data .*missing is not a folder"):
        launch.restrict_data("127.0.0.1", [str(tmp_path / "missing")])


def test_kdviz_app_data_that_is_not_a_folder_exits_2(tmp_path, capsys, monkeypatch):
    from kdviz import cli

    monkeypatch.setenv(data.DATA_ROOTS_ENV, "")  # so that the teardown undoes what launch sets
    monkeypatch.delenv(data.DATA_ROOTS_ENV)
    assert cli.main(["app", "--data", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_streamlit_settings_travel_as_flags():
    from kdviz.ui.launch import config_flags

    flags = config_flags()
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs["--client.showErrorDetails"] == "none"  # no tracebacks or paths in the page
    assert pairs["--server.maxUploadSize"] == "200"
    assert pairs["--server.enableXsrfProtection"] == "true"
    assert pairs["--server.enableCORS"] == "true"
    assert pairs["--server.fileWatcherType"] == "none"
    import streamlit.config as st_config  # every option exists in the installed Streamlit

    options = st_config.get_config_options()
    assert all(flag[2:] in options for flag in pairs)


@pytest.fixture
def app_home(kdviz_home, tmp_path, monkeypatch):
    import streamlit as st

    from kdviz import models, paths

    empty = tmp_path / "no_pretrained"
    empty.mkdir()
    monkeypatch.setattr(paths, "PRETRAINED_DIR", empty)
    for name in ("t", "s"):  # untrained: the test is about which folders are read, not accuracy
        card = models.ModelCard(name=name, arch="mlp-8", num_classes=2, class_names=["a", "b"],
                                in_shape=[1, 8, 8], mean=[0.5], std=[0.25], dataset="digits")  # fmt: skip
        model = models.create_model("mlp-8", 2, (1, 8, 8))
        models.save_checkpoint(model, card, paths.checkpoints_dir() / name)
    st.cache_data.clear()
    st.cache_resource.clear()
    return kdviz_home


def test_the_app_refuses_a_folder_from_the_url_or_the_box_outside_the_roots(
    app_home, tmp_path, monkeypatch
):
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "app.py")
    outside = image_folder(tmp_path / "outside", {"a": 3, "b": 3}, size=(8, 8))
    read = []
    real = data._read_image_folder
    monkeypatch.setattr(data, "_read_image_folder", lambda *a: read.append(a) or real(*a))
    monkeypatch.setenv(data.DATA_ROOTS_ENV, "")

    at = AppTest.from_file(app, default_timeout=60)
    at.query_params["dataset"] = f"folder:{outside}"
    at.run()
    assert not at.exception
    assert any("is not among them" in e.value for e in at.error)
    at.text_input(key="dataset_custom").input("folder:/etc").run()
    assert not at.exception
    assert any("/etc is not among them" in e.value for e in at.error)
    assert read == []  # refused before a single file was read

    monkeypatch.setenv(data.DATA_ROOTS_ENV, str(tmp_path))  # `kdviz app --data TMP`
    at = AppTest.from_file(app, default_timeout=60)
    at.query_params["dataset"] = f"folder:{outside}"
    at.run()
    assert not at.exception and read  # allowed: the folder was read
    assert not any("is not among them" in e.value for e in at.error)
