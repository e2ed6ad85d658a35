"""How long an experiment will take on this machine, before it has run here: its trainings
(architecture, epochs, images, for each seed) counted from its settings, each costed from measured
milliseconds per training image and epoch.

The costs come from the finished runs of this run store when it has some of that architecture
(this machine's own speed), else from ``IMAGE_MS``: the medians over the training runs of every
experiment at full size (one seed; the sweep also three), one torch thread, on a 2-core x86_64 CPU
shared with other work (scripts/run_experiments.py --threads 1, KDVIZ_HOME=/work/exp_home,
2026-11-30), printed by

    KDVIZ_HOME=/work/exp_home python -m kdviz.experiments.estimate full

which also prints every experiment's estimate. cnn-wide does not appear in those runs; it was
timed alone (``python -m kdviz.experiments.estimate --time cnn-wide``, which gives the others
1.2-2 times lower on an idle machine); resnet20 is cross_architecture.py's figure (~58 s an epoch
on one CPU thread).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kdviz.errors import KdvizError

# ms per training image and epoch (evaluation included, EPOCH_S excluded); see the docstring
IMAGE_MS = {
    "mlp-30-30": 0.0181,
    "mlp-300-300": 0.0308,
    "mlp-70-70": 0.0314,
    "mlp-800-800": 0.0905,
    "lenet": 0.1925,
    "mlp-1200-1200": 0.3857,
    "resnet8": 1.6577,
    "cnn-wide": 2.07,
    "resnet20": 13.9,
}
REFERENCE_PIXELS = 28 * 28  # IMAGE_MS is for mnist5k's images
EPOCH_S = 0.02  # an epoch's fixed cost: evaluation of a few hundred images, metrics, the store
TRAINING_S = 0.05  # a training's fixed cost: the model, the checkpoint, the final metrics
EXPERIMENT_S = 1.5  # an experiment's: data, the teacher's logits, warm-up, the stored result
AUGMENT_COST = 1.15  # jitter on the CPU: mlp-1200-1200 timed 1.0 s an epoch with, 0.8-0.96 without
MIN_EPOCHS = 5  # a run store's run this short is mostly fixed costs: not used to measure speed


@dataclass(frozen=True)
class Training:
    """One training run an experiment will do (one seed)."""

    arch: str
    epochs: int
    images: int  # training images per epoch (the transfer set for a student)
    augment: str = "none"


@dataclass(frozen=True)
class DataSize:
    train: int  # images of the training split
    eval: int  # images of the eval split
    pixels: int  # values per image (C * H * W)


@functools.lru_cache(maxsize=16)
def data_size(spec: str, eval_split: str = "test") -> DataSize:
    """Sizes of ``spec``'s splits (mnist5k's when the data cannot be read)."""
    from kdviz.data import load_dataset

    try:
        train = load_dataset(spec, "train", download=False)
        n_eval = len(load_dataset(spec, eval_split, download=False))
    except (KdvizError, OSError):
        return DataSize(4000, 500, REFERENCE_PIXELS)
    return DataSize(len(train), n_eval, math.prod(train.in_shape))


# ---------------------------------------------------------------------------- what each runs

Plan = Callable[[Any, DataSize], list[Training]]
PLANS: dict[str, Plan] = {}


def _plan(name: str) -> Callable[[Plan], Plan]:
    def register(fn: Plan) -> Plan:
        PLANS[name] = fn
        return fn

    return register


def _teacher(s: Any, n: DataSize) -> list[Training]:
    """Runner.teacher: a given or shipped teacher costs nothing, else one is trained."""
    from kdviz.experiments.runner import shipped_teacher

    if s.teacher or shipped_teacher(s.dataset):
        return []
    return [Training(s.teacher_arch, s.teacher_epochs or s.epochs, n.train)]


def _students(arch: str, count: int, s: Any, n: DataSize) -> list[Training]:
    return [Training(arch, s.epochs, n.train)] * count


@_plan("temperature-sweep")
def _sweep(s: Any, n: DataSize) -> list[Training]:
    per_student = len(s.temperatures) + 1  # one per T and the hard-label twin
    return _teacher(s, n) + [t for arch in s.students for t in _students(arch, per_student, s, n)]


@_plan("omitted-class")
def _omitted(s: Any, n: DataSize) -> list[Training]:
    return _teacher(s, n) + _students(s.student, 2, s, n)


@_plan("soft-regulariser")
def _regulariser(s: Any, n: DataSize) -> list[Training]:
    small = Training(s.student, s.small_epochs, max(1, round(n.train * s.fraction)))
    return _teacher(s, n) + [small, small] + _students(s.student, 2, s, n)


@_plan("label-smoothing")
def _smoothing(s: Any, n: DataSize) -> list[Training]:
    teachers = [Training(s.teacher_arch, s.teacher_epochs, n.train)] * len(s.smoothings)
    return teachers + _students(s.student, len(s.smoothings) + 1, s, n)


@_plan("early-stopped-teacher")
def _early(s: Any, n: DataSize) -> list[Training]:
    epochs = {int(e) for e in s.checkpoints if 1 <= int(e) <= s.teacher_epochs}
    teacher = Training(s.teacher_arch, s.teacher_epochs, n.train)
    return [teacher] + _students(s.student, len(epochs) + 1, s, n)


@_plan("born-again")
def _born_again(s: Any, n: DataSize) -> list[Training]:
    return _students(s.arch, 1 + s.generations, s, n)


@_plan("soft-target-parts")
def _parts(s: Any, n: DataSize) -> list[Training]:
    return _teacher(s, n) + _students(s.student, 6, s, n)  # the six variants


@_plan("ensemble-to-one")
def _ensemble(s: Any, n: DataSize) -> list[Training]:
    return _students(s.arch, s.members + 1, s, n)


@_plan("cross-architecture")
def _cross(s: Any, n: DataSize) -> list[Training]:
    from kdviz.experiments.runner import shipped_teacher

    teachers = [
        Training(s.mlp_teacher, s.mlp_teacher_epochs, n.train, s.mlp_teacher_augment),
        Training(s.resnet_teacher, s.teacher_epochs, n.train),
    ]
    if not (s.teacher or shipped_teacher(s.dataset)):
        teachers.append(Training("lenet", s.teacher_epochs, n.train))
    per_student = 3 + bool(s.extra_teacher) + 1  # one per teacher and the hard-label twin
    return teachers + [t for arch in s.students for t in _students(arch, per_student, s, n)]


@_plan("miscalibrated-teacher")
def _miscalibrated(s: Any, n: DataSize) -> list[Training]:
    teachers = [Training(s.teacher_arch, s.teacher_epochs, n.train)]
    if s.smoothing > 0:
        teachers.append(Training(s.teacher_arch, s.teacher_epochs, n.train))
    if s.overtrain_to > 0:
        teachers.append(Training(s.teacher_arch, s.overtrain_to, n.train))
    grid = {float(t) for t in s.temperatures} | {float(s.temperature)}
    variants = len(s.scales) + len(teachers) - 1
    # a student per variant and T, one temperature-scaled student per teacher checkpoint (every
    # logit scale of one teacher scales to the same teacher), and the hard-label student
    students = variants * len(grid) + len(teachers) + 1
    return teachers + _students(s.student, students, s, n)


def trainings(name: str, settings: Any) -> list[Training]:
    """Every training the experiment runs, all seeds (teachers are trained again for each)."""
    s = settings.resolved()
    n = data_size(s.dataset, s.eval_split)
    plan = PLANS.get(name)
    if plan is None:  # an experiment without a plan here: its two students, as a guess
        arch = getattr(s, "student", getattr(s, "arch", "mlp-300-300"))
        return _students(arch, 2, s, n) * s.seeds
    return plan(s, n) * s.seeds


# ---------------------------------------------------------------------------- what each costs


def _mlp_params(arch: str, pixels: int) -> int | None:
    widths = [int(w) for w in re.findall(r"-(\d+)", arch)] if arch.startswith("mlp-") else []
    if not widths:
        return None
    sizes = [pixels, *widths, 10]
    return sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))


def _scale(arch: str, pixels: int) -> float:
    """How much more an image of ``pixels`` values costs than a 28 x 28 one: by the weights an MLP
    multiplies, by the area a CNN convolves."""
    here, there = _mlp_params(arch, pixels), _mlp_params(arch, REFERENCE_PIXELS)
    if here and there:
        return here / there
    return pixels / REFERENCE_PIXELS


def _fallback_ms(arch: str) -> float:
    """An architecture without a measurement: an MLP by its weights, else a LeNet's cost."""
    params = _mlp_params(arch, REFERENCE_PIXELS)
    if params:  # mlp-300-300 (328k weights) 0.031 ms, mlp-800-800 (1.28M) 0.091 ms
        return 0.01 + params * 0.063e-6
    family = next((a for a in IMAGE_MS if arch.startswith(a)), "lenet")
    return IMAGE_MS[family]


