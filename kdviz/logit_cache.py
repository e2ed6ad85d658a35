"""A sharded, memory-mapped teacher-logit cache for datasets whose (N, K) logits are large.

Small tables keep the engine's in-memory path (one ``.pt`` file, the whole tensor on the device).
When N * K * 4 bytes reach ``threshold_bytes()`` (1 GiB; ``KDVIZ_SHARD_BYTES`` lowers it), the
teacher's logits are computed and written shard by shard as fixed-row-count ``.npy`` files plus
a small ``index.json``, into a temporary folder renamed into place at the end (a crash leaves no
half cache). Training then reads each batch's rows from the memory-mapped shards: the full table
is never held in memory, and the page cache keeps the hot part of it. The folder sits next to the
``.pt`` cache under the same key: KDVIZ_HOME/cache/logits/<key>/.

A shard whose size, header or shape disagrees with the index (a torn or truncated write, a
deleted file) makes the whole cache invalid: it is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

DEFAULT_THRESHOLD_BYTES = 1 << 30  # tables from 1 GiB on are sharded and streamed
SHARD_BYTES = 64 << 20  # about 64 MiB per shard
ROW_ALIGN = 1024  # shards hold whole compute_logits batches: the same batches, bit for bit
INDEX = "index.json"
FORMAT = 1


def threshold_bytes() -> int:
    """Table size from which the cache is sharded: KDVIZ_SHARD_BYTES, else 1 GiB."""
    value = os.environ.get("KDVIZ_SHARD_BYTES", "").strip()
    return int(value) if value else DEFAULT_THRESHOLD_BYTES


def should_shard(rows: int, classes: int) -> bool:
    """True when a float32 (rows, classes) table is at least ``threshold_bytes()``."""
    return rows * classes * 4 >= threshold_bytes()


def shard_rows_for(classes: int) -> int:
    """Rows per shard: about SHARD_BYTES of float32, a whole number of ROW_ALIGN rows."""
    rows = SHARD_BYTES // max(1, 4 * classes)
    return max(ROW_ALIGN, rows // ROW_ALIGN * ROW_ALIGN)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


class ShardedLogits:
    """A read-only (N, K) float32 table over memory-mapped shards; ``take`` gathers a batch."""

    def __init__(self, directory: Path, shards: list[np.memmap], rows: int, shard_rows: int):
        self.directory = directory
        self.shards = shards  # each (shard_rows, K), the last one shorter; np.memmap, mode "r"
        self.rows = rows
        self.shard_rows = shard_rows
        self.classes = int(shards[0].shape[1]) if shards else 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.classes)

    def __len__(self) -> int:
        return self.rows

    def take(self, rows: torch.Tensor | np.ndarray, device: torch.device | None = None):
        """Rows ``rows`` (B,) of the table as a float32 tensor (B, K), on ``device`` if given.

        Only the B rows are copied out of the mapped files (one gather per shard touched)."""
        idx = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
        out = np.empty((len(idx), self.classes), dtype=np.float32)  # (B, K)
        shard_of = idx // self.shard_rows
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[mask] = self.shards[int(s)][idx[mask] - int(s) * self.shard_rows]
        tensor = torch.from_numpy(out)
        if device is None or device.type == "cpu":
            return tensor
        if device.type == "cuda":  # pinned host memory: the copy overlaps the step's kernels
            return tensor.pin_memory().to(device, non_blocking=True)
        return tensor.to(device)

    def rows_slice(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a tensor; zero-copy (mmap-backed) within one shard."""
        first, last = start // self.shard_rows, max(start, stop - 1) // self.shard_rows
        if first == last:
            base = first * self.shard_rows
            with warnings.catch_warnings():  # read-only on purpose: nothing writes the cache
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(self.shards[first][start - base : stop - base])
        return self.take(np.arange(start, stop))

    def materialize(self) -> torch.Tensor:
        """The whole table in memory (N, K): for callers that need it all (small tables, tests)."""
        return torch.from_numpy(np.concatenate([np.asarray(s) for s in self.shards]))


