"""Experiment 8, ensemble to one (Hinton et al. 2015, section 4): how much of an ensemble's gain a
single distilled model of the same size keeps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import engine, stats
from kdviz.data import load_dataset
from kdviz.engine import TrainConfig
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    HINTON,
    ExperimentResult,
    make_result,
    pct,
    register_comparison,
    register_experiment,
)
from kdviz.experiments.runner import Runner, ensemble_card
from kdviz.experiments.settings import (
    Settings,
    common_fields,
    distill_config,
)


@dataclass(frozen=True)
class EnsembleSettings(Settings):
    arch: str = "mlp-300-300"  # every member and the student
    members: int | None = None  # ensemble size: tiny 2, full 3
    dropout: float = 0.0  # members' hidden dropout
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"members": 2}, "full": {"members": 3}}


@register_experiment(
    "ensemble-to-one",
    title="Ensemble to one",
    settings=EnsembleSettings,
    paper=f"{HINTON}, section 4 (Table 1)",
    question="How much of an ensemble's gain survives distillation into one model of the same size?",
)
def ensemble_to_one(s: EnsembleSettings, runner: Runner) -> ExperimentResult:
    runner.plan(s.members + 1)
    members = []
    for i in range(s.members):
        cfg = TrainConfig(**common_fields(s), arch=s.arch, dropout=s.dropout)
        cfg = dataclasses.replace(cfg, seed=s.seed + i)
        members.append(runner.train(cfg, f"{s.arch} member {i}", role="teacher"))
    stem = ensemble_card(runner, [m.checkpoint for m in members], s.dataset, "ensemble")
    student = runner.train(
        distill_config(s, s.arch, str(stem), seed=s.seed + s.members), f"{s.arch} distilled from the ensemble"
    )  # fmt: skip
    test = load_dataset(s.dataset, s.eval_split)
    ens_logits = runner.logits(str(stem), s.dataset, s.eval_split)
    rows = []
    for i, m in enumerate(members):
        logits = runner.logits(m.checkpoint, s.dataset, s.eval_split)
        rows.append(_ens_row(f"member {i}", "member", logits, test.labels, ens_logits, m.run_id))
    rows.append(_ens_row(f"ensemble of {s.members}", "ensemble", ens_logits, test.labels, ens_logits, ""))  # fmt: skip
    logits = runner.logits(student.checkpoint, s.dataset, s.eval_split)
    rows.append(_ens_row("distilled single model", "student", logits, test.labels, ens_logits, student.run_id))  # fmt: skip
    table = pd.DataFrame(rows)
    table["hard_run_id"] = [
        "",
    ] * (len(table) - 1) + [members[0].run_id]  # student vs member 0
    notice = (
        "An ensemble beats its members when they disagree on the hard cases; its averaged soft "
        "targets record that disagreement, and the distilled student, the size of one member, "
        "gets to learn from it. Hinton's single distilled model kept more than 80% of the "
        "ensemble's gain; compare the two gains in the last row."
    )
    return make_result(s, "ensemble-to-one", table, notice)


@register_comparison("ensemble-to-one")
def compare(s: EnsembleSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Hinton's numbers are speech frames: the verdicts are on the directions, the ensemble's
    interval against its best member's and the student's paired gain over member 0 (a
    hard-label model of the same size)."""
    by = table.set_index("kind")
    members = table[table["kind"] == "member"]
    best_member = members.loc[members["accuracy"].idxmax()]
    ens, stu = by.loc["ensemble"], by.loc["student"]
    member_mean = members["accuracy"].mean()
    gains = f"{100 * (ens['accuracy'] - member_mean):+.1f} / {100 * (stu['accuracy'] - member_mean):+.1f} pts"
    return iv.comparison_rows(
        [
            ("single model (mean of members)", pct(member_mean), "58.9% (speech frames)", "-", f"{HINTON}, Table 1"),
            (f"ensemble of {s.members}", iv.row_text(ens), "61.1% (10 models): better than one model", iv.order_verdict(iv.interval(ens), iv.interval(best_member)), f"{HINTON}, Table 1"),
            ("distilled single model", f"{iv.row_text(stu)}; {iv.gain_text(stu)} over member 0", "60.8%: better than one model trained on labels", stats.verdict(iv.interval(stu, "gain"), iv.BEATS), f"{HINTON}, Table 1"),
            ("gain over one model: ensemble / distilled", gains, "+2.2 / +1.9 pts (over 80% of the gain kept)", "-", f"{HINTON}, section 4"),
        ]
    )  # fmt: skip


def _ens_row(model, kind, logits, labels, ens_logits, run_id) -> dict[str, Any]:
    metrics = engine.logit_metrics(logits, labels, ens_logits)
    return {
        "model": model,
        "kind": kind,
        "accuracy": metrics["accuracy"],
        "nll": metrics["nll"],
        "ece": metrics["ece"],
        "agreement_with_ensemble": metrics["agreement"],
        "run_id": run_id,
    }
