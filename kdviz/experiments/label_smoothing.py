"""Experiment 4, label-smoothed teacher (Müller, Kornblith & Hinton 2019): smoothing can make a
teacher more accurate but erases the similarity structure its student would learn from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import analysis, soft
from kdviz.data import load_dataset
from kdviz.engine import TrainConfig
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    MULLER,
    ExperimentResult,
    error_bars,
    make_result,
    register_comparison,
    register_experiment,
    register_figure,
)
from kdviz.experiments.runner import Runner, Trained
from kdviz.experiments.settings import (
    Settings,
    common_fields,
    distill_config,
    hard_config,
)
from kdviz.experiments.transforms import (
    dark_structure,
)


@dataclass(frozen=True)
class SmoothingSettings(Settings):
    smoothings: tuple[float, ...] = (0.0, 0.1)  # label smoothing of each teacher
    teacher_arch: str = "lenet"  # the teachers trained here
    teacher_epochs: int | None = None  # tiny 2, full 30 (a teacher is trained to convergence)
    student: str = "mlp-300-300"
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"teacher_epochs": 2},
        "full": {"teacher_epochs": 30},
    }


@register_experiment(
    "label-smoothing",
    title="Label-smoothed teacher",
    settings=SmoothingSettings,
    paper=f"{MULLER}, section 4",
    question="Is a more accurate label-smoothed teacher a better teacher?",
)
def label_smoothing(s: SmoothingSettings, runner: Runner) -> ExperimentResult:
    runner.plan(2 * len(s.smoothings) + 1)
    test = load_dataset(s.dataset, s.eval_split)
    rows, sims = [], []
    teachers = []
    for ls in s.smoothings:
        cfg = TrainConfig(**common_fields(s), arch=s.teacher_arch, label_smoothing=float(ls))
        cfg = dataclasses.replace(cfg, epochs=s.teacher_epochs)
        teachers.append((ls, runner.train(cfg, f"teacher {s.teacher_arch} smoothing {ls:g}", role="teacher")))  # fmt: skip
    for ls, t in teachers:
        logits = runner.logits(t.checkpoint, s.dataset, s.eval_split)
        rows.append(
            {
                "smoothing": float(ls),
                "model": "teacher",
                "arch": s.teacher_arch,
                "accuracy": t.metrics["accuracy"],
                "error": 1 - t.metrics["accuracy"],
                "ece": t.metrics["ece"],
                "dark_mass": float(soft.dark_mass(soft.soften(logits, s.temperature), test.labels).mean()),
                "dark_structure": dark_structure(logits, test.labels, s.temperature),
                "agreement": None,
                "run_id": t.run_id,
                "hard_run_id": "",
            }
        )  # fmt: skip
        matrix = analysis.similarity_matrix(logits, test.labels, s.temperature, test.class_names)
        long = matrix.stack().rename("probability").reset_index()
        long.columns = ["true_class", "class", "probability"]
        long.insert(0, "smoothing", float(ls))
        sims.append(long)
    students = []
    for ls, t in teachers:
        run = runner.train(
            distill_config(s, s.student, t.checkpoint), f"{s.student} from smoothing-{ls:g} teacher"
        )
        students.append((ls, run))
    hard = runner.train(
        hard_config(s, s.student, teachers[0][1].checkpoint), f"{s.student} hard labels"
    )
    for ls, run in students:
        rows.append(_student_row(run, hard, smoothing=float(ls), model="student", arch=s.student))
    rows.append(_student_row(hard, hard, smoothing=float("nan"), model="student, hard labels", arch=s.student))  # fmt: skip
    table = pd.DataFrame(rows)
    notice = (
        "Compare the two similarity matrices and the dark_structure column: label smoothing "
        "pulls a teacher's non-target probabilities towards equal, erasing its 'a 7 looks a bit "
        "like a 1' structure while its own accuracy holds or improves. Müller et al. found that "
        "this is exactly the information distillation transfers, so the smoothed teacher's "
        "student gains less."
    )
    return make_result(s, "label-smoothing", table, notice, extras={"similarity": pd.concat(sims)})


@register_comparison("label-smoothing")
def compare(s: SmoothingSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Müller et al.'s two directions, each read from the two accuracy intervals: smoothing makes
    the teacher more accurate, and its student less accurate."""
    teacher_rows = table[table["model"] == "teacher"].set_index("smoothing")
    student_rows = table[table["model"] == "student"].set_index("smoothing")
    lo, hi = min(s.smoothings), max(s.smoothings)
    t_lo, t_hi, s_lo, s_hi = teacher_rows.loc[lo], teacher_rows.loc[hi], student_rows.loc[lo], student_rows.loc[hi]  # fmt: skip
    return iv.comparison_rows(
        [
            (f"teacher error, smoothing {lo:g} -> {hi:g}", f"{_error_text(t_lo)} -> {_error_text(t_hi)}", "0.67% -> 0.59% (MNIST): smoothing helps the teacher", iv.order_verdict(iv.interval(t_hi), iv.interval(t_lo)), MULLER),
            (f"student error, from teacher {lo:g} -> {hi:g}", f"{_error_text(s_lo)} -> {_error_text(s_hi)}", "0.74% -> 0.91%: the smoothed teacher teaches worse", iv.order_verdict(iv.interval(s_lo), iv.interval(s_hi)), MULLER),
            (f"teacher dark structure at T={s.temperature:g} (nats), {lo:g} -> {hi:g}", f"{t_lo['dark_structure']:.3f} -> {t_hi['dark_structure']:.3f}", "smoothing erases it (qualitative)", "-", MULLER),
        ]
    )  # fmt: skip


def _error_text(row: pd.Series) -> str:
    """'1.20% (0.62–2.31)': the error rate with the accuracy interval turned over."""
    low, high = iv.interval(row)
    return iv.value_text(1 - row["accuracy"], 1 - high, 1 - low, digits=2)


def _student_row(run: Trained, hard: Trained, **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "accuracy": run.metrics["accuracy"],
        "error": 1 - run.metrics["accuracy"],
        "ece": run.metrics["ece"],
        "dark_mass": None,
        "dark_structure": None,
        "agreement": run.metrics.get("agreement"),
        "run_id": run.run_id,
        "hard_run_id": hard.run_id,
    }


@register_figure("label-smoothing")
def _figure(fig, t: pd.DataFrame) -> None:
    """Accuracy of each teacher and of its student, per smoothing."""
    for model, part in t.groupby("model", sort=False):
        x = ["hard labels" if pd.isna(v) else f"smoothing {v:g}" for v in part["smoothing"]]
        fig.add_bar(x=x, y=part["accuracy"], name=model, error_y=error_bars(part))
