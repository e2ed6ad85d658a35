"""kdviz.analysis: tensors -> tidy frames; numbers checked against kdviz.soft and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kdviz import analysis, soft

NAMES = ("zero", "one", "two", "three")


@pytest.fixture
def logits():
    """Teacher and student logits on 40 images of 4 classes; 'one' looks like 'two'."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(10)  # (40,)
    teacher = torch.randn(40, 4, generator=gen) + 6.0 * torch.nn.functional.one_hot(labels, 4)
    teacher[labels == 1, 2] += 3.0  # ones lean to two
    teacher[labels == 2, 1] += 3.0
    teacher[0] = torch.tensor([0.0, 5.0, 0.0, 0.0])  # a zero the teacher calls one (wrong)
    student = teacher + torch.randn(40, 4, generator=gen) * 2.0
    return teacher, student, labels


def test_snap_temperature_to_grid():
    assert analysis.snap_temperature(4) == 4.0
    assert analysis.snap_temperature("3.9") == 4.0
    assert analysis.snap_temperature(1000) == 100.0
    assert analysis.snap_temperature(0.01) == 0.25
    assert analysis.snap_temperature("nope", default=1.0) == 1.0
    assert analysis.snap_temperature(-2, default=2.0) == 2.0
    grid = np.asarray(analysis.TEMPERATURE_GRID)
    assert grid[0] == 0.25 and grid[-1] == 100 and 1.0 in grid
    assert np.all(np.diff(np.log10(grid)) < 0.13)  # log-even: about 10 stops per decade


def test_curve_temperatures_cover_the_grid():
    temps = analysis.curve_temperatures(31)
    assert temps[0] == pytest.approx(0.25) and temps[-1] == pytest.approx(100)
    assert set(analysis.TEMPERATURE_GRID) <= set(np.round(temps, 10))
    assert np.all(np.diff(temps) > 0)


def test_soft_target_frame_matches_soften(logits):
    teacher, student, _ = logits
    frame = analysis.soft_target_frame({"teacher": teacher[3], "student": student[3]}, 4.0, NAMES)
    assert set(frame.columns) == {"model", "class", "temperature", "reference", "probability"}
    assert len(frame) == 2 * 2 * 4
    at_t = frame[(frame.model == "teacher") & ~frame.reference]["probability"].to_numpy()
    np.testing.assert_allclose(at_t, soft.soften(teacher[3], 4.0).numpy(), rtol=1e-6)
    at_1 = frame[(frame.model == "student") & frame.reference]["probability"].to_numpy()
    np.testing.assert_allclose(at_1, soft.soften(student[3], 1.0).numpy(), rtol=1e-6)
    assert frame.groupby(["model", "reference"])["probability"].sum().round(6).eq(1).all()


def test_temperature_curve_flattens_to_uniform(logits):
    teacher, _, _ = logits
    temps = [0.25, 1.0, 100.0]
    frame = analysis.temperature_curve_frame(teacher[5], temps, NAMES)
    assert len(frame) == 3 * 4
    at_100 = frame[frame.temperature == 100.0]["probability"].to_numpy()
    np.testing.assert_allclose(at_100, 0.25, atol=0.02)
    at_quarter = frame[frame.temperature == 0.25]["probability"]
    assert at_quarter.max() > 0.99


def test_softness_frame_is_monotone_in_t(logits):
    teacher, student, _ = logits
    temps = analysis.curve_temperatures(21)
    frame = analysis.softness_frame({"teacher": teacher[1], "student": student[1]}, temps)
    for _, rows in frame.groupby("model"):
        assert np.all(np.diff(rows["entropy"].to_numpy()) >= -1e-9)
        assert np.all(np.diff(rows["dark_mass"].to_numpy()) >= -1e-9)
        assert rows["entropy"].max() <= math.log(4) + 1e-9
    expected = soft.entropy(soft.soften(teacher[1].double(), float(temps[0])))
    assert frame.iloc[0]["entropy"] == pytest.approx(float(expected))


