"""The math of soft targets: pure functions of logit tensors (softening, KL, calibration, DKD).

No I/O and no state. The UI, the losses, the analysis and the tests all call these functions.
Shapes: N samples, K classes, M temperatures. Labels are class indices in [0, K); the metric
functions leave out rows labelled -1 (kdviz's "no label" marker) unless stated otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from kdviz.errors import KdvizError

# Search range for calibration_temperature (both ends included).
MIN_CALIBRATION_TEMPERATURE = 0.05
MAX_CALIBRATION_TEMPERATURE = 20.0


# --------------------------------------------------------------------------- helpers


def _check_temperature(temperature: float) -> None:
    # `not (t > 0)` also catches nan.
    if not temperature > 0:
        raise KdvizError(f"Temperature must be a positive number (got {temperature}); pick T > 0.")


def _check_same_shape(teacher_logits: Tensor, student_logits: Tensor) -> None:
    if teacher_logits.shape != student_logits.shape:
        raise KdvizError(
            f"Teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ in shape; use a teacher and a student "
            "trained on the same classes and the same images."
        )


def _check_num_classes(scores: Tensor, num_classes: int) -> None:
    if scores.shape[-1] != num_classes:
        raise KdvizError(
            f"Got {scores.shape[-1]} class scores per sample but num_classes={num_classes}; "
            "pass the class count of the model that made them."
        )


def _labelled(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Drop rows labelled -1 (no label) and reject labels >= K: (N,K),(N,) -> (n,K),(n,)."""
    if scores.shape[0] != labels.shape[0]:
        raise KdvizError(
            f"Got {scores.shape[0]} score rows but {labels.shape[0]} labels; "
            "pass one label per sample."
        )
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep]
    num_classes = scores.shape[-1]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise KdvizError(
            f"Found label {int(labels.max())} but the scores have only {num_classes} classes; "
            "use a model trained on this dataset's classes."
        )
    return scores, labels


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """sum_k p_k (log p_k - log q_k) per row, from log-probabilities: (..., K) -> (...).

    Entries with p_k = 0 (log p_k = -inf, e.g. a masked class) contribute 0 and, unlike
    F.kl_div, give finite gradients even where log q_k is -inf too.
    """
    present = torch.isfinite(log_p)  # p_k > 0
    safe_log_p = torch.where(present, log_p, 0.0)
    safe_log_q = torch.where(present, log_q, 0.0)
    terms = torch.where(present, safe_log_p.exp() * (safe_log_p - safe_log_q), 0.0)
    return terms.sum(-1)


# --------------------------------------------------------------------------- soft targets


_SMALL_K = 64  # up to this many classes, soften() uses the hand-written softmax below


def soften(logits: Tensor, temperature: float) -> Tensor:
    """Soft targets: q_i = exp(z_i / T) / sum_j exp(z_j / T).

    Source: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531, eq. (1). T = 1 is the ordinary softmax; larger T spreads mass onto
    the classes the model did not pick (the "dark knowledge").

    Args:
        logits: (..., K) class scores z.
        temperature: T > 0.

    Returns:
        (..., K) probabilities, each row sums to 1.
    """
    _check_temperature(temperature)
    scaled = logits / temperature  # (..., K)
    if scaled.requires_grad or scaled.shape[-1] > _SMALL_K:
        return torch.softmax(scaled, dim=-1)
    # For a few classes torch.softmax over a short last dim is ~5x slower on CPU than this
    # (same maths: shift by the row max, exponentiate, normalise); the explorer softens on
    # every temperature change, so it pays.
    scaled = scaled - scaled.amax(dim=-1, keepdim=True)
    weights = scaled.exp_()
    return weights.div_(weights.sum(dim=-1, keepdim=True))


def log_soften(logits: Tensor, temperature: float) -> Tensor:
    """log q_i = z_i / T - logsumexp_j(z_j / T), computed stably (never log of softmax).

    Source: Hinton, Vinyals & Dean 2015, arXiv:1503.02531, eq. (1), in log space.

    Args:
        logits: (..., K) class scores z; -inf entries are allowed (that class gets q = 0).
        temperature: T > 0.

    Returns:
        (..., K) log-probabilities.
    """
    _check_temperature(temperature)
    return torch.log_softmax(logits / temperature, dim=-1)  # (..., K)


