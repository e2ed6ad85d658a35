"""How sure a number is: intervals for accuracies, for paired differences, over seeds, and a verdict
against a published value. Pure functions of counts, arrays and tensors (numpy/torch only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

__all__ = [
    "VERDICTS",
    "PairedDifference",
    "accuracy_summary",
    "correct_vector",
    "format_accuracy",
    "format_interval",
    "mean_sd_interval",
    "newcombe_paired_interval",
    "paired_difference",
    "paired_difference_text",
    "t_quantile",
    "verdict",
    "wilson_interval",
]

Z95 = 1.96  # the standard normal's 97.5% quantile (1.95996...), as usually rounded: two-sided 95%
VERDICTS = ("agrees", "inconclusive", "disagrees")


# ---------------------------------------------------------------------------- one accuracy


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (Wilson 1927, JASA 22:209-212).

    With p = successes / n, the interval is the set of true rates whose score test does not
    reject p at level z:

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        (low, high) = centre -/+ halfwidth

    Unlike the Wald interval p -/+ z sqrt(p (1 - p) / n) it stays inside [0, 1] and is not
    zero-width at p = 0 or 1 (a model with 500 of 500 right is 99.2%-100%, not exactly 100%).
    z = 1.96 gives 95%. n = 0 gives (0, 1): nothing is known.
    """
    n, k = int(n), int(successes)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n (got {k} of {n})")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # exact ends at k = 0 and k = n (the formula gives them up to rounding)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


# ---------------------------------------------------------------------------- two models, same images


class PairedDifference(NamedTuple):
    """Accuracy of model A minus accuracy of model B on the same n images, with its interval."""

    diff: float  # acc_A - acc_B = (only_a - only_b) / n
    low: float
    high: float
    within_noise: bool  # the interval contains 0: the data cannot tell the two apart
    n: int
    only_a: int  # images A gets right and B gets wrong
    only_b: int  # images B gets right and A gets wrong


def newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, z: float = Z95
) -> tuple[float, float, float]:
    """(diff, low, high) for the difference of two paired proportions: Newcombe's hybrid score
    interval (Newcombe 1998, Statistics in Medicine 17:2635-2650, method 10; as in Fagerland,
    Lydersen & Laake 2017, "Statistical Analysis of Contingency Tables", section 8.5).

    Counts of the paired 2x2 table: ``both`` right, ``only_a``, ``only_b``, ``neither``; n = the sum.
    p1 = (both + only_a) / n, p2 = (both + only_b) / n, D = p1 - p2. With (l1, u1), (l2, u2) the
    Wilson intervals of p1 and p2 and phi the (continuity-corrected) correlation of the pairs,

        A   = both * neither - only_a * only_b
        phi = (A - n/2) / sqrt(r1 r2 c1 c2)   if A > n/2
              0                               if 0 <= A <= n/2
              A / sqrt(r1 r2 c1 c2)           if A < 0       (r, c: the table's margins)
        low  = D - sqrt((p1 - l1)^2 + (u2 - p2)^2 - 2 phi (p1 - l1)(u2 - p2))
        high = D + sqrt((p2 - l2)^2 + (u1 - p1)^2 - 2 phi (p2 - l2)(u1 - p1))

    Pairing matters: two models that make mostly the same mistakes have a much narrower interval
    for their difference than two independent samples would (McNemar's insight: only the
    discordant images, only_a and only_b, carry information about the difference).
    """
    counts = [int(both), int(only_a), int(only_b), int(neither)]
    if min(counts) < 0:
        raise ValueError(f"counts must be >= 0 (got {counts})")
    a, b, c, d = counts
    n = a + b + c + d
    if n == 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    diff = p1 - p2
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    low_sq = (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
    high_sq = (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)
    low = max(-1.0, diff - math.sqrt(max(low_sq, 0.0)))
    high = min(1.0, diff + math.sqrt(max(high_sq, 0.0)))
    return diff, low, high


def paired_difference(correct_a: Any, correct_b: Any, z: float = Z95) -> PairedDifference:
    """acc_A - acc_B with Newcombe's paired interval, from two boolean vectors (N,) saying which
    images each model gets right (``predictions == labels``). ``within_noise``: 0 is inside it."""
    a = _as_bool(correct_a)
    b = _as_bool(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on different images ({a.shape} vs {b.shape})")
    both, only_a = int((a & b).sum()), int((a & ~b).sum())
    only_b, neither = int((~a & b).sum()), int((~a & ~b).sum())
    diff, low, high = newcombe_paired_interval(both, only_a, only_b, neither, z)
    return PairedDifference(diff, low, high, low <= 0.0 <= high, a.size, only_a, only_b)


def _as_bool(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(bool).reshape(-1)


# ---------------------------------------------------------------------------- several seeds


def t_quantile(prob: float, df: float) -> float:
    """The Student t distribution's quantile: the x with P(T <= x) = prob, df degrees of freedom.

    The CDF is 1 - I_{df/(df+x^2)}(df/2, 1/2) / 2 for x >= 0 (I: the regularised incomplete beta
    function, by its continued fraction, Numerical Recipes 6.4); the quantile is found by
    bisection. Used for the t-interval over seeds, where df = seeds - 1 is small.
    """
    if not 0.0 < prob < 1.0 or df <= 0:
        raise ValueError(f"need 0 < prob < 1 and df > 0 (got {prob}, {df})")
    if prob < 0.5:
        return -t_quantile(1.0 - prob, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < prob:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_cdf(mid, df) < prob else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _t_cdf(x: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b
    return front * _beta_fraction(a, b, x) / a


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def mean_sd_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean, sd, low, high) of a measure repeated over seeds: the t-interval (Student 1908)

        mean -/+ t_{(1 + confidence) / 2, k - 1} * sd / sqrt(k)

    with sd the sample standard deviation (ddof = 1) of the k values. It is an interval for the
    mean over seeds, so it narrows with more seeds; with one value sd and the interval are NaN.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[np.isfinite(x)]
    k = len(x)
    if k == 0:
        nan = float("nan")
        return nan, nan, nan, nan
    mean = float(x.mean())
    if k == 1:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, k - 1) * sd / math.sqrt(k)
    return mean, sd, mean - half, mean + half


# ---------------------------------------------------------------------------- verdicts


def verdict(
    ours: tuple[float, float], published: float | tuple[float, float], tolerance: float = 0.01
) -> str:
    """Our interval against a published result: "agrees", "inconclusive" or "disagrees".

    The published result is a region R: a number p stands for [p - tolerance, p + tolerance] (how
    far off still counts as the same result), a pair (lo, hi) is the region itself, e.g.
    (0, inf) for "distillation beats the hard-label baseline" against a paired difference.
    With our 95% interval I = [low, high]:

        agrees        I lies inside R       (the whole plausible range is consistent with it)
        disagrees     I and R do not meet   (every plausible value contradicts it)
        inconclusive  otherwise             (I straddles R's edge, or is wider than R: the
                                             data cannot tell; more images or seeds would)

    This is the logic of an equivalence test (two one-sided tests, Schuirmann 1987) read from
    the interval: a point estimate alone never decides it. A NaN interval is "inconclusive".
    """
    low, high = float(ours[0]), float(ours[1])
    if isinstance(published, tuple | list):
        r_low, r_high = float(published[0]), float(published[1])
    else:
        r_low, r_high = float(published) - tolerance, float(published) + tolerance
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return "inconclusive"
    if high < r_low or low > r_high:
        return "disagrees"
    if r_low <= low and high <= r_high:
        return "agrees"
    return "inconclusive"


# ---------------------------------------------------------------------------- a model's accuracy


def accuracy_summary(
    logits: Tensor, labels: Tensor, class_names: Sequence[str] | None = None, z: float = Z95
) -> dict[str, Any]:
    """Accuracy with its Wilson interval, overall and per class, from logits (N, K) and labels
    (N,): {"n", "correct", "accuracy", "accuracy_ci": [low, high], "per_class": [{"class",
    "name", "n", "correct", "accuracy", "accuracy_ci"}, ...]} (JSON-ready). A class with no
    image has accuracy None and the interval [0, 1]."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, K) and labels (N,) (got {tuple(logits.shape)}, {tuple(labels.shape)})")  # fmt: skip
    k = logits.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    labels = labels.reshape(-1).long().cpu()
    right = logits.detach().argmax(-1).cpu() == labels  # (N,)
    n, correct = int(labels.numel()), int(right.sum())
    per_class = []
    for c in range(k):
        mask = labels == c
        n_c, correct_c = int(mask.sum()), int(right[mask].sum())
        per_class.append(
            {
                "class": c,
                "name": names[c] if c < len(names) else str(c),
                "n": n_c,
                "correct": correct_c,
                "accuracy": correct_c / n_c if n_c else None,
                "accuracy_ci": list(wilson_interval(correct_c, n_c, z)),
            }
        )
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci": list(wilson_interval(correct, n, z)),
        "per_class": per_class,
    }


def correct_vector(logits: Tensor, labels: Tensor) -> Tensor:
    """(N,) bool: which images the model gets right (the input of ``paired_difference``)."""
    return logits.detach().argmax(-1).cpu() == labels.reshape(-1).long().cpu()


# ---------------------------------------------------------------------------- text


def format_interval(low: float, high: float, digits: int = 1) -> str:
    """'95.6–98.5' (percent, en dash)."""
    return f"{100 * low:.{digits}f}–{100 * high:.{digits}f}"


def format_accuracy(accuracy: float, n: int, digits: int = 1) -> str:
    """'97.4% (95.6–98.5)': an accuracy measured on n images with its 95% Wilson interval."""
    if n <= 0 or accuracy is None or not math.isfinite(accuracy):
        return "-"
    low, high = wilson_interval(round(accuracy * n), n)
    return f"{100 * accuracy:.{digits}f}% ({format_interval(low, high, digits)})"


def paired_difference_text(
    result: PairedDifference, name_a: str = "A", name_b: str = "B", digits: int = 1
) -> str:
    """One sentence: '+2.4 pts (95% CI +0.8 to +4.0): A is better than B.' or '... within noise:
    these n images cannot tell A and B apart.'"""
    d, lo, hi = (100 * v for v in (result.diff, result.low, result.high))
    head = f"{d:+.{digits}f} pts (95% CI {lo:+.{digits}f} to {hi:+.{digits}f})"
    if result.within_noise:
        return f"{head}: within noise; these {result.n} images cannot tell {name_a} and {name_b} apart."  # fmt: skip
    better, worse = (name_a, name_b) if result.diff > 0 else (name_b, name_a)
    return f"{head}: {better} is better than {worse} beyond noise."
