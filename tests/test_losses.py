"""kdviz.losses: oracles against torch.nn.functional, gradients against autograd, the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdviz import losses, soft
from kdviz.errors import KdvizError

SETTINGS = {
    "kd": {"temperature": 4.0, "alpha": 0.7},
    "mse": {"alpha": 0.6},
    "dkd": {"temperature": 4.0, "alpha": 1.0, "beta": 8.0},
}


def _batch(n: int = 8, k: int = 5, seed: int = 0, scale: float = 3.0, dtype=torch.float64):
    """Student logits (requires grad), teacher logits and labels."""
    gen = torch.Generator().manual_seed(seed)
    student = (torch.randn(n, k, generator=gen) * scale).to(dtype).requires_grad_()
    teacher = (torch.randn(n, k, generator=gen) * scale).to(dtype)
    labels = torch.randint(0, k, (n,), generator=gen)
    return student, teacher, labels


def _dkd_reference(student, teacher, target, alpha, beta, temperature):
    """DKD as the authors' reference code computes it (mdistiller, Zhao et al. 2022)."""
    n = student.shape[0]
    gt = F.one_hot(target, student.shape[1]).to(student.dtype)
    p_s = F.softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * temperature**2 / n
    hat_t = F.softmax(teacher / temperature - 1000.0 * gt, dim=1)
    log_hat_s = F.log_softmax(student / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_hat_s, hat_t, reduction="sum") * temperature**2 / n
    return alpha * tckd + beta * nckd


# --------------------------------------------------------------------------- oracles


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0)])
def test_kd_loss_matches_the_functional_formula(temperature, alpha):
    student, teacher, labels = _batch()
    out = losses.kd_loss(student, teacher, labels, temperature=temperature, alpha=alpha)
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.softmax(teacher / temperature, dim=1),
        reduction="batchmean",
    )
    ce = F.cross_entropy(student, labels)
    torch.testing.assert_close(out["kd_loss"], alpha * temperature**2 * kl)
    torch.testing.assert_close(out["task_loss"], (1 - alpha) * ce)
    torch.testing.assert_close(out["loss"], alpha * temperature**2 * kl + (1 - alpha) * ce)


def test_kd_loss_ignores_unlabelled_rows_in_cross_entropy():
    student, teacher, labels = _batch()
    labels[::2] = -1
    out = losses.kd_loss(student, teacher, labels, temperature=2.0, alpha=0.0)
    torch.testing.assert_close(out["task_loss"], F.cross_entropy(student, labels, ignore_index=-1))


