"""Experiment 7, which part of the soft targets carries the knowledge (Furlanello et al. 2018; Yuan
et al. 2020): top-k, DKPP, CWTM and a virtual teacher against full soft targets."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from kdviz import stats
from kdviz.data import load_dataset
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    FURLANELLO,
    HINTON,
    YUAN,
    ExperimentResult,
    make_result,
    register_comparison,
    register_experiment,
)
from kdviz.experiments.runner import Runner
from kdviz.experiments.settings import (
    TeacherSettings,
    distill_config,
    hard_config,
)
from kdviz.experiments.transforms import (
    shuffle_non_target,
    teacher_max_weights,
    top_k_logits,
    virtual_teacher_logits,
)


@dataclass(frozen=True)
class PartsSettings(TeacherSettings):
    student: str = "mlp-300-300"
    top_k: int = 3  # classes kept by the top-k teacher
    virtual_target: float = 0.9  # the virtual teacher's probability of the true class (Yuan: a)


@register_experiment(
    "soft-target-parts",
    title="Which part of the soft targets carries the knowledge",
    settings=PartsSettings,
    paper=f"{FURLANELLO}; {YUAN}",
    question="Is it the similarity structure, the confidence, or just the smoothing that teaches?",
)
def soft_target_parts(s: PartsSettings, runner: Runner) -> ExperimentResult:
    teacher = runner.teacher(s)
    k_classes = load_dataset(s.dataset, "train").num_classes
    gen_seed = s.seed + 11

    def dkpp(logits: Tensor, labels: Tensor) -> Tensor:
        return shuffle_non_target(logits, labels, torch.Generator().manual_seed(gen_seed))

    def virtual(logits: Tensor, labels: Tensor) -> Tensor:
        return virtual_teacher_logits(labels, logits.shape[-1], s.virtual_target, s.temperature)

    variants = [
        ("hard labels", "cross-entropy on the labels only", hard_config(s, s.student, teacher), {}),
        ("full soft targets", "standard KD", distill_config(s, s.student, teacher), {}),
        (f"top-{s.top_k} soft targets", f"only the teacher's {s.top_k} largest probabilities, renormalised", distill_config(s, s.student, teacher), {"teacher_transform": lambda z, _y: top_k_logits(z, s.top_k)}),
        ("DKPP", "non-target probabilities shuffled; the target probability kept", distill_config(s, s.student, teacher), {"teacher_transform": dkpp}),
        ("CWTM", "hard labels weighted by the teacher's max probability", hard_config(s, s.student, teacher), {"sample_weight": lambda z, _y: teacher_max_weights(z)}),
        ("virtual teacher", f"uniform non-targets, {s.virtual_target:g} on the target", distill_config(s, s.student, teacher), {"teacher_transform": virtual}),
    ]  # fmt: skip
    runner.plan(len(variants))
    rows = []
    for label, what, cfg, hooks in variants:
        run = runner.train(cfg, f"{s.student} {label}", **hooks)
        rows.append(
            {
                "variant": label,
                "what the student matches": what,
                "accuracy": run.metrics["accuracy"],
                "agreement": run.metrics.get("agreement"),
                "nll": run.metrics["nll"],
                "ece": run.metrics["ece"],
                "run_id": run.run_id,
            }
        )
    table = pd.DataFrame(rows)
    table["hard_run_id"] = table["run_id"].iloc[0]  # every variant against hard labels
    notice = (
        "Each variant keeps one ingredient of the soft targets: DKPP keeps how much probability "
        "is dark but scrambles which classes get it, CWTM keeps only the teacher's confidence, and "
        "the virtual teacher keeps only the smoothing. The gap between full soft targets and the "
        f"best of these is the part of the gain that needs the teacher to know which of the "
        f"{k_classes} classes look alike."
    )
    return make_result(s, "soft-target-parts", table, notice)


@register_comparison("soft-target-parts")
def compare(s: PartsSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Each variant's paired gain over hard labels against "it improved on the baseline"; the
    virtual teacher's interval against full KD's for Yuan et al.'s "comparable"."""
    row = {r["variant"]: r for _, r in table.iterrows()}

    def vs(label: str) -> str:
        return f"{iv.row_text(row[label])}; {iv.gain_text(row[label])}"

    def beats(label: str) -> str:
        return stats.verdict(iv.interval(row[label], "gain"), iv.BEATS)

    comparable = iv.equal_verdict([iv.interval(row["virtual teacher"]), iv.interval(row["full soft targets"])])  # fmt: skip
    return iv.comparison_rows(
        [
            ("full soft targets vs hard labels", vs("full soft targets"), "KD beats the hard-label baseline", beats("full soft targets"), HINTON),
            ("DKPP (structure destroyed)", vs("DKPP"), "still improved on the baseline (CIFAR-100)", beats("DKPP"), FURLANELLO),
            ("CWTM (confidence only)", vs("CWTM"), "still improved on the baseline (CIFAR-100)", beats("CWTM"), FURLANELLO),
            ("virtual teacher (no teacher at all)", vs("virtual teacher"), "comparable to KD from a strong teacher (up to +0.65% ImageNet)", comparable, YUAN),
            (f"top-{s.top_k} soft targets", vs(f"top-{s.top_k} soft targets"), "-", "-", ""),
        ]
    )  # fmt: skip
