"""Choose the shipped mnist5k students' distillation settings by 5-fold cross-validation.

    python pretrained/select_cv.py                 # every candidate of both students (resumes)
    python pretrained/select_cv.py --student mlp800 --aug   # the augmented-transfer variant

The pool is the 4,500 non-test mnist5k images (train + val); the test split is never read here.
The folds are class-stratified and seeded. A candidate's score is its mean held-out accuracy over
the 5 folds, with the t-interval over folds (stats.mean_sd_interval) and the Wilson interval of
the pooled 4,500 held-out predictions. Every trial goes into pretrained/trials.json under "cv".

Training reuses the shipped teacher's cached logits (pretrained/logits/) and the engine's recipe
(AdamW, cosine schedule, its KD loss), so one 2 x 800 trial of 60 epochs is ~5 x 15 s on a CPU core.
An augmented trial adds COPIES affine-transformed copies of each training image, labelled only by
the teacher (soft targets, no hard label): the teacher's logits on them are computed once (cached under KDVIZ_HOME's cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kdviz import stats
from kdviz.data import load_dataset
from kdviz.engine import (
    DistillConfig,
    _loss_kwargs,
    _lr_at,
    _make_optimizer,
    augment_batch,
    compute_logits,
    dataset_logits,
)
from kdviz.losses import create_loss
from kdviz.models import create_model, load_checkpoint
from kdviz.paths import cache_dir

HERE = Path(__file__).resolve().parent
TEACHER = HERE / "mnist5k-teacher"
LEDGER = HERE / "trials.json"
FOLDS = 5
FOLD_SEED = 0
AUG_SEED = 7
AUG_CACHE = cache_dir() / "cv-aug"  # the teacher's logits on the augmented copies (not shipped)


@dataclass(frozen=True)
class Candidate:
    """One distillation setting: T, the soft-term weight alpha (1 = soft only), epochs, lr, and
    ``copies`` teacher-labelled affine copies of each transfer image (0 = the plain transfer set)."""

    temperature: float
    alpha: float = 0.9
    epochs: int = 60
    lr: float = 1e-3
    copies: int = 0

    @property
    def key(self) -> str:
        extra = f"-aug{self.copies}" if self.copies else ""
        return f"T{self.temperature:g}-a{self.alpha:g}-e{self.epochs}-lr{self.lr:g}{extra}"


# Small grids (each trial is 5 trainings): T first, then alpha / soft-only, epochs and lr at the
# T the paper used. Hinton: >= 300 units did about equally for T >= 8; 30 units liked 2.5-4.
GRIDS: dict[str, tuple[str, tuple[Candidate, ...]]] = {
    "mlp800": (
        "mlp-800-800",
        (
            Candidate(8.0),
            Candidate(20.0),
            Candidate(20.0, alpha=1.0),
        ),
    ),
    "mlp30": ("mlp-30-30", (Candidate(2.5), Candidate(4.0))),
}
# the larger transfer set: 2 teacher-labelled copies per image (3x the images, so half the epochs
# still gives 1.5x the steps); one candidate, at the T the plain grid is compared with
AUG_GRID = (Candidate(20.0, epochs=30, copies=2),)
# the hard-label baseline under the same folds (alpha = 0: cross-entropy on the labels alone), a
# reference for the gain, never a choice
BASELINE = Candidate(20.0, alpha=0.0)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- folds


def stratified_folds(labels: torch.Tensor, k: int = FOLDS, seed: int = FOLD_SEED) -> list[torch.Tensor]:  # fmt: skip
    """k disjoint index sets covering range(len(labels)) once, each with ~1/k of every class:
    each class's indices are shuffled (seeded) and dealt round-robin, starting where the previous
    class stopped so the fold sizes differ by at most one."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for cls in labels.unique().tolist():
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        for i, idx in enumerate(members.tolist()):
            parts[(offset + i) % k].append(idx)
        offset += len(members)
    return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]


