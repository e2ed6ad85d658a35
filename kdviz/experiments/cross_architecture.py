"""Experiment 9, cross-architecture transfer: teachers of different families (the shipped CNN
ensemble, an MLP, a ResNet, optionally an imported model) distilled into students of both families
with the same parameter budget. Per pair: the gain over the student's hard-label baseline, and how
much of the teacher's class-similarity structure the student reproduces."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from torch import Tensor

from kdviz import soft
from kdviz.data import load_dataset
from kdviz.engine import TrainConfig
from kdviz.errors import KdvizError
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    CHO,
    COLORS,
    HINTON,
    ExperimentResult,
    error_bars,
    make_result,
    register_comparison,
    register_experiment,
    register_figure,
)
from kdviz.experiments.runner import Runner, shipped_teacher
from kdviz.experiments.settings import Settings, common_fields, distill_config, hard_config
from kdviz.models import load_card

MIRZADEH = "Mirzadeh et al. 2020, Improved Knowledge Distillation via Teacher Assistant (arXiv:1902.03393)"  # fmt: skip
HARD = "none (hard labels)"  # the teacher column of the hard-label baselines


@dataclass(frozen=True)
class CrossArchSettings(Settings):
    teacher: str = ""  # the CNN teacher: "" = the shipped DATASET-teacher (mnist5k: 3 CNNs)
    mlp_teacher: str = "mlp-1200-1200"  # trained here as Hinton's: dropout 0.5, input 0.2, jitter
    mlp_teacher_epochs: int | None = None  # tiny 2, full 60 (dropout and jitter learn slowly)
    mlp_teacher_augment: str = "jitter"  # Hinton's 2-pixel shifts; "none" for 8 x 8 digits
    resnet_teacher: str = "resnet8"  # trained here; resnet20 costs ~58 s an epoch on one CPU thread
    teacher_epochs: int | None = None  # the ResNet teacher's epochs: tiny 2, full 30
    extra_teacher: str = ""  # optional: an imported checkpoint (kdviz import: torchvision, ONNX)
    students: tuple[str, ...] = ("mlp-70-70", "lenet")  # an MLP and a CNN of ~61k parameters each
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"mlp_teacher_epochs": 2, "teacher_epochs": 2},
        "full": {"mlp_teacher_epochs": 60, "teacher_epochs": 30},
    }


class Teacher(NamedTuple):
    label: str  # "CNN: mnist5k-teacher"
    ref: str  # checkpoint ref
    family: str  # "MLP", "CNN" or "imported"
    arch: str
    run_id: str  # "" when not trained here


# ---------------------------------------------------------------------------- the measures


def arch_family(arch: str) -> str:
    """'MLP' for mlp-*, 'imported' for torchvision:/timm: models, else 'CNN' (lenet, cnn-wide,
    resnetD: every convolutional architecture kdviz builds)."""
    if arch.startswith("mlp"):
        return "MLP"
    if arch.startswith(("torchvision:", "timm:")):
        return "imported"
    return "CNN"


def card_family(ref: str) -> tuple[str, str]:
    """(family, architecture text) of a checkpoint: an ensemble has its members' family."""
    card = load_card(ref)
    if card.kind == "onnx":
        return "imported", f"ONNX ({card.arch})" if card.arch else "ONNX"
    if card.kind == "logits":
        raise KdvizError(
            f"{ref!r} is a logits table, which has no architecture and no logits on other "
            "images; give extra_teacher a model checkpoint."
        )
    if card.kind == "ensemble":
        members = [card_family(m) for m in card.members]
        families = {f for f, _ in members}
        archs = sorted({a for _, a in members})
        family = families.pop() if len(families) == 1 else "mixed"
        return family, f"ensemble of {len(members)} x {'/'.join(archs)}"
    return arch_family(card.arch), card.arch


