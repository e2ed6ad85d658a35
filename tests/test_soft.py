"""kdviz.soft: oracle tests against torch.nn.functional / scikit-learn, and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kdviz import soft
from kdviz.errors import KdvizError

PROPERTY = settings(max_examples=50, deadline=None)


def _logits(max_n: int = 6, max_k: int = 8, bound: float = 20.0):
    """Hypothesis strategy: (N, K) float64 logits with 1 <= N <= max_n, 2 <= K <= max_k."""
    shapes = st.tuples(st.integers(1, max_n), st.integers(2, max_k))
    floats = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
    return shapes.flatmap(lambda shape: arrays(np.float64, shape, elements=floats)).map(
        torch.from_numpy
    )


def _logit_pair(max_n: int = 6, max_k: int = 8, bound: float = 10.0):
    """Hypothesis strategy: teacher logits, student logits (same shape) and labels."""

    def build(shape):
        n, k = shape
        floats = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
        return st.tuples(
            arrays(np.float64, shape, elements=floats).map(torch.from_numpy),
            arrays(np.float64, shape, elements=floats).map(torch.from_numpy),
            st.lists(st.integers(0, k - 1), min_size=n, max_size=n).map(torch.tensor),
        )

    return st.tuples(st.integers(1, max_n), st.integers(2, max_k)).flatmap(build)


def _binary_logits(confidences: list[float]) -> torch.Tensor:
    """(N, 2) float64 logits whose softmax puts probability c on class 1."""
    c = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([torch.zeros_like(c), torch.log(c / (1 - c))], dim=-1)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_soften_and_log_soften_match_functional(rng, temperature):
    logits = torch.randn(16, 10, generator=rng) * 5  # (N, K)
    torch.testing.assert_close(
        soft.soften(logits, temperature), F.softmax(logits / temperature, dim=1)
    )
    torch.testing.assert_close(
        soft.log_soften(logits, temperature), F.log_softmax(logits / temperature, dim=1)
    )


def test_log_soften_is_stable_where_log_of_softmax_is_not():
    logits = torch.tensor([[0.0, 200.0]])  # softmax underflows to 0 for class 0
    assert torch.isinf(torch.log(F.softmax(logits, dim=1))).any()
    out = soft.log_soften(logits, 1.0)
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == pytest.approx(-200.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan])
def test_non_positive_temperature_is_a_user_error(temperature):
    with pytest.raises(KdvizError, match="positive"):
        soft.soften(torch.zeros(1, 3), temperature)


def test_entropy_matches_categorical(rng):
    probs = F.softmax(torch.randn(20, 7, generator=rng) * 3, dim=1)
    expected = torch.distributions.Categorical(probs=probs).entropy()
    torch.testing.assert_close(soft.entropy(probs), expected)
    one_hot = torch.eye(4)  # 0 log 0 = 0, not nan
    torch.testing.assert_close(soft.entropy(one_hot), torch.zeros(4))


def test_dark_mass_with_and_without_labels():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    torch.testing.assert_close(soft.dark_mass(probs), torch.tensor([0.3, 0.4]))
    labelled = soft.dark_mass(probs, torch.tensor([1, 2]))
    torch.testing.assert_close(labelled, torch.tensor([0.8, 0.4]))
    unlabelled = soft.dark_mass(probs, torch.tensor([0, -1]))
    assert unlabelled[0].item() == pytest.approx(0.3) and math.isnan(unlabelled[1].item())


def test_class_similarity_is_the_mean_soft_target_per_class(rng):
    num_classes = 5
    probs = F.softmax(torch.randn(40, num_classes, generator=rng), dim=1)
    labels = torch.randint(0, 4, (40,), generator=rng)  # class 4 never appears
    labels[0] = -1  # unlabelled rows are left out
    sim = soft.class_similarity(probs, labels, num_classes)
    assert sim.shape == (num_classes, num_classes)
    for c in range(4):
        torch.testing.assert_close(sim[c], probs[labels == c].mean(0))
    assert torch.isnan(sim[4]).all()
    torch.testing.assert_close(sim[:4].sum(1), torch.ones(4))


def test_class_similarity_rejects_a_class_count_mismatch():
    with pytest.raises(KdvizError, match="num_classes"):
        soft.class_similarity(torch.full((2, 3), 1 / 3), torch.tensor([0, 1]), 4)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_divergence_matches_kl_div(rng, temperature):
    teacher, student = torch.randn(2, 12, 6, generator=rng) * 4
    expected = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.softmax(teacher / temperature, dim=1),
        reduction="none",
    ).sum(1)
    torch.testing.assert_close(soft.kl_divergence(teacher, student, temperature), expected)


def test_kl_divergence_rejects_shape_mismatch():
    with pytest.raises(KdvizError, match="shape"):
        soft.kl_divergence(torch.zeros(2, 10), torch.zeros(2, 100))


def test_accuracy_agreement_and_nll(rng):
    logits = torch.randn(50, 4, generator=rng)
    other = torch.randn(50, 4, generator=rng)
    labels = torch.randint(0, 4, (50,), generator=rng)
    pred = logits.argmax(1)
    assert soft.accuracy(logits, labels) == pytest.approx((pred == labels).float().mean().item())
    assert soft.agreement(logits, other) == pytest.approx(
        (pred == other.argmax(1)).float().mean().item()
    )
    for temperature in (1.0, 2.5):
        expected = F.cross_entropy(logits / temperature, labels).item()
        assert soft.nll(logits, labels, temperature) == pytest.approx(expected, rel=1e-6)
    # rows labelled -1 are left out, like cross_entropy's ignore_index
    masked = labels.clone()
    masked[:10] = -1
    assert soft.nll(logits, masked) == pytest.approx(
        F.cross_entropy(logits, masked, ignore_index=-1).item(), rel=1e-6
    )
    assert soft.accuracy(logits, masked) == pytest.approx(
        (pred[10:] == labels[10:]).float().mean().item()
    )
    assert math.isnan(soft.accuracy(logits, torch.full((50,), -1)))


def test_confusion_matrix_matches_counting_each_cell(rng):
    logits = torch.randn(200, 6, generator=rng)
    labels = torch.randint(0, 6, (200,), generator=rng)
    labels[:5] = -1  # left out
    pred = logits.argmax(1)
    expected = torch.tensor(
        [[int(((labels == i) & (pred == j)).sum()) for j in range(6)] for i in range(6)]
    )
    cm = soft.confusion_matrix(logits, labels, 6)
    assert cm.dtype == torch.int64
    torch.testing.assert_close(cm, expected)
    assert int(cm.sum()) == 195


def test_confusion_matrix_rejects_labels_beyond_the_classes():
    with pytest.raises(KdvizError, match="label 5"):
        soft.confusion_matrix(torch.zeros(2, 3), torch.tensor([0, 5]), 3)


def test_temperature_curve_matches_soften_at_each_temperature(rng):
    logits = torch.randn(5, 7, generator=rng) * 3
    temps = torch.tensor([0.5, 1.0, 2.0, 10.0])
    curve = soft.temperature_curve(logits, temps)  # (M, N, K)
    assert curve.shape == (4, 5, 7)
    for m, temperature in enumerate(temps.tolist()):
        torch.testing.assert_close(curve[m], soft.soften(logits, temperature))
    single = soft.temperature_curve(logits[0], [0.5, 1.0, 2.0, 10.0])  # (M, K)
    assert single.shape == (4, 7)
    torch.testing.assert_close(single, curve[:, 0])
    with pytest.raises(KdvizError):
        soft.temperature_curve(logits, [1.0, 0.0])


# --------------------------------------------------------------------------- calibration


def _reference_bins(logits, labels, n_bins):
    """Guo et al.'s reference loop: bin b holds lower < confidence <= upper."""
    conf, pred = F.softmax(logits.double(), dim=1).max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    rows = []
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lower) & (conf <= upper)
        n = int(inside.sum())
        mean_conf = conf[inside].mean().item() if n else math.nan
        mean_acc = correct[inside].mean().item() if n else math.nan
        rows.append((mean_conf, mean_acc, n))
    return rows