def test_soft_target_grid_frame(logits):
    teacher, student, _ = logits
    frame = analysis.soft_target_grid_frame(
        {"teacher": teacher[0], "student": student[0]}, class_names=NAMES
    )
    assert len(frame) == 2 * len(analysis.TEMPERATURE_GRID) * 4
    sums = frame.groupby(["model", "temperature"])["probability"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-9)


def test_image_summary(logits):
    teacher, student, labels = logits
    info = analysis.image_summary(0, labels, {"teacher": teacher, "student": student}, 1.0, NAMES)
    assert info["true"] == "zero" and info["teacher_pred"] == "one"
    assert 0 < info["teacher_dark"] < 1
    assert info["teacher_p"] == pytest.approx(float(soft.soften(teacher[0], 1.0).max()))


@pytest.mark.parametrize("mode", list(analysis.GALLERY_MODES))
def test_gallery_indices_each_mode(logits, mode):
    teacher, student, labels = logits
    idx = analysis.gallery_indices(mode, labels, teacher, student, 4.0, n=5, class_index=2, seed=1)
    assert len(idx) <= 5 and len(set(idx.tolist())) == len(idx)
    if mode == "class":
        assert (labels[idx] == 2).all()
    if mode == "wrong":
        assert 0 in idx.tolist()
        assert (teacher[idx].argmax(-1) != labels[idx]).all()
    if mode == "disagree":
        assert (teacher[idx].argmax(-1) != student[idx].argmax(-1)).all()
        kl = soft.kl_divergence(teacher[idx], student[idx], 4.0)
        assert torch.all(kl[:-1] >= kl[1:])
    if mode == "dark":
        dark = soft.dark_mass(soft.soften(teacher, 4.0))
        assert float(dark[idx[0]]) == pytest.approx(float(dark.max()))


def test_gallery_random_is_seeded(logits):
    teacher, student, labels = logits
    a = analysis.gallery_indices("random", labels, teacher, student, 1.0, n=6, seed=3)
    b = analysis.gallery_indices("random", labels, teacher, student, 1.0, n=6, seed=3)
    c = analysis.gallery_indices("random", labels, teacher, student, 1.0, n=6, seed=4)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_gallery_rejects_unknown_mode(logits):
    teacher, student, labels = logits
    with pytest.raises(ValueError, match="valid"):
        analysis.gallery_indices("best", labels, teacher, student, 1.0)


def test_gallery_frame(logits):
    teacher, student, labels = logits
    frame = analysis.gallery_frame([0, 5], labels, teacher, student, 2.0, NAMES)
    assert frame["index"].tolist() == [0, 5]
    assert frame.loc[0, "true"] == "zero" and frame.loc[0, "teacher"] == "one"
    assert frame.loc[1, "teacher_p"] == pytest.approx(float(soft.soften(teacher[5], 2.0).max()))
    empty = analysis.gallery_frame([], labels, teacher, student, 2.0, NAMES)
    assert len(empty) == 0 and "dark_mass" in empty


