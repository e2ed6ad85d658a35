"""Experiment 3, soft targets as a regulariser (Hinton et al. 2015, section 5): on 3% of the data,
hard labels over-fit while soft targets keep the model general."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import engine, soft, stats
from kdviz.data import load_dataset
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    HINTON,
    ExperimentResult,
    error_bars,
    make_result,
    register_comparison,
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
        hard_id = ""
        for targets in ("hard labels", "soft targets"):
            cfg = (hard_config if targets == "hard labels" else distill_config)(
                s, s.student, teacher, **changes
            )
            run = runner.train(cfg, f"{s.student} {targets} on {frac_label}")
            hard_id = hard_id or run.run_id  # the hard-label run on the same data comes first
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
                    "hard_run_id": hard_id,
                }
            )
    table = pd.DataFrame(rows)
    f = f"{s.fraction:.0%}"
    notice = (
        f"Compare train and test accuracy on {f} of the data: with hard labels the model can fit "
        "its few examples perfectly and still generalise poorly, while the teacher's soft "
        "targets give each example a whole distribution to match instead of one class. Hinton "
        "found that this extra constraint acts as a strong regulariser: his speech model on 3% "
        "of the data needed no early stopping with soft targets."
    )
    return make_result(s, "soft-regulariser", table, notice)


@register_comparison("soft-regulariser")
def compare(s: RegulariserSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Hinton's numbers are speech frames: only the direction carries over, so the verdict is on
    the soft targets' paired gain over hard labels on the same small share of the data."""
    row = {(r["data"], r["targets"]): r for _, r in table.iterrows()}
    f = f"{s.fraction:.0%}"
    small_soft = row[(f, "soft targets")]
    return iv.comparison_rows(
        [
            (f"hard labels, {f} of the data: test accuracy", iv.row_text(row[(f, "hard labels")]), "44.5% (3%, speech frames)", "-", f"{HINTON}, Table 5"),
            (f"soft targets, {f} of the data", iv.row_text(small_soft), "57.0%", "-", f"{HINTON}, Table 5"),
            (f"soft targets - hard labels, {f} of the data", iv.gain_text(small_soft), "+12.5 pts: soft targets beat hard labels", stats.verdict(iv.interval(small_soft, "gain"), iv.BEATS), f"{HINTON}, Table 5"),
            ("hard labels, all data", iv.row_text(row[("100%", "hard labels")]), "58.9%", "-", f"{HINTON}, Table 5"),
            ("soft targets, all data", iv.row_text(row[("100%", "soft targets")]), "-", "-", ""),
        ]
    )  # fmt: skip


@register_figure("soft-regulariser")
def _figure(fig, t: pd.DataFrame) -> None:
    """Test and train accuracy per data share and kind of target."""
    for targets, part in t.groupby("targets", sort=False):
        fig.add_bar(x=part["data"], y=part["accuracy"], name=f"{targets}: test", error_y=error_bars(part))  # fmt: skip
        fig.add_bar(x=part["data"], y=part["train_accuracy"], name=f"{targets}: train", opacity=0.45)  # fmt: skip
    fig.update_xaxes(title="share of the training data")
