"""Experiment 1, temperature sweep (Hinton et al. 2015, section 3): which softmax temperature teaches
best, for a large and a small student, each against its hard-label twin."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import stats
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    COLORS,
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
class SweepSettings(TeacherSettings):
    students: tuple[str, ...] = ("mlp-300-300", "mlp-30-30")  # a large and a small student
    temperatures: tuple[float, ...] | None = None  # tiny (1, 4); full (1, 2, 2.5, 4, 8, 20)

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"temperatures": (1.0, 4.0)},
        "full": {"temperatures": (1.0, 2.0, 2.5, 4.0, 8.0, 20.0)},
    }


@register_experiment(
    "temperature-sweep",
    title="Temperature sweep",
    settings=SweepSettings,
    paper=f"{HINTON}, section 3",
    question="Which softmax temperature teaches best, and does it depend on the student's size?",
)
def temperature_sweep(s: SweepSettings, runner: Runner) -> ExperimentResult:
    teacher = runner.teacher(s)
    runner.plan(len(s.students) * (len(s.temperatures) + 1))
    rows = []
    for arch in s.students:
        hard = runner.train(hard_config(s, arch, teacher), f"{arch} hard labels")
        for t in s.temperatures:
            run = runner.train(distill_config(s, arch, teacher, temperature=t), f"{arch} T={t:g}")
            rows.append(
                {
                    "student": arch,
                    "temperature": float(t),
                    "accuracy": run.metrics["accuracy"],
                    "agreement": run.metrics.get("agreement"),
                    "nll": run.metrics["nll"],
                    "hard_accuracy": hard.metrics["accuracy"],
                    "run_id": run.run_id,
                    "hard_run_id": hard.run_id,
                }
            )
    table = pd.DataFrame(rows)
    notice = (
        "Read each student's curve against its own hard-label accuracy (the gain column): the "
        "large student should be nearly flat once T is high, while the small one should peak at "
        "a middling T. A small net cannot also fit the tiny non-target probabilities that a high "
        "T makes as loud as the rest, so for it some dark knowledge is best left ignored."
    )
    return make_result(s, "temperature-sweep", table, notice)


@register_comparison("temperature-sweep")
def compare(s: SweepSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Per student: the best T against Hinton's finding for its size, and its gain over hard
    labels (paired interval) against "distillation helps"."""
    rows = []
    for arch in s.students:
        part = table[table["student"] == arch]
        best = part.loc[part["accuracy"].idxmax()]
        high = part[part["temperature"] >= 8]
        units = _hidden_units(arch)
        if units is not None and units >= 300:
            published = "with >= 300 units per layer all T > 8 did about equally"
            verdict = iv.equal_verdict([iv.interval(r) for _, r in high.iterrows()])
            spread = f"; T >= 8 within {100 * (high['accuracy'].max() - high['accuracy'].min()):.1f} pts" if len(high) > 1 else ""  # fmt: skip
        elif units is not None and units <= 30:
            published = "with 30 units per layer T = 2.5 to 4 was best"
            inside = part[(part["temperature"] >= 2.5) & (part["temperature"] <= 4)]
            outside = part.drop(inside.index)
            verdict = (
                iv.order_verdict(iv.interval(inside.loc[inside["accuracy"].idxmax()]), iv.interval(outside.loc[outside["accuracy"].idxmax()]))
                if len(inside) and len(outside) else "inconclusive"
            )  # fmt: skip
            spread = ""
        else:
            published, verdict, spread = "-", "-", ""
        ours = f"T = {best['temperature']:g}: {iv.row_text(best)}{spread}"
        rows.append((f"{arch}: best T (test accuracy)", ours, published, verdict, f"{HINTON}, section 3"))  # fmt: skip
        rows.append(
            (
                f"{arch}: gain of T = {best['temperature']:g} over hard labels",
                iv.gain_text(best),
                "distillation beats training on the hard labels",
                stats.verdict(iv.interval(best, "gain"), iv.BEATS),
                f"{HINTON}, section 3",
            )
        )
    return iv.comparison_rows(rows)


def _hidden_units(arch: str) -> int | None:
    """The narrowest hidden layer of an MLP name ("mlp-300-300" -> 300); None for other models."""
    sizes = [int(h) for h in re.findall(r"-(\d+)", arch)] if arch.startswith("mlp-") else []
    return min(sizes) if sizes else None


@register_figure("temperature-sweep")
def _figure(fig, t: pd.DataFrame) -> None:
    """One accuracy curve per student over T, its hard-label accuracy dashed."""
    for i, (arch, part) in enumerate(t.groupby("student", sort=False)):
        color = COLORS[i % len(COLORS)]
        fig.add_scatter(
            x=part["temperature"], y=part["accuracy"], mode="lines+markers", name=arch,
            line={"color": color}, error_y=error_bars(part),
        )  # fmt: skip
        fig.add_scatter(
            x=[part["temperature"].min(), part["temperature"].max()],
            y=[part["hard_accuracy"].iloc[0]] * 2,
            mode="lines", name=f"{arch}, hard labels", line={"color": color, "dash": "dash"},
        )  # fmt: skip
    fig.update_xaxes(type="log", title="temperature T")
