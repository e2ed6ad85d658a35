"""Images per second of kdviz's distillation steps, fp32 against the fast paths, and the peak fraction.

    python benchmarks/gpu_speed.py --json [--device auto] [--steps 50] [--batches 256,1024]

Two students, each in several numeric paths, at each batch size, all in one run:

* ``mlp-800-800`` on mnist-shaped inputs (1 x 28 x 28, 10 classes) with cached teacher logits, the
  step of ``kdviz distill --dataset mnist5k``: ``fp32``, ``bf16`` (autocast) and, on CUDA, the
  same two captured in a CUDA graph (``+graph``: one launch per step instead of ~40);
* ``resnet20`` on CIFAR-shaped inputs (3 x 32 x 32) with ``teacher`` = a ``resnet56`` forward on
  every batch (what augmented transfer sets cost) or ``cached`` = teacher logits read from a table:
  ``fp32``, ``bf16`` and ``bf16+channels_last``.

Every step is ``kdviz.precision.make_train_step`` (autocast forward, fp32 KD loss, fused AdamW);
inputs are random tensors already on the device, gathered by random indices as ``engine.fit`` does.
``tflops`` counts the step's matmul and convolution FLOPs (``torch.utils.flop_counter``: teacher
forward, student forward and backward) and ``peak_fraction`` divides by this device's measured
``torch.mm`` peak: bf16 on a GPU, fp32 on a CPU. The figures say which machine they came from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as kdviz does; before torch starts OpenMP

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from kdviz.engine import describe_device, pick_device  # noqa: E402
from kdviz.losses import create_loss  # noqa: E402
from kdviz.models import create_model  # noqa: E402
from kdviz.precision import Precision, fp32_logits, make_train_step, prepare_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when loaded by path
from distill_speed import _sync, peak_gflops  # noqa: E402

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
CLASSES = 10
POOL = 8192  # at most this many distinct images on the device, batches drawn from them


def peak_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Best ``torch.mm`` rate on (size x size) matrices of ``dtype``, in TFLOP/s."""
    return peak_gflops(device, size, repeats, dtype) / 1e3


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    try:  # the engine's optimizer: fused AdamW where torch has it
        return torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-3)