def image_ms(arch: str, measured: dict[str, float] | None = None) -> float:
    """ms per 28 x 28 training image and epoch: this machine's runs, else the table."""
    if measured and arch in measured:
        return measured[arch]
    return IMAGE_MS.get(arch) or _fallback_ms(arch)


def training_seconds(t: Training, n: DataSize, measured: dict[str, float] | None = None) -> float:
    """TRAINING_S + epochs x (EPOCH_S + images, and a third of the eval images, x their cost)."""
    ms = image_ms(t.arch, measured) * _scale(t.arch, n.pixels)
    ms *= AUGMENT_COST if t.augment != "none" else 1.0
    return TRAINING_S + t.epochs * (EPOCH_S + (t.images + n.eval / 3) * ms / 1000)


def measured_costs(runs: Iterable[Any]) -> dict[str, float]:
    """ms per 28 x 28 image and epoch of each architecture, the median over finished train and
    distill runs (of MIN_EPOCHS or more) of a run store."""
    costs: dict[str, list[float]] = {}
    for run in runs:
        cfg = run.config
        if (
            run.status != "done" or run.kind not in ("train", "distill")
            or not run.started or not run.finished or int(cfg.get("epochs") or 0) < MIN_EPOCHS
            or not cfg.get("dataset") or not cfg.get("arch")
        ):  # fmt: skip
            continue
        n = data_size(cfg["dataset"], cfg.get("eval_split", "test"))
        images = n.train * float(cfg.get("transfer_fraction") or 1.0)
        per_epoch = (run.finished - run.started - TRAINING_S) / int(cfg["epochs"]) - EPOCH_S
        if per_epoch <= 0:
            continue
        ms = 1000 * per_epoch / (images + n.eval / 3) / _scale(cfg["arch"], n.pixels)
        ms /= AUGMENT_COST if cfg.get("augment", "none") != "none" else 1.0
        costs.setdefault(cfg["arch"], []).append(ms)
    return {arch: statistics.median(values) for arch, values in costs.items()}


