"""Soft-target transforms of the experiments: each maps the teacher's logits (N, K) on the transfer
set to the logits the student matches at temperature T (softmax(out / T) is the transformed soft
target; -inf marks a class with p = 0), plus the measures and the bias step the experiments use."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from kdviz import engine, soft
from kdviz.engine import DistillConfig, RunResult
from kdviz.errors import KdvizError


def top_k_logits(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row, -inf elsewhere: softmax(out / T) is the teacher's soft
    target at T restricted to its top k classes and renormalised. (N, K) -> (N, K)."""
    k = max(1, min(int(k), logits.shape[-1]))
    top = logits.topk(k, dim=-1).indices  # (N, k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
    return logits.masked_fill(~keep, float("-inf"))


def shuffle_non_target(logits: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """DKPP, Dark Knowledge with Permuted Predictions (Furlanello et al. 2018, arXiv:1805.04770).

    The true class keeps its logit; the other K - 1 logits are randomly permuted within each row.
    Softmax commutes with permutations, so at every T the target probability is unchanged and the
    non-target probabilities are the same set of values on the wrong classes: the amount of dark
    knowledge survives, its meaning (which classes look alike) does not. (Furlanello permute the
    non-argmax outputs; for a correct teacher the argmax is the true class.) (N, K) -> (N, K).
    """
    n, k = logits.shape
    cols = torch.arange(k, device=logits.device).expand(n, k)  # (N, K)
    others = cols[cols != labels.unsqueeze(-1)].view(n, k - 1)  # (N, K-1) non-target columns
    order = torch.rand(n, k - 1, generator=generator).argsort(dim=-1).to(logits.device)
    sources = others.gather(-1, order)  # (N, K-1) where each non-target value comes from
    return logits.clone().scatter_(-1, others, logits.gather(-1, sources))


def virtual_teacher_logits(
    labels: Tensor, num_classes: int, target_prob: float, temperature: float
) -> Tensor:
    """Yuan et al. 2020's manually designed "virtual teacher" (Tf-KD_reg, arXiv:1909.11723).

    p_k = a for the true class, (1 - a) / (K - 1) for every other class: label smoothing as a
    teacher, with no similarity structure at all. Returned as logits T * log p, so that
    softmax(out / T) = p exactly. (N,) -> (N, K).
    """
    if not 0.0 < target_prob < 1.0:
        raise KdvizError("The virtual teacher's target probability must be in (0, 1).")
    rest = (1.0 - target_prob) / (num_classes - 1)
    probs = torch.full((len(labels), num_classes), rest)
    probs.scatter_(-1, labels.clamp(min=0).unsqueeze(-1), target_prob)
    return temperature * probs.log()


def teacher_max_weights(logits: Tensor) -> Tensor:
    """CWTM, Confidence-Weighted by Teacher Max (Furlanello et al. 2018): each example's hard-label
    loss is weighted by the teacher's top probability max_k p_k at T = 1. (N, K) -> (N,)."""
    return soft.soften(logits, 1.0).max(dim=-1).values


def dark_structure(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """How much structure the non-target probabilities carry, in nats (0 = none).

    p_hat = the soft target at T over the K - 1 wrong classes, renormalised (the NCKD
    distribution of Zhao et al. 2022); structure = mean over examples of KL(p_hat || uniform)
    = log(K - 1) - H(p_hat). A label-smoothed teacher pushes p_hat towards uniform (Müller,
    Kornblith & Hinton 2019: smoothing erases the similarity information distillation uses).
    """
    n, k = logits.shape
    probs = soft.soften(logits.double(), temperature)  # (N, K)
    mask = torch.ones_like(probs, dtype=torch.bool)
    mask.scatter_(-1, labels.unsqueeze(-1), False)
    rest = probs[mask].view(n, k - 1)
    p_hat = rest / rest.sum(-1, keepdim=True).clamp_min(1e-300)  # (N, K-1)
    return float((math.log(k - 1) - soft.entropy(p_hat)).mean())


def bias_for_share(logits: Tensor, cls: int, share: float) -> float:
    """The smallest bias b >= 0 such that adding b to logit ``cls`` makes ``cls`` the prediction on
    (about) a fraction ``share`` of the rows. No labels are used: chosen on a validation split so
    the class's predicted share matches its prior. (N, K) -> float.

    Row n predicts ``cls`` once b > margin_n = max_{j != cls} z_nj - z_n,cls, so the predicted
    share is a step function of b; b sits half-way between the two margins around the target count.
    """
    others = logits.clone()
    others[:, cls] = float("-inf")
    margins = (others.max(dim=-1).values - logits[:, cls]).sort().values  # (N,)
    count = int(round(share * len(margins)))
    if count <= 0 or len(margins) == 0:
        return 0.0
    upper = margins[count] if count < len(margins) else margins[-1] + 1.0
    bias = float((margins[count - 1] + upper) / 2)
    return max(0.0, bias)


def shift_class(logits: Tensor, cls: int, bias: float) -> Tensor:
    """Logits with ``bias`` added to class ``cls`` (the student's output bias raised)."""
    out = logits.clone()
    out[:, cls] += bias
    return out


def fit_transformed(
    cfg: DistillConfig,
    *,
    teacher_transform: Callable[[Tensor, Tensor], Tensor] | None = None,
    sample_weight: Callable[[Tensor, Tensor], Tensor] | None = None,
    **kwargs: Any,
) -> RunResult:
    """``engine.fit`` for KD on a fixed transfer set, with the two teacher hooks (see its doc)."""
    return engine.fit(
        cfg, teacher_transform=teacher_transform, sample_weight=sample_weight, **kwargs
    )
