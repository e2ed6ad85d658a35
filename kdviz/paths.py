"""Where kdviz reads and writes: the home folder (KDVIZ_HOME) and the shipped checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from kdviz.errors import KdvizError

REPO_ROOT = Path(__file__).resolve().parent.parent
PRETRAINED_DIR = REPO_ROOT / "pretrained"  # shipped checkpoints (an editable install keeps it)
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "_data"  # bundled offline data
# set by `kdviz app`: the os.pathsep-separated folders the browser may read (kdviz.data checks)
DATA_ROOTS_ENV = "KDVIZ_DATA_ROOTS"


def kdviz_home() -> Path:
    """The folder everything kdviz writes lives under: $KDVIZ_HOME, default ~/.kdviz."""
    home = Path(os.environ.get("KDVIZ_HOME") or Path.home() / ".kdviz").expanduser()
    make_folder(home, "KDVIZ_HOME")
    return home


def _sub(name: str) -> Path:
    path = kdviz_home() / name
    make_folder(path, f"kdviz's {name} folder")
    return path


def make_folder(path: Path, what: str) -> None:
    """mkdir -p, or a KdvizError that says why not: a file in the way, read-only, no space."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file (or a dangling link) where the folder belongs
        raise KdvizError(
            f"{what} {path} is a file, not a folder; move the file aside or set KDVIZ_HOME to a folder."
        ) from err
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise KdvizError(
            f"{what} {path} cannot be created ({getattr(err, 'strerror', None) or err}); "
            "set KDVIZ_HOME to a writable folder."
        ) from err
    if not path.is_dir():
        raise KdvizError(
            f"{what} {path} is not a folder; move it aside or set KDVIZ_HOME to a folder."
        )


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


LOW_SPACE_BYTES = 1024**2  # less free space than this on a folder's disk counts as full


def storage_problem(folder: str | Path) -> str:
    """ "read-only", "full" (under LOW_SPACE_BYTES free) or "" for the file system of folder."""
    folder = Path(folder)
    try:
        vfs = os.statvfs(folder)
    except OSError:
        return ""
    if vfs.f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK):
        return "read-only"
    if vfs.f_bavail * vfs.f_frsize < LOW_SPACE_BYTES:
        return "full"
    return ""


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
