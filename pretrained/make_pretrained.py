"""Reproduce every shipped checkpoint in pretrained/ from the bundled offline data, seeded.

    python pretrained/make_pretrained.py            # everything (about 15-25 min on 2 CPU cores)
    python pretrained/make_pretrained.py --only digits
    python pretrained/make_pretrained.py --table    # the tables: models, CV choices, levers
    python pretrained/make_pretrained.py --cv       # choose the students' settings by 5-fold CV
    python pretrained/make_pretrained.py --only variants   # the augmented and omit-3 students

The students' temperatures and settings are chosen by 5-fold cross-validation over the 4,500
non-test images (pretrained/select_cv.py; every trial in trials.json under "cv"); the shipped
students are then trained on `train` and reported on `val` and `test`. The test split is
reported, never tuned to. The metrics go into each checkpoint's JSON card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from kdviz import stats
from kdviz.data import load_dataset
from kdviz.engine import DistillConfig, TrainConfig, dataset_logits, evaluate, fit
from kdviz.experiments.transforms import bias_for_share
from kdviz.models import (
    ModelCard,
    load_card,
    save_card,
    save_checkpoint,
    save_ensemble_card,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import select_cv  # noqa: E402  (pretrained/ is a folder of scripts, not a package)

# The mnist5k teacher: an ensemble of wide CNNs trained with affine augmentation and dropout
# (Hinton distilled an ensemble too). Each member differs only in its seed.
TEACHER_MEMBERS = 3
TEACHER_CFG = dict(
    dataset="mnist5k",
    arch="cnn-wide",
    epochs=16,
    batch_size=64,
    lr=2e-3,
    weight_decay=5e-4,
    augment="affine",
    dropout=0.3,
    warmup_epochs=1.0,
)
# Hinton's student: 2 x 800 ReLU, no dropout, no augmentation, the same un-augmented transfer set.
MLP_CFG = dict(dataset="mnist5k", epochs=60, batch_size=128, lr=1e-3, weight_decay=0.0)
DIGITS_TEACHER = dict(
    dataset="digits",
    arch="cnn-wide",
    epochs=40,
    batch_size=64,
    lr=2e-3,
    augment="jitter",
    dropout=0.2,
    weight_decay=5e-4,
)
DIGITS_STUDENT = dict(dataset="digits", arch="mlp-30-30", epochs=80, batch_size=64, lr=3e-3)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


FORCE = False  # --force retrains checkpoints that are already complete


def _run(cfg, name: str) -> dict:
    cfg = dataclasses.replace(cfg, name=name, out=str(HERE / name))
    card_path = HERE / f"{name}.json"
    if not FORCE and card_path.exists():  # resume: a finished checkpoint is kept
        card = load_card(HERE / name)
        if card.metrics.get("epochs_completed") == cfg.epochs:
            _log(f"{name}: already trained, kept (--force retrains)")
            return {"accuracy": card.metrics.get("val_accuracy", 0.0)}
    result = fit(cfg, show_progress=True)
    if result.status != "done":
        raise SystemExit(f"{name}: {result.status}: {result.message}")
    _log(f"{name}: {result.message}")
    return result.metrics


def _finish_card(name: str, teacher: str | None = None) -> dict:
    """Evaluate on val and test and write both into the card."""
    stem = HERE / name
    val = evaluate(stem, load_card(stem).dataset, "val", teacher=teacher)
    test = evaluate(stem, load_card(stem).dataset, "test", teacher=teacher)
    card = load_card(stem)
    keep = ("n", "accuracy", "nll", "ece", "agreement", "kl", "errors")
    card.metrics = {
        **{f"val_{k}": v for k, v in val.items() if k in keep},
        **{f"test_{k}": v for k, v in test.items() if k in keep},
        "epochs_completed": card.metrics.get("epochs_completed"),
    }
    # shipped cards carry no machine-specific paths: teachers by name, outputs relative
    if card.training.get("out"):
        card.training["out"] = f"pretrained/{name}"
    if card.training.get("teacher"):
        card.training["teacher"] = Path(card.training["teacher"]).name
    save_card(card, stem)
    _log(f"{name}: val {val['accuracy']:.2%}  test {test['accuracy']:.2%}")
    return card.metrics


def make_teacher() -> None:
    members = []
    for seed in range(TEACHER_MEMBERS):
        name = f"mnist5k-teacher-m{seed}"
        _run(TrainConfig(**TEACHER_CFG, seed=seed), name)
        _finish_card(name)
        members.append(name)
    first = load_card(HERE / members[0])
    card = ModelCard(
        name="mnist5k-teacher",
        arch="ensemble",
        arch_kwargs={},
        num_classes=first.num_classes,
        class_names=first.class_names,
        in_shape=first.in_shape,
        mean=first.mean,
        std=first.std,
        dataset="mnist5k",
        training={"members": TEACHER_MEMBERS, **TEACHER_CFG},
        metrics={},
        kind="ensemble",
        members=members,
    )
    save_ensemble_card(card, HERE / "mnist5k-teacher")
    _finish_card("mnist5k-teacher")


def make_students() -> None:
    """The hard-label baselines, then the distilled students with CV's settings."""
    for arch, name in (("mlp-800-800", "mnist5k-mlp800"), ("mlp-30-30", "mnist5k-mlp30")):
        _run(TrainConfig(**MLP_CFG, arch=arch), f"{name}-baseline")
        _finish_card(f"{name}-baseline", teacher=str(HERE / "mnist5k-teacher"))
    cv_students()


