"""The shipped students' cross-validated selection (pretrained/select_cv.py) and the intervals of
pretrained/make_pretrained.py --table."""

from __future__ import annotations

import importlib
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from kdviz import stats
from kdviz.data import load_dataset

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
sys.path.insert(0, str(PRETRAINED))
select_cv = importlib.import_module("select_cv")
make_pretrained = importlib.import_module("make_pretrained")


def test_folds_are_stratified_disjoint_and_cover_the_4500_non_test_images_once():
    labels = torch.cat([load_dataset("mnist5k", s).labels for s in ("train", "val")])
    assert len(labels) == 4500
    folds = select_cv.stratified_folds(labels, k=5, seed=0)
    assert len(folds) == 5
    everything = torch.cat(folds)
    assert sorted(everything.tolist()) == list(range(4500))  # disjoint and complete
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1
    for cls in range(10):
        total = int((labels == cls).sum())
        per_fold = [int((labels[f] == cls).sum()) for f in folds]
        assert sum(per_fold) == total
        assert max(per_fold) - min(per_fold) <= 1  # each fold holds a fifth of every class
    # seeded: the same seed gives the same folds, another seed others
    again = select_cv.stratified_folds(labels, k=5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(folds, again, strict=True))
    other = select_cv.stratified_folds(labels, k=5, seed=1)
    assert not torch.equal(folds[0], other[0])


class _Oracle(torch.nn.Module):
    """Reads the label written into pixel (0, 0); right on labels below ``known`` only."""

    def __init__(self, known: int):
        super().__init__()
        self.known = known

    def forward(self, x):  # (N, 1, 2, 2) -> (N, 5)
        y = x[:, 0, 0, 0].round().long()
        pred = torch.where(y < self.known, y, torch.zeros_like(y))
        return torch.nn.functional.one_hot(pred, 5).float()


def test_cv_picks_the_candidate_with_the_best_mean_held_out_accuracy_and_never_trains_on_it():
    n = 50
    labels = torch.arange(n) % 5  # 10 of each of 5 classes
    images = torch.zeros(n, 1, 2, 2)
    images[:, 0, 0, 0] = labels.float()
    images[:, 0, 0, 1] = torch.arange(n).float()  # the row's index, to see what was trained on
    pool = select_cv.Pool(images, labels, torch.zeros(n, 5), mean=0.0, std=1.0)
    folds = select_cv.stratified_folds(labels, k=5, seed=3)
    seen = []

    def trainer(arch, x, t, y, cand):
        seen.append(set(x[:, 0, 0, 1].round().long().tolist()))
        return _Oracle(known={2.0: 2, 8.0: 5, 20.0: 4}[cand.temperature])

    grid = [select_cv.Candidate(t) for t in (2.0, 8.0, 20.0)]
    trials = {c.key: select_cv.cv_trial("fake", c, pool, folds, trainer=trainer) for c in grid}
    # an oracle right on classes < known scores known / 5 (class 0 is right either way)
    assert trials["T2-a0.9-e60-lr0.001"]["cv_accuracy"] == pytest.approx(2 / 5)
    assert trials["T8-a0.9-e60-lr0.001"]["cv_accuracy"] == pytest.approx(1.0)
    assert trials["T20-a0.9-e60-lr0.001"]["cv_accuracy"] == pytest.approx(4 / 5)
    assert select_cv.best_trial(trials) == "T8-a0.9-e60-lr0.001"
    t = trials["T20-a0.9-e60-lr0.001"]
    assert t["pooled_correct"] == 40 and t["pooled_n"] == 50
    assert t["pooled_wilson"] == pytest.approx(list(stats.wilson_interval(40, 50)))
    for i, held in enumerate(folds):  # fold i's training set is every other fold, exactly
        assert seen[i] == set(range(n)) - set(held.tolist())


def test_run_records_every_trial_resumes_and_never_chooses_the_hard_label_reference(
    monkeypatch, tmp_path
):
    n = 50
    labels = torch.arange(n) % 5
    images = torch.zeros(n, 1, 2, 2)
    images[:, 0, 0, 0] = labels.float()
    monkeypatch.setattr(select_cv, "load_pool", lambda: select_cv.Pool(images, labels, torch.zeros(n, 5), 0.0, 1.0))  # fmt: skip
    monkeypatch.setattr(select_cv, "LEDGER", tmp_path / "trials.json")
    monkeypatch.setattr(select_cv, "AUG_CACHE", tmp_path / "aug")
    calls = []

    def trainer(arch, x, t, y, cand):
        calls.append(cand.key)
        return _Oracle(known=5 if cand.alpha == 0 else int(cand.temperature))

    grid = [select_cv.Candidate(2.0), select_cv.Candidate(4.0), select_cv.Candidate(3.0)]
    best = select_cv.run("mlp800", [*grid, select_cv.Candidate(2.0, alpha=0.0)], trainer=trainer)
    assert best == "T4-a0.9-e60-lr0.001"  # the hard-label row scores 100% but is a reference
    trials = select_cv.cv_trials("mlp800")
    assert set(trials) == {c.key for c in grid} | {"T2-a0-e60-lr0.001"}
    assert trials["T3-a0.9-e60-lr0.001"]["cv_accuracy"] == pytest.approx(3 / 5)
    assert len(calls) == 4 * 5  # every candidate on every fold
    assert select_cv.run("mlp800", grid, trainer=trainer) == best and len(calls) == 20  # resumed


def test_augmented_transfer_rows_carry_no_label():
    pool = select_cv.Pool(torch.rand(6, 1, 2, 2), torch.arange(6) % 3, torch.randn(6, 3), 0.5, 0.25)
    aug = (torch.rand(2, 6, 1, 2, 2), torch.randn(2, 6, 3))
    idx = torch.tensor([0, 2, 4])
    x, t, y = select_cv.transfer_set(pool, idx, 2, aug)
    assert x.shape == (9, 1, 2, 2) and t.shape == (9, 3)
    assert y[:3].tolist() == pool.labels[idx].tolist() and (y[3:] == -1).all()
    assert torch.allclose(x[3:6], (aug[0][0, idx] - 0.5) / 0.25)
    assert torch.equal(t[6:], aug[1][1, idx])


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 1927, written out independently of kdviz.stats."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_table_s_intervals_are_the_wilson_intervals_of_the_cards_counts():
    table = make_pretrained.table()
    checked = 0
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0]
        m = make_pretrained.load_card(PRETRAINED / name).metrics
        for split, cell in (("val", cells[2]), ("test", cells[4])):
            low, high = (float(v) / 100 for v in re.search(r"\(([\d.]+)–([\d.]+)\)", cell).groups())
            n, errors = m[f"{split}_n"], m[f"{split}_errors"]
            assert (low, high) == pytest.approx(stats.wilson_interval(n - errors, n), abs=5e-4)
            exp_low, exp_high = _wilson(n - errors, n)
            assert low == pytest.approx(max(exp_low, 0.0), abs=5e-4)
            assert high == pytest.approx(1.0 if errors == 0 else exp_high, abs=5e-4)
            checked += 1
    assert checked >= 2 * 7  # every shipped model, val and test
