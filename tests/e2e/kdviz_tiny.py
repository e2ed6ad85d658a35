"""Tiny checkpoints for the UI tests: two MLPs trained for a few steps on `digits` (seconds on CPU).

Deliberately a plain loop (not kdviz.engine), so UI tests do not depend on the training code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from kdviz import data, models

TEACHER, STUDENT = "tiny-teacher", "tiny-student"


def train_briefly(arch: str, dataset: data.Dataset, steps: int, seed: int) -> torch.nn.Module:
    """A model of ``arch`` after ``steps`` Adam steps on random batches of 128 (seeded)."""
    torch.manual_seed(seed)
    model = models.create_model(arch, dataset.num_classes, dataset.in_shape)
    x, y = dataset.normalized(), dataset.labels
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(y), (128,), generator=gen)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def make_tiny_checkpoints(folder: Path, spec: str = "digits") -> dict[str, Path]:
    """Train and save TEACHER (mlp-64-64, 150 steps) and STUDENT (mlp-8, 40 steps) under folder."""
    folder.mkdir(parents=True, exist_ok=True)
    train = data.load_dataset(spec, "train")
    out = {}
    for name, arch, steps, seed in ((TEACHER, "mlp-64-64", 150, 0), (STUDENT, "mlp-8", 40, 1)):
        model = train_briefly(arch, train, steps, seed)
        card = models.ModelCard(
            name=name,
            arch=arch,
            num_classes=train.num_classes,
            class_names=list(train.class_names),
            in_shape=list(train.in_shape),
            mean=list(train.mean),
            std=list(train.std),
            dataset=spec,
            training={"steps": steps, "note": "tiny test checkpoint"},
        )
        out[name] = models.save_checkpoint(model, card, folder / name)
    return out


def copy_checkpoints(source: Path, target: Path) -> None:
    """Copy every checkpoint file (json, safetensors) from source into target."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.suffix in (".json", ".safetensors", ".pt"):
            shutil.copy2(file, target / file.name)