def temperature_curve(logits: Tensor, temperatures: Tensor | Sequence[float]) -> Tensor:
    """Soft targets at many temperatures at once: out[m] = softmax(z / T_m).

    Source: Hinton, Vinyals & Dean 2015, arXiv:1503.02531, eq. (1). Vectorised over T.

    Args:
        logits: (K,) or (N, K) class scores.
        temperatures: (M,) temperatures, each > 0.

    Returns:
        (M, K) for (K,) logits, (M, N, K) for (N, K) logits.
    """
    temps = torch.as_tensor(temperatures, dtype=logits.dtype, device=logits.device).reshape(-1)
    if temps.numel() and not bool((temps > 0).all()):
        raise KdvizError("Every temperature must be a positive number; pick values above 0.")
    temps = temps.reshape(-1, *([1] * logits.dim()))  # (M, 1) or (M, 1, 1)
    return torch.softmax(logits.unsqueeze(0) / temps, dim=-1)  # (M, K) or (M, N, K)


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats: H(p) = -sum_i p_i log p_i, with 0 log 0 = 0.

    Bounded by 0 (one-hot) and log K (uniform). Source: Shannon 1948; used to read how
    "soft" a soft target is (Hinton, Vinyals & Dean 2015, arXiv:1503.02531).

    Args:
        probs: (..., K) probabilities.

    Returns:
        (...,) entropies.
    """
    return torch.special.entr(probs).sum(-1)  # (...,)


def dark_mass(probs: Tensor, labels: Tensor | None = None) -> Tensor:
    """Probability put on the classes not picked: 1 - max_i p_i, or 1 - p_y given labels y.

    The "dark knowledge" of Hinton, Vinyals & Dean 2015 (arXiv:1503.02531) lives in this
    mass. Without labels it lies in [0, 1 - 1/K]; with labels in [0, 1]. It equals
    1 - p_t, the weight a teacher gives NCKD in Zhao et al. 2022 (arXiv:2203.08679).

    Args:
        probs: (N, K) probabilities.
        labels: optional (N,) true classes; rows labelled -1 get nan.

    Returns:
        (N,) dark mass.
    """
    if labels is None:
        return 1.0 - probs.max(dim=-1).values  # (N,)
    p_true = probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N,)
    return torch.where(labels >= 0, 1.0 - p_true, torch.nan)


def class_similarity(probs: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean soft target per true class: S[c, j] = mean_{n: y_n = c} p_j(x_n).

    Row c says which classes the model thinks images of class c resemble; off-diagonal
    mass is dark knowledge (Hinton, Vinyals & Dean 2015, arXiv:1503.02531, section 3).

    Args:
        probs: (N, K) probabilities (e.g. soften(logits, T)).
        labels: (N,) true classes; rows labelled -1 are left out.
        num_classes: K.

    Returns:
        (K, K) matrix; rows of classes with no samples are nan.
    """
    _check_num_classes(probs, num_classes)
    probs, labels = _labelled(probs, labels)
    sums = probs.new_zeros(num_classes, num_classes).index_add_(0, labels, probs)  # (K, K)
    counts = torch.bincount(labels, minlength=num_classes).to(probs.dtype)  # (K,)
    rows = sums / counts.clamp(min=1).unsqueeze(-1)
    return torch.where(counts.unsqueeze(-1) > 0, rows, torch.nan)


