"""kdviz.scale: the explorer's many-class helpers, each checked against the full computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdviz import analysis, scale, soft

K = 130  # more than BIG_MATRIX and not a multiple of BLOCK (a partial last block)


@pytest.fixture(scope="module")
def table():
    """600 images of K classes in 13 latent groups of 10 alike classes; a noisier student."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(K).repeat(5)[:600]
    groups = torch.arange(K) // 10  # (K,)
    same = (groups[:, None] == groups[None, :]).float()  # (K, K)
    teacher = torch.randn(600, K, generator=gen) + 3.0 * same[labels] + 5.0 * torch.eye(K)[labels]
    student = teacher + 1.5 * torch.randn(600, K, generator=gen)
    names = tuple(f"c{i:03d}" for i in range(K))
    return teacher, student, labels, names


def test_top_classes_include_the_label_and_are_temperature_free(table):
    teacher, _, labels, _ = table
    row = teacher[7]
    top = scale.top_classes(row, int(labels[7]), 10)
    assert len(top) == 10 and int(labels[7]) in top
    for t in (0.5, 4.0, 50.0):  # softmax keeps the order of the logits at every T
        p = soft.soften(row, t)
        expected = torch.topk(p, 10).indices.numpy()
        assert set(expected) - set(top) <= set(expected[-1:])
    forced = scale.top_classes(torch.arange(K, dtype=torch.float32), 0, 10)  # 0 is least likely
    assert forced[-1] == 0 and list(forced[:9]) == list(range(K - 1, K - 10, -1))


def test_top_k_frame_pieces_equal_the_full_softmax(table):
    teacher, student, labels, names = table
    i = 11
    classes = scale.top_classes(teacher[i], int(labels[i]), 10)
    frame = scale.top_k_frame({"teacher": teacher[i], "student": student[i]}, 4.0, names, classes)
    assert len(frame) == 2 * 2 * 11
    rest = scale.rest_label(K - 10)
    for model, z in (("teacher", teacher[i]), ("student", student[i])):
        for t, ref in ((4.0, False), (1.0, True)):
            part = frame[(frame.model == model) & (frame.reference == ref)]
            full = soft.soften(z.double(), t).numpy()
            assert list(part["class"]) == [names[c] for c in classes] + [rest]
            np.testing.assert_allclose(
                part["probability"].to_numpy()[:-1], full[classes], rtol=1e-9
            )
            others = np.delete(full, classes)
            assert part["probability"].iloc[-1] == pytest.approx(others.sum(), abs=1e-9)
            assert part["probability"].sum() == pytest.approx(1.0, abs=1e-9)


def test_class_means_chunked_equal_class_similarity(table):
    teacher, _, labels, _ = table
    for t in (0.25, 1.0, 20.0):
        full = soft.class_similarity(soft.soften(teacher.double(), t), labels, K).numpy()
        chunked = scale.class_means(teacher, labels, t, chunk=64).numpy()
        assert chunked.dtype == np.float32
        np.testing.assert_allclose(chunked, full, rtol=2e-5, atol=1e-7)


def test_background_grid_equals_class_similarity_at_each_t(table):
    teacher, _, labels, _ = table
    temps = (0.5, 1.0, 4.0, 20.0)
    grid = scale.ClassMeansGrid(teacher, labels, temps, chunk=100).start(first=4.0)
    assert grid.done.wait(60) and grid.ready() == len(temps)
    for t in temps:
        full = soft.class_similarity(soft.soften(teacher.double(), t), labels, K).numpy()
        np.testing.assert_allclose(grid.matrix(t), full, rtol=2e-5, atol=1e-7)
        top = soft.soften(teacher.double(), t).max(-1).values.numpy()
        np.testing.assert_allclose(grid.top_probability(t), top, rtol=2e-5)
    # a T off the grid is computed on the caller's thread, the same way
    off = soft.class_similarity(soft.soften(teacher.double(), 3.0), labels, K).numpy()
    np.testing.assert_allclose(grid.matrix(3.0), off, rtol=2e-5, atol=1e-7)


def test_cluster_indices_group_the_latent_clusters(table):
    teacher, _, labels, _ = table
    matrix = scale.class_means(teacher, labels, 4.0).numpy()
    order = scale.cluster_indices(matrix)
    assert sorted(order) == list(range(K))
    groups = order // 10  # neighbours in the order mostly share a latent group
    assert np.mean(groups[1:] == groups[:-1]) > 0.85
    # same leaves as analysis.cluster_order (optimal ordering at this K as well)
    names = [str(i) for i in range(K)]
    import pandas as pd

    frame = pd.DataFrame(matrix.astype(np.float64), index=names, columns=names)
    expected, _ = analysis.cluster_order(frame)
    assert [names[i] for i in order] == expected