def test_reliability_bins_match_the_reference_loop(rng):
    logits = torch.randn(300, 5, generator=rng) * 2
    labels = torch.randint(0, 5, (300,), generator=rng)
    bins = soft.reliability_bins(logits, labels)
    assert set(bins) == {"lower", "upper", "confidence", "accuracy", "count"}
    assert all(v.shape == (15,) for v in bins.values())
    torch.testing.assert_close(bins["lower"][1:], bins["upper"][:-1])
    for b, (conf, acc, n) in enumerate(_reference_bins(logits, labels, 15)):
        assert int(bins["count"][b]) == n
        if n:
            assert bins["confidence"][b].item() == pytest.approx(conf)
            assert bins["accuracy"][b].item() == pytest.approx(acc)
        else:
            assert math.isnan(bins["confidence"][b].item())
            assert math.isnan(bins["accuracy"][b].item())


def test_reliability_bins_put_confidence_one_in_the_last_bin():
    logits = torch.tensor([[0.0, 100.0]])  # softmax is exactly [0, 1] in float32
    bins = soft.reliability_bins(logits, torch.tensor([1]))
    assert bins["count"].tolist() == [0] * 14 + [1]


def test_ece_hand_computed_example():
    # bin (13/15, 14/15]: conf 0.9, 0.9 with one right -> |0.5 - 0.9| = 0.4, weight 2/4
    # bin (9/15, 10/15]:  conf 0.65, right             -> 0.35, weight 1/4
    # bin (11/15, 12/15]: conf 0.75, wrong             -> 0.75, weight 1/4
    logits = _binary_logits([0.9, 0.9, 0.65, 0.75])
    labels = torch.tensor([1, 0, 1, 0])
    expected = 0.5 * 0.4 + 0.25 * 0.35 + 0.25 * 0.75
    assert soft.ece(logits, labels) == pytest.approx(expected, abs=1e-12)
    bins = soft.reliability_bins(logits, labels)
    assert bins["count"].tolist() == [0] * 9 + [1, 0, 1, 0, 2, 0]


