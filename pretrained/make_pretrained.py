"""Reproduce every shipped checkpoint in pretrained/ from the bundled offline data, seeded.

    python pretrained/make_pretrained.py            # everything (about 15-25 min on 2 CPU cores)
    python pretrained/make_pretrained.py --only digits
    python pretrained/make_pretrained.py --table    # print the validation table from the cards

Model choices and temperatures are picked on the validation split only; the test split is
reported, never tuned to. The metrics go into each checkpoint's JSON card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from kdviz.engine import DistillConfig, TrainConfig, evaluate, fit
from kdviz.models import ModelCard, load_card, save_card, save_ensemble_card

HERE = Path(__file__).resolve().parent

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
# Candidates (temperature, alpha, epochs[, learning rate]), chosen between on the validation split.
# Hinton: with >= 300 units all T above 8 did about equally; with 30 units T = 2.5 to 4 was best.
MLP800_CANDIDATES = (
    (4.0, 0.9, 60),
    (8.0, 0.9, 60),
    (20.0, 0.9, 60),
    (20.0, 0.9, 150),
    (20.0, 1.0, 150),
    (20.0, 0.9, 60, 3e-3),
    (20.0, 0.9, 100, 5e-4),
)
MLP30_CANDIDATES = ((2.5, 0.9, 60), (4.0, 0.9, 60))
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


LEDGER = HERE / "trials.json"  # validation accuracy of every distillation trial, for resuming


def _ledger() -> dict:
    return json.loads(LEDGER.read_text()) if LEDGER.exists() else {}


def _best_distilled(arch: str, candidates, name: str, baseline_name: str) -> None:
    """Distil with each candidate (T, alpha, epochs); keep the best by *validation* accuracy.

    Every trial's validation accuracy goes into trials.json, and only the best trial's weights are
    kept (as NAME), so an interrupted or extended search resumes without retraining.
    """
    _run(TrainConfig(**MLP_CFG, arch=arch), baseline_name)
    _finish_card(baseline_name, teacher=str(HERE / "mnist5k-teacher"))
    ledger = _ledger()
    for temp, alpha, epochs, *rest in candidates:
        lr = rest[0] if rest else MLP_CFG["lr"]
        trial = f"{name}-T{temp:g}-a{alpha:g}-e{epochs}" + (f"-lr{lr:g}" if rest else "")
        if trial in ledger and not FORCE:
            continue
        cfg = DistillConfig(
            **{**MLP_CFG, "epochs": epochs, "lr": lr},
            arch=arch,
            teacher="mnist5k-teacher",
            temperature=temp,
            alpha=alpha,
        )
        metrics = _run(cfg, trial)
        best = max(
            (v["val_accuracy"] for k, v in ledger.items() if k.startswith(f"{name}-T")),
            default=-1.0,
        )
        ledger[trial] = {
            "val_accuracy": metrics["accuracy"],
            "temperature": temp,
            "alpha": alpha,
            "epochs": epochs,
            "lr": lr,
        }
        _log(f"{trial}: val accuracy {metrics['accuracy']:.2%} (best so far {best:.2%})")
        if metrics["accuracy"] > best or not (HERE / f"{name}.json").exists():
            for suffix in (".safetensors", ".json"):
                (HERE / f"{trial}{suffix}").replace(HERE / f"{name}{suffix}")
            card = load_card(HERE / name)
            card.name = name
            card.training["chosen_by"] = (
                f"best validation accuracy over (T, alpha, epochs[, lr]) in {list(candidates)}"
            )
            save_card(card, HERE / name)
            _finish_card(name, teacher=str(HERE / "mnist5k-teacher"))
        else:
            for suffix in (".safetensors", ".json"):
                (HERE / f"{trial}{suffix}").unlink(missing_ok=True)
        LEDGER.write_text(json.dumps(ledger, indent=2, sort_keys=True))


def make_students() -> None:
    _best_distilled(
        "mlp-800-800", MLP800_CANDIDATES, "mnist5k-mlp800-distilled", "mnist5k-mlp800-baseline"
    )
    _best_distilled(
        "mlp-30-30", MLP30_CANDIDATES, "mnist5k-mlp30-distilled", "mnist5k-mlp30-baseline"
    )


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


SHIPPED = [
    "mnist5k-teacher",
    "mnist5k-mlp800-baseline",
    "mnist5k-mlp800-distilled",
    "mnist5k-mlp30-baseline",
    "mnist5k-mlp30-distilled",
    "digits-teacher",
    "digits-student",
]


def table() -> str:
    """A Markdown table of the shipped models' numbers, read from their cards."""
    rows = [
        "| checkpoint | architecture | val acc | val errors | test acc | test errors | val NLL | val ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in SHIPPED:
        path = HERE / f"{name}.json"
        if not path.exists():
            continue
        card = load_card(HERE / name)
        m = card.metrics
        arch = card.arch if card.kind != "ensemble" else f"ensemble of {len(card.members)}"
        rows.append(
            f"| {name} | {arch} | {m['val_accuracy']:.2%} | {m['val_errors']}/{m['val_n']} "
            f"| {m['test_accuracy']:.2%} | {m['test_errors']}/{m['test_n']} "
            f"| {m['val_nll']:.3f} | {m['val_ece']:.3f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["teacher", "students", "digits"], default=None)
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
    elif not args.table:
        if args.only in (None, "digits"):
            make_digits()
        if args.only in (None, "teacher"):
            make_teacher()
        if args.only in (None, "students"):
            make_students()
    print(table())


if __name__ == "__main__":
    main()