def kl_divergence(
    teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """KL(p_T || q_T) = sum_i p_i (log p_i - log q_i), per sample.

    p = softmax(v / T) is the teacher's soft target, q = softmax(z / T) the student's.
    Source: Hinton, Vinyals & Dean 2015, arXiv:1503.02531 (the soft-target term of the
    distillation loss, up to the teacher's entropy, which does not depend on the student).

    Args:
        teacher_logits: (N, K) teacher logits v.
        student_logits: (N, K) student logits z.
        temperature: T > 0.

    Returns:
        (N,) non-negative divergences in nats.
    """
    _check_same_shape(teacher_logits, student_logits)
    log_p = log_soften(teacher_logits, temperature)  # (N, K)
    log_q = log_soften(student_logits, temperature)  # (N, K)
    return _kl_rows(log_p, log_q)  # (N,)


# --------------------------------------------------------------------------- metrics


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: mean_n [argmax_i z_ni = y_n] over labelled rows (nan if none)."""
    logits, labels = _labelled(logits, labels)
    if labels.numel() == 0:
        return math.nan
    return (logits.argmax(-1) == labels).double().mean().item()


def agreement(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Top-1 agreement: mean_n [argmax v_n = argmax z_n], the fraction of samples where the
    student picks the teacher's class (nan for no samples)."""
    _check_same_shape(teacher_logits, student_logits)
    if teacher_logits.shape[0] == 0:
        return math.nan
    same = teacher_logits.argmax(-1) == student_logits.argmax(-1)  # (N,)
    return same.double().mean().item()


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood: -mean_n log softmax(z_n / T)[y_n], over labelled rows.

    With T = 1 this is the cross-entropy; as a function of T it is what temperature
    scaling minimises (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern
    Neural Networks", ICML, arXiv:1706.04599). nan if no row is labelled.
    """
    logits, labels = _labelled(logits, labels)
    if labels.numel() == 0:
        return math.nan
    log_q = log_soften(logits, temperature)  # (n, K)
    return -log_q.gather(-1, labels.unsqueeze(-1)).double().mean().item()


def confusion_matrix(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """C[i, j] = number of samples of true class i predicted as class j (argmax).

    Args:
        logits: (N, K) scores.
        labels: (N,) true classes; rows labelled -1 are left out.
        num_classes: K.

    Returns:
        (K, K) int64, rows true, columns predicted.
    """
    _check_num_classes(logits, num_classes)
    logits, labels = _labelled(logits, labels)
    cells = labels * num_classes + logits.argmax(-1)  # (n,) flat index of (true, pred)
    counts = torch.bincount(cells, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.int64)


def reliability_bins(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Reliability diagram: per confidence bin, the mean confidence, accuracy and count.

    Confidence is the top probability max_i softmax(z)_i. Bins are equal-width on [0, 1],
    bin b = (b/B, (b+1)/B] (lower edge open, upper closed), the convention of Guo, Pleiss,
    Sun & Weinberger 2017 (arXiv:1706.04599) and its reference code.

    Args:
        logits: (N, K) scores.
        labels: (N,) true classes; rows labelled -1 are left out.
        n_bins: B.

    Returns:
        dict of (B,) tensors: "lower", "upper", "confidence", "accuracy" (float64; nan for
        empty bins) and "count" (int64).
    """
    if n_bins < 1:
        raise KdvizError(f"n_bins must be at least 1 (got {n_bins}); pick e.g. 15.")
    logits, labels = _labelled(logits, labels)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=logits.device)
    conf, pred = torch.softmax(logits.double(), dim=-1).max(dim=-1)  # (n,), (n,)
    correct = (pred == labels).double()  # (n,)
    # bucketize(right=False) gives i with edges[i-1] < conf <= edges[i]: bin i - 1.
    bins = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)  # (n,)
    count = torch.bincount(bins, minlength=n_bins)  # (B,)
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)  # (B,)
    correct_sum = torch.bincount(bins, weights=correct, minlength=n_bins)  # (B,)
    filled = count > 0
    denom = count.clamp(min=1).double()
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "confidence": torch.where(filled, conf_sum / denom, torch.nan),
        "accuracy": torch.where(filled, correct_sum / denom, torch.nan),
        "count": count.to(torch.int64),
    }