def make_digits() -> None:
    _run(TrainConfig(**DIGITS_TEACHER), "digits-teacher")
    _finish_card("digits-teacher")
    _run(
        DistillConfig(
            **DIGITS_STUDENT, teacher=str(HERE / "digits-teacher"), temperature=4.0, alpha=0.9
        ),
        "digits-student",
    )
    _finish_card("digits-student", teacher=str(HERE / "digits-teacher"))


# ---------------------------------------------------------------------------- CV choices
STUDENTS = {"mlp800": "mnist5k-mlp800-distilled", "mlp30": "mnist5k-mlp30-distilled"}


def _candidate(values: dict) -> select_cv.Candidate:
    keys = ("temperature", "alpha", "epochs", "lr")
    return select_cv.Candidate(**{k: values[k] for k in keys}, copies=values.get("copies", 0))


def cv_students() -> None:
    """Run the CV search (resuming from trials.json); retrain a shipped student whose settings
    differ from CV's choice (same name, same protocol: trained on train, reported on val/test)."""
    global FORCE
    for student, name in STUDENTS.items():
        best = select_cv.run(student, select_cv.GRIDS[student][1])
        trial = select_cv.cv_trials(student)[best]
        chosen = _candidate(trial)
        arch = select_cv.GRIDS[student][0]
        shipped = HERE / f"{name}.json"
        if not shipped.exists() or _candidate(load_card(HERE / name).training) != chosen:
            _log(f"{name}: CV chose {best}; retraining it")
            cfg = DistillConfig(
                **{**MLP_CFG, "epochs": chosen.epochs, "lr": chosen.lr},
                arch=arch,
                teacher="mnist5k-teacher",
                temperature=chosen.temperature,
                alpha=chosen.alpha,
            )
            force, FORCE = FORCE, True
            _run(cfg, name)
            FORCE = force
        card = load_card(HERE / name)
        lo, hi = trial["cv_interval"]
        card.training["chosen_by"] = (
            f"5-fold stratified CV over the 4,500 non-test images (pretrained/select_cv.py): "
            f"{best}, CV accuracy {trial['cv_accuracy']:.2%} ({lo:.2%}-{hi:.2%})"
        )
        save_card(card, HERE / name)
        _finish_card(name, teacher=str(HERE / "mnist5k-teacher"))


# ---------------------------------------------------------------------------- variants
AUG_NAME = "mnist5k-mlp800-distilled-aug"  # the larger transfer set (teacher-labelled copies)
OMIT_NAME = "mnist5k-mlp800-omit3-bias"  # Hinton's omitted-3 student, its 3-bias raised
OMITTED = 3