@dataclass
class Pool:
    """The 4,500 non-test images: [0, 1] images (N, 1, 28, 28), labels (N,), teacher logits (N, K)."""

    images01: torch.Tensor
    labels: torch.Tensor
    teacher: torch.Tensor
    mean: float
    std: float


def load_pool(dataset: str = "mnist5k") -> Pool:
    """train + val of the bundled dataset, with the shipped teacher's (cached) logits."""
    parts = [load_dataset(dataset, split) for split in ("train", "val")]
    return Pool(
        images01=torch.cat([p.images for p in parts]).float() / 255.0,
        labels=torch.cat([p.labels for p in parts]).long(),
        teacher=torch.cat([dataset_logits(str(TEACHER), dataset, s) for s in ("train", "val")]),
        mean=float(parts[0].mean[0]),
        std=float(parts[0].std[0]),
    )


def augmented_copies(pool: Pool, copies: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(copies, N, 1, 28, 28) affine copies of every pool image and the teacher's logits on them
    (copies, N, K), seeded; the logits are cached under .cache/ (the teacher is slow on a CPU)."""
    gen = torch.Generator().manual_seed(AUG_SEED)
    imgs = torch.stack([augment_batch(pool.images01, "affine", gen) for _ in range(copies)])
    path = AUG_CACHE / f"affine-s{AUG_SEED}-c{copies}-n{len(pool.labels)}.pt"
    if path.exists():
        return imgs, torch.load(path, weights_only=True)
    teacher, card = load_checkpoint(str(TEACHER))
    mean, std = card.mean[0], card.std[0]
    t0 = time.perf_counter()
    logits = torch.stack([compute_logits(teacher, (x - mean) / std, batch_size=500) for x in imgs])
    _log(
        f"teacher on {copies} x {len(pool.labels)} affine copies: {time.perf_counter() - t0:.0f} s"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(logits, path)
    return imgs, logits


# ---------------------------------------------------------------------------- training


def train_student(
    arch: str,
    x: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    cand: Candidate,
    seed: int = 0,
    batch_size: int = 128,
) -> torch.nn.Module:
    """The engine's distillation loop on a given transfer set: normalised x (N, C, H, W), the
    teacher's logits (N, K), labels (N,) with -1 for "no label" (soft term only on those rows)."""
    torch.manual_seed(seed)
    model = create_model(arch, int(teacher_logits.shape[1]), list(x.shape[1:]))
    cfg = DistillConfig(arch=arch, epochs=cand.epochs, lr=cand.lr, batch_size=batch_size)
    optimizer = _make_optimizer(cfg, model, torch.device("cpu"))
    loss_fn = create_loss("kd", **_loss_kwargs("kd", cand.temperature, cand.alpha, 0.0))
    n = len(labels)
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * cand.epochs
    gen = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for _ in range(cand.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, step, total, per_epoch)
            parts = loss_fn(model(x[batch]), teacher_logits[batch], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            step += 1
    return model.eval()


def transfer_set(pool: Pool, idx: torch.Tensor, copies: int, aug=None) -> tuple[torch.Tensor, ...]:
    """(x, teacher logits, labels) for training on the pool rows ``idx``, plus ``copies`` affine
    copies of those rows labelled -1 (the teacher's soft targets only)."""
    x01, t, y = pool.images01[idx], pool.teacher[idx], pool.labels[idx]
    if copies:
        imgs, logits = aug
        x01 = torch.cat([x01, *imgs[:copies, idx]])
        t = torch.cat([t, *logits[:copies, idx]])
        y = torch.cat([y, torch.full((copies * len(idx),), -1, dtype=torch.long)])
    return (x01 - pool.mean) / pool.std, t, y


Trainer = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor, Candidate], torch.nn.Module]


