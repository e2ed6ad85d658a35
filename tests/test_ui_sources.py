"""The explorer's data and model sources: uploads ("Your own data"), checkpoint pickers that list
only what fits the data, links that reopen an upload, and views made of logits alone.

Uploads are built here from the bundled `digits` images (8x8 gray PNGs); the tiny checkpoints
of tests/e2e/kdviz_tiny.py fit them. Library functions are tested directly, the widgets with
AppTest (which drives st.file_uploader).
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from e2e.kdviz_tiny import STUDENT, TEACHER
from PIL import Image
from streamlit.testing.v1 import AppTest

from kdviz import data, engine, models, paths, soft
from kdviz.errors import KdvizError
from kdviz.ui import own_data

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_zip(classes: int = 10, per_class: int = 8, wrap: str = "mydigits/") -> bytes:
    """A zip of one folder per digit (8x8 gray PNGs from `digits`), inside one wrapping folder."""
    ds = data.load_dataset("digits", "test")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in range(classes):
            for n, index in enumerate(torch.nonzero(ds.labels == label)[:per_class, 0]):
                image = ds.images[int(index), 0].numpy()
                archive.writestr(f"{wrap}{label}/img{n:02d}.png", _png(image))
        archive.writestr(f"{wrap}.DS_Store", b"junk")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return buffer.getvalue()


def _app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _chart_keys(at: AppTest) -> set[str]:
    return {c.key for c in at.get("plotly_chart")}


def _bars(at: AppTest, name: str) -> list[float]:
    from test_ui import _chart, _trace

    return _trace(_chart(at, "soft_bars"), name)["y"]


def _save_untrained(name: str, num_classes: int, in_shape, dataset: str = "") -> None:
    """A checkpoint that only has to be listed and loaded (its numbers are not judged)."""
    torch.manual_seed(0)
    model = models.create_model("mlp-8", num_classes, in_shape)
    card = models.ModelCard(
        name=name, arch="mlp-8", num_classes=num_classes, in_shape=list(in_shape),
        mean=[0.5] * in_shape[0], std=[0.25] * in_shape[0], dataset=dataset,
    )  # fmt: skip
    models.save_checkpoint(model, card, paths.checkpoints_dir() / name)


# --------------------------------------------------------------------------- storing uploads


def test_zip_upload_is_extracted_by_class_and_stored_once(kdviz_home):
    blob = digits_zip(classes=3, per_class=5)
    upload = own_data.ingest_zip(blob, "my digits.zip")
    assert upload.path == kdviz_home / "uploads" / upload.sha / "images"
    assert upload.sha == __import__("hashlib").sha256(blob).hexdigest()
    assert sorted(p.name for p in upload.path.iterdir()) == ["0", "1", "2"]  # wrapper dropped
    assert all(len(list((upload.path / c).iterdir())) == 5 for c in "012")
    again = own_data.ingest_zip(blob, "renamed.zip")
    assert again.path == upload.path and len(list((kdviz_home / "uploads").iterdir())) == 1
    ds = data.load_dataset(upload.spec, "test")
    assert ds.class_names == ("0", "1", "2") and ds.in_shape == (1, 8, 8)
    original = data.load_dataset("digits", "test")
    first = torch.nonzero(original.labels == 0)[0, 0]
    stored = np.asarray(Image.open(upload.path / "0" / "img00.png"))
    np.testing.assert_array_equal(stored, original.images[first, 0].numpy())  # bytes kept as sent
    assert "carved with seed 0" in own_data.split_note(upload.spec, "test")


def test_zip_with_train_and_test_folders_keeps_them(kdviz_home):
    image = _png(np.zeros((8, 8), np.uint8))
    members = {
        f"{part}/{c}/{i}.png": image for part in ("train", "test") for c in "ab" for i in "12"
    }
    upload = own_data.ingest_zip(_zip(members))
    assert sorted(p.name for p in upload.path.iterdir()) == ["test", "train"]
    assert len(data.load_dataset(upload.spec, "test")) == 4
    assert "is its own test/ folder" in own_data.split_note(upload.spec, "test")


def test_loose_images_take_their_class_from_the_name(kdviz_home):
    image = _png(np.full((8, 8), 200, np.uint8))
    files = [("cat_01.png", image), ("cat-02.png", image), ("dog_1.png", image)]
    upload = own_data.store_upload(files)
    assert upload.kind == "images"
    assert sorted(p.name for p in upload.path.iterdir()) == ["cat", "dog"]
    assert own_data.class_from_name("sea_lion_3.png") == "sea"
    with pytest.raises(KdvizError, match="no class prefix"):
        own_data.store_upload([("cat.png", image), ("dog_1.png", image)])


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("a/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (_zip({"../evil/1.png": b"x", "a/2.png": b"x"}), "outside the zip"),
        (_zip({"/abs/1.png": b"x"}), "absolute path"),
        (_symlink_zip(), "symbolic link"),
        (_zip({"a/1.png": b"not an image", "b/2.png": b"x"}), "not a readable image"),
        (b"PK\x03\x04 not really", "not a readable zip"),
    ],
)
def test_unsafe_or_broken_zips_are_refused(kdviz_home, blob, message):
    with pytest.raises(KdvizError, match=message):
        own_data.ingest_zip(blob)
    assert not [p for p in (kdviz_home / "uploads").iterdir() if not p.name.startswith(".")]


def test_size_and_bomb_limits(kdviz_home, monkeypatch):
    small = _png(np.zeros((8, 8), np.uint8))
    monkeypatch.setattr(own_data, "MAX_UNZIPPED_BYTES", 1000)
    big = {f"a/{i}.png": small for i in range(20)} | {f"b/{i}.png": small for i in range(20)}
    with pytest.raises(KdvizError, match="unpacks to more than"):
        own_data.ingest_zip(_zip(big))
    monkeypatch.setattr(own_data, "MAX_UNZIPPED_BYTES", 10**9)
    bomb = Image.new("1", (5000, 5000))  # 25 M pixels in a few kB of PNG
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    with pytest.raises(KdvizError, match="5000x5000 pixels"):
        own_data.ingest_zip(_zip({"a/bomb.png": buffer.getvalue(), "b/1.png": small}))
    monkeypatch.setattr(own_data, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(KdvizError, match="over the 0 MB"):
        own_data.store_upload([("x.npz", b"0" * 200)])


# --------------------------------------------------------------------------- the app


def test_uploading_a_zip_shows_its_images_and_charts(home):
    at = _app(dataset="digits", teacher=TEACHER, student=STUDENT).run()
    _ok(at)
    blob = digits_zip()
    at.file_uploader(key="own_upload").set_value(("digits.zip", blob, "application/zip")).run()
    _ok(at)
    spec = at.selectbox(key="dataset").value
    upload = home / "uploads" / __import__("hashlib").sha256(blob).hexdigest() / "images"
    assert spec == f"folder:{upload}"
    assert at.selectbox(key="teacher").value == TEACHER  # they fit: kept
    assert any("carved with seed 0" in c.value for c in at.sidebar.caption)
    assert any("10 classes" in s.value for s in at.success)
    teacher = engine.dataset_logits(paths.checkpoints_dir() / TEACHER, spec, "test")
    assert teacher.shape == (20, 10)  # round(20% of 8) = 2 images per class
    np.testing.assert_allclose(
        _bars(at, "Teacher, T = 1"), soft.soften(teacher[0], 1.0).numpy(), rtol=1e-5
    )
    assert {"soft_bars", "gallery_strip"} <= _chart_keys(at)


def test_pickers_list_only_checkpoints_that_fit(home):
    _save_untrained("five-classes", 5, (1, 8, 8))
    _save_untrained("mnist-shaped", 10, (1, 28, 28))
    at = _app(dataset="digits").run()
    _ok(at)
    for key in ("teacher", "student"):
        assert sorted(at.selectbox(key=key).options) == sorted([TEACHER, STUDENT])
    toggle = at.toggle(key="all_checkpoints")
    assert "2 do not fit" in toggle.label
    toggle.set_value(True).run()
    options = at.selectbox(key="student").options
    assert "five-classes — incompatible: 5 classes vs 10" in options
    assert "mnist-shaped — incompatible: input 1×28×28 vs 1×8×8" in options
    assert options.index("five-classes — incompatible: 5 classes vs 10") > options.index(STUDENT)
    at.selectbox(key="student").set_value("five-classes").run()
    assert not at.exception
    assert "does not fit digits (test): 5 classes vs 10" in " ".join(e.value for e in at.error)
    assert not at.get("plotly_chart")  # refused: nothing is drawn with it


def test_a_link_to_an_incompatible_checkpoint_falls_back(home):
    _save_untrained("five-classes", 5, (1, 8, 8))
    at = _app(dataset="digits", teacher=TEACHER, student="five-classes").run()
    _ok(at)
    assert at.selectbox(key="student").value == STUDENT
    assert "does not fit this data (5 classes vs 10)" in " ".join(w.value for w in at.warning)


def test_switching_the_dataset_picks_checkpoints_that_fit(home):
    five = own_data.ingest_zip(digits_zip(classes=5, per_class=6))
    _save_untrained("five-teacher", 5, (1, 8, 8), dataset=five.spec)
    _save_untrained("five-student", 5, (1, 8, 8), dataset=five.spec)
    at = _app(dataset="digits", teacher=TEACHER, student=STUDENT).run()
    _ok(at)
    at.selectbox(key="dataset").set_value(five.spec).run()
    _ok(at)
    assert at.selectbox(key="teacher").value == "five-teacher"
    assert at.selectbox(key="student").value == "five-student"
    assert "soft_bars" in _chart_keys(at)
    at.selectbox(key="dataset").set_value("digits").run()
    _ok(at)
    assert {at.selectbox(key="teacher").value, at.selectbox(key="student").value} == {
        TEACHER,
        STUDENT,
    }


def test_a_link_with_an_upload_and_an_imported_model_reopens_them(home, tmp_path):
    from kdviz import importers

    upload = own_data.ingest_zip(digits_zip(classes=10, per_class=6))
    torch.manual_seed(1)
    torch.save(models.create_model("mlp-8", 10, (1, 8, 8)).state_dict(), tmp_path / "s.pt")
    importers.import_source(
        tmp_path / "s.pt", "own-student", arch="mlp-8", in_shape="1x8x8", mean=[0.5], std=[0.25]
    )
    st.cache_resource.clear()
    at = _app(dataset=upload.spec, teacher=TEACHER, student="own-student", T="4").run()
    _ok(at)
    assert at.selectbox(key="dataset").value == upload.spec
    assert at.selectbox(key="teacher").value == TEACHER
    assert at.selectbox(key="student").value == "own-student"
    student = engine.dataset_logits(paths.checkpoints_dir() / "own-student", upload.spec, "test")
    np.testing.assert_allclose(
        _bars(at, "Student, T = 4"), soft.soften(student[0], 4.0).numpy(), rtol=1e-5
    )
    assert at.query_params["dataset"] == upload.spec


# --------------------------------------------------------------------------- logits alone


def _logits_file(tmp_path: Path, name: str, logits: np.ndarray, labels: np.ndarray) -> Path:
    path = tmp_path / f"{name}.npz"
    names = np.array([f"class {i}" for i in range(logits.shape[1])])
    np.savez(path, logits=logits.astype(np.float32), labels=labels, class_names=names)
    return path


def _import(path: Path, name: str) -> None:
    from kdviz import importers

    importers.import_source(path, name)


def test_uploading_logits_shows_them_without_images(home, tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 4
    logits = rng.normal(size=(60, 4)) + 3 * np.eye(4)[labels]
    at = _app(dataset="digits", teacher=TEACHER, student=STUDENT).run()
    blob = _logits_file(tmp_path, "mine", logits, labels).read_bytes()
    at.file_uploader(key="own_upload").set_value(("mine.npz", blob, "application/zip")).run()
    _ok(at)
    assert at.selectbox(key="dataset").value == "logits:mine"
    assert at.selectbox(key="teacher").value == "mine"
    assert at.selectbox(key="split_table").disabled
    np.testing.assert_allclose(
        _bars(at, "Teacher, T = 1"),
        soft.soften(torch.tensor(logits, dtype=torch.float32)[0], 1.0).numpy(),
        rtol=1e-5,
    )
    assert not at.get("imgs") and "gallery_strip" not in _chart_keys(at)
    assert "without images" in " ".join(c.value for c in at.caption)
    at.switch_page("kdviz/ui/class_similarity.py").run()
    _ok(at)
    assert "sim_cell" in _chart_keys(at)


def test_a_pair_of_tables_with_other_rows_is_refused(home, tmp_path):
    labels = np.arange(60) % 4
    _import(_logits_file(tmp_path, "a", np.eye(4)[labels] * 3, labels), "a")
    _import(_logits_file(tmp_path, "b", np.eye(4)[labels[:50]], labels[:50]), "b")
    at = _app(dataset="logits:a", teacher="a", student="b").run()
    assert not at.exception
    assert at.selectbox(key="student").value == "a"  # b does not fit: not offered
    assert "50 rows vs 60" in " ".join(w.value for w in at.warning)
    at.toggle(key="all_checkpoints").set_value(True).run()
    assert "b — incompatible: 50 rows vs 60" in at.selectbox(key="student").options
    assert at.query_params["dataset"] == "logits:a"


def test_uploading_a_model_asks_for_its_architecture_then_shows_it(home, tmp_path):
    torch.manual_seed(3)
    model = models.create_model("mlp-8", 10, (1, 8, 8)).eval()
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buffer)
    at = _app(dataset="digits", teacher=TEACHER, student=STUDENT).run()
    at.radio(key="own_role").set_value("Student").run()
    at.file_uploader(key="own_upload").set_value(("my net.pt", buffer.getvalue(), "")).run()
    _ok(at)
    assert at.text_input(key="own_name").value == "my_net"
    assert at.text_input(key="own_shape").value == "1×8×8"  # the dataset's, by default
    at.text_input(key="own_arch").input("mlp-8")
    next(b for b in at.button if b.label == "Import").click().run()
    _ok(at)
    assert at.selectbox(key="student").value == "my_net"
    assert at.selectbox(key="teacher").value == TEACHER
    ds = data.load_dataset("digits", "test")
    with torch.no_grad():
        expected = soft.soften(model(ds.normalized()[:1])[0], 1.0).numpy()
    np.testing.assert_allclose(_bars(at, "Student, T = 1"), expected, rtol=1e-4, atol=1e-6)
    card = models.load_card("my_net")
    assert card.mean == list(ds.mean) and card.class_names == list(ds.class_names)
