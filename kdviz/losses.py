"""Distillation losses (KD, logit MSE, DKD): each returns a dict of its parts, "loss" is minimised.

The math lives in kdviz.soft; this module only weighs and averages it. The parts are the
weighted terms that enter the sum, so loss == kd_loss + task_loss (as in timm's distillation
task). No .item() and no Python loops over samples: these run inside the training loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kdviz.errors import KdvizError
from kdviz.soft import _check_same_shape, dkd_parts, kl_divergence, log_soften

LossFn = Callable[..., dict[str, Tensor]]


def _cross_entropy(student_logits: Tensor, labels: Tensor) -> Tensor:
    """CE(y, q_1) averaged over labelled rows; rows labelled -1 are ignored, 0 if none."""
    labelled = labels >= 0  # (N,)
    log_q = log_soften(student_logits, 1.0)  # (N, K)
    picked = log_q.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N,)
    total = -torch.where(labelled, picked, 0.0).sum()
    return total / labelled.sum().clamp(min=1)  # a tensor count: no host sync


def _center(logits: Tensor) -> Tensor:
    return logits - logits.mean(dim=-1, keepdim=True)  # (N, K) zero-mean rows


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    sample_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    r"""A standard knowledge distillation (KD) loss.

    .. math::

       L_{KD} = \alpha \cdot \tau^2 \cdot KL(p_\tau \| q_\tau) + (1 - \alpha) \cdot L_{CE}(y, q_1)

    with :math:`p_\tau = \mathrm{softmax}(v / \tau)` (teacher) and
    :math:`q_\tau = \mathrm{softmax}(z / \tau)` (student). KL is averaged over the batch
    ("batchmean"); the :math:`\tau^2` keeps the soft term's gradient,
    :math:`\alpha \tau (q_\tau - p_\tau) / N`, on the same scale for every temperature.

    Geoffrey Hinton, Oriol Vinyals, Jeff Dean: `"Distilling the Knowledge in a Neural Network"
    <https://arxiv.org/abs/1503.02531>`_ @ NIPS 2014 Deep Learning and Representation Learning
    Workshop (2014)

    :param student_logits: (N, K) student logits :math:`z` (requires grad).
    :type student_logits: torch.Tensor
    :param teacher_logits: (N, K) teacher logits :math:`v`.
    :type teacher_logits: torch.Tensor
    :param labels: (N,) true classes; -1 means "no label": ignored in :math:`L_{CE}`, which is
        0 when no row has a label.
    :type labels: torch.Tensor
    :param temperature: hyperparameter :math:`\tau > 0` to soften class-probability distributions.
    :type temperature: float
    :param alpha: balancing factor for the soft-target term, in [0, 1].
    :type alpha: float
    :param sample_weight: optional (N,) weights of the hard-label term, which becomes
        :math:`\sum_n w_n L_{CE,n} / \sum_n w_n` over labelled rows (CWTM, Furlanello et al. 2018).
    :type sample_weight: torch.Tensor | None
    :return: scalars ``{"loss", "kd_loss": alpha * tau^2 * KL, "task_loss": (1 - alpha) * CE}``.
    :rtype: dict[str, torch.Tensor]
    """
    kl = kl_divergence(teacher_logits, student_logits, temperature).mean()  # batchmean
    kd_part = alpha * temperature**2 * kl
    if sample_weight is None:
        task_part = (1.0 - alpha) * _cross_entropy(student_logits, labels)
    else:
        ce = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")  # (N,)
        weight = torch.where(labels >= 0, sample_weight, 0.0)  # (N,)
        task_part = (1.0 - alpha) * (weight * ce).sum() / weight.sum().clamp_min(1e-12)
    return {"loss": kd_part + task_part, "kd_loss": kd_part, "task_loss": task_part}


def logit_mse_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
) -> dict[str, Tensor]:
    r"""A logit-matching loss: mean squared difference of zero-mean logits.

    .. math::

       L_{MSE} = \alpha \cdot \frac{1}{NK} \sum_{n,i} (\bar z_{ni} - \bar v_{ni})^2
                 + (1 - \alpha) \cdot L_{CE}(y, q_1), \qquad \bar z = z - \mathrm{mean}_i\, z

    The high-temperature limit of KD: as :math:`\tau \to \infty`,
    :math:`\tau^2 KL(p_\tau \| q_\tau) \to` half the squared-error term (Hinton et al., section 2.1).

    Lei Jimmy Ba, Rich Caruana: `"Do Deep Nets Really Need to be Deep?"
    <https://arxiv.org/abs/1312.6184>`_ @ NIPS 2014

    :param student_logits: (N, K) student logits :math:`z` (requires grad).
    :type student_logits: torch.Tensor
    :param teacher_logits: (N, K) teacher logits :math:`v`.
    :type teacher_logits: torch.Tensor
    :param labels: (N,) true classes; -1 means "no label": ignored in :math:`L_{CE}`, which is
        0 when no row has a label.
    :type labels: torch.Tensor
    :param alpha: balancing factor for the logit-matching term, in [0, 1].
    :type alpha: float
    :return: scalars ``{"loss", "kd_loss": alpha * MSE, "task_loss": (1 - alpha) * CE}``.
    :rtype: dict[str, torch.Tensor]
    """
    _check_same_shape(teacher_logits, student_logits)
    mse = (_center(student_logits) - _center(teacher_logits)).pow(2).mean()
    kd_part = alpha * mse
    task_part = (1.0 - alpha) * _cross_entropy(student_logits, labels)
    return {"loss": kd_part + task_part, "kd_loss": kd_part, "task_loss": task_part}


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    beta: float,
    ce_weight: float = 1.0,
) -> dict[str, Tensor]:
    r"""A decoupled knowledge distillation (DKD) loss.

    .. math::

       L_{DKD} = w_{ce} \cdot L_{CE}(y, q_1) + \alpha \cdot \tau^2 \cdot TCKD
                 + \beta \cdot \tau^2 \cdot NCKD

    TCKD and NCKD (batch means) come from :func:`kdviz.soft.dkd_parts`. KD equals
    :math:`TCKD + (1 - p_t) \cdot NCKD`, so a confident teacher (:math:`p_t \to 1`) mutes
    the non-target (dark) knowledge; DKD gives NCKD its own weight :math:`\beta` instead, which
    is the paper's point. The paper uses :math:`\alpha = 1, \beta = 8` on CIFAR-100.

    Borui Zhao, Quan Cui, Renjie Song, Yiyu Qiu, Jiajun Liang: `"Decoupled Knowledge
    Distillation" <https://arxiv.org/abs/2203.08679>`_ @ CVPR 2022

    :param student_logits: (N, K) student logits (requires grad).
    :type student_logits: torch.Tensor
    :param teacher_logits: (N, K) teacher logits.
    :type teacher_logits: torch.Tensor
    :param labels: (N,) target classes; rows labelled -1 take the teacher's argmax as the
        target of TCKD / NCKD and are ignored in :math:`L_{CE}` (0 when no row has a label).
    :type labels: torch.Tensor
    :param temperature: hyperparameter :math:`\tau > 0` to soften class-probability distributions.
    :type temperature: float
    :param alpha: weight of TCKD.
    :type alpha: float
    :param beta: weight of NCKD.
    :type beta: float
    :param ce_weight: weight :math:`w_{ce}` of the cross-entropy on the labels.
    :type ce_weight: float
    :return: scalars ``{"loss", "kd_loss": tckd + nckd, "task_loss": ce_weight * CE,
        "tckd": alpha * tau^2 * TCKD, "nckd": beta * tau^2 * NCKD}``.
    :rtype: dict[str, torch.Tensor]
    """
    parts = dkd_parts(teacher_logits, student_logits, labels, temperature)
    tckd_part = alpha * temperature**2 * parts["tckd"].mean()
    nckd_part = beta * temperature**2 * parts["nckd"].mean()
    kd_part = tckd_part + nckd_part
    task_part = ce_weight * _cross_entropy(student_logits, labels)
    return {
        "loss": kd_part + task_part,
        "kd_loss": kd_part,
        "task_loss": task_part,
        "tckd": tckd_part,
        "nckd": nckd_part,
    }


LOSSES: dict[str, LossFn] = {
    "kd": kd_loss,
    "mse": logit_mse_loss,  # logit matching
    "dkd": dkd_loss,
}


def create_loss(name: str, **kwargs: float) -> Callable[[Tensor, Tensor, Tensor], dict]:
    """Bind a registered loss to its settings: create_loss("kd", temperature=4, alpha=0.9).

    Returns a callable (student_logits, teacher_logits, labels) -> dict of loss parts.
    Unknown names, unknown settings and missing settings raise KdvizError at once, not
    at the first training step.
    """
    if name not in LOSSES:
        raise KdvizError(f"Unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}.")
    fn = LOSSES[name]
    settings = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    allowed = {p.name for p in settings}
    unknown = sorted(set(kwargs) - allowed)
    missing = [p.name for p in settings if p.default is p.empty and p.name not in kwargs]
    if unknown or missing:
        problem = f"unknown {unknown}" if unknown else f"missing {missing}"
        raise KdvizError(
            f"Loss {name!r} got {problem} settings; it takes: {', '.join(sorted(allowed))}."
        )
    return functools.partial(fn, **kwargs)