def test_similarity_matrix_rows_are_mean_soft_targets(logits):
    teacher, _, labels = logits
    matrix = analysis.similarity_matrix(teacher, labels, 3.0, NAMES)
    assert list(matrix.index) == list(NAMES) and list(matrix.columns) == list(NAMES)
    expected = soft.soften(teacher[labels == 2], 3.0).mean(0).numpy()
    np.testing.assert_allclose(matrix.loc["two"].to_numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(matrix.sum(axis=1).to_numpy(), 1.0, rtol=1e-5)
    masked = analysis.off_diagonal(matrix)
    assert np.isnan(np.diag(masked.to_numpy())).all() and not np.isnan(matrix.to_numpy()).any()


def test_cluster_order_puts_alike_classes_together(logits):
    teacher, _, labels = logits
    matrix = analysis.similarity_matrix(teacher, labels, 4.0, NAMES)
    order, tree = analysis.cluster_order(matrix)
    assert sorted(order) == sorted(NAMES)
    assert abs(order.index("one") - order.index("two")) == 1
    assert set(tree.columns) == {"segment", "x", "y"}
    assert tree["segment"].nunique() == len(NAMES) - 1  # K - 1 merges
    assert tree["x"].between(0, len(NAMES) - 1).all() and (tree["y"] >= 0).all()
    reordered = analysis.reorder(matrix, order)
    assert list(reordered.index) == order == list(reordered.columns)


def test_cluster_order_handles_tiny_and_empty():
    two = pd.DataFrame([[0.9, 0.1], [0.2, 0.8]], index=["a", "b"], columns=["a", "b"])
    assert analysis.cluster_order(two)[0] == ["a", "b"]
    diag = pd.DataFrame(np.eye(3), index=list("abc"), columns=list("abc"))
    order, tree = analysis.cluster_order(diag)
    assert order == ["a", "b", "c"] and tree.empty


def test_confusion_frame(logits):
    teacher, _, labels = logits
    frame = analysis.confusion_frame(teacher, labels, NAMES)
    assert frame.to_numpy().sum() == 40
    assert frame.loc["zero", "one"] >= 1  # image 0
    assert frame.columns.name == "predicted"


def test_similarity_links_and_strongest_pair(logits):
    teacher, _, labels = logits
    matrix = analysis.similarity_matrix(teacher, labels, 4.0, NAMES)
    links = analysis.similarity_links(matrix, top_k=3)
    assert len(links) == 3
    assert {links.loc[0, "source"], links.loc[0, "target"]} == {"one", "two"}
    assert links["strength"].is_monotonic_decreasing
    first = links.iloc[0]
    assert first["strength"] == pytest.approx((first["a_to_b"] + first["b_to_a"]) / 2)
    assert set(analysis.strongest_pair(matrix)) == {"one", "two"}
    nodes = analysis.circle_layout(["a", "b", "c", "d"])
    np.testing.assert_allclose(np.hypot(nodes.x, nodes.y), 1.0)


def test_pair_images(logits):
    teacher, _, labels = logits
    frame = analysis.pair_images(teacher, labels, 2.0, 1, 2, n=4)
    assert len(frame) == 4
    assert (labels[torch.tensor(frame["index"].tolist())] == 1).all()
    assert frame["probability"].is_monotonic_decreasing
    probs = soft.soften(teacher[labels == 1], 2.0)[:, 2]
    assert frame["probability"].iloc[0] == pytest.approx(float(probs.max()))


def test_subsample_is_stratified_and_capped():
    labels = torch.arange(5).repeat(100)
    idx = analysis.subsample(labels, 50, seed=0)
    assert len(idx) == 50 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx].numpy()).tolist() == [10] * 5
    assert len(analysis.subsample(labels[:7], 50)) == 7


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_soft_target_embedding(logits, method):
    teacher, _, labels = logits
    frame = analysis.soft_target_embedding(
        teacher, labels, 2.0, NAMES, method=method, max_points=40
    )
    assert len(frame) == 40
    assert set(frame.columns) == {"index", "class", "predicted", "x", "y", "p_top"}
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()
    assert frame.loc[0, "class"] == "zero" and frame.loc[0, "predicted"] == "one"


def test_metrics_frame(logits):
    teacher, student, labels = logits
    frame = analysis.metrics_frame(teacher, student, labels, 4.0)
    assert frame.loc["Accuracy", "teacher"] == pytest.approx(soft.accuracy(teacher, labels))
    assert frame.loc["Top-1 agreement", "student"] == pytest.approx(
        soft.agreement(teacher, student)
    )
    assert np.isnan(frame.loc["Top-1 agreement", "teacher"])
    kl_row = [r for r in frame.index if r.startswith("KL")][0]
    assert "T = 4" in kl_row
    assert frame.loc[kl_row, "student"] == pytest.approx(
        float(soft.kl_divergence(teacher, student, 4.0).mean())
    )
    t_star = frame.loc["Calibration temperature T*", "student"]
    assert t_star == pytest.approx(soft.calibration_temperature(student, labels))
    assert frame.loc["NLL at T*", "student"] <= frame.loc["NLL", "student"] + 1e-9


def test_reliability_frame(logits):
    teacher, student, labels = logits
    frame = analysis.reliability_frame({"teacher": teacher, "student": student}, labels, n_bins=10)
    assert len(frame) == 20
    assert frame.groupby("model")["count"].sum().tolist() == [40, 40]
    np.testing.assert_allclose(frame["center"].iloc[:10], np.arange(10) / 10 + 0.05)


