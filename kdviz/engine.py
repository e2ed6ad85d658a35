"""Train, distill and evaluate loops: configs, device choice, callbacks (logits: kdviz.logits).

The loops follow pytorch/examples' shape (one epoch of steps, then an evaluation) but return metric
dicts and call ``on_step`` / ``on_epoch`` instead of printing, so the CLI, the web app and the run
store all watch the same loop. Data lives as tensors on the device; a batch is an index, not a
Python loop over samples.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdviz import distributed, logit_cache, precision, soft, stats
from kdviz.data import Dataset, load_dataset
from kdviz.errors import KdvizError
from kdviz.logits import (  # the logit functions and cache live in kdviz.logits; re-exported here
    SHIPPED_LOGITS,  # noqa: F401
    _logit_cache_path,  # noqa: F401
    check_compatible,
    compute_logits,
    dataset_logits,
    model_logits,
)
from kdviz.losses import create_loss
from kdviz.models import (
    MAX_CLASSES,
    ModelCard,
    card_fingerprint,
    create_model,
    load_card,
    load_checkpoint,
    save_checkpoint,
)
from kdviz.paths import check_name, checkpoints_dir

StepCallback = Callable[[dict[str, Any]], None]
StopHook = Callable[[], bool]
StageCallback = Callable[[str, int, int], None]  # (stage, done, total): "teacher logits", 3, 12

AUGMENTATIONS = ("none", "jitter", "affine")
OPTIMIZERS = ("adamw", "sgd")
METHODS = ("kd", "mse", "dkd")
SCHEDULES = ("cosine", "constant")
DEVICE_TYPES = ("cpu", "cuda", "mps")
EXPLODED_LOSS = 1e4  # a logged loss above this ends the run as "diverged"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a hard-label training run; the CLI, the UI and the run store share it."""

    dataset: str = "mnist5k"  # dataset spec (see kdviz.data.list_datasets())
    arch: str = "mlp-800-800"  # model registry name (see kdviz.models.list_models())
    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # examples per optimiser step
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9, nesterov)
    weight_decay: float = 0.0  # decoupled (AdamW) or L2 (SGD) weight decay
    schedule: str = "cosine"  # "cosine" (decay to 0 over the run) or "constant"
    warmup_epochs: float = 0.0  # linear warm-up length, in epochs
    label_smoothing: float = 0.0  # Szegedy et al. 2016; erases dark knowledge (Müller et al. 2019)
    augment: str = "none"  # "none", "jitter" (shifts up to 2 px, Hinton's teacher) or "affine"
    dropout: float = 0.0  # hidden-layer dropout (models that take it)
    input_dropout: float = 0.0  # input dropout (MLPs only; Hinton's teacher used 0.2)
    seed: int = 0  # seeds weights, batch order and augmentation
    device: str = "auto"  # "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:1", "mps"
    eval_split: str = "val"  # split evaluated after every epoch ("val" or "test")
    train_split: str = "train"  # split trained on
    name: str = ""  # checkpoint name; "" makes one from the config
    out: str = ""  # checkpoint stem path; "" = KDVIZ_HOME/checkpoints/NAME
    log_every: int = 10  # steps between on_step calls (each one syncs the device)
    precision: str = "auto"  # "auto" (bf16 on CUDA GPUs that have it, else fp32), fp32, bf16, fp16

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @property
    def kind(self) -> str:
        return "train"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "omit_classes" in kwargs:
            kwargs["omit_classes"] = tuple(kwargs["omit_classes"])
        return cls(**kwargs)


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """A distillation run: a TrainConfig plus the teacher, the method and the transfer set."""

    teacher: str = "mnist5k-teacher"  # checkpoint ref (name, stem, or either file of the pair)
    method: str = "kd"  # "kd" (Hinton 2015), "mse" (logit matching) or "dkd" (Zhao et al. 2022)
    temperature: float = 4.0  # softmax temperature of the soft targets
    alpha: float = 0.9  # weight of the soft term (kd, mse); TCKD weight for dkd
    beta: float = 8.0  # NCKD weight (dkd only)
    transfer_fraction: float = 1.0  # fraction of the training split used as transfer set (seeded)
    omit_classes: tuple[int, ...] = ()  # class indices removed from the transfer set
    drop_labels: bool = False  # transfer set without hard labels: soft targets only

    @property
    def kind(self) -> str:
        return "distill"


