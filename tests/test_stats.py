"""kdviz/stats.py against independent references: scipy.stats, a published worked example, the
score test solved by hand, a paired bootstrap; hypothesis properties for the intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from kdviz import stats

# ---------------------------------------------------------------------------- Wilson


def _score_test_roots(k: int, n: int, z: float) -> tuple[float, float]:
    """The true rates p with (k/n - p)^2 = z^2 p (1 - p) / n: a quadratic in p, solved directly."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (487, 500), (496, 500), (9921, 10000)])
def test_wilson_matches_scipy_and_the_score_test(k, n):
    z = sps.norm.ppf(0.975)
    low, high = stats.wilson_interval(k, n, z=z)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert (low, high) == pytest.approx(_score_test_roots(k, n, z), abs=1e-12)


def test_wilson_edge_cases():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    assert stats.wilson_interval(0, 50)[0] == 0.0 and stats.wilson_interval(50, 50)[1] == 1.0
    assert stats.wilson_interval(500, 500)[0] == pytest.approx(0.9924, abs=1e-4)  # not 100%
    with pytest.raises(ValueError):
        stats.wilson_interval(6, 5)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 20000), frac=st.floats(0, 1))
def test_wilson_contains_p_hat_stays_in_unit_range_and_narrows_with_n(n, frac):
    k = round(frac * n)
    low, high = stats.wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    low4, high4 = stats.wilson_interval(4 * k, 4 * n)  # same p-hat, four times the images
    assert high4 - low4 < high - low


# ---------------------------------------------------------------------------- paired difference


def test_newcombe_paired_matches_the_published_worked_example():
    # Fagerland, Lydersen & Laake 2017, section 8.5 (Cavo et al. 2012): rows = first measure,
    # columns = second; the book gives -0.0621 (95% CI -0.1186 to -0.0046).
    diff, low, high = stats.newcombe_paired_interval(59, 6, 16, 80)
    assert diff == pytest.approx(-0.0621, abs=5e-5)
    assert low == pytest.approx(-0.1186, abs=5e-5) and high == pytest.approx(-0.0046, abs=5e-5)


