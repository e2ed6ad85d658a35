"""Numeric precision of a training step: fp32, bf16 or fp16 autocast, channels_last, fp32 losses.

The forward runs under ``torch.autocast`` (bf16 on CUDA GPUs that have it and on the CPU; fp16 on
CUDA with a grad scaler); the logits are cast to fp32 *before* the loss, so softmax at T, the KL,
the MSE and every metric are computed in fp32. An fp16 logit of 1e4 is finite, but its square,
or a sum of its exponentials, is not: mdistiller and torchdistill compute the loss on the autocast
logits and overflow there; ``make_train_step`` does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdviz.errors import KdvizError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what autocast does, whether a grad scaler and channels_last are used."""

    name: str  # "fp32", "bf16" or "fp16" (never "auto")
    device_type: str  # "cpu", "cuda", "mps"
    channels_last: bool = False  # NHWC convolutions (CUDA only: tensor cores want NHWC)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES.get(self.name, torch.float32)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's context: torch.autocast at this dtype, or nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16's loss scaler (gradients below 6e-8 vanish in fp16 without it); None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def check_precision_name(name: str) -> str:
    """``name`` when it is one of PRECISIONS; else the sentence that lists them."""
    if name not in PRECISIONS:
        raise KdvizError(f"Unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    return name


def resolve_precision(name: str, device: torch.device) -> Precision:
    """Turn a --precision value into a Precision for ``device``; refuse what the device cannot do.

    "auto" is bf16 on CUDA GPUs that support it (Ampere and later) and fp32 everywhere else; fp16
    is CUDA only (its grad scaler is a CUDA feature here), so on the CPU it is refused, not
    silently replaced: bf16 is the CPU's reduced precision.
    """
    check_precision_name(name)
    cuda = device.type == "cuda"
    if name == "auto":
        name = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and not cuda:
        raise KdvizError(
            f"fp16 training needs a CUDA GPU (it uses a grad scaler); on {device.type} use "
            "--precision bf16 or fp32."
        )
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise KdvizError("This GPU has no bfloat16 support; use --precision fp16 or fp32.")
    if name == "bf16" and device.type not in ("cpu", "cuda"):
        raise KdvizError(f"bf16 autocast is not offered on {device.type}; use --precision fp32.")
    return Precision(name=name, device_type=device.type, channels_last=cuda)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, precision: Precision) -> nn.Module:
    """Move a convolutional model to channels_last when the precision asks for it (CUDA); in place."""
    if precision.channels_last and has_conv(model):
        model.to(memory_format=torch.channels_last)
    return model


def fp32_logits(logits: torch.Tensor | None) -> torch.Tensor | None:
    """(B, K) logits in fp32 for the loss: a no-op on fp32 tensors, a cast on bf16 / fp16 ones."""
    return None if logits is None else logits.float()


def make_train_step(
    model: nn.Module,
    loss_fn: Callable[..., dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    *,
    loss_weight: Callable[[], float] | None = None,
) -> Callable[..., dict[str, torch.Tensor]]:
    """One optimiser step (x, teacher_logits | None, y) -> the loss's dict of parts, at a precision.

    The forward runs under autocast; the loss on fp32 logits. ``loss_weight()`` multiplies the
    loss that is back-propagated (not the parts returned): data-parallel training uses it to
    weigh a rank's shard by its size so that uneven shards still give the global batch's mean.
    A rank whose shard is empty back-propagates zero (DDP still needs every rank's gradients).
    """
    scaler = precision.grad_scaler()
    channels_last = precision.channels_last and has_conv(model)

    def step(x: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor, **extra: Any):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            logits = model(x)  # (B, K) in the autocast dtype
        logits = fp32_logits(logits)  # the loss, softmax at T and the KL in fp32
        if len(y):
            parts = loss_fn(logits, fp32_logits(teacher_logits), y, **extra)
            loss = parts["loss"]
        else:  # an empty shard of a tiny last batch: zero gradients, but still gradients
            loss = logits.sum() * 0.0
            parts = {"loss": loss, "kd_loss": loss, "task_loss": loss}
        if loss_weight is not None:
            loss = loss * loss_weight()
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        return parts

    return step