@dataclass
class RunResult:
    """What a run returns: its status, a sentence, the final metrics and the per-epoch history."""

    status: str  # "done", "cancelled" or "diverged"
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str = ""
    device: str = "cpu"
    seconds: float = 0.0
    world_size: int = 1  # processes of a data-parallel (torchrun) run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- device


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" picks CUDA, then Apple's MPS, then the CPU; anything else is taken as asked."""
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name) if isinstance(name, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:  # "meta" has no data to compute on
        raise KdvizError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdvizError("CUDA was asked for but no CUDA GPU is visible; use --device auto or cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KdvizError("MPS was asked for but is not available here; use --device auto or cpu.")
    return device


def describe_device(device: torch.device) -> str:
    """A short human name: "CUDA (NVIDIA H200)", "MPS", "CPU (2 threads)"."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------- evaluation


def logit_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> dict[str, float]:
    """The standard measures on logits: accuracy, NLL, ECE (15 bins), and agreement / KL to a teacher."""
    out = {
        "n": int(len(labels)),
        "accuracy": soft.accuracy(logits, labels),
        "nll": soft.nll(logits, labels),
        "ece": soft.ece(logits, labels, n_bins=15),
    }
    if teacher_logits is not None:
        out["agreement"] = soft.agreement(teacher_logits, logits)
        out["kl"] = float(soft.kl_divergence(teacher_logits, logits, temperature).mean())
    return out


def evaluate(
    checkpoint: str | Path,
    dataset_spec: str | None,
    split: str = "test",
    teacher: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split: n, accuracy, nll, ece (+ agreement, kl with a teacher).

    A logits card or file needs no dataset when its labels are inside (see importers.evaluate_logits).
    """
    from kdviz.importers import evaluate_logits, is_logits_source

    if is_logits_source(checkpoint):
        return evaluate_logits(checkpoint, dataset_spec, split, teacher)
    if not dataset_spec:
        raise KdvizError(
            "Evaluating a model needs a dataset; give --dataset SPEC (kdviz list datasets)."
        )
    model, card = load_checkpoint(checkpoint)
    dataset = load_dataset(dataset_spec, split)
    logits = model_logits(model, card, dataset, fingerprint=card_fingerprint(checkpoint))
    teacher_logits = None
    if teacher is not None:
        teacher_logits = dataset_logits(teacher, dataset_spec, split)
    metrics = logit_metrics(logits, dataset.labels, teacher_logits)
    metrics.update(
        {
            "checkpoint": card.name,
            "dataset": dataset_spec,
            "split": split,
            "errors": _errors(metrics),
        }
    )
    if teacher is not None:
        metrics["teacher"] = str(teacher)
    summary = stats.accuracy_summary(logits, dataset.labels, dataset.class_names)
    metrics["accuracy_ci"] = summary["accuracy_ci"]  # [low, high], Wilson 95%
    metrics["per_class"] = summary["per_class"]  # [{class, name, n, accuracy, accuracy_ci, ...}]
    return metrics


def _errors(metrics: dict[str, Any]) -> int:
    return int(round(metrics["n"] * (1.0 - metrics["accuracy"])))


# ---------------------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Batched augmentation of images in [0, 1] (B, C, H, W): no per-sample Python.

    "jitter": integer shifts of up to 2 pixels each way (Hinton et al. 2012's MNIST jitter).
    "affine": rotation up to 12 degrees, scale 0.9-1.1, shear up to 0.15 and shifts up to 2 px.
    """
    if kind == "none":
        return x
    b, _, h, w = x.shape
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator, device=generator.device).to(dev) * (hi - lo) + lo

    if kind == "jitter":
        pad = 2
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device)
        rows = dy.to(dev)[:, None] + torch.arange(h, device=dev)  # (B, H)
        cols = dx.to(dev)[:, None] + torch.arange(w, device=dev)  # (B, W)
        batch = torch.arange(b, device=dev)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()
    if kind == "affine":
        angle = uniform(-12.0, 12.0) * math.pi / 180.0
        scale = uniform(0.9, 1.1)
        shear = uniform(-0.15, 0.15)
        tx = uniform(-2.0, 2.0) * 2.0 / w
        ty = uniform(-2.0, 2.0) * 2.0 / h
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin + shear * cos, tx], dim=1),
                torch.stack([sin, cos + shear * sin, ty], dim=1),
            ],
            dim=1,
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    raise KdvizError(f"Unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}.")


# ---------------------------------------------------------------------------- the loop


MAX_EPOCHS = 100_000  # more is a typo, not a plan; epochs * steps must stay a sane loop
MAX_BATCH_SIZE = 1 << 20
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; fit also seeds with seed + 7


def _whole(value: Any, what: str, lo: int, hi: int) -> None:
    if not (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and lo <= value <= hi
    ):
        raise KdvizError(f"{what} {value!r} is not valid; give a whole number from {lo} to {hi}.")


def _real(value: Any, what: str, rule: str, ok: Callable[[float], bool]) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and ok(float(value))):
        raise KdvizError(f"{what} {value!r} is not valid; give {rule}.")


def validate_config(cfg: TrainConfig) -> None:
    """Refuse a config the loop cannot run sensibly, with one sentence naming the field.

    fit() calls it before it reads or writes anything; the CLI and the app may call it earlier.
    Checks against the data (e.g. omitted class indices) happen in fit, once the data is loaded.
    """
    if cfg.name:
        check_name(cfg.name, "checkpoint name")
    if not isinstance(cfg.out, str):
        raise KdvizError(f"The checkpoint path {cfg.out!r} is not a string; give a path.")
    _whole(cfg.epochs, "epochs", 1, MAX_EPOCHS)
    _whole(cfg.batch_size, "batch size", 1, MAX_BATCH_SIZE)
    _whole(cfg.seed, "seed", 0, MAX_SEED)
    _whole(cfg.log_every, "log_every", 1, 1_000_000)
    _real(cfg.lr, "learning rate", "a positive finite number", lambda v: v > 0)
    _real(cfg.weight_decay, "weight decay", "a finite number >= 0", lambda v: v >= 0)
    _real(
        cfg.warmup_epochs,
        "warm-up epochs",
        f"a number from 0 to the number of epochs ({cfg.epochs})",
        lambda v: 0 <= v <= cfg.epochs,
    )
    _real(cfg.label_smoothing, "label smoothing", "a number in [0, 1)", lambda v: 0 <= v < 1)
    _real(cfg.dropout, "dropout", "a probability in [0, 1)", lambda v: 0 <= v < 1)
    _real(cfg.input_dropout, "input dropout", "a probability in [0, 1)", lambda v: 0 <= v < 1)
    for what, value, choices in (
        ("optimizer", cfg.optimizer, OPTIMIZERS),
        ("augmentation", cfg.augment, AUGMENTATIONS),
        ("schedule", cfg.schedule, SCHEDULES),
    ):
        if value not in choices:
            raise KdvizError(f"Unknown {what} {value!r}; choose one of {', '.join(choices)}.")
    # the device and the precision it can run, before a run is recorded or queued
    precision.resolve_precision(cfg.precision, pick_device(cfg.device))
    if isinstance(cfg, DistillConfig):
        _validate_distill(cfg)


def _validate_distill(cfg: DistillConfig) -> None:
    if cfg.method not in METHODS:
        raise KdvizError(f"Unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}.")
    _real(cfg.temperature, "temperature", "a positive finite number", lambda v: v > 0)
    if cfg.method == "dkd":  # Zhao et al. 2022 weigh TCKD by alpha and NCKD by beta, unbounded
        _real(cfg.alpha, "alpha (TCKD weight)", "a finite number >= 0", lambda v: v >= 0)
        _real(cfg.beta, "beta (NCKD weight)", "a finite number >= 0", lambda v: v >= 0)
    else:
        _real(cfg.alpha, "alpha", "a weight from 0 to 1", lambda v: 0 <= v <= 1)
    _real(cfg.transfer_fraction, "transfer fraction", "a number in (0, 1]", lambda v: 0 < v <= 1)
    for cls in cfg.omit_classes:
        _whole(cls, "omitted class", 0, MAX_CLASSES - 1)
    if not isinstance(cfg.teacher, str) or not cfg.teacher.strip():
        raise KdvizError("No teacher was given; name a teacher checkpoint.")


def _check_omitted_classes(cfg: TrainConfig, dataset: Dataset) -> None:
    """Omitted class indices must be classes of the dataset (checked once it is loaded)."""
    if not isinstance(cfg, DistillConfig):
        return
    k = dataset.num_classes
    for cls in cfg.omit_classes:
        if not 0 <= cls < k:
            raise KdvizError(
                f"The omitted class {cls} is not a class of {dataset.spec!r}, which has classes "
                f"0 to {k - 1}; give class indices from that range."
            )


def default_name(cfg: TrainConfig) -> str:
    """A readable checkpoint name made from the config, e.g. "mnist5k-mlp-800-800-kd-T4-s0"."""
    base = f"{cfg.dataset.split(':')[0]}-{cfg.arch}"
    if isinstance(cfg, DistillConfig):
        return f"{base}-{cfg.method}-T{cfg.temperature:g}-s{cfg.seed}"
    return f"{base}-hard-s{cfg.seed}"


def _transfer_indices(cfg: TrainConfig, labels: torch.Tensor) -> torch.Tensor:
    """Indices of the training examples used, after omitting classes and taking a seeded fraction."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    if isinstance(cfg, DistillConfig):
        for cls in cfg.omit_classes:
            keep &= labels != int(cls)
    idx = keep.nonzero().flatten()
    frac = cfg.transfer_fraction if isinstance(cfg, DistillConfig) else 1.0
    if frac < 1.0:
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        # stratified: the same fraction of every class, so tiny transfer sets keep all classes
        parts = []
        for cls in labels[idx].unique():
            members = idx[labels[idx] == cls]
            count = max(1, round(frac * len(members)))
            parts.append(members[torch.randperm(len(members), generator=gen)[:count]])
        idx = torch.cat(parts).sort().values
    if len(idx) == 0:
        raise KdvizError("The transfer set is empty; omit fewer classes or use a larger fraction.")
    return idx


def _make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in ("cuda", "cpu")
    if cfg.optimizer == "adamw":
        try:
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )


def _loss_kwargs(method: str, temperature: float, alpha: float, beta: float) -> dict[str, float]:
    if method == "kd":
        return {"temperature": temperature, "alpha": alpha}
    if method == "mse":
        return {"alpha": alpha}
    return {"temperature": temperature, "alpha": alpha, "beta": beta}


def make_train_step(model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer):
    """One optimiser step on a batch: (x, teacher_logits | None, y) -> the loss's dict of parts."""

    def step(x: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor, **extra):
        logits = model(x)  # (B, K)
        parts = loss_fn(logits, teacher_logits, y, **extra)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        return parts

    return step


def student_step_fn(
    model: nn.Module,
    method: str,
    *,
    temperature: float,
    alpha: float,
    beta: float,
    lr: float,
    device: torch.device,
):
    """The engine's distillation step for ``model`` as a callable (used by the speed benchmark)."""
    cfg = DistillConfig(method=method, temperature=temperature, alpha=alpha, beta=beta, lr=lr)
    loss_fn = create_loss(method, **_loss_kwargs(method, temperature, alpha, beta))
    return make_train_step(model, loss_fn, _make_optimizer(cfg, model, device))


def _lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if warm and step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _arch_kwargs(cfg: TrainConfig) -> dict[str, float]:
    kwargs = {}
    if cfg.dropout:
        kwargs["dropout"] = cfg.dropout
    if cfg.input_dropout:
        kwargs["input_dropout"] = cfg.input_dropout
    return kwargs


def _logits_table_teacher(cfg: DistillConfig) -> torch.Tensor:
    """A logits card as the teacher: its rows must be the training split's (N, K), as they are."""
    if cfg.augment != "none":
        raise KdvizError(
            "A logits-table teacher only has logits for the training images as they are; use --augment none."
        )
    return dataset_logits(cfg.teacher, cfg.dataset, cfg.train_split)


def fit(
    cfg: TrainConfig,
    *,
    on_step: StepCallback | None = None,
    on_epoch: StepCallback | None = None,
    should_stop: StopHook | None = None,
    save: bool = True,
    show_progress: bool = False,
    teacher_transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    sample_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_stage: StageCallback | None = None,
) -> RunResult:
    """Train (TrainConfig) or distill (DistillConfig) a student; returns a RunResult.

    Two hooks for KD on a fixed transfer set (the experiments lab uses them):
    ``teacher_transform(teacher_logits (N, K), labels (N,)) -> (N, K)`` rewrites the cached
    teacher logits of the whole training split once (top-k, shuffled non-targets, a virtual
    teacher...); ``sample_weight(teacher_logits, labels) -> (N,)`` weights the hard-label term
    (CWTM). The per-epoch evaluation always compares with the untransformed teacher.

    ``on_step`` gets {"step", "epoch", "loss", "kd_loss", "task_loss", "lr", "progress"} every
    ``cfg.log_every`` steps; ``on_epoch`` gets the evaluation metrics after every epoch; when
    ``should_stop()`` turns true the run stops between steps with status "cancelled". A non-finite
    loss ends the run with status "diverged". With ``save`` the checkpoint of every finished epoch is
    written atomically to ``cfg.out`` (or KDVIZ_HOME/checkpoints/NAME). ``on_stage(stage, done,
    total)`` names what runs before the first step: "loading data", "teacher logits" (images
    done of total), "training" (once, just before the first step).
    """
    validate_config(cfg)
    if teacher_transform is not None or sample_weight is not None:
        if not isinstance(cfg, DistillConfig) or cfg.method != "kd":
            raise KdvizError("Transformed soft targets need a DistillConfig with method 'kd'.")
        if cfg.augment != "none":
            raise KdvizError(
                "Transformed soft targets need a fixed transfer set; use augmentation 'none'."
            )
    started = time.perf_counter()
    device = pick_device(cfg.device)
    ddp = distributed.setup(device)  # under torchrun: this rank's process group and GPU
    device = ddp.device
    prec = precision.resolve_precision(cfg.precision, device)
    if not ddp.is_main:  # rank 0 alone writes checkpoints and reports
        save, show_progress, on_step, on_epoch, on_stage = False, False, None, None, None
    stage = on_stage or (lambda _stage, _done, _total: None)
    should_stop = ddp.wrap_stop(should_stop, cfg.log_every)
    torch.manual_seed(cfg.seed)
    distilling = isinstance(cfg, DistillConfig)

    stage("loading data", 0, 0)
    train_ds = load_dataset(cfg.dataset, cfg.train_split)
    eval_ds = load_dataset(cfg.dataset, cfg.eval_split)
    _check_omitted_classes(cfg, train_ds)
    idx = _transfer_indices(cfg, train_ds.labels)
    images01 = (train_ds.images[idx].float() / 255.0).to(device)  # (N, C, H, W) in [0, 1]
    labels = train_ds.labels[idx].to(device)  # (N,)
    if distilling and cfg.drop_labels:
        labels = torch.full_like(labels, -1)
    mean = torch.tensor(train_ds.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(train_ds.std, device=device).view(1, -1, 1, 1)
    augmented = cfg.augment != "none"
    x_student = None if augmented else (images01 - mean) / std  # normalised once when fixed

    model = create_model(cfg.arch, train_ds.num_classes, train_ds.in_shape, **_arch_kwargs(cfg))
    model.to(device)
    precision.prepare_model(model, prec)  # channels_last for conv models on CUDA

    ddp.main_first_begin()  # rank 0 fills the teacher-logit cache; the other ranks then read it
    teacher = teacher_card = teacher_logits_all = eval_teacher_logits = weights_all = None
    t_mean = t_std = streamed = None  # streamed: a sharded, memory-mapped teacher-logit cache
    if distilling:
        if load_card(cfg.teacher).kind == "logits":  # a table: no model, no eval-split logits
            raw = _logits_table_teacher(cfg)
        else:
            teacher, teacher_card = load_checkpoint(cfg.teacher, device=str(device))
            check_compatible(teacher_card, train_ds)
            t_print = card_fingerprint(cfg.teacher)
            # images done / total over both splits, for the "teacher logits n/N" stage
            todo = len(eval_ds) + (0 if augmented else len(train_ds))
            stage("teacher logits", 0, todo)
            eval_teacher_logits = model_logits(
                teacher, teacher_card, eval_ds, device=device, fingerprint=t_print,
                on_batch=lambda done, _n: stage("teacher logits", done, todo),
            )  # fmt: skip
            t_mean = torch.tensor(teacher_card.mean, device=device).view(1, -1, 1, 1)
            t_std = torch.tensor(teacher_card.std, device=device).view(1, -1, 1, 1)
            raw = None
            big = logit_cache.should_shard(len(train_ds), teacher_card.num_classes)
            if not augmented and big and teacher_transform is None and sample_weight is None:
                # too large to hold: shards on disk, each batch's rows read from them per step
                streamed = logit_cache.sharded_model_logits(
                    teacher, teacher_card, train_ds, device=device, fingerprint=t_print,
                    on_batch=lambda done, _n: stage("teacher logits", len(eval_ds) + done, todo),
                )  # fmt: skip
            elif not augmented:  # the transfer set is fixed: teacher logits once, cached on disk
                raw = model_logits(
                    teacher, teacher_card, train_ds, device=device, fingerprint=t_print,
                    on_batch=lambda done, _n: stage("teacher logits", len(eval_ds) + done, todo),
                )  # fmt: skip
        if raw is not None:
            teacher_logits_all = (
                teacher_transform(raw, train_ds.labels) if teacher_transform else raw
            )
            teacher_logits_all = teacher_logits_all[idx].to(device)  # (N, K)
            if sample_weight is not None:
                weights_all = sample_weight(raw, train_ds.labels)[idx].to(device).float()  # (N,)
        loss_fn = create_loss(
            cfg.method, **_loss_kwargs(cfg.method, cfg.temperature, cfg.alpha, cfg.beta)
        )
    else:
        smoothing = cfg.label_smoothing

        def loss_fn(student_logits, _teacher_logits, y):
            task = F.cross_entropy(student_logits, y, label_smoothing=smoothing)
            return {"loss": task, "task_loss": task, "kd_loss": torch.zeros((), device=y.device)}

    ddp.main_first_end()
    # named before the optimiser: building the first one imports torch._dynamo (seconds)
    stage("training", 0, math.ceil(len(labels) / cfg.batch_size) * cfg.epochs)
    optimizer = _make_optimizer(cfg, model, device)
    train_step = precision.make_train_step(
        ddp.wrap(model), loss_fn, optimizer, prec, loss_weight=ddp.loss_weight
    )
    n = len(labels)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    aug_gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 7)

    name = check_name(cfg.name or default_name(cfg), "checkpoint name")
    stem = Path(cfg.out) if cfg.out else checkpoints_dir() / name
    card = ModelCard(
        name=name,
        arch=cfg.arch,
        arch_kwargs=_arch_kwargs(cfg),
        num_classes=train_ds.num_classes,
        class_names=list(train_ds.class_names),
        in_shape=list(train_ds.in_shape),
        mean=list(train_ds.mean),
        std=list(train_ds.std),
        dataset=cfg.dataset,
        training={
            **cfg.to_dict(),
            "transfer_size": n,
            "device": str(device),
            "precision": prec.name,
            "world_size": ddp.world_size,
        },
        metrics={},
    )

    history: list[dict[str, Any]] = []
    result = RunResult(
        status="done",
        message="",
        device=describe_device(device) + ddp.describe(),
        world_size=ddp.world_size,
    )
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, desc=name, unit="step", leave=False)

    step = 0
    running = torch.zeros(3, device=device)  # loss, kd_loss, task_loss summed since last log
    running_count = 0
    stopped = False
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, cfg.batch_size):
            if should_stop is not None and should_stop():
                stopped = True
                break
            batch = order[start : start + cfg.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, step, total_steps, steps_per_epoch)
            y = labels[batch]
            if augmented:
                xb01 = augment_batch(images01[batch], cfg.augment, aug_gen)
                xb = (xb01 - mean) / std
            else:
                xb = x_student[batch]
            # data-parallel: this rank's slice, taken after augmenting the whole global batch
            batch, xb, y, xb01 = ddp.shard(batch, xb, y, xb01 if augmented else None)
            t_logits = None
            if distilling:
                if teacher_logits_all is not None:
                    t_logits = teacher_logits_all[batch]
                elif streamed is not None:  # training-split rows idx[batch] from the shards
                    t_logits = streamed.take(idx[batch.cpu()], device)
                else:
                    with torch.inference_mode(), prec.autocast():
                        t_logits = teacher((xb01 - t_mean) / t_std).float()
                    t_logits = t_logits.clone()
            extra = {} if weights_all is None else {"sample_weight": weights_all[batch]}
            parts = train_step(xb, t_logits, y, **extra)
            step += 1
            running += torch.stack(
                [parts["loss"].detach(), parts["kd_loss"].detach(), parts["task_loss"].detach()]
            )
            running_count += 1
            if progress is not None:
                progress.update(1)
            if step % cfg.log_every == 0 or step == total_steps:
                values = ddp.mean(running / running_count).tolist()  # the same on every rank
                running.zero_()
                running_count = 0
                # NaN/inf, or an exploded loss: AdamW with an absurd learning rate can stay
                # finite while the model is destroyed. Healthy CE/KD/MSE losses stay far below.
                exploded = values[0] > EXPLODED_LOSS
                if exploded or not all(math.isfinite(v) for v in values):
                    result.status = "diverged"
                    break
                if on_step is not None:
                    on_step(
                        {
                            "step": step,
                            "epoch": epoch - 1 + min(n, start + cfg.batch_size) / n,
                            "loss": values[0],
                            "kd_loss": values[1],
                            "task_loss": values[2],
                            "lr": optimizer.param_groups[0]["lr"],
                            "progress": step / total_steps,
                            "elapsed": time.perf_counter() - started,
                        }
                    )
        if result.status == "diverged" or stopped:
            break
        # end of epoch: evaluate on the eval split, save the epoch's checkpoint
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - epoch_start
        eval_logits = compute_logits(model, eval_ds.normalized(), device=device)
        if not torch.isfinite(eval_logits).all():
            result.status = "diverged"
            break
        metrics = logit_metrics(eval_logits, eval_ds.labels, eval_teacher_logits)
        metrics.update(
            {
                "epoch": epoch,
                "step": step,
                "elapsed": time.perf_counter() - started,
                "train_seconds": train_seconds,
                "images_per_s": n / train_seconds if train_seconds > 0 else 0.0,
                "split": cfg.eval_split,
            }
        )
        history.append(metrics)
        if save:
            card.metrics = {
                f"{cfg.eval_split}_{k}": v for k, v in metrics.items() if isinstance(v, float)
            }
            card.metrics["epochs_completed"] = epoch
            save_checkpoint(model, card, stem)
            result.checkpoint = str(stem)
        if on_epoch is not None:
            on_epoch(metrics)
    if progress is not None:
        progress.close()

    result.history = history
    result.metrics = history[-1] if history else {}
    result.seconds = time.perf_counter() - started
    if result.status == "diverged":
        result.message = (
            f"The loss became NaN, infinite or exploded at step {step}; lower the learning rate "
            f"(now {cfg.lr:g}) or the temperature and start again."
        )
    elif stopped:
        result.status = "cancelled"
        result.message = f"Cancelled at step {step} of {total_steps}."
    else:
        acc = result.metrics.get("accuracy", float("nan"))
        result.message = (
            f"Finished {cfg.epochs} epochs in {result.seconds:.1f} s; "
            f"{cfg.eval_split} accuracy {acc:.2%}."
        )
    if distilling and eval_teacher_logits is None and history:
        result.message += (
            f" Agreement and KL to the teacher are not shown: a logits-table teacher has no "
            f"logits for the {cfg.eval_split} split."
        )
    return result


def train(cfg: TrainConfig, **kwargs: Any) -> RunResult:
    """Hard-label training (optional label smoothing, augmentation, dropout). See ``fit``."""
    if isinstance(cfg, DistillConfig):
        raise KdvizError("train() takes a TrainConfig; use distill() for a DistillConfig.")
    return fit(cfg, **kwargs)


def distill(cfg: DistillConfig, **kwargs: Any) -> RunResult:
    """Distil a teacher (one checkpoint or an ensemble card) into a student. See ``fit``."""
    if not isinstance(cfg, DistillConfig):
        raise KdvizError("distill() takes a DistillConfig.")
    return fit(cfg, **kwargs)
