"""How fast is a kdviz distillation epoch, against a naive loop and against this machine's peak?

    python benchmarks/distill_speed.py [--json] [--epochs 3] [--device auto]
    python benchmarks/distill_speed.py --step-only --repeat 5   # peak_fraction alone, 5 times

One run measures, on ``mnist5k`` with the same teacher, the same 2 x 800 student and the same batch
size (256):

* ``kdviz_epoch_s``: a steady-state epoch of ``kdviz.engine.fit`` (data on the device as tensors,
  teacher logits cached, fused optimizer step);
* ``naive_epoch_s``: the loop written the common way: a torchvision-style ``Dataset`` with
  per-sample PIL -> ``ToTensor`` -> ``Normalize`` transforms, a ``DataLoader``, the teacher's
  forward pass on every batch, a plain ``Adam``;
* ``peak_gflops``: ``torch.mm`` on large square float32 matrices, best of several;
* ``student_gflops``: the matmul FLOPs of the student's training step at batch 256 (forward,
  weight gradients, input gradients of all but the first layer) over the time of kdviz's step.

``speedup_vs_naive`` = naive / kdviz epoch time; ``peak_fraction`` = student / peak GFLOP/s.
Ratios within one run, so they hold on any machine; the absolute numbers say which machine it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from kdviz.data import load_dataset
from kdviz.engine import DistillConfig, fit, pick_device, student_step_fn
from kdviz.losses import kd_loss
from kdviz.models import create_model, load_checkpoint
from kdviz.paths import PRETRAINED_DIR

BATCH = 256
HIDDEN = (800, 800)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gflops(
    device: torch.device,
    size: int = 2048,
    repeats: int = 10,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Best ``torch.mm`` rate on (size x size) matrices of ``dtype``, in GFLOP/s."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _teacher_ref() -> str:
    stem = PRETRAINED_DIR / "mnist5k-teacher"
    if not stem.with_suffix(".json").exists():
        sys.exit("benchmarks need the shipped teacher: run `make pretrained` first.")
    return str(stem)


def kdviz_epoch_seconds(device: torch.device, epochs: int) -> float:
    """Median steady-state epoch time of kdviz's own loop (first epoch excluded)."""
    cfg = DistillConfig(
        dataset="mnist5k",
        arch="mlp-800-800",
        teacher=_teacher_ref(),
        temperature=20.0,
        epochs=epochs + 1,
        batch_size=BATCH,
        device=str(device),
        log_every=10_000,
    )
    stamps: list[float] = []
    fit(cfg, save=False, on_epoch=lambda m: stamps.append(m["train_seconds"]))
    return statistics.median(stamps[1:])


class _NaiveMnist(torch.utils.data.Dataset):
    """The common way: PIL images, transformed one sample at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        from PIL import Image

        self.images = [Image.fromarray(img[0].numpy(), mode="L") for img in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def naive_epoch_seconds(device: torch.device, epochs: int) -> float:
    from torchvision import transforms

    ds = load_dataset("mnist5k", "train")
    teacher, card = load_checkpoint(_teacher_ref(), device=str(device))
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(card.mean, card.std)]
    )
    loader = torch.utils.data.DataLoader(
        _NaiveMnist(ds.images, ds.labels, transform), batch_size=BATCH, shuffle=True
    )
    student = create_model("mlp-800-800", ds.num_classes, ds.in_shape).to(device)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs + 1):
        _sync(device)
        start = time.perf_counter()
        student.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t_logits = teacher(x)
            loss = kd_loss(student(x), t_logits, y, temperature=20.0, alpha=0.9)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def student_step_gflops(device: torch.device, steps: int = 60) -> tuple[float, float]:
    """(achieved GFLOP/s, FLOPs per step) of kdviz's student training step at batch 256."""
    ds = load_dataset("mnist5k", "train")
    k = ds.num_classes
    x = ds.normalized().to(device)
    y = ds.labels.to(device)
    teacher_logits = torch.randn(len(ds), k, device=device)
    student = create_model("mlp-800-800", k, ds.in_shape).to(device)
    step = student_step_fn(
        student, "kd", temperature=20.0, alpha=0.9, beta=8.0, lr=1e-3, device=device
    )
    sizes = [x[0].numel(), *HIDDEN, k]
    fwd = sum(2 * BATCH * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    input_grads = sum(2 * BATCH * a * b for a, b in zip(sizes[1:-1], sizes[2:], strict=False))
    flops = 2 * fwd + input_grads  # forward + weight grads (= forward) + input grads of layers 2..L
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(ds), (BATCH,), generator=gen).to(device) for _ in range(steps)]
    for b in batches[:10]:
        step(x[b], teacher_logits[b], y[b])
    _sync(device)
    start = time.perf_counter()
    for b in batches:
        step(x[b], teacher_logits[b], y[b])
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    return flops / seconds / 1e9, flops


def step_only(device: torch.device, repeat: int, as_json: bool) -> None:
    """``peak_fraction`` measured ``repeat`` times (the peak before and after each step timing)."""
    fractions = []
    for _ in range(repeat):
        peak = peak_gflops(device)
        student_gflops, _ = student_step_gflops(device, steps=100)
        fractions.append(student_gflops / max(peak, peak_gflops(device)))
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "peak_fraction": [round(f, 3) for f in fractions],
        "median": round(statistics.median(fractions), 3),
    }
    print(json.dumps(result) if as_json else result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--step-only", action="store_true", help="only peak_fraction (the step vs torch.mm peak)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="with --step-only: measurements")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    if args.step_only:
        step_only(device, args.repeat, args.json)
        return
    peak = peak_gflops(device)
    student_gflops, flops = student_step_gflops(device)
    kdviz_s = kdviz_epoch_seconds(device, args.epochs)
    naive_s = naive_epoch_seconds(device, args.epochs)
    peak_after = peak_gflops(device)
    result = {
        "device": str(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "kdviz_epoch_s": round(kdviz_s, 4),
        "naive_epoch_s": round(naive_s, 4),
        "speedup_vs_naive": round(naive_s / kdviz_s, 2),
        "peak_gflops": round(max(peak, peak_after), 1),
        "student_gflops": round(student_gflops, 1),
        "student_step_gflop": round(flops / 1e9, 3),
        "peak_fraction": round(student_gflops / max(peak, peak_after), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
