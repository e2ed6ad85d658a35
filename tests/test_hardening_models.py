"""Hardening of the model layer, the engine's config checks and the CLI (issue 9).

Each test is one class of fault a careless or hostile user can cause: a logit-cache key that a
card field could blank, a name that escapes KDVIZ_HOME, out-of-range numbers, resource bombs in
architectures and cards. Fixtures are tiny cards and models written here; limits are lowered
with monkeypatch where the real ones would need large files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdviz import models, soft
from kdviz.data import load_dataset
from kdviz.engine import evaluate
from kdviz.errors import KdvizError
from kdviz.models import ModelCard, card_fingerprint, create_model, save_checkpoint


def _digits_card(arch: str = "mlp-30") -> ModelCard:
    ds = load_dataset("digits", "train")
    return ModelCard(
        arch=arch,
        num_classes=ds.num_classes,
        class_names=list(ds.class_names),
        in_shape=list(ds.in_shape),
        mean=list(ds.mean),
        std=list(ds.std),
        dataset="digits",
    )


def _edit_card(stem: Path, **fields) -> None:
    path = stem.with_name(stem.name + ".json")
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _trained_and_constant(tmp_path: Path) -> tuple[Path, Path]:
    """A: an mlp-30 fitted to digits (high accuracy); B: the same arch always saying class 3.
    Both cards have an EMPTY weights_sha256 (what a user may do to a card)."""
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    good = create_model("mlp-30", train.num_classes, train.in_shape)
    opt = torch.optim.Adam(good.parameters(), lr=1e-2)
    x = train.normalized()
    for _ in range(150):  # full batch, a fraction of a second
        opt.zero_grad()
        F.cross_entropy(good(x), train.labels).backward()
        opt.step()
    bad = create_model("mlp-30", train.num_classes, train.in_shape)
    with torch.no_grad():
        bad.head.weight.zero_()
        bad.head.bias.zero_()
        bad.head.bias[3] = 5.0
    stems = []
    for name, model in (("a", good), ("b", bad)):
        stem = save_checkpoint(model.eval(), _digits_card(), tmp_path / name)
        _edit_card(stem, weights_sha256="")
        stems.append(stem)
    return stems[0], stems[1]


def _true_logits(stem: Path, split: str = "test") -> torch.Tensor:
    """Logits computed directly in torch from the weights file (no kdviz cache involved)."""
    from safetensors.torch import load_file

    ds = load_dataset("digits", split)
    model = create_model("mlp-30", ds.num_classes, ds.in_shape)
    model.load_state_dict(load_file(str(stem.with_name(stem.name + ".safetensors"))))
    with torch.no_grad():
        return model.eval()(ds.normalized())


# --- 1. the logit cache is keyed by the weights' bytes ------------------------------------------


def test_cards_with_blank_hash_and_different_weights_never_share_cached_logits(tmp_path):
    a, b = _trained_and_constant(tmp_path)
    labels = load_dataset("digits", "test").labels
    true_a, true_b = _true_logits(a), _true_logits(b)
    acc_a, acc_b = soft.accuracy(true_a, labels), soft.accuracy(true_b, labels)
    assert acc_a > 0.8 and acc_b < 0.2  # very different models
    assert card_fingerprint(a) != card_fingerprint(b)
    # A first (fills the cache), then B: B must report its own score, not A's cached one.
    assert evaluate(a, "digits")["accuracy"] == pytest.approx(acc_a)
    assert evaluate(b, "digits")["accuracy"] == pytest.approx(acc_b)
    # As a teacher: agreement and KL against the true teacher logits.
    for teacher, true_t in ((a, true_a), (b, true_b)):
        metrics = evaluate(a, "digits", teacher=teacher)
        assert metrics["agreement"] == pytest.approx(soft.agreement(true_t, true_a))
        want_kl = float(soft.kl_divergence(true_t, true_a, 1.0).mean())
        assert metrics["kl"] == pytest.approx(want_kl, rel=1e-4, abs=1e-6)
    assert evaluate(a, "digits", teacher=b)["agreement"] < 0.2


def test_fingerprint_follows_the_file_not_the_card(tmp_path):
    a, b = _trained_and_constant(tmp_path)
    before = card_fingerprint(a)
    _edit_card(a, weights_sha256="0" * 64, metrics={"x": 1})  # editable fields: no effect
    assert card_fingerprint(a) == before
    weights = a.with_name("a.safetensors")
    weights.write_bytes(b.with_name("b.safetensors").read_bytes())  # same bytes as B ...
    _edit_card(a, weights_sha256="")
    assert card_fingerprint(a) == card_fingerprint(b)  # ... same key; the memo saw the rewrite


def test_ensemble_fingerprint_combines_member_files(tmp_path):
    a, b = _trained_and_constant(tmp_path)
    card = _digits_card()
    models.save_ensemble_card(dataclasses.replace(card, members=["a", "b"]), tmp_path / "ab")
    models.save_ensemble_card(dataclasses.replace(card, members=["a", "a"]), tmp_path / "aa")
    prints = {card_fingerprint(tmp_path / n) for n in ("ab", "aa")} | {card_fingerprint(a)}
    assert len(prints) == 3


def test_hash_mismatch_error_no_longer_says_clear_the_field(tmp_path):
    a, _ = _trained_and_constant(tmp_path)
    _edit_card(a, weights_sha256="0" * 64)
    with pytest.raises(KdvizError) as err:
        models.load_checkpoint(a)
    assert "clear" not in str(err.value) and "re-save" in str(err.value)