def write_shards(
    directory: Path,
    chunks: Iterable[np.ndarray | torch.Tensor],
    rows: int,
    classes: int,
    shard_rows: int,
    meta: dict | None = None,
) -> None:
    """Write ``chunks`` (each (shard_rows, K), the last shorter) as shards, atomically.

    The shards and the index go into a temporary sibling folder that replaces ``directory`` only
    when complete; the index is written last and lists every shard's row count and byte size."""
    directory = Path(directory)
    tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries, done = [], 0
    try:
        for i, chunk in enumerate(chunks):
            array = np.ascontiguousarray(
                chunk.numpy() if isinstance(chunk, torch.Tensor) else chunk, dtype=np.float32
            )
            if array.ndim != 2 or array.shape[1] != classes or len(array) > shard_rows:
                raise ValueError(
                    f"shard {i} has shape {array.shape}, not (<={shard_rows}, {classes})"
                )
            path = tmp / _shard_name(i)
            np.save(path, array)
            entries.append({"file": path.name, "rows": len(array), "bytes": path.stat().st_size})
            done += len(array)
        if done != rows:
            raise ValueError(f"wrote {done} rows, expected {rows}")
        index = {"format": FORMAT, "rows": rows, "classes": classes, "shard_rows": shard_rows}
        index.update(dtype="float32", shards=entries, meta=meta or {})
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        if open_shards(directory, rows, classes) is not None:
            return  # another process (a second run on the same teacher) finished first
        if directory.exists():  # an invalid cache left from before: replaced as a whole
            shutil.rmtree(directory, ignore_errors=True)
        try:
            tmp.replace(directory)
        except OSError:  # another process renamed its complete copy into place first
            if open_shards(directory, rows, classes) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_shards(directory: Path, rows: int, classes: int) -> ShardedLogits | None:
    """The cache in ``directory`` memory-mapped, or None when absent, torn or of another shape."""
    directory = Path(directory)
    try:
        index = json.loads((directory / INDEX).read_text())
        header = (index.get("format"), index.get("rows"), index.get("classes"))
        if header != (FORMAT, rows, classes):
            return None
        shard_rows, shards, total = int(index["shard_rows"]), [], 0
        for i, entry in enumerate(index["shards"]):
            path = directory / entry["file"]
            if path.name != _shard_name(i) or path.stat().st_size != entry["bytes"]:
                return None  # truncated, grown or renamed: a torn write
            array = np.load(path, mmap_mode="r")
            expected_rows = min(shard_rows, rows - total)
            if array.dtype != np.float32 or array.shape != (expected_rows, classes):
                return None
            shards.append(array)
            total += expected_rows
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if total != rows or not shards:
        return None
    return ShardedLogits(directory, shards, rows, shard_rows)


def remove(directory: Path) -> None:
    """Delete a sharded cache (a rebuild, or a user clearing disk space)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)


def _chunks(
    model: nn.Module,
    images: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    shard_rows: int,
    device: torch.device | str | None,
    on_batch: Callable[[int, int], None] | None,
) -> Iterator[torch.Tensor]:
    """The teacher's logits, one shard of rows at a time: only a shard's floats live at once."""
    from kdviz.logits import compute_logits

    n = len(images)
    for start in range(0, n, shard_rows):
        part = normalize(images[start : start + shard_rows])  # (S, C, H, W) float

        def report(done: int, _total: int, start: int = start) -> None:
            if on_batch is not None:
                on_batch(start + done, n)

        yield compute_logits(model, part, device=device, on_batch=report)  # (S, K) on CPU


def sharded_model_logits(
    model: nn.Module,
    card,
    dataset,
    *,
    fingerprint: str,
    device: torch.device | str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> ShardedLogits:
    """The teacher's (N, K) logits on ``dataset`` as a sharded memory-mapped cache.

    Keyed like ``engine.model_logits`` (``engine._logit_cache_path`` without ``.pt``); read when
    valid, else computed shard by shard and written. Under torchrun rank 0 calls this first
    (``fit``'s main_first block) and the other ranks find the finished cache."""
    from kdviz.data import normalize
    from kdviz.logits import _logit_cache_path, check_compatible

    check_compatible(card, dataset)
    directory = _logit_cache_path(fingerprint, card, dataset).with_suffix("")
    rows, classes = len(dataset), card.num_classes
    table = open_shards(directory, rows, classes)
    if table is not None:
        return table
    shard_rows = shard_rows_for(classes)
    chunks = _chunks(
        model,
        dataset.images,
        lambda x: normalize(x, card.mean, card.std),
        shard_rows,
        device,
        on_batch,
    )
    from kdviz.distributed import env_rank

    meta = {"teacher": card.name, "spec": dataset.spec, "split": dataset.split}
    meta["rank"] = env_rank()  # under torchrun rank 0 writes; the others only read
    write_shards(directory, chunks, rows, classes, shard_rows, meta=meta)
    table = open_shards(directory, rows, classes)
    if table is None:  # written a moment ago: only a disk error gets here
        raise OSError(f"the sharded logit cache in {directory} could not be read back")
    return table