def ece(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error: ECE = sum_b (n_b / n) |acc(b) - conf(b)|.

    Equal-width confidence bins as in reliability_bins. Source: Naeini, Cooper & Hauskrecht
    2015; Guo, Pleiss, Sun & Weinberger 2017 (arXiv:1706.04599), eq. (3), with 15 bins.
    nan if no row is labelled.
    """
    bins = reliability_bins(logits, labels, n_bins)
    count = bins["count"]
    total = int(count.sum())
    if total == 0:
        return math.nan
    filled = count > 0
    gaps = (bins["accuracy"][filled] - bins["confidence"][filled]).abs()  # (filled,)
    return float((count[filled].double() / total * gaps).sum())


def calibration_temperature(logits: Tensor, labels: Tensor) -> float:
    """Temperature scaling: T* = argmin_T NLL(softmax(z / T), y) over T in [0.05, 20].

    Source: Guo, Pleiss, Sun & Weinberger 2017 (arXiv:1706.04599), section 4.2.
    With beta = 1/T, NLL(beta) = mean_n [logsumexp(beta z_n) - beta z_ny] is convex:
    NLL'(beta) = mean_n [E_{softmax(beta z_n)}[z] - z_ny] is non-decreasing and
    NLL''(beta) = mean_n Var_{softmax(beta z_n)}[z] >= 0. T* is the root of NLL', found in
    float64 by Newton steps kept inside a shrinking bracket (bisection when a step would
    leave it): deterministic, a handful of passes over the logits, no step size to tune.
    Returns an end of the range when the optimum lies outside it (e.g. 0.05 for a model
    that is right on every sample), and 1.0 when the NLL does not depend on T.

    Args:
        logits: (N, K) scores (e.g. on a held-out validation split).
        labels: (N,) true classes; rows labelled -1 are left out.

    Returns:
        T* as a float.
    """
    logits, labels = _labelled(logits, labels)
    if labels.numel() == 0:
        raise KdvizError("Temperature scaling needs labelled samples; pass a labelled split.")
    z = logits.detach().double()  # (n, K)
    z_true = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (n,)

    def derivatives(beta: float) -> tuple[float, float]:  # NLL'(beta), NLL''(beta)
        p = torch.softmax(z * beta, dim=-1)  # (n, K)
        mean_z = (p * z).sum(-1)  # (n,)
        var_z = (p * (z - mean_z.unsqueeze(-1)) ** 2).sum(-1)  # (n,)
        return float((mean_z - z_true).mean()), float(var_z.mean())

    lo = 1.0 / MAX_CALIBRATION_TEMPERATURE  # small beta = high T
    hi = 1.0 / MIN_CALIBRATION_TEMPERATURE
    slope_lo, slope_hi = derivatives(lo)[0], derivatives(hi)[0]
    if slope_lo >= 0 and slope_hi <= 0:  # flat: every T fits equally well
        return 1.0
    if slope_lo >= 0:
        return MAX_CALIBRATION_TEMPERATURE
    if slope_hi <= 0:
        return MIN_CALIBRATION_TEMPERATURE
    beta = 1.0  # start at T = 1; the bracket [lo, hi] always holds the root
    for _ in range(100):
        slope, curvature = derivatives(beta)
        if slope == 0:
            break
        if slope < 0:
            lo = beta
        else:
            hi = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if abs(step - beta) <= 1e-12 * beta:  # Newton has converged
            beta = step
            break
        if not lo < step < hi:  # Newton would leave the bracket (or nan): bisect in log beta
            step = math.sqrt(lo * hi)
        beta = step
        if hi - lo <= 1e-12 * hi:
            break
    return 1.0 / beta


# --------------------------------------------------------------------------- decoupled KD


def dkd_parts(
    teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, temperature: float
) -> dict[str, Tensor]:
    """Decoupled KD: split KL(p_T || q_T) into target-class and non-target-class parts.

    Source: Zhao, Cui, Song, Qiu & Liang 2022, "Decoupled Knowledge Distillation",
    arXiv:2203.08679, eq. (7). With t the target class, b = [p_t, 1 - p_t] the binary
    target/non-target distribution and p_hat_i = p_i / (1 - p_t) (i != t) the renormalised
    non-target distribution, all at temperature T:

        TCKD = KL(b^teacher || b^student)
        NCKD = KL(p_hat^teacher || p_hat^student)      (the dark knowledge)
        KD   = KL(p || q) = TCKD + (1 - p_t^teacher) * NCKD

    so a confident teacher (p_t -> 1) suppresses NCKD. p_hat is computed as the log-softmax
    of the logits with the target masked to -inf, and log(1 - p_t) as a logsumexp over the
    non-target log-probabilities, so nothing takes the log of a softmax.

    Args:
        teacher_logits: (N, K) teacher logits, K >= 2.
        student_logits: (N, K) student logits.
        labels: (N,) target classes; rows labelled -1 use the teacher's argmax.
        temperature: T > 0.

    Returns:
        dict of (N,) tensors: "tckd", "nckd", "weight" (= 1 - p_t of the teacher at T),
        "kd" (= KL(p_T || q_T)).
    """
    _check_same_shape(teacher_logits, student_logits)
    num_classes = teacher_logits.shape[-1]
    if num_classes < 2:
        raise KdvizError("Decoupled KD needs at least 2 classes; use a model with K >= 2.")
    target = torch.where(labels >= 0, labels, teacher_logits.argmax(-1))  # (N,)
    classes = torch.arange(num_classes, device=target.device)
    is_target = classes == target.unsqueeze(-1)  # (N, K); no one_hot: it syncs on CUDA

    def split(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_p = log_soften(logits, temperature)  # (N, K)
        log_target = log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,) log p_t
        log_rest = torch.logsumexp(log_p.masked_fill(is_target, -math.inf), -1)  # log(1-p_t)
        log_binary = torch.stack([log_target, log_rest], dim=-1)  # (N, 2) log b
        log_hat = log_soften(logits.masked_fill(is_target, -math.inf), temperature)  # (N, K)
        return log_p, log_binary, log_hat

    log_p, log_b_teacher, log_hat_teacher = split(teacher_logits)
    log_q, log_b_student, log_hat_student = split(student_logits)
    return {
        "tckd": _kl_rows(log_b_teacher, log_b_student),  # (N,)
        "nckd": _kl_rows(log_hat_teacher, log_hat_student),  # (N,)
        "weight": log_b_teacher[:, 1].exp(),  # (N,) 1 - p_t^teacher
        "kd": _kl_rows(log_p, log_q),  # (N,)
    }


# --------------------------------------------------------------------------- large tables


def calibration_temperature_chunked(
    logits: Tensor, labels: Tensor, chunk: int = 4096, rtol: float = 1e-6
) -> float:
    """calibration_temperature for tables too big to copy to float64 (e.g. 50,000 x 1,000).

    The same bracketed Newton search on beta = 1/T (Guo, Pleiss, Sun & Weinberger 2017,
    arXiv:1706.04599, section 4.2), but NLL'(beta) and NLL''(beta) are summed over ``chunk``
    rows at a time: each chunk is softened in float32 (its rows shifted by their max first) and
    its sums are added in float64. Stops when a Newton step moves beta by less than ``rtol``
    relative, so T* agrees with calibration_temperature to about rtol.

    Args:
        logits: (N, K) scores; labels: (N,) true classes, rows labelled -1 are left out.

    Returns:
        T* as a float, in [MIN_CALIBRATION_TEMPERATURE, MAX_CALIBRATION_TEMPERATURE].
    """
    all_in_range = (
        labels.numel() and bool((labels >= 0).all()) and int(labels.max()) < logits.shape[-1]
    )
    if not (all_in_range and logits.shape[0] == labels.shape[0]):
        logits, labels = _labelled(logits, labels)  # a copy: only when rows must go (or raise)
    if labels.numel() == 0:
        raise KdvizError("Temperature scaling needs labelled samples; pass a labelled split.")
    n = labels.numel()

    def derivatives(beta: float) -> tuple[float, float]:  # NLL'(beta), NLL''(beta)
        slope = curvature = 0.0
        for start in range(0, n, chunk):
            z = logits[start : start + chunk].detach().float()  # (c, K)
            z = z - z.amax(-1, keepdim=True)  # shifting z leaves E[z] - z_y and Var[z] alone
            y = labels[start : start + chunk]
            p = torch.softmax(z * beta, dim=-1)
            mean_z = (p * z).sum(-1)  # (c,)
            var_z = (p * (z - mean_z.unsqueeze(-1)).square()).sum(-1)  # (c,)
            z_true = z.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            slope += float((mean_z - z_true).double().sum())
            curvature += float(var_z.double().sum())
        return slope / n, curvature / n

    lo = 1.0 / MAX_CALIBRATION_TEMPERATURE
    hi = 1.0 / MIN_CALIBRATION_TEMPERATURE
    slope_lo, slope_hi = derivatives(lo)[0], derivatives(hi)[0]
    if slope_lo >= 0 and slope_hi <= 0:
        return 1.0
    if slope_lo >= 0:
        return MAX_CALIBRATION_TEMPERATURE
    if slope_hi <= 0:
        return MIN_CALIBRATION_TEMPERATURE
    beta = 1.0
    for _ in range(100):
        slope, curvature = derivatives(beta)
        if slope == 0:
            break
        lo, hi = (beta, hi) if slope < 0 else (lo, beta)
        step = beta - slope / curvature if curvature > 0 else math.nan
        if abs(step - beta) <= rtol * beta:
            beta = step
            break
        beta = step if lo < step < hi else math.sqrt(lo * hi)
        if hi - lo <= rtol * hi:
            break
    return 1.0 / beta