def test_ece_is_zero_for_a_perfectly_calibrated_model():
    # confidence 0.75 right 3 of 4 times, 0.55 right 11 of 20 times, 0.9 right 9 of 10 times
    confidences = [0.75] * 4 + [0.55] * 20 + [0.9] * 10
    labels = [1, 1, 1, 0] + [1] * 11 + [0] * 9 + [1] * 9 + [0]
    assert soft.ece(_binary_logits(confidences), torch.tensor(labels)) == pytest.approx(
        0.0, abs=1e-12
    )


def test_ece_ignores_unlabelled_rows_and_is_nan_without_labels():
    logits = _binary_logits([0.9, 0.9, 0.65, 0.75, 0.99])
    labels = torch.tensor([1, 0, 1, 0, -1])
    assert soft.ece(logits, labels) == pytest.approx(soft.ece(logits[:4], labels[:4]))
    assert math.isnan(soft.ece(logits, torch.full((5,), -1)))


def test_calibration_temperature_recovers_a_known_temperature():
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20_000, 10, generator=gen) * 2  # (N, K), calibrated by design
    labels = torch.multinomial(F.softmax(true_logits, dim=1), 1, generator=gen).squeeze(1)
    overconfident = true_logits * 3  # a model 3x too sharp
    found = soft.calibration_temperature(overconfident, labels)
    assert found == pytest.approx(3.0, rel=0.05)
    assert soft.calibration_temperature(overconfident, labels) == found  # deterministic
    assert soft.calibration_temperature(true_logits / 2, labels) == pytest.approx(0.5, rel=0.05)


def test_calibration_temperature_minimises_nll(rng):
    logits = torch.randn(500, 6, generator=rng) * 4
    labels = torch.randint(0, 6, (500,), generator=rng)
    labels[:250] = logits[:250].argmax(1)  # half right: the optimum is inside [0.05, 20]
    found = soft.calibration_temperature(logits, labels)
    assert soft.MIN_CALIBRATION_TEMPERATURE < found < soft.MAX_CALIBRATION_TEMPERATURE
    best = soft.nll(logits.double(), labels, found)
    for nearby in (found * 0.98, found * 1.02):
        assert best <= soft.nll(logits.double(), labels, nearby)
    scipy_optimize = pytest.importorskip("scipy.optimize")
    oracle = scipy_optimize.minimize_scalar(
        lambda t: soft.nll(logits.double(), labels, t),
        bounds=(0.05, 20),
        method="bounded",
        options={"xatol": 1e-8},
    )
    assert found == pytest.approx(oracle.x, rel=1e-4)


def test_calibration_temperature_clips_to_its_range():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # always right: sharper is always better
    assert soft.calibration_temperature(logits, torch.tensor([0, 1])) == 0.05
    assert soft.calibration_temperature(torch.zeros(3, 4), torch.tensor([0, 1, 2])) == 1.0
    with pytest.raises(KdvizError, match="labelled"):
        soft.calibration_temperature(logits, torch.tensor([-1, -1]))


# --------------------------------------------------------------------------- DKD