def test_per_class_frame_splits_kd(logits):
    teacher, student, labels = logits
    frame = analysis.per_class_frame(teacher, student, labels, 4.0, NAMES)
    assert frame["class"].tolist() == list(NAMES) and frame["images"].tolist() == [10] * 4
    parts = soft.dkd_parts(teacher, student, labels, 4.0)
    mask = labels == 1
    assert frame.loc[1, "kl"] == pytest.approx(float(parts["kd"][mask].mean()), rel=1e-5)
    np.testing.assert_allclose(frame["kl"], frame["tckd"] + frame["weighted_nckd"], rtol=1e-4)
    assert frame.loc[0, "teacher_accuracy"] == pytest.approx(0.9)


def test_per_class_frame_with_an_absent_class(logits):
    teacher, student, labels = logits
    keep = labels != 3
    frame = analysis.per_class_frame(teacher[keep], student[keep], labels[keep], 1.0, NAMES)
    assert frame.loc[3, "images"] == 0 and np.isnan(frame.loc[3, "kl"])


def test_disagreement_indices(logits):
    teacher, student, _ = logits
    idx = analysis.disagreement_indices(teacher, student, 1.0, n=50)
    expected = torch.nonzero(teacher.argmax(-1) != student.argmax(-1)).reshape(-1)
    assert sorted(idx.tolist()) == sorted(expected.tolist())


def test_metrics_frame_without_t_and_with_kl(logits):
    teacher, student, labels = logits
    base = analysis.metrics_frame(teacher, student, labels, None)
    assert not any(name.startswith("KL") for name in base.index)
    full = analysis.with_kl(base, teacher, student, 2.5)
    assert list(full.index)[2] == analysis.kl_label(2.5) == "KL(teacher ‖ student) at T = 2.5"
    assert full.equals(analysis.metrics_frame(teacher, student, labels, 2.5))


def test_temperature_curve_frame_top_classes_and_the_rest(logits):
    teacher, _, _ = logits
    temps = [0.5, 4.0, 20.0]
    frame = analysis.temperature_curve_frame(teacher[5], temps, NAMES, classes=[2, 0], rest=True)
    assert list(frame["class"].iloc[:3]) == ["two", "zero", "the rest (2 classes)"]
    full = soft.temperature_curve(teacher[5].double(), torch.tensor(temps, dtype=torch.float64))
    got = frame["probability"].to_numpy().reshape(3, 3)
    np.testing.assert_allclose(got[:, :2], full[:, [2, 0]].numpy(), rtol=1e-12)
    np.testing.assert_allclose(got[:, 2], full[:, [1, 3]].sum(-1).numpy(), rtol=1e-9)


def test_gallery_dark_from_precomputed_top_probability(logits):
    teacher, student, labels = logits
    top_p = soft.soften(teacher, 4.0).max(-1).values.numpy()
    given = analysis.gallery_indices(
        "dark", labels, teacher, student, 4.0, n=5, teacher_top_p=top_p
    )
    assert list(given) == list(analysis.gallery_indices("dark", labels, teacher, student, 4.0, n=5))


def test_per_class_frame_over_several_chunks():
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(5000) % 3  # more rows than one 4,096-row chunk
    teacher = torch.randn(5000, 3, generator=gen) + 4 * torch.eye(3)[labels]
    student = teacher + torch.randn(5000, 3, generator=gen)
    frame = analysis.per_class_frame(teacher, student, labels, 2.0, ("a", "b", "c"))
    kd = soft.dkd_parts(teacher, student, labels, 2.0)["kd"]
    for c in range(3):
        assert frame["kl"][c] == pytest.approx(float(kd[labels == c].double().mean()), rel=1e-5)
    kl = float(soft.kl_divergence(teacher, student, 2.0).double().mean())
    with_kl = analysis.with_kl(
        pd.DataFrame({"teacher": [1.0], "student": [1.0]}), teacher, student, 2.0
    )
    assert with_kl.loc[analysis.kl_label(2.0), "student"] == pytest.approx(kl, rel=1e-5)
