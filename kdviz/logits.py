"""A model's logits on a dataset: the batched computation and the on-disk cache keyed by weights,
data and split (plus the logit files shipped beside the pretrained teacher)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdviz.data import Dataset, load_dataset, normalize
from kdviz.errors import KdvizError
from kdviz.models import ModelCard, card_fingerprint, load_card, load_checkpoint, weights_hash
from kdviz.paths import PRETRAINED_DIR, cache_dir


@torch.inference_mode()
def compute_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on normalised float ``images`` (N, C, H, W), batched; returns (N, K) on CPU.

    ``on_batch(done, total)`` is called after each batch (a run's "teacher logits n/N" stage)."""
    if device is None:  # an OnnxModule has no parameters: it takes and gives CPU tensors
        device = next(model.parameters(), torch.empty(0)).device
    device = torch.device(device)
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        outs.append(model(batch).float().cpu())
        if on_batch is not None:
            on_batch(min(start + batch_size, len(images)), len(images))
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def check_compatible(card: ModelCard, dataset: Dataset) -> None:
    """Raise a KdvizError when a checkpoint cannot run on a dataset (class count or input shape)."""
    if card.num_classes != dataset.num_classes:
        raise KdvizError(
            f"Checkpoint {card.name!r} has {card.num_classes} classes but dataset "
            f"{dataset.spec!r} has {dataset.num_classes}; pick a checkpoint trained on this dataset."
        )
    if tuple(card.in_shape) != tuple(dataset.in_shape):
        raise KdvizError(
            f"Checkpoint {card.name!r} takes inputs of shape {tuple(card.in_shape)} but dataset "
            f"{dataset.spec!r} has {tuple(dataset.in_shape)}; pick a checkpoint trained on this dataset."
        )


def _dataset_fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    digest.update(dataset.images.numpy().tobytes())
    digest.update(dataset.labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def _logit_cache_path(fingerprint: str, card: ModelCard, dataset: Dataset) -> Path:
    key = {
        "weights": fingerprint,
        "arch": [card.kind, card.arch],
        "spec": dataset.spec,
        "split": dataset.split,
        "mean": list(card.mean),
        "std": list(card.std),
        "n": len(dataset),
    }
    if ":" in dataset.spec:  # folder:/idx: content can change under the same name
        key["data"] = _dataset_fingerprint(dataset)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "logits" / f"{name}.pt"


SHIPPED_LOGITS = PRETRAINED_DIR / "logits"  # cache files of the shipped teacher (same keys)


def _read_cached(path: Path, rows: int, classes: int) -> torch.Tensor | None:
    if not path.exists():
        # shipped with the pretrained checkpoints (scripts/ship_logits.py): a first run on the
        # bundled data trains within seconds instead of waiting for the teacher's logits
        path = SHIPPED_LOGITS / path.name
    if not path.exists():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except Exception:  # a torn cache file is rebuilt, never trusted
        return None
    return cached if tuple(cached.shape) == (rows, classes) else None


def model_logits(
    model: nn.Module,
    card: ModelCard,
    dataset: Dataset,
    *,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    fingerprint: str = "",
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits (N, K) of a loaded checkpoint on a dataset, cached on disk by weights hash, spec and split.

    ``fingerprint`` is card_fingerprint(ref) (the weights file's bytes); without one the key is
    the hash of the loaded model's own tensors, never the card's editable ``weights_sha256``,
    and a model without tensors (nothing to hash) is not cached.
    """
    check_compatible(card, dataset)
    if not fingerprint and model.state_dict():
        fingerprint = "state:" + weights_hash(model)
    use_cache = use_cache and bool(fingerprint)
    path = _logit_cache_path(fingerprint, card, dataset)
    cached = _read_cached(path, len(dataset), card.num_classes) if use_cache else None
    if cached is not None:
        return cached
    images = normalize(dataset.images, card.mean, card.std)
    logits = compute_logits(model, images, device=device, on_batch=on_batch)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(logits, tmp)
        tmp.replace(path)
    return logits


def dataset_logits(checkpoint: str | Path, dataset_spec: str, split: str = "test") -> torch.Tensor:
    """Logits (N, K) of a checkpoint on a dataset split, computed once and cached on disk.

    A cached lookup reads only the cards (their weights hashes), never the weights. A logits
    card gives its own table when its rows are that split's rows.
    """
    card = load_card(checkpoint)
    if card.kind == "logits":
        from kdviz.importers import source_logits

        return source_logits(checkpoint, dataset_spec, split)
    dataset = load_dataset(dataset_spec, split)
    check_compatible(card, dataset)
    fingerprint = card_fingerprint(checkpoint)  # the weights file's bytes, memoised
    cached = _read_cached(
        _logit_cache_path(fingerprint, card, dataset), len(dataset), card.num_classes
    )
    if cached is not None:
        return cached
    model, card = load_checkpoint(checkpoint)
    return model_logits(model, card, dataset, fingerprint=fingerprint)