def test_tiles_and_blocks_equal_slices_of_the_clustered_matrix(table):
    teacher, _, labels, names = table
    matrix = scale.class_means(teacher, labels, 2.0).numpy()
    order = scale.cluster_indices(matrix)
    full = matrix.astype(np.float64)[np.ix_(order, order)]  # the clustered matrix
    b = 50
    n = math.ceil(K / b)
    blocks = scale.block_average(matrix, order, b)
    assert blocks.shape == (n, n)
    for r in range(n):
        for c in range(n):
            piece = scale.tile(matrix, order, r, c, names, b)
            expected = full[r * b : (r + 1) * b, c * b : (c + 1) * b]
            np.testing.assert_array_equal(piece.to_numpy(), expected)
            assert list(piece.index) == [names[i] for i in order[r * b : (r + 1) * b]]
            off = expected.copy()
            if r == c:
                np.fill_diagonal(off, np.nan)
            assert blocks[r, c] == pytest.approx(np.nanmean(off), rel=1e-12)
    assert len(scale.block_labels(names, order, b)) == n
    assert scale.block_of(int(order[120]), order, b) == 2


def test_nearest_classes_are_the_argsort_of_the_row(table):
    teacher, student, labels, names = table
    t_matrix = scale.class_means(teacher, labels, 4.0).numpy()
    s_matrix = scale.class_means(student, labels, 4.0).numpy()
    c = 42
    frame = scale.nearest_classes(t_matrix, s_matrix, c, names, n=8)
    row = t_matrix[c].astype(np.float64).copy()
    row[c] = -np.inf
    expected = np.argsort(-row, kind="stable")[:8]
    assert list(frame["class"]) == [names[i] for i in expected]
    assert list(frame["rank"]) == list(range(1, 9))
    np.testing.assert_array_equal(frame["teacher"], t_matrix[c, expected])
    np.testing.assert_array_equal(frame["student"], s_matrix[c, expected])
    assert set(i // 10 for i in expected) == {c // 10}  # its latent group


def test_strongest_links_match_analysis(table):
    teacher, _, labels, names = table
    matrix = scale.class_means(teacher, labels, 4.0).numpy().astype(np.float64)
    a, b = scale.strongest_links(matrix, 12)
    import pandas as pd

    frame = analysis.similarity_links(pd.DataFrame(matrix, index=names, columns=names), top_k=12)
    assert [names[i] for i in a] == list(frame.source)
    assert [names[i] for i in b] == list(frame.target)


def test_mean_kl_chunked(table):
    teacher, student, _, _ = table
    big_t = teacher.repeat(8, 1)  # 4,800 rows: more than one chunk
    big_s = student.repeat(8, 1)
    expected = float(soft.kl_divergence(big_t.double(), big_s.double(), 4.0).mean())
    assert scale.mean_kl(big_t, big_s, 4.0) == pytest.approx(expected, rel=1e-5)


def test_calibration_temperature_chunked_matches_the_float64_search():
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 50, (3000,), generator=gen)
    logits = 3.0 * torch.randn(3000, 50, generator=gen) + 6.0 * torch.eye(50)[labels]
    for factor in (0.3, 1.0, 4.0):  # under- and over-confident
        z = logits * factor
        expected = soft.calibration_temperature(z, labels)
        got = soft.calibration_temperature_chunked(z, labels, chunk=700)
        assert got == pytest.approx(expected, rel=1e-5)
    perfect = 50.0 * torch.eye(50)[labels]  # right on every sample: the lower end
    assert soft.calibration_temperature_chunked(perfect, labels) == soft.MIN_CALIBRATION_TEMPERATURE


def test_temperature_sweep_equals_the_direct_computation(table):
    teacher, student, labels, names = table
    temps = (1.0, 4.0)

    def compute(t):
        return analysis.per_class_and_kl(teacher, student, labels, t, names)

    sweep = scale.TemperatureSweep(compute, temps).start(first=4.0)
    assert sweep.done.wait(60) and sweep.ready() == 2
    for t in (*temps, 2.0):  # 2.0 is not swept: computed on the caller's thread
        frame, kl = sweep.get(t)
        expected = analysis.per_class_frame(teacher, student, labels, t, names)
        np.testing.assert_allclose(frame["kl"], expected["kl"], rtol=1e-12)
        full = float(soft.kl_divergence(teacher.double(), student.double(), t).mean())
        assert kl == pytest.approx(full, rel=1e-5)


def test_calibration_temperature_chunked_leaves_out_unlabelled_rows():
    from kdviz.errors import KdvizError

    gen = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 5, (400,), generator=gen)
    logits = torch.randn(400, 5, generator=gen) + 3.0 * torch.eye(5)[labels]
    some = labels.clone()
    some[::4] = -1
    expected = soft.calibration_temperature(logits[some >= 0], labels[some >= 0])
    assert soft.calibration_temperature_chunked(logits, some, chunk=64) == pytest.approx(
        expected, rel=1e-5
    )
    with pytest.raises(KdvizError):
        soft.calibration_temperature_chunked(logits, labels + 5)
