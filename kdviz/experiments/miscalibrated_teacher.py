"""Experiment 10, a miscalibrated teacher: the student inherits whatever the teacher's
probabilities say. One teacher made over- and under-confident by scaling its logits, and teachers
miscalibrated by training (label smoothing, too many epochs); each distilled at a fixed T and at the
best T chosen on the validation split, and once more after temperature-scaling the teacher (T*
fitted on the validation split's teacher logits, Guo et al. 2017)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
import torch
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
    MULLER,
    ExperimentResult,
    error_bars,
    make_result,
    register_comparison,
    register_experiment,
    register_figure,
)
from kdviz.experiments.runner import Runner, Trained
from kdviz.experiments.settings import Settings, common_fields, distill_config, hard_config

GUO = "Guo, Pleiss, Sun & Weinberger 2017 (arXiv:1706.04599)"
FIXED, BEST, SCALED, HARD = "fixed T", "best T (val)", "teacher temperature-scaled", "hard labels"


@dataclass(frozen=True)
class MiscalibratedSettings(Settings):
    teacher_arch: str = "lenet"  # the teachers trained here
    teacher_epochs: int | None = None  # the plain teacher's epochs: tiny 2, full 30
    scales: tuple[float, ...] | None = None  # logit factors: < 1 under-, > 1 over-confident
    smoothing: float = 0.1  # label smoothing of the smoothed teacher (0 = no such teacher)
    overtrain_to: int | None = (
        None  # epochs of the teacher trained too long: tiny 4, full 150; 0 = none
    )
    student: str = "mlp-300-300"
    temperature: float = 4.0  # the fixed T (always in the grid)
    temperatures: tuple[float, ...] | None = None  # the grid the best T is chosen from, on val
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"teacher_epochs": 2, "scales": (0.25, 1.0, 4.0), "overtrain_to": 4,
                 "temperatures": (1.0, 4.0)},
        "full": {"teacher_epochs": 30, "scales": (0.25, 0.5, 1.0, 2.0, 4.0),
                 "overtrain_to": 150, "temperatures": (1.0, 2.0, 4.0, 8.0)},
    }  # fmt: skip


class Variant(NamedTuple):
    name: str  # "logits x 4", "label smoothing 0.1", ...
    group: str  # "logit scale" or "training"
    checkpoint: str
    scale: float  # the factor applied to its logits


# ---------------------------------------------------------------------------- the transforms


def scale_logits(factor: float) -> Callable[[Tensor, Tensor], Tensor]:
    """A teacher_transform: the teacher's logits times ``factor`` (N, K) -> (N, K). At T = 1 a
    factor above 1 sharpens every soft target (over-confident), below 1 flattens it."""

    def transform(logits: Tensor, _labels: Tensor) -> Tensor:
        return logits * float(factor)

    return transform


def confidence_gap(logits: Tensor, labels: Tensor) -> float:
    """Mean top-1 probability minus accuracy: > 0 over-confident, < 0 under-confident."""
    confidence = soft.soften(logits.double(), 1.0).max(dim=-1).values.mean().item()
    return confidence - soft.accuracy(logits, labels)


def ece_interval(
    logits: Tensor, labels: Tensor, n_boot: int = 1000, seed: int = 0, n_bins: int = 15
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of soft.ece (the images resampled with replacement).

    Per bin, n_b |acc_b - conf_b| = |sum over the bin of (correct - confidence)|, so one weighted
    bincount over (resample, bin) gives every resample's ECE at once. Bins as soft.ece:
    b = (b/B, (b+1)/B]. (N, K), (N,) -> (low, high)."""
    probs = torch.softmax(logits.detach().double(), dim=-1).cpu()
    conf_t, pred = probs.max(dim=-1)
    conf = conf_t.numpy()  # (N,)
    gap = (pred == labels.cpu()).double().numpy() - conf  # (N,) correct - confidence
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (N,)
    n = len(conf)
    if n == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (R, N)
    flat = (bins[idx] + n_bins * np.arange(n_boot)[:, None]).ravel()  # (R * N,)
    sums = np.bincount(flat, weights=gap[idx].ravel(), minlength=n_boot * n_bins)
    eces = np.abs(sums.reshape(n_boot, n_bins)).sum(axis=1) / n  # (R,)
    low, high = np.percentile(eces, [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------------------- the experiment


@register_experiment(
    "miscalibrated-teacher",
    title="A miscalibrated teacher",
    settings=MiscalibratedSettings,
    paper=f"{GUO}; {MULLER}; {CHO}",
    question="Does a student inherit its teacher's miscalibration, and does temperature scaling "
    "the teacher first recover it?",
)
def miscalibrated_teacher(s: MiscalibratedSettings, runner: Runner) -> ExperimentResult:
    _check(s)
    grid = tuple(sorted({float(t) for t in s.temperatures} | {float(s.temperature)}))
    extra = int(s.smoothing > 0) + int(s.overtrain_to > 0)
    n_variants = len(s.scales) + extra
    runner.plan(1 + extra + n_variants * (len(grid) + 1) + 1)
    variants = _teachers(s, runner)
    val, test = load_dataset(s.dataset, "val"), load_dataset(s.dataset, s.eval_split)
    hard = runner.train(hard_config(s, s.student, variants[0].checkpoint), f"{s.student} hard labels")  # fmt: skip
    rows, grid_rows = [], []
    calibrated: list[tuple[str, float, Trained]] = []  # (teacher, multiplier, student) trained
    for v in variants:
        z_val = runner.logits(v.checkpoint, s.dataset, "val") * v.scale  # (N_val, K)
        z_test = runner.logits(v.checkpoint, s.dataset, s.eval_split) * v.scale  # (N, K)
        t_star = soft.calibration_temperature(z_val, val.labels)
        teacher = {
            "variant": v.name, "group": v.group, "scale": v.scale,
            "teacher_accuracy": soft.accuracy(z_test, test.labels),
            "teacher_gap": confidence_gap(z_test, test.labels),
            "teacher_ece": soft.ece(z_test, test.labels), "t_star": t_star,
        }  # fmt: skip
        runs = {}
        for t in grid:
            run = _distill(s, runner, v, v.scale, t, f"{s.student} from {v.name} at T={t:g}")
            runs[t] = run
            val_acc = soft.accuracy(runner.logits(run.checkpoint, s.dataset, "val"), val.labels)
            grid_rows.append({"variant": v.name, "temperature": t, "val_accuracy": val_acc,
                              "accuracy": run.metrics["accuracy"], "run_id": run.run_id})  # fmt: skip
        scores = {r["temperature"]: r["val_accuracy"] for r in grid_rows if r["variant"] == v.name}
        best_t = max(grid, key=lambda t: (scores[t], -abs(math.log(t / s.temperature))))
        multiplier = v.scale / t_star  # the temperature-scaled teacher is z * scale / T*
        same = [r for c, m, r in calibrated if c == v.checkpoint and abs(m / multiplier - 1) < 1e-4]
        if same:  # logits x c, scaled by T*(c z) = c T*(z): the very same teacher, same student
            scaled_run = same[0]
        else:
            scaled_run = _distill(s, runner, v, multiplier, s.temperature, f"{s.student} from {v.name}, temperature-scaled")  # fmt: skip
            calibrated.append((v.checkpoint, multiplier, scaled_run))
        scaled_teacher = {**teacher, "teacher_gap": confidence_gap(z_test / t_star, test.labels),
                          "teacher_ece": soft.ece(z_test / t_star, test.labels)}  # fmt: skip
        for condition, t, run, info in (
            (FIXED, s.temperature, runs[s.temperature], teacher),
            (BEST, best_t, runs[best_t], teacher),
            (SCALED, s.temperature, scaled_run, scaled_teacher),
        ):
            rows.append({**info, "condition": condition, "temperature": t,
                         **_student(s, runner, run, hard, test.labels), "val_accuracy": scores.get(t) if run is not scaled_run else None})  # fmt: skip  # noqa: E501
    rows.append({"variant": "none", "group": "", "scale": None, "teacher_accuracy": None,
                 "teacher_gap": None, "teacher_ece": None, "t_star": None, "condition": HARD,
                 "temperature": None, **_student(s, runner, hard, hard, test.labels), "val_accuracy": None})  # fmt: skip  # noqa: E501
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if "run_id" not in c] + ["run_id", "hard_run_id"]]
    notice = (
        "Follow the fixed-T rows: multiplying the teacher's logits by c gives the soft targets of "
        "T / c, so an over-confident teacher hands the student sharp targets and an "
        "under-confident one nearly uniform ones, and the student's confidence follows the "
        "teacher's (compare teacher_gap with the student's ece). The best-T rows show how much of "
        "that a search over T on the validation split undoes. The temperature-scaled rows answer "
        "the question: T* fitted on the teacher's validation logits turns every logit-scaled "
        "copy into the same teacher (one student serves them all), which repairs what the scaling "
        "broke, while a teacher miscalibrated by label smoothing or overtraining is only "
        "rescaled: calibration comes back, whatever training changed in its structure does not."
    )
    return make_result(s, "miscalibrated-teacher", table, notice, extras={"grid": pd.DataFrame(grid_rows)})  # fmt: skip


