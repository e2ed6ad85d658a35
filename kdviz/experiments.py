"""Experiments lab: one-click reproductions of what dark knowledge is and when it helps.

Each classic experiment is a registered function ``(settings, runner) -> ExperimentResult``. The
settings are a frozen dataclass with a ``size`` ("tiny": seconds, for tests; "full": the README
numbers); the runner trains every model the experiment needs as a recorded run of the run store
(kdviz.runs), so each result keeps the ids of its runs. The result is a tidy DataFrame, our
numbers beside the published ones, and two sentences on what to notice; it is stored as CSV + JSON
in the experiment's own run folder.

    kdviz experiment omitted-class --dataset mnist5k        # foreground, with progress
    start_experiment("omitted-class")                       # background process (the web page)

Some experiments need a teacher the engine cannot express as a checkpoint: soft targets with a
transform applied (top-k, shuffled non-targets, a uniform "virtual teacher") or a per-example
weight (CWTM). ``fit_transformed`` is the engine's distillation loop for a fixed transfer set
with those two hooks; it is meant to become two optional arguments of ``kdviz.engine.fit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from kdviz import analysis, engine, jobs, soft
from kdviz.data import load_dataset
from kdviz.engine import DistillConfig, RunResult, TrainConfig
from kdviz.errors import KdvizError
from kdviz.models import (
    ModelCard,
    load_card,
    load_checkpoint,
    resolve_checkpoint,
    save_ensemble_card,
)
from kdviz.paths import REPO_ROOT, kdviz_home
from kdviz.runs import Run, RunStore, new_run_id, run_folder

__all__ = [
    "SIZES",
    "Cancelled",
    "Experiment",
    "ExperimentResult",
    "Runner",
    "Settings",
    "add_experiment_parser",
    "bias_for_share",
    "cancel_experiment",
    "dark_structure",
    "find_results",
    "fit_transformed",
    "format_result",
    "get_experiment",
    "list_experiments",
    "load_result",
    "make_settings",
    "markdown_table",
    "reap",
    "register_experiment",
    "result_figure",
    "run_experiment",
    "run_experiment_cli",
    "shift_class",
    "shuffle_non_target",
    "start_experiment",
    "teacher_max_weights",
    "top_k_logits",
    "virtual_teacher_logits",
]

SIZES = ("tiny", "full")
RESULT_JSON = "result.json"  # the whole result, in the experiment's run folder
TABLE_CSV = "table.csv"  # its tidy table
COMPARISON_CSV = "comparison.csv"  # our numbers beside the published ones
WORKER_LOG = "worker.log"
QUEUE_POLL_S = 0.25  # a queued experiment asks for a slot this often
STOP_POLL_S = 0.2  # the cancel flags are read at most this often

# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What every experiment shares. A field left at None takes the value of the ``size`` preset."""

    dataset: str = "mnist5k"  # dataset spec (kdviz list datasets)
    size: str = "full"  # "tiny" (a few seconds, for tests) or "full" (the README numbers)
    epochs: int | None = None  # epochs of every student run (tiny 2, full 60)
    batch_size: int | None = None  # examples per optimiser step (tiny 256, full 128)
    lr: float = 1e-3  # peak learning rate (AdamW, cosine schedule)
    seed: int = 0  # seeds weights, batch order and every shuffle
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    eval_split: str = "test"  # where results are reported; choices (a bias, a T) use "val" only

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"epochs": 2, "batch_size": 256},
        "full": {"epochs": 60, "batch_size": 128},  # the shipped MLP students' recipe
    }

    def resolved(self) -> Settings:
        """A copy with every None field filled from the size preset (idempotent); validated."""
        if self.size not in SIZES:
            raise KdvizError(f"Unknown size {self.size!r}; choose one of {', '.join(SIZES)}.")
        preset: dict[str, Any] = {}
        for cls in reversed(type(self).__mro__):
            preset.update(cls.__dict__.get("_PRESETS", {}).get(self.size, {}))
        changes = {k: v for k, v in preset.items() if getattr(self, k, 0) is None}
        out = dataclasses.replace(self, **changes)
        for f in dataclasses.fields(out):
            value = getattr(out, f.name)
            if f.name.endswith("epochs") and isinstance(value, int) and value < 1:
                raise KdvizError(f"{f.name} must be at least 1 (got {value}).")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists, so a stored result's settings compare equal)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class TeacherSettings(Settings):
    """Experiments that distil the dataset's teacher (shipped, or trained here when there is none)."""

    teacher: str = ""  # checkpoint ref; "" = the shipped DATASET-teacher, else one is trained
    teacher_arch: str = "lenet"  # architecture of a teacher trained here
    teacher_epochs: int | None = None  # its epochs (tiny 2, full 30: trained to convergence)
    temperature: float = 4.0  # softmax temperature of the soft targets
    alpha: float = 0.9  # weight of the soft term

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"teacher_epochs": 2},
        "full": {"teacher_epochs": 30},
    }


@dataclass(frozen=True)
class SweepSettings(TeacherSettings):
    students: tuple[str, ...] = ("mlp-300-300", "mlp-30-30")  # a large and a small student
    temperatures: tuple[float, ...] | None = None  # tiny (1, 4); full (1, 2, 2.5, 4, 8, 20)

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"temperatures": (1.0, 4.0)},
        "full": {"temperatures": (1.0, 2.0, 2.5, 4.0, 8.0, 20.0)},
    }


@dataclass(frozen=True)
class OmittedClassSettings(TeacherSettings):
    student: str = "mlp-300-300"  # the distilled student
    omit_class: int = 3  # class index removed from the transfer set (Hinton removed the 3s)
    temperature: float = 20.0  # Hinton's MNIST students were distilled at T = 20


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


@dataclass(frozen=True)
class BornAgainSettings(Settings):
    arch: str = "mlp-300-300"  # every generation has this architecture
    generations: int | None = None  # students after generation 0: tiny 1, full 3
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"generations": 1},
        "full": {"generations": 3},
    }


@dataclass(frozen=True)
class PartsSettings(TeacherSettings):
    student: str = "mlp-300-300"
    top_k: int = 3  # classes kept by the top-k teacher
    virtual_target: float = 0.9  # the virtual teacher's probability of the true class (Yuan: a)


@dataclass(frozen=True)
class EnsembleSettings(Settings):
    arch: str = "mlp-300-300"  # every member and the student
    members: int | None = None  # ensemble size: tiny 2, full 3
    dropout: float = 0.0  # members' hidden dropout
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"members": 2}, "full": {"members": 3}}


# ---------------------------------------------------------------------------- results


