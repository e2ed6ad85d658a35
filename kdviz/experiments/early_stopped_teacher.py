"""Experiment 5, early-stopped teacher (Cho & Hariharan 2019): a teacher checkpoint from early in
training may teach a small student better than the finished teacher."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz.engine import TrainConfig
from kdviz.errors import KdvizError
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    CHO,
    ExperimentResult,
    error_bars,
    make_result,
    register_comparison,
    register_experiment,
    register_figure,
)
from kdviz.experiments.runner import Runner
from kdviz.experiments.settings import (
    Settings,
    common_fields,
    distill_config,
    hard_config,
)


@dataclass(frozen=True)
class EarlyStopSettings(Settings):
    teacher_arch: str = "lenet"  # the teacher trained here, snapshotted at several epochs
    teacher_epochs: int | None = None  # length of its (cosine) schedule: tiny 2, full 30
    checkpoints: tuple[int, ...] | None = None  # epochs distilled from: full (1, 3, 10, 30)
    student: str = "mlp-30-30"  # a small student (Cho & Hariharan: the capacity gap matters)
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"teacher_epochs": 2, "checkpoints": (1, 2)},
        "full": {"teacher_epochs": 30, "checkpoints": (1, 3, 10, 30)},
    }


@register_experiment(
    "early-stopped-teacher",
    title="Early-stopped teacher",
    settings=EarlyStopSettings,
    paper=CHO,
    question="Does a teacher stopped early teach a small student better than the finished one?",
)
def early_stopped_teacher(s: EarlyStopSettings, runner: Runner) -> ExperimentResult:
    epochs = tuple(sorted({int(e) for e in s.checkpoints if 1 <= int(e) <= s.teacher_epochs}))
    if not epochs:
        raise KdvizError(
            f"checkpoints must include epochs between 1 and teacher_epochs ({s.teacher_epochs})."
        )
    runner.plan(2 + len(epochs))
    cfg = TrainConfig(**common_fields(s), arch=s.teacher_arch)
    cfg = dataclasses.replace(cfg, epochs=s.teacher_epochs)
    teacher = runner.train(cfg, f"teacher {s.teacher_arch}", role="teacher", snapshot_epochs=epochs)
    by_epoch = {int(m["epoch"]): m for m in teacher.history}
    rows = []
    for e in epochs:
        run = runner.train(
            distill_config(s, s.student, teacher.snapshots[e]),
            f"{s.student} from teacher epoch {e}",
        )
        rows.append(
            {
                "teacher": f"epoch {e}",
                "teacher_epoch": e,
                "teacher_accuracy": by_epoch[e]["accuracy"],
                "accuracy": run.metrics["accuracy"],
                "agreement": run.metrics.get("agreement"),
                "run_id": run.run_id,
            }
        )
    hard = runner.train(hard_config(s, s.student, teacher.checkpoint), f"{s.student} hard labels")
    rows.append(
        {
            "teacher": "none (hard labels)",
            "teacher_epoch": float("nan"),
            "teacher_accuracy": float("nan"),
            "accuracy": hard.metrics["accuracy"],
            "agreement": hard.metrics.get("agreement"),
            "run_id": hard.run_id,
        }
    )
    table = pd.DataFrame(rows).assign(hard_run_id=hard.run_id)  # every student vs hard labels
    notice = (
        "Put the teacher's own accuracy beside its student's: the most accurate checkpoint is not "
        "necessarily the best teacher, especially for a small student. Late in training a teacher "
        "grows confident and its soft targets sharpen, so a student with little capacity receives "
        "less usable dark knowledge (Cho & Hariharan's capacity gap)."
    )
    return make_result(s, "early-stopped-teacher", table, notice)


@register_comparison("early-stopped-teacher")
def compare(s: EarlyStopSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Cho & Hariharan's claim read from the intervals: the best student of an earlier checkpoint
    against the student of the finished teacher."""
    taught = table.dropna(subset=["teacher_epoch"])
    best = taught.loc[taught["accuracy"].idxmax()]
    final = taught.iloc[-1]
    early = taught.iloc[:-1]
    verdict = (
        iv.order_verdict(iv.interval(early.loc[early["accuracy"].idxmax()]), iv.interval(final))
        if len(early) else "inconclusive"
    )  # fmt: skip
    hard = table[table["teacher_epoch"].isna()].iloc[0]
    return iv.comparison_rows(
        [
            ("best teacher checkpoint for the student", f"epoch {int(best['teacher_epoch'])} of {s.teacher_epochs}: {iv.row_text(best)}", "an early-stopped teacher often beats the finished one", verdict, CHO),
            ("student from the finished teacher", f"{iv.row_text(final)}; {iv.gain_text(final)} over hard labels", "-", "-", ""),
            ("student on hard labels", iv.row_text(hard), "-", "-", ""),
        ]
    )  # fmt: skip


@register_figure("early-stopped-teacher")
def _figure(fig, t: pd.DataFrame) -> None:
    """The teacher's accuracy and its student's per teacher checkpoint; hard labels dashed."""
    taught = t.dropna(subset=["teacher_epoch"])
    fig.add_scatter(x=taught["teacher_epoch"], y=taught["teacher_accuracy"], mode="lines+markers", name="teacher")  # fmt: skip
    fig.add_scatter(x=taught["teacher_epoch"], y=taught["accuracy"], mode="lines+markers", name="student", error_y=error_bars(taught))  # fmt: skip
    hard = t[t["teacher_epoch"].isna()]["accuracy"]
    if len(hard):
        fig.add_hline(y=float(hard.iloc[0]), line_dash="dash", annotation_text="student, hard labels")  # fmt: skip
    fig.update_xaxes(title="teacher checkpoint (epoch)")