def _check(s: MiscalibratedSettings) -> None:
    if not s.scales or min(s.scales) <= 0:
        raise KdvizError("scales must list at least one positive logit factor, e.g. 0.25,1,4.")
    if s.temperature <= 0 or not s.temperatures or min(s.temperatures) <= 0:
        raise KdvizError(
            "temperature and temperatures must be positive, e.g. temperatures=1,2,4,8."
        )
    if s.overtrain_to < 0:
        raise KdvizError("overtrain_to must be 0 (no overtrained teacher) or a number of epochs.")


def _teachers(s: MiscalibratedSettings, runner: Runner) -> list[Variant]:
    """The plain teacher at every logit scale, then the label-smoothed and the overtrained one."""
    base = TrainConfig(**common_fields(s), arch=s.teacher_arch)
    plain = runner.train(dataclasses.replace(base, epochs=s.teacher_epochs), f"teacher {s.teacher_arch}", role="teacher")  # fmt: skip
    out = [
        Variant(f"logits x {c:g}", "logit scale", plain.checkpoint, float(c))
        for c in sorted(s.scales)
    ]
    if s.smoothing > 0:
        cfg = dataclasses.replace(base, epochs=s.teacher_epochs, label_smoothing=float(s.smoothing))
        run = runner.train(cfg, f"teacher {s.teacher_arch} smoothing {s.smoothing:g}", role="teacher")  # fmt: skip
        out.append(Variant(f"label smoothing {s.smoothing:g}", "training", run.checkpoint, 1.0))
    if s.overtrain_to > 0:
        cfg = dataclasses.replace(base, epochs=s.overtrain_to)
        run = runner.train(cfg, f"teacher {s.teacher_arch} {s.overtrain_to} epochs", role="teacher")  # fmt: skip
        out.append(Variant(f"{s.overtrain_to} epochs", "training", run.checkpoint, 1.0))
    return out