def cv_trial(arch: str, cand: Candidate, pool: Pool, folds: Sequence[torch.Tensor], trainer: Trainer = train_student, aug=None) -> dict:  # fmt: skip
    """Train on k - 1 folds, score on the held-out one, k times: the fold accuracies, their mean
    with the t-interval over folds, and the pooled held-out accuracy with its Wilson interval."""
    accs, correct = [], 0
    t0 = time.perf_counter()
    for i, held in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != i])
        model = trainer(arch, *transfer_set(pool, rest, cand.copies, aug), cand)
        with torch.no_grad():
            pred = model((pool.images01[held] - pool.mean) / pool.std).argmax(-1)
        right = int((pred == pool.labels[held]).sum())
        accs.append(right / len(held))
        correct += right
    mean, sd, low, high = stats.mean_sd_interval(accs)
    n = sum(len(f) for f in folds)
    return {
        **dataclasses.asdict(cand),
        "fold_accuracies": accs,
        "cv_accuracy": mean,
        "cv_sd": sd,
        "cv_interval": [low, high],
        "pooled_correct": correct,
        "pooled_n": n,
        "pooled_wilson": list(stats.wilson_interval(correct, n)),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def best_trial(trials: dict[str, dict]) -> str:
    """The key of the trial with the highest mean CV accuracy (ties: the first listed)."""
    if not trials:
        raise ValueError("no trials to choose from")
    return max(trials, key=lambda k: trials[k]["cv_accuracy"])


# ---------------------------------------------------------------------------- ledger


def read_ledger() -> dict:
    return json.loads(LEDGER.read_text()) if LEDGER.exists() else {}


def cv_trials(student: str) -> dict[str, dict]:
    return read_ledger().get("cv", {}).get(student, {})


def record(student: str, key: str, trial: dict) -> None:
    with open(AUG_CACHE.parent / "trials.lock", "w") as lock:  # two searches may run at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        _record(student, key, trial)


def _record(student: str, key: str, trial: dict) -> None:
    ledger = read_ledger()
    cv = ledger.setdefault("cv", {})
    cv["protocol"] = (
        f"{FOLDS}-fold class-stratified CV (seed {FOLD_SEED}) over the 4,500 mnist5k train + val "
        "images; cv_interval: t-interval over folds; pooled_wilson: Wilson interval of the pooled "
        "held-out predictions; test split never used"
    )
    cv.setdefault(student, {})[key] = trial
    LEDGER.write_text(json.dumps(ledger, indent=2, sort_keys=True) + "\n")


def run(
    student: str,
    candidates: Sequence[Candidate],
    force: bool = False,
    trainer: Trainer = train_student,
) -> str:
    """Cross-validate every candidate not yet in the ledger; returns the key of the best
    distilled one (alpha > 0) of ``candidates`` (ties: the first listed)."""
    arch = GRIDS[student][0]
    pool = load_pool()
    folds = stratified_folds(pool.labels)
    done = cv_trials(student)
    copies = max((c.copies for c in candidates), default=0)
    aug = augmented_copies(pool, copies) if copies else None
    for cand in candidates:
        if cand.key in done and not force:
            continue
        trial = cv_trial(arch, cand, pool, folds, trainer=trainer, aug=aug)
        record(student, cand.key, trial)
        lo, hi = trial["cv_interval"]
        _log(f"{student} {cand.key}: CV {trial['cv_accuracy']:.2%} ({lo:.2%}-{hi:.2%}) in {trial['seconds']} s")  # fmt: skip
    trials = cv_trials(student)
    distilled = {c.key: trials[c.key] for c in candidates if c.alpha > 0}
    best = best_trial(distilled) if distilled else ""
    _log(f"{student}: best of this grid by CV {best}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=sorted(GRIDS), action="append")
    parser.add_argument("--aug", action="store_true", help="only the augmented-transfer variants")
    parser.add_argument("--baseline", action="store_true", help="only the hard-label reference")
    parser.add_argument("--force", action="store_true", help="rerun trials already in the ledger")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for student in args.student or sorted(GRIDS):
        grid = (AUG_GRID if student == "mlp800" else ()) if args.aug else GRIDS[student][1]
        grid = (BASELINE,) if args.baseline else grid
        run(student, grid, force=args.force)


if __name__ == "__main__":
    main()
