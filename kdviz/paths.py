"""Where kdviz reads and writes: the home folder (KDVIZ_HOME) and the shipped checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRETRAINED_DIR = REPO_ROOT / "pretrained"  # shipped checkpoints (an editable install keeps it)
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "_data"  # bundled offline data


def kdviz_home() -> Path:
    """The folder everything kdviz writes lives under: $KDVIZ_HOME, default ~/.kdviz."""
    home = Path(os.environ.get("KDVIZ_HOME") or Path.home() / ".kdviz").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _sub(name: str) -> Path:
    path = kdviz_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Downloaded datasets (torchvision's layout under it)."""
    return _sub("data")


def cache_dir() -> Path:
    """Cached logits, keyed by weights hash, dataset and split."""
    return _sub("cache")


def checkpoints_dir() -> Path:
    """Checkpoints the user trained (CLI or app) that are not tied to a run."""
    return _sub("checkpoints")


def runs_dir() -> Path:
    """Run artifacts, one folder per run id."""
    return _sub("runs")
