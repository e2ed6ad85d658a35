"""Data-parallel training on torchrun: DistributedDataParallel, NCCL on GPUs and gloo on the CPU.

``torchrun --nproc_per_node N -m kdviz distill ...`` starts N copies of the command; each finds
WORLD_SIZE, RANK and LOCAL_RANK in its environment and ``engine.fit`` calls ``setup``. Every rank
draws the same seeded permutation and takes its contiguous slice of every global batch, so N
processes with batch B take the same optimiser steps as one process with batch B: the loss of a
slice is weighted by its size (``DistContext.step_weight``), which makes the gradient that DDP
averages the global batch's mean even when the last batch does not split evenly. Rank 0 alone
computes the teacher-logit cache (the others wait, then read it), writes checkpoints and the run
store, and prints. No transport or scheduler of our own: rendezvous, restarts and multi-node are
torchrun's.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kdviz.errors import KdvizError


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it; 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def env_rank() -> int:
    """RANK as torchrun sets it; 0 outside torchrun."""
    return int(os.environ.get("RANK") or 0)


def is_main_process() -> bool:
    """True on rank 0 and outside torchrun: the process that records, saves and prints."""
    return env_rank() == 0


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous slice of n items; slice sizes differ by at most one."""
    q, r = divmod(n, world_size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


@dataclass
class DistContext:
    """This process's place in a data-parallel run; world_size 1 makes every method a no-op."""

    device: torch.device
    world_size: int = 1
    rank: int = 0
    step_weight: float = 1.0  # this rank's slice size * world_size / global batch size

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor, *tensors: torch.Tensor | None) -> tuple:
        """This rank's slice of a global batch: (batch indices (b,), *tensors (b, ...)).

        Sets ``step_weight`` so that the weighted local mean losses, averaged by DDP, give the
        global batch's mean loss: sum_r (n_r W / B) * mean_r / W = sum_r n_r mean_r / B.
        """
        if not self.active:
            return (batch, *tensors)
        start, stop = shard_bounds(len(batch), self.world_size, self.rank)
        self.step_weight = (stop - start) * self.world_size / max(1, len(batch))
        return tuple(None if t is None else t[start:stop] for t in (batch, *tensors))

    @property
    def loss_weight(self) -> Callable[[], float] | None:
        """The train step's loss multiplier (this step's ``step_weight``); None when not distributed."""
        return (lambda: self.step_weight) if self.active else None

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the optimiser steps through: DDP when distributed, the model itself if not."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(sync_batchnorm(model, self.device), device_ids=ids)

    def barrier(self) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def main_first_begin(self) -> None:
        """Start of a block rank 0 runs first (it fills the disk caches the others then read)."""
        if not self.is_main:
            self.barrier()

    def main_first_end(self) -> None:
        """End of that block: rank 0 lets the others in."""
        if self.is_main:
            self.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (logged losses), identical on every rank."""
        if not self.active:
            return values
        import torch.distributed as dist

        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def wrap_stop(self, hook: Callable[[], bool] | None, every: int) -> Callable[[], bool] | None:
        """A stop hook every rank calls at the same steps; rank 0's answer, shared every ``every``.

        Only rank 0 has the run store's cancel flag; the others must stop at the same step, or
        they would wait forever in DDP's gradient all-reduce.
        """
        if not self.active:
            return hook
        import torch.distributed as dist

        calls = 0

        def stop() -> bool:
            nonlocal calls
            calls += 1
            if calls % max(1, every):
                return False
            asked = bool(hook is not None and hook())
            flag = torch.tensor([1.0 if asked else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        return stop

    def describe(self) -> str:
        """ ", 2 processes" for a distributed run, "" otherwise (appended to the device name)."""
        return f", {self.world_size} processes" if self.active else ""


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """On GPUs, BatchNorm layers become SyncBatchNorm: statistics over the global batch, not each
    rank's slice (with 8 GPUs a batch of 256 leaves 32 images per slice). Converted in place, so
    the caller's reference (evaluated, saved) holds the same layers; the state dict keys do not
    change. On the CPU (gloo) torch has no SyncBatchNorm, so statistics stay per slice there."""
    if device.type != "cuda" or not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        return model
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if converted is not model:  # only when the model itself is a bare BatchNorm layer
        raise KdvizError(
            "A model that is a single BatchNorm layer cannot be trained data-parallel."
        )
    return model


def setup(device: torch.device) -> DistContext:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on the CPU).

    On CUDA each rank takes the GPU numbered LOCAL_RANK (CUDA_VISIBLE_DEVICES picks the set).
    Outside torchrun this returns a context whose methods do nothing.
    """
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if env_world_size() <= 1 and not initialized:
        return DistContext(device=device)
    if not dist.is_available():
        raise KdvizError("This PyTorch build has no torch.distributed; run one process.")
    if device.type not in ("cpu", "cuda"):
        raise KdvizError(
            f"Data-parallel runs use CUDA GPUs (NCCL) or the CPU (gloo), not {device.type}; "
            "use --device cuda or --device cpu."
        )
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK") or 0)
        if local >= torch.cuda.device_count():
            raise KdvizError(
                f"Local rank {local} has no GPU ({torch.cuda.device_count()} visible); start at "
                "most one process per GPU (--nproc_per_node)."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not initialized:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(shutdown)
    return DistContext(device=device, world_size=dist.get_world_size(), rank=dist.get_rank())


def shutdown() -> None:
    """Leave the process group (torchrun's workers should, before they exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Leave together: rank 0 hosts the rendezvous store, and a rank still tearing down when
        # rank 0's process exits aborts ("terminate called without an active exception").
        with contextlib.suppress(Exception):  # a peer that died already: leave anyway
            dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- --nproc


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun line that runs ``kdviz ARGV`` on ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "kdviz",
        *argv,
    ]


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """argv without ``OPTION VALUE`` / ``OPTION=VALUE`` (the --nproc the relaunch consumes)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``kdviz ARGV`` (without --nproc) under torchrun on nproc local processes; its exit code."""
    if nproc < 1:
        raise KdvizError("--nproc must be at least 1.")
    if env_world_size() > 1:
        raise KdvizError("--nproc starts torchrun itself; drop it when you launch with torchrun.")
    cmd = torchrun_command(nproc, strip_option(argv, "--nproc"))
    return subprocess.call(cmd)
