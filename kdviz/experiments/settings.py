"""Settings every experiment shares: the size presets, the teacher settings, and the training
configs an experiment's runs are built from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from kdviz.engine import DistillConfig
from kdviz.errors import KdvizError
from kdviz.precision import check_precision_name

SIZES = ("tiny", "full")
SEED_STEP = 1000  # repeat i runs with seed + 1000 i (experiments use seed + g, + i inside)
SMOKE_TEST = "tiny is a smoke test; its numbers are noise"  # said wherever a tiny result shows


@dataclass(frozen=True)
class Settings:
    """What every experiment shares. A field left at None takes the value of the ``size`` preset."""

    dataset: str = "mnist5k"  # dataset spec (kdviz list datasets)
    size: str = "full"  # "tiny" (a few seconds, for tests) or "full" (the README numbers)
    epochs: int | None = None  # epochs of every student run (tiny 2, full 60)
    batch_size: int | None = None  # examples per optimiser step (tiny 256, full 128)
    lr: float = 1e-3  # peak learning rate (AdamW, cosine schedule)
    seed: int = 0  # seeds weights, batch order and every shuffle
    seeds: int | None = None  # repeats, with seed, seed + 1000, ...: tiny 1, full 3
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    precision: str = "auto"  # "auto" (bf16 autocast on a CUDA GPU that has it, else fp32), ...
    eval_split: str = "test"  # where results are reported; choices (a bias, a T) use "val" only

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"epochs": 2, "batch_size": 256, "seeds": 1},  # a smoke test: its numbers are noise
        "full": {"epochs": 60, "batch_size": 128, "seeds": 3},  # the shipped MLP students' recipe
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
        check_precision_name(out.precision)
        for f in dataclasses.fields(out):
            value = getattr(out, f.name)
            if (
                (f.name.endswith("epochs") or f.name == "seeds")
                and isinstance(value, int)
                and value < 1
            ):
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


# ---------------------------------------------------------------------------- training configs


def common_fields(s: Settings) -> dict[str, Any]:
    """The TrainConfig fields every run of an experiment shares."""
    return {
        "dataset": s.dataset,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "seed": s.seed,
        "device": s.device,
        "precision": s.precision,
        "eval_split": s.eval_split,
    }


def distill_config(s: Settings, arch: str, teacher: str, **changes: Any) -> DistillConfig:
    values = {
        **common_fields(s),
        "arch": arch,
        "teacher": teacher,
        "method": "kd",
        "temperature": getattr(s, "temperature", 4.0),
        "alpha": getattr(s, "alpha", 0.9),
    }
    values.update(changes)
    return DistillConfig(**values)


def hard_config(s: Settings, arch: str, teacher: str, **changes: Any) -> DistillConfig:
    """A hard-label twin of a student: alpha = 0, so the loss is CE on the labels alone, but it
    keeps the same transfer set and batch order and reports agreement with the teacher."""
    return distill_config(s, arch, teacher, alpha=0.0, **changes)