@dataclass
class ExperimentResult:
    """What an experiment returns: its tidy table, our numbers beside the published ones, two
    sentences on what to notice, and the ids of the runs it trained."""

    name: str  # registry name, e.g. "omitted-class"
    title: str
    settings: dict[str, Any]  # the resolved settings (dataclasses.asdict)
    table: pd.DataFrame  # tidy: one row per model / condition
    comparison: pd.DataFrame  # columns: measure, ours, published, source
    notice: str  # two sentences: what to notice
    run_ids: list[str] = field(default_factory=list)  # every training run it used
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)  # e.g. similarity matrices
    experiment_run: str = ""  # the experiment's own run id (its folder holds the files)
    seconds: float = 0.0
    teacher: str = ""  # the teacher checkpoint distilled, for experiments given one

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> null); what ``--json`` prints and result.json holds."""
        return {
            "name": self.name,
            "title": self.title,
            "settings": self.settings,
            "table": _frame_to_json(self.table),
            "comparison": _frame_to_json(self.comparison),
            "notice": self.notice,
            "run_ids": list(self.run_ids),
            "extras": {k: _frame_to_json(v) for k, v in self.extras.items()},
            "experiment_run": self.experiment_run,
            "seconds": self.seconds,
            "teacher": self.teacher,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            settings=data.get("settings", {}),
            table=_frame_from_json(data["table"]),
            comparison=_frame_from_json(data["comparison"]),
            notice=data.get("notice", ""),
            run_ids=list(data.get("run_ids", [])),
            extras={k: _frame_from_json(v) for k, v in data.get("extras", {}).items()},
            experiment_run=data.get("experiment_run", ""),
            seconds=float(data.get("seconds", 0.0)),
            teacher=data.get("teacher", ""),
        )

    def table_csv(self) -> str:
        return self.table.to_csv(index=False)

    def save(self, folder: str | Path) -> Path:
        """Write result.json, table.csv, comparison.csv and one CSV per extra into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_text(folder / TABLE_CSV, self.table_csv())
        _write_text(folder / COMPARISON_CSV, self.comparison.to_csv(index=False))
        for key, frame in self.extras.items():
            _write_text(folder / f"{key}.csv", frame.to_csv(index=False))
        _write_text(folder / RESULT_JSON, json.dumps(self.to_dict(), indent=1, default=str))
        return folder / RESULT_JSON


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    return json.loads(frame.to_json(orient="split", index=False, double_precision=10))


