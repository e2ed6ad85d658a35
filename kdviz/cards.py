"""The checkpoint card (``STEM.json``): what travels with the weights, and its validation.

No torch here: the app reads cards (pickers, compatibility, the sidebar) before anything needs a
model, and ``kdviz.models`` re-exports every name for the code that imports them from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kdviz import __version__
from kdviz.errors import KdvizError

# Bounds a card (and kdviz.models' create_model) is checked against before anything is allocated.
MAX_CLASSES = 100_000
MAX_CHANNELS = 64
MAX_PIXELS = 4096 * 4096  # H * W of one input image
MAX_INPUT_VALUES = 1 << 26  # C * H * W: 256 MB as float32 for one image
MIN_STD = 1e-6  # per-channel std on the [0, 1] scale; smaller divides pixels into inf


def _in_shape_problem(values: list[int]) -> str:
    """Which size limit a (C, H, W) breaks, or "" when it is within all of them."""
    c, h, w = values
    if c > MAX_CHANNELS:
        return f"more than {MAX_CHANNELS} channels"
    if h * w > MAX_PIXELS:
        return f"more than {MAX_PIXELS:,} pixels (4096 x 4096)"
    if c * h * w > MAX_INPUT_VALUES:
        return f"more than {MAX_INPUT_VALUES:,} values (C x H x W)"
    return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# "onnx": NAME.onnx run by onnxruntime; "logits": NAME.npz, a table computed elsewhere (no model)
CARD_KINDS = ("model", "ensemble", "onnx", "logits")


@dataclass
class ModelCard:
    """What travels with the weights (the JSON card); see DESIGN.md "Checkpoints"."""

    name: str = ""  # display name; empty -> the file stem
    arch: str = ""  # registry name for create_model, e.g. "mlp-1200-1200"; "ensemble" for ensembles
    arch_kwargs: dict = field(default_factory=dict)  # extra create_model arguments, e.g. dropout
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)  # empty -> "0", "1", ...
    in_shape: list[int] = field(default_factory=list)  # [C, H, W]
    mean: list[float] = field(default_factory=list)  # per-channel normalisation, [0, 1] scale
    std: list[float] = field(default_factory=list)
    dataset: str = ""  # dataset spec it was trained on, e.g. "mnist5k"
    training: dict = field(default_factory=dict)  # the training / distillation config
    metrics: dict = field(default_factory=dict)  # e.g. {"test_accuracy": 0.99}
    created: str = field(default_factory=_now_iso)  # ISO 8601, UTC
    kdviz_version: str = __version__
    kind: str = "model"  # "model" | "ensemble" | "onnx" | "logits" (see CARD_KINDS)
    members: list[str] = field(default_factory=list)  # ensemble: member stems, relative to the card
    weights_sha256: str = ""  # weights_hash() of the saved model, filled by save_checkpoint
    extra: dict = field(default_factory=dict)  # unknown card keys, kept so they round-trip

    def __post_init__(self) -> None:
        # Tuples (e.g. Dataset.in_shape) become lists and numpy scalars plain numbers, so a card
        # equals its JSON round trip; validate() judges the values.
        for name in ("class_names", "in_shape", "mean", "std", "members"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
        if _is_int(self.num_classes):
            self.num_classes = int(self.num_classes)
        if isinstance(self.in_shape, list):
            self.in_shape = [int(v) if _is_int(v) else v for v in self.in_shape]
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, list):
                setattr(self, name, [float(v) if _is_real(v) else v for v in values])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the keys of ``extra`` sit at the top level, as they were read."""
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        out = {k: v for k, v in self.extra.items() if k not in data}
        out.update(json.loads(json.dumps(data, default=str)))  # a deep copy that is surely JSON
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Validate a card dict; unknown keys are kept in ``extra``; problems raise KdvizError."""
        if not isinstance(data, dict):
            raise KdvizError("The checkpoint card is not a JSON object; re-save the checkpoint.")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kind = data.get("kind", "model")
        required = ["num_classes", "in_shape", "mean", "std"]
        required += ["members"] if kind == "ensemble" else ["arch"]
        missing = [key for key in required if key not in data]
        if missing:
            raise KdvizError(
                f"The checkpoint card lacks the field(s) {', '.join(missing)}; add them or re-save the checkpoint."
            )
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.extra = {k: v for k, v in data.items() if k not in known}
        if not card.arch and kind == "ensemble":
            card.arch = "ensemble"
        card.validate()
        if not card.class_names:
            card.class_names = [str(i) for i in range(card.num_classes)]
        return card

    def validate(self) -> None:
        """Raise KdvizError naming the first field with a wrong type or value."""

        def bad(field_name: str, what: str) -> KdvizError:
            value = repr(getattr(self, field_name))
            value = value if len(value) <= 80 else value[:77] + "..."
            return KdvizError(
                f"The checkpoint card field {field_name!r} is {value}, which is not {what}; fix the card or re-save the checkpoint."
            )

        for name in ("name", "arch", "dataset", "created", "kdviz_version", "weights_sha256"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, "a string")
        for name in ("arch_kwargs", "training", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "a JSON object")
        if self.kind not in CARD_KINDS:
            raise bad("kind", " or ".join(f'"{kind}"' for kind in CARD_KINDS))
        if self.kind == "model" and not self.arch:
            raise bad("arch", "a model name")
        k = self.num_classes
        if not _is_int(k) or not 1 <= k <= MAX_CLASSES:
            raise bad("num_classes", f"a whole number from 1 to {MAX_CLASSES:,} (the limit)")
        shape = self.in_shape
        # a logits table came without images: its shape and normalisation may be unknown
        no_images = self.kind == "logits" and shape == [] and self.mean == [] and self.std == []
        if no_images:
            pass
        elif not (
            isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v > 0 for v in shape)
        ):
            raise bad("in_shape", "a list of three positive integers [C, H, W]")
        elif _in_shape_problem(shape):
            raise bad("in_shape", f"within kdviz's limits ({_in_shape_problem(shape)})")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not no_images and not (
                isinstance(values, list)
                and len(values) == shape[0]
                and all(_is_real(v) and math.isfinite(v) for v in values)
            ):
                raise bad(name, f"a list of {shape[0]} number(s), one per channel")
        if any(v < MIN_STD for v in self.std):  # (x - mean) / 1e-300 is inf: NaN logits
            raise bad("std", f"all at least {MIN_STD:g}")
        names = self.class_names
        if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
            raise bad("class_names", "a list of strings")
        if names and len(names) != k:
            raise bad("class_names", f"{k} names (num_classes)")
        members = self.members
        if not isinstance(members, list) or not all(isinstance(v, str) and v for v in members):
            raise bad("members", "a list of checkpoint names")