def _distill(
    s: MiscalibratedSettings, runner: Runner, v: Variant, factor: float, t: float, label: str
) -> Trained:
    """The student distilled at T = t from the teacher's logits times ``factor``."""
    transform = None if factor == 1.0 else scale_logits(factor)
    cfg = distill_config(s, s.student, v.checkpoint, temperature=float(t))
    return runner.train(cfg, label, teacher_transform=transform)


def _student(
    s: MiscalibratedSettings, runner: Runner, run: Trained, hard: Trained, labels: Tensor
) -> dict[str, Any]:
    """A student's columns: accuracy, ECE with its bootstrap interval, agreement, run ids."""
    low, high = ece_interval(runner.logits(run.checkpoint, s.dataset, s.eval_split), labels, seed=s.seed)  # fmt: skip  # noqa: E501
    return {
        "accuracy": run.metrics["accuracy"],
        "ece": run.metrics["ece"],
        "ece_low": low,
        "ece_high": high,
        "agreement": run.metrics.get("agreement"),
        "run_id": run.run_id,
        "hard_run_id": hard.run_id,
    }


# ---------------------------------------------------------------------------- comparison


@register_comparison("miscalibrated-teacher")
def compare(s: MiscalibratedSettings, table: pd.DataFrame) -> pd.DataFrame:
    """The answer (does temperature-scaling the teacher first recover the worst student?), then
    the best T against logit scales, and the two training-made miscalibrations."""
    rows = []
    fixed = table[table["condition"] == FIXED].set_index("variant")
    best = table[table["condition"] == BEST].set_index("variant")
    scaled = table[table["condition"] == SCALED].set_index("variant")
    plain = f"logits x {1:g}"
    damaged = fixed.drop(index=[plain], errors="ignore")
    if len(damaged):
        worst = damaged["teacher_ece"].idxmax()  # the most miscalibrated teacher
        raw, fix = fixed.loc[worst], scaled.loc[worst]
        rows.append((
            f"answer, calibration: the most miscalibrated teacher ({worst}, ECE {raw['teacher_ece']:.3f}) temperature-scaled first (T* = {raw['t_star']:.3g}): its student's ECE",  # noqa: E501
            f"{_ece_text(raw)} -> {_ece_text(fix)} (teacher ECE -> {fix['teacher_ece']:.3f}); accuracy {iv.row_text(raw)} -> {iv.row_text(fix)}",  # noqa: E501
            "no published number; temperature scaling fixes a network's calibration without changing its predictions",  # noqa: E501
            iv.order_verdict(iv.interval(raw, "ece"), iv.interval(fix, "ece")),
            GUO,
        ))  # fmt: skip
        worst = damaged["accuracy"].idxmin()  # the teacher whose student is least accurate
        raw, fix = fixed.loc[worst], scaled.loc[worst]
        ref = f"; plain teacher's student {iv.row_text(fixed.loc[plain])}" if plain in fixed.index else ""  # fmt: skip
        rows.append((
            f"answer, accuracy: the least accurate student at T={s.temperature:g} ({worst}) when its teacher is temperature-scaled first",  # noqa: E501
            f"{iv.row_text(raw)} -> {iv.row_text(fix)}{ref}",
            "no published number (our question)",
            iv.order_verdict(iv.interval(fix), iv.interval(raw)),
            GUO,
        ))  # fmt: skip
    scale_best = best[best["group"] == "logit scale"]
    if len(scale_best) >= 2:
        rows.append((
            "best T per logit-scaled teacher" + (" (T: mean over seeds)" if s.seeds > 1 else "") + ": students within noise of each other?",  # noqa: E501
            ", ".join(f"{v}: T={r['temperature']:.3g}, {iv.row_text(r)}" for v, r in scale_best.iterrows()),  # noqa: E501
            "soft targets are softmax(z/T): logits x c at T equal logits at T/c (identity)",
            iv.equal_verdict([iv.interval(r) for _, r in scale_best.iterrows()]),
            HINTON,
        ))  # fmt: skip
    claims = (
        (f"label smoothing {s.smoothing:g}", "a label-smoothed teacher teaches worse (qualitative)", MULLER),  # noqa: E501
        (f"{s.overtrain_to} epochs", "a teacher trained to the end can teach worse than one stopped early (qualitative)", CHO),  # noqa: E501
    )  # fmt: skip
    for name, claim, source in claims:
        if name in best.index and plain in best.index:
            a, b = best.loc[plain], best.loc[name]
            rows.append((
                f"student at its best T: plain teacher vs {name}",
                f"{iv.row_text(a)} vs {iv.row_text(b)}; teacher ECE {a['teacher_ece']:.3f} vs {b['teacher_ece']:.3f}",  # noqa: E501
                claim,
                iv.order_verdict(iv.interval(a), iv.interval(b)),
                source,
            ))  # fmt: skip
    return iv.comparison_rows(rows)