def test_kd_loss_without_any_label_has_zero_cross_entropy_and_finite_gradients():
    student, teacher, _ = _batch()
    labels = torch.full((8,), -1)
    out = losses.kd_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    assert out["task_loss"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(student.grad).all()


def test_logit_mse_loss_matches_mse_of_centred_logits():
    student, teacher, labels = _batch()
    out = losses.logit_mse_loss(student, teacher, labels, alpha=0.6)
    centre = lambda z: z - z.mean(1, keepdim=True)  # noqa: E731
    mse = F.mse_loss(centre(student), centre(teacher))
    torch.testing.assert_close(out["kd_loss"], 0.6 * mse)
    torch.testing.assert_close(out["task_loss"], 0.4 * F.cross_entropy(student, labels))
    # a constant added to a row changes no probability and no loss
    shifted = losses.logit_mse_loss(student + 5.0, teacher - 2.0, labels, alpha=0.6)
    torch.testing.assert_close(shifted["loss"], out["loss"])


def test_logit_mse_is_the_high_temperature_limit_of_kd():
    # T^2 KL(p_T || q_T) -> (1 / 2K) sum_i (z_i - v_i)^2 for zero-mean logits
    student, teacher, labels = _batch(scale=1.0)
    mse = losses.logit_mse_loss(student, teacher, labels, alpha=1.0)["loss"]
    kd = losses.kd_loss(student, teacher, labels, temperature=1000.0, alpha=1.0)["loss"]
    torch.testing.assert_close(kd, 0.5 * mse, rtol=1e-2, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_loss_matches_the_authors_reference(temperature):
    student, teacher, labels = _batch()
    out = losses.dkd_loss(
        student, teacher, labels, temperature=temperature, alpha=1.0, beta=8.0, ce_weight=0.0
    )
    expected = _dkd_reference(student, teacher, labels, 1.0, 8.0, temperature)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["kd_loss"], out["tckd"] + out["nckd"])
    assert out["task_loss"].item() == 0.0


def test_dkd_with_unit_weights_is_kd_without_the_confidence_weight():
    student, teacher, labels = _batch()
    temperature = 3.0
    parts = soft.dkd_parts(teacher, student, labels, temperature)
    dkd = losses.dkd_loss(
        student, teacher, labels, temperature=temperature, alpha=1.0, beta=1.0, ce_weight=0.0
    )
    kd = losses.kd_loss(student, teacher, labels, temperature=temperature, alpha=1.0)
    # DKD: T^2 mean(TCKD + NCKD); KD: T^2 mean(TCKD + (1 - p_t) NCKD)
    torch.testing.assert_close(dkd["loss"], temperature**2 * (parts["tckd"] + parts["nckd"]).mean())
    torch.testing.assert_close(
        kd["loss"], temperature**2 * (parts["tckd"] + parts["weight"] * parts["nckd"]).mean()
    )
    assert dkd["loss"].item() >= kd["loss"].item()


def test_dkd_loss_unlabelled_rows_use_teacher_argmax_and_skip_cross_entropy():
    student, teacher, _ = _batch()
    none = losses.dkd_loss(
        student, teacher, torch.full((8,), -1), temperature=4.0, alpha=1.0, beta=8.0
    )
    argmax = losses.dkd_loss(
        student, teacher, teacher.argmax(1), temperature=4.0, alpha=1.0, beta=8.0
    )
    torch.testing.assert_close(none["kd_loss"], argmax["kd_loss"])
    assert none["task_loss"].item() == 0.0
    torch.testing.assert_close(argmax["task_loss"], F.cross_entropy(student, teacher.argmax(1)))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (5.0, 0.9), (10.0, 1.0)])