def _frame_from_json(data: dict[str, Any]) -> pd.DataFrame:
    return _numeric(pd.DataFrame(data.get("data", []), columns=data.get("columns", [])))


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of numbers with gaps (None) become float columns with NaN, not objects."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and len(values):
            present = [v for v in values if v is not None and v == v]
            if present and all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in present
            ):
                frame[column] = pd.to_numeric(values.astype(object).where(values.notna(), np.nan))
    return frame


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_result(run_id_or_folder: str | Path) -> ExperimentResult:
    """The stored result of an experiment run (its id, or its folder)."""
    ref = str(run_id_or_folder)
    folder = Path(ref) if os.sep in ref or Path(ref).is_dir() else run_folder(ref)
    path = folder / RESULT_JSON
    if not path.is_file():
        raise KdvizError(
            f"The experiment run {ref!r} has no stored result ({path}); it may not have finished."
        )
    return ExperimentResult.from_dict(json.loads(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------- registry

ExperimentFn = Callable[[Any, "Runner"], ExperimentResult]


@dataclass(frozen=True)
class Experiment:
    """One registry entry."""

    name: str  # lowercase, kebab-case: the CLI's NAME
    title: str
    fn: ExperimentFn
    settings: type[Settings]
    paper: str  # where the published numbers come from
    question: str  # one line: what the experiment asks

    def make_settings(self, **overrides: Any) -> Settings:
        """Settings with ``overrides`` (strings are parsed, as ``--set key=value`` gives them)."""
        fields = {f.name: f for f in dataclasses.fields(self.settings)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise KdvizError(
                f"Experiment {self.name!r} has no setting {', '.join(unknown)}; "
                f"it takes: {', '.join(fields)}."
            )
        values = {k: _coerce(fields[k], v) for k, v in overrides.items()}
        return self.settings(**values).resolved()


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(
    name: str, *, title: str, settings: type[Settings], paper: str, question: str
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``fn(settings, runner) -> ExperimentResult`` under ``name``."""

    def decorator(fn: ExperimentFn) -> ExperimentFn:
        if name in _EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is already registered")
        _EXPERIMENTS[name] = Experiment(name, title, fn, settings, paper, question)
        return fn

    return decorator


def list_experiments() -> list[str]:
    """Registered experiment names, in the order of the issue (and of the README table)."""
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The registry entry; an unknown name raises KdvizError listing the valid ones."""
    key = str(name).strip().lower()
    if key not in _EXPERIMENTS:
        raise KdvizError(
            f"Unknown experiment {name!r}; choose one of {', '.join(list_experiments())}."
        )
    return _EXPERIMENTS[key]


def make_settings(name: str, **overrides: Any) -> Settings:
    """The resolved settings of experiment ``name`` with ``overrides``."""
    return get_experiment(name).make_settings(**overrides)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Parse a string setting by the field's annotation; other values pass unchanged."""
    ann = str(f.type)
    if not isinstance(value, str):
        return tuple(value) if "tuple" in ann and isinstance(value, list) else value
    text = value.strip()
    if "None" in ann and text.lower() in ("", "none", "default"):
        return None
    try:
        if "tuple" in ann:
            parts = [p for p in re.split(r"[,\s]+", text) if p]
            kind = float if "float" in ann else int if "int" in ann else str
            return tuple(kind(p) for p in parts)
        if ann.startswith("bool"):
            return text.lower() in ("1", "true", "yes", "on")
        if ann.startswith("int"):
            return int(text)
        if ann.startswith("float"):
            return float(text)
    except ValueError as err:
        raise KdvizError(
            f"Setting {f.name}={value!r} is not a valid {ann}; fix the value."
        ) from err
    return text


# ---------------------------------------------------------------------------- soft-target transforms
# Each maps the teacher's logits (N, K) on the transfer set to the logits the student matches at
# temperature T: softmax(out / T) is the transformed soft target. -inf marks a class with p = 0.


def top_k_logits(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row, -inf elsewhere: softmax(out / T) is the teacher's soft
    target at T restricted to its top k classes and renormalised. (N, K) -> (N, K)."""
    k = max(1, min(int(k), logits.shape[-1]))
    top = logits.topk(k, dim=-1).indices  # (N, k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
    return logits.masked_fill(~keep, float("-inf"))


def shuffle_non_target(logits: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """DKPP, Dark Knowledge with Permuted Predictions (Furlanello et al. 2018, arXiv:1805.04770).

    The true class keeps its logit; the other K - 1 logits are randomly permuted within each row.
    Softmax commutes with permutations, so at every T the target probability is unchanged and the
    non-target probabilities are the same set of values on the wrong classes: the amount of dark
    knowledge survives, its meaning (which classes look alike) does not. (Furlanello permute the
    non-argmax outputs; for a correct teacher the argmax is the true class.) (N, K) -> (N, K).
    """
    n, k = logits.shape
    cols = torch.arange(k, device=logits.device).expand(n, k)  # (N, K)
    others = cols[cols != labels.unsqueeze(-1)].view(n, k - 1)  # (N, K-1) non-target columns
    order = torch.rand(n, k - 1, generator=generator).argsort(dim=-1).to(logits.device)
    sources = others.gather(-1, order)  # (N, K-1) where each non-target value comes from
    return logits.clone().scatter_(-1, others, logits.gather(-1, sources))


def virtual_teacher_logits(
    labels: Tensor, num_classes: int, target_prob: float, temperature: float
) -> Tensor:
    """Yuan et al. 2020's manually designed "virtual teacher" (Tf-KD_reg, arXiv:1909.11723).

    p_k = a for the true class, (1 - a) / (K - 1) for every other class: label smoothing as a
    teacher, with no similarity structure at all. Returned as logits T * log p, so that
    softmax(out / T) = p exactly. (N,) -> (N, K).
    """
    if not 0.0 < target_prob < 1.0:
        raise KdvizError("The virtual teacher's target probability must be in (0, 1).")
    rest = (1.0 - target_prob) / (num_classes - 1)
    probs = torch.full((len(labels), num_classes), rest)
    probs.scatter_(-1, labels.clamp(min=0).unsqueeze(-1), target_prob)
    return temperature * probs.log()


def teacher_max_weights(logits: Tensor) -> Tensor:
    """CWTM, Confidence-Weighted by Teacher Max (Furlanello et al. 2018): each example's hard-label
    loss is weighted by the teacher's top probability max_k p_k at T = 1. (N, K) -> (N,)."""
    return soft.soften(logits, 1.0).max(dim=-1).values


def dark_structure(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """How much structure the non-target probabilities carry, in nats (0 = none).

    p_hat = the soft target at T over the K - 1 wrong classes, renormalised (the NCKD
    distribution of Zhao et al. 2022); structure = mean over examples of KL(p_hat || uniform)
    = log(K - 1) - H(p_hat). A label-smoothed teacher pushes p_hat towards uniform (Müller,
    Kornblith & Hinton 2019: smoothing erases the similarity information distillation uses).
    """
    n, k = logits.shape
    probs = soft.soften(logits.double(), temperature)  # (N, K)
    mask = torch.ones_like(probs, dtype=torch.bool)
    mask.scatter_(-1, labels.unsqueeze(-1), False)
    rest = probs[mask].view(n, k - 1)
    p_hat = rest / rest.sum(-1, keepdim=True).clamp_min(1e-300)  # (N, K-1)
    return float((math.log(k - 1) - soft.entropy(p_hat)).mean())


def bias_for_share(logits: Tensor, cls: int, share: float) -> float:
    """The smallest bias b >= 0 such that adding b to logit ``cls`` makes ``cls`` the prediction on
    (about) a fraction ``share`` of the rows. No labels are used: chosen on a validation split so
    the class's predicted share matches its prior. (N, K) -> float.

    Row n predicts ``cls`` once b > margin_n = max_{j != cls} z_nj - z_n,cls, so the predicted
    share is a step function of b; b sits half-way between the two margins around the target count.
    """
    others = logits.clone()
    others[:, cls] = float("-inf")
    margins = (others.max(dim=-1).values - logits[:, cls]).sort().values  # (N,)
    count = int(round(share * len(margins)))
    if count <= 0 or len(margins) == 0:
        return 0.0
    upper = margins[count] if count < len(margins) else margins[-1] + 1.0
    bias = float((margins[count - 1] + upper) / 2)
    return max(0.0, bias)


def shift_class(logits: Tensor, cls: int, bias: float) -> Tensor:
    """Logits with ``bias`` added to class ``cls`` (the student's output bias raised)."""
    out = logits.clone()
    out[:, cls] += bias
    return out


# ---------------------------------------------------------------------------- the distillation loop


def fit_transformed(
    cfg: DistillConfig,
    *,
    teacher_transform: Callable[[Tensor, Tensor], Tensor] | None = None,
    sample_weight: Callable[[Tensor, Tensor], Tensor] | None = None,
    **kwargs: Any,
) -> RunResult:
    """``engine.fit`` for KD on a fixed transfer set, with the two teacher hooks (see its doc)."""
    return engine.fit(
        cfg, teacher_transform=teacher_transform, sample_weight=sample_weight, **kwargs
    )


# ---------------------------------------------------------------------------- the runner


class Cancelled(Exception):  # noqa: N818  (a signal, not an error)
    """The experiment was cancelled (from the app, the Runs page, SIGTERM or Ctrl-C)."""


@dataclass
class Trained:
    """A finished training run of an experiment."""

    run_id: str
    label: str
    checkpoint: str  # stem path
    metrics: dict[str, Any]  # the last epoch's evaluation (eval_split)
    history: list[dict[str, Any]]
    seconds: float
    snapshots: dict[int, str] = field(default_factory=dict)  # epoch -> stem of a copy


class Runner:
    """Trains the models of one experiment as recorded runs (role, group and parent = the
    experiment's run), keeps their ids, and reports progress on the experiment's run row."""

    def __init__(
        self,
        store: RunStore,
        experiment_id: str,
        *,
        source: str = "cli",
        show_progress: bool = False,
        echo: Callable[[str], None] | None = None,
        stop: jobs.StopFlag | None = None,
    ) -> None:
        self.store, self.experiment_id = store, experiment_id
        self.source, self.show_progress = source, show_progress
        self.echo = echo or (lambda _line: None)
        self.stop = stop or jobs.StopFlag(store, experiment_id)
        self.trained: list[Trained] = []
        self.reused: list[str] = []  # finished runs of earlier experiments used again (a teacher)
        self.planned = 0
        self.teacher_used = ""  # what teacher() returned

    @property
    def folder(self) -> Path:
        folder = run_folder(self.experiment_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def run_ids(self) -> list[str]:
        """Every run the experiment used: reused ones first, then those it trained."""
        return [*self.reused, *(t.run_id for t in self.trained)]

    def plan(self, more: int) -> None:
        """Announce ``more`` trainings still to come (the progress bar's total)."""
        self.planned = len(self.trained) + int(more)
        self.store.update(self.experiment_id, total_steps=self.planned, step=len(self.trained))

    def check_stop(self) -> None:
        """Raise Cancelled if the experiment was asked to stop (read fresh, not throttled)."""
        if self.stop(force=True):
            raise Cancelled

    def train(
        self,
        cfg: TrainConfig,
        label: str,
        *,
        role: str = "student",
        teacher_transform: Callable[[Tensor, Tensor], Tensor] | None = None,
        sample_weight: Callable[[Tensor, Tensor], Tensor] | None = None,
        snapshot_epochs: tuple[int, ...] = (),
    ) -> Trained:
        """Train or distil ``cfg`` as a recorded run; its checkpoint is RUN_FOLDER/student."""
        self.check_stop()
        run_id = _new_run_id(self.store)
        stem = jobs.checkpoint_stem(run_id)
        name = f"{_slug(label)}-{run_id[-6:]}"
        cfg = dataclasses.replace(cfg, name=name, out=str(stem))
        self.store.create_run(
            cfg.to_dict(),
            run_id=run_id,
            status="running",
            name=name,
            role=role,
            source=self.source,
            group_id=self.experiment_id,
            parent_id=self.experiment_id,
            pid=os.getpid(),
            checkpoint=str(stem),
        )
        number = len(self.trained) + 1
        total = max(self.planned, number)
        self.store.update(
            self.experiment_id, message=f"training {number} of {total}: {label}", step=number - 1
        )
        self.echo(f"[{number}/{total}] {label} ...")
        snapshots: dict[int, str] = {}

        def on_epoch(metrics: dict[str, Any]) -> None:
            epoch = int(metrics.get("epoch", 0))
            if epoch in snapshot_epochs:
                snapshots[epoch] = str(_snapshot(stem, epoch))

        self.stop.ids = [self.experiment_id, run_id]
        try:
            hooks = {"teacher_transform": teacher_transform, "sample_weight": sample_weight}
            result = jobs.execute_run(
                self.store,
                run_id,
                cfg,
                on_epoch=on_epoch,
                show_progress=self.show_progress,
                stop=self.stop,
                fit_kwargs={k: v for k, v in hooks.items() if v is not None},
            )
        finally:
            self.stop.ids = [self.experiment_id]
        if result.status == "cancelled":
            raise Cancelled
        if result.status != "done":
            raise KdvizError(f"The run {run_id} ({label}) {result.status}: {result.message}")
        trained = Trained(
            run_id, label, str(stem), result.metrics, result.history, result.seconds, snapshots
        )
        self.trained.append(trained)
        self.store.update(self.experiment_id, step=len(self.trained))
        acc = result.metrics.get("accuracy", float("nan"))
        self.echo(
            f"[{number}/{total}] {label}: {cfg.eval_split} accuracy {acc:.2%} "
            f"({result.seconds:.1f} s, run {run_id})"
        )
        return trained

    def logits(self, checkpoint: str, dataset: str, split: str) -> Tensor:
        """(N, K) logits of a checkpoint on a split (the disk cache is used for stable stems)."""
        model, card = load_checkpoint(checkpoint)
        return engine.model_logits(model, card, load_dataset(dataset, split))

    def teacher(self, s: TeacherSettings) -> str:
        """The teacher to distil: ``s.teacher``, else the shipped DATASET-teacher, else one trained
        here (s.teacher_arch for s.teacher_epochs epochs) as a recorded run."""
        self.teacher_used = self._find_teacher(s)
        return self.teacher_used

    def _find_teacher(self, s: TeacherSettings) -> str:
        if s.teacher:
            resolve_checkpoint(s.teacher)
            return s.teacher
        shipped = shipped_teacher(s.dataset)
        if shipped:
            return shipped
        cfg = TrainConfig(**_common(s), arch=s.teacher_arch)
        cfg = dataclasses.replace(cfg, epochs=s.teacher_epochs or s.epochs, eval_split="val")
        earlier = self._earlier_teacher(cfg)
        if earlier is not None:
            self.echo(f"teacher: reusing {earlier.checkpoint} (run {earlier.id})")
            self.reused.append(earlier.id)
            return earlier.checkpoint
        self.plan(1)
        return self.train(cfg, f"teacher {s.teacher_arch}", role="teacher").checkpoint

    def _earlier_teacher(self, cfg: TrainConfig) -> Run | None:
        """A finished teacher run of an earlier experiment with this very config (same data,
        architecture, epochs, seed...), so the teacher experiments share one fallback teacher."""
        wanted = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "out", "device")}
        for run in self.store.list_runs(status=("done",), kind="train"):
            have = {k: v for k, v in run.config.items() if k not in ("name", "out", "device")}
            stem = Path(run.checkpoint) if run.checkpoint else None
            if (
                run.role == "teacher"
                and have == wanted
                and stem is not None
                and stem.with_name(stem.name + ".safetensors").is_file()
            ):
                return run
        return None


def shipped_teacher(dataset: str) -> str | None:
    """The shipped (or user-saved) teacher DATASET-teacher when it exists and fits ``dataset``."""
    name = f"{dataset.split(':')[0]}-teacher"
    try:
        card = load_card(name)
    except KdvizError:
        return None
    return name if card.dataset == dataset else None


def _new_run_id(store: RunStore) -> str:
    while True:
        run_id = new_run_id()
        if store.find(run_id) is None:
            return run_id


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:40] or "run"


def _snapshot(stem: Path, epoch: int) -> Path:
    """Copy the checkpoint just saved at ``epoch`` to STEM-eEPOCH (card renamed)."""
    copy = stem.with_name(f"{stem.name}-e{epoch}")
    shutil.copyfile(
        stem.with_name(stem.name + ".safetensors"), copy.with_name(copy.name + ".safetensors")
    )
    card = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
    card["name"] = f"{card.get('name', stem.name)}-e{epoch}"
    _write_text(copy.with_name(copy.name + ".json"), json.dumps(card, indent=2) + "\n")
    return copy


# ---------------------------------------------------------------------------- helpers


def _common(s: Settings) -> dict[str, Any]:
    """The TrainConfig fields every run of an experiment shares."""
    return {
        "dataset": s.dataset,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "seed": s.seed,
        "device": s.device,
        "eval_split": s.eval_split,
    }


def _distill(s: Settings, arch: str, teacher: str, **changes: Any) -> DistillConfig:
    values = {
        **_common(s),
        "arch": arch,
        "teacher": teacher,
        "method": "kd",
        "temperature": getattr(s, "temperature", 4.0),
        "alpha": getattr(s, "alpha", 0.9),
    }
    values.update(changes)
    return DistillConfig(**values)


def _hard(s: Settings, arch: str, teacher: str, **changes: Any) -> DistillConfig:
    """A hard-label twin of a student: alpha = 0, so the loss is CE on the labels alone, but it
    keeps the same transfer set and batch order and reports agreement with the teacher."""
    return _distill(s, arch, teacher, alpha=0.0, **changes)


def _pct(value: float, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _comparison(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["measure", "ours", "published", "source"])


def _result(
    s: Settings, name: str, table: pd.DataFrame, comparison: pd.DataFrame, notice: str, **kw: Any
) -> ExperimentResult:
    spec = get_experiment(name)
    return ExperimentResult(
        name=name,
        title=spec.title,
        settings=s.to_dict(),
        table=_numeric(table.reset_index(drop=True)),
        comparison=comparison,
        notice=notice,
        **kw,
    )


HINTON = "Hinton, Vinyals & Dean 2015 (arXiv:1503.02531)"
MULLER = "Müller, Kornblith & Hinton 2019 (arXiv:1906.02629)"
CHO = "Cho & Hariharan 2019 (arXiv:1910.01348)"
FURLANELLO = "Furlanello et al. 2018 (arXiv:1805.04770)"
YUAN = "Yuan et al. 2020 (arXiv:1909.11723)"

# ---------------------------------------------------------------------------- 1. temperature sweep


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
        hard = runner.train(_hard(s, arch, teacher), f"{arch} hard labels")
        for t in s.temperatures:
            run = runner.train(_distill(s, arch, teacher, temperature=t), f"{arch} T={t:g}")
            rows.append(
                {
                    "student": arch,
                    "temperature": float(t),
                    "accuracy": run.metrics["accuracy"],
                    "agreement": run.metrics.get("agreement"),
                    "nll": run.metrics["nll"],
                    "hard_accuracy": hard.metrics["accuracy"],
                    "gain": run.metrics["accuracy"] - hard.metrics["accuracy"],
                    "run_id": run.run_id,
                    "hard_run_id": hard.run_id,
                }
            )
    table = pd.DataFrame(rows)
    comparison = []
    for arch in s.students:
        part = table[table["student"] == arch]
        best = part.loc[part["accuracy"].idxmax()]
        high = part[part["temperature"] >= 8]
        units = _hidden_units(arch)
        spread = (
            f"; T >= 8 within {100 * (high['accuracy'].max() - high['accuracy'].min()):.1f} pts"
            if len(high) > 1 and units is not None and units >= 300
            else ""
        )
        published = (
            "with >= 300 units per layer all T > 8 did about equally"
            if units is not None and units >= 300
            else "with 30 units per layer T = 2.5 to 4 was best"
            if units is not None and units <= 30
            else "-"
        )
        comparison.append(
            (
                f"{arch}: best T (test accuracy)",
                f"T = {best['temperature']:g} ({_pct(best['accuracy'])}){spread}",
                published,
                f"{HINTON}, section 3",
            )
        )
    notice = (
        "Read each student's curve against its own hard-label accuracy (the gain column): the "
        "large student should be nearly flat once T is high, while the small one should peak at "
        "a middling T. A small net cannot also fit the tiny non-target probabilities that a high "
        "T makes as loud as the rest, so for it some dark knowledge is best left ignored."
    )
    return _result(s, "temperature-sweep", table, _comparison(comparison), notice)


def _hidden_units(arch: str) -> int | None:
    """The narrowest hidden layer of an MLP name ("mlp-300-300" -> 300); None for other models."""
    sizes = [int(h) for h in re.findall(r"-(\d+)", arch)] if arch.startswith("mlp-") else []
    return min(sizes) if sizes else None


# ---------------------------------------------------------------------------- 2. omitted class


@register_experiment(
    "omitted-class",
    title="Omitted class",
    settings=OmittedClassSettings,
    paper=f"{HINTON}, section 3",
    question="Can a student learn a class it never saw, from the teacher's soft targets alone?",
)
def omitted_class(s: OmittedClassSettings, runner: Runner) -> ExperimentResult:
    teacher = runner.teacher(s)
    train = load_dataset(s.dataset, "train")
    c = int(s.omit_class)
    if not 0 <= c < train.num_classes:
        raise KdvizError(f"omit_class must be a class index from 0 to {train.num_classes - 1}.")
    name = train.class_names[c]
    prior = float((train.labels == c).float().mean())  # the class's share before removal
    runner.plan(2)
    models = [
        ("distilled", runner.train(_distill(s, s.student, teacher, omit_classes=(c,)), f"{s.student} distilled without {name}")),
        ("hard labels", runner.train(_hard(s, s.student, teacher, omit_classes=(c,)), f"{s.student} hard labels without {name}")),
    ]  # fmt: skip
    test = load_dataset(s.dataset, s.eval_split)
    is_c = test.labels == c
    rows = []
    for model, run in models:
        val_logits = runner.logits(run.checkpoint, s.dataset, "val")
        logits = runner.logits(run.checkpoint, s.dataset, s.eval_split)
        bias = bias_for_share(val_logits, c, prior)
        for stage, b in (("before bias", 0.0), ("after bias", bias)):
            shifted = shift_class(logits, c, b)
            predicted = shifted.argmax(-1)
            rows.append(
                {
                    "model": model,
                    "stage": stage,
                    "omitted_class": name,
                    "bias": b,
                    "class_accuracy": float((predicted[is_c] == c).float().mean()),
                    "accuracy": soft.accuracy(shifted, test.labels),
                    "val_share": float(
                        (shift_class(val_logits, c, b).argmax(-1) == c).float().mean()
                    ),
                    "prior": prior,
                    "run_id": run.run_id,
                }
            )
    table = pd.DataFrame(rows)
    d = table[table["model"] == "distilled"].set_index("stage")
    comparison = _comparison(
        [
            (f"distilled student: test {name}s right", _pct(d.loc["before bias", "class_accuracy"]), "86.8% (3s)", f"{HINTON}, section 3"),
            (f"... after raising the {name} bias", _pct(d.loc["after bias", "class_accuracy"]), "98.6%", f"{HINTON}, section 3"),
            ("bias added", f"{d.loc['after bias', 'bias']:.2f} (chosen on val, no test labels)", "3.5 (chosen for the test set)", f"{HINTON}, section 3"),
            ("overall test accuracy, before -> after", f"{_pct(d.loc['before bias', 'accuracy'])} -> {_pct(d.loc['after bias', 'accuracy'])}", "-", ""),
        ]
    )  # fmt: skip
    notice = (
        f"Neither student ever saw a {name}: every {name} the distilled one gets right it learned "
        f"from the teacher's soft targets on other images (a {name}-ish 5 or 8), which the "
        "hard-label twin never had. The bias step separates knowledge from calibration: a class "
        "the student knows but under-predicts comes back once its output bias is raised until "
        "its predicted share on the validation split matches its prior, with no test label used."
    )
    return _result(s, "omitted-class", table, comparison, notice)


# ---------------------------------------------------------------------------- 3. soft targets as a regulariser


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
            cfg = (_hard if targets == "hard labels" else _distill)(
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
    comparison = _comparison(
        [
            (f"hard labels, {f} of the data: test accuracy", _pct(acc[(f, "hard labels")]), "44.5% (3%, speech frames)", f"{HINTON}, Table 5"),
            (f"soft targets, {f} of the data", _pct(acc[(f, "soft targets")]), "57.0%", f"{HINTON}, Table 5"),
            ("hard labels, all data", _pct(acc[("100%", "hard labels")]), "58.9%", f"{HINTON}, Table 5"),
            ("soft targets, all data", _pct(acc[("100%", "soft targets")]), "-", ""),
        ]
    )  # fmt: skip
    notice = (
        f"Compare train and test accuracy on {f} of the data: with hard labels the model can fit "
        "its few examples perfectly and still generalise poorly, while the teacher's soft "
        "targets give each example a whole distribution to match instead of one class. Hinton "
        "found that this extra constraint acts as a strong regulariser: his speech model on 3% "
        "of the data needed no early stopping with soft targets."
    )
    return _result(s, "soft-regulariser", table, comparison, notice)


# ---------------------------------------------------------------------------- 4. label-smoothed teacher


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
        cfg = TrainConfig(**_common(s), arch=s.teacher_arch, label_smoothing=float(ls))
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
            }
        )  # fmt: skip
        matrix = analysis.similarity_matrix(logits, test.labels, s.temperature, test.class_names)
        long = matrix.stack().rename("probability").reset_index()
        long.columns = ["true_class", "class", "probability"]
        long.insert(0, "smoothing", float(ls))
        sims.append(long)
    for ls, t in teachers:
        run = runner.train(
            _distill(s, s.student, t.checkpoint), f"{s.student} from smoothing-{ls:g} teacher"
        )
        rows.append(_student_row(run, smoothing=float(ls), model="student", arch=s.student))
    hard = runner.train(_hard(s, s.student, teachers[0][1].checkpoint), f"{s.student} hard labels")
    rows.append(_student_row(hard, smoothing=float("nan"), model="student, hard labels", arch=s.student))  # fmt: skip
    table = pd.DataFrame(rows)
    teacher_rows = table[table["model"] == "teacher"].set_index("smoothing")
    student_rows = table[table["model"] == "student"].set_index("smoothing")
    lo, hi = min(s.smoothings), max(s.smoothings)
    comparison = _comparison(
        [
            (f"teacher error, smoothing {lo:g} -> {hi:g}", f"{_pct(teacher_rows.loc[lo, 'error'], 2)} -> {_pct(teacher_rows.loc[hi, 'error'], 2)}", "0.67% -> 0.59% (MNIST)", MULLER),
            (f"student error, from teacher {lo:g} -> {hi:g}", f"{_pct(student_rows.loc[lo, 'error'], 2)} -> {_pct(student_rows.loc[hi, 'error'], 2)}", "0.74% -> 0.91%", MULLER),
            (f"teacher dark structure at T={s.temperature:g} (nats), {lo:g} -> {hi:g}", f"{teacher_rows.loc[lo, 'dark_structure']:.3f} -> {teacher_rows.loc[hi, 'dark_structure']:.3f}", "smoothing erases it (qualitative)", MULLER),
        ]
    )  # fmt: skip
    notice = (
        "Compare the two similarity matrices and the dark_structure column: label smoothing "
        "pulls a teacher's non-target probabilities towards equal, erasing its 'a 7 looks a bit "
        "like a 1' structure while its own accuracy holds or improves. Müller et al. found that "
        "this is exactly the information distillation transfers, so the smoothed teacher's "
        "student gains less."
    )
    return _result(
        s, "label-smoothing", table, comparison, notice, extras={"similarity": pd.concat(sims)}
    )


def _student_row(run: Trained, **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "accuracy": run.metrics["accuracy"],
        "error": 1 - run.metrics["accuracy"],
        "ece": run.metrics["ece"],
        "dark_mass": None,
        "dark_structure": None,
        "agreement": run.metrics.get("agreement"),
        "run_id": run.run_id,
    }


# ---------------------------------------------------------------------------- 5. early-stopped teacher


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
    cfg = TrainConfig(**_common(s), arch=s.teacher_arch)
    cfg = dataclasses.replace(cfg, epochs=s.teacher_epochs)
    teacher = runner.train(cfg, f"teacher {s.teacher_arch}", role="teacher", snapshot_epochs=epochs)
    by_epoch = {int(m["epoch"]): m for m in teacher.history}
    rows = []
    for e in epochs:
        run = runner.train(
            _distill(s, s.student, teacher.snapshots[e]), f"{s.student} from teacher epoch {e}"
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
    hard = runner.train(_hard(s, s.student, teacher.checkpoint), f"{s.student} hard labels")
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
    table = pd.DataFrame(rows)
    taught = table.dropna(subset=["teacher_epoch"])
    best = taught.loc[taught["accuracy"].idxmax()]
    final = taught.iloc[-1]
    comparison = _comparison(
        [
            ("best teacher checkpoint for the student", f"epoch {int(best['teacher_epoch'])} of {s.teacher_epochs} ({_pct(best['accuracy'])})", "an early-stopped teacher often beats the finished one", CHO),
            ("student from the finished teacher", _pct(final["accuracy"]), "-", ""),
            ("student on hard labels", _pct(hard.metrics["accuracy"]), "-", ""),
        ]
    )  # fmt: skip
    notice = (
        "Put the teacher's own accuracy beside its student's: the most accurate checkpoint is not "
        "necessarily the best teacher, especially for a small student. Late in training a teacher "
        "grows confident and its soft targets sharpen, so a student with little capacity receives "
        "less usable dark knowledge (Cho & Hariharan's capacity gap)."
    )
    return _result(s, "early-stopped-teacher", table, comparison, notice)


# ---------------------------------------------------------------------------- 6. born-again


@register_experiment(
    "born-again",
    title="Born-again networks",
    settings=BornAgainSettings,
    paper=FURLANELLO,
    question="Can a student with the teacher's own architecture beat its teacher, generation after generation?",
)
def born_again(s: BornAgainSettings, runner: Runner) -> ExperimentResult:
    runner.plan(1 + s.generations)
    gen0 = TrainConfig(**_common(s), arch=s.arch)
    runs = [runner.train(gen0, f"{s.arch} generation 0 (hard labels)", role="teacher")]
    for g in range(1, s.generations + 1):
        cfg = _distill(s, s.arch, runs[-1].checkpoint, seed=s.seed + g)
        runs.append(runner.train(cfg, f"{s.arch} generation {g}"))
    test = load_dataset(s.dataset, s.eval_split)
    rows = []
    for g, run in enumerate(runs):
        rows.append(
            {
                "generation": g,
                "model": f"generation {g}" + (" (hard labels)" if g == 0 else ""),
                "accuracy": run.metrics["accuracy"],
                "nll": run.metrics["nll"],
                "ece": run.metrics["ece"],
                "agreement_with_teacher": run.metrics.get("agreement"),
                "run_id": run.run_id,
            }
        )
    stem = _ensemble(runner, [r.checkpoint for r in runs], s.dataset, "born-again-ensemble")
    metrics = engine.logit_metrics(runner.logits(str(stem), s.dataset, s.eval_split), test.labels)
    rows.append(
        {
            "generation": float("nan"),
            "model": f"ensemble of generations 0-{s.generations}",
            "accuracy": metrics["accuracy"],
            "nll": metrics["nll"],
            "ece": metrics["ece"],
            "agreement_with_teacher": None,
            "run_id": "",
        }
    )
    table = pd.DataFrame(rows)
    gens = table.dropna(subset=["generation"])
    comparison = _comparison(
        [
            ("generation 0 -> best born-again generation", f"{_pct(gens.iloc[0]['accuracy'])} -> {_pct(gens.iloc[1:]['accuracy'].max())}", "born-again students beat their teachers (CIFAR-100, DenseNets)", FURLANELLO),
            ("ensemble of all generations", _pct(metrics["accuracy"]), "BAN ensembles better still: 15.5% single / 14.9% ensemble error, CIFAR-100", FURLANELLO),
        ]
    )  # fmt: skip
    notice = (
        "Every generation has the same architecture and the same data; the only new thing it "
        "gets is the previous generation's soft targets, so any gain over generation 0 is dark "
        "knowledge acting on an equal. Watch whether the gain shrinks after the first generation "
        "and whether averaging the generations adds more than any single one."
    )
    return _result(s, "born-again", table, comparison, notice)


def _ensemble(runner: Runner, members: list[str], dataset: str, name: str) -> Path:
    """An ensemble card over ``members`` in the experiment's folder; returns its stem."""
    ds = load_dataset(dataset, "train")
    card = ModelCard(
        name=name,
        num_classes=ds.num_classes,
        class_names=list(ds.class_names),
        in_shape=list(ds.in_shape),
        mean=list(ds.mean),
        std=list(ds.std),
        dataset=dataset,
        members=[str(m) for m in members],
        kind="ensemble",
        arch="ensemble",
    )
    return save_ensemble_card(card, runner.folder / name)


# ---------------------------------------------------------------------------- 7. which part carries the knowledge


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
        ("hard labels", "cross-entropy on the labels only", _hard(s, s.student, teacher), {}),
        ("full soft targets", "standard KD", _distill(s, s.student, teacher), {}),
        (f"top-{s.top_k} soft targets", f"only the teacher's {s.top_k} largest probabilities, renormalised", _distill(s, s.student, teacher), {"teacher_transform": lambda z, _y: top_k_logits(z, s.top_k)}),
        ("DKPP", "non-target probabilities shuffled; the target probability kept", _distill(s, s.student, teacher), {"teacher_transform": dkpp}),
        ("CWTM", "hard labels weighted by the teacher's max probability", _hard(s, s.student, teacher), {"sample_weight": lambda z, _y: teacher_max_weights(z)}),
        ("virtual teacher", f"uniform non-targets, {s.virtual_target:g} on the target", _distill(s, s.student, teacher), {"teacher_transform": virtual}),
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
    acc = dict(zip(table["variant"], table["accuracy"], strict=True))
    base = acc["hard labels"]

    def vs(label: str) -> str:
        return f"{_pct(acc[label])} ({100 * (acc[label] - base):+.1f} pts)"

    comparison = _comparison(
        [
            ("full soft targets vs hard labels", vs("full soft targets"), "KD beats the hard-label baseline", HINTON),
            ("DKPP (structure destroyed)", vs("DKPP"), "still improved on the baseline (CIFAR-100)", FURLANELLO),
            ("CWTM (confidence only)", vs("CWTM"), "still improved on the baseline (CIFAR-100)", FURLANELLO),
            ("virtual teacher (no teacher at all)", vs("virtual teacher"), "comparable to KD from a strong teacher (up to +0.65% ImageNet)", YUAN),
            (f"top-{s.top_k} soft targets", vs(f"top-{s.top_k} soft targets"), "-", ""),
        ]
    )  # fmt: skip
    notice = (
        "Each variant keeps one ingredient of the soft targets: DKPP keeps how much probability "
        "is dark but scrambles which classes get it, CWTM keeps only the teacher's confidence, and "
        "the virtual teacher keeps only the smoothing. The gap between full soft targets and the "
        f"best of these is the part of the gain that needs the teacher to know which of the "
        f"{k_classes} classes look alike."
    )
    return _result(s, "soft-target-parts", table, comparison, notice)


# ---------------------------------------------------------------------------- 8. ensemble to one


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
        cfg = TrainConfig(**_common(s), arch=s.arch, dropout=s.dropout)
        cfg = dataclasses.replace(cfg, seed=s.seed + i)
        members.append(runner.train(cfg, f"{s.arch} member {i}", role="teacher"))
    stem = _ensemble(runner, [m.checkpoint for m in members], s.dataset, "ensemble")
    student = runner.train(
        _distill(s, s.arch, str(stem), seed=s.seed + s.members), f"{s.arch} distilled from the ensemble"
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
    by = table.set_index("kind")
    member_mean = table[table["kind"] == "member"]["accuracy"].mean()
    ens, stu = by.loc["ensemble", "accuracy"], by.loc["student", "accuracy"]
    gains = f"{100 * (ens - member_mean):+.1f} / {100 * (stu - member_mean):+.1f} pts"
    comparison = _comparison(
        [
            ("single model (mean of members)", _pct(member_mean), "58.9% (speech frames)", f"{HINTON}, Table 1"),
            (f"ensemble of {s.members}", _pct(ens), "61.1% (10 models)", f"{HINTON}, Table 1"),
            ("distilled single model", _pct(stu), "60.8%", f"{HINTON}, Table 1"),
            ("gain over one model: ensemble / distilled", gains, "+2.2 / +1.9 pts (over 80% of the gain kept)", f"{HINTON}, section 4"),
        ]
    )  # fmt: skip
    notice = (
        "An ensemble beats its members when they disagree on the hard cases; its averaged soft "
        "targets record that disagreement, and the distilled student, the size of one member, "
        "gets to learn from it. Hinton's single distilled model kept more than 80% of the "
        "ensemble's gain; compare the two gains in the last row."
    )
    return _result(s, "ensemble-to-one", table, comparison, notice)


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


# ---------------------------------------------------------------------------- charts


def result_figure(result: ExperimentResult):
    """A plotly Figure of an experiment's table (one chart per experiment; never calls st)."""
    import plotly.graph_objects as go

    t, name = result.table, result.name
    fig = go.Figure()
    if name == "temperature-sweep":
        for i, (arch, part) in enumerate(t.groupby("student", sort=False)):
            color = _COLORS[i % len(_COLORS)]
            fig.add_scatter(
                x=part["temperature"], y=part["accuracy"], mode="lines+markers", name=arch,
                line={"color": color},
            )  # fmt: skip
            fig.add_scatter(
                x=[part["temperature"].min(), part["temperature"].max()],
                y=[part["hard_accuracy"].iloc[0]] * 2,
                mode="lines", name=f"{arch}, hard labels", line={"color": color, "dash": "dash"},
            )  # fmt: skip
        fig.update_xaxes(type="log", title="temperature T")
    elif name == "omitted-class":
        for stage, part in t.groupby("stage", sort=False):
            fig.add_bar(x=part["model"], y=part["class_accuracy"], name=stage)
        fig.update_yaxes(title=f"test accuracy on class {t['omitted_class'].iloc[0]}")
    elif name == "soft-regulariser":
        for targets, part in t.groupby("targets", sort=False):
            fig.add_bar(x=part["data"], y=part["accuracy"], name=f"{targets}: test")
            fig.add_bar(x=part["data"], y=part["train_accuracy"], name=f"{targets}: train", opacity=0.45)  # fmt: skip
        fig.update_xaxes(title="share of the training data")
    elif name == "label-smoothing":
        for model, part in t.groupby("model", sort=False):
            x = ["hard labels" if pd.isna(v) else f"smoothing {v:g}" for v in part["smoothing"]]
            fig.add_bar(x=x, y=part["accuracy"], name=model)
    elif name == "early-stopped-teacher":
        taught = t.dropna(subset=["teacher_epoch"])
        fig.add_scatter(x=taught["teacher_epoch"], y=taught["teacher_accuracy"], mode="lines+markers", name="teacher")  # fmt: skip
        fig.add_scatter(x=taught["teacher_epoch"], y=taught["accuracy"], mode="lines+markers", name="student")  # fmt: skip
        hard = t[t["teacher_epoch"].isna()]["accuracy"]
        if len(hard):
            fig.add_hline(y=float(hard.iloc[0]), line_dash="dash", annotation_text="student, hard labels")  # fmt: skip
        fig.update_xaxes(title="teacher checkpoint (epoch)")
    else:  # born-again, soft-target-parts, ensemble-to-one: one bar per model
        x = t["variant"] if "variant" in t else t["model"]
        fig.add_bar(x=x, y=t["accuracy"], name="accuracy", marker_color=_COLORS[0])
    fig.update_layout(
        title=result.title,
        yaxis_title=fig.layout.yaxis.title.text or "test accuracy",
        yaxis_tickformat=".1%",
        barmode="group",
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    _zoom_accuracy_axis(fig)
    return fig


_COLORS = ("#1f6fb4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _zoom_accuracy_axis(fig) -> None:
    """Accuracies differ by a few points: start the y axis near the smallest value."""
    values = [v for tr in fig.data for v in (tr.y if tr.y is not None else []) if v == v]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.01, 0.1 * (hi - lo))
        fig.update_yaxes(range=[max(0.0, lo - pad), min(1.0, hi + pad)])


# ---------------------------------------------------------------------------- running


def _experiment_config(name: str, s: Settings) -> dict[str, Any]:
    """The run row's config: the experiment, its settings, and the fields the Runs page shows."""
    return {
        "kind": "experiment",
        "experiment": name,
        "settings": s.to_dict(),
        "dataset": s.dataset,
        "epochs": s.epochs,
        "device": s.device,
        "eval_split": s.eval_split,
    }


def run_experiment(
    name: str,
    settings: Settings | None = None,
    *,
    store: RunStore | None = None,
    run_id: str | None = None,
    source: str = "cli",
    show_progress: bool = False,
    echo: Callable[[str], None] | None = None,
    stop: jobs.StopFlag | None = None,
) -> ExperimentResult:
    """Run an experiment end to end in this process, recorded as one "experiment" run (``run_id``,
    or a new one) whose folder gets the result (CSV + JSON). Raises Cancelled when cancelled."""
    spec = get_experiment(name)
    s = (settings or spec.settings()).resolved()
    if not isinstance(s, spec.settings):
        raise KdvizError(f"Experiment {name!r} takes {spec.settings.__name__}.")
    store = store or RunStore()
    if run_id is None:
        run_id = store.create_run(
            _experiment_config(spec.name, s),
            status="running",
            name=f"experiment {spec.name}",
            role="experiment",
            source=source,
            pid=os.getpid(),
        ).id
    runner = Runner(store, run_id, source=source, show_progress=show_progress, echo=echo, stop=stop)
    started = time.perf_counter()
    try:
        result = spec.fn(s, runner)
    except (Cancelled, KeyboardInterrupt):
        store.finish(run_id, "cancelled", f"Cancelled after {len(runner.trained)} runs.")
        raise
    except KdvizError as err:
        store.finish(run_id, "failed", str(err))
        raise
    except BaseException as err:
        store.finish(run_id, "failed", f"{type(err).__name__}: {err}".strip())
        raise
    result.run_ids = runner.run_ids
    result.teacher = runner.teacher_used
    result.experiment_run = run_id
    result.seconds = time.perf_counter() - started
    path = result.save(runner.folder)
    store.add_artifact(run_id, "result", path)
    store.add_artifact(run_id, "table", runner.folder / TABLE_CSV)
    store.finish(
        run_id,
        "done",
        f"Finished {len(runner.trained)} runs in {result.seconds:.0f} s.",
        metrics={"runs": len(runner.trained), "seconds": result.seconds},
        step=len(runner.trained),
        total_steps=len(runner.trained),
    )
    return result


def find_results(name: str | None = None, store: RunStore | None = None) -> list[Run]:
    """Finished experiment runs (newest first), optionally of one experiment."""
    store = store or RunStore()
    runs = store.list_runs(kind="experiment")
    return [
        r
        for r in runs
        if (name is None or r.config.get("experiment") == name)
        and r.status == "done"
        and (r.folder / RESULT_JSON).is_file()
    ]


# ---------------------------------------------------------------------------- background runs

_children: dict[str, subprocess.Popen] = {}  # experiment workers this process started


def start_experiment(
    name: str, settings: Settings | None = None, *, store: RunStore | None = None
) -> Run:
    """Queue an experiment as one background run and start its process; returns at once.

    The process waits for a free slot of the run queue (like any run), then trains every model
    of the experiment as its own recorded run and writes the result into the run folder.
    """
    spec = get_experiment(name)
    s = (settings or spec.settings()).resolved()
    store = store or RunStore()
    device = engine.pick_device(s.device)
    run = store.create_run(
        _experiment_config(spec.name, s),
        run_id=_new_run_id(store),
        name=f"experiment {spec.name}",
        role="experiment",
        source="app",
        device=jobs.device_name(device),
        max_running=store.max_running(jobs.default_max_running(device.type)),
    )
    folder = run.folder
    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()
    env["KDVIZ_HOME"] = str(kdviz_home())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = folder / WORKER_LOG
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kdviz.experiments", "worker", run.id],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,  # it outlives a Ctrl-C of the web server
            )
    except OSError as err:
        store.finish(run.id, "failed", f"The worker process could not start ({err}).")
        raise KdvizError(f"The experiment's process could not start ({err}).") from err
    _children[run.id] = proc
    store.set_process(run.id, proc.pid)
    store.add_artifact(run.id, "log", log_path)
    return store.get(run.id)


def reap() -> None:
    """Collect finished worker processes of this process (the page calls it on every poll)."""
    for run_id, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[run_id]


def cancel_experiment(run_id: str, store: RunStore | None = None) -> Run:
    """Ask an experiment (and with it its current training run) to stop."""
    store = store or RunStore(recover=False)
    for run in store.group(run_id):
        if run.active:
            jobs.cancel(run.id, store)
    return store.get(run_id)


def run_experiment_worker(run_id: str) -> int:
    """The background process of ``start_experiment``: wait for a slot, then run the experiment."""
    store = RunStore(recover=False)
    run = store.find(run_id)
    if run is None or run.status != "queued" or run.kind != "experiment":
        print(f"kdviz experiment worker: run {run_id} is not a queued experiment.", file=sys.stderr)
        return 0
    stop = jobs.become_worker(store, run_id)
    if not jobs.wait_for_slot(store, run_id, stop):
        return 0
    config = store.get(run_id).config
    print(f"kdviz experiment worker: {config['experiment']} started", file=sys.stderr, flush=True)
    try:
        settings = make_settings(config["experiment"], **config.get("settings", {}))
        run_experiment(
            config["experiment"],
            settings,
            store=store,
            run_id=run_id,
            source="app",
            echo=lambda line: print(line, file=sys.stderr, flush=True),
            stop=stop,
        )
    except Cancelled:
        return 0
    except KdvizError as err:
        print(f"kdviz experiment worker: {err}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------------------- CLI


def add_experiment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``kdviz experiment NAME [--dataset SPEC] [--size tiny|full] [--set KEY=VALUE ...] [--json]``."""
    names = ", ".join(list_experiments())
    parser = subparsers.add_parser(
        "experiment",
        help="run a classic dark-knowledge experiment end to end",
        description=f"Run one experiment end to end and print our numbers beside the published ones. Experiments: {names}.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {names} (omit to list)")
    parser.add_argument("--dataset", default=None, help="dataset spec (default mnist5k)")
    parser.add_argument("--size", choices=SIZES, default=None, help="tiny (seconds) or full")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, mps")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, e.g. --set temperatures=1,4,20 --set student=mlp-100-100",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def run_experiment_cli(args: argparse.Namespace) -> int:
    """The ``kdviz experiment`` command: runs in the foreground, progress on stderr."""
    if not args.name:
        for name in list_experiments():
            spec = get_experiment(name)
            print(f"{name:<24} {spec.title}: {spec.question}")
        return 0
    spec = get_experiment(args.name)
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        if "=" not in item:
            raise KdvizError(f"--set takes KEY=VALUE (got {item!r}), e.g. --set epochs=5.")
        key, value = item.split("=", 1)
        overrides[key.strip().replace("-", "_")] = value
    for key in ("dataset", "size", "device"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    settings = spec.make_settings(**overrides)
    quiet = bool(args.json)

    def echo(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    echo(f"{spec.title}: {spec.question}")
    try:
        result = run_experiment(
            spec.name, settings, source="cli", show_progress=not quiet, echo=echo
        )
    except Cancelled:
        print("kdviz: experiment cancelled", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return 0
    print(format_result(result))
    return 0


def format_result(result: ExperimentResult) -> str:
    """The result as Markdown: comparison, table, what to notice, where it is stored."""
    lines = [
        f"## {result.title}",
        "",
        markdown_table(result.comparison),
        "",
        markdown_table(result.table.drop(columns=[c for c in result.table if "run_id" in c])),
        "",
        f"What to notice: {result.notice}",
        "",
        f"{len(result.run_ids)} runs in {result.seconds:.0f} s; result in "
        f"{run_folder(result.experiment_run) if result.experiment_run else '-'}",
    ]
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; accuracies and rates as percentages, other floats to 3 places."""

    def cell(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float):
            rate = any(w in column for w in ("accuracy", "agreement", "error", "share", "prior", "gain", "fraction"))  # fmt: skip
            return f"{100 * value:.1f}%" if rate else f"{value:.3g}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = [
        "| " + " | ".join(cell(str(c), v) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "worker":
        return run_experiment_worker(argv[1])
    parser = argparse.ArgumentParser(prog="python -m kdviz.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    add_experiment_parser(sub)
    args = parser.parse_args(argv)
    try:
        return run_experiment_cli(args)
    except KdvizError as err:
        print(f"kdviz: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # the background worker: python -m kdviz.experiments worker RUN_ID
    sys.exit(_main(sys.argv[1:]))