def make_aug_student() -> None:
    """The 2 x 800 student, un-augmented itself, taught on the 4,000 train images plus affine
    copies of them labelled only by the teacher (select_cv.AUG_GRID's candidate)."""
    if not FORCE and (HERE / f"{AUG_NAME}.json").exists():
        _log(f"{AUG_NAME}: already trained, kept (--force retrains)")
        return
    torch.set_num_threads(1)
    cand = select_cv.AUG_GRID[0]
    pool = select_cv.load_pool()
    n_train = len(load_dataset("mnist5k", "train"))  # the pool starts with the train split
    x, t, y = select_cv.transfer_set(
        pool, torch.arange(n_train), cand.copies, select_cv.augmented_copies(pool, cand.copies)
    )
    model = select_cv.train_student("mlp-800-800", x, t, y, cand)
    base = load_card(HERE / "mnist5k-mlp800-distilled")
    cfg = DistillConfig(
        **{**MLP_CFG, "epochs": cand.epochs, "lr": cand.lr},
        arch="mlp-800-800",
        teacher="mnist5k-teacher",
        temperature=cand.temperature,
        alpha=cand.alpha,
        device="cpu",
        name=AUG_NAME,
    )
    trial = select_cv.cv_trials("mlp800").get(cand.key, {})
    card = dataclasses.replace(
        base,
        name=AUG_NAME,
        training={
            **cfg.to_dict(),
            "transfer_size": len(y),
            "transfer": f"the {n_train} train images (hard labels + soft targets) and "
            f"{cand.copies} affine copies of each, labelled only by the teacher (soft targets)",
            "chosen_by": f"5-fold CV {cand.key}: {trial.get('cv_accuracy', float('nan')):.2%}",
        },
        metrics={"epochs_completed": cand.epochs},
    )
    save_checkpoint(model, card, HERE / AUG_NAME)
    _finish_card(AUG_NAME, teacher=str(HERE / "mnist5k-teacher"))


# Hinton's protocol (2 x 800, T = 20, no 3 in the transfer set), soft targets only (no hard
# label ever names a 3, so the hard term can only push the 3 logit down); plain or with 2
# teacher-labelled affine copies of every (non-3) transfer image.
OMIT_CANDIDATES = (
    select_cv.Candidate(20.0, alpha=1.0, epochs=60),
    select_cv.Candidate(20.0, alpha=1.0, epochs=30, copies=2),
)


def _omit3_trial(cand: select_cv.Candidate, pool, aug) -> tuple[torch.nn.Module, dict]:
    """Train one omitted-3 student; its label-free 3-bias (the predicted share of 3s on the
    unlabelled val split = their share of train), and the 3s right on val and test around it."""
    train = load_dataset("mnist5k", "train")
    idx = (train.labels != OMITTED).nonzero().flatten()  # the pool starts with the train split
    model = select_cv.train_student(
        "mlp-800-800", *select_cv.transfer_set(pool, idx, cand.copies, aug), cand
    )
    prior = float((train.labels == OMITTED).float().mean())
    trial = {**dataclasses.asdict(cand), "prior": prior}
    with torch.no_grad():
        for split in ("val", "test"):  # test is reported, never used to choose
            data = load_dataset("mnist5k", split)
            logits = model(data.normalized())
            if split == "val":
                trial["bias"] = bias_for_share(logits, OMITTED, prior)
            is_c = data.labels == OMITTED
            for stage, b in (("before", 0.0), ("after", trial["bias"])):
                trial[f"{split}_{OMITTED}s_right_{stage}_bias"] = int(
                    ((logits[:, OMITTED] + b > _others_max(logits)) & is_c).sum()
                )
            trial[f"{split}_{OMITTED}s"] = int(is_c.sum())
    return model, trial


def _others_max(logits: torch.Tensor) -> torch.Tensor:
    others = logits.clone()
    others[:, OMITTED] = float("-inf")
    return others.max(-1).values


def make_omit3() -> None:
    """Hinton et al.'s omitted class: each OMIT_CANDIDATES student, then the one with the most
    val 3s right after its bias (ties: before it) ships with the bias baked into its output
    layer. Every trial goes into trials.json under "omit3"."""
    if not FORCE and (HERE / f"{OMIT_NAME}.json").exists():
        _log(f"{OMIT_NAME}: already trained, kept (--force retrains)")
        return
    torch.set_num_threads(1)
    pool = select_cv.load_pool()
    copies = max(c.copies for c in OMIT_CANDIDATES)
    aug = select_cv.augmented_copies(pool, copies)
    results = [_omit3_trial(c, pool, aug) for c in OMIT_CANDIDATES]
    ledger = select_cv.read_ledger()
    ledger["omit3"] = {_candidate(t).key: t for _, t in results}
    select_cv.LEDGER.write_text(json.dumps(ledger, indent=2, sort_keys=True) + "\n")
    v = f"val_{OMITTED}s_right_"
    model, trial = max(results, key=lambda r: (r[1][v + "after_bias"], r[1][v + "before_bias"]))
    cand = _candidate(trial)
    with torch.no_grad():
        model.head.bias[OMITTED] += trial["bias"]  # the correction, baked into the checkpoint
    cfg = DistillConfig(
        **{**MLP_CFG, "epochs": cand.epochs, "lr": cand.lr},
        arch="mlp-800-800",
        teacher="mnist5k-teacher",
        temperature=cand.temperature,
        alpha=cand.alpha,
        omit_classes=(OMITTED,),
        drop_labels=True,
        device="cpu",
        name=OMIT_NAME,
    )
    base = load_card(HERE / "mnist5k-mlp800-distilled")
    card = dataclasses.replace(
        base,
        name=OMIT_NAME,
        training={
            **cfg.to_dict(),
            "transfer_copies": cand.copies,
            "omitted_class_bias": trial["bias"],
            "bias_chosen_by": f"share of predicted {OMITTED}s on the unlabelled val split = "
            f"their share of train ({trial['prior']:.3f})",
            "chosen_by": f"most val {OMITTED}s right after the bias (ties: before it) among "
            f"{[c.key for c in OMIT_CANDIDATES]}",
        },
        metrics={"epochs_completed": cand.epochs},
    )
    save_checkpoint(model, card, HERE / OMIT_NAME)
    _finish_card(OMIT_NAME, teacher=str(HERE / "mnist5k-teacher"))


