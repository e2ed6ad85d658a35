"""The train / distill / evaluate loops on the bundled `digits` data (seconds each)."""

from __future__ import annotations

import pytest
import torch

from kdviz import soft
from kdviz.data import load_dataset
from kdviz.engine import (
    DistillConfig,
    TrainConfig,
    augment_batch,
    compute_logits,
    dataset_logits,
    distill,
    evaluate,
    fit,
    pick_device,
    train,
)
from kdviz.errors import KdvizError
from kdviz.models import ModelCard, load_checkpoint, save_ensemble_card, weights_hash
from kdviz.paths import cache_dir

FAST = dict(dataset="digits", arch="mlp-64", epochs=3, batch_size=64, lr=3e-3, device="cpu")


@pytest.fixture
def teacher(tmp_path):
    result = train(TrainConfig(**FAST, name="t", out=str(tmp_path / "teacher")))
    assert result.status == "done"
    return tmp_path / "teacher"


def test_train_learns_and_saves_a_loadable_checkpoint(tmp_path):
    steps, epochs = [], []
    result = train(
        TrainConfig(**FAST, out=str(tmp_path / "m"), log_every=5),
        on_step=steps.append,
        on_epoch=epochs.append,
    )
    assert result.status == "done", result.message
    assert [m["epoch"] for m in epochs] == [1, 2, 3]
    assert result.metrics["accuracy"] > 0.85  # 10 classes: chance is 0.1
    assert {"loss", "kd_loss", "task_loss", "lr", "progress", "step"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"]
    model, card = load_checkpoint(tmp_path / "m")
    assert card.metrics["epochs_completed"] == 3
    val = load_dataset("digits", "val")
    logits = compute_logits(model, val.normalized())
    assert soft.accuracy(logits, val.labels) == pytest.approx(result.metrics["accuracy"])


def test_training_is_deterministic_on_cpu(tmp_path):
    train(TrainConfig(**{**FAST, "epochs": 1}, out=str(tmp_path / "a")))
    train(TrainConfig(**{**FAST, "epochs": 1}, out=str(tmp_path / "b")))
    train(TrainConfig(**{**FAST, "seed": 1, "epochs": 1}, out=str(tmp_path / "c")))
    hash_a = weights_hash(load_checkpoint(tmp_path / "a")[0])
    assert hash_a == weights_hash(load_checkpoint(tmp_path / "b")[0])
    assert hash_a != weights_hash(load_checkpoint(tmp_path / "c")[0])


def test_distill_reports_agreement_and_caches_teacher_logits(teacher, tmp_path):
    cfg = DistillConfig(**FAST, teacher=str(teacher), temperature=4.0, out=str(tmp_path / "s"))
    result = distill(cfg)
    assert result.status == "done", result.message
    assert 0.7 < result.metrics["agreement"] <= 1.0
    assert result.metrics["kl"] >= 0.0
    cached = sorted((cache_dir() / "logits").glob("*.pt"))
    assert len(cached) == 2  # train split (transfer set) and val split (evaluation)
    stamps = [p.stat().st_mtime_ns for p in cached]
    distill(DistillConfig(**{**FAST, "seed": 3}, teacher=str(teacher), out=str(tmp_path / "s2")))
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # reused, not recomputed


def test_cached_teacher_logits_equal_a_fresh_forward_pass(teacher):
    first = dataset_logits(teacher, "digits", "test")
    again = dataset_logits(teacher, "digits", "test")
    model, card = load_checkpoint(teacher)
    ds = load_dataset("digits", "test")
    fresh = compute_logits(model, ds.normalized())
    torch.testing.assert_close(first, fresh)
    torch.testing.assert_close(again, fresh)


@pytest.mark.parametrize("method", ["kd", "mse", "dkd"])
def test_every_method_and_augmented_transfer_set_runs(teacher, tmp_path, method):
    cfg = DistillConfig(
        **{**FAST, "epochs": 1},
        teacher=str(teacher),
        method=method,
        augment="jitter",
        out=str(tmp_path / method),
    )
    result = distill(cfg)
    assert result.status == "done", result.message
    assert result.metrics["accuracy"] > 0.3


def test_distill_from_an_ensemble_card(teacher, tmp_path):
    other = tmp_path / "teacher2"
    train(TrainConfig(**{**FAST, "seed": 5}, out=str(other)))
    _, card = load_checkpoint(teacher)
    ens = ModelCard.from_dict({**card.to_dict(), "name": "ens", "kind": "ensemble"})
    ens.members = ["teacher", "teacher2"]
    save_ensemble_card(ens, tmp_path / "ens")
    result = distill(DistillConfig(**FAST, teacher=str(tmp_path / "ens"), out=str(tmp_path / "s")))
    assert result.status == "done"
    assert result.metrics["agreement"] > 0.7


def test_transfer_set_without_a_class_and_without_labels(teacher, tmp_path):
    seen = []
    import kdviz.engine as engine

    original = engine._transfer_indices

    def spy(cfg, labels):
        idx = original(cfg, labels)
        seen.append(labels[idx])
        return idx

    engine._transfer_indices = spy
    try:
        cfg = DistillConfig(
            **{**FAST, "epochs": 1},
            teacher=str(teacher),
            omit_classes=(3,),
            drop_labels=True,
            transfer_fraction=0.5,
            out=str(tmp_path / "s"),
        )
        result = distill(cfg)
    finally:
        engine._transfer_indices = original
    assert result.status == "done"
    kept = seen[0]
    assert not (kept == 3).any()
    full = load_dataset("digits", "train").labels
    for cls in (0, 5, 9):  # stratified half of every remaining class
        assert abs(int((kept == cls).sum()) - round(0.5 * int((full == cls).sum()))) <= 1
    assert result.history[0]["n"] == len(load_dataset("digits", "val"))


def test_cancel_stops_between_steps(tmp_path):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 4

    result = train(TrainConfig(**FAST, out=str(tmp_path / "m")), should_stop=should_stop)
    assert result.status == "cancelled"
    assert "step 4" in result.message


def test_absurd_learning_rate_diverges_with_a_sentence(tmp_path):
    cfg = TrainConfig(**{**FAST, "lr": 1e12, "optimizer": "sgd"}, out=str(tmp_path / "m"))
    result = train(cfg)
    assert result.status == "diverged"
    assert "learning rate" in result.message and result.message.endswith(".")


def test_exploding_but_finite_loss_also_counts_as_diverged(tmp_path):
    cfg = TrainConfig(**{**FAST, "lr": 1e4, "epochs": 2}, out=str(tmp_path / "m"), log_every=2)
    result = train(cfg)
    assert result.status == "diverged", result.metrics


def test_evaluate_matches_soft_functions_and_checks_classes(teacher):
    metrics = evaluate(teacher, "digits", "test")
    ds = load_dataset("digits", "test")
    assert metrics["n"] == len(ds)
    logits = dataset_logits(teacher, "digits", "test")
    assert metrics["accuracy"] == pytest.approx(soft.accuracy(logits, ds.labels))
    assert metrics["nll"] == pytest.approx(soft.nll(logits, ds.labels))
    assert metrics["ece"] == pytest.approx(soft.ece(logits, ds.labels))
    with_teacher = evaluate(teacher, "digits", "test", teacher=teacher)
    assert with_teacher["agreement"] == 1.0
    assert with_teacher["kl"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(KdvizError, match="classes|shape"):
        evaluate(teacher, "mnist5k", "test")


def test_augmentations_keep_shape_and_jitter_is_a_shift():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 12, 12)
    x[:, :, 5:7, 5:7] = 1.0  # a blob well inside the border: shifts keep all of it
    out = augment_batch(x, "jitter", gen)
    assert out.shape == x.shape
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert not torch.equal(out, x)
    aff = augment_batch(x, "affine", gen)
    assert aff.shape == x.shape and torch.isfinite(aff).all()
    assert augment_batch(x, "none", gen) is x
    with pytest.raises(KdvizError):
        augment_batch(x, "mixup", gen)


def test_config_errors_are_sentences():
    with pytest.raises(KdvizError, match="learning rate"):
        fit(TrainConfig(**{**FAST, "lr": -1.0}))
    with pytest.raises(KdvizError, match="kd, mse, dkd"):
        fit(DistillConfig(**FAST, method="nope"))
    with pytest.raises(KdvizError, match="epochs"):
        fit(TrainConfig(**{**FAST, "epochs": 0}))


def test_configs_round_trip_through_dicts():
    cfg = DistillConfig(**FAST, teacher="x", omit_classes=(1, 2), temperature=2.5)
    data = cfg.to_dict()
    assert data["kind"] == "distill"
    assert DistillConfig.from_dict(data) == cfg
    assert TrainConfig.from_dict(TrainConfig(**FAST).to_dict()) == TrainConfig(**FAST)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(KdvizError, match="CUDA"):
            pick_device("cuda")