def _paired_bootstrap(a: np.ndarray, b: np.ndarray, reps: int = 4000, seed: int = 0):
    """Percentile interval of acc_A - acc_B, resampling images (pairs kept together)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(reps, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return np.quantile(diffs, [0.025, 0.975])


@pytest.mark.parametrize("seed", [0, 1])
def test_paired_difference_agrees_with_a_paired_bootstrap(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    a = rng.random(n) < 0.95  # model A right on ~95%
    flip = rng.random(n) < 0.04  # B differs from A on ~4% of the images, more often wrong
    b = np.where(flip, rng.random(n) < 0.3, a)
    res = stats.paired_difference(torch.from_numpy(a), torch.from_numpy(b))
    assert res.diff == pytest.approx(a.mean() - b.mean())
    assert res.n == n and res.only_a == int((a & ~b).sum()) and res.only_b == int((~a & b).sum())
    boot = _paired_bootstrap(a.astype(float), b.astype(float), seed=seed)
    assert res.low == pytest.approx(boot[0], abs=0.003) and res.high == pytest.approx(boot[1], abs=0.003)  # fmt: skip
    # pairing makes it much narrower than treating the two accuracies as independent samples
    la, ha = stats.wilson_interval(int(a.sum()), n)
    lb, hb = stats.wilson_interval(int(b.sum()), n)
    assert res.high - res.low < 0.7 * math.hypot(ha - la, hb - lb)


def test_paired_difference_within_noise_and_text():
    same = torch.ones(100, dtype=torch.bool)
    res = stats.paired_difference(same, same)
    assert res.diff == 0 and res.within_noise
    assert "within noise" in stats.paired_difference_text(res, "student", "teacher")
    a = torch.ones(500, dtype=torch.bool)
    b = a.clone()
    b[:40] = False  # B misses 40 images A gets right: 8 points
    res = stats.paired_difference(a, b)
    assert not res.within_noise and res.low > 0
    text = stats.paired_difference_text(res, "distilled", "baseline")
    assert text.startswith("+8.0 pts") and "distilled is better than baseline" in text
    with pytest.raises(ValueError):
        stats.paired_difference(a, b[:10])


@settings(max_examples=150, deadline=None)
@given(
    counts=st.tuples(*[st.integers(0, 300)] * 4).filter(lambda c: sum(c) > 0),
)
def test_paired_interval_contains_the_difference_and_is_antisymmetric(counts):
    both, only_a, only_b, neither = counts
    d, lo, hi = stats.newcombe_paired_interval(both, only_a, only_b, neither)
    assert -1.0 <= lo <= d + 1e-12 and d - 1e-12 <= hi <= 1.0
    d2, lo2, hi2 = stats.newcombe_paired_interval(both, only_b, only_a, neither)  # swap A and B
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo), abs=1e-12)


# ---------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 200])
@pytest.mark.parametrize("prob", [0.6, 0.975, 0.995])
def test_t_quantile_matches_scipy(df, prob):
    assert stats.t_quantile(prob, df) == pytest.approx(sps.t.ppf(prob, df), rel=1e-9)
    assert stats.t_quantile(1 - prob, df) == pytest.approx(sps.t.ppf(1 - prob, df), rel=1e-9)


def test_mean_sd_interval_matches_scipy_t_interval():
    values = [0.962, 0.958, 0.971]
    mean, sd, low, high = stats.mean_sd_interval(values)
    assert mean == pytest.approx(np.mean(values)) and sd == pytest.approx(np.std(values, ddof=1))
    ref = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert (low, high) == pytest.approx(ref, rel=1e-9)
    one = stats.mean_sd_interval([0.9])
    assert one[0] == 0.9 and all(math.isnan(v) for v in one[1:])
    assert all(math.isnan(v) for v in stats.mean_sd_interval([]))


# ---------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "ours,published,expected",
    [
        ((0.975, 0.985), 0.98, "agrees"),  # inside 98% +/- 1 pt
        ((0.95, 0.99), 0.98, "inconclusive"),  # wider than the tolerance: cannot tell
        ((0.965, 0.985), 0.98, "inconclusive"),  # straddles the region's edge
        ((0.70, 0.89), 0.986, "disagrees"),  # Hinton's 98.6% of 3s is far outside
        ((0.004, 0.03), (0.0, math.inf), "agrees"),  # a gain over the baseline, beyond noise
        ((-0.01, 0.02), (0.0, math.inf), "inconclusive"),  # within noise
        ((-0.03, -0.01), (0.0, math.inf), "disagrees"),  # the baseline is better
        ((float("nan"), float("nan")), 0.5, "inconclusive"),
    ],
)
def test_verdict_rule(ours, published, expected):
    assert stats.verdict(ours, published) == expected


def test_verdict_is_decided_by_the_interval_not_the_point_estimate():
    # the same point estimate, 98.0%, on 500 and on 50,000 images
    small = stats.wilson_interval(490, 500)
    large = stats.wilson_interval(49000, 50000)
    assert stats.verdict(small, 0.98) == "inconclusive"
    assert stats.verdict(large, 0.98) == "agrees"


# ---------------------------------------------------------------------------- summaries and text


def test_accuracy_summary_overall_and_per_class():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (300,), generator=gen)
    logits = torch.randn(300, 4, generator=gen)
    logits[torch.arange(300), labels] += 1.5  # mostly right
    out = stats.accuracy_summary(logits, labels, ["a", "b", "c", "d"])
    right = logits.argmax(-1) == labels
    assert out["n"] == 300 and out["correct"] == int(right.sum())
    assert out["accuracy"] == pytest.approx(float(right.float().mean()))
    assert out["accuracy_ci"] == pytest.approx(list(_score_test_roots(out["correct"], 300, 1.96)))
    per = out["per_class"]
    assert [p["name"] for p in per] == ["a", "b", "c", "d"]
    assert sum(p["n"] for p in per) == 300 and sum(p["correct"] for p in per) == out["correct"]
    for p in per:
        low, high = p["accuracy_ci"]
        assert low <= p["accuracy"] <= high
    empty = stats.accuracy_summary(logits[:0], labels[:0], ["a", "b", "c", "d"])
    assert empty["per_class"][0]["accuracy"] is None


def test_format_accuracy():
    assert stats.format_accuracy(0.974, 500) == "97.4% (95.6–98.5)"
    assert stats.format_accuracy(float("nan"), 500) == "-"


# ---------------------------------------------------------------------------- kdviz evaluate


def test_evaluate_json_has_the_wilson_interval_and_per_class_accuracy(capsys):
    import json

    from kdviz.cli import main
    from kdviz.data import load_dataset
    from kdviz.engine import dataset_logits
    from kdviz.paths import PRETRAINED_DIR

    teacher = str(PRETRAINED_DIR / "mnist5k-teacher")
    assert main(["evaluate", teacher, "--dataset", "mnist5k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    test = load_dataset("mnist5k", "test")
    right = dataset_logits(teacher, "mnist5k", "test").argmax(-1) == test.labels
    k, n = int(right.sum()), len(test)
    assert out["n"] == n and out["accuracy"] == pytest.approx(k / n)
    # the interval by the score test solved independently, with z = 1.96
    assert out["accuracy_ci"] == pytest.approx(list(_score_test_roots(k, n, 1.96)), abs=1e-12)
    per = out["per_class"]
    assert [p["name"] for p in per] == list(test.class_names)
    assert sum(p["n"] for p in per) == n and sum(p["correct"] for p in per) == k
    for c, p in enumerate(per):
        mask = test.labels == c
        assert p["n"] == int(mask.sum()) and p["correct"] == int(right[mask].sum())
        assert p["accuracy_ci"] == pytest.approx(
            list(_score_test_roots(p["correct"], p["n"], 1.96)), abs=1e-12
        )
    assert main(["evaluate", teacher, "--dataset", "mnist5k"]) == 0
    text = capsys.readouterr().out
    low, high = out["accuracy_ci"]
    assert f"95% CI {low:.2%} to {high:.2%}" in text and "worst class" in text
