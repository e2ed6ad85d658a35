"""Logits tables computed elsewhere: read .npz / .npy / .csv / .parquet / .pt files into a
validated LogitsTable (2-D, finite, labels in range, one name per class), never unpickling.

An imported table is stored as an uncompressed .npz; ``open_stored_table`` maps its logits from
the file instead of reading them, so opening a 200 MB table costs milliseconds, not a copy.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdviz.errors import KdvizError
from kdviz.models import _brief

__all__ = [
    "LOGITS_SUFFIXES",
    "MAX_VALUES",
    "LogitsTable",
    "check_class_names",
    "load_tensors_only",
    "make_logits_table",
    "map_stored_logits",
    "open_stored_table",
    "read_logits_file",
]

MAX_VALUES = 200_000_000  # rows * classes of a logits table (800 MB as float32)
MAX_TEXT_BYTES = 4 << 30  # a .csv bigger than this is refused before it is read
LOGITS_SUFFIXES = (".npz", ".npy", ".csv", ".parquet", ".pt", ".pth")
_LABEL_COLUMNS = ("label", "labels", "target")


@dataclass(frozen=True)
class LogitsTable:
    """A table of logits computed elsewhere: one row per example, one column per class."""

    logits: torch.Tensor  # (N, C) float32
    labels: torch.Tensor | None  # (N,) int64, all present, or None
    class_names: tuple[str, ...]  # (C,)
    source: str  # the file or checkpoint it came from

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])


def make_logits_table(
    logits: Any, labels: Any = None, class_names: Any = None, source: str = "the table"
) -> LogitsTable:
    """Validate arrays into a LogitsTable: 2-D, finite, labels in range, one name per class."""
    arr = np.asarray(logits)
    if arr.dtype.kind not in "biuf":
        raise KdvizError(
            f"The logits in {source} are not numbers ({arr.dtype}); give a numeric table."
        )
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 2:
        raise KdvizError(
            f"The logits in {source} have shape {arr.shape}, not (rows, classes) with at least one "
            "row and two classes; give a 2-D table with one row per example and one column per class."
        )
    n, c = (int(v) for v in arr.shape)
    _check_size(n, c, source)
    values = np.ascontiguousarray(arr, dtype=np.float32)
    if not values.flags.writeable:  # a memory-mapped or read-only array: torch wants its own
        values = values.copy()
    finite = np.isfinite(values)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise KdvizError(
            f"The logits in {source} hold {int((~finite).sum())} NaN or infinite value(s) "
            f"(first in row {int(bad_rows[0])}); fix or drop those rows."
        )
    label_tensor = None if labels is None else torch.from_numpy(_check_labels(labels, n, c, source))
    names = check_class_names(class_names, c, source)
    return LogitsTable(torch.from_numpy(values), label_tensor, names, source)


def _check_size(n: int, c: int, source: str) -> None:
    if n * c > MAX_VALUES:
        raise KdvizError(
            f"The logits in {source} are {n:,} x {c:,} = {n * c:,} values, more than the limit "
            f"of {MAX_VALUES:,}; use fewer rows."
        )


def _check_labels(labels: Any, n: int, c: int, source: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise KdvizError(
            f"The labels in {source} have shape {y.shape} but the logits have {n} rows; give one label per row."
        )
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "biu":
        raise KdvizError(
            f"The labels in {source} are not whole numbers ({y.dtype}); give class indices 0..{c - 1}."
        )
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= c))
    if len(bad):
        raise KdvizError(
            f"The label {int(y[bad[0]])} in row {int(bad[0])} of {source} is outside 0..{c - 1} "
            f"(there are {c} classes); fix the labels or the table."
        )
    return y


def check_class_names(names: Any, c: int, source: str) -> tuple[str, ...]:
    """``c`` class names as strings ("0", "1", ... when None); a wrong count is one sentence."""
    if names is None:
        return tuple(str(i) for i in range(c))
    values = [str(v) for v in np.asarray(names, dtype=object).reshape(-1).tolist()]
    if len(values) != c:
        raise KdvizError(
            f"{source} names {len(values)} classes but the logits have {c} columns; give one name per class."
        )
    return tuple(values)


def read_logits_file(path: str | Path) -> LogitsTable:
    """A LogitsTable from .npz (logits, labels, class_names), .npy, .csv / .parquet (one column
    per class, an optional ``label`` column) or .pt (a tensor or such a dict, weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise KdvizError(f"No logits file {path} was found; give the path of an existing file.")
    readers = {
        ".npz": _read_npz,
        ".npy": _read_npy,
        ".csv": _read_table,
        ".parquet": _read_table,
        ".pt": _read_pt,
        ".pth": _read_pt,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise KdvizError(
            f"{path.name} is not a logits file kdviz reads; use {', '.join(LOGITS_SUFFIXES)}."
        )
    logits, labels, names = reader(path)
    return make_logits_table(logits, labels, names, source=path.name)


def _npy_header(handle: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy header; leaves ``handle`` at the first data byte."""
    version = np.lib.format.read_magic(handle)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(handle)
    return tuple(shape), bool(fortran), np.dtype(dtype)


def _npy_shape(handle: Any) -> tuple[int, ...] | None:
    """The shape in a .npy header, read without reading the data (None if unreadable)."""
    try:
        return _npy_header(handle)[0]
    except Exception:
        return None


def _check_shape_before_reading(shape: tuple[int, ...] | None, source: str) -> None:
    if shape and len(shape) == 2:
        _check_size(int(shape[0]), int(shape[1]), source)
    elif shape and math.prod(shape) > MAX_VALUES:
        _check_size(math.prod(shape), 1, source)


def _read_npz(path: Path) -> tuple[Any, Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "logits" not in keys:
                raise KdvizError(
                    f"{path.name} has no 'logits' array (it has {', '.join(keys[:6]) or 'none'}); "
                    "save it as np.savez(file, logits=..., labels=..., class_names=...)."
                )
            with npz.zip.open("logits.npy") as handle:
                _check_shape_before_reading(_npy_shape(handle), path.name)
            logits = npz["logits"]
            labels = npz["labels"] if "labels" in keys else None
            names = npz["class_names"] if "class_names" in keys else None
    except KdvizError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise KdvizError(
            f"{path.name} is not a readable .npz of plain arrays ({_brief(err)}); save it "
            "with np.savez and class names as a string array."
        ) from err
    return logits, labels, names


_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes, name and extra lengths


def map_stored_logits(path: str | Path) -> np.memmap | None:
    """The ``logits`` array of an .npz mapped from the file, none of it read; None when the
    member is compressed or encrypted, or not 2-D C-ordered native float32 (then read it).

    np.savez stores members uncompressed, so the .npy inside lies in the file as plain bytes at
    a fixed offset. The map is copy-on-write: a caller writing into the tensor changes its own
    copy of those pages, never the file.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("logits.npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        signature, name_len, extra_len = _ZIP_LOCAL_HEADER.unpack(handle.read(30))
        if signature != b"PK\x03\x04":
            return None
        start = info.header_offset + 30 + name_len + extra_len  # the member's first byte
        handle.seek(start)
        shape, fortran, dtype = _npy_header(handle)
        offset = handle.tell()
    if fortran or dtype != np.dtype(np.float32) or len(shape) != 2 or min(shape) < 1:
        return None
    if offset - start + math.prod(shape) * dtype.itemsize > info.file_size:
        return None  # a header promising more bytes than the member holds (a damaged file)
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)  # (N, C)


def open_stored_table(path: str | Path, class_names: Any, name: str) -> LogitsTable:
    """The .npz of the logits card ``name`` (its class names given) as a LogitsTable whose
    logits are mapped from the file.

    The values were checked (finite, 2-D) when the table was imported, so only the header, the
    class count and the labels (N int64s) are checked here; no logits value is read until it is
    used. A file that cannot be mapped is read and checked whole, as ``read_logits_file`` does.
    """
    path = Path(path)
    try:
        mapped = map_stored_logits(path)
        with np.load(path, allow_pickle=False) as npz:
            labels = npz["labels"] if "labels" in npz.files else None
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
        mapped = None  # read_logits_file says what is wrong with the file, in one sentence
    if mapped is None:
        table = read_logits_file(path)
        names = check_class_names(class_names, table.num_classes, f"the card of {name!r}")
        return LogitsTable(table.logits, table.labels, names, name)
    n, c = (int(v) for v in mapped.shape)
    _check_size(n, c, path.name)
    names = check_class_names(class_names, c, f"the card of {name!r}")
    y = None if labels is None else torch.from_numpy(_check_labels(labels, n, c, path.name))
    return LogitsTable(torch.from_numpy(mapped), y, names, name)


def _read_npy(path: Path) -> tuple[Any, Any, Any]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise KdvizError(
            f"{path.name} is not a readable .npy array ({_brief(err)}); save it with np.save."
        ) from err
    _check_shape_before_reading(tuple(array.shape), path.name)
    return np.asarray(array), None, None


def _read_table(path: Path) -> tuple[Any, Any, Any]:
    """CSV or Parquet: column names are class names, except a label column."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            _check_size(meta.num_rows, max(1, meta.num_columns - 1), path.name)
            frame = pq.read_table(path).to_pandas()
        else:
            if path.stat().st_size > MAX_TEXT_BYTES:
                raise KdvizError(
                    f"{path.name} is larger than {MAX_TEXT_BYTES >> 30} GB; save the logits as .npy or .parquet."
                )
            frame = pd.read_csv(path)
    except KdvizError:
        raise
    except Exception as err:  # pandas / pyarrow raise many types for a bad file
        raise KdvizError(
            f"{path.name} could not be read as a table ({_brief(err)}); write a header row "
            "with one column per class and an optional 'label' column."
        ) from err
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed: ")])
    label_cols = [c for c in frame.columns if str(c).strip().lower() in _LABEL_COLUMNS]
    labels = frame.pop(label_cols[0]).to_numpy() if label_cols else None
    text = [c for c in frame.columns if frame[c].dtype.kind not in "biuf"]
    if text:
        raise KdvizError(
            f"The column {str(text[0])!r} of {path.name} is not numeric; keep one numeric column "
            "per class and an optional 'label' column."
        )
    return frame.to_numpy(), labels, [str(c) for c in frame.columns]


def _read_pt(path: Path) -> tuple[Any, Any, Any]:
    if path.stat().st_size > MAX_VALUES * 8:
        _check_size(MAX_VALUES + 1, 1, path.name)
    obj = load_tensors_only(path)
    if isinstance(obj, torch.Tensor):
        return obj.float().numpy(), None, None
    if isinstance(obj, dict) and "logits" in obj:

        def plain(value: Any) -> Any:
            return value.numpy() if isinstance(value, torch.Tensor) else value

        return plain(obj["logits"]), plain(obj.get("labels")), obj.get("class_names")
    raise KdvizError(
        f"{path.name} holds neither a logits tensor nor a dict with 'logits'; if it is a model's "
        "state dict, import it with --arch."
    )


def load_tensors_only(path: Path, mmap: bool = False) -> Any:
    """torch.load(weights_only=True); anything but tensors and plain containers is a KdvizError.

    ``mmap=True`` maps the tensors' bytes from the file instead of reading them (so their sizes
    can be checked first); files in torch's legacy (pre-1.6, not zip) format are read whole.
    """
    # weights_only=True: the restricted unpickler refuses every global outside torch's tensor
    # allowlist, so a payload (os.system, open, ...) is rejected, never called.
    try:
        mmap = mmap and zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # UnpicklingError for code, RuntimeError if corrupt
        raise KdvizError(
            f"{path.name} is not a plain tensor file (it is corrupt or holds Python objects, "
            "which kdviz never unpickles); save tensors only, or use safetensors / .npz."
        ) from err