def graph_step(
    model: nn.Module, loss_fn: Callable, prec: Precision, batch: int, in_shape: tuple, k: int
) -> Callable:
    """The whole train step (forward, fp32 loss, backward, AdamW) captured in one CUDA graph.

    The recipe of PyTorch's CUDA-graphs notes: static input buffers, a capturable optimizer,
    warm-up on a side stream, autocast without its weight cache. CUDA only.
    """
    device = next(model.parameters()).device
    # the documented graph-safe AdamW: capturable (its step count lives on the GPU), foreach
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)
    x = torch.zeros(batch, *in_shape, device=device)
    t = torch.zeros(batch, k, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def autocast() -> contextlib.AbstractContextManager:
        if prec.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=prec.dtype, cache_enabled=False)  # no cache in graphs

    def body() -> torch.Tensor:
        with autocast():
            logits = model(x)  # (B, K)
        loss = loss_fn(fp32_logits(logits), t, y)["loss"]
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = body()

    def step(xb: torch.Tensor, tb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        x.copy_(xb)
        t.copy_(tb)
        y.copy_(yb)
        graph.replay()
        return {"loss": static_loss}

    return step


def _case(
    device: torch.device,
    arch: str,
    in_shape: tuple,
    batch: int,
    path: str,
    teacher_arch: str | None,
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    """Time one (student, teacher mode, batch, numeric path) case; images/s, TFLOP/s."""
    torch.manual_seed(0)
    name, _, extra = path.partition("+")
    prec = Precision(name, device.type, channels_last=extra == "channels_last")
    student = prepare_model(create_model(arch, CLASSES, in_shape).to(device), prec)
    loss_fn = create_loss("kd", temperature=4.0, alpha=0.9)
    pool = min(POOL, 8 * batch)
    images = torch.randn(pool, *in_shape, device=device)  # (P, C, H, W)
    labels = torch.randint(0, CLASSES, (pool,), device=device)
    table = torch.randn(pool, CLASSES, device=device)  # cached teacher logits (P, K)
    teacher = None
    if teacher_arch is not None:
        teacher = prepare_model(create_model(teacher_arch, CLASSES, in_shape).to(device), prec)
        teacher.eval()
    if extra == "graph":
        step = graph_step(student, loss_fn, prec, batch, in_shape, CLASSES)
    else:
        step = make_train_step(student, loss_fn, _optimizer(student), prec)

    def one(idx: torch.Tensor) -> None:
        x = images[idx]
        if teacher is None:
            t = table[idx]
        else:  # the engine's teacher forward for augmented transfer sets
            if prec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), prec.autocast():
                t = teacher(x).float()
            t = t.clone()
        step(x, t, labels[idx])

    gen = torch.Generator().manual_seed(1)
    order = [torch.randint(0, pool, (batch,), generator=gen).to(device) for _ in range(8)]
    for i in range(warmup):
        one(order[i % 8])
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        one(order[i % 8])
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {
        "student": arch,
        "teacher": teacher_arch or "cached",
        "batch": batch,
        "path": path,
        "step_ms": round(seconds * 1e3, 3),
        "steps_per_s": round(1 / seconds, 1),
        "images_per_s": round(batch / seconds, 1),
        "_seconds": seconds,
    }


def _count_flops(arch: str, in_shape: tuple, teacher_arch: str | None, batch: int) -> float:
    """Matmul + conv FLOPs of one step at ``batch``, counted on the CPU at batch 2 and scaled."""
    small = 2
    student = create_model(arch, CLASSES, in_shape)
    step = make_train_step(
        student,
        create_loss("kd", temperature=4.0, alpha=0.9),
        torch.optim.AdamW(student.parameters()),
        Precision("fp32", "cpu"),
    )
    x = torch.randn(small, *in_shape)
    with FlopCounterMode(display=False) as counter:
        if teacher_arch is not None:
            with torch.no_grad():
                t = create_model(teacher_arch, CLASSES, in_shape).eval()(x)
        else:
            t = torch.randn(small, CLASSES)
        step(x, t, torch.zeros(small, dtype=torch.long))
    return counter.get_total_flops() * batch / small


def _paths(device: torch.device, conv: bool) -> list[str]:
    bf16 = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    paths = ["fp32"] + (["bf16"] if bf16 else [])
    if conv and bf16:
        paths.append("bf16+channels_last")
    if not conv and device.type == "cuda":
        paths += ["fp32+graph"] + (["bf16+graph"] if bf16 else [])
    return paths


def run(
    device: torch.device,
    batches: list[int],
    steps: int,
    warmup: int,
    peak_size: int,
    students: set[str],
) -> dict[str, Any]:
    gpu = device.type == "cuda"
    peak_dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    peak = peak_tflops(device, peak_dtype, peak_size)
    setups = [("mlp-800-800", MNIST, None)] if "mlp" in students else []
    if "resnet20" in students:
        setups += [("resnet20", CIFAR, "resnet56"), ("resnet20", CIFAR, None)]
    cases = []
    for arch, in_shape, teacher in setups:
        for batch in batches:
            flops = _count_flops(arch, in_shape, teacher, batch)
            for path in _paths(device, conv=arch.startswith("resnet")):
                case = _case(device, arch, in_shape, batch, path, teacher, steps, warmup)
                case["step_gflop"] = round(flops / 1e9, 6)
                case["tflops"] = round(flops / case.pop("_seconds") / 1e12, 4)
                case["peak_fraction"] = round(case["tflops"] / peak, 4)
                cases.append(case)
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "device": describe_device(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "steps": steps,
        "peak_dtype": str(peak_dtype).removeprefix("torch."),
        "peak_tflops": round(peak, 3),
        "cases": cases,
        "speedups": _speedups(cases),
    }


def _speedups(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best path over fp32, per (student, teacher, batch)."""
    out = []
    keys = sorted({(c["student"], c["teacher"], c["batch"]) for c in cases})
    for key in keys:
        group = [c for c in cases if (c["student"], c["teacher"], c["batch"]) == key]
        fp32 = next(c for c in group if c["path"] == "fp32")
        best = max(group, key=lambda c: c["images_per_s"])
        out.append(
            {
                "student": key[0],
                "teacher": key[1],
                "batch": key[2],
                "best_path": best["path"],
                "images_per_s": best["images_per_s"],
                "speedup_vs_fp32": round(best["images_per_s"] / fp32["images_per_s"], 2),
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per case first")
    parser.add_argument("--batches", default="256,1024", help="comma-separated batch sizes")
    parser.add_argument("--peak-size", type=int, default=0, help="matmul side for the peak")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument(
        "--students", default="mlp,resnet20", help="comma-separated: mlp (2 x 800), resnet20"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    students = {s.strip() for s in args.students.split(",")}
    if not students <= {"mlp", "resnet20"} or not batches:
        parser.error("--students takes mlp and/or resnet20; --batches at least one size")
    result = run(device, batches, max(1, args.steps), max(1, args.warmup), peak_size, students)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['device']} | peak {result['peak_tflops']} TFLOP/s {result['peak_dtype']}")
        for c in result["cases"]:
            print(
                f"{c['student']:>12} teacher={c['teacher']:<9} B={c['batch']:<5} {c['path']:<20}"
                f" {c['images_per_s']:>10.0f} img/s {c['steps_per_s']:>8.1f} steps/s"
                f"  {c['peak_fraction']:.3f} of peak"
            )
    return result


if __name__ == "__main__":
    main()