def test_dkd_parts_match_the_definitions(rng):
    teacher, student = torch.randn(2, 8, 5, generator=rng).double() * 3
    labels = torch.randint(0, 5, (8,), generator=rng)
    temperature = 2.0
    parts = soft.dkd_parts(teacher, student, labels, temperature)
    p = F.softmax(teacher / temperature, dim=1)
    q = F.softmax(student / temperature, dim=1)
    rows = torch.arange(8)
    p_t, q_t = p[rows, labels], q[rows, labels]
    b_p = torch.stack([p_t, 1 - p_t], 1)
    b_q = torch.stack([q_t, 1 - q_t], 1)
    tckd = (b_p * (b_p / b_q).log()).sum(1)
    keep = torch.ones_like(p, dtype=torch.bool)
    keep[rows, labels] = False
    p_hat = p[keep].reshape(8, 4) / (1 - p_t)[:, None]
    q_hat = q[keep].reshape(8, 4) / (1 - q_t)[:, None]
    nckd = (p_hat * (p_hat / q_hat).log()).sum(1)
    torch.testing.assert_close(parts["tckd"], tckd)
    torch.testing.assert_close(parts["nckd"], nckd)
    torch.testing.assert_close(parts["weight"], 1 - p_t)
    torch.testing.assert_close(parts["kd"], soft.kl_divergence(teacher, student, temperature))


def test_dkd_parts_unlabelled_rows_use_the_teacher_argmax(rng):
    teacher, student = torch.randn(2, 6, 4, generator=rng)
    unlabelled = soft.dkd_parts(teacher, student, torch.full((6,), -1), 3.0)
    by_argmax = soft.dkd_parts(teacher, student, teacher.argmax(1), 3.0)
    for key in unlabelled:
        torch.testing.assert_close(unlabelled[key], by_argmax[key])


def test_dkd_parts_gradients_are_finite_with_a_masked_target(rng):
    teacher = torch.randn(4, 6, generator=rng) * 10
    student = torch.randn(4, 6, generator=rng, requires_grad=True)
    parts = soft.dkd_parts(teacher, student, torch.tensor([0, 1, 2, 3]), 4.0)
    (parts["tckd"] + parts["nckd"]).sum().backward()
    assert torch.isfinite(student.grad).all()


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(_logits(), st.floats(0.05, 50.0))
def test_soften_is_a_distribution(logits, temperature):
    probs = soft.soften(logits, temperature)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs), dtype=torch.float64))
    torch.testing.assert_close(soft.log_soften(logits, temperature).exp(), probs)


@PROPERTY
@given(_logits(bound=30.0))
def test_infinite_temperature_gives_uniform(logits):
    k = logits.shape[-1]
    probs = soft.soften(logits, 1e7)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / k), atol=1e-5, rtol=0)


@PROPERTY
@given(_logits(bound=10.0))
def test_zero_temperature_gives_one_hot_on_argmax(logits):
    top2 = logits.topk(2, dim=-1).values
    assume(bool((top2[:, 0] - top2[:, 1] > 0.05).all()))  # no (near) ties
    probs = soft.soften(logits, 1e-3)
    expected = F.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    torch.testing.assert_close(probs, expected, atol=1e-9, rtol=0)


@PROPERTY
@given(_logits(), st.floats(0.1, 20.0))
def test_entropy_and_dark_mass_bounds(logits, temperature):
    k = logits.shape[-1]
    probs = soft.soften(logits, temperature)
    h = soft.entropy(probs)
    assert (h >= -1e-12).all() and (h <= math.log(k) + 1e-9).all()
    dark = soft.dark_mass(probs)
    assert (dark >= 0).all() and (dark <= 1 - 1 / k + 1e-12).all()


@PROPERTY
@given(_logit_pair(), st.floats(0.2, 20.0))
def test_kl_is_non_negative_and_zero_on_identical_inputs(pair, temperature):
    teacher, student, _ = pair
    kl = soft.kl_divergence(teacher, student, temperature)
    assert (kl >= -1e-12).all()
    torch.testing.assert_close(
        soft.kl_divergence(teacher, teacher, temperature),
        torch.zeros(len(teacher), dtype=torch.float64),
    )


@PROPERTY
@given(_logit_pair(), st.floats(0.5, 10.0))
def test_kd_is_tckd_plus_weighted_nckd(pair, temperature):
    teacher, student, labels = pair
    parts = soft.dkd_parts(teacher, student, labels, temperature)
    torch.testing.assert_close(
        parts["kd"], parts["tckd"] + parts["weight"] * parts["nckd"], atol=1e-9, rtol=1e-7
    )
    assert (parts["tckd"] >= -1e-12).all() and (parts["nckd"] >= -1e-12).all()
    assert ((parts["weight"] >= 0) & (parts["weight"] <= 1)).all()
    # the same identity in float32, to the contract's ~1e-5
    parts32 = soft.dkd_parts(teacher.float(), student.float(), labels, temperature)
    torch.testing.assert_close(
        parts32["kd"], parts32["tckd"] + parts32["weight"] * parts32["nckd"], atol=1e-5, rtol=1e-5
    )