def test_kd_gradient_is_alpha_t_q_minus_p_over_n_plus_cross_entropy(temperature, alpha):
    student, teacher, labels = _batch(n=6, k=4)
    labels[0] = -1  # unlabelled: no CE gradient for that row
    losses.kd_loss(student, teacher, labels, temperature=temperature, alpha=alpha)[
        "loss"
    ].backward()
    n = student.shape[0]
    z = student.detach()
    q_t = F.softmax(z / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    soft_grad = alpha * temperature * (q_t - p_t) / n
    labelled = labels >= 0
    one_hot = F.one_hot(labels.clamp(min=0), 4).to(z.dtype)
    ce_grad = (F.softmax(z, dim=1) - one_hot) * labelled[:, None] / labelled.sum()
    torch.testing.assert_close(student.grad, soft_grad + (1 - alpha) * ce_grad)


def test_high_temperature_kd_gradient_is_logit_matching():
    # Hinton et al. 2015, sec. 2.1: dKL/dz_i -> (z_i - v_i) / (K T^2) per sample for zero-mean
    # logits; the T^2 factor turns that into (z_i - v_i) / K, the same for every large T.
    n, k = 8, 5
    student, teacher, labels = _batch(n=n, k=k, scale=1.0)
    with torch.no_grad():
        student -= student.mean(1, keepdim=True)
    teacher = teacher - teacher.mean(1, keepdim=True)
    expected = (student.detach() - teacher) / (k * n)
    errors = []
    for temperature in (100.0, 1000.0):
        kl = soft.kl_divergence(teacher, student, temperature).mean()
        (grad_kl,) = torch.autograd.grad(kl, student)
        student.grad = None
        out = losses.kd_loss(student, teacher, labels, temperature=temperature, alpha=1.0)
        out["loss"].backward()
        torch.testing.assert_close(student.grad, grad_kl * temperature**2)
        # the gap to logit matching is O(1 / T)
        error = (student.grad - expected).abs().max().item()
        assert error < expected.abs().max().item() / temperature
        errors.append(error)
    assert errors[1] < errors[0] / 5


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_pass_gradcheck(name):
    student, teacher, labels = _batch(n=4, k=4, scale=2.0)
    labels[1] = -1
    fn = losses.create_loss(name, **SETTINGS[name])
    assert torch.autograd.gradcheck(lambda z: fn(z, teacher, labels)["loss"], (student,))


# --------------------------------------------------------------------------- hot-loop fitness


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_never_sync_with_the_host(name):
    # Tensors on the "meta" device have no values: any .item(), bool() or data-dependent
    # shape in the loss would raise here. So the losses are safe for a CUDA training loop.
    student = torch.empty(16, 10, device="meta", requires_grad=True)
    teacher = torch.empty(16, 10, device="meta")
    labels = torch.empty(16, dtype=torch.long, device="meta")
    out = losses.create_loss(name, **SETTINGS[name])(student, teacher, labels)
    out["loss"].backward()
    assert all(v.shape == () for v in out.values())


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_work_in_float32_and_sum_their_parts(name):
    student, teacher, labels = _batch(n=32, k=10, dtype=torch.float32)
    out = losses.create_loss(name, **SETTINGS[name])(student, teacher, labels)
    assert {"loss", "kd_loss", "task_loss"} <= set(out)
    assert all(v.dtype == torch.float32 and v.shape == () for v in out.values())
    torch.testing.assert_close(out["loss"], out["kd_loss"] + out["task_loss"])
    out["loss"].backward()
    assert torch.isfinite(student.grad).all()


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(sorted(losses.LOSSES)),
    seed=st.integers(0, 2**16),
    temperature=st.floats(0.5, 20.0),
    alpha=st.floats(0.0, 1.0),
)
def test_losses_are_non_negative_and_zero_kd_for_a_perfect_student(name, seed, temperature, alpha):
    student, teacher, labels = _batch(n=5, k=6, seed=seed)
    kwargs = {"alpha": alpha} | ({"temperature": temperature} if name != "mse" else {})
    if name == "dkd":
        kwargs["beta"] = 8.0
    fn = losses.create_loss(name, **kwargs)
    out = fn(student, teacher, labels)
    assert all(v.item() >= -1e-12 for v in out.values())
    torch.testing.assert_close(out["loss"], out["kd_loss"] + out["task_loss"])
    perfect = fn(teacher.clone(), teacher, labels)  # student == teacher
    assert abs(perfect["kd_loss"].item()) < 1e-10


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_loss():
    assert set(losses.LOSSES) == {"kd", "mse", "dkd"}
    student, teacher, labels = _batch()
    bound = losses.create_loss("kd", temperature=4.0, alpha=0.7)
    direct = losses.kd_loss(student, teacher, labels, temperature=4.0, alpha=0.7)
    torch.testing.assert_close(bound(student, teacher, labels)["loss"], direct["loss"])


def test_create_loss_unknown_name_lists_the_valid_ones():
    with pytest.raises(KdvizError, match="dkd, kd, mse"):
        losses.create_loss("fitnet")


def test_create_loss_rejects_unknown_and_missing_settings():
    with pytest.raises(KdvizError, match="unknown"):
        losses.create_loss("kd", temperature=4.0, alpha=0.5, gamma=1.0)
    with pytest.raises(KdvizError, match="missing"):
        losses.create_loss("dkd", temperature=4.0, alpha=1.0)
    losses.create_loss("dkd", temperature=4.0, alpha=1.0, beta=8.0)  # ce_weight has a default
