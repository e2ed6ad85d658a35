"""Experiment 3, soft targets as a regulariser (Hinton et al. 2015, section 5): on 3% of the data,
hard labels over-fit while soft targets keep the model general."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import engine, soft
from kdviz.data import load_dataset
from kdviz.experiments.registry import (
    HINTON,
    ExperimentResult,
    comparison_table,
    make_result,
    pct,
    register_experiment,
    register_figure,
)
from kdviz.experiments.runner import Runner
from kdviz.experiments.settings import (
    TeacherSettings,
    distill_config,
    hard_config,
)


@dataclass(frozen=True)
class RegulariserSettings(TeacherSettings):
    student: str = "mlp-300-300"  # an over-fitting-prone student
    fraction: float = 0.03  # share of the training split kept (stratified, seeded)
    small_batch_size: int = 32  # batch size on the small set (a few steps per epoch)
    small_epochs: int | None = None  # epochs on the small set (tiny 4, full 100)

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"small_epochs": 4},
        "full": {"small_epochs": 100},
    }


@register_experiment(
    "soft-regulariser",
    title="Soft targets as a regulariser",
    settings=RegulariserSettings,
    paper=f"{HINTON}, section 5 (Table 5)",
    question="With 3% of the data, do soft targets stop a big model from over-fitting?",
)
def soft_regulariser(s: RegulariserSettings, runner: Runner) -> ExperimentResult:
    teacher = runner.teacher(s)
    runner.plan(4)
    small = {"transfer_fraction": s.fraction, "batch_size": s.small_batch_size, "epochs": s.small_epochs}  # fmt: skip
    train = load_dataset(s.dataset, "train")
    rows = []
    for frac_label, changes in ((f"{s.fraction:.0%}", small), ("100%", {})):
        for targets in ("hard labels", "soft targets"):
            cfg = (hard_config if targets == "hard labels" else distill_config)(
                s, s.student, teacher, **changes
            )
            run = runner.train(cfg, f"{s.student} {targets} on {frac_label}")
            used = engine._transfer_indices(cfg, train.labels)
            train_logits = runner.logits(run.checkpoint, s.dataset, "train")[used]
            rows.append(
                {
                    "data": frac_label,
                    "fraction": float(changes.get("transfer_fraction", 1.0)),
                    "examples": len(used),
                    "targets": targets,
                    "train_accuracy": soft.accuracy(train_logits, train.labels[used]),
                    "accuracy": run.metrics["accuracy"],
                    "nll": run.metrics["nll"],
                    "run_id": run.run_id,
                }
            )
    table = pd.DataFrame(rows)
    acc = {(r.data, r.targets): r.accuracy for r in table.itertuples()}
    f = f"{s.fraction:.0%}"
    comparison = comparison_table(
        [
            (f"hard labels, {f} of the data: test accuracy", pct(acc[(f, "hard labels")]), "44.5% (3%, speech frames)", f"{HINTON}, Table 5"),
            (f"soft targets, {f} of the data", pct(acc[(f, "soft targets")]), "57.0%", f"{HINTON}, Table 5"),
            ("hard labels, all data", pct(acc[("100%", "hard labels")]), "58.9%", f"{HINTON}, Table 5"),
            ("soft targets, all data", pct(acc[("100%", "soft targets")]), "-", ""),
        ]
    )  # fmt: skip
    notice = (
        f"Compare train and test accuracy on {f} of the data: with hard labels the model can fit "
        "its few examples perfectly and still generalise poorly, while the teacher's soft "
        "targets give each example a whole distribution to match instead of one class. Hinton "
        "found that this extra constraint acts as a strong regulariser: his speech model on 3% "
        "of the data needed no early stopping with soft targets."
    )
    return make_result(s, "soft-regulariser", table, comparison, notice)


@register_figure("soft-regulariser")
def _figure(fig, t: pd.DataFrame) -> None:
    """Test and train accuracy per data share and kind of target."""
    for targets, part in t.groupby("targets", sort=False):
        fig.add_bar(x=part["data"], y=part["accuracy"], name=f"{targets}: test")
        fig.add_bar(x=part["data"], y=part["train_accuracy"], name=f"{targets}: train", opacity=0.45)  # fmt: skip
    fig.update_xaxes(title="share of the training data")