# ---------------------------------------------------------------------------- tables
SHIPPED = [
    "mnist5k-teacher",
    "mnist5k-mlp800-baseline",
    "mnist5k-mlp800-distilled",
    "mnist5k-mlp30-baseline",
    "mnist5k-mlp30-distilled",
    "digits-teacher",
    "digits-student",
]
VARIANTS = [AUG_NAME, OMIT_NAME]


def _acc_ci(m: dict, split: str) -> str:
    """'97.40% (95.6–98.5)': the card's accuracy with the Wilson interval of its counts."""
    n = m[f"{split}_n"]
    low, high = stats.wilson_interval(n - m[f"{split}_errors"], n)
    return f"{m[f'{split}_accuracy']:.2%} ({stats.format_interval(low, high)})"


def table() -> str:
    """A Markdown table of the shipped models' numbers, read from their cards; accuracies with
    their 95% Wilson intervals over the split's images."""
    rows = [
        "| checkpoint | architecture | val acc (95% CI) | val errors | test acc (95% CI) | test errors | val NLL | val ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for name in SHIPPED + VARIANTS:
        path = HERE / f"{name}.json"
        if not path.exists():
            continue
        card = load_card(HERE / name)
        m = card.metrics
        arch = card.arch if card.kind != "ensemble" else f"ensemble of {len(card.members)}"
        rows.append(
            f"| {name} | {arch} | {_acc_ci(m, 'val')} | {m['val_errors']}/{m['val_n']} "
            f"| {_acc_ci(m, 'test')} | {m['test_errors']}/{m['test_n']} "
            f"| {m['val_nll']:.3f} | {m['val_ece']:.3f} |"
        )
    return "\n".join(rows)


def cv_table() -> str:
    """Every CV trial in trials.json: mean held-out accuracy over the 5 folds with its t-interval,
    and the pooled 4,500 held-out predictions' Wilson interval; the chosen one marked."""
    rows = [
        "| student | T | alpha | epochs | lr | teacher-labelled copies | CV accuracy (t-interval over 5 folds) | pooled (Wilson) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for student in select_cv.GRIDS:
        trials = select_cv.cv_trials(student)
        grid = {c.key: trials[c.key] for c in select_cv.GRIDS[student][1] if c.key in trials}
        best = select_cv.best_trial(grid) if grid else None  # the shipped student's settings
        for key, t in trials.items():
            mark = " **(chosen)**" if key == best else (" (hard labels)" if not t["alpha"] else "")
            lo, hi = t["cv_interval"]
            plo, phi = t["pooled_wilson"]
            rows.append(
                f"| {select_cv.GRIDS[student][0]} | {t['temperature']:g} | {t['alpha']:g} "
                f"| {t['epochs']} | {t['lr']:g} | {t.get('copies', 0)} "
                f"| {t['cv_accuracy']:.2%} ({stats.format_interval(lo, hi, 2)}){mark} "
                f"| {stats.format_interval(plo, phi, 2)} |"
            )
    return "\n".join(rows)


def _test_right(name: str) -> torch.Tensor:
    return stats.correct_vector(
        dataset_logits(str(HERE / name), "mnist5k", "test"), load_dataset("mnist5k", "test").labels
    )


def levers_table() -> str:
    """What each 2 x 800 lever gives on the 500 test images: the paired (Newcombe) interval of
    student - baseline, and the share of the baseline-to-teacher gap it closes (the interval
    scaled by the measured gap), then the omitted-3 student's test 3s before/after its bias."""
    base = _test_right("mnist5k-mlp800-baseline")
    gap = float(_test_right("mnist5k-teacher").float().mean() - base.float().mean())
    rows = [
        "| 2 x 800 student | test acc (95% CI) | - baseline (paired 95% CI) | gap closed (95% CI) |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("mnist5k-mlp800-distilled", AUG_NAME):
        if not (HERE / f"{name}.json").exists():
            continue
        right = _test_right(name)
        d = stats.paired_difference(right, base)
        acc = stats.format_accuracy(float(right.float().mean()), len(right), 2)
        rows.append(
            f"| {name} | {acc} | {100 * d.diff:+.1f} pts ({100 * d.low:+.1f} to {100 * d.high:+.1f}) "
            f"| {d.diff / gap:.0%} ({d.low / gap:.0%} to {d.high / gap:.0%}) |"
        )
    if (HERE / f"{OMIT_NAME}.json").exists():
        rows += ["", *omit3_lines()]
    return "\n".join(rows)


def omit3_lines() -> list[str]:
    """The omitted-3 student's test 3s right before and after the bias, with Wilson intervals."""
    logits = dataset_logits(str(HERE / OMIT_NAME), "mnist5k", "test")
    labels = load_dataset("mnist5k", "test").labels
    bias = load_card(HERE / OMIT_NAME).training["omitted_class_bias"]
    is3 = labels == OMITTED
    out = [
        f"| {OMIT_NAME} | test {OMITTED}s right (95% CI) | test accuracy (95% CI) |",
        "| --- | --- | --- |",
    ]
    for stage, b in ((f"before the bias (its {OMITTED} logit - {bias:.2f})", -bias), ("after the bias", 0.0)):  # fmt: skip
        shifted = logits.clone()
        shifted[:, OMITTED] += b
        pred = shifted.argmax(-1)
        k, n = int((pred[is3] == OMITTED).sum()), int(is3.sum())
        lo, hi = stats.wilson_interval(k, n)
        acc = stats.format_accuracy(float((pred == labels).float().mean()), len(labels), 2)
        out.append(f"| {stage} | {k}/{n} = {k / n:.1%} ({stats.format_interval(lo, hi)}) | {acc} |")
    out += [
        "",
        f"| omit-{OMITTED} candidate | bias | val {OMITTED}s right before -> after | test {OMITTED}s right before -> after |",
        "| --- | --- | --- | --- |",
    ]  # fmt: skip
    for key, t in select_cv.read_ledger().get("omit3", {}).items():
        val, test = (
            f"{t[f'{s}_{OMITTED}s_right_before_bias']} -> {t[f'{s}_{OMITTED}s_right_after_bias']}"
            f" of {t[f'{s}_{OMITTED}s']}"
            for s in ("val", "test")
        )
        out.append(f"| {key} | {t['bias']:.2f} | {val} | {test} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=["teacher", "students", "digits", "variants"], default=None
    )
    parser.add_argument(
        "--cv", action="store_true", help="choose the students' settings by 5-fold CV and stop"
    )
    parser.add_argument("--table", action="store_true", help="print the results table and stop")
    parser.add_argument(
        "--refresh-cards",
        action="store_true",
        help="re-evaluate the shipped models into their cards",
    )
    parser.add_argument("--force", action="store_true", help="retrain finished checkpoints too")
    args = parser.parse_args()
    global FORCE
    FORCE = args.force
    if args.refresh_cards:
        members = [f"mnist5k-teacher-m{i}" for i in range(TEACHER_MEMBERS)]
        for name in members + SHIPPED:
            if (HERE / f"{name}.json").exists():
                teacher = load_card(HERE / name).training.get("teacher")
                _finish_card(name, teacher=teacher and str(HERE / Path(teacher).name))
    elif args.cv:
        cv_students()
    elif not args.table:
        if args.only in (None, "digits"):
            make_digits()
        if args.only in (None, "teacher"):
            make_teacher()
        if args.only in (None, "students"):
            make_students()
        if args.only in (None, "variants"):
            make_aug_student()
            make_omit3()
    print(table())
    if args.table:
        print("\n" + cv_table() + "\n\n" + levers_table())


if __name__ == "__main__":
    main()