def similarity_at(logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """The mean soft target per true class at T (soft.class_similarity). (N, K) -> (K, K)."""
    k = logits.shape[-1]
    return soft.class_similarity(soft.soften(logits.double(), temperature), labels, k)


def structure_correlation(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Pearson correlation of the off-diagonal entries of two K x K mean-soft-target matrices:
    1 = the student ranks and spaces the teacher's 'looks like' pairs exactly as it does.
    The diagonal (the target's own probability) is left out: it is accuracy, not structure.
    NaN entries (classes without images) and constant inputs give NaN."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"need two K x K matrices of one shape (got {x.shape} and {y.shape})")
    keep = ~np.eye(x.shape[0], dtype=bool) & np.isfinite(x) & np.isfinite(y)
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else math.nan


# ---------------------------------------------------------------------------- the experiment


@register_experiment(
    "cross-architecture",
    title="Cross-architecture transfer",
    settings=CrossArchSettings,
    paper=f"{CHO}; {MIRZADEH}",
    question="Does dark knowledge cross architecture families, or is its structure lost?",
)
def cross_architecture(s: CrossArchSettings, runner: Runner) -> ExperimentResult:
    if not s.students:
        raise KdvizError("students must name at least one architecture, e.g. mlp-70-70,lenet.")
    test = load_dataset(s.dataset, s.eval_split)
    cnn = s.teacher or shipped_teacher(s.dataset) or ""
    extra = [s.extra_teacher] if s.extra_teacher else []
    trained = 2 + (not cnn)  # the MLP, the ResNet, and a LeNet when there is no CNN teacher
    runner.plan(trained + (3 + len(extra) + 1) * len(s.students))
    teachers = _teachers(s, runner, cnn, extra)
    rows, matrices = [], {}
    for t in teachers:
        logits = runner.logits(t.ref, s.dataset, s.eval_split)
        matrices[t.label] = similarity_at(logits, test.labels, s.temperature)
        rows.append(
            {
                "model": "teacher", "teacher": t.label, "teacher_family": t.family,
                "teacher_arch": t.arch, "teacher_accuracy": soft.accuracy(logits, test.labels),
                "student": "", "student_family": "",
                "accuracy": soft.accuracy(logits, test.labels),
                "ece": soft.ece(logits, test.labels), "agreement": None,
                "structure": None, "structure_hard": None,
                "run_id": t.run_id, "hard_run_id": "",
            }
        )  # fmt: skip
    teacher_acc = {r["teacher"]: r["accuracy"] for r in rows}
    for arch in s.students:
        hard = runner.train(hard_config(s, arch, teachers[0].ref), f"{arch} hard labels")
        hard_matrix = similarity_at(
            runner.logits(hard.checkpoint, s.dataset, s.eval_split), test.labels, s.temperature
        )
        for t in teachers:
            run = runner.train(distill_config(s, arch, t.ref), f"{arch} from {t.label}")
            student = runner.logits(run.checkpoint, s.dataset, s.eval_split)
            rows.append(
                {
                    "model": "student", "teacher": t.label, "teacher_family": t.family,
                    "teacher_arch": t.arch, "teacher_accuracy": teacher_acc[t.label],
                    "student": arch, "student_family": arch_family(arch),
                    "accuracy": run.metrics["accuracy"], "ece": run.metrics["ece"],
                    "agreement": run.metrics.get("agreement"),
                    "structure": structure_correlation(matrices[t.label], similarity_at(student, test.labels, s.temperature)),  # noqa: E501
                    "structure_hard": structure_correlation(matrices[t.label], hard_matrix),
                    "run_id": run.run_id, "hard_run_id": hard.run_id,
                }
            )  # fmt: skip
        rows.append(
            {
                "model": "student, hard labels", "teacher": HARD, "teacher_family": "",
                "teacher_arch": "", "teacher_accuracy": None,
                "student": arch, "student_family": arch_family(arch),
                "accuracy": hard.metrics["accuracy"], "ece": hard.metrics["ece"],
                "agreement": hard.metrics.get("agreement"),
                "structure": None, "structure_hard": None,
                "run_id": hard.run_id, "hard_run_id": hard.run_id,
            }
        )  # fmt: skip
    notice = (
        "Read each student's bars across the teachers: the gain column says how much each "
        "teacher adds over the same student trained on hard labels, and the structure column "
        "(Pearson r of the off-diagonal mean soft targets at the distillation T) how faithfully "
        "the student copies that teacher's 'a 4 looks a bit like a 9' pattern; structure_hard is "
        "the same measure for the untaught student, the floor any architecture reaches by itself. "
        "A teacher of the student's own family is not guaranteed to teach best: Cho & Hariharan "
        "found that the most accurate teacher often is not the best one, and Mirzadeh et al. that "
        "a large teacher-student gap lowers what distillation gives."
    )
    extras = {"teacher_similarity": _similarity_frame(matrices, test.class_names)}
    return make_result(s, "cross-architecture", pd.DataFrame(rows), notice, extras=extras)


def _teachers(s: CrossArchSettings, runner: Runner, cnn: str, extra: list[str]) -> list[Teacher]:
    """The CNN (given, shipped, or lenet trained here), the MLP and the ResNet trained here, and
    the optional imported teacher."""
    out = []
    if cnn:
        family, arch = card_family(cnn)
        out.append(Teacher(f"{family}: {load_card(cnn).name}", cnn, family, arch, ""))
    else:  # no shipped teacher for this dataset: a LeNet stands in for the CNN ensemble
        cfg = dataclasses.replace(TrainConfig(**common_fields(s), arch="lenet"), epochs=s.teacher_epochs)  # fmt: skip
        run = runner.train(cfg, "teacher lenet", role="teacher")
        out.append(Teacher("CNN: lenet", run.checkpoint, "CNN", "lenet", run.run_id))
    mlp = TrainConfig(
        **common_fields(s),
        arch=s.mlp_teacher,
        dropout=0.5,
        input_dropout=0.2,
        augment=s.mlp_teacher_augment,
    )
    run = runner.train(dataclasses.replace(mlp, epochs=s.mlp_teacher_epochs), f"teacher {s.mlp_teacher}", role="teacher")  # fmt: skip
    out.append(Teacher(f"MLP: {s.mlp_teacher}", run.checkpoint, "MLP", s.mlp_teacher, run.run_id))
    res = dataclasses.replace(TrainConfig(**common_fields(s), arch=s.resnet_teacher), epochs=s.teacher_epochs)  # fmt: skip
    run = runner.train(res, f"teacher {s.resnet_teacher}", role="teacher")
    out.append(Teacher(f"CNN: {s.resnet_teacher}", run.checkpoint, "CNN", s.resnet_teacher, run.run_id))  # fmt: skip
    for ref in extra:
        family, arch = card_family(ref)
        out.append(Teacher(f"{family}: {load_card(ref).name}", ref, family, arch, ""))
    return out


def _similarity_frame(matrices: dict[str, Tensor], class_names: tuple[str, ...]) -> pd.DataFrame:
    """Long form of each teacher's mean-soft-target matrix: teacher, true_class, class, probability."""
    names = list(class_names)
    parts = []
    for label, matrix in matrices.items():
        frame = pd.DataFrame(matrix.float().numpy(), index=names, columns=names)
        long = frame.stack().rename("probability").reset_index()
        long.columns = ["true_class", "class", "probability"]
        long.insert(0, "teacher", label)
        parts.append(long)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------- comparison


@register_comparison("cross-architecture")
def compare(s: CrossArchSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Per student: a same-family against a cross-family teacher (gain intervals), and whether
    the most accurate teacher taught it best; over all pairs: does distillation beat hard labels."""
    pairs = table[table["model"] == "student"]
    teacher_iv = {r["teacher"]: iv.interval(r) for _, r in table[table["model"] == "teacher"].iterrows()}  # fmt: skip  # noqa: E501
    rows = []
    for arch, part in pairs.groupby("student", sort=False):
        same = part[part["teacher_family"] == part["student_family"]]
        cross = part[part["teacher_family"] != part["student_family"]]
        if len(same) and len(cross):
            a, b = same.loc[same["gain"].idxmax()], cross.loc[cross["gain"].idxmax()]
            verdict = iv.order_verdict(iv.interval(a, "gain"), iv.interval(b, "gain"))
            apart = iv.order_verdict(teacher_iv[a["teacher"]], teacher_iv[b["teacher"]]) != "inconclusive"  # fmt: skip  # noqa: E501
            note = "; the two teachers' accuracies differ beyond noise, so family and accuracy are confounded" if apart else ""  # fmt: skip  # noqa: E501
            rows.append((
                f"{arch}: best same-family vs best cross-family teacher (gain over hard labels)",
                f"{a['teacher']}: {iv.gain_text(a)}; {b['teacher']}: {iv.gain_text(b)}; structure r {_r(a)} vs {_r(b)}{note}",  # noqa: E501
                "student performance degrades when the gap between student and teacher is large (qualitative; shown for size gaps, here the gap is one of family)",
                "inconclusive" if apart else verdict,
                MIRZADEH,
            ))  # fmt: skip
        top = part.loc[part["teacher_accuracy"].idxmax()]
        others = part.drop(index=top.name)
        if len(others):
            best = others.loc[others["accuracy"].idxmax()]
            rows.append((
                f"{arch}: student of the most accurate teacher ({top['teacher']}) vs the best other",
                f"{iv.row_text(top)} vs {best['teacher']}: {iv.row_text(best)}",
                "more accurate teachers often don't make good teachers (qualitative)",
                iv.order_verdict(iv.interval(best), iv.interval(top)),
                CHO,
            ))  # fmt: skip
    above = int((pairs["gain_low"] > 0).sum())
    below = int((pairs["gain_high"] < 0).sum())
    verdict = "disagrees" if below else "agrees" if above == len(pairs) else "inconclusive"
    rows.append((
        "pairs where distillation beats hard labels beyond noise",
        f"{above} of {len(pairs)} ({below} worse beyond noise)",
        "a distilled student beats the same student trained on hard labels",
        verdict if len(pairs) else "inconclusive",
        HINTON,
    ))  # fmt: skip
    same_r = pairs[pairs["teacher_family"] == pairs["student_family"]]["structure"]
    cross_r = pairs[pairs["teacher_family"] != pairs["student_family"]]["structure"]
    rows.append((
        f"structure reproduced at T={s.temperature:g}: mean r, same-family vs cross-family pairs",
        f"{_mean(same_r)} vs {_mean(cross_r)} (hard-label students: {_mean(pairs['structure_hard'])})",
        "no published number: our measure of what crosses families",
        "-",
        "",
    ))  # fmt: skip
    return iv.comparison_rows(rows)


def _r(row: pd.Series) -> str:
    value = float(row.get("structure", np.nan))
    return f"{value:.2f}" if math.isfinite(value) else "-"


def _mean(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return f"{values.mean():.2f}" if len(values) else "-"


# ---------------------------------------------------------------------------- chart


@register_figure("cross-architecture")
def _figure(fig, t: pd.DataFrame) -> None:
    """Each student's accuracy per teacher (bars labelled with the structure r), hard labels as
    its own group, the teachers' own accuracy as diamonds."""
    students = t[t["model"] != "teacher"]
    for i, (arch, part) in enumerate(students.groupby("student", sort=False)):
        text = [f"r {v:.2f}" if pd.notna(v) else "" for v in part["structure"]]
        fig.add_bar(
            x=part["teacher"], y=part["accuracy"], name=f"student {arch} ({part['student_family'].iloc[0]})",  # noqa: E501
            marker_color=COLORS[i % len(COLORS)], error_y=error_bars(part), text=text,
        )  # fmt: skip
    teachers = t[t["model"] == "teacher"]
    fig.add_scatter(
        x=teachers["teacher"], y=teachers["accuracy"], mode="markers", name="the teacher itself",
        marker={"symbol": "diamond", "size": 10, "color": "#333333"}, error_y=error_bars(teachers),
    )  # fmt: skip
    fig.update_xaxes(title="teacher (family: architecture)")