def estimate_seconds(
    name: str, settings: Any, measured: dict[str, float] | None = None
) -> tuple[float, int]:
    """(seconds, trainings) the experiment should take here, all seeds."""
    s = settings.resolved()
    n = data_size(s.dataset, s.eval_split)
    plan = trainings(name, s)
    return EXPERIMENT_S + sum(training_seconds(t, n, measured) for t in plan), len(plan)


def time_architecture(arch: str, epochs: int = 3) -> float:
    """ms per training image and epoch of ``arch``, timed: a `kdviz train` of ``epochs`` epochs
    on mnist5k, batch 128, on the CPU, in a temporary folder (what IMAGE_MS holds)."""
    import tempfile
    import time

    from kdviz.engine import TrainConfig, train

    n = data_size("mnist5k")
    with tempfile.TemporaryDirectory() as folder:
        cfg = TrainConfig(
            dataset="mnist5k", arch=arch, epochs=epochs, device="cpu", eval_split="test",
            out=f"{folder}/model",
        )  # fmt: skip
        start = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - start
    per_epoch = (seconds - TRAINING_S) / epochs - EPOCH_S
    return 1000 * per_epoch / (n.train + n.eval / 3)


def _main(argv: list[str]) -> int:
    """--time ARCH...: time each architecture (one torch thread); else print the costs measured
    from KDVIZ_HOME's run store and each experiment's estimate (SIZE... or both sizes)."""
    from kdviz import experiments as ex
    from kdviz.runs import RunStore

    if argv[:1] == ["--time"]:
        import torch

        torch.set_num_threads(1)
        time_architecture("mlp-30-30", 1)  # warm-up: the first training of a process is slower
        for arch in argv[1:]:
            print(f"    {arch!r}: {time_architecture(arch):.4f},", flush=True)
        return 0
    measured = measured_costs(RunStore(recover=False).list_runs(limit=100_000))
    print("ms per 28 x 28 training image and epoch, from this run store's runs:")
    for arch, ms in sorted(measured.items(), key=lambda kv: kv[1]):
        print(f"    {arch!r}: {ms:.4f},")
    for size in argv or list(ex.SIZES):
        for name in ex.list_experiments():
            settings = ex.make_settings(name, size=size)
            seconds, count = estimate_seconds(name, settings, measured)
            one = dataclasses.replace(settings, seeds=1)
            per_seed, _ = estimate_seconds(name, one, measured)
            print(
                f"{size:5} {name:24} {count:4} trainings {seconds:8.0f} s ({per_seed:.0f} a seed)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
