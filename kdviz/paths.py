"""Where kdviz reads and writes: the home folder (KDVIZ_HOME) and the shipped checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from kdviz.errors import KdvizError

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


_MAX_NAME = 120  # characters; a name becomes one file or folder name


def check_name(name: str, what: str = "name") -> str:
    """A user-chosen name that becomes ONE file or folder name under KDVIZ_HOME, or KdvizError.

    Names are names, not paths: no path separators, no "..", no leading dot, no control
    characters, at most 120 characters. Returns the name stripped of surrounding spaces.
    """
    text = name.strip() if isinstance(name, str) else ""
    bad = (
        not text
        or len(text) > _MAX_NAME
        or "/" in text
        or "\\" in text
        or ".." in text
        or text.startswith(".")
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
    )
    if bad:
        raise KdvizError(
            f"The {what} {name!r} is not a plain name; use letters, digits, '-', '_' or '.' "
            f"(no '/', no '..', not starting with '.', at most {_MAX_NAME} characters)."
        )
    return text