def _ece_text(row: pd.Series) -> str:
    """'0.434 (0.41–0.46)': a student's ECE with its bootstrap interval."""
    low, high = iv.interval(row, "ece")
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{row['ece']:.3f}"
    return f"{row['ece']:.3f} ({low:.3f}–{high:.3f})"


# ---------------------------------------------------------------------------- chart


@register_figure("miscalibrated-teacher")
def _figure(fig, t: pd.DataFrame) -> None:
    """x: the ECE of the teacher the student learnt from; y: the student's error and its ECE,
    each with its interval, per condition (fixed T, best T, temperature-scaled teacher)."""
    for i, condition in enumerate((FIXED, BEST, SCALED)):
        part = t[t["condition"] == condition].sort_values("teacher_ece")
        if part.empty:
            continue
        color = COLORS[i % len(COLORS)]
        fig.add_scatter(
            x=part["teacher_ece"], y=1 - part["accuracy"], mode="markers+lines",
            name=f"student error, {condition}", text=part["variant"], error_y=_error_bars(part),
            marker={"color": color, "size": 9}, line={"color": color, "width": 1},
        )  # fmt: skip
        fig.add_scatter(
            x=part["teacher_ece"], y=part["ece"], mode="markers+lines", text=part["variant"],
            name=f"student ECE, {condition}", marker={"color": color, "symbol": "x", "size": 9},
            error_y=error_bars(part, "ece"),
            line={"color": color, "width": 1, "dash": "dot"},
        )  # fmt: skip
    hard = t[t["condition"] == HARD]["accuracy"]
    if len(hard):
        fig.add_hline(y=1 - float(hard.iloc[0]), line_dash="dash", annotation_text="student error, hard labels")  # fmt: skip
    fig.update_xaxes(title="teacher ECE (15 bins; the teacher the student learnt from)", type="log")
    fig.update_layout(yaxis_title="student error and ECE")


def _error_bars(part: pd.DataFrame) -> dict[str, Any] | None:
    """error_y for the error rate 1 - accuracy: the accuracy interval turned over."""
    if "accuracy_low" not in part:
        return None
    up = (part["accuracy"] - part["accuracy_low"]).fillna(0.0).clip(lower=0.0)
    down = (part["accuracy_high"] - part["accuracy"]).fillna(0.0).clip(lower=0.0)
    return {"type": "data", "symmetric": False, "array": up.tolist(), "arrayminus": down.tolist()}
